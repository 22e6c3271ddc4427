//! Starts the intercepted routeguide server on 127.0.0.1, drives every method
//! with a tonic client, prints the per-method stats `monitor` collected, and
//! serves them as Prometheus text over HTTP on a loopback port.
//!
//! `cargo run --example demo` (set `RUST_LOG=info` to see each call's span and
//! end event; add `-- --serve` to keep the servers up for `curl`).
//!
//! `-- --otel stdout` prints each call's OpenTelemetry span (the service has
//! `otel`); with `--features otlp`, `-- --otel otlp` sends them to a collector
//! over OTLP/gRPC (`OTEL_EXPORTER_OTLP_ENDPOINT`, by default
//! `http://localhost:4317`).

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use interceptor_examples::{
    pb::{route_guide_client::RouteGuideClient, route_guide_server::RouteGuideServer, Point, Rectangle, RouteNote},
    Guide,
};
use interceptor_runtime::{stats, InterceptLayer};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio_stream::{wrappers::TcpListenerStream, StreamExt};
use tonic::transport::{Channel, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();

    // The recorder goes in before the first call: monitor makes its metric
    // handles then.
    // Buckets make the histograms Prometheus histograms (with `_bucket`
    // series, as gRPC dashboards query them) rather than summaries.
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("grpc_server_handling_seconds".into()),
            &[0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0],
        )?
        .set_buckets_for_metric(Matcher::Suffix("_bytes".into()), &[64.0, 1024.0, 16384.0, 262144.0, 4194304.0])?
        .install_recorder()?;
    let metrics_addr = serve_metrics(prometheus).await?;
    // Like the recorder, before the first call.
    let tracer_provider = install_otel()?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // `InterceptLayer`: stats, spans and metrics name each method as
    // clients call it (`/routeguide.RouteGuide/RouteChat`).
    let server = tokio::spawn(
        Server::builder()
            .layer(InterceptLayer::new())
            .add_service(RouteGuideServer::new(Guide::default()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );
    println!("routeguide server on {addr}");

    let mut client = RouteGuideClient::new(Channel::from_shared(format!("http://{addr}"))?.connect().await?);
    drive(&mut client).await?;

    print_table();
    println!("\nA scrape of http://{metrics_addr}/metrics (the grpc_server_ lines for RouteChat):");
    for line in scrape(metrics_addr).await?.lines() {
        if line.starts_with("grpc_server_") && line.contains("RouteChat") && !line.contains("_bucket{") {
            println!("  {line}");
        }
    }

    if std::env::args().any(|a| a == "--serve") {
        println!("\nserving gRPC on {addr} and metrics on http://{metrics_addr}/metrics; Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    let _ = stop.send(());
    server.await??;
    if let Some(provider) = tracer_provider {
        provider.shutdown()?; // exports what is still buffered
    }
    Ok(())
}

/// `--otel stdout` or `--otel otlp`: a tracer provider exporting there, made
/// the global one, which `otel` traces every call with.
fn install_otel() -> Result<Option<SdkTracerProvider>, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(at) = args.iter().position(|a| a == "--otel") else { return Ok(None) };
    let builder = SdkTracerProvider::builder();
    let provider = match args.get(at + 1).map(String::as_str) {
        Some("stdout") => builder.with_simple_exporter(opentelemetry_stdout::SpanExporter::default()).build(),
        #[cfg(feature = "otlp")]
        Some("otlp") => {
            builder.with_batch_exporter(opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?).build()
        }
        other => {
            let otlp = if cfg!(feature = "otlp") { "`otlp`" } else { "`otlp` (built with `--features otlp`)" };
            return Err(format!("--otel {}: expected `stdout` or {otlp}", other.unwrap_or("")).into());
        }
    };
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(Some(provider))
}

/// Serves the Prometheus text on a loopback port of its own.
async fn serve_metrics(prometheus: PrometheusHandle) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route("/metrics", axum::routing::get(move || async move { prometheus.render() }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// `GET /metrics` over plain HTTP/1.0, as a scraper does.
async fn scrape(addr: std::net::SocketAddr) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response.split_once("\r\n\r\n").map_or(response.clone(), |(_, body)| body.to_owned()))
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

    let rect =
        Rectangle { lo: Some(Point { latitude: 0, longitude: 0 }), hi: Some(Point { latitude: 29, longitude: 29 }) };
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
