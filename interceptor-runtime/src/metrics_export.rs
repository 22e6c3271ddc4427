//! `monitor`'s export through the [`metrics`] facade (feature `metrics`), with
//! the names and labels of go-grpc-middleware / grpc-ecosystem's Prometheus
//! interceptors, so existing gRPC dashboards work:
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `grpc_server_started_total` | counter | `grpc_type`, `grpc_service`, `grpc_method` |
//! | `grpc_server_handled_total` | counter | the same and `grpc_code` (`OK`, `Canceled`, `ResourceExhausted` ...) |
//! | `grpc_server_msg_received_total` | counter | type, service, method |
//! | `grpc_server_msg_sent_total` | counter | type, service, method |
//! | `grpc_server_handling_seconds` | histogram | type, service, method |
//! | `grpc_server_msg_received_bytes` | histogram | type, service, method |
//! | `grpc_server_msg_sent_bytes` | histogram | type, service, method |
//! | `grpc_server_limited_total` | counter | type, service, method and `limit` (`budget`, `rate`, ...) |
//!
//! Handles are created on a method's first call: install the recorder (for
//! example `metrics_exporter_prometheus::PrometheusBuilder`) before serving.

use metrics::{counter, histogram, Counter, Histogram, Label};
use tonic::Code;

use crate::{
    engine::{CallContext, MethodInfo},
    interceptor::Direction,
};

/// One method's metric handles.
#[derive(Debug)]
pub(crate) struct MethodMetrics {
    labels: [Label; 3],
    received: Counter,
    sent: Counter,
    received_bytes: Histogram,
    sent_bytes: Histogram,
}

impl MethodMetrics {
    pub(crate) fn new(info: &MethodInfo) -> Self {
        let labels = [
            Label::from_static_parts("grpc_type", info.kind.as_str()),
            Label::from_static_parts("grpc_service", info.service),
            Label::from_static_parts("grpc_method", info.method),
        ];
        MethodMetrics {
            received: counter!("grpc_server_msg_received_total", labels.iter()),
            sent: counter!("grpc_server_msg_sent_total", labels.iter()),
            received_bytes: histogram!("grpc_server_msg_received_bytes", labels.iter()),
            sent_bytes: histogram!("grpc_server_msg_sent_bytes", labels.iter()),
            labels,
        }
    }

    pub(crate) fn started(&self) {
        counter!("grpc_server_started_total", self.labels.iter()).increment(1);
    }

    #[inline]
    pub(crate) fn message(&self, direction: Direction, bytes: usize) {
        let (count, size) = match direction {
            Direction::Inbound => (&self.received, &self.received_bytes),
            Direction::Outbound => (&self.sent, &self.sent_bytes),
        };
        count.increment(1);
        size.record(bytes as f64);
    }

    pub(crate) fn handled(&self, ctx: &CallContext) {
        let Some(outcome) = ctx.outcome() else { return };
        let with = |label: Label| self.labels.iter().cloned().chain([label]).collect::<Vec<_>>();
        let code = Label::from_static_parts("grpc_code", go_code_name(outcome.code));
        counter!("grpc_server_handled_total", with(code)).increment(1);
        histogram!("grpc_server_handling_seconds", self.labels.iter()).record(outcome.duration.as_secs_f64());
        if let Some(limit) = outcome.ended_by {
            counter!("grpc_server_limited_total", with(Label::from_static_parts("limit", limit))).increment(1);
        }
    }
}

/// A code as grpc-go's `codes.Code.String()` spells it.
pub fn go_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}
