//! `budget`, end to end: real tonic servers on loopback for what a client
//! sees, and handlers called in process under tokio's paused clock for what
//! depends on time (`duration`, `idle`).
//!
//! Every test has its own service (`service = "test.X"`), so that the
//! per-method stats and the event log (`common::events`) are its own.

use std::{
    sync::OnceLock,
    task::{Context, Poll},
    time::Duration,
};

mod common;

use common::{
    events::{events, inbound_ends, outcome, received, started, wait_for},
    handlers::{client_stream, drain, note, rect, service},
    in_real_time, on_paused_clock, serve_and_connect,
};
use futures_util::StreamExt;
use interceptor_examples::pb::{
    route_guide_client::RouteGuideClient, route_guide_server::RouteGuide, Point, RouteNote,
};
use interceptor_runtime::{
    budget::{Budget, BudgetCall, BudgetConfig},
    stats, CallContext, Direction, Interceptor, MessageRef,
};
use prost::Message as _;
use tokio::{sync::mpsc, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{metadata::MetadataMap, transport::Channel, Code, Request, Status};

// ---------------------------------------------------------------------------
// budget: messages and bytes

service!(BudgetMessages: monitor, budget = 3, service = "test.BudgetMessages");

/// `budget = 3`, client stream: exactly 3 points reach the handler, which then
/// gets RESOURCE_EXHAUSTED on its inbound; the client gets it as the status.
#[tokio::test(start_paused = true)]
async fn a_message_budget_cuts_the_inbound_stream_at_exactly_n() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(BudgetMessages).await;
        let key = "/test.BudgetMessages/RecordRoute";
        let points = tokio_stream::iter((0..5).map(|i| Point { latitude: i, longitude: 0 }));
        let status = client.record_route(points).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "budget: 3 messages per stream used up (recv)");
        let seen = events(key);
        assert_eq!(received(&seen).len(), 3);
        let handler_saw = inbound_ends(&seen)[0].1.clone().unwrap_err();
        assert_eq!((handler_saw.code(), handler_saw.message()), (status.code(), status.message()));
        let outcome = outcome(key, 0).await;
        assert_eq!(
            (outcome.code, outcome.ended_by, outcome.stats.messages_received),
            (Code::ResourceExhausted, Some("budget"), 3)
        );
        let snapshot = stats::method(key).unwrap();
        assert_eq!((snapshot.messages_received, snapshot.ended_by.get("budget")), (3, Some(&1)));

        // Exactly 3 is within the budget.
        let points = tokio_stream::iter((0..3).map(|i| Point { latitude: i, longitude: 0 }));
        assert_eq!(client.record_route(points).await.unwrap().into_inner().point_count, 3);
    })
    .await;
}

/// The same budget on the response stream: 3 features, then the status.
#[tokio::test(start_paused = true)]
async fn a_message_budget_cuts_the_outbound_stream_at_exactly_n() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(BudgetMessages).await;
        let mut features = client.list_features(rect(10, 0, false, 0)).await.unwrap().into_inner();
        for i in 0..3 {
            assert_eq!(features.message().await.unwrap().unwrap().name, i.to_string());
        }
        let status = features.message().await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "budget: 3 messages per stream used up (send)");
        let outcome = outcome("/test.BudgetMessages/ListFeatures", 0).await;
        assert_eq!((outcome.ended_by, outcome.stats.messages_sent), (Some("budget"), 3));

        let mut features = client.list_features(rect(3, 0, false, 0)).await.unwrap().into_inner();
        let mut n = 0;
        while features.message().await.unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 3);
    })
    .await;
}

/// Bidi: 3 notes reach the handler, the 4th ends the call. The call ends in
/// both directions at once, so the client gets, in order, at most the 3 echoes
/// (those the wrapper passed before the 4th note was rejected), then the status.
#[tokio::test(start_paused = true)]
async fn a_message_budget_cuts_a_bidi_stream_at_exactly_n() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(BudgetMessages).await;
        let notes = tokio_stream::iter((0..6).map(|i| note(i, &format!("note {i}"))));
        let mut replies = client.route_chat(notes).await.unwrap().into_inner();
        let (echoes, status) = drain(&mut replies).await;
        assert!(echoes.len() <= 3);
        for (i, echo) in echoes.iter().enumerate() {
            assert_eq!(echo.message, format!("note {i}"));
        }
        assert_eq!(
            (status.code(), status.message()),
            (Code::ResourceExhausted, "budget: 3 messages per stream used up (recv)")
        );
        let key = "/test.BudgetMessages/RouteChat";
        let outcome = outcome(key, 0).await;
        assert_eq!((outcome.code, outcome.ended_by), (Code::ResourceExhausted, Some("budget")));
        assert_eq!((outcome.stats.messages_received, outcome.stats.messages_sent), (3, echoes.len() as u64));
        assert_eq!(received(&events(key)).len(), 3);
    })
    .await;
}

