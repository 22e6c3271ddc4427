//! `monitor`: per-call counts, a tracing span and end event, a warning for
//! large messages, and per-method totals in [`crate::stats`]. With the
//! `metrics` feature it also exports through the `metrics` facade, under the
//! names gRPC dashboards expect (see the [`metrics`] module).
//!
//! Per message, monitor writes nothing that other streams share: the counts
//! are the call's own, the per-method totals take them when the call ends,
//! and the metrics counters take them in batches (every 256 messages, within
//! 100 ms of when a direction goes quiet, and at the end of the call; see
//! the [`metrics`] module).
//!
// The `metrics` module exists with its feature only: link to it then, to
// the crate docs' section otherwise.
#![cfg_attr(feature = "metrics", doc = "[`metrics`]: crate::metrics")]
#![cfg_attr(not(feature = "metrics"), doc = "[`metrics`]: crate#metrics")]

use std::sync::{Arc, OnceLock};
#[cfg(feature = "metrics")]
use std::{
    future::Future,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    task::{Context, Poll},
    time::Duration,
};

use tonic::{metadata::MetadataMap, Status};
use tracing::Span;

use crate::{
    engine::{CallContext, MethodInfo, UNSEEN_MAX_LEN},
    interceptor::{Direction, Interceptor, MessageRef},
    stats::{self, MethodStats},
};

/// Options of `monitor(..)`.
#[derive(Clone, Debug, Default)]
pub struct MonitorConfig {
    /// Warn (a `tracing` WARN event) about any message whose encoded size is
    /// over this many bytes. `monitor(warn_size = "1MiB")`.
    pub warn_size: Option<u64>,
}

/// Records every call of a method; see the [module docs](self).
#[derive(Debug, Default)]
pub struct Monitor {
    config: MonitorConfig,
    method: OnceLock<PerMethod>,
}

/// What a monitor keeps for its method, made on the first call.
#[derive(Debug)]
struct PerMethod {
    stats: Arc<MethodStats>,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::MethodMetrics,
}

impl Monitor {
    /// A monitor with these options.
    pub fn new(config: MonitorConfig) -> Self {
        Monitor { config, method: OnceLock::new() }
    }

    /// What it keeps for its method (one monitor serves one method).
    #[inline]
    fn per_method(&self, info: &MethodInfo) -> &PerMethod {
        self.method.get_or_init(|| PerMethod {
            stats: stats::method_stats(info),
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::MethodMetrics::new(info),
        })
    }
}

/// Per-call state of [`Monitor`].
#[derive(Debug)]
pub struct MonitorCall {
    span: Span,
    /// Messages each way (inbound, outbound) already added to the metrics
    /// counters; [`ENDED`] is set once the call's end has added the rest, so
    /// that a direction still running adds no more.
    #[cfg(feature = "metrics")]
    published: [AtomicU64; 2],
}

/// In [`MonitorCall::published`]: the call has ended.
// mutants: equivalent because a lost mark (`1 >> 63`) only shows when one
// worker counts a message between another's end snapshot and its publish, a
// race no test can order (`.cargo/mutants.toml`).
#[cfg(feature = "metrics")]
const ENDED: u64 = 1 << 63;

/// A busy direction adds its count to the metrics counters every this many
/// messages.
#[cfg(feature = "metrics")]
const FLUSH_EVERY: u32 = 256;

/// A direction that went quiet adds its count this long after.
#[cfg(feature = "metrics")]
const FLUSH_AFTER: Duration = Duration::from_millis(100);

