//! The example service's handlers, called directly with the test kit: no
//! network, interceptors active. These double as documentation of the kit
//! (`interceptor_runtime::testing`).

use std::{pin::Pin, time::Duration};

use interceptor_examples::{
    pb::{route_guide_server::RouteGuide, Feature, Point, Rectangle, RouteNote, RouteSummary},
    Guide,
};
use interceptor_runtime::{
    intercept,
    testing::{collect, collect_n, grpc_frame, probe, streaming, streaming_request, MockStream, Step},
};
use tokio_stream::{Stream, StreamExt};
use tonic::{
    codec::{Codec, EncodeBody},
    Code, Request, Response, Status, Streaming,
};

mod common;

use common::on_paused_clock;

fn point(i: i32) -> Point {
    Point { latitude: i, longitude: 0 }
}

fn note(text: &str) -> RouteNote {
    RouteNote { location: Some(point(1)), message: text.to_owned() }
}

#[tokio::test]
async fn monitor_counts_a_client_stream() {
    let client = MockStream::new();
    client.add_messages((0..5).map(point));
    let mut request = client.request();
    let call = probe(&mut request);

    let summary = Guide::default().record_route(request).await.unwrap().into_inner();

    assert_eq!(summary.point_count, 5);
    assert!(!client.has_more(), "every queued point was read");
    let outcome = call.outcome().expect("the call ended");
    assert_eq!(outcome.code, Code::Ok);
    assert_eq!((outcome.stats.messages_received, outcome.stats.messages_sent), (5, 1));
    let sent_bytes: u64 = (0..5).map(|i| prost::Message::encoded_len(&point(i)) as u64).sum();
    assert_eq!(outcome.stats.bytes_received, sent_bytes);
}

#[tokio::test]
async fn monitor_counts_a_bidi_stream_read_back_in_full() {
    let mut request = streaming_request(vec![note("a"), note("b")]);
    let call = probe(&mut request);

    let replies = collect(Guide::default().route_chat(request).await).await;

    // Each note comes back, followed by the earlier notes at the same place.
    let texts: Vec<_> = replies.messages.iter().map(|n| n.message.as_str()).collect();
    assert_eq!(texts, ["a", "b", "a"]);
    assert!(replies.status.is_none());
    let outcome = call.outcome().unwrap();
    assert_eq!((outcome.code, outcome.stats.messages_received, outcome.stats.messages_sent), (Code::Ok, 2, 3));
}

#[tokio::test]
async fn an_error_mid_stream_ends_the_call_with_its_code() {
    let client = MockStream::new();
    client.add_messages([point(1), point(2)]).add_error(Status::data_loss("the disk ate it")).add_message(point(3));
    let mut request = client.request();
    let call = probe(&mut request);

    let status = Guide::default().record_route(request).await.unwrap_err();

    assert_eq!((status.code(), status.message()), (Code::DataLoss, "the disk ate it"));
    assert!(client.has_more(), "the point after the error was never read");
    let outcome = call.outcome().unwrap();
    assert_eq!((outcome.code, outcome.stats.messages_received), (Code::DataLoss, 2));
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_call() {
    let rect = Rectangle { lo: Some(point(0)), hi: Some(Point { latitude: 29, longitude: 29 }) };
    let mut request = Request::new(rect);
    let call = probe(&mut request);

    let read = collect_n(Guide::default().list_features(request).await, 2).await;

    assert_eq!(read.messages.len(), 2);
    let outcome = call.outcome().expect("dropping the stream ends the call");
    assert_eq!((outcome.code, outcome.stats.messages_sent), (Code::Cancelled, 2));
    assert!(call.context().unwrap().cancelled().is_cancelled());
}

/// The routeguide handlers again, with a budget and a rate.
struct Limited;

#[intercept(monitor, service = "kit.Limited")]
#[tonic::async_trait]
impl RouteGuide for Limited {
    async fn get_feature(&self, _: Request<Point>) -> Result<Response<Feature>, Status> {
        Ok(Response::new(Feature::default()))
    }

    type ListFeaturesStream = Pin<Box<dyn Stream<Item = Result<Feature, Status>> + Send>>;

    async fn list_features(&self, _: Request<Rectangle>) -> Result<Response<Self::ListFeaturesStream>, Status> {
        Err(Status::unimplemented("not here"))
    }

    /// At most 10 points a second.
    #[intercept(rate(recv = 10))]
    async fn record_route(&self, request: Request<Streaming<Point>>) -> Result<Response<RouteSummary>, Status> {
        let mut points = request.into_inner();
        let mut summary = RouteSummary::default();
        while points.message().await?.is_some() {
            summary.point_count += 1;
        }
        Ok(Response::new(summary))
    }

    type RouteChatStream = Pin<Box<dyn Stream<Item = Result<RouteNote, Status>> + Send>>;

    /// An echo, 3 notes per stream.
    #[intercept(budget = 3)]
    async fn route_chat(
        &self,
        request: Request<Streaming<RouteNote>>,
    ) -> Result<Response<Self::RouteChatStream>, Status> {
        Ok(Response::new(Box::pin(request.into_inner())))
    }
}

#[tokio::test]
async fn a_budget_cuts_the_stream_at_exactly_n() {
    let client = MockStream::new();
    client.add_messages(["1", "2", "3", "4", "5"].map(note));
    let mut request = client.request();
    let call = probe(&mut request);

    let echoed = collect(Limited.route_chat(request).await).await;

    assert_eq!(echoed.messages.len(), 3);
    let status = echoed.status.expect("the budget ends the stream");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "budget: 3 messages per stream used up (recv)");
    assert!(client.has_more(), "the fifth note was never read");
    assert_eq!(call.outcome().unwrap().ended_by, Some("budget"));
}

