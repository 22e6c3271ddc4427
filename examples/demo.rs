//! Starts the intercepted routeguide server on 127.0.0.1, drives every method
//! with a tonic client, and prints the per-method stats `monitor` collected.
//!
//! `cargo run --example demo` (set `RUST_LOG=info` to see each call's span and
//! end event).

use std::time::Duration;

use interceptor_examples::{
    pb::{route_guide_client::RouteGuideClient, route_guide_server::RouteGuideServer, Point, Rectangle, RouteNote},
    Guide,
};
use interceptor_runtime::stats;
use tokio_stream::{wrappers::TcpListenerStream, StreamExt};
use tonic::transport::{Channel, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_service(RouteGuideServer::new(Guide::default()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );
    println!("routeguide server on {addr}");

    let mut client = RouteGuideClient::new(Channel::from_shared(format!("http://{addr}"))?.connect().await?);
    drive(&mut client).await?;

    let _ = stop.send(());
    server.await??;
    print_table();
    Ok(())
}

/// Calls every method: a few unary calls (one of them an error), a server
/// stream over the whole grid, a client stream and a bidi chat.
async fn drive(client: &mut RouteGuideClient<Channel>) -> Result<(), tonic::Status> {
    for (latitude, longitude) in [(0, 0), (3, 4), (1, 1)] {
        let feature = client.get_feature(Point { latitude, longitude }).await?.into_inner();
        println!("GetFeature({latitude},{longitude}) -> {:?}", feature.name);
    }
    let invalid = client.get_feature(Point { latitude: -1, longitude: 0 }).await;
    println!("GetFeature(-1,0) -> {:?}", invalid.map_err(|s| s.code()).map(|_| ()));

    let rect = Rectangle { lo: Some(Point { latitude: 0, longitude: 0 }), hi: Some(Point { latitude: 29, longitude: 29 }) };
    let mut features = client.list_features(rect).await?.into_inner();
    let mut count = 0;
    while features.message().await?.is_some() {
        count += 1;
    }
    println!("ListFeatures(whole grid) -> {count} features");

    let route = tokio_stream::iter((0..20).map(|i| Point { latitude: i, longitude: i % 4 }));
    let summary = client.record_route(route).await?.into_inner();
    println!("RecordRoute(20 points) -> {summary:?}");

    let notes = tokio_stream::iter((0..10).map(|i| RouteNote {
        location: Some(Point { latitude: i % 3, longitude: 0 }),
        message: format!("note {i}: {}", "x".repeat(if i == 9 { 2000 } else { 8 })),
    }))
    .throttle(Duration::from_millis(1));
    let mut replies = client.route_chat(notes).await?.into_inner();
    let mut count = 0;
    while replies.message().await?.is_some() {
        count += 1;
    }
    println!("RouteChat(10 notes) -> {count} replies");
    Ok(())
}

fn print_table() {
    println!();
    println!(
        "{:<34} {:<14} {:>5} {:>8} {:>9} {:>8} {:>9} {:>9}  codes",
        "method", "kind", "calls", "msgs in", "bytes in", "msgs out", "bytes out", "time"
    );
    for m in stats::snapshot() {
        let codes: Vec<String> = m.codes.iter().map(|(code, n)| format!("{code:?}={n}")).collect();
        println!(
            "{:<34} {:<14} {:>5} {:>8} {:>9} {:>8} {:>9} {:>9.1?}  {}",
            m.method,
            m.kind.as_str(),
            m.finished,
            m.messages_received,
            m.bytes_received,
            m.messages_sent,
            m.bytes_sent,
            m.total_duration,
            codes.join(" ")
        );
    }
}
