//! `monitor`: per-call counts, a tracing span and end event, a warning for
//! large messages, and per-method totals in [`crate::stats`]. With the
//! `metrics` feature it also exports through the `metrics` facade, under the
//! names gRPC dashboards expect (see [`crate::metrics`]).

use std::sync::{Arc, OnceLock};

use tonic::{metadata::MetadataMap, Status};
use tracing::Span;

use crate::{
    engine::{CallContext, MethodInfo},
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
    type Stream = ();

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
        Ok(MonitorCall { span })
    }

    fn on_stream(&self, _: &MonitorCall, _: &CallContext, _: Direction) {}

    #[inline]
    fn on_message<M: prost::Message + 'static>(
        &self,
        call: &MonitorCall,
        _: &mut (),
        msg: &MessageRef<'_, M>,
    ) -> Result<(), Status> {
        if let Some(limit) = self.config.warn_size {
            if msg.encoded_len() as u64 > limit {
                warn_large(&call.span, msg.direction(), msg.encoded_len(), limit);
            }
        }
        Ok(())
    }

    #[cfg(feature = "metrics")]
    #[inline]
    fn on_delivered<M: prost::Message + 'static>(&self, _: &MonitorCall, _: &mut (), msg: &MessageRef<'_, M>) {
        self.per_method(msg.call().method()).metrics.message(msg.direction(), msg.encoded_len());
    }

    fn on_end(&self, call: &MonitorCall, ctx: &CallContext) {
        let method = self.per_method(ctx.method());
        method.stats.record_end(ctx);
        #[cfg(feature = "metrics")]
        method.metrics.handled(ctx);
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
