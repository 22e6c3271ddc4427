//! Limits per client, kept in this process: `rate(.., key = ..)` and
//! `budget(streams = N, key = ..)`.
//!
//! - what a client sees, on real tonic servers over loopback (the shared
//!   harness's, with the README's layer): a call without the key and its status,
//!   `key = peer`, `key_fn`, concurrent calls per key, the cap on keys;
//! - rates, under tokio's paused clock with the handlers called in-process:
//!   two keys each get their own rate, one key's streams share theirs.
//!
//! `tests/keyed_memory.rs` checks that 100,000 distinct keys keep memory
//! bounded; `tests/redis.rs` the limits shared by servers through Redis.

mod common;

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use common::in_real_time;
use interceptor_examples::pb::{
    route_guide_client::RouteGuideClient, route_guide_server::RouteGuide, Feature, Point, Rectangle, RouteNote,
    RouteSummary,
};
use interceptor_runtime::{intercept, testing::streaming_request, CallContext, Inbound};
use tokio::time::Instant;
use tonic::{
    codegen::BoxStream, metadata::MetadataMap, transport::Channel, Code, Request, Response, Status, Streaming,
};

/// Serves `service` on loopback (the harness's server, with the README's
/// layer) and connects; keep the server: dropping it stops it.
async fn connect<S: RouteGuide>(service: S) -> (RouteGuideClient<Channel>, common::Server) {
    common::serve_and_connect(service).await
}

/// When each point reached its handler, by service and `x-api-key`.
type Arrivals = HashMap<(&'static str, String), Vec<Instant>>;

fn arrivals() -> std::sync::MutexGuard<'static, Arrivals> {
    static ARRIVALS: OnceLock<Mutex<Arrivals>> = OnceLock::new();
    ARRIVALS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner())
}

fn api_key(metadata: &MetadataMap) -> String {
    metadata.get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

/// `tenant-7` from `authorization: Bearer tenant-7`.
fn tenant_of(_: &CallContext, metadata: &MetadataMap) -> Option<String> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::to_string)
}

/// A routeguide service with `$($args)*` on the impl: `RecordRoute` logs
/// when each point arrived; `ListFeatures` holds its call open until the
/// client goes away; `GetFeature` answers at once.
macro_rules! service {
    ($ty:ident: $($args:tt)*) => {
        #[derive(Clone, Copy)]
        struct $ty;

        #[intercept($($args)*)]
        #[tonic::async_trait]
        impl RouteGuide for $ty {
            async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
                Ok(Response::new(Feature { name: api_key(request.metadata()), location: None }))
            }

            type ListFeaturesStream = BoxStream<Feature>;

            async fn list_features(&self, _: Request<Rectangle>) -> Result<Response<Self::ListFeaturesStream>, Status> {
                let first = Feature { name: "held".into(), location: None };
                let held = futures_util::StreamExt::chain(
                    tokio_stream::once(Ok(first)),
                    futures_util::stream::pending(),
                );
                Ok(Response::new(Box::pin(held)))
            }

            async fn record_route(&self, request: Request<Streaming<Point>>) -> Result<Response<RouteSummary>, Status> {
                let key = (stringify!($ty), api_key(request.metadata()));
                let mut points: Inbound<Point> = request.into_inner();
                let mut times = Vec::new();
                while points.message().await?.is_some() {
                    times.push(Instant::now());
                }
                let count = times.len() as i32;
                arrivals().entry(key).or_default().extend(times);
                Ok(Response::new(RouteSummary { point_count: count, ..Default::default() }))
            }

            type RouteChatStream = BoxStream<RouteNote>;

            async fn route_chat(&self, _: Request<Streaming<RouteNote>>) -> Result<Response<Self::RouteChatStream>, Status> {
                Err(Status::unimplemented("not here"))
            }
        }
    };
}

fn with_key<T>(mut request: Request<T>, key: &str) -> Request<T> {
    request.metadata_mut().insert("x-api-key", key.parse().expect("ASCII"));
    request
}

