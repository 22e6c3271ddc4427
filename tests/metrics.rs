//! `monitor`'s export through the `metrics` facade: the names, labels and code
//! spellings gRPC dashboards expect; counters exact once each call has ended,
//! and live during a long call; message-size histograms with one sample per
//! call and direction.
//!
//! The recorder is process-wide and a snapshot drains it, so every test reads
//! the metrics through one ledger that adds up what each snapshot took, and
//! every test has a service (`grpc_service` label) of its own.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Mutex, OnceLock},
};

mod common;

use common::{eventually, in_real_time, serve_and_connect};

use interceptor_examples::pb::{route_guide_server::RouteGuide, Feature, Point, Rectangle, RouteNote, RouteSummary};
use interceptor_runtime::{intercept, stats};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Code, Request, Response, Status, Streaming};

/// The routeguide handlers these tests need, with `$($args)*` on the impl:
/// `GetFeature` answers (UNIMPLEMENTED for latitude -1), `ListFeatures` sends `lo.latitude` features named
/// by `lo.longitude` characters, `RecordRoute` counts, `RouteChat` echoes.
macro_rules! service {
    ($ty:ident: $($args:tt)*) => {
        struct $ty;

        #[intercept($($args)*)]
        #[tonic::async_trait]
        impl RouteGuide for $ty {
            async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
                match request.into_inner().latitude {
                    -1 => Err(Status::unimplemented("not here")),
                    _ => Ok(Response::new(Feature::default())),
                }
            }

            type ListFeaturesStream = Pin<Box<dyn Stream<Item = Result<Feature, Status>> + Send>>;

            async fn list_features(
                &self,
                request: Request<Rectangle>,
            ) -> Result<Response<Self::ListFeaturesStream>, Status> {
                let lo = request.into_inner().lo.unwrap_or_default();
                let name = "x".repeat(lo.longitude.max(0) as usize);
                let features = (0..lo.latitude).map(move |_| Ok(Feature { name: name.clone(), location: None }));
                Ok(Response::new(Box::pin(tokio_stream::iter(features))))
            }

            async fn record_route(&self, request: Request<Streaming<Point>>) -> Result<Response<RouteSummary>, Status> {
                let mut points = request.into_inner();
                let mut summary = RouteSummary::default();
                while points.message().await?.is_some() {
                    summary.point_count += 1;
                }
                Ok(Response::new(summary))
            }

            type RouteChatStream = Pin<Box<dyn Stream<Item = Result<RouteNote, Status>> + Send>>;

            async fn route_chat(
                &self,
                request: Request<Streaming<RouteNote>>,
            ) -> Result<Response<Self::RouteChatStream>, Status> {
                Ok(Response::new(Box::pin(request.into_inner())))
            }
        }
    };
}

// ---------------------------------------------------------------------------
// The ledger

/// Name and sorted labels.
type Key = (String, Vec<(String, String)>);

#[derive(Default)]
struct Ledger {
    counters: HashMap<Key, u64>,
    histograms: HashMap<Key, Vec<f64>>,
}

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the only recorder of this test binary");
        snapshotter
    })
}

/// What the recorder holds now, added to the ledger.
fn ledger() -> std::sync::MutexGuard<'static, Ledger> {
    static LEDGER: OnceLock<Mutex<Ledger>> = OnceLock::new();
    let mut ledger = LEDGER.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let ledger_ = &mut *ledger;
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<_> = key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
        labels.sort();
        let key = (key.name().to_owned(), labels);
        match value {
            DebugValue::Counter(n) => *ledger_.counters.entry(key).or_default() += n,
            DebugValue::Histogram(values) => {
                ledger_.histograms.entry(key).or_default().extend(values.into_iter().map(|v| v.into_inner()))
            }
            DebugValue::Gauge(_) => {}
        }
    }
    ledger
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    let mut labels: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    labels.sort();
    (name.to_owned(), labels)
}

/// A counter's value (0 if it was never created).
fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    ledger().counters.get(&key(name, labels)).copied().unwrap_or(0)
}

/// A histogram's samples so far.
fn samples(name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    ledger().histograms.get(&key(name, labels)).cloned().unwrap_or_default()
}

fn labels(kind: &'static str, service: &'static str, method: &'static str) -> [(&'static str, &'static str); 3] {
    [("grpc_type", kind), ("grpc_service", service), ("grpc_method", method)]
}

fn with(
    base: &[(&'static str, &'static str)],
    extra: (&'static str, &'static str),
) -> Vec<(&'static str, &'static str)> {
    let mut labels = base.to_vec();
    labels.push(extra);
    labels
}

fn bytes<M: Message>(messages: &[M]) -> u64 {
    messages.iter().map(|m| m.encoded_len() as u64).sum()
}

