//! Asynchronous checks before the handler, end to end on 127.0.0.1:
//! `check_async` and the trait's `before_handler` pass, reject, time out
//! (tokio's paused clock), are dropped when the client cancels while they
//! are pending, have their panics caught, and run in the order written.
//!
//! Every test has its own service (`service = "test.X"`), so that the
//! events below are its own: a [`Recorder`] written first logs how each call
//! ended, the handlers log that they ran, and the checks log what they do.

use std::{sync::Mutex, time::Duration};

mod common;

use common::in_real_time;
use interceptor_examples::pb::{
    route_guide_client::RouteGuideClient, route_guide_server::RouteGuide, Feature, Point, Rectangle, RouteNote,
    RouteSummary,
};
use interceptor_runtime::{check_async, CallContext, Interceptor};
use tokio::{sync::Notify, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    codegen::BoxStream, metadata::MetadataMap, transport::Channel, Code, Request, Response, Status, Streaming,
};

// ---------------------------------------------------------------------------
// The event log

#[derive(Clone, Debug, PartialEq)]
enum Event {
    /// A handler ran.
    Handler,
    /// A check did something: `"a begins"`, `"a ends"`, `"a dropped"`.
    Check(String),
    /// An interceptor's `on_end`: its name, the call's final code, and the
    /// interceptor that ended it.
    Ended(&'static str, Code, Option<&'static str>),
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

/// How the `n`-th call of `method` to end ended, as `interceptor` heard in
/// its `on_end`: the code, and the interceptor that ended it.
async fn ended(method: &str, interceptor: &str, n: usize) -> (Code, Option<&'static str>) {
    wait_for(method, |events| {
        let mut ends = events.iter().filter_map(|e| match e {
            Event::Ended(name, code, by) if *name == interceptor => Some((*code, *by)),
            _ => None,
        });
        ends.nth(n)
    })
    .await
}

fn ended_event(name: &'static str, ctx: &CallContext) -> Event {
    let outcome = ctx.outcome().expect("set before on_end");
    Event::Ended(name, outcome.code, outcome.ended_by)
}

fn handler_runs(method: &str) -> usize {
    events(method).iter().filter(|e| **e == Event::Handler).count()
}

fn checks(method: &str) -> Vec<String> {
    events(method).into_iter().filter_map(|e| if let Event::Check(what) = e { Some(what) } else { None }).collect()
}

/// Logs how each call ended; written first, so it hears every call.
struct Recorder;

impl Interceptor for Recorder {
    type Call = ();
    type Stream = ();

