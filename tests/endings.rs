//! Every call ends as it really ended: end to end on real tonic servers over
//! 127.0.0.1, with `InterceptLayer` in the server as the README's setup has it,
//! for the four RPC kinds and both positions of the attribute. Each ending
//! is checked the three ways it is seen: what the handler's stream yielded,
//! the status the client received, and the outcome the interceptors, the
//! per-method stats and the metrics recorded (and, for a panic, its ERROR
//! log).
//!
//! The clients misbehave as real ones do: tonic clients that abort a call or
//! drop a stream, a raw HTTP/2 client that resets its stream (with CANCEL or
//! another reason) while both halves are open, and a TCP proxy whose
//! connection is cut. The handlers read their streams to the end.
//!
//! The main test runs its scenarios one after another: the per-method
//! totals and the metrics are process-wide. The other tests use services of
//! their own.

use std::{net::SocketAddr, sync::OnceLock};

use interceptor_runtime::stats;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::Channel, Code, Status};

#[macro_use]
mod endings_kit;

use endings_kit::{
    connect, ledger, logs, next_id, note, point, proxy, rect, request, serve, RawCall, RawConnection, Saw,
};
use interceptor_examples::pb::route_guide_client::RouteGuideClient;

ends_service!(
    ImplEnds,
    impl: [#[interceptor_runtime::intercept(
        monitor,
        budget(streams = 16),
        with = crate::endings_kit::probe(),
        service = "endings.Impl",
    )]],
    method: []
);

ends_service!(
    MethodEnds,
    impl: [],
    method: [#[interceptor_runtime::intercept(
        monitor,
        budget(streams = 16),
        with = crate::endings_kit::probe(),
        service = "endings.Method",
    )]]
);

ends_service!(
    BudgetEnds,
    impl: [#[interceptor_runtime::intercept(
        monitor,
        budget(streams = 2),
        with = crate::endings_kit::probe(),
        service = "endings.Budget",
    )]],
    method: []
);

ends_service!(
    LayerlessEnds,
    impl: [#[interceptor_runtime::intercept(monitor, with = crate::endings_kit::probe(), service = "endings.NoLayer")]],
    method: []
);

/// The metrics recorder and the log collector, installed before any call:
/// `monitor` makes its metric handles on a method's first call.
fn setup() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    logs::install();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the only recorder of this test binary");
        snapshotter
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Unary,
    Server,
    Client,
    Bidi,
}

use Kind::*;

const KINDS: [Kind; 4] = [Unary, Server, Client, Bidi];

impl Kind {
    fn method(self) -> &'static str {
        match self {
            Unary => "GetFeature",
            Server => "ListFeatures",
            Client => "RecordRoute",
            Bidi => "RouteChat",
        }
    }

    /// Whether the handler reads a client stream.
    fn streams_in(self) -> bool {
        matches!(self, Client | Bidi)
    }
}

/// A server under test: its service name and a client.
struct Target {
    service: &'static str,
    addr: SocketAddr,
    client: RouteGuideClient<Channel>,
}

impl Target {
    async fn new<S: interceptor_examples::pb::route_guide_server::RouteGuide>(service: &'static str, s: S) -> Self {
        let addr = serve(s, true).await;
        Target { service, addr, client: connect(addr).await }
    }

    /// The method as the stats and the logs name it (the attribute's
    /// `service`).
    fn path(&self, kind: Kind) -> String {
        format!("/{}/{}", self.service, kind.method())
    }
}

impl Kind {
    /// The HTTP/2 path the server routes: the .proto's service name.
    fn route(self) -> String {
        format!("/routeguide.RouteGuide/{}", self.method())
    }
}

