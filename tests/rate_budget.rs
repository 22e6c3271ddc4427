//! `rate` and `budget`, end to end: real tonic servers on loopback for what a
//! client sees, and handlers called in-process under tokio's paused clock for
//! what depends on time (a paused clock and loopback I/O do not mix: the clock
//! jumps to the next timer at every I/O hop).
//!
//! Every test has its own service (`service = "test.X"`), so that the per-method
//! stats and the event log below are its own. A test-local interceptor,
//! [`Recorder`], logs when a message reaches the interceptors and how each call
//! ended; the handlers log what they see on their inbound stream.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::Duration,
};

use futures_util::StreamExt;
use interceptor_examples::pb::{
    route_guide_client::RouteGuideClient,
    route_guide_server::{RouteGuide, RouteGuideServer},
    Feature, Point, Rectangle, RouteNote, RouteSummary,
};
use interceptor_runtime::{stats, CallContext, Direction, Inbound, Interceptor, MessageRef, Outcome};
use prost::Message as _;
use tokio::{
    sync::{mpsc, oneshot, Notify},
    time::Instant,
};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream, UnboundedReceiverStream};
use tonic::{
    codec::Codec as _,
    codegen::{BoxStream, Bytes},
    metadata::MetadataMap,
    transport::Channel,
    Code, Request, Response, Status, Streaming,
};

// ---------------------------------------------------------------------------
// The event log

#[derive(Clone, Debug)]
enum Event {
    /// A handler started.
    Started,
    /// A message reached the interceptors (the recorder runs first, before
    /// `rate` or `budget` decide).
    Arrived(Direction, u64),
    /// The handler got a message from its inbound stream.
    Received(Instant),
    /// The handler's inbound stream ended: the count of messages, or the error.
    InboundEnd(Instant, Result<u64, Status>),
    /// The call ended (the recorder's `on_end`).
    Ended(Outcome),
}

static EVENTS: Mutex<Vec<(&'static str, Event)>> = Mutex::new(Vec::new());
static CHANGED: Notify = Notify::const_new();

fn record(method: &'static str, event: Event) {
    EVENTS.lock().unwrap().push((method, event));
    CHANGED.notify_waiters();
}

/// What happened so far to the calls of `method` (`/test.X/Method`).
fn events(method: &str) -> Vec<Event> {
    EVENTS.lock().unwrap().iter().filter(|(m, _)| *m == method).map(|(_, e)| e.clone()).collect()
}

/// Waits until `f` finds what it looks for in the events of `method`.
async fn wait_for<T>(method: &str, mut f: impl FnMut(&[Event]) -> Option<T>) -> T {
    loop {
        let notified = CHANGED.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(found) = f(&events(method)) {
            return found;
        }
        notified.await;
    }
}

/// The outcome of the `n`-th call of `method` to end (0-based), once it ended.
async fn outcome(method: &str, n: usize) -> Outcome {
    wait_for(method, |events| ended(events).get(n).cloned()).await
}

fn ended(events: &[Event]) -> Vec<Outcome> {
    events.iter().filter_map(|e| if let Event::Ended(o) = e { Some(o.clone()) } else { None }).collect()
}

fn received(events: &[Event]) -> Vec<Instant> {
    events.iter().filter_map(|e| if let Event::Received(at) = e { Some(*at) } else { None }).collect()
}

fn inbound_ends(events: &[Event]) -> Vec<(Instant, Result<u64, Status>)> {
    events.iter().filter_map(|e| if let Event::InboundEnd(at, r) = e { Some((*at, r.clone())) } else { None }).collect()
}

fn started(events: &[Event]) -> usize {
    events.iter().filter(|e| matches!(e, Event::Started)).count()
}

/// Logs arrivals and ends; never rejects.
struct Recorder;

impl Interceptor for Recorder {
    type Call = ();
    type Stream = ();

    fn name(&self) -> &'static str {
        "recorder"
    }

    fn on_start(&self, _: &CallContext, _: &MetadataMap) -> Result<(), Status> {
        Ok(())
    }

    fn on_stream(&self, _: &(), _: &CallContext, _: Direction) {}

    fn on_message<M: prost::Message + 'static>(
        &self,
        _: &(),
        _: &mut (),
        msg: &MessageRef<'_, M>,
    ) -> Result<(), Status> {
        record(msg.call().method().full_name, Event::Arrived(msg.direction(), msg.index()));
        Ok(())
    }

    fn on_end(&self, _: &(), ctx: &CallContext) {
        record(ctx.method().full_name, Event::Ended(ctx.outcome().expect("set before on_end").clone()));
    }
}

