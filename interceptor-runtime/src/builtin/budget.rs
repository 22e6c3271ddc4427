//! `budget`: what one stream may use.
//!
//! `budget(messages = 1000, bytes = "4MiB", duration = "30s", idle = "10s", streams = 64)`,
//! or `budget = 1000` for a message budget alone.
//!
//! - `messages`, `bytes`: per stream and per direction. Exactly `messages`
//!   messages pass each way; the next one ends the call with
//!   RESOURCE_EXHAUSTED. A message that would take the bytes over `bytes` ends
//!   it (bytes are `prost::Message::encoded_len`).
//! - `duration`: the call ends with DEADLINE_EXCEEDED once it has run this
//!   long, by a timer that interrupts both directions, busy or waiting, and
//!   the handler if it still runs (its future is dropped; a unary handler
//!   that never answers ends on time too).
//! - `idle`: the call ends with DEADLINE_EXCEEDED when no message has passed
//!   either way for this long. The timer restarts from when a direction next
//!   finds no message ready after messages passed, so a bidi stream busy one
//!   way only is cut within `2 × idle` at most.
//! - `streams`: at most this many calls of the method at once; one more is
//!   rejected with RESOURCE_EXHAUSTED before the handler runs. The slot is
//!   released however the call ends.
//! - `streams` with `key = peer`, `key = metadata("x-api-key")` or
//!   `key_fn = path`: at most this many calls at once **per key** (per
//!   client), so that one client cannot take every slot. A call without the
//!   key ends as `on_missing_key` says (INVALID_ARGUMENT by default); the
//!   keys held are bounded by `max_keys` (a key with no call is dropped),
//!   see [`key`](crate::key). Kept in this process.
//!
//! The counts are the call's own (the ones [`CallContext::stats`] reports),
//! so budget keeps none per direction. `duration` and `idle` share one timer
//! per call, kept in the call's state and polled by its streams: no task is
//! spawned per stream. Nothing on the call's path takes a lock: the `streams`
//! slots are one atomic counter per method (on a cache line of its own), and
//! the timer sits in an atomic slot of the call, which the direction that
//! polls it empties and fills again.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use crossbeam_utils::{atomic::AtomicCell, CachePadded};
use tokio::time::{Instant, Sleep};
use tonic::{metadata::MetadataMap, Status};

use super::key::{self, Key, KeyFn, KeyState, KeyedMap, Keying, MissingKey};
use crate::{
    engine::{CallContext, UNSEEN_MAX_LEN},
    interceptor::{Direction, Interceptor, MessageRef},
};

/// Options of `budget(..)`; `None` is no limit.
#[derive(Clone, Debug, Default)]
pub struct BudgetConfig {
    /// Messages per stream, each direction.
    pub messages: Option<u64>,
    /// Encoded bytes per stream, each direction.
    pub bytes: Option<u64>,
    /// How long a call may run.
    pub duration: Option<Duration>,
    /// How long a call may pass no message.
    pub idle: Option<Duration>,
    /// Concurrent calls of the method (of each key, with `key`).
    pub streams: Option<u64>,
    /// Count `streams` per value of this key (`key = peer`,
    /// `key = metadata("x-api-key")`).
    pub key: Option<Key>,
    /// Count `streams` per value your function returns (`key_fn = path`).
    pub key_fn: Option<KeyFn>,
    /// The most keys held at once (default 100,000).
    pub max_keys: Option<u64>,
    /// What a call without its key gets.
    pub on_missing_key: MissingKey,
}

/// The `budget` interceptor; see the [module docs](self).
#[derive(Debug)]
pub struct Budget {
    config: BudgetConfig,
    /// Calls holding a `streams` slot. Written when a call starts and ends,
    /// so kept off the line of `config`, which every message reads.
    active: CachePadded<AtomicU64>,
    /// The `streams` slots per key, with `key`.
    keyed: Option<(Keying, KeyedMap<KeySlots>)>,
}

/// A key's calls holding a `streams` slot.
#[derive(Debug, Default)]
pub(crate) struct KeySlots(AtomicU64);

impl KeyState for KeySlots {
    // mutants: `true` is equivalent: it is asked only of a key no call holds,
    // and a call gives its slot back before it lets the key go
    // (`.cargo/mutants.toml`).
    fn at_rest(&self, _: u64) -> bool {
        self.0.load(Ordering::Relaxed) == 0
    }
}

impl Budget {
    /// A budget with these limits.
    pub fn new(config: BudgetConfig) -> Self {
        let keying = Keying::new("budget", config.key.as_ref(), config.key_fn.as_ref(), config.on_missing_key);
        let keyed = keying.filter(|_| config.streams.is_some()).map(|k| (k, KeyedMap::new(config.max_keys)));
        Budget { config, active: CachePadded::new(AtomicU64::new(0)), keyed }
    }

