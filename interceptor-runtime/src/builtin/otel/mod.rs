//! `otel`: one OpenTelemetry SERVER span per call, that lasts until the call
//! really ends and carries its final status, and the
//! `rpc.server.call.duration` histogram, through the OpenTelemetry API
//! (`opentelemetry` 0.33) and the providers installed globally.
//!
//! tower-level OTel layers end their span when the response headers go out,
//! so a stream that later fails, is cancelled or is cut by a budget is
//! recorded OK. `otel` ends the span in [`Interceptor::on_end`], when the
//! call is over for good: with the status the client received, CANCELLED
//! when the client went away, or the status of the interceptor that ended
//! it: the [`Outcome`](crate::Outcome) that `monitor` records too.
//!
//! # The span
//! Named `package.Service/Method` (`rpc.method`), kind SERVER, from the
//! call's start (before the handler runs) to its end; the
//! `rpc.server.call.duration` sample is the same duration. Its parent is the
//! trace context the client sent in the request's metadata, read by the
//! global text-map propagator (`opentelemetry::global::set_text_map_propagator`)
//! or, when none is set, by the W3C trace-context propagator (`traceparent`,
//! `tracestate`), so that a client's trace is joined without any set-up; a
//! request without one starts a trace. Attributes, after OpenTelemetry's RPC
//! and gRPC semantic conventions
//! [v1.45.0](https://github.com/open-telemetry/semantic-conventions/blob/v1.45.0/docs/rpc/grpc.md):
//!
//! | attribute | value |
//! |---|---|
//! | `rpc.system.name` | `grpc` |
//! | `rpc.method` | `package.Service/Method` |
//! | `rpc.status_code` | the final code as gRPC spells it: `OK`, `CANCELLED`, `RESOURCE_EXHAUSTED` ... |
//! | `error.type` | the same code, when it is an error on the server side (below) |
//! | `network.peer.address`, `network.peer.port` | the client's address, when the transport knows it |
//! | `interceptor_runtime.messages_received`, `interceptor_runtime.bytes_received` | messages the handler received, and their encoded bytes (`prost::Message::encoded_len`, before compression and framing) |
//! | `interceptor_runtime.messages_sent`, `interceptor_runtime.bytes_sent` | messages sent to the client, and their bytes |
//! | `interceptor_runtime.ended_by` | the interceptor that ended the call (`budget`, `rate`, a `with` interceptor's name), if one did |
//!
//! The conventions define no per-call counts (and deprecated per-message
//! events), hence the crate's own namespace for them. Nothing is recorded
//! per message: the counts are the call's own, read once at its end.
//!
//! The span's status is Error, with the status message as its description,
//! for the codes the gRPC conventions count as server errors: UNKNOWN,
//! DEADLINE_EXCEEDED (a `budget` whose `duration` or `idle` ran out),
//! UNIMPLEMENTED, INTERNAL, UNAVAILABLE and DATA_LOSS. It is left unset for
//! OK and for the others, which are the client's doing or a limit applied on
//! purpose: CANCELLED, INVALID_ARGUMENT, RESOURCE_EXHAUSTED (a `budget` or
//! `rate` limit), UNAUTHENTICATED ...; `rpc.status_code` tells them apart.
//!
//! # The metric
//! `rpc.server.call.duration`, a histogram in seconds with the conventions'
//! buckets, per call, on the global meter provider, with `rpc.system.name`,
//! `rpc.method`, `rpc.status_code` and, for a server error, `error.type`.
//! It is recorded for every call, sampled or not.
//!
//! # Set-up and placement
//! - Install the tracer and meter providers before the first intercepted
//!   call: the tracer and the histogram are taken from them once, for the
//!   process (instrumentation scope `interceptor-runtime`).
//! - `otel` always runs first, wherever it is written in the list (the
//!   others run in the order written), so that its span covers what they do:
//!   an interceptor that rejects a call before its handler runs
//!   (`budget(streams = ..)`, a `with` check) makes the rejection the span's
//!   status (UNAUTHENTICATED, RESOURCE_EXHAUSTED ..).
//! - Give the server [`InterceptLayer`](crate::InterceptLayer), so that
//!   `rpc.method` is the name clients call; without it the names are guessed
//!   from the Rust code (see [Method names](crate#method-names)).
//!
//! # Example
//! ```
//! use interceptor_runtime::intercept;
//! use opentelemetry::trace::SpanKind;
//! use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
//! use tonic::{Request, Response, Status};
//!
//! struct Pinger;
//!
//! impl Pinger {
//!     // A server gets the service's name from `InterceptLayer`.
//!     #[intercept(otel, service = "demo.Pinger")]
//!     async fn ping(&self, request: Request<()>) -> Result<Response<()>, Status> {
//!         Ok(Response::new(request.into_inner()))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Before the first call. An application exports to stdout, OTLP ...
//! let exporter = InMemorySpanExporter::default();
//! let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
//! opentelemetry::global::set_tracer_provider(provider);
//!
//! // A call from a client whose own span is 00f067aa0ba902b7.
//! let mut request = Request::new(());
//! let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
//! request.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
//! Pinger.ping(request).await.unwrap();
//!
//! let spans = exporter.get_finished_spans().unwrap();
//! let span = &spans[0];
//! assert_eq!((span.name.as_ref(), &span.span_kind), ("demo.Pinger/Ping", &SpanKind::Server));
//! assert_eq!(span.span_context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert_eq!(span.parent_span_id.to_string(), "00f067aa0ba902b7");
//! let status_code = span.attributes.iter().find(|kv| kv.key.as_str() == "rpc.status_code");
//! assert_eq!(status_code.unwrap().value.as_str(), "OK");
//! # }
//! ```