// ---------------------------------------------------------------------------
// The handlers, shared by every test service

/// `latitude` -1 panics, -2 fails, -3 never answers; otherwise the point comes back.
async fn get_feature(request: Request<Point>) -> Result<Response<Feature>, Status> {
    let ctx = CallContext::of(&request).expect("intercepted");
    record(ctx.method().full_name, Event::Started);
    let point = request.into_inner();
    match point.latitude {
        -1 => panic!("the handler panics on purpose"),
        -2 => Err(Status::failed_precondition("the handler fails on purpose")),
        -3 => std::future::pending().await,
        _ => Ok(Response::new(Feature { name: "ok".into(), location: Some(point) })),
    }
}

/// `lo.latitude` features (negative: no end) named `0`, `1`, ... padded with
/// zeros to `lo.longitude` characters, `hi.longitude` ms apart; with
/// `hi.latitude == 1` the stream stays open after the last one.
fn list_features(ctx: &CallContext, rect: Rectangle) -> BoxStream<Feature> {
    record(ctx.method().full_name, Event::Started);
    let (lo, hi) = (rect.lo.unwrap_or_default(), rect.hi.unwrap_or_default());
    let count = u64::try_from(lo.latitude).unwrap_or(u64::MAX);
    let pad = lo.longitude.max(0) as usize;
    let hold = hi.latitude == 1;
    let every = Duration::from_millis(hi.longitude.max(0) as u64);
    Box::pin(futures_util::stream::unfold(0u64, move |i| async move {
        if i >= count {
            if hold {
                std::future::pending::<()>().await;
            }
            return None;
        }
        if i > 0 && !every.is_zero() {
            tokio::time::sleep(every).await;
        }
        Some((Ok(Feature { name: format!("{i:0>pad$}"), location: None }), i + 1))
    }))
}

/// Counts the points, and sums them up in `distance` so that a lost,
/// duplicated or reordered point shows. Logs each and the end. After a point
/// with `longitude == -3` it stops reading and never answers.
async fn record_route(mut points: Inbound<Point>) -> Result<RouteSummary, Status> {
    let key = points.context().method().full_name;
    record(key, Event::Started);
    let mut summary = RouteSummary::default();
    loop {
        match points.message().await {
            Ok(Some(point)) => {
                record(key, Event::Received(Instant::now()));
                if point.longitude == -3 {
                    std::future::pending::<()>().await;
                }
                summary.point_count += 1;
                summary.distance = summary.distance.wrapping_mul(31).wrapping_add(point.latitude);
            }
            Ok(None) => {
                record(key, Event::InboundEnd(Instant::now(), Ok(summary.point_count as u64)));
                return Ok(summary);
            }
            Err(status) => {
                record(key, Event::InboundEnd(Instant::now(), Err(status.clone())));
                return Err(status);
            }
        }
    }
}

