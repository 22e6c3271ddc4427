//! `rate`: at most N messages per second, per direction, on a `leaky-bucket`
//! limiter.
//!
//! - `rate = 10`: 10 messages per second each way, per stream.
//! - `rate(recv = 100, send = 50, burst = 5, scope = method, on_exceed = reject)`.
//!
//! Messages are spaced evenly, `1/N` s apart, up to 50/s; above, or where
//! `1/N` s is no whole number of milliseconds, they come `k` at a time every
//! `k/N` s (at least 20 ms apart, with `k` as small as keeps the rate within 1%
//! under `N`: timers are only so precise). `burst = B` lets up to `max(B, k)`
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
//! and the waiter leaves the limiter. A stream's own limiter (`scope = stream`)
//! hands over its whole balance at once, which the stream then spends one
//! message at a time without touching the limiter (see [`RateStream`]).

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
    engine::CallContext,
    interceptor::{Direction, Interceptor, MessageRef},
};

/// Options of `rate(..)`; the default limits nothing (`recv` and `send` are
/// `None`).
#[derive(Clone, Debug, Default)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RateScope {
    /// Each stream has its own (the default).
    #[default]
    Stream,
    /// All streams of the method share one per direction.
    Method,
}

/// What a message over the rate does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnExceed {
    /// Waits for a permit (the default).
    #[default]
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
            RateScope::Method => [
                limiter(config.recv, config.burst, u64::MAX).map(Arc::new),
                limiter(config.send, config.burst, u64::MAX).map(Arc::new),
            ],
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

/// How many permits a limiter of `per_second` with room for `burst` holds.
fn capacity(per_second: u64, burst: Option<u64>) -> u64 {
    let (refill, _) = refill_every(per_second.max(1));
    burst.unwrap_or(1).max(refill)
}

/// A limiter of `per_second` permits with room for `burst`, holding
/// `initial` permits at start.
fn limiter(per_second: Option<u64>, burst: Option<u64>, initial: u64) -> Option<RateLimiter> {
    let per_second = per_second?;
    let (refill, interval_ms) = refill_every(per_second.max(1));
    let max = capacity(per_second, burst);
    Some(
        RateLimiter::builder()
            .refill(refill as usize)
            .interval(Duration::from_millis(interval_ms))
            .max(max as usize)
            .initial(initial.min(max) as usize)
            .fair(false)
            .build(),
    )
}

/// One direction's use of the rate.
///
/// A stream's own limiter (`scope = stream`) starts full, so the stream
/// starts with that many permits as `credit` and makes the limiter only when
/// it has spent them, starting empty then (so from then on the rate applies
/// as it would have, never more loosely). And leaky-bucket adds permits
/// lazily, only when a taker finds its balance short, and this limiter has no
/// other taker: so taking its whole balance at once into `credit` and
/// spending that one message at a time lets the same messages through at the
/// same moments as taking one permit per message, without an atomic
/// read-modify-write per message.
pub struct RateStream {
    /// Permits the stream holds and has not spent yet.
    credit: u64,
    /// The limiter and the message waiting in it, made when first needed.
    slow: Option<Box<Slow>>,
}

struct Slow {
    /// The stream's own limiter (`scope = stream`); `None` for the method's.
    own: Option<Arc<RateLimiter>>,
    waiting: Option<Pin<Box<AcquireOwned>>>,
}

impl std::fmt::Debug for RateStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateStream")
            .field("credit", &self.credit)
            .field("waiting", &self.slow.as_ref().is_some_and(|slow| slow.waiting.is_some()))
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
        let credit = match (self.config.scope, self.per_second(direction)) {
            // No limit this way: credit that never runs out.
            (_, None) => u64::MAX,
            (RateScope::Stream, Some(per_second)) => capacity(per_second, self.config.burst),
            (RateScope::Method, Some(_)) => 0,
        };
        RateStream { credit, slow: None }
    }

    #[inline]
    fn poll_message<M: prost::Message + 'static>(
        &self,
        _: &(),
        stream: &mut RateStream,
        cx: &mut Context<'_>,
        msg: &MessageRef<'_, M>,
    ) -> Poll<Result<(), Status>> {
        if stream.credit > 0 {
            stream.credit -= 1;
            return Poll::Ready(Ok(()));
        }
        self.poll_permit(stream, cx, msg.direction())
    }
}

