//! A keyed rate's memory stays bounded: 100,000 distinct keys through one
//! method hold no more than `max_keys` at once, and the heap stops growing
//! once the map has its size; past the cap, a new key is rejected until
//! keys come to rest. A binary of its own, for its counting allocator.
//!
//! The handler is called in-process under tokio's paused clock: each key's
//! limiter (1000/s, burst 1) is at rest a millisecond after its call.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::{
        atomic::{AtomicIsize, Ordering::Relaxed},
        Arc, LazyLock,
    },
    time::Duration,
};

mod common;

use common::on_paused_clock;
use interceptor_examples::pb::{route_guide_server::RouteGuide, Feature, Point, Rectangle, RouteNote, RouteSummary};
use interceptor_runtime::{
    intercept,
    key::Key,
    rate::{Rate, RateConfig},
};
use tonic::{codegen::BoxStream, Code, Request, Response, Status, Streaming};

/// Bytes allocated and not freed, by this process.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` with the caller's arguments;
// only a count is kept beside.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

const MAX_KEYS: usize = 10_000;

/// The method's rate, built here and shared with the method (an `Arc` of an
/// interceptor is one), so that the test can read how many keys it holds.
static RATE: LazyLock<Arc<Rate>> = LazyLock::new(|| {
    Arc::new(Rate::new(RateConfig {
        recv: Some(1000),
        key: Some(Key::metadata("x-api-key").unwrap()),
        max_keys: Some(MAX_KEYS as u64),
        ..Default::default()
    }))
});

struct Keys;

#[intercept(with = RATE.clone(), service = "memory.Keys")]
#[tonic::async_trait]
impl RouteGuide for Keys {
    async fn get_feature(&self, _: Request<Point>) -> Result<Response<Feature>, Status> {
        Ok(Response::new(Feature::default()))
    }

    type ListFeaturesStream = BoxStream<Feature>;

    async fn list_features(&self, _: Request<Rectangle>) -> Result<Response<Self::ListFeaturesStream>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn record_route(&self, _: Request<Streaming<Point>>) -> Result<Response<RouteSummary>, Status> {
        Err(Status::unimplemented("not here"))
    }

    type RouteChatStream = BoxStream<RouteNote>;

    async fn route_chat(&self, _: Request<Streaming<RouteNote>>) -> Result<Response<Self::RouteChatStream>, Status> {
        Err(Status::unimplemented("not here"))
    }
}

async fn call(key: u64) -> Result<(), Status> {
    let mut request = Request::new(Point::default());
    request.metadata_mut().insert("x-api-key", format!("client-{key}").parse().unwrap());
    Keys.get_feature(request).await.map(drop)
}

#[tokio::test(start_paused = true)]
async fn a_hundred_thousand_keys_keep_memory_bounded() {
    on_paused_clock(async {
        let mut next = 0u64;
        // 100 new keys a millisecond, each at rest a millisecond after its call.
        let mut most_keys = 0;
        let mut heap_at = Vec::new();
        let start = LIVE.load(Relaxed);
        for round in 0..1000 {
            for _ in 0..100 {
                call(next).await.unwrap_or_else(|status| panic!("key {next}: {status:?}"));
                next += 1;
            }
            most_keys = most_keys.max(RATE.keys());
            tokio::time::advance(Duration::from_millis(1)).await;
            if round % 200 == 199 {
                heap_at.push(LIVE.load(Relaxed) - start);
            }
        }
        println!(
            "100,000 keys: at most {most_keys} held at once (max_keys {MAX_KEYS}); heap above the start after each \
             20,000: {heap_at:?} B"
        );
        assert!(most_keys <= MAX_KEYS, "{most_keys} keys held");
        // Bounded by the cap, not by the keys seen: under 200 B per key the map
        // may hold (its tables grow by doubling, shard by shard, so the heap
        // steps up now and then until the largest shard has its size).
        for heap in &heap_at {
            assert!(*heap < (MAX_KEYS * 200) as isize, "{heap} B for at most {MAX_KEYS} keys: {heap_at:?}");
        }

        // Past the cap: a second later all is at rest; then 10,100 new keys in
        // the same instant keep their limiters busy, and the last 100 find the
        // map full.
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut rejected = Vec::new();
        for _ in 0..MAX_KEYS + 100 {
            if let Err(status) = call(next).await {
                rejected.push(status);
            }
            next += 1;
        }
        assert_eq!(rejected.len(), 100, "{:?}", rejected.first());
        assert_eq!(rejected[0].code(), Code::ResourceExhausted);
        assert!(rejected[0].message().contains("(max_keys)"), "{}", rejected[0].message());
        // Once they are at rest, a new key gets in.
        tokio::time::advance(Duration::from_millis(100)).await;
        call(next).await.expect("a key once the others are at rest");
        assert!(RATE.keys() <= 1, "{} keys held after the sweep", RATE.keys());
    })
    .await;
}