    /// Calls of the method holding a `streams` slot now (of every key).
    pub fn active_streams(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Keys held now (`streams` with `key`; 0 otherwise).
    pub fn keys(&self) -> usize {
        self.keyed.as_ref().map_or(0, |(_, keys)| keys.len())
    }
}

/// Takes one of `max` slots of `count`.
fn take_slot(count: &AtomicU64, max: u64) -> bool {
    count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok()
}

/// Per-call state of [`Budget`].
#[derive(Default)] // as the trait asks of every state; `on_start` makes the one used
pub struct BudgetCall {
    /// The `duration` / `idle` timer, in an atomic slot. Either direction
    /// polls it, with the call's waker, so whichever does, both hear when it
    /// fires: the one that polls takes it out of the slot and puts it back,
    /// and one that finds the slot empty leaves the timer to the other.
    timer: AtomicCell<Option<Pin<Box<Timer>>>>,
    /// The key's slots, with `streams` and `key`.
    key: Option<Arc<KeySlots>>,
}

// The slot is a pointer-sized atomic, not a lock.
const _: () = assert!(AtomicCell::<Option<Pin<Box<Timer>>>>::is_lock_free());

impl fmt::Debug for BudgetCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetCall").finish_non_exhaustive()
    }
}

pin_project_lite::pin_project! {
    struct Timer {
        #[pin]
        sleep: Sleep,
        // Messages both ways when the idle timer was last set.
        idle_seen: u64,
    }
}

impl Timer {
    /// `seen` messages have passed both ways: the timer fires at `deadline`.
    fn restart(self: Pin<&mut Self>, seen: u64, deadline: Instant) {
        let this = self.project();
        *this.idle_seen = seen;
        this.sleep.reset(deadline);
    }
}

fn messages_both_ways(ctx: &CallContext) -> u64 {
    let stats = ctx.stats();
    stats.messages_received + stats.messages_sent
}

impl Budget {
    /// When the timer should fire, with no message since `now`.
    fn next_deadline(&self, ctx: &CallContext, now: Instant) -> Instant {
        let end = self.config.duration.map(|d| ctx.started() + d);
        let idle = self.config.idle.map(|d| now + d);
        match (end, idle) {
            (Some(end), Some(idle)) => end.min(idle),
            (Some(at), None) | (None, Some(at)) => at,
            (None, None) => now,
        }
    }
}

impl Interceptor for Budget {
    type Call = BudgetCall;
    type Stream = ();

