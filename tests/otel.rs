//! `otel` end to end, on a real tonic server over 127.0.0.1 with
//! `InterceptLayer`, its spans and metric read back from opentelemetry-sdk's
//! in-memory exporters: one SERVER span per call, for the four RPC kinds and
//! every ending (OK, a handler error, the client cancelling, a budget's
//! RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED), each the child of the span of
//! the client that made the call (its `traceparent`), with the final status
//! and the call's counts; `rpc.server.call.duration` per method and code,
//! agreeing with `monitor`'s totals. And a call an interceptor rejects before
//! the handler: traced wherever `otel` is written, since it always runs first.

mod common;

use std::{future::pending, net::SocketAddr, pin::Pin, sync::OnceLock, time::Duration};

use common::in_real_time;
use futures_util::future::join_all;
use interceptor_runtime::{intercept, stats, CallContext, Direction, InterceptLayer, Interceptor};
use opentelemetry::{
    global,
    propagation::{Injector, TextMapPropagator},
    trace::{SpanId, SpanKind, Status as SpanStatus, TraceContextExt, Tracer},
    Context, KeyValue, Value,
};
use opentelemetry_sdk::{
    metrics::{
        data::{AggregatedMetrics, MetricData},
        InMemoryMetricExporter, PeriodicReader, SdkMeterProvider,
    },
    propagation::TraceContextPropagator,
    trace::{InMemorySpanExporter, SdkTracerProvider, SpanData},
};
use prost::Message;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::{wrappers::ReceiverStream, wrappers::TcpListenerStream, Stream, StreamExt};
use tonic::{
    metadata::{MetadataKey, MetadataMap},
    transport::{Channel, Server},
    Code, Request, Response, Status, Streaming,
};

mod pb {
    tonic::include_proto!("fixture.otel.v1");
}

use pb::{
    guarded_client::GuardedClient,
    guarded_server::{Guarded, GuardedServer},
    traced_client::TracedClient,
    traced_server::{Traced, TracedServer},
    Ask, Ending, Reply,
};

// ---------------------------------------------------------------------------
// The services

/// Every method does what each ask says (see `otel.proto`), and tells the
/// test when it hangs.
#[derive(Clone)]
struct TracedService {
    hanging: broadcast::Sender<String>,
}

type Replies = Pin<Box<dyn Stream<Item = Result<Reply, Status>> + Send>>;

fn reply(text: impl Into<String>) -> Reply {
    Reply { text: text.into() }
}

impl TracedService {
    /// Fails as asked, or tells the test it hangs and never returns.
    async fn end_as(&self, ask: &Ask) -> Result<(), Status> {
        match ask.ending() {
            Ending::Answer => Ok(()),
            Ending::Fail => Err(Status::internal(format!("{} failed as asked", ask.text))),
            Ending::Hang => {
                let _ = self.hanging.send(ask.text.clone());
                pending().await
            }
        }
    }
}

#[intercept(otel, monitor, budget(messages = 3, duration = "2s"))]
#[tonic::async_trait]
impl Traced for TracedService {
    async fn unary(&self, request: Request<Ask>) -> Result<Response<Reply>, Status> {
        let ask = request.into_inner();
        self.end_as(&ask).await?;
        Ok(Response::new(reply(ask.text)))
    }

    type DownloadStream = Replies;

    async fn download(&self, request: Request<Ask>) -> Result<Response<Self::DownloadStream>, Status> {
        let ask = request.into_inner();
        let this = self.clone();
        Ok(Response::new(Box::pin(async_stream::try_stream! {
            for i in 0..ask.replies {
                yield reply(format!("{} {i}", ask.text));
            }
            this.end_as(&ask).await?;
        })))
    }

    async fn upload(&self, request: Request<Streaming<Ask>>) -> Result<Response<Reply>, Status> {
        let mut asks = request.into_inner();
        let mut received = 0;
        let mut text = String::new();
        while let Some(ask) = asks.message().await? {
            received += 1;
            text = ask.text.clone();
            self.end_as(&ask).await?;
        }
        Ok(Response::new(reply(format!("{text}: {received} asks"))))
    }

