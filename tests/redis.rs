//! Rates shared by servers through Redis (`rate(.., backend = ..)` with
//! `RedisBackend`), against a real `redis-server` each test starts (see
//! `common/redis.rs`; Debian's package, which `.ci/run` installs).
//!
//! Every "replica" is a tonic server of its own in the test process, with
//! a `Backend` of its own (its own connection to Redis): the rate and the
//! backend are the service instance's (`recv = self.rate`,
//! `backend = self.backend.clone()`), so each replica builds its own `rate`
//! interceptor, as separate processes would. Clients upload as fast as they
//! can; each handler logs when every point reached it.
//!
//! These run on the real clock (Redis's `TIME` is the limiters' clock) and
//! allow 5% for the combined rates; the ratios measured are printed.

mod common;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use common::redis::RedisServer;
use interceptor_examples::pb::{
    route_guide_client::RouteGuideClient, route_guide_server::RouteGuide, Feature, Point, Rectangle, RouteNote,
    RouteSummary,
};
use interceptor_runtime::{
    intercept,
    rate::{Backend, LeaseRequest, LimiterBackend, RedisBackend},
    Inbound,
};
use tokio::time::Instant;
use tonic::{codegen::BoxStream, Code, Request, Response, Status, Streaming};

/// When each point reached a handler, by the replica's group.
fn arrivals() -> std::sync::MutexGuard<'static, HashMap<&'static str, Vec<Instant>>> {
    static ARRIVALS: OnceLock<Mutex<HashMap<&'static str, Vec<Instant>>>> = OnceLock::new();
    ARRIVALS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner())
}

/// The arrivals of `group` in `[from, to)`.
fn count(group: &'static str, from: Instant, to: Instant) -> usize {
    arrivals().get(group).map_or(0, |times| times.iter().filter(|t| (from..to).contains(t)).count())
}

/// The longest time between two arrivals of `group` in `[from, to)`.
fn longest_gap(group: &'static str, from: Instant, to: Instant) -> Duration {
    let mut times: Vec<Instant> =
        arrivals().get(group).map_or(Vec::new(), |t| t.iter().copied().filter(|t| (from..to).contains(t)).collect());
    times.sort();
    times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

/// A replica: a service whose rate and backend are its own.
macro_rules! replica {
    ($ty:ident: $($policy:tt)*) => {
        #[derive(Clone)]
        struct $ty {
            group: &'static str,
            rate: u64,
            backend: Backend,
        }

        #[intercept(
            rate(recv = self.rate, key = metadata("x-api-key"), backend = self.backend.clone() $($policy)*),
            service = "redis.Shared"
        )]
        #[tonic::async_trait]
        impl RouteGuide for $ty {
            async fn get_feature(&self, _: Request<Point>) -> Result<Response<Feature>, Status> {
                Ok(Response::new(Feature::default()))
            }

            type ListFeaturesStream = BoxStream<Feature>;

            async fn list_features(&self, _: Request<Rectangle>) -> Result<Response<Self::ListFeaturesStream>, Status> {
                Err(Status::unimplemented("not here"))
            }

            async fn record_route(&self, request: Request<Streaming<Point>>) -> Result<Response<RouteSummary>, Status> {
                let mut points: Inbound<Point> = request.into_inner();
                let mut n = 0;
                while points.message().await?.is_some() {
                    arrivals().entry(self.group).or_default().push(Instant::now());
                    n += 1;
                }
                Ok(Response::new(RouteSummary { point_count: n, ..Default::default() }))
            }

            type RouteChatStream = BoxStream<RouteNote>;

            async fn route_chat(&self, _: Request<Streaming<RouteNote>>) -> Result<Response<Self::RouteChatStream>, Status> {
                Err(Status::unimplemented("not here"))
            }
        }
    };
}

replica!(Replica:);
replica!(StrictReplica: , on_backend_error = reject);

/// Serves `service` on loopback (the harness's server, with the README's
/// layer); the server runs until the test ends.
async fn serve<S: RouteGuide>(service: S) -> SocketAddr {
    let server = common::serve(service).await;
    let addr = server.addr();
    // The test's runtime ends with the test: that stops it.
    std::mem::forget(server);
    addr
}

