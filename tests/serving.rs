//! Servers set up the ways tonic's own examples set them up, with the
//! README's layer:
//! - on a Unix domain socket (`examples/src/uds`) and on an in-memory duplex
//!   stream (`examples/src/mock`, the way services are tested without a
//!   network port): transports without a peer address;
//! - the layer on one service of the server (`InterceptService::new(..)`),
//!   as tonic's per-service wrappers are added, also on a server that has
//!   the layer too (the inner one's tap is the call's).
//!
//! The calls are intercepted and end as over TCP with the layer on the whole
//! server: counted, and an upload the client cancels half-way ends
//! cancelled, for the handler and the stats. Without a peer address a
//! call's peer is `None`, so `key = peer` refuses it with INVALID_ARGUMENT
//! before its handler runs, as the README says of a call without its key.

mod common;

use std::{io, path::PathBuf};

use common::{
    events::{self, Event},
    handlers::{note, service},
    in_real_time,
};
use hyper_util::rt::TokioIo;
use interceptor_examples::pb::{route_guide_client::RouteGuideClient, route_guide_server::RouteGuideServer, Point};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream, UnixListenerStream};
use tonic::{
    transport::{Channel, Endpoint, Server, Uri},
    Code,
};

service!(OverUds: monitor, service = "serving.OverUds");
service!(PeerKeyedUds: rate(recv = 100, key = peer), service = "serving.PeerKeyedUds");
service!(InMemory: monitor, service = "serving.InMemory");
service!(PeerKeyedInMemory: budget(streams = 4, key = peer), service = "serving.PeerKeyedInMemory");
// Named as on the wire: the layer on the service alone gives the names.
service!(LayeredAlone: monitor);
service!(LayeredTwice: monitor, service = "serving.LayeredTwice");

/// A socket path in a directory of its own, removed when dropped.
struct SocketDir(PathBuf);

impl SocketDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("interceptor-serving-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        SocketDir(dir)
    }

    fn socket(&self) -> PathBuf {
        self.0.join("grpc.sock")
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serves `routes` on a Unix socket, as tonic's uds example does, and
/// connects a channel to it.
async fn serve_uds(routes: tonic::service::Routes, dir: &SocketDir) -> Channel {
    let path = dir.socket();
    let listener = tokio::net::UnixListener::bind(&path).expect("a socket");
    tokio::spawn(
        Server::builder()
            .layer(interceptor_runtime::InterceptLayer::new())
            .add_routes(routes)
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    // The URI is not used: every connection goes to the socket.
    Endpoint::try_from("http://[::]:50051")
        .expect("a URI")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .expect("the server accepts")
}

/// Serves `routes` on one in-memory duplex stream, as tonic's mock example
/// does, and connects a channel to it.
async fn serve_in_memory(routes: tonic::service::Routes) -> Channel {
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(
        Server::builder()
            .layer(interceptor_runtime::InterceptLayer::new())
            .add_routes(routes)
            .serve_with_incoming(tokio_stream::once(Ok::<_, io::Error>(server))),
    );
    let mut client = Some(client);
    Endpoint::try_from("http://[::]:50051")
        .expect("a URI")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let client = client.take();
            async move {
                let client = client.ok_or_else(|| io::Error::other("the one connection is taken"))?;
                Ok::<_, io::Error>(TokioIo::new(client))
            }
        }))
        .await
        .expect("the server accepts")
}

/// Runs `serve` (a server set up by the test) on 127.0.0.1 from a task of
/// the test's runtime, and connects a channel to it.
async fn serve_tcp<F>(serve: impl FnOnce(TcpListenerStream) -> F) -> Channel
where
    F: std::future::Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(serve(TcpListenerStream::new(listener)));
    Endpoint::from_shared(format!("http://{addr}")).expect("a URI").connect().await.expect("the server accepts")
}

fn points(n: i32) -> Vec<Point> {
    (0..n).map(|i| Point { latitude: i, longitude: 0 }).collect()
}

