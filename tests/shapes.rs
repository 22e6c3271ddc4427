//! The shapes `#[intercept]` takes, end to end: the attribute on an impl and
//! on each method, over the four RPC kinds, counting exactly the messages and
//! bytes a real client sent and received; a unary response message whose
//! name ends in `Stream`.
//!
//! `Guide` and `MethodGuide` serve the same methods (`routeguide.RouteGuide`),
//! whose totals are process-wide: one test function calls them in turn.

mod common;

use common::{eventually, in_real_time, serve_and_connect};
use interceptor_examples::{
    pb::{route_guide_client::RouteGuideClient, Feature, Point, Rectangle, RouteNote},
    Guide, MethodGuide,
};
use interceptor_runtime::{intercept, stats};
use prost::Message;
use tokio_stream::StreamExt;
use tonic::{transport::Channel, Code, Request, Response, Status};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_counts_in_the_impl_and_the_method_position() {
    in_real_time(async {
        // The impl position, then the method position.
        let (client, _server) = serve_and_connect(Guide::default()).await;
        exact_counts(client).await;
        let (client, _server) = serve_and_connect(MethodGuide::default()).await;
        exact_counts(client).await;

        // Nothing of any call is still alive.
        eventually("no call state left", || stats::live_calls() == 0).await;
    })
    .await;
}

/// A unary response message whose name ends in `Stream`: a message type, not
/// a response stream (message types are never generic).
#[derive(Clone, PartialEq, prost::Message)]
struct LiveStream {
    #[prost(string, tag = "1")]
    title: String,
}

#[tonic::async_trait]
trait Channels {
    async fn get_stream(&self, request: Request<Point>) -> Result<Response<LiveStream>, Status>;
}

struct Studio;

#[intercept(monitor, service = "test.Studio")]
#[tonic::async_trait]
impl Channels for Studio {
    async fn get_stream(&self, request: Request<Point>) -> Result<Response<LiveStream>, Status> {
        Ok(Response::new(LiveStream { title: format!("live at {}", request.get_ref().latitude) }))
    }
}

#[tokio::test]
async fn a_unary_message_named_stream_is_a_message() {
    let response = Studio.get_stream(Request::new(Point { latitude: 7, longitude: 0 })).await.unwrap();
    assert_eq!(response.into_inner().title, "live at 7");
    let totals = stats::method("/test.Studio/GetStream").expect("monitored");
    assert_eq!((totals.finished, totals.messages_received, totals.messages_sent), (1, 1, 1));
}
