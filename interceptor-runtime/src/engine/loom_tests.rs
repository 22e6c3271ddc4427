//! Loom models of the call's wake/flag protocol (W1–W4 in the engine's
//! docs, `engine/mod.rs`): a direction that waits while the other direction
//! ends the call, or while the call's timer fires, or both.
//!
//! Built and run only with `RUSTFLAGS="--cfg interceptor_loom"` (`.ci/test`
//! does; see CONTRIBUTING.md, "Loom"). loom runs each model under every
//! interleaving of its threads' atomic operations and every value the
//! orderings allow each load to read: exhaustively for the two-thread
//! models, up to 3 preemptions (or `LOOM_MAX_PREEMPTIONS`) for the
//! three-thread one.
//!
//! # The property
//! No lost wake-up: once the racing thread is done, the waiting direction
//! was woken or found, on its own check, what it waits for; and it ends
//! with the status it should. The waiting direction runs in loom's
//! `block_on`, which parks until woken: a lost wake-up leaves it parked
//! with the other threads done, and loom fails the model ("deadlock").
//!
//! The waiting places, each driven through the engine's own code:
//! - `held_back`: an interceptor holds the message back (`poll_message` is
//!   `Pending`, as a `rate` waiting for a permit), through
//!   `CallGuard::recv_unary` and the inbound direction's handle;
//! - `poll_interrupt`: the direction found no message ready (what `Inbound`
//!   and `Outbound` do then), through the handle;
//! - `CallGuard::run`'s `poll_timers`: the handler waits, and the timers are
//!   polled on the outbound direction's behalf.
//!
//! Each races with the other direction ending the call (`terminate`) or the
//! call's timer firing, as `budget`'s `duration` timer does: the timer is the
//! model's interceptor's, registered with the call's waker in
//! `poll_interrupt`, as a tokio `Sleep` is; firing it wakes that waker,
//! which runs `interrupt`. Two more models check W3 (the terminal status is
//! found by whoever sees `TERMINATED`) and W4 (the fences of `cancelled` and
//! `mark_over`).
//!
//! # What loom sees
//! The context's flags and its two waker slots are loom's (engine/sync.rs),
//! and so is the model's timer. The context's once-cells (the `cold` box,
//! and in it the terminal status, the outcome, the cancellation token) are
//! the real cells behind a loom atomic that stands for their state
//! (`sync::OnceLock`, `sync::OnceBox`): loom explores a reader that sees
//! `TERMINATED`, or the call's end, before the value is visible to it, so
//! the edges that publish them (W3, W4) are modelled, not assumed. The
//! cell's `Arc`, the method and the call's waker's `Weak` stay std's: they
//! publish nothing but their own contents, made before the threads start.
//!
//! # Broken on purpose
//! Each breakage below was made by hand and the models run (loom 0.7.3);
//! every one fails a model, as noted:
//! - `held_back` as it was (the timers polled, then the waker registered,
//!   then only the terminal status checked again): the held message racing
//!   with the timer, "deadlock; threads = [(Id(0), Blocked(Location(None))),
//!   (Id(1), Terminated)]": the models' first find, fixed. Without that
//!   second check, the held message's three models;
//! - `poll_interrupt` registering after `attend`: the idle direction's two
//!   models, deadlock;
//! - `terminate` waking before it sets `TERMINATED`: the two models that
//!   race with `terminate` alone, deadlock;
//! - `poll_timers` loading the flags before registering: the waiting
//!   handler, deadlock;
//! - `terminal_status` loading the flags `Relaxed`, or `terminate` setting
//!   `TERMINATED` before the status: "TERMINATED was seen before its status";
//! - either `SeqCst` fence of `cancelled` / `mark_over` removed: "the call
//!   ended, and its token was not cancelled".
//!
//! `interrupt` setting its flags `Relaxed` fails none, rightly: the flags only
//! say "poll the timers", a timer publishes its own state, and the wake
//! goes through the slot's synchronization.

