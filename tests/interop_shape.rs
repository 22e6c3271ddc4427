//! A service written as tonic's interop server writes gRPC's `TestService`
//! (`interop/src/server_prost.rs` in the tonic repository): the request and
//! return types through aliases (`type Result<T>`, `type Streaming<T>`,
//! `std::result::Result as StdResult`), the response streams an alias of a
//! boxed stream (`type Stream<T>`) made with `async_stream::try_stream!` and
//! returned as `Box::pin(s) as Self::FullDuplexCallStream`.
//!
//! The same impl is stamped twice, with `#[intercept(..)]` above
//! `#[tonic::async_trait]` and without; both are served on 127.0.0.1 and a
//! tonic client must get the same answers from each. The intercepted one must
//! have counted every message, under the right RPC kind.

use std::{net::SocketAddr, pin::Pin, result::Result as StdResult, time::Duration};

use async_stream::try_stream;
use interceptor_runtime::{stats, RpcKind};
use tokio_stream::{wrappers::TcpListenerStream, StreamExt};
use tonic::{transport::Channel, Code, Request, Response, Status};

mod pb {
    tonic::include_proto!("interop");
}

use pb::{
    test_service_client::TestServiceClient, test_service_server::TestServiceServer, EchoStatus, Empty, Payload,
    ResponseParameters, SimpleRequest, SimpleResponse, StreamingInputCallRequest, StreamingInputCallResponse,
    StreamingOutputCallRequest, StreamingOutputCallResponse,
};

type Result<T> = StdResult<Response<T>, Status>;
type Streaming<T> = Request<tonic::Streaming<T>>;
type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = StdResult<T, Status>> + Send + 'static>>;

fn payload(size: i32) -> Payload {
    Payload { body: vec![0; size.max(0) as usize] }
}

fn status_of(echo: EchoStatus) -> Status {
    Status::new(Code::from_i32(echo.code), echo.message)
}