impl Rate {
    /// A message the stream holds no permit for: takes one from the limiter,
    /// waits for one, or is rejected. Out of line, so that the per-message
    /// path above stays small enough to inline.
    #[inline(never)]
    fn poll_permit(
        &self,
        stream: &mut RateStream,
        cx: &mut Context<'_>,
        direction: Direction,
    ) -> Poll<Result<(), Status>> {
        let per_second = self.per_second(direction);
        let slow = stream.slow.get_or_insert_with(|| {
            let own = match self.config.scope {
                RateScope::Stream => limiter(per_second, self.config.burst, 0).map(Arc::new),
                RateScope::Method => None,
            };
            Box::new(Slow { own, waiting: None })
        });
        let Some(limiter) = slow.own.as_ref().or(self.shared[direction as usize].as_ref()) else {
            return Poll::Ready(Ok(()));
        };
        if let Some(waiting) = &mut slow.waiting {
            std::task::ready!(waiting.as_mut().poll(cx));
            slow.waiting = None;
            return Poll::Ready(Ok(()));
        }
        if slow.own.is_some() {
            // The stream's own: take the whole balance (see `RateStream`).
            let balance = limiter.balance();
            if balance > 1 && limiter.try_acquire(balance) {
                stream.credit = balance as u64 - 1;
                return Poll::Ready(Ok(()));
            }
        }
        // Refills the limiter if a refill is due.
        if limiter.try_acquire(1) {
            return Poll::Ready(Ok(()));
        }
        if self.config.on_exceed == OnExceed::Reject {
            return Poll::Ready(Err(Status::resource_exhausted(format!(
                "rate limit exceeded: at most {} messages per second ({}){}",
                per_second.unwrap_or_default(),
                direction.as_str(),
                if self.config.scope == RateScope::Method { " for all streams of the method" } else { "" },
            ))));
        }
        let mut waiting = Box::pin(limiter.clone().acquire_owned(1));
        match waiting.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Ok(())),
            Poll::Pending => {
                slow.waiting = Some(waiting);
                Poll::Pending
            }
        }
    }
}

/// `(k, ms)`: `k` permits every `ms` milliseconds for a rate of `n` per second.
///
/// leaky-bucket counts in whole milliseconds, tokio's timer wakes on whole
/// milliseconds, and each refill is timed from when the waiter woke, so every
/// interval comes out up to about a millisecond long. An interval of `1/n` s
/// would make 600/s into 2 ms (500/s) and then, with wake-up delays, about
/// 320/s; 1000/s into about 470/s. So the interval is a whole number of
/// milliseconds and at least [`MIN_INTERVAL_MS`], and `k` the smallest count
/// that keeps the rate within 1% under `n`, never over: 1 every 100 ms for
/// 10/s, 1 every 334 ms for 3/s, 2 every 20 ms for 100/s, 30 every 20 ms for
/// 1500/s, 90 every 91 ms for 999/s.
fn refill_every(n: u64) -> (u64, u64) {
    let n = u128::from(n);
    let mut ms = MIN_INTERVAL_MS;
    loop {
        // As many as fit in `ms` without going over the rate; the first `ms`
        // where that is within 1% (by 1000 ms at the latest, where it is `n`).
        let k = n * ms / 1000;
        if k > 0 && 100 * 1000 * k >= 99 * n * ms {
            return (k.min(u128::from(u64::MAX)) as u64, ms as u64);
        }
        ms += 1;
    }
}

/// The shortest refill interval: the timer's slack of about a millisecond per
/// refill costs at most a few percent of the rate.
const MIN_INTERVAL_MS: u128 = 20;

#[cfg(test)]
mod tests {
    use super::refill_every;

    #[test]
    fn refills_come_on_whole_milliseconds_and_never_exceed_the_rate() {
        assert_eq!(refill_every(10), (1, 100));
        assert_eq!(refill_every(1), (1, 1000));
        assert_eq!(refill_every(3), (1, 334));
        assert_eq!(refill_every(50), (1, 20));
        assert_eq!(refill_every(100), (2, 20));
        assert_eq!(refill_every(600), (12, 20));
        assert_eq!(refill_every(1500), (30, 20));
        assert_eq!(refill_every(999), (90, 91));
        for n in (1..5000).chain([7919, 99_991, u64::from(u32::MAX), u64::MAX / 1000, u64::MAX]) {
            let (k, ms) = refill_every(n);
            let per_second = 1000.0 * k as f64 / ms as f64;
            assert!(per_second <= n as f64 && per_second >= 0.99 * n as f64, "{n}/s: {k} every {ms} ms");
            assert!(ms >= 20, "{n}/s: {k} every {ms} ms");
        }
    }
}