use std::{
    future::{poll_fn, Future},
    pin::pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use loom::{
    future::{block_on, AtomicWaker},
    sync::atomic::{AtomicBool, Ordering::*},
    thread,
};
use tonic::{metadata::MetadataMap, Code, Request, Status};

use super::{flag, CallCell, CallContext, CallGuard, MethodInfo, RpcKind, Slot};
use crate::interceptor::{Direction, Interceptor, MessageRef};

/// The model's interceptor: it holds every message back forever (when
/// `hold`: a message waits in `wait` until the call ends), and has one
/// timer per call, as `budget`'s `duration`.
struct Model {
    hold: bool,
}

/// The call's timer, as a tokio `Sleep` behaves to the interceptor that
/// polls it: registered with the waker it is polled with, ready once fired.
struct Timer {
    fired: AtomicBool,
    waker: AtomicWaker,
}

impl Default for Timer {
    fn default() -> Self {
        Timer { fired: AtomicBool::new(false), waker: AtomicWaker::new() }
    }
}

impl Timer {
    /// What the timer driver does when the deadline passes.
    fn fire(&self) {
        self.fired.store(true, Release);
        self.waker.wake();
    }
}

impl Interceptor for Model {
    type Call = Timer;
    type Stream = ();

    fn name(&self) -> &'static str {
        "model"
    }

    fn on_start(&self, _: &CallContext, _: &MetadataMap) -> Result<Timer, Status> {
        Ok(Timer::default())
    }

    fn on_stream(&self, _: &Timer, _: &CallContext, _: Direction) {}

    fn poll_message<M: prost::Message + 'static>(
        &self,
        _: &Timer,
        _: &mut (),
        _: &mut Context<'_>,
        _: &MessageRef<'_, M>,
    ) -> Poll<Result<(), Status>> {
        if self.hold {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn poll_interrupt(&self, timer: &Timer, _: &mut (), _: &CallContext, cx: &mut Context<'_>) -> Poll<Status> {
        timer.waker.register_by_ref(cx.waker());
        if timer.fired.load(Acquire) {
            Poll::Ready(Status::deadline_exceeded("model: the call's timer fired"))
        } else {
            Poll::Pending
        }
    }
}

/// The status the other direction ends the call with.
fn ended_by_the_other_direction() -> Status {
    Status::resource_exhausted("model: the other direction ended the call")
}

/// Starts a call of a method whose interceptor is `Model { hold }`; returns
/// the handler's guard and the call's cell, for the racing thread.
fn start(slot: &'static Slot, hold: bool) -> (CallGuard<Model>, Arc<CallCell<Model>>) {
    let method = slot.get_or_init(|| MethodInfo::new("loom.Model", "Call", RpcKind::Bidi), || Model { hold });
    let mut request = Request::new(());
    // The model has no async check: its start is ready at once.
    let started = futures_util::FutureExt::now_or_never(method.start(&mut request));
    let guard = started.expect("no async check to wait for").expect("the model's interceptor lets every call start");
    let cell = guard.cell.clone();
    (guard, cell)
}

/// What races with the waiting direction.
#[derive(Clone, Copy)]
enum Racer {
    /// The other direction ends the call.
    Terminate,
    /// The call's timer fires.
    Timer,
}

impl Racer {
    fn spawn(self, cell: Arc<CallCell<Model>>) -> thread::JoinHandle<()> {
        thread::spawn(move || match self {
            Racer::Terminate => cell.ctx.terminate(&ended_by_the_other_direction()),
            Racer::Timer => cell.call_state.fire(),
        })
    }

    /// The code the waiting direction must end with.
    fn code(self) -> Code {
        match self {
            Racer::Terminate => Code::ResourceExhausted,
            Racer::Timer => Code::DeadlineExceeded,
        }
    }
}

/// Runs `f` under loom, every interleaving: the two-thread models take
/// about two seconds together, unbounded.
fn model(f: impl Fn() + Sync + Send + 'static) {
    loom::model(f);
}

/// Runs `f` under loom with at most `LOOM_MAX_PREEMPTIONS` preemptions, 3
/// when it is not set: three threads, unbounded, take hours (3: two
/// seconds; 4: twenty).
fn bounded_model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(3);
    builder.check(f);
}

/// A message held back by an interceptor, racing with `racers`; it ends
/// with the status of one of them.
fn held_message(slot: &'static Slot, racers: &'static [Racer]) {
    let model = if racers.len() > 1 { bounded_model } else { model };
    model(move || {
        let (mut guard, cell) = start(slot, true);
        let racing: Vec<_> = racers.iter().map(|racer| racer.spawn(cell.clone())).collect();
        drop(cell);
        let result = block_on(guard.recv_unary(Request::new(())));
        for racer in racing {
            racer.join().expect("a racing thread does not panic");
        }
        let status = result.expect_err("the held message never passes");
        assert!(racers.iter().any(|racer| racer.code() == status.code()), "{status:?}");
    });
}

