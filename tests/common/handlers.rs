//! Routeguide handlers that do, on request, what a real handler may: answer,
//! fail, panic, never answer, stop reading, keep a stream open. `service!`
//! stamps out a service of them with [`Recorder`](super::events::Recorder)
//! first and a given list of interceptors after it.

use std::time::Duration;

use futures_util::StreamExt;
use interceptor_examples::pb::{Feature, Point, Rectangle, RouteNote, RouteSummary};
use interceptor_runtime::{CallContext, Inbound};
use tokio::{sync::mpsc, time::Instant};
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::{codegen::BoxStream, Request, Response, Status, Streaming};

use super::events::{record, Event};

/// `latitude` -1 panics, -2 fails, -3 never answers; otherwise the point comes back.
pub async fn get_feature(request: Request<Point>) -> Result<Response<Feature>, Status> {
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

/// A rectangle that asks [`list_features`] for `count` features (negative: no
/// end), named `0`, `1`, ... padded with zeros to `pad` characters, `every_ms`
/// apart; with `hold` the stream stays open after the last one.
pub fn rect(count: i32, pad: i32, hold: bool, every_ms: i32) -> Rectangle {
    Rectangle {
        lo: Some(Point { latitude: count, longitude: pad }),
        hi: Some(Point { latitude: i32::from(hold), longitude: every_ms }),
    }
}

/// The features [`rect`] describes.
pub fn list_features(ctx: &CallContext, rect: Rectangle) -> BoxStream<Feature> {
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
pub async fn record_route(mut points: Inbound<Point>) -> Result<RouteSummary, Status> {
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

/// A note at latitude `i` saying `text`, echoed once by [`route_chat`].
pub fn note(i: i32, text: &str) -> RouteNote {
    RouteNote { location: Some(Point { latitude: i, longitude: 0 }), message: text.to_owned() }
}

/// Echoes every note (twice when `location.longitude == -2`, not at all when
/// it is -1) from a spawned task, forwarding the inbound stream's error.
pub fn route_chat(mut notes: Inbound<RouteNote>) -> BoxStream<RouteNote> {
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

/// A routeguide service named `$ty` over the handlers above, with `Recorder`
/// first and the given interceptors after it, on every method:
/// `service!(RateRecv: rate(recv = 10), service = "test.RateRecv");`.
macro_rules! service {
    // `service!(calls_only X: ..)`: the calls recorded, not the messages
    // (`events::CallRecorder`), so that the interceptors may let messages
    // pass unseen.
    (calls_only $(#[$doc:meta])* $ty:ident: $($args:tt)*) => {
        $crate::common::handlers::service!(@with [CallRecorder] $(#[$doc])* $ty: $($args)*);
    };
    ($(#[$doc:meta])* $ty:ident: $($args:tt)*) => {
        $crate::common::handlers::service!(@with [Recorder] $(#[$doc])* $ty: $($args)*);
    };
    (@with [$recorder:ident] $(#[$doc:meta])* $ty:ident: $($args:tt)*) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        struct $ty;

        const _: () = {
            #[allow(unused_imports)]
            use $crate::common::{events::{CallRecorder, Recorder}, handlers};
            use interceptor_examples::pb::{
                route_guide_server::RouteGuide, Feature, Point, Rectangle, RouteNote, RouteSummary,
            };
            use interceptor_runtime::CallContext;
            use tonic::{codegen::BoxStream, Request, Response, Status, Streaming};

            #[interceptor_runtime::intercept(with = $recorder, $($args)*)]
            #[tonic::async_trait]
            impl RouteGuide for $ty {
                async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
                    handlers::get_feature(request).await
                }

                type ListFeaturesStream = BoxStream<Feature>;

                async fn list_features(
                    &self,
                    request: Request<Rectangle>,
                ) -> Result<Response<Self::ListFeaturesStream>, Status> {
                    let ctx = CallContext::of(&request).expect("intercepted");
                    Ok(Response::new(handlers::list_features(&ctx, request.into_inner())))
                }

                async fn record_route(
                    &self,
                    request: Request<Streaming<Point>>,
                ) -> Result<Response<RouteSummary>, Status> {
                    handlers::record_route(request.into_inner()).await.map(Response::new)
                }

                type RouteChatStream = BoxStream<RouteNote>;

                async fn route_chat(
                    &self,
                    request: Request<Streaming<RouteNote>>,
                ) -> Result<Response<Self::RouteChatStream>, Status> {
                    Ok(Response::new(handlers::route_chat(request.into_inner())))
                }
            }
        };
    };
}
pub(crate) use service;

/// A client stream fed from a channel, in process: the handler gets each
/// message sent as tonic would decode it off the wire; dropping the sender
/// ends the stream.
pub fn client_stream<T: prost::Message + Default + Send + 'static>() -> (mpsc::UnboundedSender<T>, Streaming<T>) {
    let (tx, rx) = mpsc::unbounded_channel::<T>();
    (tx, interceptor_runtime::testing::streaming(UnboundedReceiverStream::new(rx).map(Ok)))
}

/// The messages of a response stream up to its error.
pub async fn drain<T>(stream: &mut Streaming<T>) -> (Vec<T>, Status) {
    let mut messages = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(message)) => messages.push(message),
            Ok(None) => panic!("the stream ended without an error"),
            Err(status) => return (messages, status),
        }
    }
}