/// Makes a complete call of `kind` that sends (or, for server streaming,
/// asks for) `n` messages: the client's final status and the messages it
/// received.
async fn call(
    client: &mut RouteGuideClient<Channel>,
    kind: Kind,
    id: u64,
    what: &str,
    panic_in: &str,
    n: i32,
) -> (Result<(), Status>, usize) {
    async fn drain<T>(stream: &mut tonic::Streaming<T>) -> (Result<(), Status>, usize) {
        let mut received = 0;
        loop {
            match stream.message().await {
                Ok(Some(_)) => received += 1,
                Ok(None) => return (Ok(()), received),
                Err(status) => return (Err(status), received),
            }
        }
    }
    match kind {
        Unary => match client.get_feature(request(point(1), id, what, panic_in)).await {
            Ok(_) => (Ok(()), 1),
            Err(status) => (Err(status), 0),
        },
        Server => match client.list_features(request(rect(n), id, what, panic_in)).await {
            Ok(response) => drain(&mut response.into_inner()).await,
            Err(status) => (Err(status), 0),
        },
        Client => {
            let points = tokio_stream::iter((0..n).map(point));
            match client.record_route(request(points, id, what, panic_in)).await {
                Ok(_) => (Ok(()), 1),
                Err(status) => (Err(status), 0),
            }
        }
        Bidi => {
            let notes = tokio_stream::iter((0..n).map(note));
            match client.route_chat(request(notes, id, what, panic_in)).await {
                Ok(response) => drain(&mut response.into_inner()).await,
                Err(status) => (Err(status), 0),
            }
        }
    }
}

/// What one scenario expects the call's outcome to be.
struct Expected {
    code: Code,
    /// A part of the outcome's message.
    message: &'static str,
}

/// The counts of each code for `path`, from `monitor`'s per-method totals.
fn codes(path: &str) -> Vec<(Code, u64)> {
    stats::method(path).map(|m| m.codes).unwrap_or_default()
}

fn code_count(codes: &[(Code, u64)], code: Code) -> u64 {
    codes.iter().find(|(c, _)| *c == code).map_or(0, |(_, n)| *n)
}

/// grpc-go's spelling of a code, as the metrics label it.
fn go_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Internal => "Internal",
        other => panic!("not expected here: {other:?}"),
    }
}

/// The scenario's call ended as `expected`: in the interceptors' outcome
/// (when the probe started), exactly once; in `monitor`'s totals; and in the
/// metrics, which count it under that code and no other.
async fn check_outcome(
    target: &Target,
    kind: Kind,
    id: u64,
    before: &[(Code, u64)],
    expected: &Expected,
    probe_started: bool,
    what: &str,
) {
    let path = target.path(kind);
    if probe_started {
        let outcome = ledger().wait_outcome(id).await;
        assert_eq!(outcome.code, expected.code, "{what}: {path}: {outcome:?}");
        assert!(outcome.message.contains(expected.message), "{what}: {path}: {outcome:?}");
        assert_eq!(ledger().ends_of(id), 1, "{what}: {path} ended more than once");
    }
    let counted = endings_kit::eventually(&format!("{what}: {path} counted"), || {
        let after = codes(&path);
        (after.iter().map(|(_, n)| n).sum::<u64>() > before.iter().map(|(_, n)| n).sum::<u64>()).then_some(after)
    })
    .await;
    assert_eq!(
        code_count(&counted, expected.code),
        code_count(before, expected.code) + 1,
        "{what}: {path}: monitor's totals {counted:?}, before {before:?}"
    );
    let snapshot = setup().snapshot().into_vec();
    let handled: Vec<(String, u64)> = snapshot
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let key = key.key();
            let labels: Vec<_> = key.labels().collect();
            let label = |name: &str| labels.iter().find(|l| l.key() == name).map(|l| l.value().to_owned());
            let ours = key.name() == "grpc_server_handled_total"
                && label("grpc_service").as_deref() == Some(target.service)
                && label("grpc_method").as_deref() == Some(kind.method());
            match (ours, value) {
                (true, DebugValue::Counter(n)) if n > 0 => Some((label("grpc_code").unwrap_or_default(), n)),
                _ => None,
            }
        })
        .collect();
    assert_eq!(handled, [(go_name(expected.code).to_owned(), 1)], "{what}: {path}: grpc_server_handled_total");
}

/// Drains the metrics, so that the next scenario counts from zero.
fn drain_metrics() {
    let _ = setup().snapshot();
}

/// An ERROR was logged about `path` for a panic at `site` (`handler`,
/// `response stream`, or an interceptor's `hook`), with the panic's message.
fn check_logged(path: &str, site: &str, hook: Option<&str>, panic: &str) {
    let logged = logs::errors_about(path);
    let found = logged.iter().any(|fields| {
        let field = |name: &str| fields.get(name).map(String::as_str);
        let at = match hook {
            None => field("panicked_in") == Some(site),
            Some(hook) => {
                field("panicked_in") == Some("interceptor")
                    && field("interceptor") == Some("probe")
                    && field("hook") == Some(hook)
            }
        };
        at && field("panic").is_some_and(|p| p.contains(panic))
    });
    assert!(found, "no ERROR about {path} at {site} {hook:?}: {logged:?}");
}