    type ChatStream = Replies;

    async fn chat(&self, request: Request<Streaming<Ask>>) -> Result<Response<Self::ChatStream>, Status> {
        let mut asks = request.into_inner();
        let this = self.clone();
        Ok(Response::new(Box::pin(async_stream::try_stream! {
            while let Some(ask) = asks.message().await? {
                this.end_as(&ask).await?;
                yield reply(ask.text);
            }
        })))
    }
}

/// Rejects a call without an `authorization` entry, before the handler.
struct Deny;

impl Interceptor for Deny {
    type Call = ();
    type Stream = ();
    fn name(&self) -> &'static str {
        "deny"
    }
    fn on_start(&self, _: &CallContext, metadata: &MetadataMap) -> Result<(), Status> {
        match metadata.get("authorization") {
            Some(_) => Ok(()),
            None => Err(Status::unauthenticated("no authorization")),
        }
    }
    fn on_stream(&self, _: &(), _: &CallContext, _: Direction) {}
}

struct GuardedService;

#[tonic::async_trait]
impl Guarded for GuardedService {
    #[intercept(otel, with = Deny)]
    async fn otel_first(&self, request: Request<Ask>) -> Result<Response<Reply>, Status> {
        Ok(Response::new(reply(request.into_inner().text)))
    }

    #[intercept(with = Deny, otel)]
    async fn otel_last(&self, request: Request<Ask>) -> Result<Response<Reply>, Status> {
        Ok(Response::new(reply(request.into_inner().text)))
    }
}

// ---------------------------------------------------------------------------
// Plumbing

/// The process's providers, in memory; installed before any call, as the
/// tracer and the histogram are taken from them on the first one.
struct Telemetry {
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
    meters: SdkMeterProvider,
}

fn telemetry() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        let spans = InMemorySpanExporter::default();
        global::set_tracer_provider(SdkTracerProvider::builder().with_simple_exporter(spans.clone()).build());
        let metrics = InMemoryMetricExporter::default();
        let meters = SdkMeterProvider::builder().with_reader(PeriodicReader::builder(metrics.clone()).build()).build();
        global::set_meter_provider(meters.clone());
        Telemetry { spans, metrics, meters }
    })
}

/// Both services on a free loopback port, named as clients call them.
async fn serve(traced: TracedService) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(
        Server::builder()
            .layer(InterceptLayer::new())
            .add_service(TracedServer::new(traced))
            .add_service(GuardedServer::new(GuardedService))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.expect("the server accepts")
}

/// Writes a propagator's entries into a request's metadata.
struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(key.as_bytes()), value.parse()) {
            self.0.insert(key, value);
        }
    }
}

/// A client-side span for one call, whose context the request carries
/// (`traceparent`), as an instrumented client sends it.
struct ClientSpan(Context);

impl ClientSpan {
    fn start(name: &str) -> Self {
        let tracer = global::tracer("tests-otel-client");
        let span = tracer.span_builder(name.to_owned()).with_kind(SpanKind::Client).start(&tracer);
        ClientSpan(Context::new().with_span(span))
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        TraceContextPropagator::new().inject_context(&self.0, &mut MetadataInjector(request.metadata_mut()));
        request
    }

    /// Ends the client's span; what the server span must be the child of.
    fn end(self) -> (String, SpanId) {
        let span = self.0.span();
        span.end();
        let context = span.span_context();
        (context.trace_id().to_string(), context.span_id())
    }
}

