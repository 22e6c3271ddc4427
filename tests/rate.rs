//! `rate`, end to end: real tonic servers on loopback, most on tokio's paused
//! clock, where a rate's waits take no real time (while the runtime waits for
//! a socket, the paused clock moves on to the next timer, which there is the
//! rate's own, so the spacing of messages still holds), and handlers called in
//! process where a time must be exact.
//!
//! Every test has its own service (`service = "test.X"`), so that the
//! per-method stats and the event log (`common::events`) are its own.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

mod common;

use common::{
    events::{events, inbound_ends, outcome, received, wait_for, Event},
    handlers::{client_stream, note, rect, service},
    in_real_time, on_paused_clock, serve_and_connect,
};
use futures_util::StreamExt;
use interceptor_examples::pb::{route_guide_server::RouteGuide, Feature, Point, RouteNote};
use interceptor_runtime::{stats, Direction};
use tokio::{sync::mpsc, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Status};

/// Asserts that each instant is at least `k × interval` after `start`, the
/// first `free` ones (the burst) free.
fn assert_spaced(what: &str, start: Instant, times: &[Instant], free: usize, interval: Duration) {
    for (k, at) in times.iter().enumerate() {
        let earliest = start + interval * (k.saturating_sub(free - 1) as u32);
        assert!(*at >= earliest, "{what} #{k} at {:?}, before {:?}", *at - start, earliest - start);
    }
}

service!(RateRecv: rate(recv = 10), service = "test.RateRecv");

/// A client that sends 20 points at once has them handed to the handler 100 ms
/// apart (the first one at once), by the paused clock.
#[tokio::test(start_paused = true)]
async fn rate_recv_spaces_the_messages_a_handler_receives() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(RateRecv).await;
        let start = Instant::now();
        let points = tokio_stream::iter((0..20).map(|i| Point { latitude: i, longitude: 0 }));
        let summary = client.record_route(points).await.unwrap().into_inner();
        assert_eq!(summary.point_count, 20);

        let times = received(&events("/test.RateRecv/RecordRoute"));
        assert_eq!(times.len(), 20);
        assert_spaced("point", start, &times, 1, Duration::from_millis(100));
        // And the limiter does not hold back more than it must.
        assert!(
            *times.last().unwrap() - start < Duration::from_millis(19 * 100 + 500),
            "{:?}",
            *times.last().unwrap() - start
        );
        assert_eq!(outcome("/test.RateRecv/RecordRoute", 0).await.code, Code::Ok);
    })
    .await;
}

service!(RateSend: rate(send = 20, burst = 5), service = "test.RateSend");

/// 30 features go out: 5 back to back (the burst), then one every 50 ms.
#[tokio::test(start_paused = true)]
async fn rate_send_with_burst_spaces_the_messages_a_client_receives() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(RateSend).await;
        let start = Instant::now();
        let mut features = client.list_features(rect(30, 0, false, 0)).await.unwrap().into_inner();
        let mut times = Vec::new();
        while let Some(feature) = features.message().await.unwrap() {
            assert_eq!(feature.name, times.len().to_string());
            times.push(Instant::now());
        }
        assert_eq!(times.len(), 30);
        assert_spaced("feature", start, &times, 5, Duration::from_millis(50));
        assert!(*times.last().unwrap() - start < Duration::from_millis(25 * 50 + 500));
    })
    .await;
}

service!(RateBoth: rate = 10, service = "test.RateBoth");

/// `rate = N` limits both ways: 10 notes each echoed twice come back 100 ms
/// apart, the send limit being the one that binds.
#[tokio::test(start_paused = true)]
async fn rate_n_limits_each_direction() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(RateBoth).await;
        let start = Instant::now();
        let notes = (0..10)
            .map(|i| RouteNote { location: Some(Point { latitude: i, longitude: -2 }), message: format!("note {i}") });
        let mut replies = client.route_chat(tokio_stream::iter(notes)).await.unwrap().into_inner();
        let mut times = Vec::new();
        while let Some(reply) = replies.message().await.unwrap() {
            assert_eq!(reply.message, format!("note {}", times.len() / 2));
            times.push(Instant::now());
        }
        assert_eq!(times.len(), 20);
        assert_spaced("reply", start, &times, 1, Duration::from_millis(100));
        let handled = received(&events("/test.RateBoth/RouteChat"));
        assert_eq!(handled.len(), 10);
        assert_spaced("note", start, &handled, 1, Duration::from_millis(100));
    })
    .await;
}

