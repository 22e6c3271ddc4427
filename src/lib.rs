//! The routeguide service from the gRPC tutorials, intercepted.
//!
//! [`Guide`] is the service as a user writes it: `#[intercept(..)]` on the
//! impl, above `#[tonic::async_trait]`, plus a method-level attribute that adds
//! to it. The same handler bodies are also stamped out as [`MethodGuide`]
//! (the attribute on each method, below `#[tonic::async_trait]`) and
//! [`PlainGuide`] (no attribute), so that tests can check all three answer
//! alike.

use std::{collections::HashMap, pin::Pin, sync::Arc};

use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

pub mod checks;

/// The generated messages, client and server.
pub mod pb {
    tonic::include_proto!("routeguide");
}

use pb::{route_guide_server, Feature, Point, Rectangle, RouteNote, RouteSummary};

/// Features on a small grid: every point with `latitude % 3 == 0` and
/// `longitude % 2 == 0` in `0..30 x 0..30` has one.
pub fn features() -> Arc<Vec<Feature>> {
    let mut features = Vec::new();
    for latitude in 0..30 {
        for longitude in 0..30 {
            if latitude % 3 == 0 && longitude % 2 == 0 {
                features.push(Feature {
                    name: format!("feature at {latitude},{longitude}"),
                    location: Some(Point { latitude, longitude }),
                });
            }
        }
    }
    Arc::new(features)
}

fn in_range(point: &Point, rect: &Rectangle) -> bool {
    let (lo, hi) = (rect.lo.unwrap_or_default(), rect.hi.unwrap_or_default());
    let (left, right) = (lo.longitude.min(hi.longitude), lo.longitude.max(hi.longitude));
    let (bottom, top) = (lo.latitude.min(hi.latitude), lo.latitude.max(hi.latitude));
    (left..=right).contains(&point.longitude) && (bottom..=top).contains(&point.latitude)
}

/// Manhattan distance on the grid.
fn distance(a: &Point, b: &Point) -> i32 {
    (a.latitude - b.latitude).abs() + (a.longitude - b.longitude).abs()
}

