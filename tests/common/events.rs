//! A log of what happened to the calls of each method, kept for the whole
//! test binary: [`Recorder`] (an interceptor that runs first and never
//! rejects) logs the calls' starts, streams, messages and ends; the handlers
//! of [`super::handlers`] log what they see. Tests read the log of their own
//! method (`/test.X/Method`, a service name used by that test alone), so tests
//! running in parallel do not see each other's calls.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Mutex,
};

use interceptor_runtime::{CallContext, Direction, Interceptor, MessageRef, Outcome};
use tokio::{sync::Notify, time::Instant};
use tonic::{metadata::MetadataMap, Status};

/// One call, as numbered by [`Recorder`] (in the whole test binary).
pub type CallId = u64;

#[derive(Clone, Debug)]
pub enum Event {
    /// A call started (the recorder's `on_start`).
    Began(CallId),
    /// A direction of the call got its state (`on_stream`).
    Stream(CallId, Direction),
    /// A handler started.
    Started,
    /// A message reached the interceptors: its direction and index (the
    /// recorder runs first, before any limit decides).
    Arrived(Direction, u64),
    /// The handler got a message from its inbound stream.
    Received(Instant),
    /// The handler's inbound stream ended: the count of messages, or the error.
    InboundEnd(Instant, Result<u64, Status>),
    /// The call ended (the recorder's `on_end`).
    Ended(CallId, Outcome),
}

static EVENTS: Mutex<Vec<(&'static str, Event)>> = Mutex::new(Vec::new());
static CHANGED: Notify = Notify::const_new();

/// Logs an event of `method` (`/test.X/Method`).
pub fn record(method: &'static str, event: Event) {
    EVENTS.lock().unwrap_or_else(|e| e.into_inner()).push((method, event));
    CHANGED.notify_waiters();
}

/// What happened so far to the calls of `method`.
pub fn events(method: &str) -> Vec<Event> {
    let events = EVENTS.lock().unwrap_or_else(|e| e.into_inner());
    events.iter().filter(|(m, _)| *m == method).map(|(_, e)| e.clone()).collect()
}

/// Waits until `found` finds what it looks for in the events of `method`.
/// Unbounded: the test bounds it (see [`super::bound`]).
pub async fn wait_for<T>(method: &str, mut found: impl FnMut(&[Event]) -> Option<T>) -> T {
    loop {
        let changed = CHANGED.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if let Some(found) = found(&events(method)) {
            return found;
        }
        changed.await;
    }
}

/// The outcome of the `n`-th call of `method` to end (0-based), once it ended.
pub async fn outcome(method: &str, n: usize) -> Outcome {
    wait_for(method, |events| ended(events).get(n).cloned()).await
}

/// The outcomes of the calls that ended, in the order they ended.
pub fn ended(events: &[Event]) -> Vec<Outcome> {
    events.iter().filter_map(|e| if let Event::Ended(_, o) = e { Some(o.clone()) } else { None }).collect()
}

/// When the handlers got each message.
pub fn received(events: &[Event]) -> Vec<Instant> {
    events.iter().filter_map(|e| if let Event::Received(at) = e { Some(*at) } else { None }).collect()
}

/// How and when the handlers' inbound streams ended.
pub fn inbound_ends(events: &[Event]) -> Vec<(Instant, Result<u64, Status>)> {
    events.iter().filter_map(|e| if let Event::InboundEnd(at, r) = e { Some((*at, r.clone())) } else { None }).collect()
}

/// How many handlers started.
pub fn started(events: &[Event]) -> usize {
    events.iter().filter(|e| matches!(e, Event::Started)).count()
}

/// How many calls started (the recorder's `on_start`).
pub fn began(events: &[Event]) -> usize {
    events.iter().filter(|e| matches!(e, Event::Began(_))).count()
}

/// Logs every call's start, streams, messages and end; never rejects.
#[derive(Clone, Copy, Debug, Default)]
pub struct Recorder;

static NEXT_CALL: AtomicU64 = AtomicU64::new(0);

impl Interceptor for Recorder {
    type Call = CallId;
    type Stream = ();

    fn name(&self) -> &'static str {
        "recorder"
    }

    fn on_start(&self, ctx: &CallContext, _: &MetadataMap) -> Result<CallId, Status> {
        let call = NEXT_CALL.fetch_add(1, Ordering::Relaxed);
        record(ctx.method().full_name, Event::Began(call));
        Ok(call)
    }

    fn on_stream(&self, call: &CallId, ctx: &CallContext, direction: Direction) {
        record(ctx.method().full_name, Event::Stream(*call, direction));
    }

    fn on_message<M: prost::Message + 'static>(
        &self,
        _: &CallId,
        _: &mut (),
        msg: &MessageRef<'_, M>,
    ) -> Result<(), Status> {
        record(msg.call().method().full_name, Event::Arrived(msg.direction(), msg.index()));
        Ok(())
    }

    fn on_end(&self, call: &CallId, ctx: &CallContext) {
        record(ctx.method().full_name, Event::Ended(*call, ctx.outcome().expect("set before on_end").clone()));
    }
}

/// [`Recorder`] without the messages: it logs each call's start, streams and
/// end, and has no message hooks, so that the interceptors beside it may let
/// messages pass unseen, as they do without it.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallRecorder;

impl Interceptor for CallRecorder {
    type Call = CallId;
    type Stream = ();
    // Only `Recorder::on_message` is left out.
    const __MESSAGE_HOOKS: bool = false;

    fn name(&self) -> &'static str {
        "call_recorder"
    }

    fn on_start(&self, ctx: &CallContext, metadata: &MetadataMap) -> Result<CallId, Status> {
        Recorder.on_start(ctx, metadata)
    }

    fn on_stream(&self, call: &CallId, ctx: &CallContext, direction: Direction) {
        Recorder.on_stream(call, ctx, direction)
    }

    fn on_end(&self, call: &CallId, ctx: &CallContext) {
        Recorder.on_end(call, ctx)
    }
}