/// Echoes every note (twice when `location.longitude == -2`, not at all when
/// it is -1) from a spawned task, forwarding the inbound stream's error.
fn route_chat(mut notes: Inbound<RouteNote>) -> BoxStream<RouteNote> {
    let key = notes.context().method().full_name;
    record(key, Event::Started);
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            match notes.next().await {
                Some(Ok(note)) => {
                    record(key, Event::Received(Instant::now()));
                    count += 1;
                    let copies = match note.location.unwrap_or_default().longitude {
                        -1 => 0,
                        -2 => 2,
                        _ => 1,
                    };
                    for _ in 0..copies {
                        // The reply stream is gone: keep reading, to see how the inbound ends.
                        let _ = tx.send(Ok(note.clone())).await;
                    }
                }
                Some(Err(status)) => {
                    record(key, Event::InboundEnd(Instant::now(), Err(status.clone())));
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                None => {
                    record(key, Event::InboundEnd(Instant::now(), Ok(count)));
                    return;
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// A routeguide service over the handlers above with `Recorder` first and the
/// given interceptors after it, on every method.
macro_rules! service {
    ($(#[$doc:meta])* $ty:ident: $($args:tt)*) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        struct $ty;

        #[interceptor_runtime::intercept(with = Recorder, $($args)*)]
        #[tonic::async_trait]
        impl RouteGuide for $ty {
            async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
                get_feature(request).await
            }

            type ListFeaturesStream = BoxStream<Feature>;

            async fn list_features(
                &self,
                request: Request<Rectangle>,
            ) -> Result<Response<Self::ListFeaturesStream>, Status> {
                let ctx = CallContext::of(&request).expect("intercepted");
                Ok(Response::new(list_features(&ctx, request.into_inner())))
            }

            async fn record_route(
                &self,
                request: Request<Streaming<Point>>,
            ) -> Result<Response<RouteSummary>, Status> {
                record_route(request.into_inner()).await.map(Response::new)
            }

            type RouteChatStream = BoxStream<RouteNote>;

            async fn route_chat(
                &self,
                request: Request<Streaming<RouteNote>>,
            ) -> Result<Response<Self::RouteChatStream>, Status> {
                Ok(Response::new(route_chat(request.into_inner())))
            }
        }
    };
}

// ---------------------------------------------------------------------------
// Plumbing

/// A server on 127.0.0.1:0 and a client of it; the server stops when the
/// returned guard is dropped.
async fn serve<S: RouteGuide>(service: S) -> (RouteGuideClient<Channel>, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder().add_service(RouteGuideServer::new(service)).serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            async {
                let _ = stopped.await;
            },
        ),
    );
    (RouteGuideClient::connect(format!("http://{addr}")).await.unwrap(), stop)
}

/// Fails a real-time test that hangs instead of hanging with it. (Not for
/// paused-clock tests: there a timeout fires as soon as the runtime idles.)
async fn guard<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future).await.expect("the test hangs")
}

/// A `Streaming<T>` fed from a channel, as tonic builds one for a request:
/// the in-process stand-in for a client's stream. Dropping the sender ends it.
fn client_stream<T: prost::Message + Default + Send + 'static>() -> (mpsc::UnboundedSender<T>, Streaming<T>) {
    let (tx, rx) = mpsc::unbounded_channel::<T>();
    let frames = UnboundedReceiverStream::new(rx).map(|message| Ok::<_, Infallible>(grpc_frame(&message)));
    let body = axum::body::Body::from_stream(frames);
    let decoder = tonic_prost::ProstCodec::<T, T>::default().decoder();
    (tx, Streaming::new_request(decoder, body, None, None))
}

/// One length-prefixed gRPC message.
fn grpc_frame(message: &impl prost::Message) -> Bytes {
    let mut frame = Vec::with_capacity(5 + message.encoded_len());
    frame.push(0);
    frame.extend_from_slice(&(message.encoded_len() as u32).to_be_bytes());
    message.encode(&mut frame).unwrap();
    frame.into()
}

fn note(i: i32, text: &str) -> RouteNote {
    RouteNote { location: Some(Point { latitude: i, longitude: 0 }), message: text.to_owned() }
}

fn rect(count: i32, pad: i32, hold: bool, every_ms: i32) -> Rectangle {
    Rectangle {
        lo: Some(Point { latitude: count, longitude: pad }),
        hi: Some(Point { latitude: i32::from(hold), longitude: every_ms }),
    }
}

/// The messages of a response stream up to its error.
async fn drain<T>(stream: &mut Streaming<T>) -> (Vec<T>, Status) {
    let mut messages = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(message)) => messages.push(message),
            Ok(None) => panic!("the stream ended without an error"),
            Err(status) => return (messages, status),
        }
    }
}

/// Asserts that each instant is at least `k × interval` after `start`.
fn assert_spaced(what: &str, start: Instant, times: &[Instant], free: usize, interval: Duration) {
    for (k, at) in times.iter().enumerate() {
        let earliest = start + interval * (k.saturating_sub(free - 1) as u32);
        assert!(*at >= earliest, "{what} #{k} at {:?}, before {:?}", *at - start, earliest - start);
    }
}

// ---------------------------------------------------------------------------
// rate

service!(RateRecv: rate(recv = 10), service = "test.RateRecv");

/// A client that sends 20 points at once has them handed to the handler 100 ms
/// apart (the first one at once), by the paused clock.
#[tokio::test(start_paused = true)]
async fn rate_recv_spaces_the_messages_a_handler_receives() {
    let (mut client, _server) = serve(RateRecv).await;
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
}

