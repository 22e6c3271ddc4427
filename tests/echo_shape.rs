//! The echo service written in the shapes real tonic code has, each stamped
//! with and without `#[intercept(..)]`, served on 127.0.0.1 and called by a
//! tonic client, which must get the same answers from both; the intercepted
//! one must have counted every message under the right RPC kind.
//!
//! - [`ExampleEcho`]: as tonic's streaming example (`examples/src/streaming/server.rs`)
//!   writes it: the trait imported (`use ..::echo_server::Echo; impl Echo for ..`),
//!   `type EchoResult<T>`, both stream types one alias of a boxed stream,
//!   returned as `Box::pin(s) as Self::ServerStreamingEchoStream`.
//! - [`GenericEcho`]: a generic impl (`impl<T: Send + Sync + 'static> Echo for
//!   GenericEcho<T>`), `tonic::Result`, concrete `ReceiverStream` types and a
//!   stream from `async_stream::try_stream!`.
//! - [`WrittenOutEcho`]: the stream types written out in the signatures
//!   (`EchoResult<ResponseStream>`, `Result<Response<ReceiverStream<..>>,
//!   Status>`) where the trait says `Self::XStream`.
//! - [`SyncBoxEcho`]: the attribute on the streaming methods alone, their
//!   stream types boxed streams that are also `Sync`.
//! - where the attributes stand: the impl's below `#[tonic::async_trait]`,
//!   a method's own `#[intercept]` and `#[cfg_attr(.., intercept(..))]`
//!   inside an annotated impl (merged: never intercepted twice).
//!
//! The server has `InterceptLayer`: the methods are named as on the wire
//! (`/echo.Echo/UnaryEcho`), also where the trait is imported.

use std::{marker::PhantomData, pin::Pin, time::Duration};

use async_stream::try_stream;
use interceptor_runtime::{intercept, stats, RpcKind};
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
use tonic::{service::Routes, transport::Channel, Code, Request, Response, Status, Streaming};

mod common;

mod pb {
    tonic::include_proto!("echo");
}

use pb::{echo_client::EchoClient, echo_server::Echo, EchoRequest, EchoResponse};

type EchoResult<T> = Result<Response<T>, Status>;
type ResponseStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

fn reply(message: impl Into<String>) -> EchoResponse {
    EchoResponse { message: message.into() }
}