const SECOND: Duration = Duration::from_secs(1);

/// A backend of its own on `redis`, connected: its first lease (on a key of
/// its own) has been answered, so that no lease of the test waits for a
/// connection to be made.
async fn backend(redis: &RedisServer, lease_timeout: Duration, retry_after: Duration) -> Backend {
    let redis = RedisBackend::new(&redis.url()).expect("a redis:// URL");
    let warm =
        LeaseRequest { key: "warm-up".into(), per_second: 1, burst: 1, permits: 1, wait: false, timeout: SECOND };
    redis.lease(warm).await.expect("Redis answers");
    Backend::new(redis).lease_timeout(lease_timeout).retry_after(retry_after)
}

/// Uploads points to `addr` as fast as the server takes them, with
/// `x-api-key: key`, until `until`, when the client drops the call (its
/// points buffered in HTTP/2 windows would take long to drain at a low
/// rate). `None` if the call ran until then, else how it ended.
async fn upload(addr: SocketAddr, key: &'static str, until: Instant) -> Option<Result<i32, Status>> {
    let mut client = RouteGuideClient::connect(format!("http://{addr}")).await.expect("the server accepts");
    let points = futures_util::stream::iter((0..).map(|i| Point { latitude: 0, longitude: i }));
    let mut request = Request::new(points);
    request.metadata_mut().insert("x-api-key", key.parse().unwrap());
    let call = client.record_route(request);
    tokio::time::timeout_at(until, call).await.ok().map(|ended| ended.map(|summary| summary.into_inner().point_count))
}