service!(BudgetBytes: monitor, budget(bytes = "1KiB"), service = "test.BudgetBytes");

/// `bytes = "1KiB"`: notes of 301 encoded bytes; 3 fit (903), the 4th would
/// take the stream over 1024 and ends it.
#[tokio::test(start_paused = true)]
async fn a_byte_budget_cuts_the_stream_before_the_message_that_would_overrun_it() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(BudgetBytes).await;
        let big = RouteNote { location: None, message: "x".repeat(298) };
        assert_eq!(big.encoded_len(), 301);
        let mut replies = client.route_chat(tokio_stream::iter(vec![big.clone(); 5])).await.unwrap().into_inner();
        let (echoes, status) = drain(&mut replies).await;
        assert!(echoes.len() <= 3 && echoes.iter().all(|echo| *echo == big));
        assert_eq!(
            (status.code(), status.message()),
            (Code::ResourceExhausted, "budget: 1024 bytes per stream used up (recv)")
        );
        let key = "/test.BudgetBytes/RouteChat";
        let outcome = outcome(key, 0).await;
        assert_eq!((outcome.ended_by, outcome.stats.bytes_received), (Some("budget"), 903));
        assert_eq!(outcome.stats.bytes_sent, 301 * echoes.len() as u64);
        let handler_saw = inbound_ends(&events(key))[0].1.clone().unwrap_err();
        assert_eq!(handler_saw.message(), status.message());

        // A stream that fills the budget exactly passes: 4 × 256 = 1024.
        let exact = RouteNote { location: None, message: "x".repeat(253) };
        assert_eq!(exact.encoded_len(), 256);
        let mut replies = client.route_chat(tokio_stream::iter(vec![exact.clone(); 4])).await.unwrap().into_inner();
        let mut n = 0;
        while replies.message().await.unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 4);
        assert_eq!(stats::method(key).unwrap().ended_by.get("budget"), Some(&1));
    })
    .await;
}

service!(calls_only BudgetWide: monitor, budget(bytes = "1MiB"), service = "test.BudgetWide");

/// A byte budget wide enough that most messages pass without `budget` seeing
/// them (a run at a time, as many as still fit at 64 KiB each): the cut is
/// still exact. 87,381 points of 12 bytes fit in 1 MiB (4 bytes to spare);
/// the next one is refused.
#[tokio::test(start_paused = true)]
async fn a_wide_byte_budget_cuts_at_exactly_the_byte_that_overruns_it() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(BudgetWide).await;
        let point = |i: i32| Point { latitude: 1_000_000_000 + i % 1000, longitude: 1_000_000_000 };
        assert_eq!(point(0).encoded_len(), 12);
        let fit = (1 << 20) / 12;
        let points = tokio_stream::iter((0..fit + 10).map(point));
        let status = client.record_route(points).await.unwrap_err();
        assert_eq!(status.message(), "budget: 1048576 bytes per stream used up (recv)");
        let key = "/test.BudgetWide/RecordRoute";
        let outcome = outcome(key, 0).await;
        assert_eq!((outcome.stats.messages_received, outcome.stats.bytes_received), (fit as u64, fit as u64 * 12));
        let points = tokio_stream::iter((0..fit).map(point));
        assert_eq!(client.record_route(points).await.unwrap().into_inner().point_count, fit);
    })
    .await;
}

