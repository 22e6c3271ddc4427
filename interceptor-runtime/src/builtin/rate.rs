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
//!
//! # Per client: `key = ..`
//! `rate(recv = 100, key = metadata("x-api-key"))` gives every value of the
//! key a rate of its own, shared by the method's streams that carry it:
//! two clients with different keys get 100/s each, and one client's many
//! streams 100/s together. `key = peer` keys by the client's IP address,
//! `key_fn = path` by your own function of the call and its metadata.
//! The key is read when the call starts; a call without it ends with
//! INVALID_ARGUMENT naming what is missing (`on_missing_key` picks another
//! code, or `share`: one limit for all calls without a key). The keys held
//! are bounded: `max_keys` (default 100,000), idle keys dropped, a new key
//! rejected with RESOURCE_EXHAUSTED when all are in use; see
//! [`key`](crate::key). Per message nothing changes: a stream takes its
//! permits in batches from its key's limiter, as from a method's.
//!
//! # Shared by servers: `backend = ..`
//! `rate(recv = 100, key = metadata("x-api-key"), backend = REDIS.clone())`
//! keeps the limiter in a store every replica of the server uses (Redis with
//! the `redis` feature: `RedisBackend`), so that N replicas behind a load
//! balancer together let 100/s through per key, not N × 100. Without `key`,
//! the method's streams on every server share one limiter.
//!
//! A stream leases its permits: one round trip for a batch, spent from its
//! own counter, so the per-message path is the same as above. A lease is
//! 1 permit, then twice as many each time up to a tenth of a second's worth
//! (`max(1, N/10)`): a short stream takes few permits it may not use, and a
//! busy one makes at most about 10 round trips a second however high the
//! rate. The limiter's tolerance is at least a lease, so the combined rate
//! over a span `t` is at most `N·t` plus one lease (0.1 s of the rate) and
//! the burst; a lease that waits reserves its permits (one round trip) and
//! the stream sleeps until they are due, so a rate shared by busy streams
//! is not undercut by round trips either. Permits a stream leased and did
//! not use are given back when it ends (one more round trip, not awaited);
//! a lease still in flight when the stream ends is lost.
//!
//! The backend's failures are bounded: see [`backend`] (a lease waits
//! 50 ms at most; `on_backend_error = allow` (the default) lets streams go
//! on, each limited by itself to the rate, `reject` ends the call with
//! UNAVAILABLE; limits resume by themselves when the backend answers).
//! With feature `metrics`, every lease counts in
//! `grpc_server_limiter_leases_total{backend, result}` (`result`:
//! `granted`, `error`, `timeout`, or `skipped` while the backend is down);
//! [`Backend::stats`] has the same counts.
//!
//! Precedence when a [`RateConfig`] is built by hand: `backend`, then
//! `key_fn`, then `key`, then `scope`.

pub mod backend;
mod gcra;
#[cfg(feature = "redis")]
mod redis;

use std::{
    future::Future,
    pin::Pin,
    sync::{atomic::AtomicU64, Arc},
    task::{Context, Poll},
};

use tokio::time::Sleep;
use tonic::{metadata::MetadataMap, Status};

// Re-exports, listed as such in the docs: the items' pages are the
// `backend` module's, not a second copy here.
#[doc(no_inline)]
pub use self::backend::{
    Backend, BackendError, IntoBackend, Lease, LeaseFuture, LeaseRequest, LeaseStats, LimiterBackend, OnBackendError,
};
use self::gcra::{Gcra, Grant, Limiter, Nanos, Request, SharedGcra, MAX_LATE};
#[cfg(feature = "redis")]
pub use self::redis::RedisBackend;
use super::key::{self, Key, KeyFn, KeyState, KeyedMap, Keying, MissingKey};
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
    /// One limiter per value of this key (`key = peer`,
    /// `key = metadata("x-api-key")`), shared by the method's streams with
    /// that value.
    pub key: Option<Key>,
    /// One limiter per value your function returns (`key_fn = path`).
    pub key_fn: Option<KeyFn>,
    /// The most keys held at once (default 100,000).
    pub max_keys: Option<u64>,
    /// What a call without its key gets.
    pub on_missing_key: MissingKey,
    /// A store of limiters shared by servers (`backend = ..`).
    pub backend: Option<Backend>,
    /// What a stream does while the backend fails.
    pub on_backend_error: OnBackendError,
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
    shared: Shared,
}

