//! `rate`: at most N messages per second, per direction, on a `leaky-bucket`
//! limiter.
//!
//! - `rate = 10`: 10 messages per second each way, per stream.
//! - `rate(recv = 100, send = 50, burst = 5, scope = method, on_exceed = reject)`.
//!
//! Messages are spaced evenly (`1/N` s apart); `burst = B` lets up to `B`
//! through back to back after a quiet spell (default 1). A message over the
//! rate waits by default: inbound, a slow read pushes back on the client
//! through HTTP/2 flow control, so a flooding client is held back and the
//! server buffers nothing. With `on_exceed = reject` the call ends instead
//! with RESOURCE_EXHAUSTED. `scope = method` shares one limiter per direction
//! among all streams of the method.
//!
//! A permit that is there is taken with `try_acquire` on an unfair limiter,
//! without a lock or a clock read; only a message that must wait allocates
//! (its `acquire_owned` future). The wait ends at once when the call ends,
//! and the waiter leaves the limiter.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use leaky_bucket::{AcquireOwned, RateLimiter};
use tonic::{metadata::MetadataMap, Status};

use crate::{
    call::CallContext,
    interceptor::{Direction, Interceptor, MessageRef},
};

/// Options of `rate(..)`.
#[derive(Clone, Debug)]
pub struct RateConfig {
    /// Messages per second from the client; `None`: no limit.
    pub recv: Option<u64>,
    /// Messages per second to the client; `None`: no limit.
    pub send: Option<u64>,
    /// Messages that may pass back to back (default 1).
    pub burst: Option<u64>,
    /// One limiter per stream, or one per method.
    pub scope: RateScope,
    /// Wait for a permit, or end the call.
    pub on_exceed: OnExceed,
}

/// Who shares a limiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateScope {
    /// Each stream has its own (the default).
    Stream,
    /// All streams of the method share one per direction.
    Method,
}

/// What a message over the rate does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExceed {
    /// Waits for a permit (the default).
    Wait,
    /// Ends the call with RESOURCE_EXHAUSTED.
    Reject,
}

/// The `rate` interceptor; see the [module docs](self).
#[derive(Debug)]
pub struct Rate {
    config: RateConfig,
    /// Per-method limiters (`scope = method`), inbound and outbound.
    shared: [Option<Arc<RateLimiter>>; 2],
}

impl Rate {
    /// A rate interceptor with these options.
    pub fn new(config: RateConfig) -> Self {
        let shared = match config.scope {
            RateScope::Method => {
                [limiter(config.recv, config.burst).map(Arc::new), limiter(config.send, config.burst).map(Arc::new)]
            }
            RateScope::Stream => [None, None],
        };
        Rate { config, shared }
    }

    fn per_second(&self, direction: Direction) -> Option<u64> {
        match direction {
            Direction::Inbound => self.config.recv,
            Direction::Outbound => self.config.send,
        }
    }
}

/// A limiter of `per_second` permits with room for `burst`, full at start.
/// leaky-bucket's interval is at least 1 ms, so a rate over 1000/s refills
/// `k` permits every `k/N` s.
fn limiter(per_second: Option<u64>, burst: Option<u64>) -> Option<RateLimiter> {
    let n = per_second?.max(1);
    let refill = n.div_ceil(1000);
    let interval = Duration::from_nanos(1_000_000_000 * refill / n);
    let max = burst.unwrap_or(1).max(refill);
    Some(
        RateLimiter::builder()
            .refill(refill as usize)
            .interval(interval)
            .max(max as usize)
            .initial(max as usize)
            .fair(false)
            .build(),
    )
}

/// One direction's limiter and the message waiting in it, if any.
pub struct RateStream {
    limiter: Option<Arc<RateLimiter>>,
    waiting: Option<Pin<Box<AcquireOwned>>>,
}

impl std::fmt::Debug for RateStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateStream")
            .field("limited", &self.limiter.is_some())
            .field("waiting", &self.waiting.is_some())
            .finish()
    }
}

impl Interceptor for Rate {
    type Call = ();
    type Stream = RateStream;

    fn name(&self) -> &'static str {
        "rate"
    }

    fn on_start(&self, _: &CallContext, _: &MetadataMap) -> Result<(), Status> {
        Ok(())
    }

    fn on_stream(&self, _: &(), _: &CallContext, direction: Direction) -> RateStream {
        let limiter = match self.config.scope {
            RateScope::Method => self.shared[direction as usize].clone(),
            RateScope::Stream => limiter(self.per_second(direction), self.config.burst).map(Arc::new),
        };
        RateStream { limiter, waiting: None }
    }

    #[inline]
    fn poll_message<M: prost::Message + 'static>(
        &self,
        _: &(),
        stream: &mut RateStream,
        cx: &mut Context<'_>,
        msg: &MessageRef<'_, M>,
    ) -> Poll<Result<(), Status>> {
        let Some(limiter) = &stream.limiter else { return Poll::Ready(Ok(())) };
        if let Some(waiting) = &mut stream.waiting {
            std::task::ready!(waiting.as_mut().poll(cx));
            stream.waiting = None;
            return Poll::Ready(Ok(()));
        }
        if limiter.try_acquire(1) {
            return Poll::Ready(Ok(()));
        }
        if self.config.on_exceed == OnExceed::Reject {
            let per_second = self.per_second(msg.direction()).unwrap_or_default();
            return Poll::Ready(Err(Status::resource_exhausted(format!(
                "rate limit exceeded: at most {per_second} messages per second ({}){}",
                msg.direction().as_str(),
                if self.config.scope == RateScope::Method { " for all streams of the method" } else { "" },
            ))));
        }
        let mut waiting = Box::pin(limiter.clone().acquire_owned(1));
        match waiting.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Ok(())),
            Poll::Pending => {
                stream.waiting = Some(waiting);
                Poll::Pending
            }
        }
    }
}