service!(RateHigh: rate(send = 1500), service = "test.RateHigh");
service!(RateOdd: rate(send = 600, burst = 3), service = "test.RateOdd");

/// Over a second of paused time, a stream that could go much faster gets
/// through the rate, within 1% under it and no more than the initial burst
/// over it, also at rates that are no whole number of milliseconds apart
/// (v0.1's leaky-bucket refilled on whole milliseconds: 1500/s came out as
/// 1000/s, 600/s as 500/s; the GCRA keeps its time in nanoseconds) and over
/// 1000/s (where tokio's timers, which wake a waiter once a millisecond at
/// most, make it hand out a millisecond's worth at a time).
#[tokio::test(start_paused = true)]
async fn rate_holds_over_a_second_at_high_and_uneven_rates() {
    on_paused_clock(async {
        async fn count_for_a_second(
            mut features: impl tokio_stream::Stream<Item = Result<Feature, Status>> + Unpin,
        ) -> usize {
            let end = Instant::now() + Duration::from_secs(1);
            let mut n = 0;
            while let Ok(Some(feature)) = tokio::time::timeout_at(end, features.next()).await {
                feature.unwrap();
                n += 1;
            }
            n
        }
        let high = RateHigh.list_features(Request::new(rect(-1, 0, false, 0))).await.unwrap().into_inner();
        let n = count_for_a_second(high).await;
        // The burst at once, `max(burst, N/1000)` = 2 (1.5 rounded up), then
        // 1500 a second.
        assert!((1485..=1500 + 2).contains(&n), "1500/s let {n} through in a second");

        let odd = RateOdd.list_features(Request::new(rect(-1, 0, false, 0))).await.unwrap().into_inner();
        let n = count_for_a_second(odd).await;
        // The burst of 3 at once, then 600 a second.
        assert!((594..=600 + 3).contains(&n), "600/s let {n} through in a second");

        // Fed 1 ms apart, faster than the rate but not flooding: permits are also
        // found due when a message comes after a gap (taken at once, without a
        // reservation), not only waited for.
        let gappy = RateOdd.list_features(Request::new(rect(-1, 0, false, 1))).await.unwrap().into_inner();
        let n = count_for_a_second(gappy).await;
        assert!((594..=600 + 3).contains(&n), "600/s let {n} through in a second, fed 1 ms apart");
    })
    .await;
}

service!(RateFlood: rate(recv = 4), service = "test.RateFlood");

static PULLED: AtomicUsize = AtomicUsize::new(0);

/// A client that floods 64 KiB notes is held back by HTTP/2 flow control
/// while the handler reads slowly: it cannot push more than the windows and
/// buffers hold (a few MiB), far from the 400 notes (25 MiB) it has.
#[tokio::test]
async fn a_flooding_client_is_held_back() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(RateFlood).await;
        let notes = tokio_stream::iter(0..400).map(|i| {
            PULLED.fetch_add(1, Ordering::SeqCst);
            RouteNote { location: Some(Point { latitude: i, longitude: -1 }), message: "x".repeat(64 * 1024) }
        });
        let key = "/test.RateFlood/RouteChat";
        let held = {
            // Nothing comes back (longitude -1); the reply stream is held open.
            let _replies = client.route_chat(notes).await.unwrap();
            wait_for(key, |e| (received(e).len() >= 3).then_some(())).await;
            PULLED.load(Ordering::SeqCst)
        };
        assert!(held < 150, "the client pushed {held} notes of 64 KiB past a handler that took 3");
    })
    .await;
}

service!(RateReject: monitor, rate(recv = 1, send = 1, on_exceed = reject), service = "test.RateReject");