/// `poll_interrupt`: a direction with no message ready, racing with `racer`.
fn idle_direction(slot: &'static Slot, racer: Racer) {
    model(move || {
        let (mut guard, cell) = start(slot, false);
        let mut inbound = guard.inbound_handle::<()>();
        let racing = racer.spawn(cell);
        let status = block_on(poll_fn(|cx| inbound.poll_interrupt(cx)));
        racing.join().expect("the racing thread does not panic");
        assert_eq!(status.code(), racer.code(), "{status:?}");
        drop(inbound);
        drop(guard);
    });
}

#[test]
fn a_held_message_is_woken_when_the_call_is_terminated() {
    static SLOT: Slot = Slot::new();
    held_message(&SLOT, &[Racer::Terminate]);
}

#[test]
fn a_held_message_is_woken_when_the_timer_fires() {
    static SLOT: Slot = Slot::new();
    held_message(&SLOT, &[Racer::Timer]);
}

/// The case: the call's timer fires while the other direction ends
/// the call, and a direction waits.
#[test]
fn a_held_message_is_woken_when_the_timer_fires_as_the_call_is_terminated() {
    static SLOT: Slot = Slot::new();
    held_message(&SLOT, &[Racer::Timer, Racer::Terminate]);
}

#[test]
fn an_idle_direction_is_woken_when_the_call_is_terminated() {
    static SLOT: Slot = Slot::new();
    idle_direction(&SLOT, Racer::Terminate);
}

#[test]
fn an_idle_direction_is_woken_when_the_timer_fires() {
    static SLOT: Slot = Slot::new();
    idle_direction(&SLOT, Racer::Timer);
}

/// `CallGuard::run`: the handler waits (on anything but its streams), and
/// the call's timer fires: the handler is dropped with the timer's status.
/// It has waited once before, with another waker (its first poll polls the
/// timers whatever the flags say, as every direction's does): what wakes it
/// now is the interrupt flag, checked after its new waker is registered.
#[test]
fn a_waiting_handler_is_woken_when_the_timer_fires() {
    static SLOT: Slot = Slot::new();
    model(|| {
        let (mut guard, cell) = start(&SLOT, false);
        let mut run = pin!(guard.run(std::future::pending::<Result<(), Status>>()));
        let first = run.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(first.is_pending(), "the timer has not fired yet");
        let racing = Racer::Timer.spawn(cell);
        let result = block_on(run);
        racing.join().expect("the racing thread does not panic");
        let status = result.expect_err("the handler never returns");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    });
}

/// W3: a direction that sees `TERMINATED` (as the per-message path looks,
/// with one relaxed load) finds the terminal status.
#[test]
fn a_direction_that_sees_the_call_terminated_finds_its_status() {
    static SLOT: Slot = Slot::new();
    model(|| {
        let (guard, cell) = start(&SLOT, false);
        let ending = Racer::Terminate.spawn(cell.clone());
        let seen = cell.ctx.flags.load(Relaxed) & flag::TERMINATED != 0;
        let status = cell.ctx.terminal_status().map(Status::code);
        if seen {
            assert_eq!(status, Some(Code::ResourceExhausted), "TERMINATED was seen before its status");
        }
        ending.join().expect("the ending thread does not panic");
        drop(guard);
    });
}

/// `cancelled` and `mark_over`: a token asked for while the call ends is
/// cancelled, whichever comes first (each side's `SeqCst` fence makes it see
/// the other's write, or the other see its own).
#[test]
fn a_token_asked_for_while_the_call_ends_is_cancelled() {
    static SLOT: Slot = Slot::new();
    model(|| {
        let (guard, cell) = start(&SLOT, false);
        let ending = Racer::Terminate.spawn(cell.clone());
        let token = cell.ctx.cancelled().clone();
        ending.join().expect("the ending thread does not panic");
        assert!(token.is_cancelled(), "the call ended, and its token was not cancelled");
        drop(guard);
    });
}