fn points(n: usize) -> Vec<Point> {
    (0..n).map(|i| Point { latitude: 1, longitude: i as i32 }).collect()
}

/// Messages a second over the points after the first tenth (past the
/// burst a limiter starts with).
fn measured_rate(times: &mut [Instant]) -> f64 {
    times.sort();
    let from = times.len() / 10;
    (times.len() - 1 - from) as f64 / (times[times.len() - 1] - times[from]).as_secs_f64()
}

service!(PerKey: rate(recv = 100, key = metadata("x-api-key")), service = "keyed.PerKey");

/// Two clients with different keys each get 100/s; the two streams of
/// client `a` share its 100/s, so `a`'s 600 points take 6 s and `b`'s 300
/// take 3 s, all at once.
#[tokio::test(start_paused = true)]
async fn each_key_gets_its_own_rate() {
    in_real_time(async {
        let start = Instant::now();
        let upload = |key: &'static str| {
            tokio::spawn(async move { PerKey.record_route(with_key(streaming_request(points(300)), key)).await })
        };
        let uploads = [upload("a"), upload("a"), upload("b")];
        for upload in uploads {
            assert_eq!(upload.await.unwrap().unwrap().into_inner().point_count, 300);
        }
        let mut a = arrivals().remove(&("PerKey", "a".into())).unwrap();
        let mut b = arrivals().remove(&("PerKey", "b".into())).unwrap();
        let (a_end, b_end) = (*a.iter().max().unwrap() - start, *b.iter().max().unwrap() - start);
        let (a_rate, b_rate) = (measured_rate(&mut a), measured_rate(&mut b));
        println!("a: 600 points at {a_rate:.1}/s, done after {a_end:?}; b: 300 at {b_rate:.1}/s, after {b_end:?}");
        for rate in [a_rate, b_rate] {
            assert!((99.0..=100.01).contains(&rate), "a key got {rate:.1}/s of 100");
        }
        assert!((5.9..=6.0).contains(&a_end.as_secs_f64()), "a's two streams took {a_end:?}");
        assert!((2.9..=3.0).contains(&b_end.as_secs_f64()), "b took {b_end:?}");
    })
    .await;
}

service!(NeedsKey: rate(recv = 100, key = metadata("x-api-key")), service = "keyed.NeedsKey");
service!(
    NeedsKeyOrUnauthenticated: rate(recv = 100, key = metadata("x-api-key"), on_missing_key = unauthenticated),
    service = "keyed.NeedsKeyOrUnauthenticated"
);
service!(
    SharesWithoutKey: rate(recv = 100, key = metadata("x-api-key"), on_missing_key = share),
    service = "keyed.SharesWithoutKey"
);

/// A call without the key ends before its handler runs, with
/// INVALID_ARGUMENT naming the metadata, or the code `on_missing_key`
/// gives; with `share` it goes on. An empty value is no key.
#[tokio::test]
async fn a_call_without_its_key_gets_a_status_that_names_it() {
    in_real_time(async {
        let (mut client, _server) = connect(NeedsKey).await;
        let status = client.get_feature(Point::default()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "rate: the call has no `x-api-key` metadata, by which this method's limit is kept"
        );
        let status = client.get_feature(with_key(Request::new(Point::default()), "")).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let found = client.get_feature(with_key(Request::new(Point::default()), "k1")).await.unwrap();
        assert_eq!(found.into_inner().name, "k1");

        let (mut client, _server) = connect(NeedsKeyOrUnauthenticated).await;
        let status = client.get_feature(Point::default()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("`x-api-key`"), "{}", status.message());

        let (mut client, _server) = connect(SharesWithoutKey).await;
        client.get_feature(Point::default()).await.expect("calls without a key share one limit");
    })
    .await;
}

service!(ByPeer: rate(recv = 100, key = peer), budget(streams = 1, key = peer), service = "keyed.ByPeer");
service!(ByTenant: rate(recv = 100, key_fn = tenant_of), service = "keyed.ByTenant");
service!(
    ByClosure: rate(recv = 100, key_fn = |_, metadata| Some(api_key(metadata))),
    service = "keyed.ByClosure"
);