/// Who shares a limiter, and where it is.
#[derive(Debug)]
enum Shared {
    /// Each stream has its own.
    Stream,
    /// The method's, inbound and outbound.
    Method([Option<Arc<dyn Limiter>>; 2]),
    /// One per key, in this process.
    Keyed { keying: Keying, keys: KeyedMap<KeyTats> },
    /// In a backend shared by servers; per key, if keyed.
    Backend { backend: Backend, keying: Option<Keying> },
}

/// A key's limiters in this process: the TAT of each direction.
#[derive(Debug, Default)]
pub(crate) struct KeyTats([AtomicU64; 2]);

impl KeyState for KeyTats {
    fn at_rest(&self, now: u64) -> bool {
        // A TAT not after now serves requests as a fresh limiter does.
        self.0.iter().all(|tat| tat.load(std::sync::atomic::Ordering::Relaxed) <= now)
    }
}

/// One direction of a key's limiters.
#[derive(Debug)]
struct KeyLane {
    tats: Arc<KeyTats>,
    direction: Direction,
    gcra: Gcra,
}

impl Limiter for KeyLane {
    fn reserve(&self, request: Request) -> Option<Grant> {
        self.gcra.reserve_on(&self.tats.0[self.direction as usize], request)
    }

    fn refund(&self, permits: u64) {
        self.gcra.refund_on(&self.tats.0[self.direction as usize], permits)
    }
}

impl Rate {
    /// A rate interceptor with these options.
    pub fn new(config: RateConfig) -> Self {
        let rate = |per_second: Option<u64>| per_second.map(|n| Gcra::new(n, config.burst));
        let rates = [rate(config.recv), rate(config.send)];
        let keying = Keying::new("rate", config.key.as_ref(), config.key_fn.as_ref(), config.on_missing_key);
        let shared = match (&config.backend, keying) {
            (Some(backend), keying) => Shared::Backend { backend: backend.clone(), keying },
            (None, Some(keying)) => Shared::Keyed { keying, keys: KeyedMap::new(config.max_keys) },
            (None, None) if config.scope == RateScope::Method => {
                Shared::Method(rates.map(|rate| rate.map(|gcra| Arc::new(SharedGcra::new(gcra)) as Arc<dyn Limiter>)))
            }
            (None, None) => Shared::Stream,
        };
        Rate { config, rates, shared }
    }

    /// Keys held now (`key = ..` in this process; 0 otherwise).
    pub fn keys(&self) -> usize {
        match &self.shared {
            Shared::Keyed { keys, .. } => keys.len(),
            _ => 0,
        }
    }

    fn per_second(&self, direction: Direction) -> Option<u64> {
        match direction {
            Direction::Inbound => self.config.recv,
            Direction::Outbound => self.config.send,
        }
    }
}

/// Per-call state of [`Rate`]: the call's key, when the rate has one.
#[derive(Debug, Default)] // as the trait asks of every state; `on_start` makes the one used
pub struct RateCall(CallLimit);

#[derive(Debug, Default)]
enum CallLimit {
    #[default]
    None,
    /// The key's limiters in this process.
    Key(Arc<KeyTats>),
    /// The backend's limiters of the call: `:<key>`, or empty for the
    /// method's. A `String` behind the `Arc`: a thin pointer keeps every
    /// call's state 8 bytes smaller than an `Arc<str>` would.
    Backend(Arc<String>),
}

/// One direction's use of the rate.
///
/// `credit` is what the stream may send without asking: a stream's own
/// limiter (`scope = stream`) starts full, so the stream starts with its
/// burst, granted when the call started; a shared limiter hands out
/// batches. The rest is made when the credit first runs out.
#[derive(Default)] // as the trait asks of every state; `on_stream` makes the one used
pub struct RateStream {
    /// Permits the stream holds and has not spent yet.
    credit: u64,
    slow: Option<Box<Slow>>,
}