/// tonic's streaming example, with every method implemented.
macro_rules! example_echo {
    ($name:ident, impl: [$(#[$attr:meta])*] $(,)?) => {
        #[derive(Debug, Default)]
        pub struct $name {}

        $(#[$attr])*
        #[tonic::async_trait]
        impl Echo for $name {
            async fn unary_echo(&self, request: Request<EchoRequest>) -> EchoResult<EchoResponse> {
                Ok(Response::new(reply(request.into_inner().message)))
            }

            type ServerStreamingEchoStream = ResponseStream;

            async fn server_streaming_echo(
                &self,
                req: Request<EchoRequest>,
            ) -> EchoResult<Self::ServerStreamingEchoStream> {
                let repeat = std::iter::repeat(reply(req.into_inner().message)).take(3);
                let mut stream = Box::pin(tokio_stream::iter(repeat).throttle(Duration::from_millis(1)));
                let (tx, rx) = mpsc::channel(128);
                tokio::spawn(async move {
                    while let Some(item) = stream.next().await {
                        if tx.send(Result::<_, Status>::Ok(item)).await.is_err() {
                            break; // the client went away
                        }
                    }
                });
                let output_stream = ReceiverStream::new(rx);
                Ok(Response::new(Box::pin(output_stream) as Self::ServerStreamingEchoStream))
            }

            async fn client_streaming_echo(
                &self,
                req: Request<Streaming<EchoRequest>>,
            ) -> EchoResult<EchoResponse> {
                let mut in_stream = req.into_inner();
                let mut joined = Vec::new();
                while let Some(message) = in_stream.message().await? {
                    joined.push(message.message);
                }
                Ok(Response::new(reply(joined.join(" "))))
            }

            type BidirectionalStreamingEchoStream = ResponseStream;

            async fn bidirectional_streaming_echo(
                &self,
                req: Request<Streaming<EchoRequest>>,
            ) -> EchoResult<Self::BidirectionalStreamingEchoStream> {
                let mut in_stream = req.into_inner();
                let (tx, rx) = mpsc::channel(128);
                tokio::spawn(async move {
                    while let Some(result) = in_stream.next().await {
                        let sent = match result {
                            Ok(v) => tx.send(Ok(reply(v.message))).await,
                            Err(err) => tx.send(Err(err)).await,
                        };
                        if sent.is_err() {
                            break; // the response was dropped
                        }
                    }
                });
                let out_stream = ReceiverStream::new(rx);
                Ok(Response::new(Box::pin(out_stream) as Self::BidirectionalStreamingEchoStream))
            }
        }
    };
}

example_echo! {
    ExampleEcho,
    impl: [#[intercept(monitor)]],
}

example_echo! {
    PlainExampleEcho,
    impl: [],
}

/// The three echoes of a server-streaming request.
fn three_echoes(request: Request<EchoRequest>) -> impl Stream<Item = Result<EchoResponse, Status>> {
    tokio_stream::iter(std::iter::repeat_n(reply(request.into_inner().message), 3)).map(Ok)
}

/// The words of an upload, joined. (In an intercepted handler the stream
/// is an `Inbound`.)
async fn joined<S>(request: Request<S>) -> EchoResult<EchoResponse>
where
    S: Stream<Item = Result<EchoRequest, Status>> + Unpin,
{
    let mut in_stream = request.into_inner();
    let mut words = Vec::new();
    while let Some(message) = in_stream.next().await.transpose()? {
        words.push(message.message);
    }
    Ok(Response::new(reply(words.join(" "))))
}

/// The echo of each note, from a task of its own through a channel.
fn relayed<S>(request: Request<S>) -> ReceiverStream<Result<EchoResponse, Status>>
where
    S: Stream<Item = Result<EchoRequest, Status>> + Unpin + Send + 'static,
{
    let mut in_stream = request.into_inner();
    let (tx, rx) = mpsc::channel(128);
    tokio::spawn(async move {
        while let Some(result) = in_stream.next().await {
            if tx.send(result.map(|v| reply(v.message))).await.is_err() {
                break;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The stream types written out in the signatures instead of
/// `Self::XStream` (the alias of a boxed stream, a concrete stream), which
/// the trait accepts as the same types.
macro_rules! written_out_echo {
    ($name:ident, above: [$(#[$above:meta])*], below: [$(#[$below:meta])*] $(,)?) => {
        #[derive(Debug, Default)]
        pub struct $name {}

        $(#[$above])*
        #[tonic::async_trait]
        $(#[$below])*
        impl Echo for $name {
            async fn unary_echo(&self, request: Request<EchoRequest>) -> EchoResult<EchoResponse> {
                Ok(Response::new(reply(request.into_inner().message)))
            }

            type ServerStreamingEchoStream = ResponseStream;

            async fn server_streaming_echo(&self, req: Request<EchoRequest>) -> EchoResult<ResponseStream> {
                Ok(Response::new(Box::pin(three_echoes(req)) as ResponseStream))
            }

            async fn client_streaming_echo(&self, req: Request<Streaming<EchoRequest>>) -> EchoResult<EchoResponse> {
                joined(req).await
            }

            type BidirectionalStreamingEchoStream = ReceiverStream<Result<EchoResponse, Status>>;

            async fn bidirectional_streaming_echo(
                &self,
                req: Request<Streaming<EchoRequest>>,
            ) -> Result<Response<ReceiverStream<Result<EchoResponse, Status>>>, Status> {
                Ok(Response::new(relayed(req)))
            }
        }
    };
}

written_out_echo! {
    WrittenOutEcho,
    above: [#[intercept(monitor, service = "fixture.WrittenOutEcho")]],
    below: [],
}

// The same with the attribute below `#[tonic::async_trait]`, which has
// already made each handler a `fn` returning a boxed future.
written_out_echo! {
    WrittenOutBelowEcho,
    above: [],
    below: [#[intercept(monitor, service = "fixture.WrittenOutBelowEcho")]],
}

/// The attribute on the streaming methods alone, whose stream types are
/// boxed streams that are also `Sync`.
#[derive(Debug, Default)]
pub struct SyncBoxEcho {}

type SyncResponseStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send + Sync>>;

#[tonic::async_trait]
impl Echo for SyncBoxEcho {
    async fn unary_echo(&self, request: Request<EchoRequest>) -> EchoResult<EchoResponse> {
        Ok(Response::new(reply(request.into_inner().message)))
    }

    type ServerStreamingEchoStream = SyncResponseStream;

    #[intercept(monitor, service = "fixture.SyncBoxEcho")]
    async fn server_streaming_echo(&self, req: Request<EchoRequest>) -> EchoResult<Self::ServerStreamingEchoStream> {
        Ok(Response::new(Box::pin(three_echoes(req)) as Self::ServerStreamingEchoStream))
    }

    async fn client_streaming_echo(&self, req: Request<Streaming<EchoRequest>>) -> EchoResult<EchoResponse> {
        joined(req).await
    }

    type BidirectionalStreamingEchoStream = SyncResponseStream;

    #[intercept(monitor, service = "fixture.SyncBoxEcho")]
    async fn bidirectional_streaming_echo(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> EchoResult<Self::BidirectionalStreamingEchoStream> {
        Ok(Response::new(Box::pin(relayed(req)) as Self::BidirectionalStreamingEchoStream))
    }
}

/// A generic impl, `tonic::Result`, concrete stream types.
macro_rules! generic_echo {
    (
        $name:ident,
        impl: [$(#[$attr:meta])*],
        below: [$(#[$below:meta])*],
        unary: [$(#[$unary:meta])*],
        client: [$(#[$client:meta])*],
        bidi: [$(#[$bidi:meta])*] $(,)?
    ) => {
        #[derive(Debug, Default)]
        pub struct $name<T> {
            _tag: PhantomData<fn() -> T>,
        }

        $(#[$attr])*
        #[tonic::async_trait]
        $(#[$below])*
        impl<T: Send + Sync + 'static> pb::echo_server::Echo for $name<T> {
            $(#[$unary])*
            async fn unary_echo(&self, request: Request<EchoRequest>) -> tonic::Result<Response<EchoResponse>> {
                Ok(Response::new(reply(request.into_inner().message)))
            }

            type ServerStreamingEchoStream = Pin<Box<dyn Stream<Item = tonic::Result<EchoResponse>> + Send>>;

            async fn server_streaming_echo(
                &self,
                request: Request<EchoRequest>,
            ) -> tonic::Result<Response<Self::ServerStreamingEchoStream>> {
                let message = request.into_inner().message;
                let replies = try_stream! {
                    for n in 0..3 {
                        yield reply(format!("{message} {n}"));
                    }
                };
                Ok(Response::new(Box::pin(replies)))
            }

            $(#[$client])*
            async fn client_streaming_echo(
                &self,
                request: Request<Streaming<EchoRequest>>,
            ) -> tonic::Result<Response<EchoResponse>> {
                let mut stream = request.into_inner();
                let mut joined = Vec::new();
                while let Some(message) = stream.message().await? {
                    joined.push(message.message);
                }
                Ok(Response::new(reply(joined.join(" "))))
            }

            type BidirectionalStreamingEchoStream = ReceiverStream<tonic::Result<EchoResponse>>;

            $(#[$bidi])*
            async fn bidirectional_streaming_echo(
                &self,
                request: Request<Streaming<EchoRequest>>,
            ) -> tonic::Result<Response<Self::BidirectionalStreamingEchoStream>> {
                let mut stream = request.into_inner();
                let (tx, rx) = mpsc::channel(4);
                tokio::spawn(async move {
                    while let Some(note) = stream.next().await {
                        if tx.send(note.map(|n| reply(n.message))).await.is_err() {
                            return;
                        }
                    }
                });
                Ok(Response::new(ReceiverStream::new(rx)))
            }
        }
    };
}

generic_echo! {
    GenericEcho,
    impl: [#[intercept(monitor, service = "fixture.GenericEcho")]],
    below: [],
    unary: [],
    client: [],
    bidi: [],
}

generic_echo! {
    PlainGenericEcho,
    impl: [],
    below: [],
    unary: [],
    client: [],
    bidi: [],
}

// The impl's attribute below `#[tonic::async_trait]`, with a method's own.
generic_echo! {
    BelowEcho,
    impl: [],
    below: [#[intercept(monitor, service = "fixture.BelowEcho")]],
    unary: [],
    client: [#[intercept(budget = 2)]],
    bidi: [],
}

// A method's own `#[intercept]` and `#[cfg_attr(.., intercept(..))]` in an
// annotated impl: merged into the impl's, the method expanded once (under
// each of the conditions).
generic_echo! {
    MergedEcho,
    impl: [#[intercept(monitor, service = "fixture.MergedEcho")]],
    below: [],
    unary: [#[intercept(rate = 1000)]],
    client: [#[cfg_attr(all(), intercept(budget = 2))]],
    bidi: [#[cfg_attr(any(), intercept(budget = 1))]],
}

async fn serve<S: Echo>(service: S) -> EchoClient<Channel> {
    let addr = common::serve_routes(Routes::new(pb::echo_server::EchoServer::new(service))).await;
    EchoClient::connect(format!("http://{addr}")).await.expect("the server accepts")
}

fn request(message: &str) -> EchoRequest {
    EchoRequest { message: message.into() }
}

fn outcome<T: std::fmt::Debug>(result: Result<T, Status>) -> String {
    match result {
        Ok(value) => format!("ok {value:?}"),
        Err(status) => format!("error {:?} {:?}", status.code(), status.message()),
    }
}

async fn drain(result: Result<Response<Streaming<EchoResponse>>, Status>) -> Vec<String> {
    let mut stream = match result {
        Ok(response) => response.into_inner(),
        Err(status) => return vec![outcome::<()>(Err(status))],
    };
    let mut seen = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(message)) => seen.push(message.message),
            Ok(None) => break seen.push("end".into()),
            Err(status) => break seen.push(outcome::<()>(Err(status))),
        }
    }
    seen
}

/// One call of each method; what came back.
async fn exercise(mut client: EchoClient<Channel>) -> Vec<String> {
    let within = Duration::from_secs(30);
    tokio::time::timeout(within, async move {
        let mut transcript = vec![outcome(client.unary_echo(request("hello")).await.map(Response::into_inner))];
        transcript.extend(drain(client.server_streaming_echo(request("again")).await).await);
        let words = tokio_stream::iter([request("one"), request("two"), request("three")]);
        transcript.push(outcome(client.client_streaming_echo(words).await.map(Response::into_inner)));
        let words = tokio_stream::iter([request("a"), request("b"), request("c")]);
        transcript.extend(drain(client.bidirectional_streaming_echo(words).await).await);
        transcript
    })
    .await
    .expect("the calls end in time")
}

/// The totals of `method` of the service `/service/`.
fn totals(service: &str, method: &str) -> stats::MethodSnapshot {
    let full_name = format!("{service}{method}");
    stats::method(&full_name).unwrap_or_else(|| panic!("no stats for {full_name}: {:#?}", stats::snapshot()))
}

/// Each method called once as `exercise` does: counted once, as its kind.
fn assert_counted(service: &str) {
    for (method, kind, received, sent) in [
        ("UnaryEcho", RpcKind::Unary, 1, 1),
        ("ServerStreamingEcho", RpcKind::ServerStreaming, 1, 3),
        ("ClientStreamingEcho", RpcKind::ClientStreaming, 3, 1),
        ("BidirectionalStreamingEcho", RpcKind::Bidi, 3, 3),
    ] {
        let seen = totals(service, method);
        assert_eq!(seen.kind, kind, "{service}{method}");
        assert_eq!(
            (seen.finished, seen.messages_received, seen.messages_sent),
            (1, received, sent),
            "{service}{method}"
        );
    }
}

// One test: the totals are process-wide.
#[tokio::test]
async fn real_tonic_shapes_compile_unchanged_answer_alike_and_are_counted() {
    // tonic's streaming example.
    let plain = exercise(serve(PlainExampleEcho::default()).await).await;
    let intercepted = exercise(serve(ExampleEcho::default()).await).await;
    assert_eq!(intercepted, plain);
    assert_eq!(
        plain,
        [
            "ok EchoResponse { message: \"hello\" }",
            "again",
            "again",
            "again",
            "end",
            "ok EchoResponse { message: \"one two three\" }",
            "a",
            "b",
            "c",
            "end"
        ]
    );
    // Its trait is imported: the names are still the wire's, read from the
    // requests, not guessed from the trait's name (`/Echo/..`).
    assert_counted("/echo.Echo/");
    assert!(stats::snapshot().iter().all(|m| !m.method.starts_with("/Echo/")), "{:#?}", stats::snapshot());

    // The stream types written out in the signatures.
    let written_out = exercise(serve(WrittenOutEcho::default()).await).await;
    assert_eq!(written_out, plain);
    assert_counted("/fixture.WrittenOutEcho/");
    let written_out = exercise(serve(WrittenOutBelowEcho::default()).await).await;
    assert_eq!(written_out, plain);
    assert_counted("/fixture.WrittenOutBelowEcho/");

    // On the methods alone, boxed streams that are `Sync` too.
    let sync_box = exercise(serve(SyncBoxEcho::default()).await).await;
    assert_eq!(sync_box, plain);
    for (method, sent) in [("ServerStreamingEcho", 3), ("BidirectionalStreamingEcho", 3)] {
        let seen = totals("/fixture.SyncBoxEcho/", method);
        assert_eq!((seen.finished, seen.messages_sent), (1, sent), "{method}");
    }

    // A generic impl, `tonic::Result`, concrete stream types.
    let plain = exercise(serve(PlainGenericEcho::<u8>::default()).await).await;
    let intercepted = exercise(serve(GenericEcho::<String>::default()).await).await;
    assert_eq!(intercepted, plain);
    assert_eq!(plain[1..5], ["again 0", "again 1", "again 2", "end"]);
    assert_counted("/fixture.GenericEcho/");

    // The impl's attribute below `#[tonic::async_trait]`, the method's own
    // merged into it: three messages against `budget = 2`.
    let below = exercise(serve(BelowEcho::<()>::default()).await).await;
    assert_eq!(below[..5], plain[..5]);
    assert_eq!(below[5], "error ResourceExhausted \"budget: 2 messages per stream used up (recv)\"");
    assert_eq!(below[6..], plain[6..]);
    let upload = totals("/fixture.BelowEcho/", "ClientStreamingEcho");
    assert_eq!((upload.finished, upload.code(Code::ResourceExhausted)), (1, 1));
    assert_eq!(totals("/fixture.BelowEcho/", "UnaryEcho").finished, 1, "intercepted once");

    // `cfg_attr(all(), intercept(budget = 2))` applies, `cfg_attr(any(), ..)`
    // does not; each call is counted once (not twice, as an attribute
    // applied again would).
    let merged = exercise(serve(MergedEcho::<()>::default()).await).await;
    assert_eq!(merged, below);
    for method in ["UnaryEcho", "ServerStreamingEcho", "ClientStreamingEcho", "BidirectionalStreamingEcho"] {
        assert_eq!(totals("/fixture.MergedEcho/", method).finished, 1, "{method} intercepted once");
    }
    let chat = totals("/fixture.MergedEcho/", "BidirectionalStreamingEcho");
    assert_eq!((chat.messages_received, chat.messages_sent, chat.code(Code::Ok)), (3, 3, 1));
}
