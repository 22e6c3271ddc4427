//! `monitor`: per-call counts, a tracing span and end event, a warning for
//! large messages, and per-method totals in [`crate::stats`].

use std::sync::{Arc, OnceLock};

use tonic::{metadata::MetadataMap, Status};
use tracing::Span;

use crate::{
    call::CallContext,
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
    stats: OnceLock<Arc<MethodStats>>,
}

impl Monitor {
    /// A monitor with these options.
    pub fn new(config: MonitorConfig) -> Self {
        Monitor { config, stats: OnceLock::new() }
    }
}

/// Per-call state of [`Monitor`].
#[derive(Debug)]
pub struct MonitorCall {
    span: Span,
    stats: Arc<MethodStats>,
}

impl MonitorCall {
    /// The call's span (`grpc.call`), for instrumenting work of the call.
    pub fn span(&self) -> &Span {
        &self.span
    }
}

impl Interceptor for Monitor {
    type Call = MonitorCall;
    type Stream = ();

    fn name(&self) -> &'static str {
        "monitor"
    }

    fn on_start(&self, ctx: &CallContext, _: &MetadataMap) -> Result<MonitorCall, Status> {
        let info = ctx.method();
        let stats = self.stats.get_or_init(|| stats::method_stats(info)).clone();
        stats.record_start();
        let span = tracing::info_span!(
            "grpc.call",
            rpc.method = info.full_name,
            rpc.kind = info.kind.as_str(),
            net.peer = tracing::field::Empty,
        );
        if let Some(peer) = ctx.peer() {
            span.record("net.peer", tracing::field::display(peer));
        }
        Ok(MonitorCall { span, stats })
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
                tracing::warn!(
                    parent: &call.span,
                    direction = msg.direction().as_str(),
                    bytes = msg.encoded_len(),
                    limit,
                    "message larger than the monitor's warn_size"
                );
            }
        }
        Ok(())
    }

    fn on_end(&self, call: &MonitorCall, ctx: &CallContext) {
        call.stats.record_end(ctx);
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