fn note(i: usize) -> RouteNote {
    RouteNote { location: Some(Point { latitude: i as i32, longitude: 1 }), message: "n".repeat(i % 50) }
}

// ---------------------------------------------------------------------------
// The tests

service!(Metered: monitor, budget = 3, service = "metrics.Test");

fn rect(n: i32) -> Rectangle {
    Rectangle { lo: Some(Point { latitude: n, longitude: 0 }), hi: None }
}

#[tokio::test]
async fn monitor_exports_grpc_server_metrics() {
    in_real_time(async {
        snapshotter();
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
        let unimplemented = client.get_feature(Point { latitude: -1, longitude: 0 }).await.unwrap_err();
        assert_eq!(unimplemented.code(), Code::Unimplemented);
        client.record_route(tokio_stream::iter(vec![Point::default()])).await.unwrap();

        let unary = labels("unary", "metrics.Test", "GetFeature");
        let list = labels("server_stream", "metrics.Test", "ListFeatures");
        let record = labels("client_stream", "metrics.Test", "RecordRoute");
        eventually("the calls are handled", || {
            counter("grpc_server_handled_total", &with(&list, ("grpc_code", "ResourceExhausted"))) == 1
                && counter("grpc_server_handled_total", &with(&record, ("grpc_code", "OK"))) == 1
        })
        .await;

        assert_eq!(counter("grpc_server_started_total", &unary), 2);
        assert_eq!(counter("grpc_server_handled_total", &with(&unary, ("grpc_code", "OK"))), 1);
        assert_eq!(counter("grpc_server_handled_total", &with(&unary, ("grpc_code", "Unimplemented"))), 1);
        assert_eq!(counter("grpc_server_msg_received_total", &unary), 2);
        assert_eq!(counter("grpc_server_msg_sent_total", &unary), 1);

        assert_eq!(counter("grpc_server_started_total", &list), 2);
        assert_eq!(counter("grpc_server_handled_total", &with(&list, ("grpc_code", "OK"))), 1);
        assert_eq!(counter("grpc_server_limited_total", &with(&list, ("limit", "budget"))), 1);
        // 2 features, then 3 before the budget cut the stream.
        assert_eq!(counter("grpc_server_msg_sent_total", &list), 5);
        // One sample per call and direction: the call's bytes that way.
        // `Feature::default()` encodes to 0 bytes.
        assert_eq!(samples("grpc_server_msg_sent_bytes", &list), [0.0, 0.0]);
        let request = rect(2).encoded_len() as f64;
        assert_eq!(samples("grpc_server_msg_received_bytes", &list), [request, request]);
        assert_eq!(samples("grpc_server_handling_seconds", &list).len(), 2);
        assert_eq!(counter("grpc_server_msg_received_total", &record), 1);
    })
    .await;
}

service!(Long: monitor, service = "metrics.Long");

/// Long streams, many at once: once each call has ended, the counters hold
/// exactly what the calls moved, though each stream adds its count to them
/// in batches (every 256 messages, and when it goes quiet), and the size
/// histograms hold one sample per call and direction whose sum is exact.
#[tokio::test]
async fn counts_are_exact_once_the_calls_end() {
    in_real_time(async {
        snapshotter();
        let (client, _server) = serve_and_connect(Long).await;
        let chat = labels("bidi_stream", "metrics.Long", "RouteChat");
        let record = labels("client_stream", "metrics.Long", "RecordRoute");
        let list = labels("server_stream", "metrics.Long", "ListFeatures");

        let notes: Vec<RouteNote> = (0..1000).map(note).collect();
        let points: Vec<Point> = (0..777).map(|i| Point { latitude: i, longitude: -i }).collect();
        let calls = (0..8).map(|i| {
            let mut client = client.clone();
            let (notes, points) = (notes.clone(), points.clone());
            async move {
                match i % 3 {
                    0 => {
                        let mut echoes = client.route_chat(tokio_stream::iter(notes)).await.unwrap().into_inner();
                        let mut n = 0;
                        while echoes.message().await.unwrap().is_some() {
                            n += 1;
                        }
                        assert_eq!(n, 1000);
                    }
                    1 => {
                        let summary = client.record_route(tokio_stream::iter(points)).await.unwrap().into_inner();
                        assert_eq!(summary.point_count, 777);
                    }
                    _ => {
                        let rect = Rectangle { lo: Some(Point { latitude: 600, longitude: 7 }), hi: None };
                        let mut features = client.list_features(rect).await.unwrap().into_inner();
                        while features.message().await.unwrap().is_some() {}
                    }
                }
            }
        });
        futures_util::future::join_all(calls).await;
        eventually("the calls are handled", || {
            counter("grpc_server_handled_total", &with(&chat, ("grpc_code", "OK"))) == 3
                && counter("grpc_server_handled_total", &with(&record, ("grpc_code", "OK"))) == 3
                && counter("grpc_server_handled_total", &with(&list, ("grpc_code", "OK"))) == 2
        })
        .await;

        assert_eq!(counter("grpc_server_msg_received_total", &chat), 3000);
        assert_eq!(counter("grpc_server_msg_sent_total", &chat), 3000);
        assert_eq!(samples("grpc_server_msg_received_bytes", &chat), [bytes(&notes) as f64; 3]);
        assert_eq!(samples("grpc_server_msg_sent_bytes", &chat), [bytes(&notes) as f64; 3]);
        assert_eq!(counter("grpc_server_msg_received_total", &record), 3 * 777);
        assert_eq!(counter("grpc_server_msg_sent_total", &record), 3);
        assert_eq!(samples("grpc_server_msg_received_bytes", &record), [bytes(&points) as f64; 3]);
        assert_eq!(counter("grpc_server_msg_sent_total", &list), 2 * 600);
        let feature = Feature { name: "x".repeat(7), location: None };
        assert_eq!(samples("grpc_server_msg_sent_bytes", &list), [600.0 * feature.encoded_len() as f64; 2]);

        // The per-method totals agree.
        let totals = stats::method("/metrics.Long/RouteChat").unwrap();
        assert_eq!((totals.messages_received, totals.bytes_received), (3000, 3 * bytes(&notes)));
    })
    .await;
}

