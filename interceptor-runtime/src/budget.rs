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
//!   long, checked as messages pass and by a timer while a stream waits.
//! - `idle`: the call ends with DEADLINE_EXCEEDED when no message has passed
//!   either way for this long. A direction starts its idle timer when it finds
//!   no message ready; a message in the other direction restarts it when it
//!   fires, so a bidi stream busy one way only is cut within `2 × idle` at most.
//! - `streams`: at most this many calls of the method at once; one more is
//!   rejected with RESOURCE_EXHAUSTED before the handler runs. The slot is
//!   released however the call ends.
//!
//! The timers live in the streams' own state and are polled by them: no task
//! is spawned per stream.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::{Instant, Sleep};
use tonic::{metadata::MetadataMap, Status};

use crate::{
    call::CallContext,
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
    /// Concurrent calls of the method.
    pub streams: Option<u64>,
}

/// The `budget` interceptor; see the [module docs](self).
#[derive(Debug)]
pub struct Budget {
    config: BudgetConfig,
    active: Arc<AtomicU64>,
}

impl Budget {
    /// A budget with these limits.
    pub fn new(config: BudgetConfig) -> Self {
        Budget { config, active: Arc::new(AtomicU64::new(0)) }
    }

    /// Calls of the method holding a `streams` slot now.
    pub fn active_streams(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
}

/// A `streams` slot, released when the call ends (or, as a backstop, when
/// its state is dropped).
#[derive(Debug)]
pub struct StreamSlot {
    active: Arc<AtomicU64>,
    released: AtomicBool,
}

impl StreamSlot {
    fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.release();
    }
}

/// One direction's use of the budget.
#[derive(Debug)]
pub struct BudgetStream {
    messages: u64,
    bytes: u64,
    deadline: Option<Pin<Box<Sleep>>>,
    /// Registered with the timer, so `is_elapsed` can be read per message.
    deadline_armed: bool,
    idle: Option<Pin<Box<Sleep>>>,
    /// Messages both ways when the idle timer was last set.
    idle_seen: u64,
}

impl Interceptor for Budget {
    type Call = Option<StreamSlot>;
    type Stream = BudgetStream;

    fn name(&self) -> &'static str {
        "budget"
    }

    fn on_start(&self, ctx: &CallContext, _: &MetadataMap) -> Result<Option<StreamSlot>, Status> {
        let Some(max) = self.config.streams else { return Ok(None) };
        let taken = self.active.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        match taken {
            Ok(_) => Ok(Some(StreamSlot { active: self.active.clone(), released: AtomicBool::new(false) })),
            Err(_) => Err(Status::resource_exhausted(format!(
                "budget: all {max} concurrent streams of {} are in use",
                ctx.method().full_name
            ))),
        }
    }

    fn on_stream(&self, _: &Option<StreamSlot>, ctx: &CallContext, _: Direction) -> BudgetStream {
        let deadline = self.config.duration.map(|d| Box::pin(tokio::time::sleep_until(ctx.started() + d)));
        let idle = self.config.idle.map(|d| Box::pin(tokio::time::sleep(d)));
        BudgetStream { messages: 0, bytes: 0, deadline, deadline_armed: false, idle, idle_seen: 0 }
    }

    #[inline]
    fn poll_message<M: prost::Message + 'static>(
        &self,
        _: &Option<StreamSlot>,
        stream: &mut BudgetStream,
        cx: &mut Context<'_>,
        msg: &MessageRef<'_, M>,
    ) -> Poll<Result<(), Status>> {
        if let Some(max) = self.config.messages {
            if stream.messages >= max {
                return Poll::Ready(Err(used_up(max, "messages", msg.direction())));
            }
        }
        if let Some(max) = self.config.bytes {
            if stream.bytes + msg.encoded_len() as u64 > max {
                return Poll::Ready(Err(used_up(max, "bytes", msg.direction())));
            }
        }
        if let Some(deadline) = &mut stream.deadline {
            // The first message registers the timer; later ones read its flag.
            let elapsed = if stream.deadline_armed {
                deadline.is_elapsed()
            } else {
                stream.deadline_armed = true;
                deadline.as_mut().poll(cx).is_ready()
            };
            if elapsed {
                return Poll::Ready(Err(self.duration_used_up()));
            }
        }
        stream.messages += 1;
        stream.bytes += msg.encoded_len() as u64;
        Poll::Ready(Ok(()))
    }

    fn poll_interrupt(
        &self,
        _: &Option<StreamSlot>,
        stream: &mut BudgetStream,
        ctx: &CallContext,
        cx: &mut Context<'_>,
    ) -> Poll<Status> {
        if let Some(deadline) = &mut stream.deadline {
            stream.deadline_armed = true;
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(self.duration_used_up());
            }
        }
        if let (Some(idle), Some(limit)) = (&mut stream.idle, self.config.idle) {
            let stats = ctx.stats();
            let seen = stats.messages_received + stats.messages_sent;
            if seen != stream.idle_seen {
                stream.idle_seen = seen;
                idle.as_mut().reset(Instant::now() + limit);
            }
            if idle.as_mut().poll(cx).is_ready() {
                let stats = ctx.stats();
                if stats.messages_received + stats.messages_sent == stream.idle_seen {
                    return Poll::Ready(Status::deadline_exceeded(format!(
                        "budget: no message for {} (idle limit)",
                        humanize(limit)
                    )));
                }
                // The other direction moved: wait another `idle` from now.
                stream.idle_seen = stats.messages_received + stats.messages_sent;
                idle.as_mut().reset(Instant::now() + limit);
                let _ = idle.as_mut().poll(cx);
            }
        }
        Poll::Pending
    }

    fn on_end(&self, slot: &Option<StreamSlot>, _: &CallContext) {
        if let Some(slot) = slot {
            slot.release();
        }
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
