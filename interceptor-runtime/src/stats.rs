//! Per-method statistics that a program can snapshot, filled in by the
//! `monitor` interceptor. A test reads what its own calls did with
//! [`since`] (the difference from an earlier [`snapshot`]) or after a
//! [`reset`].
//!
//! A method's totals are atomics, added to once per call when it starts and
//! once when it ends (nothing per message, no lock): the calls that an
//! interceptor ended are counted in a small table of (name, count) slots, one
//! per interceptor name, claimed without a lock the first time that name ends
//! a call.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use once_cell::race::OnceBox;
use tonic::Code;

#[cfg(feature = "monitor")]
use crate::engine::CallContext;
use crate::engine::{MethodInfo, RpcKind};

/// Running totals of one method, which `monitor` adds to; read through
/// [`MethodSnapshot`].
#[derive(Debug)]
pub(crate) struct MethodStats {
    info: MethodInfo,
    started: AtomicU64,
    finished: AtomicU64,
    messages_received: AtomicU64,
    bytes_received: AtomicU64,
    messages_sent: AtomicU64,
    bytes_sent: AtomicU64,
    nanos: AtomicU64,
    codes: [AtomicU64; 17],
    ended_by: EndedBy,
}

/// Calls ended by an interceptor, by its name: a fixed table of slots, each
/// claimed for one name (lock-free, the first time that name ends a call)
/// and counted with an atomic add. A method names as many interceptors as its
/// attribute does, so the table does not fill up; if it ever did, the names
/// past it would be counted in a map behind a lock.
#[derive(Debug, Default)]
struct EndedBy {
    slots: [EndedBySlot; ENDED_BY_SLOTS],
    overflow: Mutex<BTreeMap<&'static str, u64>>,
}

const ENDED_BY_SLOTS: usize = 8;

#[derive(Debug, Default)]
struct EndedBySlot {
    name: OnceBox<&'static str>,
    count: AtomicU64,
}

impl EndedBy {
    #[cfg(feature = "monitor")]
    fn add(&self, name: &'static str) {
        for slot in &self.slots {
            // An empty slot is claimed for `name`; if another name claimed
            // it first, the search goes on.
            let claimed = slot.name.get_or_init(|| Box::new(name));
            if *claimed == name {
                slot.count.fetch_add(1, Relaxed);
                return;
            }
        }
        *self.overflow.lock().unwrap_or_else(|e| e.into_inner()).entry(name).or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        let mut map = self.overflow.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for slot in &self.slots {
            let (Some(name), count) = (slot.name.get(), slot.count.load(Relaxed)) else { break };
            if count > 0 {
                *map.entry(*name).or_default() += count;
            }
        }
        map
    }
}

/// A copy of one method's totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodSnapshot {
    /// `/package.Service/Method`.
    pub method: &'static str,
    /// The RPC kind.
    pub kind: RpcKind,
    /// Calls started (including those an interceptor rejected before the handler).
    pub started: u64,
    /// Calls finished.
    pub finished: u64,
    /// Messages received from clients, and their encoded bytes.
    pub messages_received: u64,
    /// See `messages_received`.
    pub bytes_received: u64,
    /// Messages sent to clients, and their encoded bytes.
    pub messages_sent: u64,
    /// See `messages_sent`.
    pub bytes_sent: u64,
    /// Sum of the durations of finished calls.
    pub total_duration: Duration,
    /// Finished calls by final code, in code order; codes with no call left out.
    pub codes: Vec<(Code, u64)>,
    /// Calls ended by an interceptor, by its name.
    pub ended_by: BTreeMap<&'static str, u64>,
}

impl MethodSnapshot {
    /// Calls started and not finished.
    pub fn in_flight(&self) -> u64 {
        self.started - self.finished
    }
    /// Finished calls with this code.
    pub fn code(&self, code: Code) -> u64 {
        self.codes.iter().find(|(c, _)| *c == code).map_or(0, |(_, n)| *n)
    }