/// The same budget with messages over 64 KiB among small ones: those are
/// always seen, and the cut falls exactly where the bytes run out.
#[tokio::test(start_paused = true)]
async fn a_wide_byte_budget_is_exact_with_large_messages_among_small_ones() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(BudgetWide).await;
        let sized = |i: usize| note(0, &"x".repeat(if i % 7 == 6 { 100_000 } else { 995 }));
        let sizes: Vec<u64> = (0..80).map(|i| sized(i).encoded_len() as u64).collect();
        assert_eq!((sizes[0], sizes[6]), (1000, 100_000 + 6));
        let fit = sizes
            .iter()
            .scan(0, |sum, size| {
                *sum += size;
                Some(*sum)
            })
            .take_while(|sum| *sum <= 1 << 20)
            .count();
        let notes = tokio_stream::iter((0..80).map(sized));
        let mut replies = client.route_chat(notes).await.unwrap().into_inner();
        let (echoes, status) = drain(&mut replies).await;
        assert!(echoes.len() <= fit);
        assert_eq!(status.message(), "budget: 1048576 bytes per stream used up (recv)");
        let outcome = outcome("/test.BudgetWide/RouteChat", 0).await;
        assert_eq!(outcome.stats.messages_received, fit as u64);
        assert_eq!(outcome.stats.bytes_received, sizes[..fit].iter().sum::<u64>());
    })
    .await;
}

// ---------------------------------------------------------------------------
// budget: duration and idle

service!(BudgetDuration: monitor, budget(duration = "1s"), service = "test.BudgetDuration");

/// In-process, paused: a bidi stream whose client stays quiet ends with
/// DEADLINE_EXCEEDED exactly when the second is up; the handler sees it on its
/// inbound, the "client" as the stream's last item.
#[tokio::test(start_paused = true)]
async fn a_duration_budget_ends_the_call_when_it_is_up() {
    on_paused_clock(async {
        let key = "/test.BudgetDuration/RouteChat";
        let t0 = Instant::now();
        let (notes, stream) = client_stream::<RouteNote>();
        let mut replies = BudgetDuration.route_chat(Request::new(stream)).await.unwrap().into_inner();
        notes.send(note(1, "first")).unwrap();
        assert_eq!(replies.next().await.unwrap().unwrap().message, "first");
        tokio::time::sleep(Duration::from_millis(900)).await;
        notes.send(note(2, "second")).unwrap();
        assert_eq!(replies.next().await.unwrap().unwrap().message, "second");
        let status = replies.next().await.unwrap().unwrap_err();
        let at = Instant::now() - t0;
        assert_eq!(
            (status.code(), status.message()),
            (Code::DeadlineExceeded, "budget: stream duration of 1s used up")
        );
        assert!(at >= Duration::from_secs(1) && at <= Duration::from_millis(1002), "cut after {at:?}");
        assert!(replies.next().await.is_none());

        let outcome = outcome(key, 0).await;
        assert_eq!(
            (outcome.code, outcome.ended_by, outcome.stats.messages_received),
            (Code::DeadlineExceeded, Some("budget"), 2)
        );
        let (handler_at, result) = wait_for(key, |e| inbound_ends(e).first().cloned()).await;
        assert_eq!(result.unwrap_err().message(), status.message());
        assert!(handler_at - t0 <= Duration::from_millis(1002));
        drop(notes);
    })
    .await;
}

/// In-process, paused: a message that arrives after the deadline does not
/// pass, even when the stream never went idle (the timer is checked as
/// messages pass). A server stream that keeps sending is cut at the second too.
#[tokio::test(start_paused = true)]
async fn a_duration_budget_also_cuts_a_busy_stream() {
    on_paused_clock(async {
        let t0 = Instant::now();
        let mut features =
            BudgetDuration.list_features(Request::new(rect(-1, 0, false, 300))).await.unwrap().into_inner();
        let mut n = 0;
        let status = loop {
            match features.next().await.unwrap() {
                Ok(_) => n += 1,
                Err(status) => break status,
            }
        };
        // Features at 0, 300, 600 and 900 ms; the one due at 1200 ms is too late.
        assert_eq!(n, 4);
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(Instant::now() - t0 <= Duration::from_millis(1002));
        let outcome = outcome("/test.BudgetDuration/ListFeatures", 0).await;
        assert_eq!((outcome.ended_by, outcome.stats.messages_sent), (Some("budget"), 4));
    })
    .await;
}

