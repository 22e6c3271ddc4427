//! Methods are named as clients call them, `/fixture.names.v1.Pipe/GetHTTPStatus`,
//! in the stats, the metrics' labels and the monitor's span, wherever the
//! attribute stands and however the trait is written, when the server has
//! `InterceptLayer`: an imported trait (`impl Pipe for ..`), the attribute
//! on each method without `service = ..`, a generic impl served for two
//! types. `service = ".."` still wins over the wire's service name. Without
//! the layer (tonic's server gives a handler no names) or called directly,
//! a method's names are guessed from the Rust code, and `MethodInfo` and an
//! INFO log say so.
//!
//! One test for the servers: the stats, the metrics recorder and the
//! tracing subscriber are process-wide, and the guessed names are checked to
//! appear only where expected.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use interceptor_runtime::{intercept, stats, testing, CallContext, InterceptLayer, NameSource};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, wrappers::TcpListenerStream, Stream, StreamExt};
use tonic::{
    service::Routes,
    transport::{Channel, Server},
    Request, Response, Status, Streaming,
};
use tracing::{
    field::{Field, Visit},
    span, Event, Subscriber,
};
use tracing_subscriber::{layer::Context, prelude::*, Layer};

mod pb {
    tonic::include_proto!("fixture.names.v1");
}

use pb::{
    pipe_client::PipeClient,
    pipe_server::{Pipe, PipeServer},
    relay_client::RelayClient,
    relay_server::{Relay, RelayServer},
    vault_client::VaultClient,
    vault_server::VaultServer,
    Word,
};

type Reply<T> = Result<Response<T>, Status>;
type Words = Pin<Box<dyn Stream<Item = Result<Word, Status>> + Send>>;

/// How the call that `request` belongs to is named, as its handler sees it:
/// `"/pkg.Service/Method Request"`.
fn named<T>(request: &Request<T>) -> Word {
    let text = match CallContext::of(request) {
        Some(call) => format!("{} {:?}", call.method().full_name, call.method().names),
        None => "not intercepted".to_owned(),
    };
    Word { text }
}

