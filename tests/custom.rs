//! User interceptors end to end: a token check rejects before the handler
//! runs, a validator ends a stream mid-way, checks written in their short
//! forms (the trait with two type lines and `on_start`, `check_metadata`,
//! `validate` either way), and a handler reaches its call's context (live
//! stats, a cancellation signal for the work it spawned). Asynchronous
//! checks are in `custom_async.rs`.

use std::{
    pin::Pin,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

mod common;

use common::{in_real_time, serve_and_connect};
use interceptor_examples::{
    pb::{route_guide_server::RouteGuide, Feature, Point, Rectangle, RouteNote, RouteSummary},
    SecureGuide,
};
use interceptor_runtime::{intercept, stats, CallContext};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status, Streaming};

fn with_token<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", "Bearer secret".parse().unwrap());
    request
}

fn note(text: &str) -> RouteNote {
    RouteNote { location: Some(Point { latitude: 1, longitude: 2 }), message: text.to_owned() }
}

#[tokio::test]
async fn a_missing_or_bad_token_is_unauthenticated_before_the_handler_runs() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(SecureGuide::default()).await;
        let point = Point { latitude: 3, longitude: 4 };

        let missing = client.get_feature(point).await.unwrap_err();
        assert_eq!(missing.code(), Code::Unauthenticated);
        assert_eq!(missing.message(), "missing `authorization: Bearer <token>` metadata");

        let mut wrong = Request::new(tokio_stream::iter(vec![note("hi")]));
        wrong.metadata_mut().insert("authorization", "Bearer guess".parse().unwrap());
        let status = client.route_chat(wrong).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "the bearer token is not valid");

        let ok = client.get_feature(with_token(point)).await.unwrap().into_inner();
        assert_eq!(ok.name, "feature at 3,4");

        // monitor runs first, so it saw both rejections; no message reached a handler.
        let unary = stats::method("/routeguide.SecureRouteGuide/GetFeature").unwrap();
        assert_eq!((unary.code(Code::Unauthenticated), unary.code(Code::Ok)), (1, 1));
        assert_eq!(unary.ended_by.get("token_check"), Some(&1));
        assert_eq!((unary.messages_received, unary.messages_sent), (1, 1), "only the authorised call counts");
        // (RouteChat's totals are shared with the validator test; its rejection is ours.)
        let chat = stats::method("/routeguide.SecureRouteGuide/RouteChat").unwrap();
        assert_eq!((chat.code(Code::Unauthenticated), chat.ended_by.get("token_check")), (1, Some(&1)));
    })
    .await;
}

#[tokio::test]
async fn a_bad_message_ends_the_stream_with_invalid_argument() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(SecureGuide::default()).await;
        let (tx, rx) = mpsc::channel(4);
        let mut replies =
            client.route_chat(with_token(tokio_stream::wrappers::ReceiverStream::new(rx))).await.unwrap().into_inner();
        tx.send(note("first")).await.unwrap();
        assert_eq!(replies.message().await.unwrap().unwrap().message, "first");
        tx.send(note("")).await.unwrap();
        let status = replies.message().await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "a note's message may not be empty");

        let chat = stats::method("/routeguide.SecureRouteGuide/RouteChat").unwrap();
        assert_eq!(chat.code(Code::InvalidArgument), 1);
        assert_eq!(chat.ended_by.get("note_validator"), Some(&1));
    })
    .await;
}

static HANDLER_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Handlers that report what they see of their call.
#[derive(Default)]
struct Introspect;