/// Defines `$ty`, a routeguide service over [`features`], with the given
/// attributes above the impl and on every method: the bodies are the same
/// for every placement.
macro_rules! route_guide {
    (
        $(#[$doc:meta])*
        $ty:ident,
        impl: [$(#[$impl_attr:meta])*],
        method: [$(#[$method_attr:meta])*],
        route_chat: [$(#[$chat_attr:meta])*],
        list_features_stream: $list_stream:ty $(,)?
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $ty {
            features: Arc<Vec<Feature>>,
        }

        impl Default for $ty {
            fn default() -> Self {
                $ty { features: features() }
            }
        }

        $(#[$impl_attr])*
        #[tonic::async_trait]
        impl route_guide_server::RouteGuide for $ty {
            $(#[$method_attr])*
            async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
                let point = request.into_inner();
                if point.latitude < 0 || point.longitude < 0 {
                    return Err(Status::invalid_argument("the grid has no negative coordinates"));
                }
                let found = self.features.iter().find(|f| f.location.as_ref() == Some(&point));
                Ok(Response::new(found.cloned().unwrap_or(Feature { name: String::new(), location: Some(point) })))
            }

            type ListFeaturesStream = $list_stream;

            $(#[$method_attr])*
            async fn list_features(
                &self,
                request: Request<Rectangle>,
            ) -> Result<Response<Self::ListFeaturesStream>, Status> {
                let rect = request.into_inner();
                let (tx, rx) = mpsc::channel(4);
                let features = self.features.clone();
                tokio::spawn(async move {
                    for feature in features.iter() {
                        if feature.location.as_ref().is_some_and(|p| in_range(p, &rect))
                            && tx.send(Ok(feature.clone())).await.is_err()
                        {
                            return; // the client went away
                        }
                    }
                });
                Ok(Response::new(ReceiverStream::new(rx)))
            }

            $(#[$method_attr])*
            async fn record_route(
                &self,
                request: Request<Streaming<Point>>,
            ) -> Result<Response<RouteSummary>, Status> {
                let mut stream = request.into_inner();
                let mut summary = RouteSummary::default();
                let mut last: Option<Point> = None;
                while let Some(point) = stream.message().await? {
                    summary.point_count += 1;
                    if self.features.iter().any(|f| f.location.as_ref() == Some(&point)) {
                        summary.feature_count += 1;
                    }
                    if let Some(last) = &last {
                        summary.distance += distance(last, &point);
                    }
                    last = Some(point);
                }
                Ok(Response::new(summary))
            }

            type RouteChatStream = Pin<Box<dyn Stream<Item = Result<RouteNote, Status>> + Send + 'static>>;

            $(#[$method_attr])*
            $(#[$chat_attr])*
            async fn route_chat(
                &self,
                request: Request<Streaming<RouteNote>>,
            ) -> Result<Response<Self::RouteChatStream>, Status> {
                let mut notes = HashMap::<(i32, i32), Vec<RouteNote>>::new();
                let mut stream = request.into_inner();
                let (tx, rx) = mpsc::channel(16);
                tokio::spawn(async move {
                    while let Some(note) = stream.next().await {
                        let note = match note {
                            Ok(note) => note,
                            Err(status) => {
                                let _ = tx.send(Err(status)).await;
                                return;
                            }
                        };
                        let at = note.location.unwrap_or_default();
                        let earlier = notes.entry((at.latitude, at.longitude)).or_default();
                        // Every note comes back, followed by the earlier notes
                        // left at the same place.
                        for reply in std::iter::once(&note).chain(earlier.iter()) {
                            if tx.send(Ok(reply.clone())).await.is_err() {
                                return;
                            }
                        }
                        earlier.push(note);
                    }
                });
                Ok(Response::new(Box::pin(ReceiverStream::new(rx)) as Self::RouteChatStream))
            }
        }
    };
}

route_guide! {
    /// The demo service: `otel` (which runs first, so that it sees every call) and
    /// `monitor` on every method from the impl, and a message-size warning
    /// added on `route_chat`.
    Guide,
    impl: [#[interceptor_runtime::intercept(otel, monitor)]],
    method: [],
    route_chat: [#[interceptor_runtime::intercept(monitor(warn_size = "1KiB"))]],
    list_features_stream: ReceiverStream<Result<Feature, Status>>,
}

route_guide! {
    /// The same service with `#[intercept(monitor)]` on each method, below
    /// `#[tonic::async_trait]`, and the service name given explicitly.
    MethodGuide,
    impl: [],
    method: [#[interceptor_runtime::intercept(monitor, service = route_guide_server::SERVICE_NAME)]],
    route_chat: [],
    // On a method alone the attribute cannot reach the associated type, so the
    // wrapper is written out here; the impl-level attribute does it for you.
    list_features_stream: interceptor_runtime::Outbound<ReceiverStream<Result<Feature, Status>>>,
}

route_guide! {
    /// The same service without interceptors.
    PlainGuide,
    impl: [],
    method: [],
    route_chat: [],
    list_features_stream: ReceiverStream<Result<Feature, Status>>,
}

route_guide! {
    /// The service behind a bearer token, with its notes validated: both
    /// checks are user interceptors ([`checks`]) added with `with = ..`.
    SecureGuide,
    impl: [#[interceptor_runtime::intercept(
        monitor,
        with = checks::TokenCheck::bearer("secret"),
        with = checks::note_validator(256),
        service = "routeguide.SecureRouteGuide",
    )]],
    method: [],
    route_chat: [],
    list_features_stream: ReceiverStream<Result<Feature, Status>>,
}

route_guide! {
    /// The service behind a quota: before each call the handler waits for
    /// the client's quota to be looked up in a (mock) remote service, with
    /// [`checks::quota`], an asynchronous check.
    MeteredGuide,
    impl: [#[interceptor_runtime::intercept(
        monitor,
        with = checks::quota(&checks::QUOTAS),
        service = "routeguide.MeteredRouteGuide",
    )]],
    method: [],
    route_chat: [],
    list_features_stream: ReceiverStream<Result<Feature, Status>>,
}