    /// What the method did between `earlier`, a snapshot of the same method,
    /// and this one: every count is the difference.
    ///
    /// A call's messages, bytes, duration and code are added to the totals
    /// when it ends, so a call in flight at `earlier` that ends before this
    /// snapshot counts whole in the difference, as started, finished and
    /// with all its messages. (`in_flight()` of the difference is then that
    /// of this snapshot.)
    pub fn since(&self, earlier: &MethodSnapshot) -> MethodSnapshot {
        let mut codes = self.codes.clone();
        for (code, n) in &mut codes {
            *n = n.saturating_sub(earlier.code(*code));
        }
        codes.retain(|(_, n)| *n > 0);
        let mut ended_by = self.ended_by.clone();
        for (name, n) in &mut ended_by {
            *n = n.saturating_sub(earlier.ended_by.get(name).copied().unwrap_or(0));
        }
        ended_by.retain(|_, n| *n > 0);
        MethodSnapshot {
            method: self.method,
            kind: self.kind,
            started: self.started.saturating_sub(earlier.finished),
            finished: self.finished.saturating_sub(earlier.finished),
            messages_received: self.messages_received.saturating_sub(earlier.messages_received),
            bytes_received: self.bytes_received.saturating_sub(earlier.bytes_received),
            messages_sent: self.messages_sent.saturating_sub(earlier.messages_sent),
            bytes_sent: self.bytes_sent.saturating_sub(earlier.bytes_sent),
            total_duration: self.total_duration.saturating_sub(earlier.total_duration),
            codes,
            ended_by,
        }
    }
}

// Only `monitor` records; without it the totals stay empty.
impl MethodStats {
    #[cfg(feature = "monitor")]
    fn new(info: MethodInfo) -> Self {
        MethodStats {
            info,
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            messages_received: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            messages_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            nanos: AtomicU64::new(0),
            codes: Default::default(),
            ended_by: EndedBy::default(),
        }
    }

    #[cfg(feature = "monitor")]
    pub(crate) fn record_start(&self) {
        self.started.fetch_add(1, Relaxed);
    }

    /// Adds a finished call; `ctx.outcome()` must be set.
    #[cfg(feature = "monitor")]
    pub(crate) fn record_end(&self, ctx: &CallContext) {
        let Some(outcome) = ctx.outcome() else { return };
        let s = outcome.stats;
        self.messages_received.fetch_add(s.messages_received, Relaxed);
        self.bytes_received.fetch_add(s.bytes_received, Relaxed);
        self.messages_sent.fetch_add(s.messages_sent, Relaxed);
        self.bytes_sent.fetch_add(s.bytes_sent, Relaxed);
        self.nanos.fetch_add(outcome.duration.as_nanos() as u64, Relaxed);
        self.codes[outcome.code as usize].fetch_add(1, Relaxed);
        if let Some(name) = outcome.ended_by {
            self.ended_by.add(name);
        }
        // Last, so that a snapshot that sees the call finished sees its counts.
        self.finished.fetch_add(1, Relaxed);
    }

    /// A copy of the totals.
    pub fn snapshot(&self) -> MethodSnapshot {
        MethodSnapshot {
            method: self.info.full_name,
            kind: self.info.kind,
            finished: self.finished.load(Relaxed),
            started: self.started.load(Relaxed),
            messages_received: self.messages_received.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            messages_sent: self.messages_sent.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            total_duration: Duration::from_nanos(self.nanos.load(Relaxed)),
            codes: (0..17)
                .filter_map(|i| {
                    let n = self.codes[i].load(Relaxed);
                    (n > 0).then(|| (Code::from_i32(i as i32), n))
                })
                .collect(),
            ended_by: self.ended_by.snapshot(),
        }
    }
}

