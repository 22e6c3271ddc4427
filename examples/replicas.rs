//! Two replicas of a server sharing one rate limit through Redis.
//!
//! `cargo run --example replicas` starts a `redis-server` of its own (on a
//! free loopback port, if one is installed; or set `REDIS_URL` to use yours),
//! serves the routeguide service twice, each server with its own connection
//! to Redis, as two processes behind a load balancer would be, and drives
//! them with clients of one tenant (`x-api-key: tenant-a`):
//!
//! - `RecordRoute` has `rate(recv = 100, key = metadata("x-api-key"), backend = ..)`:
//!   a client uploading as fast as it can to each replica for 5 s; together
//!   they get 100 points a second, not 200;
//! - `GetFeature` has `rate(recv = 5, burst = 5, .., on_exceed = reject)`: 20
//!   calls at once, spread over both replicas; the ones over the tenant's
//!   burst of 5 end with RESOURCE_EXHAUSTED.
//!
//! Then it prints the leases' metrics (`grpc_server_limiter_leases_total`)
//! and the calls the rate ended (`grpc_server_limited_total{limit="rate"}`)
//! from a Prometheus scrape.

use std::{
    net::{SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use interceptor_examples::pb::{
    route_guide_client::RouteGuideClient,
    route_guide_server::{RouteGuide, RouteGuideServer},
    Feature, Point, Rectangle, RouteNote, RouteSummary,
};
use interceptor_runtime::{
    intercept,
    rate::{Backend, RedisBackend},
    Inbound, InterceptLayer,
};
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{codegen::BoxStream, transport::Server, Code, Request, Response, Status, Streaming};

/// Points each replica received.
static RECEIVED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// One replica: its number and its connection to Redis.
struct Replica {
    index: usize,
    redis: Backend,
}

#[intercept(monitor)]
#[tonic::async_trait]
impl RouteGuide for Replica {
    #[intercept(rate(recv = 5, burst = 5, key = metadata("x-api-key"), backend = self.redis.clone(), on_exceed = reject))]
    async fn get_feature(&self, _: Request<Point>) -> Result<Response<Feature>, Status> {
        Ok(Response::new(Feature { name: format!("from replica {}", self.index + 1), location: None }))
    }

    type ListFeaturesStream = BoxStream<Feature>;

    async fn list_features(&self, _: Request<Rectangle>) -> Result<Response<Self::ListFeaturesStream>, Status> {
        Err(Status::unimplemented("not in this example"))
    }

    #[intercept(rate(recv = 100, key = metadata("x-api-key"), backend = self.redis.clone()))]
    async fn record_route(&self, request: Request<Streaming<Point>>) -> Result<Response<RouteSummary>, Status> {
        let mut points: Inbound<Point> = request.into_inner();
        let mut count = 0;
        while points.message().await?.is_some() {
            RECEIVED[self.index].fetch_add(1, Relaxed);
            count += 1;
        }
        Ok(Response::new(RouteSummary { point_count: count, ..Default::default() }))
    }

    type RouteChatStream = BoxStream<RouteNote>;

    async fn route_chat(&self, _: Request<Streaming<RouteNote>>) -> Result<Response<Self::RouteChatStream>, Status> {
        Err(Status::unimplemented("not in this example"))
    }
}

/// A `redis-server` this example started, stopped when dropped.
struct OwnRedis(Child, std::path::PathBuf);

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// `REDIS_URL`, or a `redis-server` started on a free loopback port.
fn redis() -> Result<(String, Option<OwnRedis>), Box<dyn std::error::Error>> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return Ok((url, None));
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = std::env::temp_dir().join(format!("replicas-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!("cannot start redis-server ({e}): install it (apt-get install redis-server) or set REDIS_URL")
        })?;
    let own = OwnRedis(child, dir);
    // Until it accepts connections.
    for _ in 0..250 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((format!("redis://127.0.0.1:{port}"), Some(own)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("redis-server did not start".into())
}

async fn serve(replica: Replica) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        Server::builder()
            .layer(InterceptLayer::new())
            .add_service(RouteGuideServer::new(replica))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Ok(addr)
}

fn tenant<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("x-api-key", "tenant-a".parse().expect("ASCII"));
    request
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let (url, _own_redis) = redis()?;
    println!("Redis at {url}");

    let mut addrs = Vec::new();
    let mut backends = Vec::new();
    for index in 0..2 {
        let redis = RedisBackend::new(&url)?;
        // Connected before the first call: else the first leases wait for
        // the connection, and may time out.
        redis.connect().await?;
        let redis = Backend::new(redis);
        backends.push(redis.clone());
        addrs.push(serve(Replica { index, redis }).await?);
    }
    println!("replica 1 on {}, replica 2 on {}", addrs[0], addrs[1]);

    // One client per replica uploads as fast as it can for 5 s.
    let seconds = 5;
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let uploads: Vec<_> = addrs
        .iter()
        .map(|addr| {
            let addr = *addr;
            tokio::spawn(async move {
                let mut client = RouteGuideClient::connect(format!("http://{addr}")).await?;
                let points = futures_util::stream::iter((0..).map(|i| Point { latitude: 1, longitude: i }));
                // Dropped at `until`: the points still buffered are not waited for.
                let _ = tokio::time::timeout_at(until, client.record_route(tenant(points))).await;
                Ok::<_, tonic::transport::Error>(())
            })
        })
        .collect();
    for upload in uploads {
        upload.await??;
    }
    let [one, two] = [0, 1].map(|i| RECEIVED[i].load(Relaxed));
    let per_second = |n: u64| n as f64 / seconds as f64;
    println!(
        "\nRecordRoute, rate(recv = 100, key = metadata(\"x-api-key\"), backend = redis), {seconds} s of tenant-a \
         uploading to both replicas:\n  replica 1: {:.1}/s, replica 2: {:.1}/s, together {:.1}/s (without the \
         shared limit: 200/s)",
        per_second(one),
        per_second(two),
        per_second(one + two),
    );

    // 20 unary calls at once, alternating between the replicas.
    let calls = (0..20).map(|i| {
        let addr = addrs[i % 2];
        async move {
            let mut client = RouteGuideClient::connect(format!("http://{addr}")).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(client.get_feature(tenant(Point::default())).await)
        }
    });
    let (mut passed, mut limited) = (0, 0);
    for answer in futures_util::future::join_all(calls).await {
        match answer.map_err(|e| e.to_string())? {
            Ok(_) => passed += 1,
            Err(status) if status.code() == Code::ResourceExhausted => limited += 1,
            Err(status) => return Err(status.into()),
        }
    }
    println!(
        "\nGetFeature, rate(recv = 5, burst = 5, .., on_exceed = reject): 20 calls of tenant-a at once over both replicas: \
         {passed} passed, {limited} ended with RESOURCE_EXHAUSTED"
    );

    println!(
        "\nLeases (Backend::stats): replica 1 {:?}\n                        replica 2 {:?}",
        backends[0].stats(),
        backends[1].stats()
    );
    // Let monitor's batches reach the recorder.
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("\nFrom a Prometheus scrape:");
    for line in prometheus.render().lines() {
        if line.starts_with("grpc_server_limiter_leases_total") || line.starts_with("grpc_server_limited_total") {
            println!("  {line}");
        }
    }
    Ok(())
}
