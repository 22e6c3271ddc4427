//! The rate engine: the generic cell rate algorithm (GCRA) with reservations,
//! on tokio's clock.
//!
//! A limiter of `N` per second is one number, the *theoretical arrival time*
//! (TAT): when the permits handed out so far would all have been used up at
//! exactly the rate. A request for `n` permits at `now` is served from
//! `max(TAT, now)`: it is due once `n` more permits fit under `now` plus the
//! tolerance (the burst, as time), and serving it moves the TAT on by `n`
//! intervals of `1/N` s. So:
//!
//! - permits follow elapsed time, not a count of timer wake-ups: a stream that
//!   wakes late from a wait loses nothing, as its next request is served from
//!   the TAT its reservation left, not from when its timer fired;
//! - a request that is not due yet *reserves* its place: it moves the TAT on at
//!   once and is told when its permits are due ([`Grant::at`]). Later requests
//!   are served after it, so streams waiting on one limiter are served in
//!   turn, first come first served, and none is starved by another;
//! - one limiter shared by every stream of a method is one atomic, moved on
//!   by a compare-and-swap per request ([`SharedGcra`]); a stream's own is a
//!   plain number. Streams ask for permits in batches and spend them from a
//!   plain counter, so neither is touched per message.
//!
//! Time is kept as nanoseconds on tokio's clock ([`Nanos`]), so that a paused
//! test clock drives the limiters as it drives tokio's timers.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        OnceLock,
    },
    time::Duration,
};

use crossbeam_utils::CachePadded;
use tokio::time::Instant;

/// An instant on tokio's clock: nanoseconds from a process-wide origin,
/// offset by [`BIAS`] so that instants before the origin (a paused test clock
/// stands still while the real one moves on) are still positive.
pub(crate) type Nanos = u64;

/// 2^62 ns, about 146 years either side of the origin.
const BIAS: Nanos = 1 << 62;

fn origin() -> std::time::Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    *ORIGIN.get_or_init(std::time::Instant::now)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Now, on tokio's clock.
pub(crate) fn now() -> Nanos {
    from_instant(Instant::now())
}

/// `at` as [`Nanos`].
pub(crate) fn from_instant(at: Instant) -> Nanos {
    let (at, origin) = (at.into_std(), origin());
    match at.checked_duration_since(origin) {
        Some(after) => BIAS.saturating_add(nanos(after)),
        None => BIAS.saturating_sub(nanos(origin - at)),
    }
}

/// `at` as tokio's `Instant`, for a timer.
pub(crate) fn to_instant(at: Nanos) -> Instant {
    let origin = origin();
    let at = if at >= BIAS {
        origin.checked_add(Duration::from_nanos(at - BIAS))
    } else {
        origin.checked_sub(Duration::from_nanos(BIAS - at))
    };
    Instant::from_std(at.unwrap_or(origin))
}

/// A rate: one permit every `interval`, `tolerance` of them ahead of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Nanoseconds per permit: `1/N` s, rounded up (never faster than `N`).
    interval: u64,
    /// How far ahead of the rate permits may be taken: `burst()` intervals.
    tolerance: u64,
    /// The most permits one reservation takes: a millisecond's worth, as
    /// tokio's timers wake a waiter once a millisecond at most.
    batch: u64,
}

/// A request for permits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request {
    /// The clock now.
    pub(crate) now: Nanos,
    /// Where the request is served from if the limiter has been idle: `now`,
    /// or earlier by the time a waiter's wake-up came late (so that a late
    /// timer costs it no permits; at most [`MAX_LATE`]).
    pub(crate) from: Nanos,
    /// Permits wanted; a reservation takes at most a batch.
    pub(crate) want: u64,
    /// Reserve permits that are not due yet (`on_exceed = wait`), or take
    /// only those due now.
    pub(crate) wait: bool,
}

impl Request {
    /// A request at `now`, with no late wake-up to make up for.
    #[cfg(test)]
    fn at(now: Nanos, want: u64, wait: bool) -> Self {
        Request { now, from: now, want, wait }
    }
}

/// Permits handed out: usable from `at` (now, or a reservation's time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) permits: u64,
    pub(crate) at: Nanos,
}

/// The most a late wake-up is made up for: one that comes later than this
/// (a machine overloaded for that long) loses the rest.
pub(crate) const MAX_LATE: u64 = 20_000_000;

