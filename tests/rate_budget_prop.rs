//! Property tests: random message sequences pass `rate` and `budget` (with
//! limits they stay under) with nothing lost, duplicated or reordered, in each
//! direction, over loopback to a real tonic server. The rates are generous but
//! low enough that longer sequences wait for permits now and then, so that the
//! wrappers' held-back message path runs too.

use std::{sync::OnceLock, time::Duration};

mod common;

use futures_util::StreamExt;
use interceptor_examples::pb::{
    route_guide_client::RouteGuideClient, route_guide_server::RouteGuide, Feature, Point, Rectangle, RouteNote,
    RouteSummary,
};
use proptest::prelude::*;
use tokio::{runtime::Runtime, sync::mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{codegen::BoxStream, transport::Channel, Request, Response, Status, Streaming};

/// Echoes and counts, behind every limit: 40 messages every 20 ms in, 100 out.
struct Echo;

#[interceptor_runtime::intercept(
    monitor,
    rate(recv = 2_000, send = 5_000),
    budget(messages = 100_000, bytes = "64MiB", duration = "60s", idle = "30s", streams = 64),
    service = "test.PropEcho"
)]
#[tonic::async_trait]
impl RouteGuide for Echo {
    async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
        Ok(Response::new(Feature { name: String::new(), location: Some(request.into_inner()) }))
    }

    type ListFeaturesStream = BoxStream<Feature>;

    /// `lo.latitude` features named `<lo.longitude>-<i>`, padded with `hi.latitude` dots.
    async fn list_features(&self, request: Request<Rectangle>) -> Result<Response<Self::ListFeaturesStream>, Status> {
        let rect = request.into_inner();
        let (lo, hi) = (rect.lo.unwrap_or_default(), rect.hi.unwrap_or_default());
        let pad = ".".repeat(hi.latitude.max(0) as usize);
        let features = (0..lo.latitude.max(0))
            .map(move |i| Ok(Feature { name: format!("{}-{i}{pad}", lo.longitude), location: None }));
        Ok(Response::new(Box::pin(tokio_stream::iter(features))))
    }

    /// The count, and an order-sensitive checksum in `distance`.
    async fn record_route(&self, request: Request<Streaming<Point>>) -> Result<Response<RouteSummary>, Status> {
        let mut points = request.into_inner();
        let mut summary = RouteSummary::default();
        while let Some(point) = points.message().await? {
            summary.point_count += 1;
            summary.distance = checksum(summary.distance, &point);
        }
        Ok(Response::new(summary))
    }

    type RouteChatStream = BoxStream<RouteNote>;

    async fn route_chat(
        &self,
        request: Request<Streaming<RouteNote>>,
    ) -> Result<Response<Self::RouteChatStream>, Status> {
        let mut notes = request.into_inner();
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Some(note) = notes.next().await {
                let failed = note.is_err();
                if tx.send(note).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn checksum(sum: i32, point: &Point) -> i32 {
    sum.wrapping_mul(31).wrapping_add(point.latitude).wrapping_mul(31).wrapping_add(point.longitude)
}

/// One runtime and one server for all cases.
fn server() -> &'static (Runtime, RouteGuideClient<Channel>, common::Server) {
    static SERVER: OnceLock<(Runtime, RouteGuideClient<Channel>, common::Server)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (client, server) = runtime.block_on(common::serve_and_connect(Echo));
        (runtime, client, server)
    })
}

/// Runs one case on the shared runtime, within the real-time bound.
fn run<T>(test: impl std::future::Future<Output = T>) -> T {
    let (runtime, ..) = server();
    runtime.block_on(common::in_real_time(test))
}

/// A message text: mostly short, sometimes over one HTTP/2 frame (16 KiB).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(any::<char>(), 0..24).prop_map(String::from_iter),
        1 => (b'a'..=b'z', 10_000usize..40_000).prop_map(|(c, n)| char::from(c).to_string().repeat(n)),
    ]
}

/// Now and then the client pauses for a millisecond.
fn pause() -> impl Strategy<Value = bool> {
    prop::bool::weighted(0.05)
}

/// The client sends through a small channel, pausing now and then, so that
/// messages reach the server in varied batches.
async fn send_all<T: Send + 'static>(items: Vec<(T, bool)>) -> ReceiverStream<T> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        for (item, pause) in items {
            if pause {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if tx.send(item).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn a_bidi_echo_returns_every_note_once_in_order(
        notes in prop::collection::vec((any::<i32>(), text(), pause()), 0..60)
    ) {
        let notes: Vec<(RouteNote, bool)> = notes
            .into_iter()
            .map(|(latitude, message, pause)| {
                (RouteNote { location: Some(Point { latitude, longitude: 0 }), message }, pause)
            })
            .collect();
        let expected: Vec<RouteNote> = notes.iter().map(|(note, _)| note.clone()).collect();
        let echoed = run(async {
            let mut client = server().1.clone();
            let mut replies = client.route_chat(send_all(notes).await).await.unwrap().into_inner();
            let mut echoed = Vec::new();
            while let Some(note) = replies.message().await.unwrap() {
                echoed.push(note);
            }
            echoed
        });
        prop_assert_eq!(echoed, expected);
    }

    #[test]
    fn a_client_stream_delivers_every_point_once_in_order(
        points in prop::collection::vec((any::<i32>(), any::<i32>(), pause()), 0..200)
    ) {
        let points: Vec<(Point, bool)> =
            points.into_iter().map(|(latitude, longitude, pause)| (Point { latitude, longitude }, pause)).collect();
        let expected = points.iter().fold(0, |sum, (point, _)| checksum(sum, point));
        let count = points.len() as i32;
        let summary = run(async {
            let mut client = server().1.clone();
            client.record_route(send_all(points).await).await.unwrap().into_inner()
        });
        prop_assert_eq!((summary.point_count, summary.distance), (count, expected));
    }

    #[test]
    fn a_server_stream_delivers_every_feature_once_in_order(
        count in 0i32..300, seed in any::<i32>(), pad in prop_oneof![3 => 0i32..16, 1 => 10_000i32..40_000]
    ) {
        let names = run(async {
            let mut client = server().1.clone();
            let rect = Rectangle {
                lo: Some(Point { latitude: count, longitude: seed }),
                hi: Some(Point { latitude: pad, longitude: 0 }),
            };
            let mut features = client.list_features(rect).await.unwrap().into_inner();
            let mut names = Vec::new();
            while let Some(feature) = features.message().await.unwrap() {
                names.push(feature.name);
            }
            names
        });
        let dots = ".".repeat(pad as usize);
        let expected: Vec<String> = (0..count).map(|i| format!("{seed}-{i}{dots}")).collect();
        prop_assert_eq!(names, expected);
    }
}
