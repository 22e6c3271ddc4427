//! Handlers with `#[tracing::instrument]`, as services that log write them:
//! the parameters named in `skip(..)` and `fields(..)` are the handler's
//! own, so `#[intercept]` must leave them where they were. Three positions
//! of the attribute: on the impl above `#[tonic::async_trait]`, below it,
//! and on each method (above `#[tracing::instrument]`). Each serves tonic's
//! echo on 127.0.0.1 and must answer every kind of call and count it.

use std::pin::Pin;

use interceptor_runtime::{intercept, stats};
use tokio_stream::{Stream, StreamExt};
use tonic::{service::Routes, transport::Channel, Request, Response, Status, Streaming};

mod common;

use common::{eventually, in_real_time, serve_routes};

mod pb {
    tonic::include_proto!("echo");
}

use pb::{
    echo_client::EchoClient,
    echo_server::{Echo, EchoServer},
    EchoRequest, EchoResponse,
};

type ResponseStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

fn reply(message: String) -> EchoResponse {
    EchoResponse { message }
}

/// The echo, each handler instrumented in another common way; `$method`
/// goes above each handler's `#[tracing::instrument]`.
macro_rules! instrumented_echo {
    ($name:ident, above: [$(#[$above:meta])*], below: [$(#[$below:meta])*], method: [$(#[$method:meta])*] $(,)?) => {
        #[derive(Debug)]
        pub struct $name;

        $(#[$above])*
        #[tonic::async_trait]
        $(#[$below])*
        impl Echo for $name {
            /// The parameters recorded, but `self`.
            $(#[$method])*
            #[tracing::instrument(skip(self))]
            async fn unary_echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
                tracing::info!("answering");
                Ok(Response::new(reply(request.into_inner().message)))
            }

            type ServerStreamingEchoStream = ResponseStream;

            /// A field computed from the request.
            $(#[$method])*
            #[tracing::instrument(skip_all, fields(message = %req.get_ref().message))]
            async fn server_streaming_echo(
                &self,
                req: Request<EchoRequest>,
            ) -> Result<Response<Self::ServerStreamingEchoStream>, Status> {
                let replies = std::iter::repeat_n(Ok(reply(req.into_inner().message)), 3);
                Ok(Response::new(Box::pin(tokio_stream::iter(replies)) as Self::ServerStreamingEchoStream))
            }

            /// The request skipped by name, errors recorded, a `mut` pattern.
            $(#[$method])*
            #[tracing::instrument(skip(self, request), err)]
            async fn client_streaming_echo(
                &self,
                mut request: Request<Streaming<EchoRequest>>,
            ) -> Result<Response<EchoResponse>, Status> {
                let stream = request.get_mut();
                let mut joined = Vec::new();
                while let Some(message) = stream.message().await? {
                    joined.push(message.message);
                }
                Ok(Response::new(reply(joined.join(" "))))
            }

            type BidirectionalStreamingEchoStream = ResponseStream;

            /// Another level, the request skipped by name.
            $(#[$method])*
            #[tracing::instrument(level = "debug", skip(self, notes))]
            async fn bidirectional_streaming_echo(
                &self,
                notes: Request<Streaming<EchoRequest>>,
            ) -> Result<Response<Self::BidirectionalStreamingEchoStream>, Status> {
                let echoes = notes.into_inner().map(|note| note.map(|note| reply(note.message)));
                Ok(Response::new(Box::pin(echoes) as Self::BidirectionalStreamingEchoStream))
            }
        }
    };
}

instrumented_echo!(Above, above: [#[intercept(monitor, service = "traced.Above")]], below: [], method: []);
instrumented_echo!(Below, above: [], below: [#[intercept(monitor, service = "traced.Below")]], method: []);
instrumented_echo!(OnMethods, above: [], below: [], method: [#[intercept(monitor, service = "traced.OnMethods")]]);

async fn serve<S: Echo>(service: S) -> EchoClient<Channel> {
    let addr = serve_routes(Routes::new(EchoServer::new(service))).await;
    EchoClient::connect(format!("http://{addr}")).await.expect("the server accepts")
}

fn request(message: &str) -> EchoRequest {
    EchoRequest { message: message.into() }
}

/// One call of each kind, answered in full.
async fn exercise(mut client: EchoClient<Channel>) {
    let answer = client.unary_echo(request("hello")).await.expect("unary");
    assert_eq!(answer.into_inner().message, "hello");
    let mut replies = client.server_streaming_echo(request("again")).await.expect("server streaming").into_inner();
    let mut count = 0;
    while replies.message().await.expect("a reply").is_some() {
        count += 1;
    }
    assert_eq!(count, 3);
    let words = tokio_stream::iter([request("one"), request("two")]);
    let joined = client.client_streaming_echo(words).await.expect("client streaming");
    assert_eq!(joined.into_inner().message, "one two");
    let notes = tokio_stream::iter([request("a"), request("b"), request("c")]);
    let mut echoes = client.bidirectional_streaming_echo(notes).await.expect("bidi").into_inner();
    let mut count = 0;
    while echoes.message().await.expect("an echo").is_some() {
        count += 1;
    }
    assert_eq!(count, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instrumented_handlers_keep_their_parameters() {
    in_real_time(async {
        exercise(serve(Above).await).await;
        exercise(serve(Below).await).await;
        exercise(serve(OnMethods).await).await;
        for service in ["traced.Above", "traced.Below", "traced.OnMethods"] {
            for (method, received, sent) in [
                ("UnaryEcho", 1, 1),
                ("ServerStreamingEcho", 1, 3),
                ("ClientStreamingEcho", 2, 1),
                ("BidirectionalStreamingEcho", 3, 3),
            ] {
                let name = format!("/{service}/{method}");
                let totals = || stats::method(&name);
                eventually(&format!("{name} ended"), || totals().is_some_and(|t| t.finished == 1)).await;
                let totals = totals().expect("its totals");
                assert_eq!((totals.messages_received, totals.messages_sent), (received, sent), "{name}");
            }
        }
    })
    .await;
}