/// Defines `$name`, the test service, with `$attr` above the impl and
/// `$duplex` on `full_duplex_call`.
macro_rules! test_service {
    ($name:ident, impl: [$(#[$attr:meta])*], full_duplex: [$(#[$duplex:meta])*] $(,)?) => {
        #[derive(Clone, Default)]
        pub struct $name;

        $(#[$attr])*
        #[tonic::async_trait]
        impl pb::test_service_server::TestService for $name {
            async fn empty_call(&self, _request: Request<Empty>) -> Result<Empty> {
                Ok(Response::new(Empty {}))
            }

            async fn unary_call(&self, request: Request<SimpleRequest>) -> Result<SimpleResponse> {
                let request = request.into_inner();
                if let Some(echo) = request.response_status {
                    return Err(status_of(echo));
                }
                if request.response_size < 0 {
                    return Err(Status::invalid_argument("response_size cannot be negative"));
                }
                Ok(Response::new(SimpleResponse { payload: Some(payload(request.response_size)) }))
            }

            type StreamingOutputCallStream = Stream<StreamingOutputCallResponse>;

            async fn streaming_output_call(
                &self,
                request: Request<StreamingOutputCallRequest>,
            ) -> Result<Self::StreamingOutputCallStream> {
                let parameters = request.into_inner().response_parameters;
                let replies = try_stream! {
                    for parameter in parameters {
                        tokio::time::sleep(Duration::from_micros(parameter.interval_us as u64)).await;
                        yield StreamingOutputCallResponse { payload: Some(payload(parameter.size)) };
                    }
                };
                Ok(Response::new(Box::pin(replies) as Self::StreamingOutputCallStream))
            }

            async fn streaming_input_call(
                &self,
                request: Streaming<StreamingInputCallRequest>,
            ) -> Result<StreamingInputCallResponse> {
                let mut stream = request.into_inner();
                let mut aggregated_payload_size = 0;
                while let Some(message) = stream.try_next().await? {
                    aggregated_payload_size += message.payload.map_or(0, |p| p.body.len() as i32);
                }
                Ok(Response::new(StreamingInputCallResponse { aggregated_payload_size }))
            }

            type FullDuplexCallStream = Stream<StreamingOutputCallResponse>;

            $(#[$duplex])*
            async fn full_duplex_call(
                &self,
                request: Streaming<StreamingOutputCallRequest>,
            ) -> Result<Self::FullDuplexCallStream> {
                let mut stream = request.into_inner();
                let Some(first) = stream.message().await? else {
                    return Ok(Response::new(Box::pin(tokio_stream::empty()) as Self::FullDuplexCallStream));
                };
                if let Some(echo) = first.response_status {
                    return Err(status_of(echo));
                }
                let mut stream = tokio_stream::once(Ok(first)).chain(stream);
                let replies = try_stream! {
                    while let Some(message) = stream.try_next().await? {
                        if let Some(echo) = message.response_status {
                            Err(status_of(echo))?;
                        }
                        for parameter in message.response_parameters {
                            yield StreamingOutputCallResponse { payload: Some(payload(parameter.size)) };
                        }
                    }
                };
                Ok(Response::new(Box::pin(replies) as Self::FullDuplexCallStream))
            }

            type HalfDuplexCallStream = Stream<StreamingOutputCallResponse>;

            async fn half_duplex_call(
                &self,
                _: Streaming<StreamingOutputCallRequest>,
            ) -> Result<Self::HalfDuplexCallStream> {
                Err(Status::unimplemented("TODO"))
            }

            async fn unimplemented_call(&self, _: Request<Empty>) -> Result<Empty> {
                Err(Status::unimplemented(""))
            }
        }
    };
}

test_service! {
    Intercepted,
    impl: [#[interceptor_runtime::intercept(monitor)]],
    full_duplex: [#[interceptor_runtime::intercept(budget(messages = 100))]],
}

test_service! {
    Plain,
    impl: [],
    full_duplex: [],
}

async fn serve<S: pb::test_service_server::TestService>(service: S) -> TestServiceClient<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr: SocketAddr = listener.local_addr().expect("its address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TestServiceServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    TestServiceClient::connect(format!("http://{addr}")).await.expect("the server accepts")
}

/// A call's outcome as the client saw it.
fn outcome<T: std::fmt::Debug>(result: StdResult<T, Status>) -> String {
    match result {
        Ok(value) => format!("ok {value:?}"),
        Err(status) => format!("error {:?} {:?}", status.code(), status.message()),
    }
}

/// Reads a response stream to its end: the messages, then how it ended.
async fn drain<T: std::fmt::Debug>(result: StdResult<Response<tonic::Streaming<T>>, Status>) -> Vec<String> {
    let mut stream = match result {
        Ok(response) => response.into_inner(),
        Err(status) => return vec![outcome::<()>(Err(status))],
    };
    let mut seen = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(message)) => seen.push(format!("{message:?}")),
            Ok(None) => break seen.push("end".into()),
            Err(status) => break seen.push(outcome::<()>(Err(status))),
        }
    }
    seen
}

fn duplex(sizes: &[i32]) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: sizes.iter().map(|&size| ResponseParameters { size, interval_us: 10 }).collect(),
        ..Default::default()
    }
}

fn input(size: i32) -> StreamingInputCallRequest {
    StreamingInputCallRequest { payload: Some(payload(size)) }
}

/// Every method, as the interop client would call them; the transcript of
/// what came back.
async fn exercise(mut client: TestServiceClient<Channel>) -> Vec<String> {
    let mut transcript = Vec::new();
    transcript.push(outcome(client.empty_call(Empty {}).await.map(Response::into_inner)));
    let sized = SimpleRequest { response_size: 5, ..Default::default() };
    transcript.push(outcome(client.unary_call(sized).await.map(Response::into_inner)));
    let failing = SimpleRequest {
        response_status: Some(EchoStatus { code: Code::InvalidArgument as i32, message: "asked to fail".into() }),
        ..Default::default()
    };
    transcript.push(outcome(client.unary_call(failing).await.map(Response::into_inner)));
    transcript.extend(drain(client.streaming_output_call(duplex(&[1, 2, 3])).await).await);
    let uploads = tokio_stream::iter([input(10), input(20), input(30)]);
    transcript.push(outcome(client.streaming_input_call(uploads).await.map(Response::into_inner)));
    let chat = tokio_stream::iter([duplex(&[4, 5]), duplex(&[6, 7])]);
    transcript.extend(drain(client.full_duplex_call(chat).await).await);
    let refused = StreamingOutputCallRequest {
        response_status: Some(EchoStatus { code: Code::Aborted as i32, message: "first one fails".into() }),
        ..Default::default()
    };
    transcript.extend(drain(client.full_duplex_call(tokio_stream::iter([refused])).await).await);
    let mid = StreamingOutputCallRequest {
        response_status: Some(EchoStatus { code: Code::DataLoss as i32, message: "second one fails".into() }),
        ..Default::default()
    };
    transcript.extend(drain(client.full_duplex_call(tokio_stream::iter([duplex(&[8]), mid])).await).await);
    transcript.extend(drain(client.full_duplex_call(tokio_stream::empty()).await).await);
    transcript.extend(drain(client.half_duplex_call(tokio_stream::iter([duplex(&[1])])).await).await);
    transcript.push(outcome(client.unimplemented_call(Empty {}).await.map(Response::into_inner)));
    transcript
}

fn totals(method: &str) -> stats::MethodSnapshot {
    stats::method(&format!("/interop.TestService/{method}")).unwrap_or_else(|| panic!("no stats for {method}"))
}

#[tokio::test]
async fn the_interop_server_as_tonic_writes_it_answers_alike_and_is_counted() {
    let within = Duration::from_secs(60);
    let plain = tokio::time::timeout(within, async { exercise(serve(Plain).await).await }).await.expect("in time");
    let intercepted =
        tokio::time::timeout(within, async { exercise(serve(Intercepted).await).await }).await.expect("in time");
    assert_eq!(intercepted, plain, "the intercepted server answers as the plain one");
    // What the plain server answered is what tonic's interop server answers.
    assert!(plain[1].contains("body: [0, 0, 0, 0, 0]"), "{plain:?}");
    assert_eq!(plain[2], "error InvalidArgument \"asked to fail\"");
    assert!(plain.contains(&"ok StreamingInputCallResponse { aggregated_payload_size: 60 }".to_string()), "{plain:?}");
    assert!(plain.contains(&"error Aborted \"first one fails\"".to_string()), "{plain:?}");
    assert!(plain.contains(&"error DataLoss \"second one fails\"".to_string()), "{plain:?}");
    assert!(plain.contains(&"error Unimplemented \"TODO\"".to_string()), "{plain:?}");

    // Every call was counted, under the kind the compiler found for it.
    let kinds = [
        ("EmptyCall", RpcKind::Unary, 1, 1, 1),
        ("UnaryCall", RpcKind::Unary, 2, 2, 1),
        ("StreamingOutputCall", RpcKind::ServerStreaming, 1, 1, 3),
        ("StreamingInputCall", RpcKind::ClientStreaming, 1, 3, 1),
        ("FullDuplexCall", RpcKind::Bidi, 4, 5, 5),
        ("HalfDuplexCall", RpcKind::Bidi, 1, 0, 0),
        ("UnimplementedCall", RpcKind::Unary, 1, 1, 0),
    ];
    for (method, kind, calls, received, sent) in kinds {
        let seen = totals(method);
        assert_eq!(seen.kind, kind, "{method}");
        assert_eq!((seen.finished, seen.messages_received, seen.messages_sent), (calls, received, sent), "{method}");
    }
    assert_eq!(totals("UnaryCall").code(Code::InvalidArgument), 1);
    assert_eq!(totals("FullDuplexCall").code(Code::Aborted), 1);
    assert_eq!(totals("FullDuplexCall").code(Code::DataLoss), 1);
    assert_eq!(totals("HalfDuplexCall").code(Code::Unimplemented), 1);
}