#[intercept(monitor, with = interceptor_examples::checks::TokenCheck::bearer("secret"), service = "test.Introspect")]
#[tonic::async_trait]
impl RouteGuide for Introspect {
    /// Names the call it belongs to.
    async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
        HANDLER_RUNS.fetch_add(1, Ordering::SeqCst);
        let ctx = CallContext::of(&request).ok_or_else(|| Status::internal("no call context"))?;
        let stats = ctx.stats();
        Ok(Response::new(Feature {
            name: format!(
                "{} received={} peer={}",
                ctx.method().full_name,
                stats.messages_received,
                ctx.peer().is_some()
            ),
            location: None,
        }))
    }

    type ListFeaturesStream = Pin<Box<dyn Stream<Item = Result<Feature, Status>> + Send>>;

    /// Streams until the client goes away; a spawned worker stops on the
    /// call's cancellation signal and reports it through the rectangle's
    /// `lo.latitude`-th channel.
    async fn list_features(&self, request: Request<Rectangle>) -> Result<Response<Self::ListFeaturesStream>, Status> {
        HANDLER_RUNS.fetch_add(1, Ordering::SeqCst);
        let ctx = CallContext::of(&request).ok_or_else(|| Status::internal("no call context"))?;
        tokio::spawn(async move {
            ctx.cancelled().cancelled().await;
            let code = ctx.outcome().map(|o| o.code);
            CANCELLED.lock().await.as_ref().unwrap().send(code).await.unwrap();
        });
        let ticks = tokio_stream::StreamExt::map(tokio_stream::iter(0..), |i| {
            Ok(Feature { name: format!("tick {i}"), location: None })
        });
        let ticks = tokio_stream::StreamExt::throttle(ticks, Duration::from_millis(5));
        Ok(Response::new(Box::pin(ticks)))
    }

    async fn record_route(&self, request: Request<Streaming<Point>>) -> Result<Response<RouteSummary>, Status> {
        HANDLER_RUNS.fetch_add(1, Ordering::SeqCst);
        let mut points = request.into_inner();
        let mut summary = RouteSummary::default();
        while points.message().await?.is_some() {
            summary.point_count += 1;
            // The inbound stream carries the same context, with live counts.
            summary.feature_count = points.context().stats().messages_received as i32;
        }
        Ok(Response::new(summary))
    }

    type RouteChatStream = Pin<Box<dyn Stream<Item = Result<RouteNote, Status>> + Send>>;

    async fn route_chat(
        &self,
        request: Request<Streaming<RouteNote>>,
    ) -> Result<Response<Self::RouteChatStream>, Status> {
        HANDLER_RUNS.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(Box::pin(request.into_inner())))
    }
}

static CANCELLED: tokio::sync::Mutex<Option<mpsc::Sender<Option<Code>>>> = tokio::sync::Mutex::const_new(None);

#[tokio::test]
async fn the_handler_reaches_its_call_context_and_its_cancellation() {
    in_real_time(async {
        let (tx, mut cancelled) = mpsc::channel(1);
        *CANCELLED.lock().await = Some(tx);
        let (mut client, _server) = serve_and_connect(Introspect).await;

        let before = HANDLER_RUNS.load(Ordering::SeqCst);
        let denied = client.get_feature(Point::default()).await.unwrap_err();
        assert_eq!(denied.code(), Code::Unauthenticated);
        assert_eq!(HANDLER_RUNS.load(Ordering::SeqCst), before, "the handler must not run");

        let named = client.get_feature(with_token(Point::default())).await.unwrap().into_inner();
        assert_eq!(named.name, "/test.Introspect/GetFeature received=1 peer=true");

        let route = tokio_stream::iter((0..5).map(|i| Point { latitude: i, longitude: i }));
        let summary = client.record_route(with_token(route)).await.unwrap().into_inner();
        assert_eq!((summary.point_count, summary.feature_count), (5, 5));

        // The client drops a server stream mid-way: the spawned worker hears of it.
        let mut ticks = client.list_features(with_token(Rectangle::default())).await.unwrap().into_inner();
        assert!(ticks.message().await.unwrap().is_some());
        drop(ticks);
        let code = tokio::time::timeout(Duration::from_secs(10), cancelled.recv()).await.expect("the signal fires");
        assert_eq!(code, Some(Some(Code::Cancelled)));
    })
    .await;
}

static CHECKED_RUNS: AtomicUsize = AtomicUsize::new(0);