fn assert_status(got: &Result<(), Status>, code: Code, message: &str, what: &str) {
    match got {
        Ok(()) => assert_eq!(code, Code::Ok, "{what}: the client got OK"),
        Err(status) => {
            assert_eq!(status.code(), code, "{what}: {status:?}");
            assert!(status.message().contains(message), "{what}: {status:?}");
        }
    }
}

/// Complete calls end OK, and each handler saw a clean end of its stream.
async fn clean_ends(target: &mut Target) {
    for kind in KINDS {
        let (id, before) = (next_id(), codes(&target.path(kind)));
        drain_metrics();
        let (got, received) = call(&mut target.client, kind, id, "", "", 3).await;
        assert_status(&got, Code::Ok, "", "a complete call");
        let expected_received = match kind {
            Unary | Client => 1,
            Server | Bidi => 3,
        };
        assert_eq!(received, expected_received, "{kind:?}");
        let saw = ledger().wait_saw(id).await;
        let read = if kind.streams_in() { 3 } else { 1 };
        assert_eq!(saw, Saw { messages: read, end: Ok(()) }, "{kind:?}");
        check_outcome(target, kind, id, &before, &Expected { code: Code::Ok, message: "" }, true, "OK").await;
    }
}

/// tonic clients that give up: a unary call aborted while its handler
/// waits, a server stream dropped, a client stream aborted mid-upload.
async fn tonic_clients_cancel(target: &mut Target) {
    let cancelled = Expected { code: Code::Cancelled, message: "" };

    let (id, before) = (next_id(), codes(&target.path(Unary)));
    drain_metrics();
    let mut client = target.client.clone();
    let call = tokio::spawn(async move { client.get_feature(request(point(1), id, "hang", "")).await });
    ledger().wait_progress(id, 1).await;
    call.abort();
    check_outcome(target, Unary, id, &before, &cancelled, true, "unary aborted").await;

    let (id, before) = (next_id(), codes(&target.path(Server)));
    drain_metrics();
    let mut features = target.client.list_features(request(rect(0), id, "endless", "")).await.unwrap().into_inner();
    assert!(features.message().await.unwrap().is_some());
    drop(features);
    check_outcome(target, Server, id, &before, &cancelled, true, "server stream dropped").await;

    // Mid-upload: the request stream stays open; aborting the call resets it.
    let (id, before) = (next_id(), codes(&target.path(Client)));
    drain_metrics();
    let (tx, rx) = mpsc::channel(4);
    let mut client = target.client.clone();
    let call = tokio::spawn(async move { client.record_route(request(ReceiverStream::new(rx), id, "", "")).await });
    tx.send(point(0)).await.unwrap();
    tx.send(point(1)).await.unwrap();
    ledger().wait_progress(id, 2).await;
    call.abort();
    let saw = ledger().wait_saw(id).await;
    assert_eq!(saw.messages, 2);
    assert_eq!(saw.end, Err((Code::Cancelled, "the client cancelled the call".into())), "not a clean end");
    assert_eq!(ledger().cause_of(id).as_deref(), Some("h2 CANCEL"), "the reset, in the status's sources");
    let expected = Expected { code: Code::Cancelled, message: "the client cancelled the call" };
    check_outcome(target, Client, id, &before, &expected, true, "client stream aborted").await;
    drop(tx);
}