    fn on_end(&self, _: &(), ctx: &CallContext) {
        record(ctx.method().full_name, ended_event("recorder", ctx));
    }
}

/// Logs `NAME dropped` when dropped before it is disarmed: a check's future
/// that did not run to its end.
struct DropAlarm {
    method: &'static str,
    name: &'static str,
    armed: bool,
}

impl Drop for DropAlarm {
    fn drop(&mut self) {
        if self.armed {
            record(self.method, Event::Check(format!("{} dropped", self.name)));
        }
    }
}

// ---------------------------------------------------------------------------
// The services

/// A routeguide service whose handlers log that they ran, with `Recorder`
/// first and the given interceptors after it, on every method.
macro_rules! service {
    ($(#[$doc:meta])* $ty:ident: $($args:tt)*) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        struct $ty;

        #[interceptor_runtime::intercept(with = Recorder, $($args)*)]
        #[tonic::async_trait]
        impl RouteGuide for $ty {
            async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
                let ctx = CallContext::of(&request).expect("intercepted");
                record(ctx.method().full_name, Event::Handler);
                Ok(Response::new(Feature { name: "ok".into(), location: Some(request.into_inner()) }))
            }

            type ListFeaturesStream = BoxStream<Feature>;

            async fn list_features(
                &self,
                request: Request<Rectangle>,
            ) -> Result<Response<Self::ListFeaturesStream>, Status> {
                let ctx = CallContext::of(&request).expect("intercepted");
                record(ctx.method().full_name, Event::Handler);
                Ok(Response::new(Box::pin(tokio_stream::empty())))
            }

            async fn record_route(
                &self,
                request: Request<Streaming<Point>>,
            ) -> Result<Response<RouteSummary>, Status> {
                let mut points = request.into_inner();
                record(points.context().method().full_name, Event::Handler);
                let mut summary = RouteSummary::default();
                while points.message().await?.is_some() {
                    summary.point_count += 1;
                }
                Ok(Response::new(summary))
            }

            type RouteChatStream = BoxStream<RouteNote>;

            async fn route_chat(
                &self,
                request: Request<Streaming<RouteNote>>,
            ) -> Result<Response<Self::RouteChatStream>, Status> {
                let notes = request.into_inner();
                record(notes.context().method().full_name, Event::Handler);
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                tokio::spawn(async move {
                    let mut notes = notes;
                    while let Some(note) = tokio_stream::StreamExt::next(&mut notes).await {
                        if tx.send(note).await.is_err() {
                            return;
                        }
                    }
                });
                Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
            }
        }
    };
}

// ---------------------------------------------------------------------------
// Plumbing

/// Serves `service` on loopback and connects; keep the server (dropping it
/// shuts it down): `let (client, _server) = connect(..).await`.
async fn connect<S: RouteGuide>(service: S) -> (RouteGuideClient<Channel>, common::Server) {
    common::serve_and_connect(service).await
}

fn point_with(key: &'static str, value: &'static str) -> Request<Point> {
    let mut request = Request::new(Point { latitude: 1, longitude: 2 });
    request.metadata_mut().insert(key, value.parse().unwrap());
    request
}

/// The client named by `x-client`, or `"nobody"`.
fn client_of(metadata: &MetadataMap) -> String {
    metadata.get("x-client").and_then(|v| v.to_str().ok()).unwrap_or("nobody").to_owned()
}

// ---------------------------------------------------------------------------
// Pass, reject

service!(
    /// Lets `x-client: alice` in after a lookup that takes 10 ms.
    Allowlist: with = check_async(|ctx, metadata| {
        let (method, client) = (ctx.method().full_name, client_of(metadata));
        async move {
            record(method, Event::Check("lookup begins".into()));
            tokio::time::sleep(Duration::from_millis(10)).await;
            record(method, Event::Check("lookup ends".into()));
            match client.as_str() {
                "alice" => Ok(()),
                _ => Err(Status::permission_denied(format!("`{client}` may not call this"))),
            }
        }
    })
    .named("allowlist"),
    service = "test.Allowlist"
);

#[tokio::test]
async fn an_async_check_that_passes_is_awaited_before_the_handler_runs() {
    in_real_time(async {
        let (mut client, _server) = connect(Allowlist).await;
        let method = "/test.Allowlist/GetFeature";
        let feature = client.get_feature(point_with("x-client", "alice")).await.unwrap().into_inner();
        assert_eq!(feature.name, "ok");
        assert_eq!(
            &events(method)[..3],
            [Event::Check("lookup begins".into()), Event::Check("lookup ends".into()), Event::Handler]
        );
        assert_eq!(ended(method, "recorder", 0).await, (Code::Ok, None));

        // A client stream is checked before its handler gets it, too.
        let mut request = Request::new(tokio_stream::iter(vec![Point::default(); 3]));
        request.metadata_mut().insert("x-client", "alice".parse().unwrap());
        assert_eq!(client.record_route(request).await.unwrap().into_inner().point_count, 3);
    })
    .await
}

#[tokio::test]
async fn an_async_check_that_fails_rejects_the_call_before_the_handler_runs() {
    in_real_time(async {
        let (mut client, _server) = connect(Allowlist).await;
        let method = "/test.Allowlist/ListFeatures";
        let mut request = Request::new(Rectangle::default());
        request.metadata_mut().insert("x-client", "mallory".parse().unwrap());
        let status = client.list_features(request).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::PermissionDenied, "`mallory` may not call this"));

        assert_eq!(ended(method, "recorder", 0).await, (Code::PermissionDenied, Some("allowlist")));
        assert_eq!(handler_runs(method), 0, "the handler must not run");
        assert_eq!(checks(method), ["lookup begins", "lookup ends"]);
    })
    .await
}