/// The paused clock runs only as the rate makes the handler wait.
#[tokio::test(start_paused = true)]
async fn a_rate_spaces_the_messages() {
    on_paused_clock(async {
        let start = tokio::time::Instant::now();
        let summary = Limited.record_route(streaming_request((0..5).map(point))).await.unwrap().into_inner();
        assert_eq!(summary.point_count, 5);
        // The first point passes at once, each of the other four 100 ms later.
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(400) && waited < Duration::from_millis(500), "{waited:?}");
    })
    .await;
}

/// Delays and a permanent fallback: the client sends two points, pauses,
/// then keeps sending whatever the fallback makes, until it says stop.
#[tokio::test(start_paused = true)]
async fn a_scripted_client_with_pauses_and_a_fallback() {
    on_paused_clock(async {
        let client = MockStream::new();
        client.add_message(point(1)).add_delay(Duration::from_secs(5)).add_message(point(2));
        let mut more = 3;
        client.set(move || {
            more -= 1;
            (more >= 0).then(|| Step::Message(point(100)))
        });
        let start = tokio::time::Instant::now();

        let summary = Guide::default().record_route(client.request()).await.unwrap().into_inner();

        assert_eq!(summary.point_count, 2 + 3);
        assert!(!client.has_more());
        assert!(start.elapsed() >= Duration::from_secs(5));
    })
    .await;
}

/// The kit's frames are tonic's: a client's request body, encoded by tonic,
/// is the kit's frames one after another (empty, small and over one HTTP/2
/// frame).
#[tokio::test]
async fn grpc_frame_puts_a_message_on_the_wire_as_tonic_does() {
    let notes = [RouteNote::default(), note("hi"), note(&"x".repeat(40_000))];
    let encoder = tonic_prost::ProstCodec::<RouteNote, RouteNote>::default().encoder();
    let body = EncodeBody::new_client(encoder, tokio_stream::iter(notes.clone()).map(Ok), None, None);
    let tonic_wrote = axum::body::to_bytes(axum::body::Body::new(body), usize::MAX).await.unwrap();
    let kit_wrote: Vec<u8> = notes.iter().flat_map(|n| grpc_frame(n).to_vec()).collect();
    assert_eq!(tonic_wrote.len(), kit_wrote.len());
    assert!(tonic_wrote == kit_wrote, "the frames differ");
}

/// `testing::streaming`: a client stream fed as the test goes, whose error
/// reaches the handler as tonic's `Streaming` yields one.
#[tokio::test]
async fn a_client_stream_fed_by_the_test_reaches_the_handler() {
    let (client, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut request = Request::new(streaming(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)));
    let call = probe(&mut request);
    for i in 0..3 {
        client.send(Ok(point(i))).unwrap();
    }
    client.send(Err(Status::aborted("the client gave up"))).unwrap();

    let status = Guide::default().record_route(request).await.unwrap_err();

    assert_eq!((status.code(), status.message()), (Code::Aborted, "the client gave up"));
    let outcome = call.outcome().unwrap();
    assert_eq!((outcome.code, outcome.stats.messages_received), (Code::Aborted, 3));
}
