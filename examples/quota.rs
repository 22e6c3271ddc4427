//! An asynchronous check before the handler: each call waits for the
//! client's quota to be looked up in a (mock) remote quota service, 3 calls
//! per client (`checks::quota` in `src/checks.rs`, made with `check_async`).
//! A client without quota left gets RESOURCE_EXHAUSTED, and one whose lookup
//! does not finish within a second UNAVAILABLE; the handler never runs for
//! either.
//!
//! `cargo run --example quota`

use interceptor_examples::{
    pb::{route_guide_client::RouteGuideClient, route_guide_server::RouteGuideServer, Point},
    MeteredGuide,
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{metadata::MetadataValue, transport::Server, Request};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = format!("http://{}", listener.local_addr()?);
    tokio::spawn(
        Server::builder()
            .layer(interceptor_runtime::InterceptLayer::new())
            .add_service(RouteGuideServer::new(MeteredGuide::default()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let mut client = RouteGuideClient::connect(addr).await?;

    // `slow` is the client the mock quota service is slow to answer for.
    for client_id in ["alice", "alice", "alice", "alice", "slow"] {
        let mut request = Request::new(Point { latitude: 3, longitude: 4 });
        request.metadata_mut().insert("x-client-id", MetadataValue::from_static(client_id));
        let started = std::time::Instant::now();
        match client.get_feature(request).await {
            Ok(feature) => println!("{client_id}: OK {:?}", feature.into_inner().name),
            Err(status) => println!("{client_id}: {:?} {:?}", status.code(), status.message()),
        }
        println!("    after {:?}", started.elapsed());
    }
    Ok(())
}