mod propagation;
mod semconv;

use std::{
    fmt,
    sync::{Mutex, OnceLock, PoisonError},
    time::SystemTime,
};

use opentelemetry::{
    global::{self, BoxedSpan, BoxedTracer},
    metrics::Histogram,
    trace::{Span as _, SpanBuilder, SpanKind, Status as SpanStatus, Tracer as _},
    InstrumentationScope, KeyValue,
};
use tonic::{metadata::MetadataMap, Status};

use crate::{
    engine::{CallContext, MethodInfo},
    interceptor::{Direction, Interceptor},
};
use semconv::*;

/// Options of `otel`: none yet. (Not to be written out, so that adding one
/// breaks no one; with options it can no longer be `non_exhaustive`, as the
/// expansion writes it as a struct literal.)
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct OtelConfig {}

/// Traces every call of a method; see the [module docs](self).
#[derive(Debug, Default)]
pub struct Otel {
    _config: OtelConfig,
}

impl Otel {
    /// An `otel` interceptor with these options.
    pub fn new(config: OtelConfig) -> Self {
        Otel { _config: config }
    }
}

/// Per-call state of [`Otel`]: the call's span, until the call ends.
pub struct OtelCall {
    /// Locked once, at the end.
    span: Mutex<BoxedSpan>,
    /// When the call started, by the system clock: the span's start; its
    /// end is this plus the call's duration, the metric's sample.
    started: SystemTime,
}

/// A state whose span records nothing, as the trait asks of every state;
/// `on_start` makes the one a call uses.
impl Default for OtelCall {
    fn default() -> Self {
        let tracer = BoxedTracer::new(Box::new(opentelemetry::trace::noop::NoopTracer::new()));
        OtelCall { span: Mutex::new(tracer.start("")), started: SystemTime::UNIX_EPOCH }
    }
}

impl fmt::Debug for OtelCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelCall").field("started", &self.started).finish_non_exhaustive()
    }
}

