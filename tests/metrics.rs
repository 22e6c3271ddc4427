//! `monitor`'s export through the `metrics` facade: the names, labels and code
//! spellings gRPC dashboards expect. One test: the recorder is process-wide.

use std::pin::Pin;

mod common;

use common::{in_real_time, serve_and_connect};

use interceptor_examples::pb::{route_guide_server::RouteGuide, Feature, Point, Rectangle, RouteNote, RouteSummary};
use interceptor_runtime::intercept;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status, Streaming};

struct Metered;

#[intercept(monitor, budget = 3, service = "metrics.Test")]
#[tonic::async_trait]
impl RouteGuide for Metered {
    async fn get_feature(&self, _: Request<Point>) -> Result<Response<Feature>, Status> {
        Ok(Response::new(Feature::default()))
    }

    type ListFeaturesStream = Pin<Box<dyn Stream<Item = Result<Feature, Status>> + Send>>;

    /// `lo.latitude` features: more than 3 run into the budget.
    async fn list_features(&self, request: Request<Rectangle>) -> Result<Response<Self::ListFeaturesStream>, Status> {
        let n = request.into_inner().lo.unwrap_or_default().latitude;
        Ok(Response::new(Box::pin(tokio_stream::iter((0..n).map(|_| Ok(Feature::default()))))))
    }

    async fn record_route(&self, _: Request<Streaming<Point>>) -> Result<Response<RouteSummary>, Status> {
        Err(Status::unimplemented("not here"))
    }

    type RouteChatStream = Pin<Box<dyn Stream<Item = Result<RouteNote, Status>> + Send>>;

    async fn route_chat(
        &self,
        request: Request<Streaming<RouteNote>>,
    ) -> Result<Response<Self::RouteChatStream>, Status> {
        Ok(Response::new(Box::pin(request.into_inner())))
    }
}

fn rect(n: i32) -> Rectangle {
    Rectangle { lo: Some(Point { latitude: n, longitude: 0 }), hi: None }
}

/// Every metric: name, sorted labels, value. (A snapshot drains the
/// recorder, so it is taken once.)
type Metrics = Vec<(String, Vec<(String, String)>, DebugValue)>;

fn take(snapshotter: &Snapshotter) -> Metrics {
    let metrics = snapshotter.snapshot().into_vec().into_iter().map(|(key, _, _, value)| {
        let key = key.key();
        let mut labels: Vec<_> = key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
        labels.sort();
        (key.name().to_owned(), labels, value)
    });
    metrics.collect()
}

/// The value of the metric with this name and exactly these labels.
fn value<'a>(metrics: &'a Metrics, name: &str, labels: &[(&str, &str)]) -> Option<&'a DebugValue> {
    let mut wanted: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    wanted.sort();
    metrics.iter().find(|(n, l, _)| n == name && *l == wanted).map(|(_, _, v)| v)
}

#[tokio::test]
async fn monitor_exports_grpc_server_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder of this test binary");

    in_real_time(async {
        let (mut client, _server) = serve_and_connect(Metered).await;

        client.get_feature(Point::default()).await.unwrap();
        let mut two = client.list_features(rect(2)).await.unwrap().into_inner();
        while two.message().await.unwrap().is_some() {}
        let mut five = client.list_features(rect(5)).await.unwrap().into_inner();
        let mut received = 0;
        let status = loop {
            match five.message().await {
                Ok(Some(_)) => received += 1,
                Ok(None) => panic!("the budget should end the stream"),
                Err(status) => break status,
            }
        };
        assert_eq!((received, status.code()), (3, Code::ResourceExhausted));
        let unimplemented = client.record_route(tokio_stream::iter(vec![Point::default()])).await.unwrap_err();
        assert_eq!(unimplemented.code(), Code::Unimplemented);
    })
    .await;

    let metrics = take(&snapshotter);
    let unary = [("grpc_type", "unary"), ("grpc_service", "metrics.Test"), ("grpc_method", "GetFeature")];
    let list = [("grpc_type", "server_stream"), ("grpc_service", "metrics.Test"), ("grpc_method", "ListFeatures")];
    let record = [("grpc_type", "client_stream"), ("grpc_service", "metrics.Test"), ("grpc_method", "RecordRoute")];
    let with = |base: &[(&'static str, &'static str)], extra: (&'static str, &'static str)| {
        let mut labels = base.to_vec();
        labels.push(extra);
        labels
    };

    assert_eq!(value(&metrics, "grpc_server_started_total", &unary), Some(&DebugValue::Counter(1)));
    assert_eq!(
        value(&metrics, "grpc_server_handled_total", &with(&unary, ("grpc_code", "OK"))),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(value(&metrics, "grpc_server_msg_received_total", &unary), Some(&DebugValue::Counter(1)));
    assert_eq!(value(&metrics, "grpc_server_msg_sent_total", &unary), Some(&DebugValue::Counter(1)));

    assert_eq!(value(&metrics, "grpc_server_started_total", &list), Some(&DebugValue::Counter(2)));
    assert_eq!(
        value(&metrics, "grpc_server_handled_total", &with(&list, ("grpc_code", "OK"))),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        value(&metrics, "grpc_server_handled_total", &with(&list, ("grpc_code", "ResourceExhausted"))),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        value(&metrics, "grpc_server_limited_total", &with(&list, ("limit", "budget"))),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(value(&metrics, "grpc_server_msg_sent_total", &list), Some(&DebugValue::Counter(5)));
    match value(&metrics, "grpc_server_msg_sent_bytes", &list) {
        // Feature::default() encodes to 0 bytes.
        Some(DebugValue::Histogram(sizes)) => assert_eq!(sizes.len(), 5),
        other => panic!("no message size histogram: {other:?}"),
    }
    match value(&metrics, "grpc_server_handling_seconds", &list) {
        Some(DebugValue::Histogram(durations)) => assert_eq!(durations.len(), 2),
        other => panic!("no handling time histogram: {other:?}"),
    }
    assert_eq!(
        value(&metrics, "grpc_server_handled_total", &with(&record, ("grpc_code", "Unimplemented"))),
        Some(&DebugValue::Counter(1))
    );
}
