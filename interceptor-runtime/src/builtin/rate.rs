//! `rate`: at most N messages per second, per direction.
//!
//! - `rate = 10`: 10 messages per second each way, per stream.
//! - `rate(recv = 100, send = 50, burst = 5, scope = method, on_exceed = reject)`.
//!
//! Permits follow elapsed time on tokio's clock (a GCRA with reservations,
//! described in `builtin/rate/gcra.rs`), so a stream that sends as fast as
//! it can gets the rate it was given, not less: a timer that wakes it late
//! (by up to 20 ms) costs it nothing, as the permits it was owed meanwhile
//! pass at once. Up to 1000/s messages are spaced `1/N` s apart; above, they
//! pass `N/1000` at a time each millisecond (tokio's timers wake a waiter once
//! a millisecond at most). `burst = B` lets up to `max(B, N/1000)` through
//! back to back after a quiet spell (default 1). Over any span of time `t`, at
//! most `N·t` messages pass, plus the burst and what a late wake-up left
//! owing. A message over the rate waits by default: inbound, a slow read
//! pushes back on the client through HTTP/2 flow control, so a flooding
//! client is held back and the server buffers nothing.
//! With `on_exceed = reject` the call ends instead with RESOURCE_EXHAUSTED.
//!
//! `scope = method` shares one limiter per direction among all streams of the
//! method. Streams waiting on it are served in turn (each reserves its place,
//! first come first served), so a busy stream does not starve the others:
//! `n` streams that all want more than the rate get `1/n` of it each. A
//! stream takes its permits in batches (one, then twice as many each time
//! up to a millisecond's worth) with one atomic compare-and-swap, spends them
//! from a counter of its own, and gives back what it did not use when it
//! ends. A stream's own limiter (`scope = stream`, the default) is a plain
//! number in its state.
//!
//! Per message, either way, the stream only counts down its permits: no
//! lock, no atomic read-modify-write, no clock read. Only a stream that has
//! spent its batch reads the clock; the first time, it allocates what it
//! needs from then on (its timer when it first waits, kept for the next
//! wait). The wait ends at once when the call ends.

mod gcra;

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::time::Sleep;
use tonic::{metadata::MetadataMap, Status};

use self::gcra::{Gcra, Grant, Limiter, Nanos, Request, SharedGcra, MAX_LATE};
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
    /// Each direction's rate, inbound and outbound; `None`: no limit.
    rates: [Option<Gcra>; 2],
    /// The method's limiters (`scope = method`), inbound and outbound.
    shared: [Option<Arc<dyn Limiter>>; 2],
}

impl Rate {
    /// A rate interceptor with these options.
    pub fn new(config: RateConfig) -> Self {
        let rate = |per_second: Option<u64>| per_second.map(|n| Gcra::new(n, config.burst));
        let rates = [rate(config.recv), rate(config.send)];
        let shared = rates.map(|rate| match config.scope {
            RateScope::Method => rate.map(|gcra| Arc::new(SharedGcra::new(gcra)) as Arc<dyn Limiter>),
            RateScope::Stream => None,
        });
        Rate { config, rates, shared }
    }

    fn per_second(&self, direction: Direction) -> Option<u64> {
        match direction {
            Direction::Inbound => self.config.recv,
            Direction::Outbound => self.config.send,
        }
    }
}

/// One direction's use of the rate.
///
/// `credit` is what the stream may send without asking: a stream's own
/// limiter (`scope = stream`) starts full, so the stream starts with its
/// burst, granted when the call started; the method's limiter hands out
/// batches. The rest is made when the credit first runs out.
#[derive(Default)] // as the trait asks of every state; `on_stream` makes the one used
pub struct RateStream {
    /// Permits the stream holds and has not spent yet.
    credit: u64,
    slow: Option<Box<Slow>>,
}