/// The tracer and the histogram, from the global providers on the first call.
struct Instruments {
    tracer: BoxedTracer,
    duration: Histogram<f64>,
}

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let scope = InstrumentationScope::builder("interceptor-runtime")
            .with_version(env!("CARGO_PKG_VERSION"))
            .with_schema_url(SCHEMA_URL)
            .build();
        let duration = global::meter_with_scope(scope.clone())
            .f64_histogram(RPC_SERVER_CALL_DURATION)
            .with_unit("s")
            .with_description("Duration of incoming gRPC calls, from their start to their real end")
            .with_boundaries(DURATION_BOUNDARIES.to_vec())
            .build();
        Instruments { tracer: global::tracer_with_scope(scope), duration }
    })
}

/// `package.Service/Method`, from `/package.Service/Method`.
fn rpc_method(info: &MethodInfo) -> &'static str {
    info.full_name.strip_prefix('/').unwrap_or(info.full_name)
}

impl Interceptor for Otel {
    type Call = OtelCall;
    type Stream = ();
    // No message hooks: the wrappers count each message themselves.
    const __MESSAGE_HOOKS: bool = false;

    fn name(&self) -> &'static str {
        "otel"
    }

    fn on_start(&self, ctx: &CallContext, metadata: &MetadataMap) -> Result<OtelCall, Status> {
        let method = rpc_method(ctx.method());
        // The call started a moment ago, when its context was made.
        let now = SystemTime::now();
        let started = now.checked_sub(ctx.started().elapsed()).unwrap_or(now);
        let mut attributes = Vec::with_capacity(4);
        attributes.push(KeyValue::new(RPC_SYSTEM_NAME, "grpc"));
        attributes.push(KeyValue::new(RPC_METHOD, method));
        if let Some(peer) = ctx.peer() {
            attributes.push(KeyValue::new(NETWORK_PEER_ADDRESS, peer.ip().to_string()));
            attributes.push(KeyValue::new(NETWORK_PEER_PORT, i64::from(peer.port())));
        }
        let span = SpanBuilder::from_name(method)
            .with_kind(SpanKind::Server)
            .with_start_time(started)
            .with_attributes(attributes);
        let parent = propagation::parent_context(metadata);
        let span = instruments().tracer.build_with_context(span, &parent);
        Ok(OtelCall { span: Mutex::new(span), started })
    }

    fn on_stream(&self, _: &OtelCall, _: &CallContext, _: Direction) {}

    fn on_end(&self, call: &OtelCall, ctx: &CallContext) {
        let mut span = call.span.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(outcome) = ctx.outcome() else {
            span.end();
            return;
        };
        let code = code_name(outcome.code);
        let failed = is_server_error(outcome.code);
        let mut attributes = vec![
            KeyValue::new(RPC_SYSTEM_NAME, "grpc"),
            KeyValue::new(RPC_METHOD, rpc_method(ctx.method())),
            KeyValue::new(RPC_STATUS_CODE, code),
        ];
        if failed {
            attributes.push(KeyValue::new(ERROR_TYPE, code));
        }
        instruments().duration.record(outcome.duration.as_secs_f64(), &attributes);

        if span.is_recording() {
            let s = outcome.stats;
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            // The span has the first two since its start.
            attributes.drain(..2);
            attributes.extend([
                KeyValue::new(MESSAGES_RECEIVED, count(s.messages_received)),
                KeyValue::new(BYTES_RECEIVED, count(s.bytes_received)),
                KeyValue::new(MESSAGES_SENT, count(s.messages_sent)),
                KeyValue::new(BYTES_SENT, count(s.bytes_sent)),
            ]);
            if let Some(interceptor) = outcome.ended_by {
                attributes.push(KeyValue::new(ENDED_BY, interceptor));
            }
            span.set_attributes(attributes);
            if failed {
                span.set_status(SpanStatus::error(outcome.message.clone()));
            }
        }
        span.end_with_timestamp(call.started + outcome.duration);
    }
}
