//! The loopback harness: a routeguide service served by tonic on 127.0.0.1 (a
//! free port), a client of it, and a shutdown when the test drops the
//! [`Server`].

use std::net::SocketAddr;

use interceptor_examples::pb::{
    route_guide_client::RouteGuideClient,
    route_guide_server::{RouteGuide, RouteGuideServer},
};
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;

/// A server running on loopback; dropping it shuts the server down.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl Server {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client on a connection of its own.
    pub async fn connect(&self) -> RouteGuideClient<Channel> {
        RouteGuideClient::connect(format!("http://{}", self.addr)).await.expect("the server accepts")
    }
}

/// Serves `service` on 127.0.0.1:0 from a task of the test's runtime, with
/// `InterceptLayer` as the README's setup has it (methods named as clients
/// call them, calls ended as they really ended).
pub async fn serve<S: RouteGuide>(service: S) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(interceptor_runtime::InterceptLayer::new())
            .add_service(RouteGuideServer::new(service))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                // Sent or dropped: either way the test is done with it.
                let _ = stopped.await;
            }),
    );
    Server { addr, _stop: stop }
}

/// Serves `service` and connects a client to it. Keep the server:
/// `let (mut client, _server) = serve_and_connect(service).await;`.
pub async fn serve_and_connect<S: RouteGuide>(service: S) -> (RouteGuideClient<Channel>, Server) {
    let server = serve(service).await;
    (server.connect().await, server)
}

/// Serves any tonic service (`Routes::new(EchoServer::new(service))`) on
/// 127.0.0.1:0, with `InterceptLayer`, from a task of the test's runtime,
/// for the test's life; its address. For the fixtures of `tests/proto/`,
/// whose generated types each test binary has its own copy of.
pub async fn serve_routes(routes: tonic::service::Routes) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(interceptor_runtime::InterceptLayer::new())
            .add_routes(routes)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}