service!(Live: monitor, service = "metrics.Live");

/// A stream that is still open: what it moved reaches the counters shortly
/// after it goes quiet, not only when it ends.
#[tokio::test]
async fn an_open_stream_is_counted_while_it_runs() {
    in_real_time(async {
        snapshotter();
        let (mut client, _server) = serve_and_connect(Live).await;
        let chat = labels("bidi_stream", "metrics.Live", "RouteChat");
        let (tx, rx) = mpsc::channel(16);
        let mut echoes = client.route_chat(ReceiverStream::new(rx)).await.unwrap().into_inner();
        for i in 0..10 {
            tx.send(note(i)).await.unwrap();
            echoes.message().await.unwrap().unwrap();
        }
        eventually("10 notes counted each way while the call is open", || {
            counter("grpc_server_msg_received_total", &chat) == 10 && counter("grpc_server_msg_sent_total", &chat) == 10
        })
        .await;
        assert_eq!(counter("grpc_server_handled_total", &with(&chat, ("grpc_code", "OK"))), 0, "the call is open");
        assert!(samples("grpc_server_msg_received_bytes", &chat).is_empty(), "sizes come when the call ends");

        // A busy stream: 600 more notes without waiting for their echoes.
        for i in 0..600 {
            tx.send(note(i)).await.unwrap();
        }
        for _ in 0..600 {
            echoes.message().await.unwrap().unwrap();
        }
        eventually("610 notes counted each way", || counter("grpc_server_msg_received_total", &chat) == 610).await;

        drop(tx);
        assert!(echoes.message().await.unwrap().is_none());
        eventually("the call is handled", || {
            counter("grpc_server_handled_total", &with(&chat, ("grpc_code", "OK"))) == 1
        })
        .await;
        assert_eq!(
            (counter("grpc_server_msg_received_total", &chat), counter("grpc_server_msg_sent_total", &chat)),
            (610, 610)
        );
    })
    .await;
}

service!(Held: monitor, rate(recv = 20), service = "metrics.Held");

/// A stream held back by `rate` is counted while it waits, too.
#[tokio::test]
async fn a_stream_held_back_by_rate_is_counted_while_it_waits() {
    in_real_time(async {
        snapshotter();
        let (mut client, _server) = serve_and_connect(Held).await;
        let record = labels("client_stream", "metrics.Held", "RecordRoute");
        let (tx, rx) = mpsc::channel(64);
        for i in 0..40 {
            tx.send(Point { latitude: i, longitude: 0 }).await.unwrap();
        }
        // 40 points at 20 a second: the call takes about 2 s.
        let call = tokio::spawn(async move { client.record_route(ReceiverStream::new(rx)).await });
        eventually("some points counted before the call ends", || {
            (2..40).contains(&counter("grpc_server_msg_received_total", &record))
        })
        .await;
        drop(tx);
        assert_eq!(call.await.unwrap().unwrap().into_inner().point_count, 40);
        eventually("the call is handled", || {
            counter("grpc_server_handled_total", &with(&record, ("grpc_code", "OK"))) == 1
        })
        .await;
        assert_eq!(counter("grpc_server_msg_received_total", &record), 40);
    })
    .await;
}

