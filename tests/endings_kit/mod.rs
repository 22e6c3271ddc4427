//! Shared by the endings tests (`tests/endings*.rs`): a routeguide service
//! whose handlers read their streams to the end and report what they saw, an
//! interceptor that records every call's outcome and panics in the hook a
//! call asks for, and clients that misbehave: a raw HTTP/2 client that
//! resets its stream, and a TCP proxy whose connection can be cut.
//!
//! A call is told what to do by its metadata: `x-call` (its id, under which
//! the [`Ledger`] keeps what the handler saw and how the call ended), `x-do`
//! (the handler's behaviour) and `x-panic` (the [`Probe`] hook that panics).

#![allow(dead_code)] // each test binary uses part of it

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{mpsc as blocking, Mutex, OnceLock},
    time::Duration,
};

use interceptor_examples::pb::{
    route_guide_server::RouteGuideServer, Feature, Point, Rectangle, RouteNote, RouteSummary,
};
use interceptor_runtime::{CallContext, Direction, Interceptor, MessageRef, Outcome};
use prost::Message;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
use tonic::{
    codegen::{http, Bytes},
    metadata::MetadataMap,
    Code, Request, Status,
};

/// Waits (bounded) until `found` returns something.
pub async fn eventually<T>(what: &str, mut found: impl FnMut() -> Option<T>) -> T {
    for _ in 0..1000 {
        if let Some(value) = found() {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// What a handler's stream yielded: how many messages, then how it ended
/// (`Ok`: a clean end; `Err`: the status it yielded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saw {
    pub messages: u64,
    pub end: Result<(), (Code, String)>,
}

impl Saw {
    pub fn code(&self) -> Code {
        self.end.as_ref().err().map_or(Code::Ok, |(code, _)| *code)
    }
}

/// What one call left: the handler's progress and what it saw, and its
/// outcome as the interceptors' `on_end` saw it.
#[derive(Default)]
struct Entry {
    progress: u64,
    saw: Option<Saw>,
    outcome: Option<Outcome>,
    /// What the error the handler saw came from ([`transport_cause`]).
    cause: Option<String>,
    ends: u32,
    /// Where a blocked handler waits to be let go.
    gate: Option<blocking::Sender<()>>,
}

/// Every call, by its `x-call` id.
#[derive(Default)]
pub struct Ledger(Mutex<HashMap<u64, Entry>>);

pub fn ledger() -> &'static Ledger {
    static LEDGER: OnceLock<Ledger> = OnceLock::new();
    LEDGER.get_or_init(Ledger::default)
}

/// A fresh call id.
pub fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Ledger {
    fn with<R>(&self, id: u64, f: impl FnOnce(&mut Entry) -> R) -> R {
        f(self.0.lock().unwrap().entry(id).or_default())
    }

    fn progress(&self, id: u64, messages: u64) {
        self.with(id, |e| e.progress = messages);
    }

    fn saw(&self, id: u64, messages: u64, end: &Result<(), Status>) {
        let cause = end.as_ref().err().and_then(transport_cause);
        let end = end.as_ref().map(|_| ()).map_err(|s| (s.code(), s.message().to_owned()));
        self.with(id, |e| {
            e.saw = Some(Saw { messages, end });
            e.cause = cause;
        });
    }

    fn ended(&self, id: u64, outcome: Option<Outcome>) {
        self.with(id, |e| {
            e.ends += 1;
            e.outcome = outcome;
        });
    }

    /// Messages the handler of call `id` has read so far.
    pub fn progress_of(&self, id: u64) -> u64 {
        self.with(id, |e| e.progress)
    }

    pub fn saw_of(&self, id: u64) -> Option<Saw> {
        self.with(id, |e| e.saw.clone())
    }

    pub fn outcome_of(&self, id: u64) -> Option<Outcome> {
        self.with(id, |e| e.outcome.clone())
    }

    /// What the error the handler of call `id` saw came from, if it has
    /// reported one and it says ([`transport_cause`]).
    pub fn cause_of(&self, id: u64) -> Option<String> {
        self.with(id, |e| e.cause.clone())
    }

    /// How many times call `id` was ended (its `on_end` ran).
    pub fn ends_of(&self, id: u64) -> u32 {
        self.with(id, |e| e.ends)
    }

    /// Waits until the handler of call `id` has read `messages`.
    pub async fn wait_progress(&self, id: u64, messages: u64) {
        eventually(&format!("call {id} read {messages}"), || (self.progress_of(id) >= messages).then_some(())).await
    }

    pub async fn wait_saw(&self, id: u64) -> Saw {
        eventually(&format!("the handler of call {id} reported"), || self.saw_of(id)).await
    }

    pub async fn wait_outcome(&self, id: u64) -> Outcome {
        eventually(&format!("call {id} ended"), || self.outcome_of(id)).await
    }

    /// Blocks the calling task (a handler's) until the test lets call `id`
    /// go: the handler is busy, never waiting, so hyper does not look for
    /// a reset meanwhile. The worker's other tasks move to another thread
    /// (`block_in_place`), so that the server still serves.
    fn block(&self, id: u64) {
        let (open, wait) = blocking::channel();
        self.with(id, |e| e.gate = Some(open));
        tokio::task::block_in_place(|| {
            let _ = wait.recv_timeout(Duration::from_secs(10));
        });
    }

    /// Waits until the handler of call `id` blocks.
    pub async fn wait_blocked(&self, id: u64) {
        eventually(&format!("call {id} blocked"), || self.with(id, |e| e.gate.is_some()).then_some(())).await
    }

    /// Lets the blocked handler of call `id` go.
    pub fn unblock(&self, id: u64) {
        if let Some(gate) = self.with(id, |e| e.gate.take()) {
            let _ = gate.send(());
        }
    }
}

fn text<'a>(metadata: &'a MetadataMap, key: &str) -> &'a str {
    metadata.get(key).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn call_id(metadata: &MetadataMap) -> u64 {
    text(metadata, "x-call").parse().unwrap_or(0)
}