type Registry = Mutex<BTreeMap<&'static str, Arc<MethodStats>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The totals of a method, created on first use.
#[cfg(feature = "monitor")]
pub(crate) fn method_stats(info: &MethodInfo) -> Arc<MethodStats> {
    let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
    map.entry(info.full_name).or_insert_with(|| Arc::new(MethodStats::new(info.clone()))).clone()
}

/// The totals of every monitored method that has had a call, by method name
/// (since the last [`reset`], if any).
pub fn snapshot() -> Vec<MethodSnapshot> {
    let map = registry().lock().unwrap_or_else(|e| e.into_inner());
    map.values().map(|m| since_reset(m.snapshot())).collect()
}

/// The totals of one method (`/package.Service/Method`), if it had a call
/// (since the last [`reset`], if any).
pub fn method(full_name: &str) -> Option<MethodSnapshot> {
    let map = registry().lock().unwrap_or_else(|e| e.into_inner());
    map.get(full_name).map(|m| since_reset(m.snapshot()))
}

/// What every method did since `before`, an earlier [`snapshot`]: the
/// methods with calls since then (or in flight), each the difference
/// ([`MethodSnapshot::since`]). For tests: no totals to subtract by hand.
///
/// The totals are the process's: calls of the same method made meanwhile by
/// other tests running in parallel are in the difference too.
///
/// ```
/// use interceptor_runtime::{intercept, stats};
/// use tonic::{Code, Request, Response, Status};
///
/// struct Svc;
///
/// impl Svc {
///     #[intercept(monitor, service = "doc.Stats")]
///     async fn ping(&self, request: Request<()>) -> Result<Response<()>, Status> {
///         Ok(Response::new(request.into_inner()))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// Svc.ping(Request::new(())).await.unwrap();
///
/// let before = stats::snapshot();
/// Svc.ping(Request::new(())).await.unwrap();
/// Svc.ping(Request::new(())).await.unwrap();
/// let moved = stats::since(&before);
/// assert_eq!(moved.len(), 1);
/// let ping = &moved[0];
/// assert_eq!((ping.method, ping.finished, ping.code(Code::Ok)), ("/doc.Stats/Ping", 2, 2));
/// assert_eq!(ping.messages_received, 2);
///
/// // Or start the totals over.
/// stats::reset();
/// assert!(stats::snapshot().iter().all(|m| m.finished == 0));
/// Svc.ping(Request::new(())).await.unwrap();
/// assert_eq!(stats::method("/doc.Stats/Ping").unwrap().finished, 1);
/// # }
/// ```
pub fn since(before: &[MethodSnapshot]) -> Vec<MethodSnapshot> {
    moved(snapshot(), before)
}

/// [`since`], from the totals `now`.
fn moved(now: Vec<MethodSnapshot>, before: &[MethodSnapshot]) -> Vec<MethodSnapshot> {
    let moved = now.into_iter().map(|now| match before.iter().find(|b| b.method == now.method) {
        Some(earlier) => now.since(earlier),
        None => now,
    });
    // A call that finished since was in flight then or started since: both
    // count as started, so a method with nothing started had nothing finish.
    moved.filter(|m| m.started > 0).collect()
}

/// Starts every method's totals over: [`snapshot`] and [`method`] count
/// from now on, as [`since`] a snapshot taken now would. Calls in flight
/// count as started after the reset.
///
/// For tests; the totals are the process's, so tests that reset them must
/// not run in parallel with tests that read them (prefer [`since`]). It
/// changes what this module reports only: not the `metrics` export, nor
/// [`live_calls`].
pub fn reset() {
    let map = registry().lock().unwrap_or_else(|e| e.into_inner());
    let mut baselines = baselines().lock().unwrap_or_else(|e| e.into_inner());
    for (name, m) in map.iter() {
        baselines.insert(name, m.snapshot());
    }
}

type Baselines = Mutex<BTreeMap<&'static str, MethodSnapshot>>;

/// The totals each method had at the last [`reset`].
fn baselines() -> &'static Baselines {
    static BASELINES: OnceLock<Baselines> = OnceLock::new();
    BASELINES.get_or_init(Default::default)
}

