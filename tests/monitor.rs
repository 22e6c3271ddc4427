//! `monitor`, what it records: a WARN for a message over `warn_size` (and none
//! for one exactly at it), the "call ended" event, and the per-method totals
//! `stats::method` and `stats::snapshot` report, to the message, byte, code
//! and nanosecond.
//!
//! The handlers are called in process. Each test has its own service, so its
//! totals are its own; its tracing events are captured on its own thread.

use std::{collections::BTreeMap, time::Duration};

mod common;

use common::{
    handlers::{client_stream, rect, service},
    in_real_time, on_paused_clock,
    traces::Capture,
};
use futures_util::StreamExt;
use interceptor_examples::pb::{route_guide_server::RouteGuide, Feature, Point, RouteNote};
use interceptor_runtime::{
    stats::{self, MethodSnapshot},
    RpcKind,
};
use prost::Message;
use tokio::time::Instant;
use tonic::{Code, Request};
use tracing::Level;

service!(WarnSize: monitor(warn_size = 300), service = "test.WarnSize");

/// A note of exactly `len` encoded bytes.
fn note_of(len: usize) -> RouteNote {
    // A string field: its tag, a 2-byte length, the text.
    let note = RouteNote { location: None, message: "x".repeat(len - 3) };
    assert_eq!(note.encoded_len(), len);
    note
}

/// A message exactly at `warn_size` passes without a word; one byte over, it
/// is warned about each way it travels, with the direction, its size and the
/// limit; the call's end is logged with its counts.
#[tokio::test]
async fn warn_size_warns_about_a_message_over_it_and_not_one_at_it() {
    in_real_time(async {
        let capture = Capture::start();
        let key = "/test.WarnSize/RouteChat";
        let (notes, stream) = client_stream::<RouteNote>();
        let mut echoes = WarnSize.route_chat(Request::new(stream)).await.unwrap().into_inner();

        notes.send(note_of(300)).unwrap();
        assert_eq!(echoes.next().await.unwrap().unwrap(), note_of(300));
        assert!(capture.of(key, Level::WARN).is_empty(), "a message of exactly warn_size is not over it");

        notes.send(note_of(301)).unwrap();
        assert_eq!(echoes.next().await.unwrap().unwrap(), note_of(301));
        drop(notes);
        assert!(echoes.next().await.is_none());

        let warnings: Vec<_> = capture
            .of(key, Level::WARN)
            .iter()
            .map(|w| {
                let field = |name| w.fields.get(name).map(str::to_owned);
                (w.message().to_owned(), field("direction"), field("bytes"), field("limit"))
            })
            .collect();
        let warned = |direction: &str| {
            let text = "message larger than the monitor's warn_size".to_owned();
            (text, Some(direction.to_owned()), Some("301".to_owned()), Some("300".to_owned()))
        };
        assert_eq!(warnings, [warned("recv"), warned("send")]);

        let ended = capture.of(key, Level::INFO);
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert_eq!(ended[0].message(), "call ended");
        let counts = ["grpc.code", "messages_received", "bytes_received", "messages_sent", "bytes_sent"]
            .map(|name| ended[0].fields.get(name));
        assert_eq!(counts, [Some("Ok"), Some("2"), Some("601"), Some("2"), Some("601")]);
        assert_eq!(ended[0].span.as_ref().map(|(name, _)| *name), Some("grpc.call"));
        assert_eq!(ended[0].span_field("rpc.kind"), Some("bidi_stream"));
    })
    .await;
}

service!(Totals: monitor, budget = 2, service = "test.Totals");

const GET_FEATURE: &str = "/test.Totals/GetFeature";
const LIST_FEATURES: &str = "/test.Totals/ListFeatures";