/// In-process, paused: a unary handler that never answers is dropped when the
/// second is up, and the call ends with DEADLINE_EXCEEDED: the timers run
/// beside the handler, not only when a stream is read or written.
#[tokio::test(start_paused = true)]
async fn a_duration_budget_ends_a_unary_handler_that_never_answers() {
    on_paused_clock(async {
        let t0 = Instant::now();
        let status = BudgetDuration.get_feature(Request::new(Point { latitude: -3, longitude: 0 })).await.unwrap_err();
        let at = Instant::now() - t0;
        assert_eq!(
            (status.code(), status.message()),
            (Code::DeadlineExceeded, "budget: stream duration of 1s used up")
        );
        assert!(at >= Duration::from_secs(1) && at <= Duration::from_millis(1002), "cut after {at:?}");
        let outcome = outcome("/test.BudgetDuration/GetFeature", 0).await;
        assert_eq!(
            (outcome.code, outcome.ended_by, outcome.stats.messages_received, outcome.stats.messages_sent),
            (Code::DeadlineExceeded, Some("budget"), 1, 0)
        );
    })
    .await;
}

/// In-process, paused: so is a client-streaming handler that stops reading
/// its stream (to wait for something else) and never answers.
#[tokio::test(start_paused = true)]
async fn a_duration_budget_ends_a_handler_that_stops_reading() {
    on_paused_clock(async {
        let t0 = Instant::now();
        let (points, stream) = client_stream::<Point>();
        points.send(Point { latitude: 1, longitude: 0 }).unwrap();
        points.send(Point { latitude: 2, longitude: -3 }).unwrap();
        let status = BudgetDuration.record_route(Request::new(stream)).await.unwrap_err();
        let at = Instant::now() - t0;
        assert_eq!(
            (status.code(), status.message()),
            (Code::DeadlineExceeded, "budget: stream duration of 1s used up")
        );
        assert!(at >= Duration::from_secs(1) && at <= Duration::from_millis(1002), "cut after {at:?}");
        let outcome = outcome("/test.BudgetDuration/RecordRoute", 0).await;
        assert_eq!(
            (outcome.code, outcome.ended_by, outcome.stats.messages_received),
            (Code::DeadlineExceeded, Some("budget"), 2)
        );
        drop(points);
    })
    .await;
}

service!(BudgetDurationWire: monitor, budget(duration = "1s"), service = "test.BudgetDurationWire");

/// Over loopback: the client receives the echoes it is owed, then
/// DEADLINE_EXCEEDED as the final status; monitor records the budget.
#[tokio::test]
async fn over_loopback_a_duration_budget_is_the_final_status() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(BudgetDurationWire).await;
        let (notes, rx) = mpsc::channel(4);
        let mut replies = client.route_chat(ReceiverStream::new(rx)).await.unwrap().into_inner();
        notes.send(note(1, "first")).await.unwrap();
        assert_eq!(replies.message().await.unwrap().unwrap().message, "first");
        let status = replies.message().await.unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::DeadlineExceeded, "budget: stream duration of 1s used up")
        );
        let key = "/test.BudgetDurationWire/RecordRoute";
        let status = client.record_route(tokio_stream::pending::<Point>()).await.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded);
        let handler_saw = wait_for(key, |e| inbound_ends(e).first().cloned()).await.1.unwrap_err();
        assert_eq!(handler_saw.message(), status.message());
        let snapshot = stats::method(key).unwrap();
        assert_eq!((snapshot.code(Code::DeadlineExceeded), snapshot.ended_by.get("budget")), (1, Some(&1)));
        drop(notes);
    })
    .await;
}

service!(BudgetIdle: monitor, budget(idle = "1s"), service = "test.BudgetIdle");