    fn name(&self) -> &'static str {
        "budget"
    }

    fn on_start(&self, ctx: &CallContext, metadata: &MetadataMap) -> Result<BudgetCall, Status> {
        // With `streams`, every call that starts holds a slot until `on_end`.
        let mut key = None;
        if let Some(max) = self.config.streams {
            if let Some((keying, keys)) = &self.keyed {
                let slots = keys
                    .get(&keying.key_of(ctx, metadata)?, key::now(), KeySlots::default)
                    .ok_or_else(|| key::too_many_keys("budget", keys.max()))?;
                if !take_slot(&slots.0, max) {
                    return Err(Status::resource_exhausted(format!(
                        "budget: all {max} concurrent streams of {} for this key are in use",
                        ctx.method().full_name
                    )));
                }
                key = Some(slots);
            }
            if !take_slot(&self.active, if key.is_some() { u64::MAX } else { max }) {
                return Err(Status::resource_exhausted(format!(
                    "budget: all {max} concurrent streams of {} are in use",
                    ctx.method().full_name
                )));
            }
        }
        let timer = (self.config.duration.is_some() || self.config.idle.is_some()).then(|| {
            Box::pin(Timer { sleep: tokio::time::sleep_until(self.next_deadline(ctx, ctx.started())), idle_seen: 0 })
        });
        Ok(BudgetCall { timer: AtomicCell::new(timer), key })
    }

    fn on_stream(&self, _: &BudgetCall, _: &CallContext, _: Direction) {}

    #[inline]
    fn poll_message<M: prost::Message + 'static>(
        &self,
        _: &BudgetCall,
        _: &mut (),
        _: &mut Context<'_>,
        msg: &MessageRef<'_, M>,
    ) -> Poll<Result<(), Status>> {
        if let Some(max) = self.config.messages {
            // The messages of this direction that passed so far.
            if msg.index() >= max {
                return Poll::Ready(Err(used_up(max, "messages", msg.direction())));
            }
        }
        if let Some(max) = self.config.bytes {
            if msg.bytes_before() + msg.encoded_len() as u64 > max {
                return Poll::Ready(Err(used_up(max, "bytes", msg.direction())));
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The messages and bytes left, counted as [`poll_message`](Self::poll_message)
    /// counts them: every message up to the last one the limits allow, each
    /// at most `UNSEEN_MAX_LEN` bytes, passes unseen.
    #[inline]
    fn __unseen_allowance(&self, _: &BudgetCall, _: &(), index: u64, bytes: u64) -> u64 {
        let messages = self.config.messages.map_or(u64::MAX, |max| max.saturating_sub(index));
        let by_bytes = self.config.bytes.map_or(u64::MAX, |max| max.saturating_sub(bytes) / UNSEEN_MAX_LEN as u64);
        messages.min(by_bytes)
    }

    fn poll_interrupt(&self, call: &BudgetCall, _: &mut (), ctx: &CallContext, cx: &mut Context<'_>) -> Poll<Status> {
        // Empty: no timer, or the other direction is polling it.
        let Some(mut timer) = call.timer.take() else { return Poll::Pending };
        let polled = self.poll_timer(timer.as_mut(), ctx, cx);
        call.timer.store(Some(timer));
        polled
    }

    fn on_end(&self, call: &BudgetCall, _: &CallContext) {
        if self.config.streams.is_some() {
            self.active.fetch_sub(1, Ordering::AcqRel);
            if let Some(slots) = &call.key {
                slots.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        // The timer goes with the call (or with the call's state, if a
        // direction is polling it right now).
        drop(call.timer.take());
    }
}

/// RESOURCE_EXHAUSTED for a `messages` or `bytes` budget; out of line, so
/// that the per-message check stays small enough to inline.
#[cold]
#[inline(never)]
fn used_up(max: u64, what: &str, direction: Direction) -> Status {
    Status::resource_exhausted(format!("budget: {max} {what} per stream used up ({})", direction.as_str()))
}

impl Budget {
    /// Polls the call's timer: `Ready` once a limit is used up.
    fn poll_timer(&self, mut timer: Pin<&mut Timer>, ctx: &CallContext, cx: &mut Context<'_>) -> Poll<Status> {
        if self.config.idle.is_some() {
            let seen = messages_both_ways(ctx);
            if seen != timer.idle_seen {
                // Messages passed since the timer was set: idle from now.
                timer.as_mut().restart(seen, self.next_deadline(ctx, Instant::now()));
            }
        }
        while timer.as_mut().project().sleep.poll(cx).is_ready() {
            let now = Instant::now();
            if self.config.duration.is_some_and(|d| now >= ctx.started() + d) {
                return Poll::Ready(self.duration_used_up());
            }
            let Some(limit) = self.config.idle else { return Poll::Pending };
            let seen = messages_both_ways(ctx);
            if seen == timer.idle_seen {
                return Poll::Ready(Status::deadline_exceeded(format!(
                    "budget: no message for {} (idle limit)",
                    humanize(limit)
                )));
            }
            // A message passed meanwhile: wait another `idle` from now.
            timer.as_mut().restart(seen, self.next_deadline(ctx, now));
        }
        Poll::Pending
    }

    #[cold]
    #[inline(never)]
    fn duration_used_up(&self) -> Status {
        let limit = self.config.duration.unwrap_or_default();
        Status::deadline_exceeded(format!("budget: stream duration of {} used up", humanize(limit)))
    }
}

/// `30s`, `1.5s`, `250ms`.
fn humanize(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{d:?}")
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::engine::{test_context, RpcKind};

    fn with_key(key: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("x-api-key", key.parse().unwrap());
        metadata
    }

    /// `keys()` counts the keys that hold state; a sweep keeps a key a call
    /// holds and drops one whose calls have all ended.
    #[test]
    fn keys_are_held_while_their_calls_run_and_dropped_at_rest() {
        let budget = Budget::new(BudgetConfig {
            streams: Some(1),
            key: Some(Key::metadata("x-api-key").unwrap()),
            ..Default::default()
        });
        let ctx = test_context(RpcKind::Unary);
        assert_eq!(budget.keys(), 0);
        let a = budget.on_start(&ctx, &with_key("a")).unwrap();
        let b = budget.on_start(&ctx, &with_key("b")).unwrap();
        assert_eq!((budget.keys(), budget.active_streams()), (2, 2));
        budget.on_end(&a, &ctx);
        drop(a);
        let (_, keys) = budget.keyed.as_ref().unwrap();
        keys.sweep(key::now());
        assert_eq!((budget.keys(), budget.active_streams()), (1, 1), "`a` is at rest, `b` is held");
        budget.on_end(&b, &ctx);
        drop(b);
        keys.sweep(key::now());
        assert_eq!((budget.keys(), budget.active_streams()), (0, 0));
    }
}