/// What a stream needs once its first credit is spent.
struct Slow {
    /// The method's limiter (`scope = method`), or `None` for the stream's
    /// own, whose TAT is `own`.
    shared: Option<Arc<dyn Limiter>>,
    own: Nanos,
    /// The next batch to ask the method's limiter for: 1, then doubled each
    /// time up to the rate's batch, so that a short stream leaves few permits
    /// unused.
    lease: u64,
    /// How late the last wait's wake-up came: made up for while the stream
    /// keeps asking faster than the rate, that is while it comes back for
    /// more before `late_until` (when the permits it last got would have
    /// been used at the rate, and [`MAX_LATE`] more).
    late: u64,
    late_until: Nanos,
    /// The reservation the stream waits for, and its timer (kept for reuse).
    waiting: Option<Grant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Slow {
    /// `permits` were granted `now`: a late wake-up is made up for if the
    /// stream comes back for more before they would have been used at the
    /// rate (and a margin).
    fn granted(&mut self, now: Nanos, permits: u64, gcra: Gcra) {
        self.late_until = now.saturating_add(gcra.span(permits)).saturating_add(MAX_LATE);
    }
}

impl std::fmt::Debug for RateStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateStream")
            .field("credit", &self.credit)
            .field("waiting", &self.slow.as_ref().is_some_and(|slow| slow.waiting.is_some()))
            .finish()
    }
}

impl Drop for RateStream {
    /// Permits taken from the method's limiter and not used go back to it.
    fn drop(&mut self) {
        let Some(slow) = &self.slow else { return };
        let Some(shared) = &slow.shared else { return };
        let unused = self.credit + slow.waiting.map_or(0, |grant| grant.permits);
        if unused > 0 {
            shared.refund(unused);
        }
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
        let credit = match (self.config.scope, self.rates[direction as usize]) {
            // No limit this way: credit that never runs out.
            (_, None) => u64::MAX,
            (RateScope::Stream, Some(gcra)) => gcra.burst(),
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
        self.poll_permit(stream, cx, msg.call(), msg.direction())
    }
}

impl Rate {
    /// A message the stream holds no permit for: takes the permits due now,
    /// waits for a reservation, or is rejected. Out of line, so that the
    /// per-message path above stays small enough to inline.
    #[inline(never)]
    fn poll_permit(
        &self,
        stream: &mut RateStream,
        cx: &mut Context<'_>,
        ctx: &CallContext,
        direction: Direction,
    ) -> Poll<Result<(), Status>> {
        let Some(gcra) = self.rates[direction as usize] else { return Poll::Ready(Ok(())) };
        let slow = stream.slow.get_or_insert_with(|| {
            Box::new(Slow {
                shared: self.shared[direction as usize].clone(),
                // The burst the stream started with was granted when the
                // call started.
                own: gcra::from_instant(ctx.started()).saturating_add(gcra.span(gcra.burst())),
                lease: 1,
                late: 0,
                late_until: 0,
                waiting: None,
                sleep: None,
            })
        });
        loop {
            if let Some(grant) = slow.waiting {
                let sleep = slow.sleep.as_mut().expect("a reservation waits with its timer");
                std::task::ready!(sleep.as_mut().poll(cx));
                slow.waiting = None;
                let now = gcra::now();
                slow.late = now.saturating_sub(grant.at).min(MAX_LATE);
                slow.granted(now, grant.permits, gcra);
                stream.credit = grant.permits - 1;
                return Poll::Ready(Ok(()));
            }
            let now = gcra::now();
            if now > slow.late_until {
                // The stream went quiet: nothing to make up for.
                slow.late = 0;
            }
            let from = now.saturating_sub(slow.late);
            let wait = self.config.on_exceed == OnExceed::Wait;
            let grant = match &slow.shared {
                Some(shared) => {
                    let grant = shared.reserve(Request { now, from, want: slow.lease, wait });
                    if grant.is_some() {
                        slow.lease = slow.lease.saturating_mul(2).min(gcra.batch());
                    }
                    grant
                }
                // The stream's own: all that is due, or a batch to wait for.
                None => gcra.step(slow.own, Request { now, from, want: u64::MAX, wait }).map(|(tat, grant)| {
                    slow.own = tat;
                    grant
                }),
            };
            let Some(grant) = grant else { return Poll::Ready(Err(self.exceeded(direction))) };
            if grant.at <= now {
                slow.granted(now, grant.permits, gcra);
                stream.credit = grant.permits - 1;
                return Poll::Ready(Ok(()));
            }
            let deadline = gcra::to_instant(grant.at);
            match &mut slow.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => slow.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            slow.waiting = Some(grant);
        }
    }

    /// RESOURCE_EXHAUSTED for `on_exceed = reject`.
    #[cold]
    fn exceeded(&self, direction: Direction) -> Status {
        Status::resource_exhausted(format!(
            "rate limit exceeded: at most {} messages per second ({}){}",
            self.per_second(direction).unwrap_or_default(),
            direction.as_str(),
            if self.config.scope == RateScope::Method { " for all streams of the method" } else { "" },
        ))
    }
}