/// The server span of the trace `trace_id`, once exported.
async fn server_span(trace_id: &str) -> SpanData {
    for _ in 0..500 {
        let spans = telemetry().spans.get_finished_spans().unwrap();
        let mut found = spans
            .into_iter()
            .filter(|s| s.span_kind == SpanKind::Server && s.span_context.trace_id().to_string() == trace_id);
        if let Some(span) = found.next() {
            assert!(found.next().is_none(), "two server spans in trace {trace_id}");
            return span;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no server span in trace {trace_id}");
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
}

fn bytes<M: Message>(messages: &[M]) -> i64 {
    messages.iter().map(|m| m.encoded_len() as i64).sum()
}

fn ask(ending: Ending, text: &str) -> Ask {
    Ask { ending: ending as i32, replies: 0, text: text.to_owned() }
}

/// Waits until the server says it hangs on the ask `text`.
async fn hangs(hanging: &mut broadcast::Receiver<String>, text: &str) {
    while hanging.recv().await.expect("the service lives") != text {}
}

// ---------------------------------------------------------------------------
// The calls: every kind, every ending

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Answer,
    Fail,
    Cancel,
    /// A `budget(messages = 3)` used up: RESOURCE_EXHAUSTED.
    Exhausted,
    /// A `budget(duration = "2s")` used up: DEADLINE_EXCEEDED.
    Deadline,
}

/// What one call did, as its client saw it: the server span must say the same.
#[derive(Debug)]
struct Call {
    method: &'static str,
    end: End,
    trace_id: String,
    client_span: SpanId,
    code: Code,
    /// The messages the handler received, and those the client received.
    received: Vec<Ask>,
    sent: Vec<Reply>,
}

fn outcome<T>(result: Result<T, Status>) -> Code {
    result.err().map_or(Code::Ok, |s| s.code())
}

async fn unary(mut client: TracedClient<Channel>, hanging: broadcast::Sender<String>, end: End) -> Call {
    let name = format!("unary {end:?}");
    let span = ClientSpan::start(&name);
    let sent_ask = match end {
        End::Answer => ask(Ending::Answer, &name),
        End::Fail => ask(Ending::Fail, &name),
        End::Cancel | End::Deadline => ask(Ending::Hang, &name),
        End::Exhausted => unreachable!("one message cannot use up a budget"),
    };
    let mut hangs_on = hanging.subscribe();
    let call = client.unary(span.request(sent_ask.clone()));
    let (code, sent) = if end == End::Cancel {
        tokio::select! {
            result = call => panic!("the call ended: {result:?}"),
            () = hangs(&mut hangs_on, &name) => (Code::Cancelled, vec![]),
        }
    } else {
        match call.await {
            Ok(response) => (Code::Ok, vec![response.into_inner()]),
            Err(status) => (status.code(), vec![]),
        }
    };
    let (trace_id, client_span) = span.end();
    Call { method: "Unary", end, trace_id, client_span, code, received: vec![sent_ask], sent }
}

async fn download(mut client: TracedClient<Channel>, end: End) -> Call {
    let name = format!("download {end:?}");
    let span = ClientSpan::start(&name);
    let (ending, replies) = match end {
        End::Answer => (Ending::Answer, 2),
        End::Fail => (Ending::Fail, 2),
        End::Cancel | End::Deadline => (Ending::Hang, 1),
        End::Exhausted => (Ending::Answer, 5),
    };
    let sent_ask = Ask { replies, ..ask(ending, &name) };
    let mut stream = client.download(span.request(sent_ask.clone())).await.unwrap().into_inner();
    let mut sent = Vec::new();
    let code = loop {
        if end == End::Cancel && !sent.is_empty() {
            drop(stream);
            break Code::Cancelled;
        }
        match stream.message().await {
            Ok(Some(reply)) => sent.push(reply),
            result => break outcome(result),
        }
    };
    let (trace_id, client_span) = span.end();
    Call { method: "Download", end, trace_id, client_span, code, received: vec![sent_ask], sent }
}

async fn upload(mut client: TracedClient<Channel>, hanging: broadcast::Sender<String>, end: End) -> Call {
    let name = format!("upload {end:?}");
    let span = ClientSpan::start(&name);
    let answer = ask(Ending::Answer, &name);
    let asks = match end {
        End::Answer => vec![answer.clone(); 3],
        End::Fail => vec![answer.clone(), ask(Ending::Fail, &name)],
        End::Cancel => vec![answer.clone(), ask(Ending::Hang, &name)],
        End::Exhausted => vec![answer.clone(); 5],
        End::Deadline => vec![ask(Ending::Hang, &name)],
    };
    // Left open when the handler is to hang: only the client or a budget
    // ends the call then.
    let rest: Pin<Box<dyn Stream<Item = Ask> + Send>> = match end {
        End::Cancel | End::Deadline => Box::pin(tokio_stream::pending()),
        _ => Box::pin(tokio_stream::empty()),
    };
    let open = tokio_stream::iter(asks.clone()).chain(rest);
    let mut hangs_on = hanging.subscribe();
    let call = client.upload(span.request(open));
    let (code, sent) = if end == End::Cancel {
        tokio::select! {
            result = call => panic!("the call ended: {result:?}"),
            () = hangs(&mut hangs_on, &name) => (Code::Cancelled, vec![]),
        }
    } else {
        match call.await {
            Ok(response) => (Code::Ok, vec![response.into_inner()]),
            Err(status) => (status.code(), vec![]),
        }
    };
    // The budget lets 3 through; the handler saw the others.
    let received = asks.into_iter().take(3).collect();
    let (trace_id, client_span) = span.end();
    Call { method: "Upload", end, trace_id, client_span, code, received, sent }
}

/// One ask at a time, each answered before the next goes, so that what was
/// sent when the call ends is known.
async fn chat(mut client: TracedClient<Channel>, hanging: broadcast::Sender<String>, end: End) -> Call {
    let name = format!("chat {end:?}");
    let span = ClientSpan::start(&name);
    let answer = ask(Ending::Answer, &name);
    let asks = match end {
        End::Answer => vec![answer.clone(); 2],
        End::Fail => vec![answer.clone(), ask(Ending::Fail, &name)],
        End::Cancel | End::Deadline => vec![answer.clone(), ask(Ending::Hang, &name)],
        End::Exhausted => vec![answer.clone(); 4],
    };
    let (tx, rx) = mpsc::channel(1);
    let mut hangs_on = hanging.subscribe();
    let mut replies = client.chat(span.request(ReceiverStream::new(rx))).await.unwrap().into_inner();
    let (mut received, mut sent) = (Vec::new(), Vec::new());
    let mut code = None;
    for ask in asks {
        tx.send(ask.clone()).await.unwrap();
        if received.len() < 3 {
            received.push(ask.clone());
        }
        if end == End::Cancel && ask.ending() == Ending::Hang {
            hangs(&mut hangs_on, &name).await;
            code = Some(Code::Cancelled);
            break;
        }
        match replies.message().await {
            Ok(Some(reply)) => sent.push(reply),
            result => {
                code = Some(outcome(result));
                break;
            }
        }
    }
    let code = match code {
        Some(code) => code,
        None => {
            drop(tx);
            outcome(replies.message().await.map(|last| assert!(last.is_none(), "{last:?}")))
        }
    };
    drop(replies);
    let (trace_id, client_span) = span.end();
    Call { method: "Chat", end, trace_id, client_span, code, received, sent }
}

/// A code as `rpc.status_code` spells it (those these tests end with).
fn spelled(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Internal => "INTERNAL",
        Code::Cancelled => "CANCELLED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::Unauthenticated => "UNAUTHENTICATED",
        other => panic!("no test ends with {other:?}"),
    }
}