/// `$ty` implements `$service` with the same bodies: `say` and
/// `get_http_status` answer how their call is named, `chat` echoes.
macro_rules! words_service {
    (
        $ty:ident $(<$param:ident>)?,
        $service:path,
        impl: [$(#[$impl_attr:meta])*],
        method: [$(#[$method_attr:meta])*] $(,)?
    ) => {
        #[derive(Debug, Default)]
        pub struct $ty $(<$param>)? {
            $(_of: std::marker::PhantomData<fn() -> $param>,)?
        }

        $(#[$impl_attr])*
        #[tonic::async_trait]
        impl $(<$param: Send + Sync + 'static>)? $service for $ty $(<$param>)? {
            $(#[$method_attr])*
            async fn say(&self, request: Request<Word>) -> Reply<Word> {
                Ok(Response::new(named(&request)))
            }

            $(#[$method_attr])*
            async fn get_http_status(&self, request: Request<Word>) -> Reply<Word> {
                Ok(Response::new(named(&request)))
            }

            type ChatStream = Words;

            $(#[$method_attr])*
            async fn chat(&self, request: Request<Streaming<Word>>) -> Reply<Self::ChatStream> {
                let mut words = request.into_inner();
                let (tx, rx) = mpsc::channel(4);
                tokio::spawn(async move {
                    while let Some(word) = words.next().await {
                        if tx.send(word).await.is_err() {
                            return;
                        }
                    }
                });
                Ok(Response::new(Box::pin(ReceiverStream::new(rx)) as Self::ChatStream))
            }
        }
    };
}

// The trait imported, the attribute on the impl.
words_service!(ImportedPipe, Pipe, impl: [#[intercept(monitor)]], method: []);
// The attribute on each method, no `service = ..`: tonic's async_trait rewrote
// the methods before it sees them.
words_service!(MethodLevelRelay, Relay, impl: [], method: [#[intercept(monitor)]]);
// A generic impl, its module's path written out.
words_service!(Shelf<T>, pb::vault_server::Vault, impl: [#[intercept(monitor)]], method: []);
// `service = ..` given: it wins over the wire's service; the method is the
// wire's.
words_service!(OverriddenPipe, Pipe, impl: [#[intercept(monitor, service = "custom.Pipe")]], method: []);
// Served without `InterceptLayer`: guessed names.
words_service!(BareRelay, Relay, impl: [#[intercept(monitor)]], method: []);
// Called in-process by a tonic client, which inserts a `tonic::GrpcMethod`
// (without `monitor`: its names must not add to the stats of the others).
words_service!(InProcessPipe, Pipe, impl: [#[intercept(budget = 100)]], method: []);

/// Serves `routes` on a loopback port, with or without `InterceptLayer`.
async fn serve(routes: Routes, with_layer: bool) -> Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let incoming = TcpListenerStream::new(listener);
    if with_layer {
        tokio::spawn(Server::builder().layer(InterceptLayer::new()).add_routes(routes).serve_with_incoming(incoming));
    } else {
        tokio::spawn(Server::builder().add_routes(routes).serve_with_incoming(incoming));
    }
    Channel::from_shared(format!("http://{addr}")).expect("a URI").connect().await.expect("the server accepts")
}

fn word(text: &str) -> Word {
    Word { text: text.into() }
}

/// What `say` and `get_http_status` answered, and the words `chat` echoed.
async fn call_all<C>(client: &mut C) -> (String, String, Vec<String>)
where
    C: WordsClient,
{
    tokio::time::timeout(Duration::from_secs(30), async {
        let say = client.say(word("hi")).await.expect("say").into_inner().text;
        let status = client.get_http_status(word("hi")).await.expect("get_http_status").into_inner().text;
        let mut echoed = client.chat(vec![word("a"), word("b")]).await.expect("chat").into_inner();
        let mut words = Vec::new();
        while let Some(word) = echoed.message().await.expect("chat's stream") {
            words.push(word.text);
        }
        (say, status, words)
    })
    .await
    .expect("the calls end in time")
}

/// The three generated clients, alike.
#[tonic::async_trait]
trait WordsClient {
    async fn say(&mut self, word: Word) -> Reply<Word>;
    async fn get_http_status(&mut self, word: Word) -> Reply<Word>;
    async fn chat(&mut self, words: Vec<Word>) -> Reply<Streaming<Word>>;
}

macro_rules! words_client {
    ($client:ident, $transport:ty) => {
        #[tonic::async_trait]
        impl WordsClient for $client<$transport> {
            async fn say(&mut self, word: Word) -> Reply<Word> {
                $client::say(self, word).await
            }
            async fn get_http_status(&mut self, word: Word) -> Reply<Word> {
                $client::get_http_status(self, word).await
            }
            async fn chat(&mut self, words: Vec<Word>) -> Reply<Streaming<Word>> {
                $client::chat(self, tokio_stream::iter(words)).await
            }
        }
    };
}
words_client!(PipeClient, Channel);
words_client!(RelayClient, Channel);
words_client!(VaultClient, Channel);
words_client!(PipeClient, PipeServer<InProcessPipe>);

/// Checks the names of `service`'s three methods in the stats, the metrics
/// and the spans: each called `calls` times.
fn assert_named(service: &str, methods: [&str; 3], calls: u64, metrics: &Metrics, spans: &[String]) {
    for method in methods {
        let full_name = format!("/{service}/{method}");
        let totals = stats::method(&full_name).unwrap_or_else(|| panic!("no stats for {full_name}"));
        assert_eq!((totals.started, totals.finished), (calls, calls), "{full_name}");
        let labels = [("grpc_service", service), ("grpc_method", method)];
        assert_eq!(counter(metrics, "grpc_server_started_total", &labels), Some(calls), "{full_name}");
        assert_eq!(counter(metrics, "grpc_server_handled_total", &labels), Some(calls), "{full_name}");
        let spanned = spans.iter().filter(|name| **name == full_name).count() as u64;
        assert_eq!(spanned, calls, "`grpc.call` spans with rpc.method = {full_name}");
    }
}

#[tokio::test]
async fn methods_are_named_as_on_the_wire() {
    let (snapshotter, captured) = install();
    let wire = ["Say", "GetHTTPStatus", "Chat"];

    // The trait imported: not `/Pipe/..`.
    let mut pipe = PipeClient::new(serve(Routes::new(PipeServer::new(ImportedPipe::default())), true).await);
    let (say, status, chat) = call_all(&mut pipe).await;
    assert_eq!(say, "/fixture.names.v1.Pipe/Say Request");
    assert_eq!(status, "/fixture.names.v1.Pipe/GetHTTPStatus Request", "not `GetHttpStatus`");
    assert_eq!(chat, ["a", "b"]);

    // The attribute on each method: not `/MethodLevelRelay/..`.
    let mut relay = RelayClient::new(serve(Routes::new(RelayServer::new(MethodLevelRelay::default())), true).await);
    let (say, status, _) = call_all(&mut relay).await;
    assert_eq!(say, "/fixture.names.v1.Relay/Say Request");
    assert_eq!(status, "/fixture.names.v1.Relay/GetHTTPStatus Request");

    // A generic impl served for two types: one method, one set of names.
    let mut bytes = VaultClient::new(serve(Routes::new(VaultServer::new(Shelf::<u8>::default())), true).await);
    let mut strings = VaultClient::new(serve(Routes::new(VaultServer::new(Shelf::<String>::default())), true).await);
    for client in [&mut bytes, &mut strings] {
        let (say, status, _) = call_all(client).await;
        assert_eq!(say, "/fixture.names.v1.Vault/Say Request");
        assert_eq!(status, "/fixture.names.v1.Vault/GetHTTPStatus Request");
    }

    // `service = ..` wins; the method is still the wire's.
    let mut overridden = PipeClient::new(serve(Routes::new(PipeServer::new(OverriddenPipe::default())), true).await);
    let (say, status, _) = call_all(&mut overridden).await;
    assert_eq!(say, "/custom.Pipe/Say Given");
    assert_eq!(status, "/custom.Pipe/GetHTTPStatus Given");

    let metrics = take(snapshotter);
    let spans = captured.spans();
    assert_named("fixture.names.v1.Pipe", wire, 1, &metrics, &spans);
    assert_named("fixture.names.v1.Relay", wire, 1, &metrics, &spans);
    assert_named("fixture.names.v1.Vault", wire, 2, &metrics, &spans);
    assert_named("custom.Pipe", wire, 1, &metrics, &spans);
    let rows: Vec<_> = stats::snapshot().into_iter().map(|m| m.method).collect();
    assert_eq!(rows.len(), 12, "no other names: {rows:#?}");
    // (The test kit's test guesses `/Direct/..`.)
    let guessed = captured.guesses();
    assert!(guessed.iter().all(|m| m.starts_with("/Direct/")), "nothing guessed: {guessed:?}");

    // A tonic client handing its requests to the server in-process: the
    // client's `tonic::GrpcMethod` names them.
    let mut in_process = PipeClient::new(PipeServer::new(InProcessPipe::default()));
    let (say, status, chat) = call_all(&mut in_process).await;
    assert_eq!(say, "/fixture.names.v1.Pipe/Say Request");
    assert_eq!(status, "/fixture.names.v1.Pipe/GetHTTPStatus Request");
    assert_eq!(chat, ["a", "b"]);

    // Without the layer, tonic's server gives the handler no names (no
    // path, no `tonic::GrpcMethod`: if a tonic release adds one, this
    // changes): they are guessed from the Rust code (the trait's name, the
    // handler's), and `MethodInfo` and an INFO log, once per method, say so.
    let mut bare = RelayClient::new(serve(Routes::new(RelayServer::new(BareRelay::default())), false).await);
    let (say, status, _) = call_all(&mut bare).await;
    assert_eq!(say, "/Relay/Say Guessed");
    assert_eq!(status, "/Relay/GetHttpStatus Guessed");
    call_all(&mut bare).await;
    assert_named("Relay", ["Say", "GetHttpStatus", "Chat"], 2, &take(snapshotter), &captured.spans());
    let mut guesses = captured.guesses();
    guesses.retain(|m| !m.starts_with("/Direct/"));
    guesses.sort();
    assert_eq!(guesses, ["/Relay/Chat", "/Relay/GetHttpStatus", "/Relay/Say"], "one INFO per method");
}

/// The test kit calls a handler directly: no names unless the request is
/// given its path.
#[tokio::test]
async fn the_test_kit_names_a_call_by_its_path_or_guesses() {
    struct Direct;
    impl Direct {
        #[intercept(budget = 10)]
        async fn get_http_status(&self, request: Request<Word>) -> Reply<Word> {
            Ok(Response::new(named(&request)))
        }
    }
    struct Routed;
    impl Routed {
        #[intercept(budget = 10)]
        async fn get_http_status(&self, request: Request<Word>) -> Reply<Word> {
            Ok(Response::new(named(&request)))
        }
    }

    let (_, captured) = install();
    // Without a path: the impl type's name and the handler's, guessed; the
    // first call fixes them for the process.
    assert_eq!(
        Direct.get_http_status(Request::new(word("hi"))).await.unwrap().into_inner().text,
        "/Direct/GetHttpStatus Guessed"
    );
    let mut request = Request::new(word("hi"));
    testing::set_grpc_path(&mut request, "/fixture.names.v1.Relay/GetHTTPStatus");
    assert_eq!(Direct.get_http_status(request).await.unwrap().into_inner().text, "/Direct/GetHttpStatus Guessed");
    assert!(captured.guesses().contains(&"/Direct/GetHttpStatus".to_owned()), "an INFO says so");

    // With the path, from the first call on: the wire's names.
    let mut request = Request::new(word("hi"));
    testing::set_grpc_path(&mut request, "/fixture.names.v1.Relay/GetHTTPStatus");
    let probe = testing::probe(&mut request);
    assert_eq!(
        Routed.get_http_status(request).await.unwrap().into_inner().text,
        "/fixture.names.v1.Relay/GetHTTPStatus Request"
    );
    let info = probe.context().expect("the call started").method();
    assert_eq!(
        (info.service, info.method, info.names),
        ("fixture.names.v1.Relay", "GetHTTPStatus", NameSource::Request)
    );
}

#[test]
#[should_panic(expected = "`Relay/Say` is not a gRPC method's path; write it as `/package.Service/Method`")]
fn a_bad_test_kit_path_says_how_to_write_it() {
    testing::set_grpc_path(&mut Request::new(()), "Relay/Say");
}

// --- what the servers recorded ---

/// Every metric: name, sorted labels, value.
type Metrics = Vec<(String, Vec<(String, String)>, DebugValue)>;

fn take(snapshotter: &Snapshotter) -> Metrics {
    let metrics = snapshotter.snapshot().into_vec().into_iter().map(|(key, _, _, value)| {
        let key = key.key();
        let mut labels: Vec<_> = key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
        labels.sort();
        (key.name().to_owned(), labels, value)
    });
    metrics.collect()
}

/// The sum of the counters named `name` whose labels include `labels`.
fn counter(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    let matching = metrics
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v)));
    matching.fold(None, |sum, (_, _, value)| match value {
        DebugValue::Counter(n) => Some(sum.unwrap_or(0) + n),
        _ => sum,
    })
}

/// What the tracing subscriber saw: the `rpc.method` of every `grpc.call`
/// span, and the `method` of every INFO saying names were guessed.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<(Vec<String>, Vec<String>)>>);

impl Captured {
    fn spans(&self) -> Vec<String> {
        self.0.lock().unwrap().0.clone()
    }

    fn guesses(&self) -> Vec<String> {
        self.0.lock().unwrap().1.clone()
    }
}

/// The value of one field.
struct FieldOf(&'static str, Option<String>);

impl Visit for FieldOf {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == self.0 {
            self.1 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == self.0 {
            self.1 = Some(format!("{value:?}"));
        }
    }
}

impl<S: Subscriber> Layer<S> for Captured {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, _: &span::Id, _: Context<'_, S>) {
        if attrs.metadata().name() == "grpc.call" {
            let mut method = FieldOf("rpc.method", None);
            attrs.record(&mut method);
            self.0.lock().unwrap().0.extend(method.1);
        }
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut message = FieldOf("message", None);
        event.record(&mut message);
        if message.1.is_some_and(|m| m.contains("guessed from the Rust code")) {
            let mut method = FieldOf("method", None);
            event.record(&mut method);
            self.0.lock().unwrap().1.extend(method.1);
        }
    }
}

/// The process's metrics recorder and tracing subscriber, installed once
/// (a subscriber per test would miss events whose callsite another test's
/// thread registered first).
fn install() -> &'static (Snapshotter, Captured) {
    static INSTALLED: OnceLock<(Snapshotter, Captured)> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the only recorder of this test binary");
        let captured = Captured::default();
        tracing_subscriber::registry().with(captured.clone()).init();
        (snapshotter, captured)
    })
}