// ---------------------------------------------------------------------------
// Timeouts, on tokio's paused clock

service!(
    /// A lookup that never answers, given 2 s.
    Stuck: with = check_async(|_, _| std::future::pending()).named("stuck").timeout(Duration::from_secs(2)),
    service = "test.Stuck"
);

service!(
    /// The same, ending with DEADLINE_EXCEEDED.
    StuckDeadline: with = check_async(|_, _| std::future::pending())
        .named("stuck")
        .timeout(Duration::from_secs(2))
        .timeout_code(Code::DeadlineExceeded),
    service = "test.StuckDeadline"
);

#[tokio::test(start_paused = true)]
async fn a_check_that_does_not_finish_in_time_ends_the_call_with_unavailable() {
    in_real_time(async {
        let (mut client, _server) = connect(Stuck).await;
        let start = Instant::now();
        let status = client.get_feature(Point::default()).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::Unavailable, "check `stuck` did not finish within 2s"));
        assert!(start.elapsed() >= Duration::from_secs(2), "ended after {:?}", start.elapsed());

        let method = "/test.Stuck/GetFeature";
        assert_eq!(ended(method, "recorder", 0).await, (Code::Unavailable, Some("stuck")));
        assert_eq!(handler_runs(method), 0);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_code_of_a_timeout_may_be_chosen() {
    in_real_time(async {
        let (mut client, _server) = connect(StuckDeadline).await;
        let notes = tokio_stream::iter(vec![RouteNote::default()]);
        let status = client.route_chat(notes).await.unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::DeadlineExceeded, "check `stuck` did not finish within 2s")
        );
        assert_eq!(handler_runs("/test.StuckDeadline/RouteChat"), 0);
    })
    .await;
}

// ---------------------------------------------------------------------------
// The client goes away while a check is pending

service!(
    /// A lookup that never answers, and logs when its future is dropped.
    Hanging: with = check_async(|ctx, _| {
        let method = ctx.method().full_name;
        async move {
            let _alarm = DropAlarm { method, name: "lookup", armed: true };
            record(method, Event::Check("lookup begins".into()));
            std::future::pending().await
        }
    })
    .named("hanging"),
    service = "test.Hanging"
);