/// What a stream needs once its first credit is spent.
struct Slow {
    /// A limiter shared in this process (the method's or the key's), or
    /// `None` for the stream's own, whose TAT is `own`.
    shared: Option<Arc<dyn Limiter>>,
    /// A limiter in a backend.
    remote: Option<Remote>,
    own: Nanos,
    /// The next batch to ask the shared limiter for: 1, then doubled each
    /// time up to the rate's batch (a lease, from a backend), so that a
    /// short stream leaves few permits unused.
    lease: u64,
    /// How late the last wait's wake-up came: made up for while the stream
    /// keeps asking faster than the rate, that is while it comes back for
    /// more before `late_until` (when the permits it last got would have
    /// been used at the rate, and [`MAX_LATE`] more).
    late: u64,
    late_until: Nanos,
    /// The reservation the stream waits for, and its timer (kept for reuse;
    /// also a lease's timeout).
    waiting: Option<Grant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

/// A stream's limiter in a backend.
struct Remote {
    backend: Backend,
    key: Arc<str>,
    per_second: u64,
    /// The permits a lease takes at most.
    batch: u64,
    /// Whether the stream's permits came from the backend (else from its
    /// own limiter, while the backend failed).
    leased: bool,
    /// The lease in flight, if any (its timeout is the stream's `sleep`).
    in_flight: Option<LeaseFuture>,
}

impl Slow {
    /// `permits` were granted `now`: a late wake-up is made up for if the
    /// stream comes back for more before they would have been used at the
    /// rate (and a margin).
    fn granted(&mut self, now: Nanos, permits: u64, gcra: Gcra) {
        self.late_until = now.saturating_add(gcra.span(permits)).saturating_add(MAX_LATE);
    }

    /// Sets the timer to `deadline`.
    fn sleep_until(&mut self, deadline: tokio::time::Instant) {
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
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
    /// Permits taken from a shared limiter and not used go back to it.
    fn drop(&mut self) {
        let Some(slow) = &self.slow else { return };
        let unused = self.credit + slow.waiting.map_or(0, |grant| grant.permits);
        if unused == 0 {
            return;
        }
        if let Some(shared) = &slow.shared {
            shared.refund(unused);
        } else if let Some(remote) = slow.remote.as_ref().filter(|remote| remote.leased) {
            remote.backend.refund(LeaseRequest {
                key: remote.key.clone(),
                per_second: remote.per_second,
                burst: remote.batch,
                permits: unused,
                wait: false,
                timeout: remote.backend.timeout(),
            });
        }
    }
}

impl Interceptor for Rate {
    type Call = RateCall;
    type Stream = RateStream;

    fn name(&self) -> &'static str {
        "rate"
    }

    fn on_start(&self, ctx: &CallContext, metadata: &MetadataMap) -> Result<RateCall, Status> {
        match &self.shared {
            Shared::Stream | Shared::Method(_) => Ok(RateCall(CallLimit::None)),
            Shared::Keyed { keying, keys } => {
                let key = keying.key_of(ctx, metadata)?;
                match keys.get(&key, gcra::now(), KeyTats::default) {
                    Some(tats) => Ok(RateCall(CallLimit::Key(tats))),
                    None => Err(key::too_many_keys("rate", keys.max())),
                }
            }
            Shared::Backend { keying: None, .. } => Ok(RateCall(CallLimit::Backend(Arc::default()))),
            Shared::Backend { keying: Some(keying), .. } => {
                let key = keying.key_of(ctx, metadata)?;
                Ok(RateCall(CallLimit::Backend(Arc::new(format!(":{}", key.to_shared_name())))))
            }
        }
    }

    fn on_stream(&self, _: &RateCall, _: &CallContext, direction: Direction) -> RateStream {
        let credit = match (&self.shared, self.rates[direction as usize]) {
            // No limit this way: credit that never runs out.
            (_, None) => u64::MAX,
            (Shared::Stream, Some(gcra)) => gcra.burst(),
            (_, Some(_)) => 0,
        };
        RateStream { credit, slow: None }
    }

    #[inline]
    fn poll_message<M: prost::Message + 'static>(
        &self,
        call: &RateCall,
        stream: &mut RateStream,
        cx: &mut Context<'_>,
        msg: &MessageRef<'_, M>,
    ) -> Poll<Result<(), Status>> {
        if stream.credit > 0 {
            stream.credit -= 1;
            return Poll::Ready(Ok(()));
        }
        self.poll_permit(call, stream, cx, msg.call(), msg.direction())
    }

