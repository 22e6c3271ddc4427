//! The foundation, end to end on real tonic servers over 127.0.0.1: exact
//! message and byte counts for the four RPC kinds in both positions of the
//! attribute, and how each call ends (OK, handler error, stream error, client
//! cancel), finalized exactly once, with nothing left alive.
//!
//! One test function: the per-method totals and the live-call count are
//! process-wide, so the scenarios run one after another.

use std::{
    future::pending,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

mod common;

use common::serve_and_connect;
use interceptor_examples::{
    pb::{
        route_guide_client::RouteGuideClient, route_guide_server::RouteGuide, Feature, Point, Rectangle, RouteNote,
        RouteSummary,
    },
    Guide, MethodGuide,
};
use interceptor_runtime::{intercept, stats, CallContext, Direction, Interceptor, Outcome};
use prost::Message;
use tokio_stream::{Stream, StreamExt};
use tonic::{metadata::MetadataMap, transport::Channel, Code, Request, Response, Status, Streaming};

/// Waits (bounded) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// What one call moved in its method's totals.
#[derive(Debug, PartialEq, Eq)]
struct Moved {
    calls: u64,
    ok: u64,
    received: (u64, u64),
    sent: (u64, u64),
}

/// What the calls of `method` did since `before`, once one has finished.
async fn moved_since(before: &[stats::MethodSnapshot], method: &str) -> Moved {
    let name = format!("/routeguide.RouteGuide/{method}");
    let since = || stats::since(before).into_iter().find(|m| m.method == name);
    eventually(&format!("{method} finished"), || since().is_some_and(|m| m.finished > 0)).await;
    let m = since().expect("it finished");
    Moved {
        calls: m.finished,
        ok: m.code(Code::Ok),
        received: (m.messages_received, m.bytes_received),
        sent: (m.messages_sent, m.bytes_sent),
    }
}

fn bytes<M: Message>(messages: &[M]) -> u64 {
    messages.iter().map(|m| m.encoded_len() as u64).sum()
}

/// Calls each method once and checks the counts `monitor` recorded against
/// the messages the client sent and received.
async fn exact_counts(mut client: RouteGuideClient<Channel>) {
    let before = stats::snapshot();
    let point = Point { latitude: 3, longitude: 4 };
    let feature = client.get_feature(point).await.unwrap().into_inner();
    assert_eq!(feature.name, "feature at 3,4");
    let expected = Moved { calls: 1, ok: 1, received: (1, bytes(&[point])), sent: (1, bytes(&[feature])) };
    assert_eq!(moved_since(&before, "GetFeature").await, expected, "GetFeature");

    let before = stats::snapshot();
    let rect =
        Rectangle { lo: Some(Point { latitude: 0, longitude: 0 }), hi: Some(Point { latitude: 12, longitude: 12 }) };
    let features: Vec<Feature> =
        client.list_features(rect).await.unwrap().into_inner().map(Result::unwrap).collect().await;
    assert_eq!(features.len(), 35);
    let expected = Moved { calls: 1, ok: 1, received: (1, bytes(&[rect])), sent: (35, bytes(&features)) };
    assert_eq!(moved_since(&before, "ListFeatures").await, expected, "ListFeatures");

    let before = stats::snapshot();
    let route: Vec<Point> = (0..20).map(|i| Point { latitude: i, longitude: i % 4 }).collect();
    let summary = client.record_route(tokio_stream::iter(route.clone())).await.unwrap().into_inner();
    assert_eq!(summary.point_count, 20);
    let expected = Moved { calls: 1, ok: 1, received: (20, bytes(&route)), sent: (1, bytes(&[summary])) };
    assert_eq!(moved_since(&before, "RecordRoute").await, expected, "RecordRoute");

    let before = stats::snapshot();
    let notes: Vec<RouteNote> = (0..10)
        .map(|i| RouteNote { location: Some(Point { latitude: i % 3, longitude: 0 }), message: format!("note {i}") })
        .collect();
    let replies: Vec<RouteNote> = client
        .route_chat(tokio_stream::iter(notes.clone()))
        .await
        .unwrap()
        .into_inner()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(replies.len(), 22);
    let expected = Moved { calls: 1, ok: 1, received: (10, bytes(&notes)), sent: (22, bytes(&replies)) };
    assert_eq!(moved_since(&before, "RouteChat").await, expected, "RouteChat");
}

/// One call seen by the [`Recorder`]: how many times its `on_end` ran, its
/// outcome, its method, how many times `on_stream` ran for each direction.
type Seen = (Arc<AtomicUsize>, Arc<Mutex<Option<Outcome>>>, &'static str, Arc<[AtomicUsize; 2]>);

/// Records every call's outcome and how many times its `on_end` ran.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Seen>>>);

#[derive(Default)]
struct RecordedCall {
    ends: Arc<AtomicUsize>,
    outcome: Arc<Mutex<Option<Outcome>>>,
    streams: Arc<[AtomicUsize; 2]>,
}

impl Interceptor for Recorder {
    type Call = RecordedCall;
    type Stream = ();
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn on_start(&self, ctx: &CallContext, _: &MetadataMap) -> Result<RecordedCall, Status> {
        let call = RecordedCall { ends: Arc::default(), outcome: Arc::default(), streams: Arc::default() };
        let seen = (call.ends.clone(), call.outcome.clone(), ctx.method().method, call.streams.clone());
        self.0.lock().unwrap().push(seen);
        Ok(call)
    }
    fn on_stream(&self, call: &RecordedCall, _: &CallContext, direction: Direction) {
        call.streams[direction as usize].fetch_add(1, Ordering::SeqCst);
    }
    fn on_end(&self, call: &RecordedCall, ctx: &CallContext) {
        call.ends.fetch_add(1, Ordering::SeqCst);
        *call.outcome.lock().unwrap() = ctx.outcome().cloned();
    }
}

static RECORDER: std::sync::OnceLock<Recorder> = std::sync::OnceLock::new();

fn recorder() -> Recorder {
    RECORDER.get_or_init(Recorder::default).clone()
}

impl Recorder {
    /// The outcome of the last call of `method`, once it has one.
    async fn last(&self, method: &'static str) -> Outcome {
        let mut found = None;
        eventually(&format!("{method} ended"), || {
            let calls = self.0.lock().unwrap();
            found =
                calls.iter().rev().find(|(_, _, m, _)| *m == method).and_then(|(_, o, _, _)| o.lock().unwrap().clone());
            found.is_some()
        })
        .await;
        found.unwrap()
    }
}

/// Fails in the ways a handler can, chosen by the request.
struct Faulty;

#[intercept(monitor, with = recorder(), service = "test.Faulty")]
#[tonic::async_trait]
impl RouteGuide for Faulty {
    /// latitude < 0: INVALID_ARGUMENT; latitude 99: never answers.
    async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
        match request.into_inner().latitude {
            99 => pending().await,
            lat if lat < 0 => Err(Status::invalid_argument("negative latitude")),
            _ => Ok(Response::new(Feature::default())),
        }
    }

    type ListFeaturesStream = Pin<Box<dyn Stream<Item = Result<Feature, Status>> + Send>>;

    /// `lo.latitude` = n >= 0: n features; -1: two features then DATA_LOSS;
    /// -2: a feature every 10 ms, forever.
    async fn list_features(&self, request: Request<Rectangle>) -> Result<Response<Self::ListFeaturesStream>, Status> {
        let feature = |i: i32| Feature { name: format!("f{i}"), location: None };
        Ok(Response::new(match request.into_inner().lo.unwrap_or_default().latitude {
            -1 => Box::pin(tokio_stream::iter([Ok(feature(0)), Ok(feature(1)), Err(Status::data_loss("lost it"))])),
            -2 => Box::pin(tokio_stream::iter((0..).map(move |i| Ok(feature(i)))).throttle(Duration::from_millis(10))),
            n => Box::pin(tokio_stream::iter((0..n).map(move |i| Ok(feature(i))))),
        }))
    }

    /// Reads one point, then waits forever.
    async fn record_route(&self, request: Request<Streaming<Point>>) -> Result<Response<RouteSummary>, Status> {
        let mut points = request.into_inner();
        points.message().await?;
        pending().await
    }

    type RouteChatStream = Pin<Box<dyn Stream<Item = Result<RouteNote, Status>> + Send>>;

    /// Sends a note every 10 ms, forever; the client's notes are only read.
    async fn route_chat(
        &self,
        request: Request<Streaming<RouteNote>>,
    ) -> Result<Response<Self::RouteChatStream>, Status> {
        let mut notes = request.into_inner();
        tokio::spawn(async move { while let Ok(Some(_)) = notes.message().await {} });
        let tick = |i: i32| Ok(RouteNote { location: None, message: format!("tick {i}") });
        Ok(Response::new(Box::pin(tokio_stream::iter((0..).map(tick)).throttle(Duration::from_millis(10)))))
    }
}

fn rect(latitude: i32) -> Rectangle {
    Rectangle { lo: Some(Point { latitude, longitude: 0 }), hi: None }
}

async fn final_codes(mut client: RouteGuideClient<Channel>) {
    let recorder = recorder();

    let mut three = client.list_features(rect(3)).await.unwrap().into_inner();
    while three.message().await.unwrap().is_some() {}
    let ok = recorder.last("ListFeatures").await;
    assert_eq!((ok.code, ok.stats.messages_sent, ok.stats.messages_received), (Code::Ok, 3, 1));

    let status = client.get_feature(Point { latitude: -1, longitude: 0 }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let handler_error = recorder.last("GetFeature").await;
    assert_eq!((handler_error.code, handler_error.message.as_str()), (Code::InvalidArgument, "negative latitude"));
    assert_eq!(handler_error.stats.messages_sent, 0);

    let mut broken = client.list_features(rect(-1)).await.unwrap().into_inner();
    assert!(broken.message().await.unwrap().is_some());
    assert!(broken.message().await.unwrap().is_some());
    assert_eq!(broken.message().await.unwrap_err().code(), Code::DataLoss);
    let stream_error = recorder.last("ListFeatures").await;
    assert_eq!((stream_error.code, stream_error.stats.messages_sent), (Code::DataLoss, 2));

    // The client goes away in the middle of each kind of call.
    let mut endless = client.list_features(rect(-2)).await.unwrap().into_inner();
    assert!(endless.message().await.unwrap().is_some());
    drop(endless);
    let cancelled = recorder.last("ListFeatures").await;
    assert_eq!(cancelled.code, Code::Cancelled, "server stream: {cancelled:?}");
    assert!(cancelled.stats.messages_sent >= 1);

    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut chat = client.route_chat(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    tx.send(RouteNote { location: None, message: "hi".into() }).await.unwrap();
    assert!(chat.message().await.unwrap().unwrap().message.starts_with("tick"));
    // tonic resets the stream (RST_STREAM CANCEL) once the client holds
    // neither half: the request stream ends, the response is dropped.
    drop(tx);
    drop(chat);
    let cancelled = recorder.last("RouteChat").await;
    assert_eq!(cancelled.code, Code::Cancelled, "bidi: {cancelled:?}");
    assert!(cancelled.stats.messages_sent >= 1);

    let mut unary = client.clone();
    let call = tokio::spawn(async move { unary.get_feature(Point { latitude: 99, longitude: 0 }).await });
    eventually("the never-answering unary call started", || totals_of("test.Faulty", "GetFeature").in_flight() == 1)
        .await;
    call.abort();
    let cancelled = recorder.last("GetFeature").await;
    assert_eq!((cancelled.code, cancelled.stats.messages_received), (Code::Cancelled, 1), "unary: {cancelled:?}");

    let mut streaming = client.clone();
    let points = tokio_stream::iter([Point::default()]).chain(tokio_stream::pending());
    let call = tokio::spawn(async move { streaming.record_route(points).await });
    eventually("the client stream's first point arrived", || {
        recorder.0.lock().unwrap().iter().any(|(_, _, m, _)| *m == "RecordRoute")
            && totals_of("test.Faulty", "RecordRoute").messages_received == 0
            && totals_of("test.Faulty", "RecordRoute").in_flight() == 1
    })
    .await;
    call.abort();
    let cancelled = recorder.last("RecordRoute").await;
    assert_eq!(cancelled.code, Code::Cancelled, "client stream: {cancelled:?}");

    // Every call was finalized exactly once, and none is left in flight.
    for method in ["GetFeature", "ListFeatures", "RecordRoute", "RouteChat"] {
        eventually(&format!("{method} has nothing in flight"), || totals_of("test.Faulty", method).in_flight() == 0)
            .await;
    }
    let calls = recorder.0.lock().unwrap();
    assert_eq!(calls.len(), 7);
    for (ends, outcome, method, streams) in calls.iter() {
        assert_eq!(ends.load(Ordering::SeqCst), 1, "{method} ended {} times: {outcome:?}", ends.load(Ordering::SeqCst));
        // Each direction's state is made at most once (the outbound one
        // possibly while the handler runs, and kept for the response).
        let streams = streams.each_ref().map(|n| n.load(Ordering::SeqCst));
        assert!(streams.iter().all(|&n| n <= 1), "{method}: on_stream ran {streams:?} times per direction");
    }
}

fn totals_of(service: &str, method: &str) -> stats::MethodSnapshot {
    stats::method(&format!("/{service}/{method}")).unwrap_or_else(|| panic!("no stats for {service}/{method}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_endings_end_to_end() {
    // The impl position, then the method position.
    exact_counts(serve_and_connect(Guide::default()).await).await;
    exact_counts(serve_and_connect(MethodGuide::default()).await).await;

    final_codes(serve_and_connect(Faulty).await).await;

    // Nothing of any call is still alive.
    eventually("no call state left", || stats::live_calls() == 0).await;
}