/// The least a stateless check writes: the two state types and `on_start`
/// (its name is its type's).
struct RequireTenant;

impl interceptor_runtime::Interceptor for RequireTenant {
    type Call = ();
    type Stream = ();

    fn on_start(&self, _: &CallContext, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        match metadata.get("x-tenant") {
            Some(_) => Ok(()),
            None => Err(Status::unauthenticated("missing `x-tenant` metadata")),
        }
    }
}

/// Checks written in their short forms: a tenant (the trait), no banned
/// caller (`check_metadata`), points the client sends (`validate`) and
/// features the handler sends (`validate(..).outbound()`).
struct Checked;

#[intercept(
    monitor,
    with = RequireTenant,
    with = interceptor_runtime::check_metadata(|_, metadata| match metadata.get("x-banned") {
        Some(_) => Err(Status::permission_denied("banned")),
        None => Ok(()),
    })
    .named("ban_list"),
    with = interceptor_runtime::validate(|point: &Point| match point.latitude {
        ..0 => Err(Status::invalid_argument(format!("latitude {} is negative", point.latitude))),
        _ => Ok(()),
    })
    .named("points"),
    with = interceptor_runtime::validate(|feature: &Feature| match feature.name.is_empty() {
        true => Err(Status::internal("a feature without a name")),
        false => Ok(()),
    })
    .outbound()
    .named("features"),
    service = "test.Checked"
)]
#[tonic::async_trait]
impl RouteGuide for Checked {
    /// Names the feature `ok`, unless the point's longitude is 0.
    async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
        CHECKED_RUNS.fetch_add(1, Ordering::SeqCst);
        let point = request.into_inner();
        let name = if point.longitude == 0 { String::new() } else { "ok".to_owned() };
        Ok(Response::new(Feature { name, location: Some(point) }))
    }

    type ListFeaturesStream = Pin<Box<dyn Stream<Item = Result<Feature, Status>> + Send>>;

    async fn list_features(&self, _: Request<Rectangle>) -> Result<Response<Self::ListFeaturesStream>, Status> {
        CHECKED_RUNS.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(Box::pin(tokio_stream::empty())))
    }

    /// Counts the points.
    async fn record_route(&self, request: Request<Streaming<Point>>) -> Result<Response<RouteSummary>, Status> {
        CHECKED_RUNS.fetch_add(1, Ordering::SeqCst);
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
        CHECKED_RUNS.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(Box::pin(request.into_inner())))
    }
}

fn tenant<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("x-tenant", "acme".parse().unwrap());
    request
}

#[tokio::test]
async fn a_stateless_check_rejects_before_the_handler_runs() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(Checked).await;
        let before = stats::snapshot();
        let runs = CHECKED_RUNS.load(Ordering::SeqCst);

        let status = client.get_feature(Point { latitude: 1, longitude: 1 }).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::Unauthenticated, "missing `x-tenant` metadata"));
        let mut banned = tenant(Rectangle::default());
        banned.metadata_mut().insert("x-banned", "yes".parse().unwrap());
        let status = client.list_features(banned).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::PermissionDenied, "banned"));
        assert_eq!(CHECKED_RUNS.load(Ordering::SeqCst), runs, "the handlers must not run");

        let changes = stats::since(&before);
        let rejected_by = |method: &str, by: &str| {
            changes.iter().find(|m| m.method == method).and_then(|m| m.ended_by.get(by).copied())
        };
        assert_eq!(rejected_by("/test.Checked/GetFeature", "RequireTenant"), Some(1), "named by its type: {changes:?}");
        assert_eq!(rejected_by("/test.Checked/ListFeatures", "ban_list"), Some(1));
    })
    .await;
}

