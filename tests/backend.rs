//! A rate through a `LimiterBackend`, with backends of the test's own and
//! handlers called in-process under tokio's paused clock: how leases are
//! sized (a few round trips, not one per message), and the failure policy
//! (a lease waits its timeout and no longer; `allow` goes on at the rate,
//! `reject` ends the call with UNAVAILABLE; the backend is asked again
//! after `retry_after`). `tests/redis.rs` has the same against Redis.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        LazyLock, Mutex,
    },
    time::Duration,
};

mod common;

use common::on_paused_clock;
use interceptor_examples::pb::{route_guide_server::RouteGuide, Feature, Point, Rectangle, RouteNote, RouteSummary};
use interceptor_runtime::{
    intercept,
    rate::{Backend, Lease, LeaseFuture, LeaseRequest, LimiterBackend},
    testing::streaming_request,
    Inbound,
};
use tokio::time::Instant;
use tonic::{codegen::BoxStream, Code, Request, Response, Status, Streaming};

/// Grants every lease at once, and remembers what was asked.
#[derive(Debug, Default)]
struct Generous {
    asked: Mutex<Vec<u64>>,
}

impl LimiterBackend for &'static Generous {
    fn name(&self) -> &'static str {
        "generous"
    }
    fn lease(&self, request: LeaseRequest) -> LeaseFuture {
        self.asked.lock().unwrap().push(request.permits);
        Box::pin(std::future::ready(Ok(Lease { permits: request.permits, wait: Duration::ZERO })))
    }
}

/// Never answers.
#[derive(Debug, Default)]
struct Silent {
    asked: AtomicU64,
}

impl LimiterBackend for &'static Silent {
    fn name(&self) -> &'static str {
        "silent"
    }
    fn lease(&self, _: LeaseRequest) -> LeaseFuture {
        self.asked.fetch_add(1, Relaxed);
        Box::pin(std::future::pending())
    }
}

static GENEROUS: LazyLock<Generous> = LazyLock::new(Generous::default);
static SILENT_ALLOW: LazyLock<Silent> = LazyLock::new(Silent::default);
static SILENT_REJECT: LazyLock<Silent> = LazyLock::new(Silent::default);

static GENEROUS_BACKEND: LazyLock<Backend> = LazyLock::new(|| Backend::new(&*GENEROUS));
static ALLOW_BACKEND: LazyLock<Backend> = LazyLock::new(|| Backend::new(&*SILENT_ALLOW));
static REJECT_BACKEND: LazyLock<Backend> = LazyLock::new(|| Backend::new(&*SILENT_REJECT));

/// A service whose `RecordRoute` has `$($args)*` and reads its upload to
/// the end.
macro_rules! service {
    ($ty:ident: $($args:tt)*) => {
        struct $ty;

        #[tonic::async_trait]
        impl RouteGuide for $ty {
            async fn get_feature(&self, _: Request<Point>) -> Result<Response<Feature>, Status> {
                Err(Status::unimplemented("not here"))
            }

            type ListFeaturesStream = BoxStream<Feature>;

            async fn list_features(&self, _: Request<Rectangle>) -> Result<Response<Self::ListFeaturesStream>, Status> {
                Err(Status::unimplemented("not here"))
            }

            #[intercept($($args)*, service = "backend.Test")]
            async fn record_route(&self, request: Request<Streaming<Point>>) -> Result<Response<RouteSummary>, Status> {
                let mut points: Inbound<Point> = request.into_inner();
                let mut n = 0;
                while points.message().await?.is_some() {
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

fn points(n: usize) -> Vec<Point> {
    (0..n).map(|i| Point { latitude: 0, longitude: i as i32 }).collect()
}

service!(Leased: rate(recv = 1000, backend = GENEROUS_BACKEND.clone()));

/// At 1000/s a lease is 1 permit, then twice as many each time up to a
/// tenth of a second's worth (100): 1,000 messages take 16 leases.
#[tokio::test(start_paused = true)]
async fn leases_double_up_to_a_tenth_of_a_second() {
    on_paused_clock(async {
        let summary = Leased.record_route(streaming_request(points(1000))).await.unwrap().into_inner();
        assert_eq!(summary.point_count, 1000);
        let asked = GENEROUS.asked.lock().unwrap().clone();
        assert_eq!(asked, [1, 2, 4, 8, 16, 32, 64, 100, 100, 100, 100, 100, 100, 100, 100, 100]);
        assert_eq!(GENEROUS_BACKEND.stats().answered, 16);
    })
    .await;
}

service!(FailsOpen: rate(recv = 100, backend = ALLOW_BACKEND.clone()));

/// A backend that never answers, `on_backend_error = allow`: each lease
/// waits its 50 ms, then the stream goes on limited by itself to the rate;
/// the backend is asked again each second (and waited on 50 ms each time).
#[tokio::test(start_paused = true)]
async fn a_silent_backend_lets_streams_go_on_at_the_rate() {
    on_paused_clock(async {
        let start = Instant::now();
        let summary = FailsOpen.record_route(streaming_request(points(301))).await.unwrap().into_inner();
        let took = start.elapsed();
        assert_eq!(summary.point_count, 301);
        let stats = ALLOW_BACKEND.stats();
        println!("301 points at 100/s through a silent backend took {took:?}: {stats:?}");
        // 3 s at the rate, and three 50 ms waits (at 0, 1.05 and 2.1 s).
        assert!(took >= Duration::from_millis(3000) && took <= Duration::from_millis(3200), "{took:?}");
        assert_eq!(stats.timeouts, SILENT_ALLOW.asked.load(Relaxed));
        assert!((3..=4).contains(&stats.timeouts), "{stats:?}");
        assert!(stats.skipped > 250, "{stats:?}");
    })
    .await;
}

service!(FailsClosed: rate(recv = 100, backend = REJECT_BACKEND.clone(), on_backend_error = reject));

/// A backend that never answers, `on_backend_error = reject`: the call
/// ends with UNAVAILABLE after the lease's 50 ms; the next one at once
/// while the backend is down; after `retry_after` (1 s) it is asked again.
#[tokio::test(start_paused = true)]
async fn a_silent_backend_ends_strict_calls_after_the_bounded_wait() {
    on_paused_clock(async {
        let call = || async {
            let start = Instant::now();
            let status = FailsClosed.record_route(streaming_request(points(5))).await.unwrap_err();
            (status, start.elapsed())
        };
        let (status, took) = call().await;
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("the limiter backend `silent` is unavailable"), "{}", status.message());
        assert_eq!(took, Duration::from_millis(50));
        let (status, took) = call().await;
        assert_eq!((status.code(), took), (Code::Unavailable, Duration::ZERO), "down: not asked");
        tokio::time::advance(Duration::from_secs(1)).await;
        let (_, took) = call().await;
        assert_eq!(took, Duration::from_millis(50), "asked again");
        assert_eq!(SILENT_REJECT.asked.load(Relaxed), 2);
        let stats = REJECT_BACKEND.stats();
        assert_eq!((stats.timeouts, stats.skipped), (2, 1), "{stats:?}");
    })
    .await;
}
