//! tonic's own guards on a server, with `#[intercept]` on its handlers: the
//! message size limits (`max_decoding_message_size`,
//! `max_encoding_message_size`), the client's deadline (`grpc-timeout`, which
//! tonic's server enforces) and a tonic `Interceptor`
//! (`EchoServer::with_interceptor`). The client must get what it gets from
//! the same service without the attribute, and the call must end, for the
//! handler and in the stats, as the client saw it.
//!
//! Two cases to watch, where tonic drops what the engine watches before its
//! end, which looks like a client that went away:
//! - a response message over the encoding limit: tonic's encoder sends
//!   OUT_OF_RANGE in the trailers and drops the response stream (the layer
//!   sees the trailers);
//! - a handler still running at the client's deadline: tonic drops it and
//!   answers CANCELLED "Timeout expired" (the layer keeps the deadline).
//!
//! The echo service is tonic's streaming example's, served on 127.0.0.1
//! with `InterceptLayer`, and called by a tonic client.

mod common;

use std::{pin::Pin, time::Duration};

use common::{eventually, in_real_time};
use interceptor_runtime::{intercept, stats, CallContext, CallRef, InterceptLayer};
use tokio::sync::mpsc;
use tokio_stream::{
    wrappers::{ReceiverStream, TcpListenerStream},
    Stream, StreamExt,
};
use tonic::{transport::Channel, Code, Request, Response, Status, Streaming};

mod pb {
    tonic::include_proto!("echo");
}

use pb::{
    echo_client::EchoClient,
    echo_server::{Echo, EchoServer},
    EchoRequest, EchoResponse,
};

type EchoResult<T> = Result<Response<T>, Status>;
type ResponseStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

/// The limit both ways, in bytes.
const LIMIT: usize = 64;

/// A request that asks for a reply over [`LIMIT`].
const ASK_BIG: &str = "big";

/// A request the handler takes longer to answer than any client waits.
const SLOW: &str = "slow";

/// The echo of `message`: over [`LIMIT`] when it is [`ASK_BIG`].
fn reply(message: String) -> EchoResponse {
    let message = if message == ASK_BIG { "r".repeat(2 * LIMIT) } else { message };
    EchoResponse { message }
}

/// A request of `size` bytes' worth of text.
fn sized(size: usize) -> EchoRequest {
    EchoRequest { message: "q".repeat(size) }
}

fn request(message: &str) -> EchoRequest {
    EchoRequest { message: message.into() }
}

