//! Each call finalized exactly once, with its code, end to end on a real
//! tonic server over 127.0.0.1: OK, a handler's error, an error in the
//! response stream, and a client that goes away in the middle of each kind of
//! call; each direction's state made at most once, and nothing left alive.
//! (`endings.rs` has every ending of every kind as the client, the handler,
//! the stats and the metrics saw it.)
//!
//! One test function, in a binary of its own: the leak check at the end
//! (`stats::live_calls()`) counts the calls of the whole test binary.

use std::{future::pending, pin::Pin, time::Duration};

mod common;

use common::{
    events::{began, events, outcome, wait_for, Event, Recorder},
    eventually, in_real_time, serve_and_connect,
};
use interceptor_examples::pb::{
    route_guide_client::RouteGuideClient, route_guide_server::RouteGuide, Feature, Point, Rectangle, RouteNote,
    RouteSummary,
};
use interceptor_runtime::{intercept, stats, Direction};
use tokio_stream::{Stream, StreamExt};
use tonic::{transport::Channel, Code, Request, Response, Status, Streaming};

/// Fails in the ways a handler can, chosen by the request.
struct Faulty;

#[intercept(monitor, with = Recorder, service = "test.Faulty")]
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

const GET_FEATURE: &str = "/test.Faulty/GetFeature";
const LIST_FEATURES: &str = "/test.Faulty/ListFeatures";
const RECORD_ROUTE: &str = "/test.Faulty/RecordRoute";
const ROUTE_CHAT: &str = "/test.Faulty/RouteChat";

fn totals(method: &str) -> stats::MethodSnapshot {
    stats::method(method).unwrap_or_else(|| panic!("no stats for {method}"))
}

async fn final_codes(mut client: RouteGuideClient<Channel>) {
    let mut three = client.list_features(rect(3)).await.unwrap().into_inner();
    while three.message().await.unwrap().is_some() {}
    let ok = outcome(LIST_FEATURES, 0).await;
    assert_eq!((ok.code, ok.stats.messages_sent, ok.stats.messages_received), (Code::Ok, 3, 1));

    let status = client.get_feature(Point { latitude: -1, longitude: 0 }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let handler_error = outcome(GET_FEATURE, 0).await;
    assert_eq!((handler_error.code, handler_error.message.as_str()), (Code::InvalidArgument, "negative latitude"));
    assert_eq!(handler_error.stats.messages_sent, 0);

    let mut broken = client.list_features(rect(-1)).await.unwrap().into_inner();
    assert!(broken.message().await.unwrap().is_some());
    assert!(broken.message().await.unwrap().is_some());
    assert_eq!(broken.message().await.unwrap_err().code(), Code::DataLoss);
    let stream_error = outcome(LIST_FEATURES, 1).await;
    assert_eq!((stream_error.code, stream_error.stats.messages_sent), (Code::DataLoss, 2));

    // The client goes away in the middle of each kind of call.
    let mut endless = client.list_features(rect(-2)).await.unwrap().into_inner();
    assert!(endless.message().await.unwrap().is_some());
    drop(endless);
    let cancelled = outcome(LIST_FEATURES, 2).await;
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
    let cancelled = outcome(ROUTE_CHAT, 0).await;
    assert_eq!(cancelled.code, Code::Cancelled, "bidi: {cancelled:?}");
    assert!(cancelled.stats.messages_sent >= 1);

    let mut unary = client.clone();
    let call = tokio::spawn(async move { unary.get_feature(Point { latitude: 99, longitude: 0 }).await });
    eventually("the never-answering unary call started", || totals(GET_FEATURE).in_flight() == 1).await;
    call.abort();
    let cancelled = outcome(GET_FEATURE, 1).await;
    assert_eq!((cancelled.code, cancelled.stats.messages_received), (Code::Cancelled, 1), "unary: {cancelled:?}");

    let mut streaming = client.clone();
    let points = tokio_stream::iter([Point::default()]).chain(tokio_stream::pending());
    let call = tokio::spawn(async move { streaming.record_route(points).await });
    wait_for(RECORD_ROUTE, |e| e.iter().any(|e| matches!(e, Event::Arrived(Direction::Inbound, 0))).then_some(()))
        .await;
    eventually("the client stream's call is in flight", || {
        totals(RECORD_ROUTE).messages_received == 0 && totals(RECORD_ROUTE).in_flight() == 1
    })
    .await;
    call.abort();
    let cancelled = outcome(RECORD_ROUTE, 0).await;
    assert_eq!(cancelled.code, Code::Cancelled, "client stream: {cancelled:?}");

    // Every call was finalized exactly once, and none is left in flight.
    for method in [GET_FEATURE, LIST_FEATURES, RECORD_ROUTE, ROUTE_CHAT] {
        eventually(&format!("{method} has nothing in flight"), || totals(method).in_flight() == 0).await;
    }
    let mut calls = 0;
    for method in [GET_FEATURE, LIST_FEATURES, RECORD_ROUTE, ROUTE_CHAT] {
        let events = events(method);
        calls += began(&events);
        for call in events.iter().filter_map(|e| if let Event::Began(call) = e { Some(*call) } else { None }) {
            let ends = events.iter().filter(|e| matches!(e, Event::Ended(c, _) if *c == call)).count();
            assert_eq!(ends, 1, "{method}: call {call} ended {ends} times: {events:?}");
            // Each direction's state is made at most once (the outbound one
            // possibly while the handler runs, and kept for the response).
            let streams = [Direction::Inbound, Direction::Outbound]
                .map(|d| events.iter().filter(|e| matches!(e, Event::Stream(c, dd) if *c == call && *dd == d)).count());
            assert!(streams.iter().all(|&n| n <= 1), "{method}: on_stream ran {streams:?} times per direction");
        }
    }
    assert_eq!(calls, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_ends_once_with_its_code() {
    in_real_time(async {
        let (client, _server) = serve_and_connect(Faulty).await;
        final_codes(client).await;

        // Nothing of any call is still alive.
        eventually("no call state left", || stats::live_calls() == 0).await;
    })
    .await;
}