/// In-process, paused: on a client stream, each message restarts the idle
/// timer and a second of silence ends the call with DEADLINE_EXCEEDED, which
/// the handler gets on its inbound and returns.
#[tokio::test(start_paused = true)]
async fn an_idle_budget_ends_a_quiet_client_stream_a_second_after_its_last_message() {
    on_paused_clock(async {
        let key = "/test.BudgetIdle/RecordRoute";
        let t0 = Instant::now();
        let (points, stream) = client_stream::<Point>();
        let call = tokio::spawn(async move { BudgetIdle.record_route(Request::new(stream)).await });
        for i in 0..3 {
            points.send(Point { latitude: i, longitude: 0 }).unwrap();
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        // The last point at 1200 ms: quiet from there.
        let status = call.await.unwrap().unwrap_err();
        let at = Instant::now() - t0;
        assert_eq!(
            (status.code(), status.message()),
            (Code::DeadlineExceeded, "budget: no message for 1s (idle limit)")
        );
        assert!(at >= Duration::from_millis(2200) && at <= Duration::from_millis(2202), "cut after {at:?}");
        let outcome = outcome(key, 0).await;
        assert_eq!(
            (outcome.code, outcome.ended_by, outcome.stats.messages_received),
            (Code::DeadlineExceeded, Some("budget"), 3)
        );
        let (handler_at, result) = wait_for(key, |e| inbound_ends(e).first().cloned()).await;
        assert_eq!(result.unwrap_err().message(), status.message());
        assert_eq!(handler_at - t0, at);
        drop(points);
    })
    .await;
}

/// In-process, paused: the same on a bidi stream, where a message either way
/// counts: echoed notes 600 ms apart keep the call alive; after the last one
/// it is cut within 1 to 2 × idle (a direction's timer that fires while the
/// other moved waits another `idle`, as documented).
#[tokio::test(start_paused = true)]
async fn an_idle_budget_ends_a_quiet_bidi_call() {
    on_paused_clock(async {
        let key = "/test.BudgetIdle/RouteChat";
        let (notes, stream) = client_stream::<RouteNote>();
        let mut replies = BudgetIdle.route_chat(Request::new(stream)).await.unwrap().into_inner();
        let mut last = Instant::now();
        for i in 0..4 {
            notes.send(note(i, "hi")).unwrap();
            assert_eq!(replies.next().await.unwrap().unwrap().location.unwrap().latitude, i);
            last = Instant::now();
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        let status = replies.next().await.unwrap().unwrap_err();
        let quiet = Instant::now() - last;
        assert_eq!(
            (status.code(), status.message()),
            (Code::DeadlineExceeded, "budget: no message for 1s (idle limit)")
        );
        assert!(
            quiet >= Duration::from_secs(1) && quiet <= Duration::from_millis(2003),
            "cut after {quiet:?} of silence"
        );
        let outcome = outcome(key, 0).await;
        assert_eq!(
            (outcome.code, outcome.ended_by, outcome.stats.messages_received),
            (Code::DeadlineExceeded, Some("budget"), 4)
        );
        let handler_saw = wait_for(key, |e| inbound_ends(e).first().cloned()).await.1.unwrap_err();
        assert_eq!(handler_saw.message(), status.message());
        drop(notes);
    })
    .await;
}

service!(BudgetIdleEitherWay: budget(idle = "1s"), service = "test.BudgetIdleEitherWay");

/// In-process, paused: a bidi stream busy one way only is not idle: the
/// client sends every 600 ms and hears nothing back for 5 s, and the call
/// lives on; once the client stops, it is cut within 2 × idle.
#[tokio::test(start_paused = true)]
async fn an_idle_budget_counts_messages_either_way() {
    on_paused_clock(async {
        let key = "/test.BudgetIdleEitherWay/RouteChat";
        let (notes, stream) = client_stream::<RouteNote>();
        let mut replies = BudgetIdleEitherWay.route_chat(Request::new(stream)).await.unwrap().into_inner();
        let mut last = Instant::now();
        for i in 0..9 {
            notes
                .send(RouteNote { location: Some(Point { latitude: i, longitude: -1 }), message: "quiet".into() })
                .unwrap();
            last = Instant::now();
            tokio::select! {
                reply = replies.next() => panic!("nothing comes back, yet got {reply:?}"),
                _ = tokio::time::sleep(Duration::from_millis(600)) => {}
            }
        }
        let status = replies.next().await.unwrap().unwrap_err();
        let quiet = Instant::now() - last;
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(
            quiet >= Duration::from_secs(1) && quiet <= Duration::from_millis(2003),
            "cut after {quiet:?} of silence"
        );
        let outcome = outcome(key, 0).await;
        assert_eq!((outcome.stats.messages_received, outcome.stats.messages_sent), (9, 0));
        drop(notes);
    })
    .await;
}

service!(BudgetIdleWire: monitor, budget(idle = "1s"), service = "test.BudgetIdleWire");

/// Over loopback: a server stream that sends 2 features and then nothing, a
/// client stream that sends 1 point and then nothing: DEADLINE_EXCEEDED as
/// the final status; the handler saw it on its inbound.
#[tokio::test]
async fn over_loopback_an_idle_budget_is_the_final_status() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(BudgetIdleWire).await;
        let (notes, rx) = mpsc::channel(4);
        let mut features = client.list_features(rect(2, 0, true, 0)).await.unwrap().into_inner();
        assert!(features.message().await.unwrap().is_some());
        assert!(features.message().await.unwrap().is_some());
        let status = features.message().await.unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::DeadlineExceeded, "budget: no message for 1s (idle limit)")
        );
        let outcome = outcome("/test.BudgetIdleWire/ListFeatures", 0).await;
        assert_eq!((outcome.ended_by, outcome.stats.messages_sent), (Some("budget"), 2));

        let key = "/test.BudgetIdleWire/RecordRoute";
        notes.send(Point { latitude: 1, longitude: 1 }).await.unwrap();
        let status = client.record_route(ReceiverStream::new(rx)).await.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded);
        let seen = events(key);
        assert_eq!(received(&seen).len(), 1);
        assert_eq!(inbound_ends(&seen)[0].1.clone().unwrap_err().message(), status.message());
        assert_eq!(stats::method(key).unwrap().ended_by.get("budget"), Some(&1));
    })
    .await;
}