/// A raw HTTP/2 client resets its stream while both halves are open: with
/// CANCEL for every kind, and with another reason mid-upload.
async fn raw_clients_reset(target: &mut Target) {
    for (kind, reason) in KINDS
        .map(|kind| (kind, h2::Reason::CANCEL))
        .into_iter()
        .chain([(Client, h2::Reason::INTERNAL_ERROR), (Bidi, h2::Reason::PROTOCOL_ERROR)])
    {
        let (id, before) = (next_id(), codes(&target.path(kind)));
        drain_metrics();
        let what = match kind {
            Unary => "hang",
            Server => "endless",
            Client | Bidi => "",
        };
        let mut raw = RawCall::open(target.addr, &kind.route(), id, what).await;
        match kind {
            Unary => raw.send(&point(1), true),
            Server => raw.send(&rect(0), true),
            Client => (0..2).for_each(|i| raw.send(&point(i), false)),
            Bidi => (0..2).for_each(|i| raw.send(&note(i), false)),
        }
        ledger().wait_progress(id, if kind.streams_in() { 2 } else { 1 }).await;
        raw.reset(reason);
        let message = match reason {
            h2::Reason::CANCEL => "the client cancelled the call".to_owned(),
            other => format!("the client reset the stream ({other:?})"),
        };
        if kind.streams_in() {
            let saw = ledger().wait_saw(id).await;
            assert_eq!(saw.messages, 2, "{kind:?} {reason:?}");
            let (code, seen) = saw.end.clone().expect_err("not a clean end");
            assert_eq!(code, Code::Cancelled, "{kind:?} {reason:?}");
            // A bidi call's response stream is open too: when the server
            // notices the reset there first, the call ends with that, which
            // knows no reason.
            let noticed_on_response = kind == Bidi && seen == "the client went away";
            assert!(seen == message || noticed_on_response, "{kind:?} {reason:?}: {saw:?}");
            if !noticed_on_response {
                let cause = ledger().cause_of(id);
                assert_eq!(cause, Some(format!("h2 {reason:?}")), "{kind:?}: the reset, in the status's sources");
            }
        }
        let expected = Expected { code: Code::Cancelled, message: "" };
        check_outcome(target, kind, id, &before, &expected, true, &format!("reset {reason:?}")).await;
        if let Some(saw) = ledger().saw_of(id).filter(|_| kind.streams_in()) {
            let outcome = ledger().outcome_of(id).unwrap();
            assert_eq!(Err((outcome.code, outcome.message.clone())), saw.end, "the handler saw how the call ended");
        }
        drop(raw);
    }
}

/// The client's connection is lost in the middle of each kind of call: a
/// proxy between the two is cut.
async fn connections_lost(target: &mut Target) {
    for kind in KINDS {
        let (id, before) = (next_id(), codes(&target.path(kind)));
        drain_metrics();
        let (addr, cut) = proxy(target.addr).await;
        let mut client = connect(addr).await;
        let (tx_points, rx_points) = mpsc::channel(4);
        let (tx_notes, rx_notes) = mpsc::channel(4);
        let call = tokio::spawn(async move {
            match kind {
                Unary => drop(client.get_feature(request(point(1), id, "hang", "")).await),
                Server => {
                    let mut features = client.list_features(request(rect(0), id, "endless", "")).await?.into_inner();
                    while features.message().await?.is_some() {}
                }
                Client => drop(client.record_route(request(ReceiverStream::new(rx_points), id, "", "")).await),
                Bidi => {
                    let notes = ReceiverStream::new(rx_notes);
                    let mut replies = client.route_chat(request(notes, id, "", "")).await?.into_inner();
                    while replies.message().await?.is_some() {}
                }
            }
            Ok::<_, Status>(())
        });
        for i in 0..2 {
            match kind {
                Client => tx_points.send(point(i)).await.unwrap(),
                Bidi => tx_notes.send(note(i)).await.unwrap(),
                _ => {}
            }
        }
        ledger().wait_progress(id, if kind.streams_in() { 2 } else { 1 }).await;
        cut.cut().await;
        if kind.streams_in() {
            let saw = ledger().wait_saw(id).await;
            assert_eq!(saw.messages, 2, "{kind:?}");
            let (code, message) = saw.end.clone().expect_err("not a clean end");
            assert_eq!(code, Code::Cancelled, "{kind:?}: {saw:?}");
            // As with a reset: a bidi call may notice on its response first.
            let lost = message.contains("the connection to the client was lost");
            assert!(lost || (kind == Bidi && message == "the client went away"), "{kind:?}: {saw:?}");
            if lost {
                let cause = ledger().cause_of(id);
                assert!(cause.as_deref().is_some_and(|c| c.starts_with("io ")), "{kind:?}: {cause:?}");
            }
        }
        let expected = Expected { code: Code::Cancelled, message: "" };
        check_outcome(target, kind, id, &before, &expected, true, "connection lost").await;
        let _ = call.await;
    }
}