#[tokio::test]
async fn validate_checks_the_messages_of_its_type_and_lets_the_others_pass() {
    in_real_time(async {
        let (mut client, _server) = serve_and_connect(Checked).await;

        // A bad point ends the upload mid-stream, after the good ones.
        let (tx, rx) = mpsc::channel(4);
        let upload = tokio::spawn({
            let mut client = client.clone();
            async move { client.record_route(tenant(tokio_stream::wrappers::ReceiverStream::new(rx))).await }
        });
        for latitude in [1, 2, -3, 4] {
            if tx.send(Point { latitude, longitude: 1 }).await.is_err() {
                break; // the call is over
            }
        }
        drop(tx);
        let status =
            tokio::time::timeout(Duration::from_secs(10), upload).await.expect("bounded").unwrap().unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::InvalidArgument, "latitude -3 is negative"));
        let route = stats::method("/test.Checked/RecordRoute").unwrap();
        assert_eq!((route.messages_received, route.ended_by.get("points")), (2, Some(&1)), "{route:?}");

        // Notes are of another type: they pass both ways.
        let notes = tokio_stream::iter(vec![note("a"), note("")]);
        let echoed = client.route_chat(tenant(notes)).await.unwrap().into_inner();
        let echoed: Vec<_> = tokio_stream::StreamExt::collect(echoed).await;
        assert_eq!(echoed.into_iter().map(|n| n.unwrap().message).collect::<Vec<_>>(), ["a", ""]);

        // A point is checked inbound, a feature outbound (and a point is not
        // checked outbound: the feature carries it back).
        let feature = client.get_feature(tenant(Point { latitude: 5, longitude: 1 })).await.unwrap().into_inner();
        assert_eq!(feature.name, "ok");
        let status = client.get_feature(tenant(Point { latitude: 5, longitude: 0 })).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::Internal, "a feature without a name"));
        let unary = stats::method("/test.Checked/GetFeature").unwrap();
        assert_eq!(unary.ended_by.get("features"), Some(&1));
    })
    .await;
}

/// Counts, in `&self`, the calls it starts and the messages it sees.
#[derive(Default)]
struct Tally {
    calls: AtomicUsize,
    messages: AtomicUsize,
}

impl interceptor_runtime::Interceptor for Tally {
    type Call = ();
    type Stream = ();

    fn on_start(&self, _: &CallContext, _: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn on_message<M: prost::Message + 'static>(
        &self,
        _: &(),
        _: &mut (),
        _: &interceptor_runtime::MessageRef<'_, M>,
    ) -> Result<(), Status> {
        self.messages.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// One `Tally` for two services.
static TALLY: std::sync::LazyLock<std::sync::Arc<Tally>> = std::sync::LazyLock::new(Default::default);

async fn count_points(request: Request<interceptor_runtime::Inbound<Point>>) -> Result<Response<RouteSummary>, Status> {
    let mut points = request.into_inner();
    let mut summary = RouteSummary::default();
    while points.message().await?.is_some() {
        summary.point_count += 1;
    }
    Ok(Response::new(summary))
}

struct First;

impl First {
    #[intercept(with = TALLY.clone(), service = "shared.First")]
    async fn record_route(&self, request: Request<Streaming<Point>>) -> Result<Response<RouteSummary>, Status> {
        count_points(request).await
    }
}

struct Second;

impl Second {
    #[intercept(with = TALLY.clone(), service = "shared.Second")]
    async fn record_route(&self, request: Request<Streaming<Point>>) -> Result<Response<RouteSummary>, Status> {
        count_points(request).await
    }
}

/// An interceptor in an `Arc` is one: the same instance, and its `&self`
/// state, serves the methods of two services.
#[tokio::test]
async fn one_interceptor_in_an_arc_serves_two_services() {
    let points =
        |n| interceptor_runtime::testing::streaming_request((0..n).map(|i| Point { latitude: i, longitude: 0 }));
    assert_eq!(First.record_route(points(3)).await.unwrap().into_inner().point_count, 3);
    assert_eq!(Second.record_route(points(2)).await.unwrap().into_inner().point_count, 2);
    // Two calls; 5 points in, and the 2 summaries out.
    assert_eq!((TALLY.calls.load(Ordering::Relaxed), TALLY.messages.load(Ordering::Relaxed)), (2, 7));
}