    /// Every message the stream holds a permit for: each passes unseen,
    /// spending one, as [`poll_message`](Self::poll_message) would.
    #[inline]
    fn __unseen_allowance(&self, _: &RateCall, stream: &RateStream, _: u64, _: u64) -> u64 {
        stream.credit
    }

    #[inline]
    fn __spend_unseen(&self, stream: &mut RateStream, count: i64) {
        stream.credit = stream.credit.wrapping_add_signed(-count);
    }
}

impl Rate {
    /// What a stream needs once its first credit is spent.
    fn slow(&self, call: &RateCall, ctx: &CallContext, direction: Direction, gcra: Gcra) -> Box<Slow> {
        let (shared, remote) = match (&self.shared, &call.0) {
            (Shared::Method(limiters), _) => (limiters[direction as usize].clone(), None),
            (Shared::Keyed { .. }, CallLimit::Key(tats)) => {
                (Some(Arc::new(KeyLane { tats: tats.clone(), direction, gcra }) as Arc<dyn Limiter>), None)
            }
            (Shared::Backend { backend, .. }, CallLimit::Backend(key)) => {
                let per_second = self.per_second(direction).unwrap_or(1);
                let key = format!("{}:{}{key}", ctx.method().full_name, direction.as_str()).into();
                let batch = backend::lease_size(per_second);
                let remote =
                    Remote { backend: backend.clone(), key, per_second, batch, leased: false, in_flight: None };
                (None, Some(remote))
            }
            _ => (None, None),
        };
        // The burst a stream of its own limiter started with was granted
        // when the call started; the failure policy's own limiter starts
        // unset (0: full) and is set when first used.
        let own = match (&shared, &remote) {
            (None, None) => gcra::from_instant(ctx.started()).saturating_add(gcra.span(gcra.burst())),
            _ => 0,
        };
        Box::new(Slow { shared, remote, own, lease: 1, late: 0, late_until: 0, waiting: None, sleep: None })
    }