/// A handler that panics: the client gets INTERNAL, the panic is logged,
/// the call ends INTERNAL; and the same for a response stream that panics.
async fn panics(target: &mut Target) {
    let internal = |message| Expected { code: Code::Internal, message };
    for kind in KINDS {
        let (id, before) = (next_id(), codes(&target.path(kind)));
        drain_metrics();
        let (got, _) = call(&mut target.client, kind, id, "panic", "", 3).await;
        assert_status(&got, Code::Internal, "the handler panicked", &format!("{kind:?} handler panic"));
        check_outcome(target, kind, id, &before, &internal("the handler panicked"), true, "handler panic").await;
        check_logged(&target.path(kind), "handler", None, "the handler panics");
    }
    for kind in [Server, Bidi] {
        let (id, before) = (next_id(), codes(&target.path(kind)));
        drain_metrics();
        let (got, received) = call(&mut target.client, kind, id, "panic-stream", "", 3).await;
        assert_status(&got, Code::Internal, "the response stream panicked", &format!("{kind:?} stream panic"));
        assert_eq!(received, 1, "{kind:?}: the message before the panic arrives");
        let expected = internal("the response stream panicked");
        check_outcome(target, kind, id, &before, &expected, true, "response stream panic").await;
        check_logged(&target.path(kind), "response stream", None, "the response stream panics");
        let outcome = ledger().outcome_of(id).unwrap();
        assert_eq!(outcome.stats.messages_sent, 1, "{kind:?}: {outcome:?}");
    }
}

/// An interceptor whose hook panics: the client gets INTERNAL (but for
/// `on_end`, which runs once the outcome is set), the panic is logged with
/// the interceptor and the hook, and every interceptor that started is
/// ended.
async fn hook_panics(target: &mut Target) {
    for hook in ["on_start", "on_stream", "poll_message", "on_delivered", "poll_interrupt", "on_end"] {
        for kind in KINDS {
            let (id, before) = (next_id(), codes(&target.path(kind)));
            drain_metrics();
            let (got, _) = call(&mut target.client, kind, id, "", hook, 3).await;
            let what = format!("{kind:?} {hook} panic");
            let expected = if hook == "on_end" {
                assert_status(&got, Code::Ok, "", &what);
                Expected { code: Code::Ok, message: "" }
            } else {
                assert_status(&got, Code::Internal, "an interceptor panicked", &what);
                Expected { code: Code::Internal, message: "an interceptor panicked" }
            };
            // The probe that panics in `on_start` never started: it has no
            // `on_end` to record the outcome; monitor and budget, which
            // started, have theirs.
            check_outcome(target, kind, id, &before, &expected, hook != "on_start", &what).await;
            check_logged(&target.path(kind), "interceptor", Some(hook), &format!("the probe panics in {hook}"));
            if hook != "on_start" && hook != "on_end" {
                assert_eq!(ledger().outcome_of(id).unwrap().ended_by, Some("probe"), "{what}");
            }
        }
    }
}

/// An OK response that never reached its client is CANCELLED: a handler
/// still busy (blocking its thread) when the client gives up, which
/// answers afterwards.
async fn responses_to_clients_gone(target: &mut Target) {
    for kind in [Unary, Client] {
        let (id, before) = (next_id(), codes(&target.path(kind)));
        let outcome = answer_after_the_client_left(target.addr, kind, id).await;
        let expected = (Code::Cancelled, "the client went away before the response was sent");
        assert_eq!((outcome.code, outcome.message.as_str()), expected, "{kind:?}");
        assert_eq!(ledger().ends_of(id), 1);
        let path = target.path(kind);
        endings_kit::eventually(&format!("{path} counted"), || {
            (code_count(&codes(&path), Code::Cancelled) == code_count(&before, Code::Cancelled) + 1).then_some(())
        })
        .await;
    }
}