/// The Lua script: a lease takes the burst due, then reserves permits not
/// yet due and says when; without waiting it takes none; a refund gives
/// permits back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_the_gcra_in_one_script() {
    let redis = RedisServer::start();
    let backend = RedisBackend::new(&redis.url()).unwrap();
    let ask = |permits, wait| {
        backend.lease(LeaseRequest {
            key: "script-test".into(),
            per_second: 10,
            burst: 3,
            permits,
            wait,
            timeout: SECOND,
        })
    };
    let lease = ask(5, false).await.unwrap();
    assert_eq!((lease.permits, lease.wait), (3, Duration::ZERO), "the burst, at once");
    let lease = ask(5, false).await.unwrap();
    assert_eq!(lease.permits, 0, "nothing is due");
    assert!(lease.wait > Duration::from_millis(90) && lease.wait <= Duration::from_millis(100), "{lease:?}");
    let lease = ask(5, true).await.unwrap();
    assert_eq!(lease.permits, 5, "reserved");
    assert!(lease.wait > Duration::from_millis(490) && lease.wait <= Duration::from_millis(500), "{lease:?}");
    // Those five given back: the next reservation comes where they were.
    backend.refund(LeaseRequest {
        key: "script-test".into(),
        per_second: 10,
        burst: 3,
        permits: 5,
        wait: false,
        timeout: SECOND,
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lease = ask(1, true).await.unwrap();
        if lease.wait <= Duration::from_millis(100) {
            break;
        }
        assert!(Instant::now() < deadline, "the refund never came: {lease:?}");
        // Each try reserved one more: give it back too.
        backend.refund(LeaseRequest {
            key: "script-test".into(),
            per_second: 10,
            burst: 3,
            permits: 1,
            wait: false,
            timeout: SECOND,
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let keys = redis.command("EXISTS interceptor:rate:script-test").unwrap();
    assert_eq!(keys, ":1", "the limiter's key, prefixed");
}

/// Three replicas sharing one key limited to R per second: together their
/// clients get R, within 5%, over 10 s, at R = 50, 500 and 5000 at once
/// (each R with a key of its own); Redis sees about 10 leases a second per
/// key, whatever R.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_rate_through_redis() {
    let redis = RedisServer::start();
    let groups: [(&'static str, u64); 3] = [("r50", 50), ("r500", 500), ("r5000", 5000)];
    let start = Instant::now();
    let until = start + Duration::from_secs(11) + Duration::from_millis(500);
    let mut uploads = Vec::new();
    let mut backends = Vec::new();
    for (group, rate) in groups {
        for _ in 0..3 {
            // A lease may wait long on a busy 2-core machine running 9
            // servers: the failure policy would then let more through.
            let backend = backend(&redis, Duration::from_secs(2), Duration::from_secs(1)).await;
            backends.push((group, backend.clone()));
            let addr = serve(Replica { group, rate, backend }).await;
            uploads.push(tokio::spawn(upload(addr, group, until)));
        }
    }
    for upload in uploads {
        let ended = tokio::time::timeout(Duration::from_secs(30), upload).await.expect("an upload hangs").unwrap();
        assert!(ended.is_none(), "an upload ended early: {ended:?}");
    }
    let (from, to) = (start + Duration::from_secs(1), start + Duration::from_secs(11));
    for (group, rate) in groups {
        let got = count(group, from, to) as f64 / 10.0;
        let ratio = got / rate as f64;
        let stats: Vec<_> = backends.iter().filter(|(g, _)| *g == group).map(|(_, b)| b.stats()).collect();
        let leases: u64 = stats.iter().map(|s| s.answered).sum();
        let failed: u64 = stats.iter().map(|s| s.errors + s.timeouts).sum();
        println!(
            "3 replicas sharing {rate}/s: {got:.1}/s together ({ratio:.4} of the rate); {leases} leases in 12 s \
             ({:.1}/s), {failed} failed",
            leases as f64 / 12.0
        );
        assert_eq!(failed, 0, "leases failed: {stats:?}");
        assert!((0.95..=1.05).contains(&ratio), "{rate}/s shared by 3 replicas came out as {got:.1}/s");
        assert!(leases as f64 / 12.0 <= 25.0, "{leases} leases in 12 s for one key");
    }
}

/// Redis killed mid-run, with `on_backend_error = allow`: every replica's
/// stream goes on, limited by itself to the rate (so 3 replicas let about
/// 3R through), no stream stalls longer than the bounded wait; Redis
/// started again, the limit is shared again (about R).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_dies_streams_go_on_and_the_shared_limit_resumes() {
    const RATE: u64 = 200;
    let mut redis = RedisServer::start();
    let start = Instant::now();
    let until = start + Duration::from_secs(9);
    let mut uploads = Vec::new();
    let mut backends = Vec::new();
    for _ in 0..3 {
        let backend = backend(&redis, Duration::from_millis(200), Duration::from_millis(500)).await;
        backends.push(backend.clone());
        let addr = serve(Replica { group: "faults", rate: RATE, backend }).await;
        uploads.push(tokio::spawn(upload(addr, "faults", until)));
    }
    tokio::time::sleep_until(start + Duration::from_secs(2)).await;
    redis.kill();
    tokio::time::sleep_until(start + Duration::from_secs(5)).await;
    let answered_before = backends.iter().map(|b| b.stats().answered).sum::<u64>();
    redis.restart();
    for upload in uploads {
        let ended = tokio::time::timeout(Duration::from_secs(30), upload).await.expect("an upload hangs").unwrap();
        assert!(ended.is_none(), "the stream should go on while Redis is gone: {ended:?}");
    }
    let second = Duration::from_secs(1);
    let rate_in = |from: u32| count("faults", start + second * from, start + second * (from + 2)) as f64 / 2.0;
    let (shared, alone, again) = (rate_in(0), rate_in(3), rate_in(7));
    let gap = longest_gap("faults", start + second, start + second * 8);
    let stats: Vec<_> = backends.iter().map(Backend::stats).collect();
    println!(
        "3 replicas, {RATE}/s: {shared:.1}/s shared, {alone:.1}/s with Redis gone, {again:.1}/s once it is back; \
         longest gap between points {gap:?}; {stats:?}"
    );
    assert!(shared <= RATE as f64 * 1.1, "{shared:.1}/s before Redis died");
    assert!(alone >= RATE as f64 * 2.0, "the replicas did not go on by themselves: {alone:.1}/s");
    assert!(again <= RATE as f64 * 1.1, "the shared limit did not resume: {again:.1}/s");
    assert!(gap < Duration::from_millis(500), "a stream stalled for {gap:?}");
    assert!(stats.iter().all(|s| s.errors + s.timeouts > 0), "{stats:?}");
    let answered_after = stats.iter().map(|s| s.answered).sum::<u64>();
    assert!(answered_after > answered_before, "no lease answered after the restart");
}

/// With `on_backend_error = reject`, a call that needs a lease while Redis
/// is gone ends with UNAVAILABLE, within the bounded wait; once Redis is
/// back (and `retry_after` has passed), calls go through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_dies_a_strict_rate_rejects_and_recovers() {
    let mut redis = RedisServer::start();
    let backend = backend(&redis, Duration::from_millis(200), Duration::from_millis(300)).await;
    let addr = serve(StrictReplica { group: "strict", rate: 100, backend: backend.clone() }).await;
    let start = Instant::now();
    let running = tokio::spawn(upload(addr, "strict", start + Duration::from_secs(30)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.kill();
    let killed = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the call hangs")
        .unwrap()
        .expect("the call ended")
        .expect_err("the call needs leases from Redis");
    let took = killed.elapsed();
    println!("rejected {took:?} after Redis died: {status:?}; {:?}", backend.stats());
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("the limiter backend `redis` is unavailable"), "{}", status.message());
    assert!(took < Duration::from_secs(2), "rejected only after {took:?}");
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match upload(addr, "strict", Instant::now() + Duration::from_millis(300)).await {
            None => break,
            Some(Ok(points)) => panic!("an endless upload ended with {points} points"),
            Some(Err(status)) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(Instant::now() < deadline, "still rejected 10 s after Redis came back");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Redis answering slowly (`CLIENT PAUSE` for 1.5 s): leases time out after
/// their bounded wait, streams go on by themselves meanwhile, and the
/// leases are answered again once Redis is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_is_slow_leases_time_out_and_streams_go_on() {
    let redis = RedisServer::start();
    let start = Instant::now();
    let until = start + Duration::from_secs(5);
    let mut uploads = Vec::new();
    let mut backends = Vec::new();
    for _ in 0..2 {
        let backend = backend(&redis, Duration::from_millis(100), Duration::from_millis(300)).await;
        backends.push(backend.clone());
        let addr = serve(Replica { group: "slow", rate: 100, backend }).await;
        uploads.push(tokio::spawn(upload(addr, "slow", until)));
    }
    tokio::time::sleep_until(start + Duration::from_secs(1)).await;
    assert_eq!(redis.command("CLIENT PAUSE 1500 ALL").as_deref(), Some("+OK"));
    let paused = Instant::now();
    tokio::time::sleep_until(paused + Duration::from_millis(1600)).await;
    let answered_after_pause = backends.iter().map(|b| b.stats().answered).sum::<u64>();
    for upload in uploads {
        let ended = tokio::time::timeout(Duration::from_secs(30), upload).await.expect("an upload hangs").unwrap();
        assert!(ended.is_none(), "an upload ended early: {ended:?}");
    }
    let during = count("slow", paused, paused + Duration::from_millis(1500));
    let gap = longest_gap("slow", start + Duration::from_millis(500), until - Duration::from_millis(200));
    let stats: Vec<_> = backends.iter().map(Backend::stats).collect();
    println!("{during} points while Redis was paused for 1.5 s; longest gap {gap:?}; {stats:?}");
    assert!(during >= 150, "streams stalled while Redis was slow: {during} points in 1.5 s");
    assert!(gap < Duration::from_millis(500), "a stream stalled for {gap:?}");
    assert!(stats.iter().all(|s| s.timeouts > 0), "{stats:?}");
    let answered = stats.iter().map(|s| s.answered).sum::<u64>();
    assert!(answered > answered_after_pause, "no lease answered after the pause");
}