    /// A message the stream holds no permit for: takes the permits due now,
    /// waits for a reservation, or is rejected. Out of line, so that the
    /// per-message path above stays small enough to inline.
    #[inline(never)]
    fn poll_permit(
        &self,
        call: &RateCall,
        stream: &mut RateStream,
        cx: &mut Context<'_>,
        ctx: &CallContext,
        direction: Direction,
    ) -> Poll<Result<(), Status>> {
        let Some(gcra) = self.rates[direction as usize] else { return Poll::Ready(Ok(())) };
        let slow = stream.slow.get_or_insert_with(|| self.slow(call, ctx, direction, gcra));
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
            let grant = if slow.remote.is_some() {
                std::task::ready!(self.poll_lease(slow, cx, now, direction, gcra))?
            } else {
                match &slow.shared {
                    Some(shared) => {
                        let grant = shared.reserve(Request { now, from, want: slow.lease, wait });
                        if grant.is_some() {
                            slow.lease = slow.lease.saturating_mul(2).min(gcra.batch());
                        }
                        grant
                    }
                    // The stream's own: all that is due, or a batch to wait for.
                    None => own_step(slow, gcra, Request { now, from, want: u64::MAX, wait }),
                }
            };
            let Some(grant) = grant else { return Poll::Ready(Err(self.exceeded(direction))) };
            if grant.at <= now {
                slow.granted(now, grant.permits, gcra);
                stream.credit = grant.permits - 1;
                return Poll::Ready(Ok(()));
            }
            slow.sleep_until(gcra::to_instant(grant.at));
            slow.waiting = Some(grant);
        }
    }

    /// Permits from the backend: a lease (started, or polled with its
    /// timeout), or, while the backend fails, the failure policy. `Ok(None)`:
    /// none is due and the rate does not wait.
    fn poll_lease(
        &self,
        slow: &mut Slow,
        cx: &mut Context<'_>,
        now: Nanos,
        direction: Direction,
        gcra: Gcra,
    ) -> Poll<Result<Option<Grant>, Status>> {
        let wait = self.config.on_exceed == OnExceed::Wait;
        let remote = slow.remote.as_mut().expect("a stream of a backend's rate");
        if remote.in_flight.is_none() {
            if remote.backend.is_down(now) {
                remote.backend.skipped();
                return Poll::Ready(self.backend_failed(slow, now, gcra, direction));
            }
            let request = LeaseRequest {
                key: remote.key.clone(),
                per_second: remote.per_second,
                burst: self.config.burst.unwrap_or(1).max(remote.batch),
                permits: slow.lease,
                wait,
                timeout: remote.backend.timeout(),
            };
            remote.in_flight = Some(remote.backend.lease(request));
            let deadline = tokio::time::Instant::now() + remote.backend.timeout();
            slow.sleep_until(deadline);
        }
        let remote = slow.remote.as_mut().expect("a stream of a backend's rate");
        let lease = remote.in_flight.as_mut().expect("a lease in flight");
        let answer = match lease.as_mut().poll(cx) {
            Poll::Ready(answer) => answer,
            Poll::Pending => {
                let sleep = slow.sleep.as_mut().expect("a lease waits with its timeout");
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                remote.in_flight = None;
                let timeout = remote.backend.timeout();
                let why = format!("no answer to a lease within {timeout:?}");
                remote.backend.failed(now, true, &why, self.config.on_backend_error);
                return Poll::Ready(self.backend_failed(slow, now, gcra, direction));
            }
        };
        remote.in_flight = None;
        match answer {
            Ok(lease) => {
                remote.backend.answered(&lease);
                if lease.permits == 0 {
                    return Poll::Ready(Ok(None));
                }
                slow.lease = slow.lease.saturating_mul(2).min(remote.batch);
                remote.leased = true;
                let wait = u64::try_from(lease.wait.as_nanos()).unwrap_or(u64::MAX);
                Poll::Ready(Ok(Some(Grant { permits: lease.permits, at: now.saturating_add(wait) })))
            }
            Err(error) => {
                remote.backend.failed(now, false, &error, self.config.on_backend_error);
                Poll::Ready(self.backend_failed(slow, now, gcra, direction))
            }
        }
    }

    /// The backend failed or is down: the stream goes on limited by itself,
    /// or the call ends with UNAVAILABLE.
    #[cold]
    fn backend_failed(
        &self,
        slow: &mut Slow,
        now: Nanos,
        gcra: Gcra,
        direction: Direction,
    ) -> Result<Option<Grant>, Status> {
        let name = slow.remote.as_ref().map_or("backend", |remote| remote.backend.name());
        match self.config.on_backend_error {
            OnBackendError::Reject => Err(Status::unavailable(format!(
                "rate: the limiter backend `{name}` is unavailable, and the rate of {} messages per second ({}) is \
                 kept there (on_backend_error = reject)",
                self.per_second(direction).unwrap_or_default(),
                direction.as_str(),
            ))),
            OnBackendError::Allow => {
                if let Some(remote) = &mut slow.remote {
                    remote.leased = false;
                }
                if slow.own == 0 {
                    // First used now: full.
                    slow.own = now;
                }
                let wait = self.config.on_exceed == OnExceed::Wait;
                Ok(own_step(slow, gcra, Request { now, from: now, want: gcra.batch(), wait }))
            }
        }
    }

    /// RESOURCE_EXHAUSTED for `on_exceed = reject`.
    #[cold]
    fn exceeded(&self, direction: Direction) -> Status {
        let whose = match &self.shared {
            Shared::Stream => "",
            Shared::Method(_) => " for all streams of the method",
            Shared::Keyed { .. } => " for the streams of this key",
            Shared::Backend { keying: Some(_), .. } => " for the streams of this key on every server",
            Shared::Backend { keying: None, .. } => " for all streams of the method on every server",
        };
        Status::resource_exhausted(format!(
            "rate limit exceeded: at most {} messages per second ({}){whose}",
            self.per_second(direction).unwrap_or_default(),
            direction.as_str(),
        ))
    }
}

/// A request to the stream's own limiter (TAT `slow.own`).
fn own_step(slow: &mut Slow, gcra: Gcra, request: Request) -> Option<Grant> {
    gcra.step(slow.own, request).map(|(tat, grant)| {
        slow.own = tat;
        grant
    })
}