service!(BudgetBoth: monitor, budget(duration = "2500ms", idle = "1s"), service = "test.BudgetBoth");

/// In-process, paused: with both `duration` and `idle`, a client stream that
/// goes quiet is cut by `idle` a second after its last point (the idle
/// deadline counts from that point, not from the start of the call), before
/// `duration` is up, and says so.
#[tokio::test(start_paused = true)]
async fn with_duration_and_idle_a_quiet_stream_is_cut_by_idle_a_second_after_its_last_message() {
    on_paused_clock(async {
        let key = "/test.BudgetBoth/RecordRoute";
        let t0 = Instant::now();
        let (points, stream) = client_stream::<Point>();
        let call = tokio::spawn(async move { BudgetBoth.record_route(Request::new(stream)).await });
        // Points at 0, 700 and 1400 ms, each within a second of the one before.
        for i in 0..3 {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
            points.send(Point { latitude: i, longitude: 0 }).unwrap();
        }
        let status = call.await.unwrap().unwrap_err();
        let at = Instant::now() - t0;
        assert_eq!(
            (status.code(), status.message()),
            (Code::DeadlineExceeded, "budget: no message for 1s (idle limit)")
        );
        assert!(at >= Duration::from_millis(2400) && at <= Duration::from_millis(2402), "cut after {at:?}");
        let outcome = outcome(key, 0).await;
        assert_eq!(
            (outcome.code, outcome.ended_by, outcome.stats.messages_received),
            (Code::DeadlineExceeded, Some("budget"), 3)
        );
        assert_eq!(outcome.duration, at);
        drop(points);
    })
    .await;
}

/// In-process, paused: with both, a bidi stream that never goes a second
/// without a message is cut by `duration` when it is up (2.5 s, not a whole
/// number of seconds, as its message says), not by `idle`.
#[tokio::test(start_paused = true)]
async fn with_duration_and_idle_a_busy_stream_is_cut_by_duration_when_it_is_up() {
    on_paused_clock(async {
        let key = "/test.BudgetBoth/RouteChat";
        let t0 = Instant::now();
        let (notes, stream) = client_stream::<RouteNote>();
        let mut replies = BudgetBoth.route_chat(Request::new(stream)).await.unwrap().into_inner();
        let mut echoed = 0;
        let status = loop {
            notes.send(note(echoed, "busy")).unwrap();
            match replies.next().await.unwrap() {
                Ok(echo) => assert_eq!(echo.location.unwrap().latitude, echoed),
                Err(status) => break status,
            }
            echoed += 1;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(600)) => {}
                ended = replies.next() => break ended.unwrap().expect_err("no note is left to echo"),
            }
        };
        let at = Instant::now() - t0;
        assert_eq!(
            (status.code(), status.message()),
            (Code::DeadlineExceeded, "budget: stream duration of 2.5s used up")
        );
        assert!(at >= Duration::from_millis(2500) && at <= Duration::from_millis(2502), "cut after {at:?}");
        // Notes at 0, 600, 1200, 1800 and 2400 ms were echoed; the next was due at 3000.
        assert_eq!(echoed, 5);
        let outcome = outcome(key, 0).await;
        assert_eq!(
            (outcome.code, outcome.ended_by, outcome.stats.messages_received, outcome.stats.messages_sent),
            (Code::DeadlineExceeded, Some("budget"), 5, 5)
        );
        drop(notes);
    })
    .await;
}