/// Whether the gRPC conventions count `code` as a server error (of those
/// these tests end with).
fn server_error(code: Code) -> bool {
    matches!(code, Code::Internal | Code::DeadlineExceeded)
}

/// The code each ending gives, and the interceptor that ended the call.
fn expected(end: End) -> (Code, Option<&'static str>) {
    match end {
        End::Answer => (Code::Ok, None),
        End::Fail => (Code::Internal, None),
        End::Cancel => (Code::Cancelled, None),
        End::Exhausted => (Code::ResourceExhausted, Some("budget")),
        End::Deadline => (Code::DeadlineExceeded, Some("budget")),
    }
}

/// The span of `call`: its name, kind, parent, status and counts.
fn check_span(call: &Call, span: &SpanData) {
    let what = format!("{} {:?}", call.method, call.end);
    let method = format!("fixture.otel.v1.Traced/{}", call.method);
    assert_eq!((span.name.as_ref(), &span.span_kind), (method.as_str(), &SpanKind::Server), "{what}");
    assert_eq!((span.parent_span_id, span.parent_span_is_remote), (call.client_span, true), "{what}: the parent");
    let (code, ended_by) = expected(call.end);
    assert_eq!(call.code, code, "{what}: the client's status");
    let code_name = spelled(code);
    let string = |key| attribute(span, key).map(|v| v.as_str().into_owned());
    let int = |key| match attribute(span, key) {
        Some(Value::I64(n)) => *n,
        other => panic!("{what}: {key} is {other:?}"),
    };
    assert_eq!(string("rpc.system.name").as_deref(), Some("grpc"), "{what}");
    assert_eq!(string("rpc.method"), Some(method.clone()), "{what}");
    assert_eq!(string("rpc.status_code").as_deref(), Some(code_name), "{what}");
    assert_eq!(string("network.peer.address").as_deref(), Some("127.0.0.1"), "{what}");
    assert!(int("network.peer.port") > 0, "{what}");
    let error = server_error(code);
    assert_eq!(string("error.type").as_deref(), error.then_some(code_name), "{what}");
    match &span.status {
        SpanStatus::Error { description } if error => assert!(!description.is_empty(), "{what}"),
        SpanStatus::Unset if !error => {}
        other => panic!("{what}: span status {other:?}"),
    }
    assert_eq!(string("interceptor_runtime.ended_by").as_deref(), ended_by, "{what}");
    let counts = [
        int("interceptor_runtime.messages_received"),
        int("interceptor_runtime.bytes_received"),
        int("interceptor_runtime.messages_sent"),
        int("interceptor_runtime.bytes_sent"),
    ];
    let expected = [call.received.len() as i64, bytes(&call.received), call.sent.len() as i64, bytes(&call.sent)];
    assert_eq!(counts, expected, "{what}: messages and bytes received, then sent");
    assert!(span.events.is_empty(), "{what}: nothing per message");
    assert!(span.end_time >= span.start_time, "{what}");
}