/// Records how every call ended, in the [`Ledger`], and panics in the hook
/// named by the call's `x-panic`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Probe;

pub fn probe() -> Probe {
    Probe
}

#[derive(Default)]
pub struct ProbeCall {
    id: u64,
    panic_in: String,
}

impl ProbeCall {
    fn panics_in(&self, hook: &str) {
        if self.panic_in == hook {
            panic!("the probe panics in {hook}");
        }
    }
}

impl Interceptor for Probe {
    type Call = ProbeCall;
    type Stream = ();

    fn name(&self) -> &'static str {
        "probe"
    }

    fn on_start(&self, _: &CallContext, metadata: &MetadataMap) -> Result<ProbeCall, Status> {
        let call = ProbeCall { id: call_id(metadata), panic_in: text(metadata, "x-panic").to_owned() };
        call.panics_in("on_start");
        Ok(call)
    }

    fn on_stream(&self, call: &ProbeCall, _: &CallContext, _: Direction) {
        call.panics_in("on_stream");
    }

    fn on_message<M: Message + 'static>(
        &self,
        call: &ProbeCall,
        _: &mut (),
        _: &MessageRef<'_, M>,
    ) -> Result<(), Status> {
        call.panics_in("poll_message");
        Ok(())
    }

    fn on_delivered<M: Message + 'static>(&self, call: &ProbeCall, _: &mut (), _: &MessageRef<'_, M>) {
        call.panics_in("on_delivered");
    }

    fn poll_interrupt(
        &self,
        call: &ProbeCall,
        _: &mut (),
        _: &CallContext,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Status> {
        call.panics_in("poll_interrupt");
        std::task::Poll::Pending
    }

    fn on_end(&self, call: &ProbeCall, ctx: &CallContext) {
        ledger().ended(call.id, ctx.outcome().cloned());
        call.panics_in("on_end");
    }
}

pub type Features = Pin<Box<dyn Stream<Item = Result<Feature, Status>> + Send>>;
pub type Notes = Pin<Box<dyn Stream<Item = Result<RouteNote, Status>> + Send>>;

fn feature(i: i32) -> Result<Feature, Status> {
    Ok(Feature { name: format!("feature {i}"), location: None })
}

/// The response stream of `ListFeatures`, by `x-do`: `endless` (a feature
/// every 5 ms until the client goes away), `panic-stream` (one feature,
/// then the stream panics), or `n` features.
pub fn features(what: &str, n: i32) -> Features {
    match what {
        "endless" => Box::pin(tokio_stream::iter(0..).map(feature).throttle(Duration::from_millis(5))),
        "panic-stream" => Box::pin(tokio_stream::iter(0..).map(|i| {
            if i == 1 {
                panic!("the response stream panics");
            }
            feature(i)
        })),
        _ => Box::pin(tokio_stream::iter((0..n).map(feature))),
    }
}

/// The echo of `RouteChat`: every note back; with `panic-stream`, the
/// stream panics at the second.
pub fn echo(what: &str, notes: mpsc::Receiver<Result<RouteNote, Status>>) -> Notes {
    let panics = what == "panic-stream";
    let mut sent = 0;
    Box::pin(ReceiverStream::new(notes).map(move |note| {
        sent += 1;
        if panics && sent == 2 {
            panic!("the response stream panics");
        }
        note
    }))
}