/// Per-direction state of [`Monitor`]: with the `metrics` feature, when the
/// direction next adds its count to the metrics counters.
#[derive(Debug)]
pub struct MonitorStream {
    #[cfg(feature = "metrics")]
    direction: Direction,
    /// Messages until the next batch.
    #[cfg(feature = "metrics")]
    countdown: u32,
    /// The direction went quiet before: the next time it does, it sets a
    /// timer rather than adding its count at once.
    #[cfg(feature = "metrics")]
    was_quiet: bool,
    /// Set when the direction went quiet with messages not added yet.
    #[cfg(feature = "metrics")]
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// A state that records nothing (no span), as the trait asks of every
/// state; `on_start` makes the one a call uses.
impl Default for MonitorCall {
    fn default() -> Self {
        MonitorCall {
            span: Span::none(),
            #[cfg(feature = "metrics")]
            published: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }
}

/// As the trait asks of every state; `on_stream` makes the one a direction
/// uses.
impl Default for MonitorStream {
    fn default() -> Self {
        MonitorStream::new(Direction::Inbound)
    }
}

impl MonitorStream {
    /// A direction's state before its first message.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn new(direction: Direction) -> Self {
        MonitorStream {
            #[cfg(feature = "metrics")]
            direction,
            #[cfg(feature = "metrics")]
            countdown: FLUSH_EVERY,
            #[cfg(feature = "metrics")]
            was_quiet: false,
            #[cfg(feature = "metrics")]
            timer: None,
        }
    }
}

impl MonitorCall {
    /// The call's span (`grpc.call`), for instrumenting work of the call.
    pub fn span(&self) -> &Span {
        &self.span
    }
}

/// The WARN for a message over `warn_size`; out of line, so that the check
/// per message stays small.
#[cold]
#[inline(never)]
fn warn_large(span: &Span, direction: Direction, bytes: usize, limit: u64) {
    tracing::warn!(
        parent: span,
        direction = direction.as_str(),
        bytes,
        limit,
        "message larger than the monitor's warn_size"
    );
}

impl Interceptor for Monitor {
    type Call = MonitorCall;
    type Stream = MonitorStream;

    fn name(&self) -> &'static str {
        "monitor"
    }

    fn on_start(&self, ctx: &CallContext, _: &MetadataMap) -> Result<MonitorCall, Status> {
        let info = ctx.method();
        let method = self.per_method(info);
        method.stats.record_start();
        #[cfg(feature = "metrics")]
        method.metrics.started();
        let span = tracing::info_span!(
            "grpc.call",
            rpc.method = info.full_name,
            rpc.kind = info.kind.as_str(),
            net.peer = tracing::field::Empty,
        );
        if let Some(peer) = ctx.peer() {
            span.record("net.peer", tracing::field::display(peer));
        }
        Ok(MonitorCall {
            span,
            #[cfg(feature = "metrics")]
            published: [AtomicU64::new(0), AtomicU64::new(0)],
        })
    }

    fn on_stream(&self, _: &MonitorCall, _: &CallContext, direction: Direction) -> MonitorStream {
        MonitorStream::new(direction)
    }