/// The `rpc.server.call.duration` points of `method`: (code, error.type) -> count.
fn durations(method: &str) -> Vec<(String, Option<String>, u64)> {
    telemetry().meters.force_flush().unwrap();
    let exports = telemetry().metrics.get_finished_metrics().unwrap();
    let last = exports.last().expect("an export");
    let mut points = Vec::new();
    for scope in last.scope_metrics().filter(|s| s.scope().name() == "interceptor-runtime") {
        for metric in scope.metrics().filter(|m| m.name() == "rpc.server.call.duration") {
            assert_eq!(metric.unit(), "s");
            let AggregatedMetrics::F64(MetricData::Histogram(histogram)) = metric.data() else {
                panic!("not a histogram of seconds: {:?}", metric.data());
            };
            for point in histogram.data_points() {
                let attributes: Vec<&KeyValue> = point.attributes().collect();
                let get = |key: &str| {
                    attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.as_str().into_owned())
                };
                if get("rpc.method").as_deref() != Some(method) {
                    continue;
                }
                assert_eq!(get("rpc.system.name").as_deref(), Some("grpc"));
                assert!(point.sum() >= 0.0 && point.bounds().count() == 14);
                points.push((get("rpc.status_code").unwrap(), get("error.type"), point.count()));
            }
        }
    }
    points.sort();
    points
}