#[tokio::test]
async fn a_pending_check_is_dropped_when_the_client_cancels() {
    in_real_time(async {
        let (client, _server) = connect(Hanging).await;
        for method in ["/test.Hanging/GetFeature", "/test.Hanging/RecordRoute"] {
            let mut calling = client.clone();
            let call = tokio::spawn(async move {
                match method.ends_with("GetFeature") {
                    true => calling.get_feature(Point::default()).await.map(drop),
                    false => calling.record_route(tokio_stream::pending()).await.map(drop),
                }
            });
            wait_for(method, |events| events.contains(&Event::Check("lookup begins".into())).then_some(())).await;
            // The client gives up: its HTTP/2 stream is reset (CANCEL).
            call.abort();

            wait_for(method, |events| events.contains(&Event::Check("lookup dropped".into())).then_some(())).await;
            // The client ended it, not an interceptor.
            assert_eq!(ended(method, "recorder", 0).await, (Code::Cancelled, None), "{method}");
            assert_eq!(handler_runs(method), 0, "{method}");
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// Panics

service!(
    /// One stream at a time; the lookup panics where `x-panic` says: `make`
    /// (before its future exists) or `poll` (while it is awaited).
    Panicky: budget(streams = 1),
    with = check_async(|_, metadata| {
        let panic_in = metadata.get("x-panic").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        if panic_in == "make" {
            panic!("the lookup panics on purpose, before its future");
        }
        async move {
            tokio::task::yield_now().await;
            if panic_in == "poll" {
                panic!("the lookup panics on purpose, while awaited");
            }
            Ok(())
        }
    })
    .named("panicky"),
    service = "test.Panicky"
);

#[tokio::test]
async fn a_check_that_panics_ends_the_call_with_internal_and_releases_its_slot() {
    in_real_time(async {
        let (mut client, _server) = connect(Panicky).await;
        let method = "/test.Panicky/GetFeature";
        for (n, panic_in) in ["make", "poll"].into_iter().enumerate() {
            let status = client.get_feature(point_with("x-panic", panic_in)).await.unwrap_err();
            assert_eq!((status.code(), status.message()), (Code::Internal, "an interceptor panicked"), "{panic_in}");
            assert_eq!(ended(method, "recorder", n).await, (Code::Internal, Some("panicky")), "{panic_in}");
        }
        assert_eq!(handler_runs(method), 0);
        // `budget(streams = 1)`'s slot was given back each time.
        let feature = client.get_feature(Point::default()).await.unwrap().into_inner();
        assert_eq!(feature.name, "ok");
    })
    .await
}

// ---------------------------------------------------------------------------
// Order

/// A check written with the trait: logs its check's start and end (it
/// yields in between) and its `on_end`; rejects when `x-reject` names it.
struct Step(&'static str);

impl Interceptor for Step {
    type Call = ();
    type Stream = ();

    fn name(&self) -> &'static str {
        self.0
    }

    async fn before_handler(&self, _: &(), ctx: &CallContext, metadata: &MetadataMap) -> Result<(), Status> {
        let method = ctx.method().full_name;
        record(method, Event::Check(format!("{} begins", self.0)));
        tokio::time::sleep(Duration::from_millis(5)).await;
        record(method, Event::Check(format!("{} ends", self.0)));
        match metadata.get("x-reject").is_some_and(|v| v == self.0) {
            true => Err(Status::unauthenticated(format!("{} says no", self.0))),
            false => Ok(()),
        }
    }

    fn on_end(&self, _: &(), ctx: &CallContext) {
        record(ctx.method().full_name, ended_event(self.0, ctx));
    }
}

service!(Steps: with = Step("a"), with = Step("b"), with = Step("c"), service = "test.Steps");

#[tokio::test]
async fn checks_run_in_the_order_written_and_a_failure_ends_every_interceptor() {
    in_real_time(async {
        let (mut client, _server) = connect(Steps).await;
        let method = "/test.Steps/GetFeature";
        client.get_feature(Point::default()).await.unwrap();
        assert_eq!(checks(method), ["a begins", "a ends", "b begins", "b ends", "c begins", "c ends"]);
        assert_eq!(handler_runs(method), 1);
        ended(method, "recorder", 0).await;

        let status = client.get_feature(point_with("x-reject", "b")).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::Unauthenticated, "b says no"));
        // `c`'s check never began; every interceptor had started, and each
        // hears how the call ended, the last written first.
        assert_eq!(checks(method)[6..], ["a begins", "a ends", "b begins", "b ends"]);
        assert_eq!(ended(method, "recorder", 1).await, (Code::Unauthenticated, Some("b")));
        let order: Vec<&str> = events(method)
            .iter()
            .filter_map(|e| match e {
                Event::Ended(name, Code::Unauthenticated, _) => Some(*name),
                _ => None,
            })
            .collect();
        assert_eq!(order, ["c", "b", "a", "recorder"]);
        assert_eq!(handler_runs(method), 1, "the handler ran for the first call only");
    })
    .await
}