/// `key = peer` keys by the client's address: over loopback every client
/// is 127.0.0.1, so with `streams = 1` a second call waits for none and is
/// rejected. `key_fn` takes a function or a closure; a function that finds
/// no key is named in the status.
#[tokio::test]
async fn keys_from_the_peer_and_from_a_function() {
    in_real_time(async {
        let (mut client, _server) = connect(ByPeer).await;
        let mut held = client.list_features(Rectangle::default()).await.unwrap().into_inner();
        assert_eq!(held.message().await.unwrap().unwrap().name, "held");
        let status = client.list_features(Rectangle::default()).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("for this key"), "{}", status.message());
        drop(held);

        let (mut client, _server) = connect(ByTenant).await;
        let mut request = Request::new(Point::default());
        request.metadata_mut().insert("authorization", "Bearer tenant-7".parse().unwrap());
        client.get_feature(request).await.expect("a tenant's call");
        let status = client.get_feature(Point::default()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "rate: the key function `tenant_of` found no key for the call");

        let (mut client, _server) = connect(ByClosure).await;
        client.get_feature(with_key(Request::new(Point::default()), "x")).await.expect("a keyed call");
    })
    .await;
}

service!(
    StreamsPerKey: budget(streams = 2, key = metadata("x-api-key")),
    service = "keyed.StreamsPerKey"
);

/// Retries `call` until it succeeds, for at most 5 s: a call's slot is
/// released when the server sees it end, a moment after the client drops it.
async fn eventually<T, F: std::future::Future<Output = Result<T, Status>>>(mut call: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match call().await {
            Ok(done) => return done,
            Err(status) if Instant::now() < deadline => {
                let _ = status;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("still failing after 5 s: {status:?}"),
        }
    }
}

/// `budget(streams = 2, key = ..)`: each client holds at most 2 calls at
/// once; a third is rejected while another client's calls go on.
#[tokio::test]
async fn concurrent_calls_are_counted_per_key() {
    in_real_time(async {
        let (client, _server) = connect(StreamsPerKey).await;
        let hold = |key: &'static str| {
            let mut client = client.clone();
            async move { client.list_features(with_key(Request::new(Rectangle::default()), key)).await }
        };
        let a1 = hold("a").await.unwrap().into_inner();
        let _a2 = hold("a").await.unwrap().into_inner();
        let status = hold("a").await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "budget: all 2 concurrent streams of /keyed.StreamsPerKey/ListFeatures for this key are in use"
        );
        let _b1 = hold("b").await.expect("another key has slots of its own");
        drop(a1);
        eventually(|| hold("a")).await;
    })
    .await;
}

service!(
    CappedKeys: budget(streams = 1, key = metadata("x-api-key"), max_keys = 2),
    service = "keyed.CappedKeys"
);

/// `max_keys = 2`: with two keys holding calls, a call with a third key is
/// rejected (RESOURCE_EXHAUSTED, naming `max_keys`), while the keys held go
/// on as before; once a key's last call ends, the new key gets in.
#[tokio::test]
async fn a_new_key_past_the_cap_is_rejected_until_a_key_is_free() {
    in_real_time(async {
        let (client, _server) = connect(CappedKeys).await;
        let hold = |key: &'static str| {
            let mut client = client.clone();
            async move { client.list_features(with_key(Request::new(Rectangle::default()), key)).await }
        };
        let a = hold("a").await.unwrap().into_inner();
        let _b = hold("b").await.unwrap().into_inner();
        let status = hold("c").await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("limits for 2 keys are in use (max_keys)"), "{}", status.message());
        // A key held is not a new one: its own limit answers.
        let status = hold("a").await.unwrap_err();
        assert!(status.message().contains("for this key are in use"), "{}", status.message());
        drop(a);
        let _c = eventually(|| hold("c")).await;
    })
    .await;
}