impl Gcra {
    /// `per_second` permits a second (at least 1; at most 10⁹, one a
    /// nanosecond), `burst` of them back to back (at least 1, and at least a
    /// batch).
    pub(crate) fn new(per_second: u64, burst: Option<u64>) -> Self {
        let per_second = per_second.clamp(1, 1_000_000_000);
        let interval = 1_000_000_000u64.div_ceil(per_second);
        let batch = per_second.div_ceil(1000);
        let tolerance = burst.unwrap_or(1).max(batch).saturating_mul(interval);
        Gcra { interval, tolerance, batch }
    }

    /// Permits that may pass back to back: `max(burst, batch)`.
    pub(crate) fn burst(&self) -> u64 {
        self.tolerance / self.interval
    }

    /// The most permits one reservation takes.
    pub(crate) fn batch(&self) -> u64 {
        self.batch
    }

    /// The time `permits` take at the rate.
    pub(crate) fn span(&self, permits: u64) -> u64 {
        permits.saturating_mul(self.interval)
    }

    /// Serves `request` from a limiter whose TAT is `tat`: the new TAT and
    /// what was granted, or `None` when nothing is due and the request does
    /// not wait.
    ///
    /// The permits due now are taken at once (up to `want`); if none is due,
    /// a waiting request reserves up to a batch, due when the last of them
    /// comes within the tolerance.
    pub(crate) fn step(&self, tat: Nanos, request: Request) -> Option<(Nanos, Grant)> {
        let base = tat.max(request.from);
        let due = request.now.saturating_add(self.tolerance).saturating_sub(base) / self.interval;
        if due > 0 {
            let permits = due.min(request.want).max(1);
            return Some((base.saturating_add(self.span(permits)), Grant { permits, at: request.now }));
        }
        if !request.wait {
            return None;
        }
        // Nothing is due: `base + interval > now + tolerance`, so `at` is
        // after `now`.
        let permits = request.want.clamp(1, self.batch);
        let tat = base.saturating_add(self.span(permits));
        Some((tat, Grant { permits, at: tat.saturating_sub(self.tolerance) }))
    }
}

/// A limiter shared by many streams in this process: the shape of what a
/// method's streams (or a key's) ask for their permits. [`SharedGcra`] is a
/// method's; a key's is its TAT in the keyed map. A limiter kept in a store
/// shared by servers answers the same questions, but a round trip away:
/// see [`super::backend::LimiterBackend`].
pub(crate) trait Limiter: Send + Sync + fmt::Debug {
    /// Permits for one stream (see [`Gcra::step`]).
    fn reserve(&self, request: Request) -> Option<Grant>;
    /// Permits a stream took and will not use (it ended holding them, or
    /// ended while waiting for a reservation): others may have them.
    fn refund(&self, permits: u64);
}

/// A GCRA limiter shared by threads: the TAT in one atomic, on a cache line
/// of its own, moved on with a compare-and-swap per request (a batch of
/// permits), never per message.
#[derive(Debug)]
pub(crate) struct SharedGcra {
    gcra: Gcra,
    tat: CachePadded<AtomicU64>,
}

impl SharedGcra {
    pub(crate) fn new(gcra: Gcra) -> Self {
        // Zero: long ago, so the limiter starts full.
        SharedGcra { gcra, tat: CachePadded::new(AtomicU64::new(0)) }
    }
}

impl Limiter for SharedGcra {
    fn reserve(&self, request: Request) -> Option<Grant> {
        self.gcra.reserve_on(&self.tat, request)
    }

    fn refund(&self, permits: u64) {
        self.gcra.refund_on(&self.tat, permits)
    }
}

impl Gcra {
    /// Serves `request` from the limiter whose TAT is `tat`, shared by
    /// threads: a compare-and-swap.
    pub(crate) fn reserve_on(&self, tat: &AtomicU64, request: Request) -> Option<Grant> {
        let mut grant = None;
        // Only the TAT itself is shared: no other memory is published with
        // it, so relaxed ordering is enough.
        let _ = tat.fetch_update(Relaxed, Relaxed, |tat| {
            let (next, granted) = self.step(tat, request)?;
            grant = Some(granted);
            Some(next)
        });
        grant
    }