fn since_reset(totals: MethodSnapshot) -> MethodSnapshot {
    let baselines = baselines().lock().unwrap_or_else(|e| e.into_inner());
    match baselines.get(totals.method) {
        Some(baseline) => totals.since(baseline),
        None => totals,
    }
}

/// Intercepted calls whose state is still alive, over all methods: 0 once
/// every call has ended and its streams are dropped. For leak checks.
pub fn live_calls() -> usize {
    crate::engine::LIVE_CALLS.load(Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(started: u64, finished: u64, codes: Vec<(Code, u64)>, by_budget: u64) -> MethodSnapshot {
        MethodSnapshot {
            method: "/t.S/M",
            kind: RpcKind::Bidi,
            started,
            finished,
            messages_received: finished * 10,
            bytes_received: finished * 100,
            messages_sent: finished,
            bytes_sent: finished * 7,
            total_duration: Duration::from_millis(finished),
            codes,
            ended_by: (by_budget > 0).then_some(("budget", by_budget)).into_iter().collect(),
        }
    }

    #[test]
    fn a_difference_counts_the_calls_in_flight_before_it_as_its_own() {
        // 2 calls in flight at `earlier`; then they and 3 more end.
        let earlier = totals(5, 3, vec![(Code::Ok, 2), (Code::Cancelled, 1)], 0);
        let now = totals(8, 8, vec![(Code::Ok, 4), (Code::Cancelled, 1), (Code::ResourceExhausted, 3)], 3);
        let moved = now.since(&earlier);
        assert_eq!((moved.started, moved.finished, moved.in_flight()), (5, 5, 0));
        assert_eq!(moved.codes, [(Code::Ok, 2), (Code::ResourceExhausted, 3)]);
        assert_eq!(moved.ended_by.get("budget"), Some(&3));
        assert_eq!((moved.messages_received, moved.bytes_sent), (50, 35));
        assert_eq!(moved.total_duration, Duration::from_millis(5));
        // Nothing moved: all zero, nothing left over.
        let still = earlier.since(&earlier);
        assert_eq!((still.started, still.finished, still.codes.len(), still.ended_by.len()), (2, 0, 0, 0));
    }

    /// `since` lists the methods that moved: one whose only call started
    /// since and is still running, one with calls in flight then, not one
    /// with none then and none since.
    #[test]
    fn since_lists_the_methods_with_calls_started_or_in_flight() {
        let named = |method, started, finished| MethodSnapshot { method, ..totals(started, finished, vec![], 0) };
        let before = [named("/t.S/Quiet", 3, 3), named("/t.S/Busy", 2, 1)];
        let now = vec![named("/t.S/Quiet", 3, 3), named("/t.S/Busy", 2, 1), named("/t.S/New", 1, 0)];
        let moved: Vec<_> = moved(now, &before).into_iter().map(|m| (m.method, m.started, m.finished)).collect();
        assert_eq!(moved, [("/t.S/Busy", 1, 0), ("/t.S/New", 1, 0)]);
    }
}

#[cfg(all(test, feature = "monitor"))]
mod ended_by_tests {
    use super::EndedBy;

    #[test]
    fn calls_ended_by_each_name_are_counted_past_the_table_too() {
        let ended_by = EndedBy::default();
        let names = ["rate", "budget", "a", "b", "c", "d", "e", "f", "g", "h"];
        for (i, name) in names.iter().enumerate() {
            for _ in 0..=i {
                ended_by.add(name);
            }
        }
        // Another string with the same name counts under it.
        ended_by.add(String::from("rate").leak());
        let snapshot = ended_by.snapshot();
        assert_eq!(snapshot.len(), names.len());
        assert_eq!(snapshot["rate"], 2);
        for (i, name) in names.iter().enumerate().skip(1) {
            assert_eq!(snapshot[name], i as u64 + 1, "{name}");
        }
    }
}