/// The echo service as tonic's streaming example writes it. Each streaming
/// handler reports how its inbound stream ended (`end`, or the status it
/// yielded) on `ends`.
macro_rules! echo_service {
    ($name:ident, [$(#[$attr:meta])*]) => {
        pub struct $name {
            ends: mpsc::UnboundedSender<String>,
            calls: mpsc::UnboundedSender<CallRef>,
        }

        impl $name {
            /// A call asked to be slow ([`SLOW`]): it is reported, and
            /// outlasts any deadline of the tests.
            async fn outlast(&self, call: Option<CallRef>) {
                if let Some(call) = call {
                    let _ = self.calls.send(call);
                }
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }

        $(#[$attr])*
        #[tonic::async_trait]
        impl Echo for $name {
            async fn unary_echo(&self, request: Request<EchoRequest>) -> EchoResult<EchoResponse> {
                if request.get_ref().message == SLOW {
                    self.outlast(CallContext::of(&request)).await;
                }
                Ok(Response::new(reply(request.into_inner().message)))
            }

            type ServerStreamingEchoStream = ResponseStream;

            async fn server_streaming_echo(
                &self,
                request: Request<EchoRequest>,
            ) -> EchoResult<Self::ServerStreamingEchoStream> {
                let replies = [reply("first".into()), reply(request.into_inner().message), reply("last".into())];
                Ok(Response::new(Box::pin(tokio_stream::iter(replies).map(Ok)) as Self::ServerStreamingEchoStream))
            }

            async fn client_streaming_echo(
                &self,
                request: Request<Streaming<EchoRequest>>,
            ) -> EchoResult<EchoResponse> {
                let call = CallContext::of(&request);
                let mut in_stream = request.into_inner();
                let mut joined = Vec::new();
                let ended = loop {
                    match in_stream.message().await {
                        Ok(Some(message)) if message.message == SLOW => self.outlast(call.clone()).await,
                        Ok(Some(message)) => joined.push(message.message),
                        Ok(None) => break Ok(()),
                        Err(status) => break Err(status),
                    }
                };
                let _ = self.ends.send(seen(&ended));
                ended?;
                Ok(Response::new(reply(joined.join(" "))))
            }

            type BidirectionalStreamingEchoStream = ResponseStream;

            async fn bidirectional_streaming_echo(
                &self,
                request: Request<Streaming<EchoRequest>>,
            ) -> EchoResult<Self::BidirectionalStreamingEchoStream> {
                let mut in_stream = request.into_inner();
                let (tx, rx) = mpsc::channel(128);
                let ends = self.ends.clone();
                tokio::spawn(async move {
                    let ended = loop {
                        match in_stream.next().await {
                            Some(Ok(message)) => {
                                // The response may be gone: read on all the same.
                                let _ = tx.send(Ok(reply(message.message))).await;
                            }
                            Some(Err(status)) => {
                                let _ = tx.send(Err(status.clone())).await;
                                break Err(status);
                            }
                            None => break Ok(()),
                        }
                    };
                    let _ = ends.send(seen(&ended));
                });
                let out_stream = ReceiverStream::new(rx);
                Ok(Response::new(Box::pin(out_stream) as Self::BidirectionalStreamingEchoStream))
            }
        }
    };
}

echo_service!(Intercepted, [#[intercept(monitor, service = "limits.Echo")]]);
echo_service!(Guarded, [#[intercept(monitor, service = "limits.Guarded")]]);
echo_service!(Bare, [#[intercept(monitor, service = "limits.Bare")]]);
echo_service!(Late, [#[intercept(monitor, service = "limits.Late")]]);
echo_service!(Plain, []);

/// How a stream ended, as the tests compare it.
fn seen<T>(ended: &Result<T, Status>) -> String {
    match ended {
        Ok(_) => "end".into(),
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    }
}

/// What the handlers report about their inbound streams.
type Ends = mpsc::UnboundedReceiver<String>;

/// What the handlers report: how their inbound streams ended, and the
/// calls they were asked to be slow in.
struct Reports {
    ends: Ends,
    calls: mpsc::UnboundedReceiver<CallRef>,
}

/// Serves the service `make` makes from the channels it reports on, with
/// both size limits, or behind a tonic `Interceptor` that wants an
/// `authorization` header.
async fn serve<S: Echo>(
    make: impl FnOnce(mpsc::UnboundedSender<String>, mpsc::UnboundedSender<CallRef>) -> S,
    guard: Guard,
) -> (EchoClient<Channel>, Reports) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let (ends, ended) = mpsc::unbounded_channel();
    let (calls, called) = mpsc::unbounded_channel();
    let make = move |ends| make(ends, calls);
    let mut server = tonic::transport::Server::builder().layer(InterceptLayer::new());
    let incoming = TcpListenerStream::new(listener);
    match guard {
        Guard::SizeLimits => tokio::spawn(
            server
                .add_service(
                    EchoServer::new(make(ends)).max_decoding_message_size(LIMIT).max_encoding_message_size(LIMIT),
                )
                .serve_with_incoming(incoming),
        ),
        Guard::Interceptor => tokio::spawn(
            server.add_service(EchoServer::with_interceptor(make(ends), authorized)).serve_with_incoming(incoming),
        ),
        Guard::SizeLimitsWithoutTheLayer => tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(EchoServer::new(make(ends)).max_encoding_message_size(LIMIT))
                .serve_with_incoming(incoming),
        ),
    };
    let client = EchoClient::connect(format!("http://{addr}")).await.expect("the server accepts");
    (client, Reports { ends: ended, calls: called })
}

#[derive(Clone, Copy)]
enum Guard {
    SizeLimits,
    Interceptor,
    /// The size limits, on a server without `InterceptLayer`.
    SizeLimitsWithoutTheLayer,
}

/// A tonic `Interceptor`: calls without an `authorization` header go no
/// further.
fn authorized(request: Request<()>) -> Result<Request<()>, Status> {
    match request.metadata().get("authorization") {
        Some(_) => Ok(request),
        None => Err(Status::unauthenticated("no token")),
    }
}

/// What the client got from a unary or client-streaming call.
fn got<T>(result: Result<Response<T>, Status>) -> String {
    seen(&result)
}

/// What the client got from a streaming response: the messages' sizes, then
/// its end.
async fn got_stream(result: Result<Response<Streaming<EchoResponse>>, Status>) -> Vec<String> {
    let mut stream = match result {
        Ok(response) => response.into_inner(),
        Err(status) => return vec![seen::<()>(&Err(status))],
    };
    let mut got = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(message)) => got.push(format!("{} B", message.message.len())),
            ended => break got.push(seen(&ended)),
        }
    }
    got
}

/// The totals of `method` of the service `/service/`, if it had a call.
fn totals(service: &str, method: &str) -> Option<stats::MethodSnapshot> {
    stats::method(&format!("{service}{method}"))
}

/// How many calls of `method` of `/service/` have ended.
fn finished(service: &str, method: &str) -> u64 {
    totals(service, method).map_or(0, |totals| totals.finished)
}

/// Each call with a message over the limits: what the client got, and what
/// the handlers saw of their inbound streams.
async fn over_the_limits(mut client: EchoClient<Channel>, ends: &mut Ends) -> Vec<String> {
    let mut transcript = Vec::new();
    // Requests over the decoding limit.
    transcript.push(got(client.unary_echo(sized(2 * LIMIT)).await));
    transcript.extend(got_stream(client.server_streaming_echo(sized(2 * LIMIT)).await).await);
    let uploads = tokio_stream::iter([request("one"), sized(2 * LIMIT), request("three")]);
    transcript.push(got(client.client_streaming_echo(uploads).await));
    transcript.push(format!("handler: {}", ends.recv().await.expect("the handler's report")));
    let uploads = tokio_stream::iter([request("a"), sized(2 * LIMIT), request("c")]);
    transcript.extend(got_stream(client.bidirectional_streaming_echo(uploads).await).await);
    transcript.push(format!("handler: {}", ends.recv().await.expect("the handler's report")));
    // Replies over the encoding limit.
    transcript.push(got(client.unary_echo(request(ASK_BIG)).await));
    transcript.extend(got_stream(client.server_streaming_echo(request(ASK_BIG)).await).await);
    // (Whether the handler then sees the end of its stream or the call's
    // end first is a race.)
    let uploads = tokio_stream::iter([request(ASK_BIG)]);
    transcript.extend(got_stream(client.bidirectional_streaming_echo(uploads).await).await);
    transcript
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_tonics_size_limits_end_the_call_as_the_client_saw_it() {
    in_real_time(async {
        let (client, mut reports) = serve(|ends, calls| Plain { ends, calls }, Guard::SizeLimits).await;
        let plain = over_the_limits(client, &mut reports.ends).await;
        let (client, mut reports) = serve(|ends, calls| Intercepted { ends, calls }, Guard::SizeLimits).await;
        let intercepted = over_the_limits(client, &mut reports.ends).await;
        assert_eq!(intercepted, plain, "the attribute changes nothing a client or handler sees");

        let decoding = "OutOfRange: Error, decoded message length too large: found 131 bytes, the limit is: 64 bytes";
        let encoding = "OutOfRange: Error, encoded message length too large: found 131 bytes, the limit is: 64 bytes";
        assert_eq!(
            plain,
            [
                // tonic refuses the request before any handler runs.
                decoding,
                decoding,
                // The handlers see it on their inbound streams; tonic's
                // encoder drops what it had buffered with the reply too big.
                decoding,
                &format!("handler: {decoding}"),
                "1 B",
                decoding,
                &format!("handler: {decoding}"),
                encoding,
                encoding,
                encoding,
            ]
        );

        // Only calls whose handler ran are calls the interceptors saw; each
        // ended OUT_OF_RANGE, the response streams' too.
        let expected = [
            ("UnaryEcho", 1),
            ("ServerStreamingEcho", 1),
            ("ClientStreamingEcho", 1),
            ("BidirectionalStreamingEcho", 2),
        ];
        for (method, calls) in expected {
            eventually(&format!("{method}'s calls ended"), || finished("/limits.Echo/", method) == calls).await;
            let seen = totals("/limits.Echo/", method).expect("its totals");
            assert_eq!((seen.started, seen.code(Code::OutOfRange)), (calls, calls), "{method}: {seen:#?}");
        }
        // The server stream yielded its first reply and the one too big;
        // tonic's encoder dropped both, and both count as sent.
        assert_eq!(totals("/limits.Echo/", "ServerStreamingEcho").expect("its totals").messages_sent, 2);
    })
    .await;
}

/// One call of each method without a token, then one with.
async fn knock(mut client: EchoClient<Channel>) -> Vec<String> {
    let mut transcript = vec![got(client.unary_echo(request("x")).await)];
    transcript.extend(got_stream(client.server_streaming_echo(request("x")).await).await);
    transcript.push(got(client.client_streaming_echo(tokio_stream::iter([request("x")])).await));
    transcript.extend(got_stream(client.bidirectional_streaming_echo(tokio_stream::iter([request("x")])).await).await);
    let mut with_token = Request::new(request("x"));
    with_token.metadata_mut().insert("authorization", "Bearer t".parse().expect("a header value"));
    transcript.push(got(client.unary_echo(with_token).await));
    transcript
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_tonics_interceptor_refuses_never_starts() {
    in_real_time(async {
        let plain = knock(serve(|ends, calls| Plain { ends, calls }, Guard::Interceptor).await.0).await;
        let intercepted = knock(serve(|ends, calls| Guarded { ends, calls }, Guard::Interceptor).await.0).await;
        assert_eq!(intercepted, plain);
        let refused = "Unauthenticated: no token";
        assert_eq!(plain, [refused, refused, refused, refused, "end"]);

        eventually("the call with a token ended", || finished("/limits.Guarded/", "UnaryEcho") == 1).await;
        let unary = totals("/limits.Guarded/", "UnaryEcho").expect("its totals");
        assert_eq!((unary.started, unary.code(Code::Ok)), (1, 1));
        for method in ["ServerStreamingEcho", "ClientStreamingEcho", "BidirectionalStreamingEcho"] {
            assert!(totals("/limits.Guarded/", method).is_none(), "{method} had no call");
        }
    })
    .await;
}

/// What the README says the layer is needed for: without it, a reply tonic
/// refuses counts as what the handler returned, or as a client gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_layer_a_refused_reply_is_not_seen() {
    in_real_time(async {
        let (mut client, _reports) = serve(|ends, calls| Bare { ends, calls }, Guard::SizeLimitsWithoutTheLayer).await;
        let encoding = "OutOfRange: Error, encoded message length too large: found 131 bytes, the limit is: 64 bytes";
        assert_eq!(got(client.unary_echo(request(ASK_BIG)).await), encoding);
        assert_eq!(got_stream(client.server_streaming_echo(request(ASK_BIG)).await).await, [encoding]);

        eventually("both calls ended", || {
            finished("/limits.Bare/", "UnaryEcho") == 1 && finished("/limits.Bare/", "ServerStreamingEcho") == 1
        })
        .await;
        assert_eq!(totals("/limits.Bare/", "UnaryEcho").expect("its totals").code(Code::Ok), 1);
        assert_eq!(totals("/limits.Bare/", "ServerStreamingEcho").expect("its totals").code(Code::Cancelled), 1);
    })
    .await;
}

/// Slow calls whose client set a deadline (`grpc-timeout`).
async fn past_the_deadline(mut client: EchoClient<Channel>) -> Vec<String> {
    let deadline = Duration::from_millis(50);
    let mut unary = Request::new(request(SLOW));
    unary.set_timeout(deadline);
    let mut upload = Request::new(tokio_stream::iter([request("one"), request(SLOW)]));
    upload.set_timeout(deadline);
    vec![got(client.unary_echo(unary).await), got(client.client_streaming_echo(upload).await)]
}

/// tonic's server drops a handler still running when its client's deadline
/// passes: the call ends with what the client was told, not as a client
/// that went away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_past_its_clients_deadline_ends_as_tonic_says() {
    in_real_time(async {
        let plain = past_the_deadline(serve(|ends, calls| Plain { ends, calls }, Guard::SizeLimits).await.0).await;
        let (client, mut reports) = serve(|ends, calls| Late { ends, calls }, Guard::SizeLimits).await;
        let intercepted = past_the_deadline(client).await;
        assert_eq!(intercepted, plain);
        assert_eq!(plain, ["Cancelled: Timeout expired", "Cancelled: Timeout expired"]);
        for _ in 0..2 {
            let call = reports.calls.recv().await.expect("a slow call");
            eventually("the slow call ended", || call.outcome().is_some()).await;
            let outcome = call.outcome().expect("its outcome");
            assert_eq!(
                (outcome.code, outcome.message.as_str()),
                (Code::Cancelled, "Timeout expired"),
                "{}",
                call.method().full_name
            );
        }

        // A client that goes away before its deadline is one that went away.
        let mut unary = Request::new(request(SLOW));
        unary.set_timeout(Duration::from_secs(60));
        let (mut client, mut reports) = serve(|ends, calls| Late { ends, calls }, Guard::SizeLimits).await;
        let waiting = tokio::spawn(async move { client.unary_echo(unary).await });
        let call = reports.calls.recv().await.expect("the slow call");
        waiting.abort();
        eventually("the abandoned call ended", || call.outcome().is_some()).await;
        let outcome = call.outcome().expect("its outcome");
        assert_eq!((outcome.code, outcome.message.as_str()), (Code::Cancelled, "the client went away"));
    })
    .await;
}