/// Defines `$ty`, a routeguide service whose handlers do what each call's
/// metadata asks, with the given attributes above the impl and on every
/// method. Each handler that has a client stream reads it to the end with
/// `message()`, and reports what it saw in the [`Ledger`].
macro_rules! ends_service {
    ($ty:ident, impl: [$(#[$impl_attr:meta])*], method: [$(#[$method_attr:meta])*]) => {
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $ty;

        $(#[$impl_attr])*
        #[tonic::async_trait]
        impl interceptor_examples::pb::route_guide_server::RouteGuide for $ty {
            /// `x-do`: `panic`, `hang` (until the client goes away), `block`
            /// (the thread, until the test lets it go), `progress` (answers
            /// with the progress of the call `x-of`, for clients outside
            /// the process); or else the point's feature.
            $(#[$method_attr])*
            async fn get_feature(
                &self,
                request: tonic::Request<interceptor_examples::pb::Point>,
            ) -> Result<tonic::Response<interceptor_examples::pb::Feature>, tonic::Status> {
                let (id, what) = $crate::endings_kit::what(request.metadata());
                if what == "progress" {
                    let of = $crate::endings_kit::progress_asked(request.metadata());
                    let name = $crate::endings_kit::ledger().progress_of(of).to_string();
                    return Ok(tonic::Response::new(interceptor_examples::pb::Feature { name, location: None }));
                }
                let point = request.into_inner();
                $crate::endings_kit::read_one(id);
                match what.as_str() {
                    "panic" => panic!("the handler panics"),
                    "hang" => std::future::pending::<()>().await,
                    "block" => $crate::endings_kit::block(id),
                    _ => {}
                }
                Ok(tonic::Response::new(interceptor_examples::pb::Feature { name: "here".into(), location: Some(point) }))
            }

            type ListFeaturesStream = $crate::endings_kit::Features;

            /// `x-do`: `panic`, `endless`, `panic-stream`; or else
            /// `lo.latitude` features.
            $(#[$method_attr])*
            async fn list_features(
                &self,
                request: tonic::Request<interceptor_examples::pb::Rectangle>,
            ) -> Result<tonic::Response<Self::ListFeaturesStream>, tonic::Status> {
                let (id, what) = $crate::endings_kit::what(request.metadata());
                let n = request.into_inner().lo.unwrap_or_default().latitude;
                $crate::endings_kit::read_one(id);
                if what == "panic" {
                    panic!("the handler panics");
                }
                Ok(tonic::Response::new($crate::endings_kit::features(&what, n)))
            }

            /// Reads every point, then answers with their count. `x-do`:
            /// `panic` (after the second point), `block` (after the last).
            $(#[$method_attr])*
            async fn record_route(
                &self,
                request: tonic::Request<tonic::Streaming<interceptor_examples::pb::Point>>,
            ) -> Result<tonic::Response<interceptor_examples::pb::RouteSummary>, tonic::Status> {
                let (id, what) = $crate::endings_kit::what(request.metadata());
                let mut points = request.into_inner();
                let mut read = 0;
                let end = loop {
                    match points.message().await {
                        Ok(Some(_)) => {
                            read += 1;
                            $crate::endings_kit::read_up_to(id, read);
                            if what == "panic" && read == 2 {
                                panic!("the handler panics");
                            }
                        }
                        Ok(None) => break Ok(()),
                        Err(status) => break Err(status),
                    }
                };
                $crate::endings_kit::report(id, read, &end);
                end?;
                if what == "block" {
                    $crate::endings_kit::block(id);
                }
                Ok(tonic::Response::new($crate::endings_kit::summary(read)))
            }

            type RouteChatStream = $crate::endings_kit::Notes;

            /// Echoes every note, read to the end by a task of its own.
            /// `x-do`: `panic` (the handler, after the first note),
            /// `panic-stream` (the response stream, at its second note).
            $(#[$method_attr])*
            async fn route_chat(
                &self,
                request: tonic::Request<tonic::Streaming<interceptor_examples::pb::RouteNote>>,
            ) -> Result<tonic::Response<Self::RouteChatStream>, tonic::Status> {
                let (id, what) = $crate::endings_kit::what(request.metadata());
                let mut notes = request.into_inner();
                if what == "panic" {
                    let _ = notes.message().await;
                    panic!("the handler panics");
                }
                let (tx, rx) = tokio::sync::mpsc::channel(16);
                tokio::spawn(async move {
                    let mut read = 0;
                    let end = loop {
                        match notes.message().await {
                            Ok(Some(note)) => {
                                read += 1;
                                $crate::endings_kit::read_up_to(id, read);
                                let _ = tx.send(Ok(note)).await;
                            }
                            Ok(None) => break Ok(()),
                            Err(status) => break Err(status),
                        }
                    };
                    $crate::endings_kit::report(id, read, &end);
                });
                Ok(tonic::Response::new($crate::endings_kit::echo(&what, rx)))
            }
        }
    };
}

/// The call's id and what its handler is asked to do.
pub fn what(metadata: &MetadataMap) -> (u64, String) {
    (call_id(metadata), text(metadata, "x-do").to_owned())
}

pub fn progress_asked(metadata: &MetadataMap) -> u64 {
    text(metadata, "x-of").parse().unwrap_or(0)
}

/// A unary request arrived.
pub fn read_one(id: u64) {
    ledger().progress(id, 1);
    ledger().saw(id, 1, &Ok(()));
}

pub fn read_up_to(id: u64, messages: u64) {
    ledger().progress(id, messages);
}

/// The transport error in `status`'s source chain, as a handler walking
/// the chain finds it (tonic's streaming example does, to tell a client
/// that disconnected): `"h2 CANCEL"` for an HTTP/2 reset, `"io BrokenPipe"`
/// for an I/O error, also one inside an `h2::Error`.
pub fn transport_cause(status: &Status) -> Option<String> {
    let mut error: &(dyn std::error::Error + 'static) = status;
    loop {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return Some(match (h2.get_io(), h2.reason()) {
                (Some(io), _) => format!("io {:?}", io.kind()),
                (None, Some(reason)) => format!("h2 {reason:?}"),
                (None, None) => format!("h2 {h2}"),
            });
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return Some(format!("io {:?}", io.kind()));
        }
        error = error.source()?;
    }
}

pub fn report(id: u64, messages: u64, end: &Result<(), Status>) {
    ledger().saw(id, messages, end);
}

pub fn block(id: u64) {
    ledger().block(id);
}

pub fn summary(points: u64) -> RouteSummary {
    RouteSummary { point_count: points as i32, ..Default::default() }
}

/// The request metadata of call `id`: `x-call`, and `x-do` / `x-panic`
/// when not empty.
pub fn metadata_of(id: u64, what: &str, panic_in: &str) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    metadata.insert("x-call", id.to_string().parse().unwrap());
    if !what.is_empty() {
        metadata.insert("x-do", what.parse().unwrap());
    }
    if !panic_in.is_empty() {
        metadata.insert("x-panic", panic_in.parse().unwrap());
    }
    metadata
}

/// `message` with `id`'s metadata.
pub fn request<T>(message: T, id: u64, what: &str, panic_in: &str) -> Request<T> {
    let mut request = Request::new(message);
    *request.metadata_mut() = metadata_of(id, what, panic_in);
    request
}

/// Serves `service` on a free loopback port, with [`InterceptLayer`]
/// when `layer` (as the README's setup has it), until the test's runtime
/// ends.
///
/// [`InterceptLayer`]: interceptor_runtime::InterceptLayer
pub async fn serve<S>(service: S, layer: bool) -> SocketAddr
where
    S: interceptor_examples::pb::route_guide_server::RouteGuide,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let service = RouteGuideServer::new(service);
    if layer {
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(interceptor_runtime::InterceptLayer::new())
                .add_service(service)
                .serve_with_incoming(incoming),
        );
    } else {
        tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming));
    }
    addr
}

pub async fn connect(
    addr: SocketAddr,
) -> interceptor_examples::pb::route_guide_client::RouteGuideClient<tonic::transport::Channel> {
    interceptor_examples::pb::route_guide_client::RouteGuideClient::connect(format!("http://{addr}"))
        .await
        .expect("the server accepts")
}

/// A TCP proxy in front of `server`, for one connection: dropping the
/// [`Cut`] (or calling it) closes both sides at once, as a lost
/// connection does.
pub async fn proxy(server: SocketAddr) -> (SocketAddr, Cut) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let task = tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.expect("the client connects");
        let mut upstream = TcpStream::connect(server).await.expect("the server accepts");
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    });
    (addr, Cut(task))
}