/// `on_exceed = reject`: the message over the rate ends the stream with
/// RESOURCE_EXHAUSTED naming the limit, each way. (No timer runs, so the
/// paused clock stands still: the second message is always early.)
#[tokio::test(start_paused = true)]
async fn rate_reject_ends_the_stream_with_resource_exhausted() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(RateReject).await;
        let points = tokio_stream::iter((0..3).map(|i| Point { latitude: i, longitude: 0 }));
        let status = client.record_route(points).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "rate limit exceeded: at most 1 messages per second (recv)");
        let key = "/test.RateReject/RecordRoute";
        let outcome = outcome(key, 0).await;
        assert_eq!((outcome.code, outcome.ended_by), (Code::ResourceExhausted, Some("rate")));
        assert_eq!(outcome.stats.messages_received, 1);
        let seen = events(key);
        assert_eq!(received(&seen).len(), 1);
        let ends = inbound_ends(&seen);
        assert_eq!(ends.len(), 1);
        let handler_saw = ends[0].1.clone().unwrap_err();
        assert_eq!((handler_saw.code(), handler_saw.message()), (status.code(), status.message()));

        let mut features = client.list_features(rect(5, 0, false, 0)).await.unwrap().into_inner();
        assert_eq!(features.message().await.unwrap().unwrap().name, "0");
        let status = features.message().await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "rate limit exceeded: at most 1 messages per second (send)");
        let outcome = self::outcome("/test.RateReject/ListFeatures", 0).await;
        assert_eq!((outcome.ended_by, outcome.stats.messages_sent), (Some("rate"), 1));

        // monitor saw which limit ended them.
        let snapshot = stats::method(key).unwrap();
        assert_eq!((snapshot.code(Code::ResourceExhausted), snapshot.ended_by.get("rate")), (1, Some(&1)));
        let snapshot = stats::method("/test.RateReject/ListFeatures").unwrap();
        assert_eq!(snapshot.ended_by.get("rate"), Some(&1));
    })
    .await;
}

service!(RateShared: rate(recv = 1, send = 1, scope = method), service = "test.RateShared");

/// A client goes away while its message waits in a method-wide limiter: the
/// wait ends at once (the handler's inbound ends at that instant, CANCELLED)
/// and the waiter leaves the limiter, so the next call's message gets the next
/// permit, one interval after the last one given, not two (the place B's
/// message reserved in the GCRA is refunded: a reservation left standing
/// would push every later stream's permits back by its interval).
/// The same for a response message waiting in the send limiter.
#[tokio::test(start_paused = true)]
async fn a_client_that_goes_away_while_a_message_waits_leaves_nothing_parked() {
    on_paused_clock(async {
        let key = "/test.RateShared/RouteChat";
        let t0 = Instant::now();
        // A takes the one permit there is.
        let (notes_a, stream) = client_stream::<RouteNote>();
        let mut replies_a = RateShared.route_chat(Request::new(stream)).await.unwrap().into_inner();
        notes_a.send(note(1, "first")).unwrap();
        assert_eq!(replies_a.next().await.unwrap().unwrap().message, "first");
        // B's first note is there before its handler looks: it waits at once.
        let (notes_b, stream) = client_stream::<RouteNote>();
        notes_b.send(note(2, "second")).unwrap();
        let replies_b = RateShared.route_chat(Request::new(stream)).await.unwrap().into_inner();
        wait_for(key, |e| {
            (e.iter().filter(|e| matches!(e, Event::Arrived(Direction::Inbound, 0))).count() == 2).then_some(())
        })
        .await;
        assert_eq!(Instant::now(), t0, "no time passed: B's note waits for its permit");

        drop(replies_b);
        drop(notes_b);
        let cancelled = outcome(key, 0).await;
        assert_eq!((cancelled.code, cancelled.ended_by, cancelled.stats.messages_received), (Code::Cancelled, None, 0));
        let (at, result) = wait_for(key, |e| inbound_ends(e).first().cloned()).await;
        assert_eq!(at, t0, "the wait ended when the client went away");
        assert_eq!(result.unwrap_err().code(), Code::Cancelled);

        notes_a.send(note(3, "third")).unwrap();
        assert_eq!(replies_a.next().await.unwrap().unwrap().message, "third");
        let waited = Instant::now() - t0;
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_millis(1010),
            "the next message got the permit after {waited:?}"
        );
        drop(notes_a);

        let key = "/test.RateShared/ListFeatures";
        let t1 = Instant::now();
        let mut features = RateShared.list_features(Request::new(rect(-1, 0, false, 0))).await.unwrap().into_inner();
        assert_eq!(features.next().await.unwrap().unwrap().name, "0");
        assert!(futures_util::poll!(features.next()).is_pending(), "the second feature waits");
        drop(features);
        let cancelled = outcome(key, 0).await;
        assert_eq!((cancelled.code, cancelled.stats.messages_sent), (Code::Cancelled, 1));
        assert_eq!(Instant::now(), t1);
        let mut features = RateShared.list_features(Request::new(rect(-1, 0, false, 0))).await.unwrap().into_inner();
        assert_eq!(features.next().await.unwrap().unwrap().name, "0");
        let waited = Instant::now() - t1;
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_millis(1010),
            "the next call got the permit after {waited:?}"
        );
    })
    .await;
}