    /// Gives `permits` back to the limiter whose TAT is `tat`.
    pub(crate) fn refund_on(&self, tat: &AtomicU64, permits: u64) {
        let back = self.span(permits);
        let _ = tat.fetch_update(Relaxed, Relaxed, |tat| Some(tat.saturating_sub(back)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const T0: Nanos = BIAS + 1000 * MS;

    #[test]
    fn intervals_round_up_and_batches_are_a_millisecond() {
        let g = Gcra::new(3, None);
        assert_eq!((g.interval, g.batch, g.burst()), (333_333_334, 1, 1));
        let g = Gcra::new(100_000, None);
        assert_eq!((g.interval, g.batch, g.burst()), (10_000, 100, 100));
        let g = Gcra::new(1500, Some(5));
        assert_eq!((g.interval, g.batch, g.burst()), (666_667, 2, 5));
        let g = Gcra::new(0, Some(0));
        assert_eq!((g.interval, g.batch, g.burst()), (1_000_000_000, 1, 1));
        let g = Gcra::new(u64::MAX, Some(u64::MAX));
        assert_eq!((g.interval, g.batch), (1, 1_000_000));
    }

    #[test]
    fn a_full_limiter_gives_its_burst_then_one_per_interval() {
        let g = Gcra::new(10, Some(3));
        // Long idle: the burst is there.
        let (tat, grant) = g.step(0, Request::at(T0, u64::MAX, true)).unwrap();
        assert_eq!(grant, Grant { permits: 3, at: T0 });
        // Nothing is due: one permit reserved, due one interval on.
        let (tat, grant) = g.step(tat, Request::at(T0, u64::MAX, true)).unwrap();
        assert_eq!(grant, Grant { permits: 1, at: T0 + 100 * MS });
        // Without waiting, nothing.
        assert_eq!(g.step(tat, Request::at(T0, 1, false)), None);
        // The next reservation queues behind the first.
        let (_, grant) = g.step(tat, Request::at(T0, 1, true)).unwrap();
        assert_eq!(grant.at, T0 + 200 * MS);
        // Half an interval later nothing more is due; a whole one, one is.
        assert_eq!(g.step(tat, Request::at(T0 + 150 * MS, 1, false)), None);
        let (_, grant) = g.step(tat, Request::at(T0 + 200 * MS, 1, false)).unwrap();
        assert_eq!(grant.permits, 1);
    }

    #[test]
    fn high_rates_reserve_a_millisecond_at_a_time() {
        let g = Gcra::new(100_000, None);
        let (mut tat, first) = g.step(0, Request::at(T0, u64::MAX, true)).unwrap();
        assert_eq!(first.permits, 100);
        // A stream that keeps asking: 100 every millisecond, each batch due
        // when the one before it has passed at the rate.
        for i in 1..=10 {
            let (next, grant) = g.step(tat, Request::at(T0, u64::MAX, true)).unwrap();
            assert_eq!(grant, Grant { permits: 100, at: T0 + i * MS });
            tat = next;
        }
    }

    #[test]
    fn a_late_wake_up_loses_no_permits() {
        let g = Gcra::new(1000, None);
        let (tat, _) = g.step(0, Request::at(T0, 1, true)).unwrap();
        let (tat, grant) = g.step(tat, Request::at(T0, 1, true)).unwrap();
        assert_eq!(grant.at, T0 + MS);
        // The timer fires 3 ms late. Served from `now`, the time in between
        // would be lost; served from the late wake-up's due time, the next
        // permits come at the rate's own times, at once while overdue.
        let late = T0 + 4 * MS;
        let (_, lost) = g.step(tat, Request::at(late, 1, true)).unwrap();
        assert_eq!(lost, Grant { permits: 1, at: late });
        let from = Request { now: late, from: late - 3 * MS, want: u64::MAX, wait: true };
        let (tat, caught_up) = g.step(tat, from).unwrap();
        assert_eq!(caught_up, Grant { permits: 3, at: late });
        assert_eq!(tat, T0 + 5 * MS);
    }

    #[test]
    fn a_shared_limiter_serves_waiters_in_turn_and_takes_refunds() {
        let shared = SharedGcra::new(Gcra::new(4000, None));
        let ask = |now| shared.reserve(Request::at(now, 4, true)).unwrap();
        assert_eq!(ask(T0), Grant { permits: 4, at: T0 });
        // Eight streams ask in turn: each gets its batch a millisecond after
        // the one before.
        let times: Vec<_> = (0..8).map(|_| ask(T0).at - T0).collect();
        assert_eq!(times, (1..=8).map(|i| i * MS).collect::<Vec<_>>());
        // The last one leaves without its permits: the next comes in its place.
        shared.refund(4);
        assert_eq!(ask(T0).at - T0, 8 * MS);
    }

    #[test]
    fn the_clock_round_trips() {
        let now = Instant::now();
        let at = from_instant(now);
        let back = to_instant(at);
        assert!(back.max(now) - back.min(now) < Duration::from_micros(1));
        let earlier = now - Duration::from_secs(5);
        assert_eq!(from_instant(earlier), at - 5_000_000_000);
    }
}