/// An upload, a bidi exchange and an upload the client cancels half-way,
/// each counted and ended as it really ended; no peer.
async fn calls_end_as_they_ended(channel: Channel, service: &str) {
    let mut client = RouteGuideClient::new(channel);
    let record_route = format!("/{service}/RecordRoute");
    let route_chat = format!("/{service}/RouteChat");

    let summary = client.record_route(tokio_stream::iter(points(3))).await.expect("an upload").into_inner();
    assert_eq!(summary.point_count, 3);
    let outcome = events::outcome(&record_route, 0).await;
    assert_eq!((outcome.code, outcome.stats.messages_received), (Code::Ok, 3), "{outcome:?}");

    let notes = tokio_stream::iter([note(1, "a"), note(2, "b")]);
    let mut echoes = client.route_chat(notes).await.expect("a chat").into_inner();
    let mut echoed = Vec::new();
    while let Some(echo) = echoes.message().await.expect("an echo") {
        echoed.push(echo.message);
    }
    assert_eq!(echoed, ["a", "b"]);
    let outcome = events::outcome(&route_chat, 0).await;
    assert_eq!(
        (outcome.code, outcome.stats.messages_received, outcome.stats.messages_sent),
        (Code::Ok, 2, 2),
        "{outcome:?}"
    );

    // The client gives up after two points: tonic resets the stream.
    let (tx, rx) = mpsc::channel(4);
    let upload = tokio::spawn({
        let mut client = client.clone();
        async move { client.record_route(ReceiverStream::new(rx)).await }
    });
    for point in points(2) {
        tx.send(point).await.expect("the upload runs");
    }
    events::wait_for(&record_route, |e| (events::received(e).len() == 5).then_some(())).await;
    upload.abort();
    let outcome = events::outcome(&record_route, 1).await;
    assert_eq!(
        (outcome.code, outcome.message.as_str(), outcome.stats.messages_received),
        (Code::Cancelled, "the client cancelled the call", 2),
        "{outcome:?}"
    );
    let ends = events::inbound_ends(&events::events(&record_route));
    let (_, handler_saw) = ends.last().expect("the handler saw its stream end");
    let status = handler_saw.as_ref().expect_err("not a clean end");
    assert_eq!((status.code(), status.message()), (Code::Cancelled, "the client cancelled the call"));
}

/// A limit kept per peer address: a call without one is refused before its
/// handler runs, and the refusal names what was missing.
async fn a_peer_key_without_a_peer_is_refused(channel: Channel, service: &str) {
    let mut client = RouteGuideClient::new(channel);
    let status = client.record_route(tokio_stream::iter(points(1))).await.expect_err("no peer, no key");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().ends_with("the client's address is unknown, and this method's limit is kept per address"));
    let events = events::events(&format!("/{service}/RecordRoute"));
    assert_eq!(events::started(&events), 0, "the handler never ran: {events:?}");
    assert!(!events.iter().any(|e| matches!(e, Event::Received(_))));
}

#[tokio::test]
async fn over_a_unix_socket() {
    in_real_time(async {
        let dir = SocketDir::new("calls");
        let channel = serve_uds(tonic::service::Routes::new(RouteGuideServer::new(OverUds)), &dir).await;
        calls_end_as_they_ended(channel, "serving.OverUds").await;

        let dir = SocketDir::new("keyed");
        let channel = serve_uds(tonic::service::Routes::new(RouteGuideServer::new(PeerKeyedUds)), &dir).await;
        a_peer_key_without_a_peer_is_refused(channel, "serving.PeerKeyedUds").await;
    })
    .await;
}

#[tokio::test]
async fn over_an_in_memory_stream() {
    in_real_time(async {
        let channel = serve_in_memory(tonic::service::Routes::new(RouteGuideServer::new(InMemory))).await;
        calls_end_as_they_ended(channel, "serving.InMemory").await;

        let channel = serve_in_memory(tonic::service::Routes::new(RouteGuideServer::new(PeerKeyedInMemory))).await;
        a_peer_key_without_a_peer_is_refused(channel, "serving.PeerKeyedInMemory").await;
    })
    .await;
}

#[tokio::test]
async fn with_the_layer_on_one_service() {
    in_real_time(async {
        let channel = serve_tcp(|incoming| {
            Server::builder()
                .add_service(interceptor_runtime::InterceptService::new(RouteGuideServer::new(LayeredAlone)))
                .serve_with_incoming(incoming)
        })
        .await;
        calls_end_as_they_ended(channel, "routeguide.RouteGuide").await;
    })
    .await;
}

#[tokio::test]
async fn with_the_layer_on_the_server_and_on_the_service() {
    in_real_time(async {
        let channel = serve_tcp(|incoming| {
            Server::builder()
                .layer(interceptor_runtime::InterceptLayer::new())
                .add_service(interceptor_runtime::InterceptService::new(RouteGuideServer::new(LayeredTwice)))
                .serve_with_incoming(incoming)
        })
        .await;
        calls_end_as_they_ended(channel, "serving.LayeredTwice").await;
    })
    .await;
}