service!(RateSend: rate(send = 20, burst = 5), service = "test.RateSend");

/// 30 features go out: 5 back to back (the burst), then one every 50 ms.
#[tokio::test(start_paused = true)]
async fn rate_send_with_burst_spaces_the_messages_a_client_receives() {
    let (mut client, _server) = serve(RateSend).await;
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
}

service!(RateBoth: rate = 10, service = "test.RateBoth");

/// `rate = N` limits both ways: 10 notes each echoed twice come back 100 ms
/// apart, the send limit being the one that binds.
#[tokio::test(start_paused = true)]
async fn rate_n_limits_each_direction() {
    let (mut client, _server) = serve(RateBoth).await;
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
}

service!(RateHigh: rate(send = 1500), service = "test.RateHigh");
service!(RateOdd: rate(send = 600, burst = 3), service = "test.RateOdd");

/// Over a second of paused time, a stream that could go much faster gets
/// through the rate, within 1% under it and no more than the initial burst
/// over it, also at rates that are no whole number of milliseconds apart
/// (leaky-bucket and tokio's timer count in milliseconds: 1500/s used to come
/// out as 1000/s, 600/s as 500/s) and over 1000/s.
#[tokio::test(start_paused = true)]
async fn rate_holds_over_a_second_at_high_and_uneven_rates() {
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
    // 30 every 20 ms, the first 30 at once.
    assert!((1485..=1500 + 30).contains(&n), "1500/s let {n} through in a second");

    let odd = RateOdd.list_features(Request::new(rect(-1, 0, false, 0))).await.unwrap().into_inner();
    let n = count_for_a_second(odd).await;
    // 12 every 20 ms, the first 12 at once.
    assert!((594..=600 + 12).contains(&n), "600/s let {n} through in a second");

    // Fed 1 ms apart, faster than the rate but not flooding: permits are also
    // found after a gap (the limiter's `try_acquire` path), not only waited for.
    let gappy = RateOdd.list_features(Request::new(rect(-1, 0, false, 1))).await.unwrap().into_inner();
    let n = count_for_a_second(gappy).await;
    assert!((594..=600 + 12).contains(&n), "600/s let {n} through in a second, fed 1 ms apart");
}

service!(RateFlood: rate(recv = 4), service = "test.RateFlood");

static PULLED: AtomicUsize = AtomicUsize::new(0);

/// A client that floods 64 KiB notes is held back by HTTP/2 flow control
/// while the handler reads slowly: it cannot push more than the windows and
/// buffers hold (a few MiB), far from the 400 notes (25 MiB) it has.
#[tokio::test]
async fn a_flooding_client_is_held_back() {
    let (mut client, _server) = serve(RateFlood).await;
    let notes = tokio_stream::iter(0..400).map(|i| {
        PULLED.fetch_add(1, Ordering::SeqCst);
        RouteNote { location: Some(Point { latitude: i, longitude: -1 }), message: "x".repeat(64 * 1024) }
    });
    let key = "/test.RateFlood/RouteChat";
    let held = guard(async {
        // Nothing comes back (longitude -1); the reply stream is held open.
        let _replies = client.route_chat(notes).await.unwrap();
        wait_for(key, |e| (received(e).len() >= 3).then_some(())).await;
        PULLED.load(Ordering::SeqCst)
    })
    .await;
    assert!(held < 150, "the client pushed {held} notes of 64 KiB past a handler that took 3");
}

service!(RateReject: monitor, rate(recv = 1, send = 1, on_exceed = reject), service = "test.RateReject");

/// `on_exceed = reject`: the message over the rate ends the stream with
/// RESOURCE_EXHAUSTED naming the limit, each way. (No timer runs, so the
/// paused clock stands still: the second message is always early.)
#[tokio::test(start_paused = true)]
async fn rate_reject_ends_the_stream_with_resource_exhausted() {
    let (mut client, _server) = serve(RateReject).await;
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
}

service!(RateShared: rate(recv = 1, send = 1, scope = method), service = "test.RateShared");

/// A client goes away while its message waits in a method-wide limiter: the
/// wait ends at once (the handler's inbound ends at that instant, CANCELLED)
/// and the waiter leaves the limiter, so the next call's message gets the next
/// permit, one interval after the last one given, not two (a waiter left
/// parked in leaky-bucket would hold its core and stall every other stream).
/// The same for a response message waiting in the send limiter.
#[tokio::test(start_paused = true)]
async fn a_client_that_goes_away_while_a_message_waits_leaves_nothing_parked() {
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
}

