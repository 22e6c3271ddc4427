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
//! The export uses tokio's timer (a runtime with time enabled, as
//! `#[tokio::main]` and `enable_all` make it).
//!
//! # Nothing shared per message
//! Every stream of a method would otherwise write the same counters for
//! every message. Instead, a stream counts in its call's own state (the
//! counts [`CallContext::stats`] reports) and adds them to the shared
//! counters in batches:
//!
//! - `grpc_server_msg_received_total` and `grpc_server_msg_sent_total` get
//!   each direction's messages every 256 messages, within 100 ms of when a
//!   direction goes quiet (it finds no message ready, or waits for a `rate`
//!   permit), and when the call ends. So a dashboard stays live during a long
//!   stream, and once a call has ended the counters hold exactly its counts
//!   (those of its [`Outcome`](crate::Outcome), which
//!   [`stats`](crate::stats) adds up too).
//! - The message-size histograms get **one sample per call and direction**,
//!   when the call ends: the encoded bytes of all the call's messages that
//!   way (`prost::Message::encoded_len`, without gRPC framing; 0 for a
//!   direction with no message). So `_sum` is the exact total of bytes
//!   received (sent), `_count` the number of calls, `_sum / _count` the bytes
//!   per call, and `_sum` divided by `grpc_server_msg_received_total` the
//!   mean message size. A sample per message would cost a shared write per
//!   message, and exporters that keep every sample until they next aggregate
//!   (metrics-exporter-prometheus does, for histograms) would hold memory in
//!   proportion to the message rate; a sample per call keeps both flat.
//! - `grpc_server_handling_seconds`, `grpc_server_started_total`,
//!   `grpc_server_handled_total` and `grpc_server_limited_total` are per call
//!   as they always were.
//!
//! [`CallContext::stats`]: crate::CallContext::stats

use std::sync::OnceLock;

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
    started: Counter,
    /// `grpc_server_handled_total` by code, made on a code's first use.
    handled: [OnceLock<Counter>; 17],
    handling_seconds: Histogram,
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
            started: counter!("grpc_server_started_total", labels.iter()),
            handled: Default::default(),
            handling_seconds: histogram!("grpc_server_handling_seconds", labels.iter()),
            received: counter!("grpc_server_msg_received_total", labels.iter()),
            sent: counter!("grpc_server_msg_sent_total", labels.iter()),
            received_bytes: histogram!("grpc_server_msg_received_bytes", labels.iter()),
            sent_bytes: histogram!("grpc_server_msg_sent_bytes", labels.iter()),
            labels,
        }
    }

    pub(crate) fn started(&self) {
        self.started.increment(1);
    }

    /// `count` more messages passed `direction`.
    pub(crate) fn messages(&self, direction: Direction, count: u64) {
        match direction {
            Direction::Inbound => self.received.increment(count),
            Direction::Outbound => self.sent.increment(count),
        }
    }

    /// The call is over: its code, duration and bytes each way.
    pub(crate) fn handled(&self, ctx: &CallContext) {
        let Some(outcome) = ctx.outcome() else { return };
        let with = |label: Label| self.labels.iter().cloned().chain([label]).collect::<Vec<_>>();
        self.handled[outcome.code as usize]
            .get_or_init(|| {
                let code = Label::from_static_parts("grpc_code", go_code_name(outcome.code));
                counter!("grpc_server_handled_total", with(code))
            })
            .increment(1);
        self.handling_seconds.record(outcome.duration.as_secs_f64());
        self.received_bytes.record(outcome.stats.bytes_received as f64);
        self.sent_bytes.record(outcome.stats.bytes_sent as f64);
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