#[tokio::test]
async fn every_kind_and_ending_is_one_server_span_in_the_clients_trace() {
    telemetry();
    in_real_time(async {
        let (hanging, _) = broadcast::channel(64);
        let addr = serve(TracedService { hanging: hanging.clone() }).await;
        let client = TracedClient::new(channel(addr).await);
        let before = stats::snapshot();

        use End::*;
        let mut calls: Vec<Pin<Box<dyn std::future::Future<Output = Call>>>> = Vec::new();
        for end in [Answer, Fail, Cancel, Deadline] {
            calls.push(Box::pin(unary(client.clone(), hanging.clone(), end)));
        }
        for end in [Answer, Fail, Cancel, Exhausted, Deadline] {
            calls.push(Box::pin(download(client.clone(), end)));
            calls.push(Box::pin(upload(client.clone(), hanging.clone(), end)));
            calls.push(Box::pin(chat(client.clone(), hanging.clone(), end)));
        }
        let calls = join_all(calls).await;

        for call in &calls {
            check_span(call, &server_span(&call.trace_id).await);
        }

        // The metric and monitor's totals count the same calls, by code.
        for method in ["Unary", "Download", "Upload", "Chat"] {
            let mut by_code: Vec<(Code, u64)> = Vec::new();
            for call in calls.iter().filter(|c| c.method == method) {
                match by_code.iter_mut().find(|(code, _)| *code == call.code) {
                    Some((_, n)) => *n += 1,
                    None => by_code.push((call.code, 1)),
                }
            }
            by_code.sort_by_key(|(code, _)| *code as i32);
            let totals = stats::since(&before);
            let totals = totals.iter().find(|m| m.method == format!("/fixture.otel.v1.Traced/{method}")).unwrap();
            assert_eq!((totals.codes.clone(), totals.in_flight()), (by_code.clone(), 0), "{method}: monitor");

            let points = durations(&format!("fixture.otel.v1.Traced/{method}"));
            let mut expected: Vec<_> = by_code
                .iter()
                .map(|(code, n)| {
                    let error = server_error(*code).then(|| spelled(*code).to_owned());
                    (spelled(*code).to_owned(), error, *n)
                })
                .collect();
            expected.sort();
            assert_eq!(points, expected, "{method}: rpc.server.call.duration");
        }
    })
    .await;
}

/// `otel` runs first wherever it is written: the span of a call that a
/// check rejects carries the rejection as its status, whether `otel` was
/// written before the check or after it. A call without a trace context
/// starts a trace.
#[tokio::test]
async fn a_rejection_is_traced_wherever_otel_is_written() {
    telemetry();
    in_real_time(async {
        let (hanging, _) = broadcast::channel(1);
        let addr = serve(TracedService { hanging }).await;
        let mut client = GuardedClient::new(channel(addr).await);

        for (written, method) in [("otel first", "OtelFirst"), ("otel last", "OtelLast")] {
            let span = ClientSpan::start(&format!("rejected, {written}"));
            let request = span.request(ask(Ending::Answer, "no token"));
            let status = match method {
                "OtelFirst" => client.otel_first(request).await,
                _ => client.otel_last(request).await,
            }
            .unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{written}");
            let (trace_id, client_span) = span.end();
            let server = server_span(&trace_id).await;
            assert_eq!(server.name.as_ref(), format!("fixture.otel.v1.Guarded/{method}"));
            assert_eq!(server.parent_span_id, client_span, "{written}");
            assert_eq!(
                attribute(&server, "rpc.status_code").map(|v| v.as_str().into_owned()).as_deref(),
                Some("UNAUTHENTICATED"),
                "{written}"
            );
            assert_eq!(
                attribute(&server, "interceptor_runtime.ended_by").map(|v| v.as_str().into_owned()).as_deref(),
                Some("deny"),
                "{written}"
            );
            assert_eq!(attribute(&server, "interceptor_runtime.messages_received"), Some(&Value::I64(0)));
            assert_eq!(server.status, SpanStatus::Unset, "the client's doing, not a server error");
        }

        let span = ClientSpan::start("accepted, otel last");
        let mut request = span.request(ask(Ending::Answer, "token"));
        request.metadata_mut().insert("authorization", "yes".parse().unwrap());
        client.otel_last(request).await.unwrap();
        let (trace_id, client_span) = span.end();
        let server = server_span(&trace_id).await;
        assert_eq!((server.name.as_ref(), server.parent_span_id), ("fixture.otel.v1.Guarded/OtelLast", client_span));

        let mut request = Request::new(ask(Ending::Answer, "no trace context"));
        request.metadata_mut().insert("authorization", "yes".parse().unwrap());
        client.otel_first(request).await.unwrap();
        let roots = || {
            let spans = telemetry().spans.get_finished_spans().unwrap();
            spans
                .into_iter()
                .filter(|s| s.name == "fixture.otel.v1.Guarded/OtelFirst" && s.parent_span_id == SpanId::INVALID)
                .count()
        };
        for _ in 0..500 {
            if roots() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(roots(), 1, "a call without a traceparent starts a trace");
    })
    .await;
}