/// Exact totals of two methods: calls started and finished, messages and bytes
/// each way, the time the calls took (on tokio's paused clock, to the
/// nanosecond), the final codes and the limit that ended a call; the same from
/// `stats::method` and `stats::snapshot`, which lists only methods that had a
/// call, by name.
#[tokio::test(start_paused = true)]
async fn stats_hold_exact_totals_per_method() {
    on_paused_clock(async {
        // GetFeature: one call answered, one failed by its handler.
        let answered = Point { latitude: 7, longitude: 8 };
        let feature = Totals.get_feature(Request::new(answered)).await.unwrap().into_inner();
        let failing = Point { latitude: -2, longitude: 300 };
        let status = Totals.get_feature(Request::new(failing)).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);

        // ListFeatures: 2 features 250 ms apart, then the end. While the call
        // runs, it is started and not finished.
        let start = Instant::now();
        let two = rect(2, 0, false, 250);
        let mut features = Totals.list_features(Request::new(two)).await.unwrap().into_inner();
        let mut sent = vec![features.next().await.unwrap().unwrap()];
        let running = stats::method(LIST_FEATURES).expect("a call started");
        assert_eq!((running.started, running.finished, running.in_flight()), (1, 0, 1));
        sent.push(features.next().await.unwrap().unwrap());
        assert!(features.next().await.is_none());
        assert_eq!(Instant::now() - start, Duration::from_millis(250));

        // 3 features asked for, and a budget of 2: the third, due at 500 ms,
        // ends the call.
        let three = rect(3, 0, false, 250);
        let mut features = Totals.list_features(Request::new(three)).await.unwrap().into_inner();
        sent.push(features.next().await.unwrap().unwrap());
        sent.push(features.next().await.unwrap().unwrap());
        assert_eq!(features.next().await.unwrap().unwrap_err().code(), Code::ResourceExhausted);

        let get_feature = MethodSnapshot {
            method: GET_FEATURE,
            kind: RpcKind::Unary,
            started: 2,
            finished: 2,
            messages_received: 2,
            bytes_received: (answered.encoded_len() + failing.encoded_len()) as u64,
            messages_sent: 1,
            bytes_sent: feature.encoded_len() as u64,
            total_duration: Duration::ZERO,
            codes: vec![(Code::Ok, 1), (Code::FailedPrecondition, 1)],
            ended_by: BTreeMap::new(),
        };
        let list_features = MethodSnapshot {
            method: LIST_FEATURES,
            kind: RpcKind::ServerStreaming,
            started: 2,
            finished: 2,
            messages_received: 2,
            bytes_received: (two.encoded_len() + three.encoded_len()) as u64,
            messages_sent: 4,
            bytes_sent: sent.iter().map(|f: &Feature| f.encoded_len() as u64).sum(),
            total_duration: Duration::from_millis(250 + 500),
            codes: vec![(Code::Ok, 1), (Code::ResourceExhausted, 1)],
            ended_by: BTreeMap::from([("budget", 1)]),
        };
        assert_eq!(stats::method(GET_FEATURE), Some(get_feature.clone()));
        assert_eq!(stats::method(LIST_FEATURES), Some(list_features.clone()));
        assert_eq!((get_feature.in_flight(), get_feature.code(Code::NotFound)), (0, 0));

        // A method with no call has no totals.
        assert_eq!(stats::method("/test.Totals/RecordRoute"), None);
        let ours: Vec<MethodSnapshot> =
            stats::snapshot().into_iter().filter(|m| m.method.starts_with("/test.Totals/")).collect();
        assert_eq!(ours, [get_feature, list_features]);
    })
    .await;
}

/// The built-in interceptors' names, as a chain records the one that ended a
/// call (`Outcome::ended_by`, `stats` `ended_by`, the `limit` label of
/// `grpc_server_limited_total`), and as an interceptor that wraps one reports
/// it. `monitor` never ends a call, so only its name says it is there.
#[test]
fn the_built_in_interceptors_are_named_as_the_attribute_spells_them() {
    use interceptor_runtime::{
        budget::{Budget, BudgetConfig},
        monitor::{Monitor, MonitorConfig},
        Interceptor,
    };
    assert_eq!(Monitor::new(MonitorConfig::default()).name(), "monitor");
    assert_eq!(Budget::new(BudgetConfig::default()).name(), "budget");
}