struct Busy;

impl Busy {
    /// Reads what the counter holds after each of its first 600 messages.
    #[intercept(monitor, service = "metrics.Busy")]
    async fn record_route(&self, request: Request<Streaming<Point>>) -> Result<Response<RouteSummary>, Status> {
        let received = labels("client_stream", "metrics.Busy", "RecordRoute");
        let mut points = request.into_inner();
        let mut seen = Vec::new();
        while points.message().await?.is_some() {
            seen.push(counter("grpc_server_msg_received_total", &received));
        }
        // `seen[i]`, read once message i + 1 is delivered: the batches of 256
        // that completed.
        let batches: Vec<_> = [254, 255, 510, 511, 599].iter().map(|&i| seen[i]).collect();
        assert_eq!(batches, [0, 256, 256, 512, 512]);
        Ok(Response::new(RouteSummary { point_count: seen.len() as i32, ..Default::default() }))
    }
}

/// A stream that never goes quiet (every message is there when asked for)
/// adds its count every 256 messages, not only at its end.
#[tokio::test]
async fn a_busy_stream_is_counted_every_256_messages() {
    snapshotter();
    let points = (0..600).map(|i| Point { latitude: i, longitude: i });
    let summary = Busy.record_route(interceptor_runtime::testing::streaming_request(points)).await.unwrap();
    assert_eq!(summary.into_inner().point_count, 600);
    let received = labels("client_stream", "metrics.Busy", "RecordRoute");
    assert_eq!(counter("grpc_server_msg_received_total", &received), 600);
}

service!(Quiet: monitor, service = "metrics.Quiet");

/// The first time a stream goes quiet, what it moved reaches the counters
/// at once: no time passes (the clock is paused, and this test never lets
/// the runtime idle) while the handler waits for its fourth message.
#[tokio::test(start_paused = true)]
async fn a_stream_that_goes_quiet_is_counted_at_once() {
    snapshotter();
    let received = labels("client_stream", "metrics.Quiet", "RecordRoute");
    let mock = interceptor_runtime::testing::MockStream::new();
    mock.add_messages((0..3).map(|i| Point { latitude: i, longitude: i }));
    mock.add_delay(std::time::Duration::from_secs(3600));
    mock.add_message(Point::default());
    let call = tokio::spawn(Quiet.record_route(mock.request()));
    let start = tokio::time::Instant::now();
    let mut yields = 0;
    while counter("grpc_server_msg_received_total", &received) < 3 {
        yields += 1;
        assert!(yields < 1000, "the three messages are not counted while the stream is quiet");
        tokio::task::yield_now().await;
    }
    assert_eq!(start.elapsed(), std::time::Duration::ZERO);
    assert_eq!(call.await.unwrap().unwrap().into_inner().point_count, 4);
    assert_eq!(counter("grpc_server_msg_received_total", &received), 4);
}

service!(Spells: monitor, service = "metrics.Spells");

/// After its first quiet spell, a stream's next quiet spells add their
/// counts once a 100 ms timer fires, not at once: a stream that pauses often
/// adds to the counters at most every 100 ms. The clock is paused and moved
/// by hand.
#[tokio::test(start_paused = true)]
async fn later_quiet_spells_are_counted_when_the_timer_fires() {
    use std::time::Duration;
    snapshotter();
    let received = labels("client_stream", "metrics.Spells", "RecordRoute");
    let point = |i| Point { latitude: i, longitude: i };
    let mock = interceptor_runtime::testing::MockStream::new();
    mock.add_messages((0..3).map(point)).add_delay(Duration::from_millis(10));
    mock.add_messages((3..5).map(point)).add_delay(Duration::from_millis(10));
    mock.add_messages((5..7).map(point)).add_delay(Duration::from_secs(3600));
    let call = tokio::spawn(Spells.record_route(mock.request()));
    let counted = || counter("grpc_server_msg_received_total", &received);
    async fn settle() {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    }

    settle().await;
    assert_eq!(counted(), 3, "the first quiet spell adds at once");
    tokio::time::advance(Duration::from_millis(10)).await;
    settle().await;
    assert_eq!(counted(), 3, "the second sets the timer (100 ms)");
    tokio::time::advance(Duration::from_millis(10)).await;
    settle().await;
    assert_eq!(counted(), 3, "the third finds it running");
    tokio::time::advance(Duration::from_millis(100)).await;
    settle().await;
    assert_eq!(counted(), 7, "the timer fired: all seven");
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(call.await.unwrap().unwrap().into_inner().point_count, 7);
    assert_eq!(counted(), 7);
}
