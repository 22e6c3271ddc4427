//! Shared by the end-to-end tests: a routeguide server on 127.0.0.1.

use std::net::SocketAddr;

use interceptor_examples::pb::{
    route_guide_client::RouteGuideClient,
    route_guide_server::{RouteGuide, RouteGuideServer},
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;

/// Serves `service` on a free loopback port until the test's runtime ends,
/// with `CallEndLayer` as the README's setup has it.
pub async fn serve<S: RouteGuide>(service: S) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(interceptor_runtime::CallEndLayer::new())
            .add_service(RouteGuideServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

/// Serves `service` and connects a client to it.
#[allow(dead_code)] // not every test binary uses both
pub async fn serve_and_connect<S: RouteGuide>(service: S) -> RouteGuideClient<Channel> {
    let addr = serve(service).await;
    RouteGuideClient::connect(format!("http://{addr}")).await.expect("the server accepts")
}
pub mod redis;