    #[inline]
    fn on_message<M: prost::Message + 'static>(
        &self,
        call: &MonitorCall,
        _: &mut MonitorStream,
        msg: &MessageRef<'_, M>,
    ) -> Result<(), Status> {
        if let Some(limit) = self.config.warn_size {
            if msg.encoded_len() as u64 > limit {
                warn_large(&call.span, msg.direction(), msg.encoded_len(), limit);
            }
        }
        Ok(())
    }

    /// Counts down to the next batch: a plain decrement of the direction's
    /// own state.
    #[cfg(feature = "metrics")]
    #[inline]
    fn on_delivered<M: prost::Message + 'static>(
        &self,
        call: &MonitorCall,
        stream: &mut MonitorStream,
        msg: &MessageRef<'_, M>,
    ) {
        stream.countdown -= 1;
        if stream.countdown == 0 {
            self.flush_busy(call, stream, msg.call(), msg.index() + 1);
        }
    }

    /// With no `warn_size` below 64 KiB (which a message passed unseen
    /// could be over): the messages before the one that completes the next
    /// batch, which is seen and publishes it.
    #[inline]
    fn __unseen_allowance(&self, _: &MonitorCall, stream: &MonitorStream, _: u64, _: u64) -> u64 {
        // mutants: `<` into `<=` is equivalent because with a `warn_size` of
        // exactly `UNSEEN_MAX_LEN` no message passed unseen can be over it,
        // whether none or some pass (`.cargo/mutants.toml`).
        if self.config.warn_size.is_some_and(|limit| limit < UNSEEN_MAX_LEN as u64) {
            return 0;
        }
        #[cfg(feature = "metrics")]
        return u64::from(stream.countdown - 1);
        #[cfg(not(feature = "metrics"))]
        {
            let _ = stream;
            u64::MAX
        }
    }

    /// Unseen messages count down to the next batch as seen ones do.
    #[cfg(feature = "metrics")]
    #[inline]
    fn __spend_unseen(&self, stream: &mut MonitorStream, count: i64) {
        stream.countdown = (i64::from(stream.countdown) - count) as u32;
    }

    /// A quiet direction with messages not added yet adds them at once the
    /// first time (a stream that sends a message or two and then waits, as
    /// held streams do, needs no timer); after that it sets a timer, and adds
    /// them when it fires. The timer is polled once, when it is set, with the
    /// call's waker: when it fires, that waker has the direction (busy or
    /// waiting) poll the timers again, and it then finds it elapsed. So a
    /// direction that goes quiet often pays a load or two each time.
    #[cfg(feature = "metrics")]
    fn poll_interrupt(
        &self,
        call: &MonitorCall,
        stream: &mut MonitorStream,
        ctx: &CallContext,
        cx: &mut Context<'_>,
    ) -> Poll<Status> {
        match &mut stream.timer {
            Some(timer) if timer.is_elapsed() => {
                stream.timer = None;
                let count = ctx.counters(stream.direction).messages.load(Relaxed);
                self.publish(call, ctx, stream.direction, count);
            }
            Some(_) => {}
            None => {
                let count = ctx.counters(stream.direction).messages.load(Relaxed);
                if count <= call.published[stream.direction as usize].load(Relaxed) {
                    return Poll::Pending;
                }
                if !std::mem::replace(&mut stream.was_quiet, true) {
                    self.publish(call, ctx, stream.direction, count);
                } else {
                    let mut timer = Box::pin(tokio::time::sleep(FLUSH_AFTER));
                    if timer.as_mut().poll(cx).is_ready() {
                        self.publish(call, ctx, stream.direction, count);
                    } else {
                        stream.timer = Some(timer);
                    }
                }
            }
        }
        Poll::Pending
    }

    fn on_end(&self, call: &MonitorCall, ctx: &CallContext) {
        let method = self.per_method(ctx.method());
        method.stats.record_end(ctx);
        #[cfg(feature = "metrics")]
        {
            if let Some(outcome) = ctx.outcome() {
                let s = outcome.stats;
                for (direction, count) in
                    [(Direction::Inbound, s.messages_received), (Direction::Outbound, s.messages_sent)]
                {
                    // The rest of the call's count, once: no direction adds any after this.
                    // mutants: `&&` into `||` is equivalent: the end runs once, so
                    // `ENDED` is never set before it (`.cargo/mutants.toml`).
                    let before = call.published[direction as usize].swap(count | ENDED, Relaxed);
                    if before & ENDED == 0 && count > before {
                        method.metrics.messages(direction, count - before);
                    }
                }
            }
            method.metrics.handled(ctx);
        }
        let Some(outcome) = ctx.outcome() else { return };
        let s = outcome.stats;
        tracing::info!(
            parent: &call.span,
            grpc.code = ?outcome.code,
            grpc.message = outcome.message.as_str(),
            ended_by = outcome.ended_by,
            messages_received = s.messages_received,
            bytes_received = s.bytes_received,
            messages_sent = s.messages_sent,
            bytes_sent = s.bytes_sent,
            duration_us = outcome.duration.as_micros() as u64,
            "call ended"
        );
    }
}

#[cfg(feature = "metrics")]
impl Monitor {
    /// Every [`FLUSH_EVERY`] messages: adds the direction's count so far
    /// (`count`, the message being delivered included). Out of line, so that
    /// the per-message countdown stays small.
    #[cold]
    #[inline(never)]
    fn flush_busy(&self, call: &MonitorCall, stream: &mut MonitorStream, ctx: &CallContext, count: u64) {
        stream.countdown = FLUSH_EVERY;
        self.publish(call, ctx, stream.direction, count);
    }

    /// Adds what `direction` counted (`count` in all) and was not added yet,
    /// unless the call has ended (its end added the call's count).
    fn publish(&self, call: &MonitorCall, ctx: &CallContext, direction: Direction, count: u64) {
        let published = &call.published[direction as usize];
        let added =
            published.fetch_update(Relaxed, Relaxed, |before| (before & ENDED == 0 && count > before).then_some(count));
        if let Ok(before) = added {
            self.per_method(ctx.method()).metrics.messages(direction, count - before);
        }
    }
}