// ---------------------------------------------------------------------------
// budget: streams

service!(BudgetStreams: monitor, budget(streams = 1), service = "test.BudgetStreams");

/// With `streams = 1`, a call is admitted only when no other holds the slot:
/// so each admitted call after a call ended shows that the slot came back.
async fn admitted(client: &mut RouteGuideClient<Channel>) {
    let ok = client.get_feature(Point { latitude: 7, longitude: 7 }).await.unwrap().into_inner();
    assert_eq!(ok.name, "ok");
}

/// The slot of `streams = 1` comes back however a call ends: return, handler
/// error, client cancel, panic in the handler; a call over the limit is
/// rejected before its handler runs.
#[tokio::test]
async fn a_streams_slot_is_released_however_the_call_ends() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(BudgetStreams).await;
        let key = "/test.BudgetStreams/GetFeature";
        // Return.
        admitted(&mut client).await;
        admitted(&mut client).await;

        // Handler error.
        let status = client.get_feature(Point { latitude: -2, longitude: 0 }).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        admitted(&mut client).await;

        // One more while the slot is held is rejected before the handler runs.
        let mut holder = client.clone();
        let held = tokio::spawn(async move { holder.get_feature(Point { latitude: -3, longitude: 0 }).await });
        let before = wait_for(key, |e| (started(e) == 5).then_some(started(e))).await;
        let status = client.get_feature(Point { latitude: 1, longitude: 1 }).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "budget: all 1 concurrent streams of /test.BudgetStreams/GetFeature are in use");
        assert_eq!(started(&events(key)), before, "the rejected call's handler must not run");
        let rejected = outcome(key, 4).await;
        assert_eq!((rejected.code, rejected.ended_by), (Code::ResourceExhausted, Some("budget")));

        // Client cancel.
        held.abort();
        let cancelled = outcome(key, 5).await;
        assert_eq!(cancelled.code, Code::Cancelled);
        admitted(&mut client).await;

        // Panic in the handler: the engine catches it, and the client gets
        // INTERNAL, as the call ends on the server.
        let status = client.get_feature(Point { latitude: -1, longitude: 0 }).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::Internal, "the handler panicked"));
        let panicked = outcome(key, 7).await;
        assert_eq!((panicked.code, panicked.message.as_str()), (Code::Internal, "the handler panicked"));
        admitted(&mut client).await;

        let snapshot = stats::method(key).unwrap();
        assert_eq!(snapshot.in_flight(), 0);
        assert_eq!(snapshot.ended_by.get("budget"), Some(&1));
        assert_eq!(
            (snapshot.code(Code::Ok), snapshot.code(Code::ResourceExhausted), snapshot.code(Code::Cancelled)),
            (5, 1, 1)
        );
    })
    .await;
}

/// The same for streaming calls, whose end the response stream owns: a client
/// that drops a server stream mid-way, a client stream and a bidi stream that
/// end normally; a second concurrent call is rejected while the first runs.
#[tokio::test]
async fn a_streams_slot_is_released_by_streaming_calls_too() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(BudgetStreams).await;
        let key = "/test.BudgetStreams/ListFeatures";
        let mut features = client.list_features(rect(-1, 0, false, 10)).await.unwrap().into_inner();
        assert!(features.message().await.unwrap().is_some());
        let status = client.list_features(rect(1, 0, false, 0)).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        drop(features);
        assert_eq!(outcome(key, 1).await.code, Code::Cancelled);
        let mut features = client.list_features(rect(1, 0, false, 0)).await.unwrap().into_inner();
        assert!(features.message().await.unwrap().is_some());
        assert!(features.message().await.unwrap().is_none());

        let key = "/test.BudgetStreams/RecordRoute";
        let (points, rx) = mpsc::channel(1);
        let call = tokio::spawn({
            let mut client = client.clone();
            async move { client.record_route(ReceiverStream::new(rx)).await }
        });
        points.send(Point { latitude: 1, longitude: 0 }).await.unwrap();
        wait_for(key, |e| (!received(e).is_empty()).then_some(())).await;
        let status = client.record_route(tokio_stream::iter(vec![Point::default()])).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        drop(points);
        assert_eq!(call.await.unwrap().unwrap().into_inner().point_count, 1);
        let summary = client.record_route(tokio_stream::iter(vec![Point::default(); 2])).await.unwrap();
        assert_eq!(summary.into_inner().point_count, 2);

        let mut replies = client.route_chat(tokio_stream::iter(vec![note(1, "a")])).await.unwrap().into_inner();
        assert!(replies.message().await.unwrap().is_some());
        assert!(replies.message().await.unwrap().is_none());
        let mut replies = client.route_chat(tokio_stream::iter(vec![note(1, "b")])).await.unwrap().into_inner();
        assert!(replies.message().await.unwrap().is_some());
    })
    .await;
}