service!(RateCancel: monitor, rate(recv = 1, scope = method), service = "test.RateCancel");

/// The same over loopback: the server hears the client go away while its
/// message waits; the call ends CANCELLED, the handler's inbound ends, and a
/// following call of the method goes through.
#[tokio::test]
async fn over_loopback_a_cancelled_wait_ends_the_call_and_the_next_call_passes() {
    let (mut client, _server) = serve(RateCancel).await;
    let key = "/test.RateCancel/RouteChat";
    guard(async {
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

// ---------------------------------------------------------------------------
// budget: messages and bytes

service!(BudgetMessages: monitor, budget = 3, service = "test.BudgetMessages");

/// `budget = 3`, client stream: exactly 3 points reach the handler, which then
/// gets RESOURCE_EXHAUSTED on its inbound; the client gets it as the status.
#[tokio::test(start_paused = true)]
async fn a_message_budget_cuts_the_inbound_stream_at_exactly_n() {
    let (mut client, _server) = serve(BudgetMessages).await;
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
}

/// The same budget on the response stream: 3 features, then the status.
#[tokio::test(start_paused = true)]
async fn a_message_budget_cuts_the_outbound_stream_at_exactly_n() {
    let (mut client, _server) = serve(BudgetMessages).await;
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
}

/// Bidi: 3 notes reach the handler, the 4th ends the call. The call ends in
/// both directions at once, so the client gets, in order, at most the 3 echoes
/// (those the wrapper passed before the 4th note was rejected), then the status.
#[tokio::test(start_paused = true)]
async fn a_message_budget_cuts_a_bidi_stream_at_exactly_n() {
    let (mut client, _server) = serve(BudgetMessages).await;
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
}

service!(BudgetBytes: monitor, budget(bytes = "1KiB"), service = "test.BudgetBytes");

/// `bytes = "1KiB"`: notes of 301 encoded bytes; 3 fit (903), the 4th would
/// take the stream over 1024 and ends it.
#[tokio::test(start_paused = true)]
async fn a_byte_budget_cuts_the_stream_before_the_message_that_would_overrun_it() {
    let (mut client, _server) = serve(BudgetBytes).await;
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
}

// ---------------------------------------------------------------------------
// budget: duration and idle

service!(BudgetDuration: monitor, budget(duration = "1s"), service = "test.BudgetDuration");

/// In-process, paused: a bidi stream whose client stays quiet ends with
/// DEADLINE_EXCEEDED exactly when the second is up; the handler sees it on its
/// inbound, the "client" as the stream's last item.
#[tokio::test(start_paused = true)]
async fn a_duration_budget_ends_the_call_when_it_is_up() {
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
    assert_eq!((status.code(), status.message()), (Code::DeadlineExceeded, "budget: stream duration of 1s used up"));
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
}

/// In-process, paused: a message that arrives after the deadline does not
/// pass, even when the stream never went idle (the timer is checked as
/// messages pass). A server stream that keeps sending is cut at the second too.
#[tokio::test(start_paused = true)]
async fn a_duration_budget_also_cuts_a_busy_stream() {
    let t0 = Instant::now();
    let mut features = BudgetDuration.list_features(Request::new(rect(-1, 0, false, 300))).await.unwrap().into_inner();
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
}

/// In-process, paused: a unary handler that never answers is dropped when the
/// second is up, and the call ends with DEADLINE_EXCEEDED: the timers run
/// beside the handler, not only when a stream is read or written.
#[tokio::test(start_paused = true)]
async fn a_duration_budget_ends_a_unary_handler_that_never_answers() {
    let t0 = Instant::now();
    let status = BudgetDuration.get_feature(Request::new(Point { latitude: -3, longitude: 0 })).await.unwrap_err();
    let at = Instant::now() - t0;
    assert_eq!((status.code(), status.message()), (Code::DeadlineExceeded, "budget: stream duration of 1s used up"));
    assert!(at >= Duration::from_secs(1) && at <= Duration::from_millis(1002), "cut after {at:?}");
    let outcome = outcome("/test.BudgetDuration/GetFeature", 0).await;
    assert_eq!(
        (outcome.code, outcome.ended_by, outcome.stats.messages_received, outcome.stats.messages_sent),
        (Code::DeadlineExceeded, Some("budget"), 1, 0)
    );
}

/// In-process, paused: so is a client-streaming handler that stops reading
/// its stream (to wait for something else) and never answers.
#[tokio::test(start_paused = true)]
async fn a_duration_budget_ends_a_handler_that_stops_reading() {
    let t0 = Instant::now();
    let (points, stream) = client_stream::<Point>();
    points.send(Point { latitude: 1, longitude: 0 }).unwrap();
    points.send(Point { latitude: 2, longitude: -3 }).unwrap();
    let status = BudgetDuration.record_route(Request::new(stream)).await.unwrap_err();
    let at = Instant::now() - t0;
    assert_eq!((status.code(), status.message()), (Code::DeadlineExceeded, "budget: stream duration of 1s used up"));
    assert!(at >= Duration::from_secs(1) && at <= Duration::from_millis(1002), "cut after {at:?}");
    let outcome = outcome("/test.BudgetDuration/RecordRoute", 0).await;
    assert_eq!(
        (outcome.code, outcome.ended_by, outcome.stats.messages_received),
        (Code::DeadlineExceeded, Some("budget"), 2)
    );
    drop(points);
}

service!(BudgetDurationWire: monitor, budget(duration = "1s"), service = "test.BudgetDurationWire");

/// Over loopback: the client receives the echoes it is owed, then
/// DEADLINE_EXCEEDED as the final status; monitor records the budget.
#[tokio::test]
async fn over_loopback_a_duration_budget_is_the_final_status() {
    let (mut client, _server) = serve(BudgetDurationWire).await;
    guard(async {
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
    assert_eq!((status.code(), status.message()), (Code::DeadlineExceeded, "budget: no message for 1s (idle limit)"));
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
}

/// In-process, paused: the same on a bidi stream, where a message either way
/// counts: echoed notes 600 ms apart keep the call alive; after the last one
/// it is cut within 1 to 2 × idle (a direction's timer that fires while the
/// other moved waits another `idle`, as documented).
#[tokio::test(start_paused = true)]
async fn an_idle_budget_ends_a_quiet_bidi_call() {
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
    assert_eq!((status.code(), status.message()), (Code::DeadlineExceeded, "budget: no message for 1s (idle limit)"));
    assert!(quiet >= Duration::from_secs(1) && quiet <= Duration::from_millis(2003), "cut after {quiet:?} of silence");
    let outcome = outcome(key, 0).await;
    assert_eq!(
        (outcome.code, outcome.ended_by, outcome.stats.messages_received),
        (Code::DeadlineExceeded, Some("budget"), 4)
    );
    let handler_saw = wait_for(key, |e| inbound_ends(e).first().cloned()).await.1.unwrap_err();
    assert_eq!(handler_saw.message(), status.message());
    drop(notes);
}

service!(BudgetIdleEitherWay: budget(idle = "1s"), service = "test.BudgetIdleEitherWay");

/// In-process, paused: a bidi stream busy one way only is not idle: the
/// client sends every 600 ms and hears nothing back for 5 s, and the call
/// lives on; once the client stops, it is cut within 2 × idle.
#[tokio::test(start_paused = true)]
async fn an_idle_budget_counts_messages_either_way() {
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
    assert!(quiet >= Duration::from_secs(1) && quiet <= Duration::from_millis(2003), "cut after {quiet:?} of silence");
    let outcome = outcome(key, 0).await;
    assert_eq!((outcome.stats.messages_received, outcome.stats.messages_sent), (9, 0));
    drop(notes);
}

service!(BudgetIdleWire: monitor, budget(idle = "1s"), service = "test.BudgetIdleWire");

/// Over loopback: a server stream that sends 2 features and then nothing, a
/// client stream that sends 1 point and then nothing: DEADLINE_EXCEEDED as
/// the final status; the handler saw it on its inbound.
#[tokio::test]
async fn over_loopback_an_idle_budget_is_the_final_status() {
    let (mut client, _server) = serve(BudgetIdleWire).await;
    guard(async {
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
    let (mut client, _server) = serve(BudgetStreams).await;
    let key = "/test.BudgetStreams/GetFeature";
    guard(async {
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
    let (mut client, _server) = serve(BudgetStreams).await;
    guard(async {
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