service!(calls_only RateRefund: rate(recv = 100_000, scope = method), service = "test.RateRefund");

/// A stream of a method-wide rate takes its permits in growing batches, and
/// lets the messages it holds permits for pass unseen; when it ends, the
/// permits it took and did not use go back to the method. At 100,000/s the
/// method has 100 permits at once (a millisecond's worth): 33 points take
/// batches of 1 to 32 (63 permits), and the 30 left over go back, so that
/// the next upload gets at once the rest of the 100.
#[tokio::test(start_paused = true)]
async fn permits_a_stream_took_and_did_not_use_go_back_to_the_method() {
    on_paused_clock(async {
        let key = "/test.RateRefund/RecordRoute";
        let t0 = Instant::now();
        let upload = |n: i32| async move {
            let (points, stream) = client_stream::<Point>();
            for i in 0..n {
                points.send(Point { latitude: i, longitude: 0 }).unwrap();
            }
            drop(points);
            RateRefund.record_route(Request::new(stream)).await.unwrap().into_inner().point_count
        };
        assert_eq!(upload(33).await, 33);
        assert_eq!(upload(100).await, 100);
        // All 100 at once: 33, and the 67 the first left (37 if the 30 it
        // took and did not use were lost).
        let at_once = received(&events(key)).iter().filter(|at| **at == t0).count();
        assert_eq!(at_once, 100);
    })
    .await;
}

service!(RateCancel: monitor, rate(recv = 1, scope = method), service = "test.RateCancel");

/// The same over loopback: the server hears the client go away while its
/// message waits; the call ends CANCELLED, the handler's inbound ends, and a
/// following call of the method goes through.
#[tokio::test]
async fn over_loopback_a_cancelled_wait_ends_the_call_and_the_next_call_passes() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(RateCancel).await;
        let key = "/test.RateCancel/RouteChat";
        let (notes, rx) = mpsc::channel(4);
        let mut replies = client.route_chat(ReceiverStream::new(rx)).await.unwrap().into_inner();
        notes.send(note(1, "first")).await.unwrap();
        assert_eq!(replies.message().await.unwrap().unwrap().message, "first");
        notes.send(note(2, "second")).await.unwrap();
        wait_for(key, |e| e.iter().any(|e| matches!(e, Event::Arrived(Direction::Inbound, 1))).then_some(())).await;
        drop(replies);
        drop(notes);

        let cancelled = outcome(key, 0).await;
        assert_eq!((cancelled.code, cancelled.ended_by, cancelled.stats.messages_received), (Code::Cancelled, None, 1));
        let (_, result) = wait_for(key, |e| inbound_ends(e).first().cloned()).await;
        assert_eq!(result.unwrap_err().code(), Code::Cancelled);

        let (notes, rx) = mpsc::channel(4);
        let mut replies = client.route_chat(ReceiverStream::new(rx)).await.unwrap().into_inner();
        notes.send(note(3, "third")).await.unwrap();
        assert_eq!(replies.message().await.unwrap().unwrap().message, "third");
    })
    .await;
}