/// `Budget::active_streams()`. The `budget(..)` of the attribute is built
/// inside the expansion's static, out of a test's reach, so this budget is
/// built by the test and added with `with = ..`, through an interceptor that
/// hands every hook to it.
struct Reachable(&'static Budget);

fn reachable() -> &'static Budget {
    static BUDGET: OnceLock<Budget> = OnceLock::new();
    BUDGET.get_or_init(|| Budget::new(BudgetConfig { streams: Some(2), ..BudgetConfig::default() }))
}

impl Interceptor for Reachable {
    type Call = BudgetCall;
    type Stream = ();

    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn on_start(&self, ctx: &CallContext, metadata: &MetadataMap) -> Result<BudgetCall, Status> {
        self.0.on_start(ctx, metadata)
    }

    fn on_stream(&self, call: &BudgetCall, ctx: &CallContext, direction: Direction) {
        self.0.on_stream(call, ctx, direction)
    }

    fn poll_message<M: prost::Message + 'static>(
        &self,
        call: &BudgetCall,
        stream: &mut (),
        cx: &mut Context<'_>,
        msg: &MessageRef<'_, M>,
    ) -> Poll<Result<(), Status>> {
        self.0.poll_message(call, stream, cx, msg)
    }

    fn poll_interrupt(
        &self,
        call: &BudgetCall,
        stream: &mut (),
        ctx: &CallContext,
        cx: &mut Context<'_>,
    ) -> Poll<Status> {
        self.0.poll_interrupt(call, stream, ctx, cx)
    }

    fn on_end(&self, call: &BudgetCall, ctx: &CallContext) {
        self.0.on_end(call, ctx)
    }
}

service!(BudgetReachable: with = Reachable(reachable()), service = "test.BudgetReachable");

/// In process: `active_streams()` is the number of calls holding a
/// `streams = 2` slot: 0, 1, 2 as calls start; a third is rejected and takes
/// none; 1 when one ends, and the freed slot admits a call again; 0 at last.
#[tokio::test]
async fn active_streams_counts_the_calls_holding_a_slot() {
    in_real_time(async {
        let budget = reachable();
        let key = "/test.BudgetReachable/GetFeature";
        assert_eq!(budget.active_streams(), 0);
        let hold = || async { BudgetReachable.get_feature(Request::new(Point { latitude: -3, longitude: 0 })).await };
        let first = tokio::spawn(hold());
        wait_for(key, |e| (started(e) == 1).then_some(())).await;
        assert_eq!(budget.active_streams(), 1);
        let features = BudgetReachable.list_features(Request::new(rect(1, 0, true, 0))).await.unwrap().into_inner();
        assert_eq!(budget.active_streams(), 2);

        let status = BudgetReachable.get_feature(Request::new(Point { latitude: 1, longitude: 1 })).await.unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (
                Code::ResourceExhausted,
                "budget: all 2 concurrent streams of /test.BudgetReachable/GetFeature are in use"
            )
        );
        assert_eq!(budget.active_streams(), 2);

        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        assert_eq!(budget.active_streams(), 1);
        let answered = BudgetReachable.get_feature(Request::new(Point { latitude: 1, longitude: 1 })).await;
        assert_eq!(answered.unwrap().into_inner().name, "ok");
        assert_eq!(budget.active_streams(), 1);
        drop(features);
        assert_eq!(budget.active_streams(), 0);
    })
    .await;
}