/// The proxy's connection; see [`proxy`].
pub struct Cut(tokio::task::JoinHandle<()>);

impl Cut {
    pub async fn cut(self) {
        self.0.abort();
        let _ = (&mut { self }.0).await;
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An HTTP/2 connection made with `h2` directly, for [`RawCall`]s.
pub struct RawConnection {
    addr: SocketAddr,
    client: h2::client::SendRequest<Bytes>,
    task: tokio::task::JoinHandle<()>,
}

impl RawConnection {
    pub async fn open(addr: SocketAddr) -> RawConnection {
        let tcp = TcpStream::connect(addr).await.expect("the server accepts");
        let (client, connection) = h2::client::handshake(tcp).await.expect("an HTTP/2 connection");
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        RawConnection { addr, client, task }
    }

    /// Opens a call of `path` (`/pkg.Service/Method`) with `id`'s metadata.
    pub async fn call(&self, path: &str, id: u64, what: &str) -> RawCall {
        let mut client = self.client.clone().ready().await.expect("the connection is ready");
        let mut request = http::Request::post(format!("http://{}{path}", self.addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-call", id.to_string());
        if !what.is_empty() {
            request = request.header("x-do", what);
        }
        let (response, send) = client.send_request(request.body(()).unwrap(), false).expect("the request goes out");
        RawCall { send, response, connection: None }
    }
}

impl Drop for RawConnection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gRPC call made with `h2` directly, so that it can reset its stream,
/// with any reason, while both halves are open.
pub struct RawCall {
    pub send: h2::SendStream<Bytes>,
    pub response: h2::client::ResponseFuture,
    /// The connection, when the call has one of its own.
    connection: Option<RawConnection>,
}

impl RawCall {
    /// Opens a call of `path` on a connection of its own.
    pub async fn open(addr: SocketAddr, path: &str, id: u64, what: &str) -> RawCall {
        let connection = RawConnection::open(addr).await;
        let mut call = connection.call(path, id, what).await;
        call.connection = Some(connection);
        call
    }

    /// Sends one message, gRPC-framed.
    pub fn send(&mut self, message: &impl Message, end: bool) {
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(message.encoded_len() as u32).to_be_bytes());
        message.encode(&mut frame).unwrap();
        self.send.send_data(Bytes::from(frame), end).expect("the data goes out");
    }

    /// Resets the stream with `reason` (the connection stays open).
    pub fn reset(&mut self, reason: h2::Reason) {
        self.send.send_reset(reason);
    }

    /// Reads the response to its end: the status the server sent.
    pub async fn status(self) -> Code {
        let response = self.response.await.expect("a response");
        if let Some(status) = Status::from_header_map(response.headers()) {
            return status.code();
        }
        let mut body = response.into_body();
        while let Some(data) = body.data().await {
            let data = data.expect("the response's data");
            let _ = body.flow_control().release_capacity(data.len());
        }
        let trailers = body.trailers().await.expect("the response's trailers").unwrap_or_default();
        Status::from_header_map(&trailers).map_or(Code::Unknown, |status| status.code())
    }
}

/// A point or a note, for streams.
pub fn point(i: i32) -> Point {
    Point { latitude: i, longitude: 0 }
}

/// A rectangle whose `lo.latitude` is `n`: `ListFeatures` answers with `n`
/// features.
pub fn rect(n: i32) -> Rectangle {
    Rectangle { lo: Some(point(n)), hi: None }
}

pub fn note(i: i32) -> RouteNote {
    RouteNote { location: Some(point(i)), message: format!("note {i}") }
}

/// The ERROR events logged in this process, each as its fields (`message`
/// included), for the checks that a caught panic was logged.
pub mod logs {
    use std::{
        collections::HashMap,
        fmt,
        sync::{Mutex, Once},
    };

    use tracing::{
        field::{Field, Visit},
        Event, Level, Subscriber,
    };
    use tracing_subscriber::{layer::Context, prelude::*, Layer};

    pub type Fields = HashMap<String, String>;

    static ERRORS: Mutex<Vec<Fields>> = Mutex::new(Vec::new());

    /// Collects ERROR events; installed once per test binary.
    pub fn install() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| tracing_subscriber::registry().with(Errors).init());
    }

    /// The ERROR events about `method` (their `rpc.method` field).
    pub fn errors_about(method: &str) -> Vec<Fields> {
        let errors = ERRORS.lock().unwrap();
        errors.iter().filter(|e| e.get("rpc.method").map(String::as_str) == Some(method)).cloned().collect()
    }

    struct Errors;

    impl<S: Subscriber> Layer<S> for Errors {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            if *event.metadata().level() == Level::ERROR {
                let mut fields = Collect(Fields::new());
                event.record(&mut fields);
                ERRORS.lock().unwrap().push(fields.0);
            }
        }
    }

    struct Collect(Fields);

    impl Visit for Collect {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
    }
}