/// Makes a call of `kind` whose handler reads its request to the end and
/// then blocks until the client has reset the call; the outcome.
async fn answer_after_the_client_left(addr: SocketAddr, kind: Kind, id: u64) -> interceptor_runtime::Outcome {
    let connection = RawConnection::open(addr).await;
    let mut call = connection.call(&kind.route(), id, "block").await;
    match kind {
        Unary => call.send(&point(1), true),
        _ => {
            call.send(&point(0), false);
            call.send(&point(1), true);
        }
    }
    ledger().wait_blocked(id).await;
    // The client gives up: its reset goes out on the connection before the
    // next call's request, which the server answers once it has read both.
    call.reset(h2::Reason::CANCEL);
    let mut next = connection.call(&Unary.route(), next_id(), "").await;
    next.send(&point(1), true);
    assert_eq!(next.status().await, Code::Ok, "the next call");
    ledger().unblock(id);
    let saw = ledger().wait_saw(id).await;
    assert_eq!(saw.end, Ok(()), "the handler read its request to a clean end");
    ledger().wait_outcome(id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_ending_as_it_really_ended() {
    setup();
    let mut impl_level = Target::new("endings.Impl", ImplEnds).await;
    let mut method_level = Target::new("endings.Method", MethodEnds).await;
    for target in [&mut impl_level, &mut method_level] {
        clean_ends(target).await;
        tonic_clients_cancel(target).await;
        raw_clients_reset(target).await;
        connections_lost(target).await;
        panics(target).await;
        hook_panics(target).await;
        responses_to_clients_gone(target).await;
        // The server still serves.
        clean_ends(target).await;
    }
}

/// An interceptor whose `on_start` panics after `budget(streams = 2)` took
/// its slot: the slot is given back each time, so after 100 such calls a
/// normal call still gets through, and the cap still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_on_start_gives_the_streams_slot_back() {
    setup();
    let mut target = Target::new("endings.Budget", BudgetEnds).await;
    for _ in 0..100 {
        let (got, _) = call(&mut target.client, Unary, next_id(), "", "on_start", 1).await;
        assert_status(&got, Code::Internal, "an interceptor panicked", "on_start panics");
    }
    let (got, _) = call(&mut target.client, Unary, next_id(), "", "", 1).await;
    assert_status(&got, Code::Ok, "", "after 100 panics");

    // Both slots are free: two calls hold them, a third is turned away.
    let mut held = Vec::new();
    for _ in 0..2 {
        let (id, mut client) = (next_id(), target.client.clone());
        held.push(tokio::spawn(async move { client.get_feature(request(point(1), id, "hang", "")).await }));
        ledger().wait_progress(id, 1).await;
    }
    let (got, _) = call(&mut target.client, Unary, next_id(), "", "", 1).await;
    assert_status(&got, Code::ResourceExhausted, "concurrent streams", "a third call");
    held.iter().for_each(|call| call.abort());
}

/// Without the layer, what the README says is not seen is not seen: a
/// client stream cancelled mid-upload looks like a clean end, and an OK
/// response the client never got counts OK. A reset with another reason
/// and a lost connection are still seen: tonic passes the transport's error
/// on, and `Inbound` reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_layer() {
    setup();
    let addr = serve(LayerlessEnds, false).await;
    let client = connect(addr).await;

    let id = next_id();
    let (tx, rx) = mpsc::channel(4);
    let mut aborted = client.clone();
    let call = tokio::spawn(async move { aborted.record_route(request(ReceiverStream::new(rx), id, "", "")).await });
    tx.send(point(0)).await.unwrap();
    tx.send(point(1)).await.unwrap();
    ledger().wait_progress(id, 2).await;
    call.abort();
    assert_eq!(ledger().wait_saw(id).await, Saw { messages: 2, end: Ok(()) }, "a cancelled upload looks complete");
    assert_eq!(ledger().wait_outcome(id).await.code, Code::Ok);
    drop(tx);

    let id = next_id();
    let mut raw = RawCall::open(addr, &Client.route(), id, "").await;
    raw.send(&point(0), false);
    ledger().wait_progress(id, 1).await;
    raw.reset(h2::Reason::INTERNAL_ERROR);
    let reset = Err((Code::Cancelled, "the client reset the stream (INTERNAL_ERROR)".to_owned()));
    assert_eq!(ledger().wait_saw(id).await, Saw { messages: 1, end: reset });
    assert_eq!(ledger().wait_outcome(id).await.code, Code::Cancelled);

    let id = next_id();
    let (addr_via_proxy, cut) = proxy(addr).await;
    let mut lost = connect(addr_via_proxy).await;
    let (tx, rx) = mpsc::channel(4);
    let call = tokio::spawn(async move { lost.record_route(request(ReceiverStream::new(rx), id, "", "")).await });
    tx.send(point(0)).await.unwrap();
    ledger().wait_progress(id, 1).await;
    cut.cut().await;
    let saw = ledger().wait_saw(id).await;
    assert_eq!(saw.code(), Code::Cancelled, "{saw:?}");
    assert_eq!(ledger().wait_outcome(id).await.code, Code::Cancelled);
    let _ = call.await;

    let outcome = answer_after_the_client_left(addr, Unary, next_id()).await;
    assert_eq!(outcome.code, Code::Ok, "an answer nobody received counts OK");
}
