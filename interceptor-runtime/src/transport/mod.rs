//! [`InterceptLayer`]: what `#[intercept]` needs to see from below tonic:
//! the names each method is called by, and how each call really ended.
//!
//! tonic's generated server hands a handler neither the request's path nor
//! a `tonic::GrpcMethod`, so without help the method's names are guessed
//! from the Rust code. And some endings never reach a handler through
//! tonic's API: tonic's decoder turns a request body that the client reset
//! with `RST_STREAM(CANCEL)` into a clean end of the stream, so a handler
//! that reads an upload to its end cannot tell a cancelled upload from a
//! complete one; and a response that the handler returned is not yet a
//! response the client received. The layer keeps each request's path in
//! its extensions, watches the HTTP/2 request and response bodies of every
//! call, and tells the call's engine:
//!
//! - the method's names as the client called it, `/package.Service/Method`
//!   (read once, on the method's first call; see [Method names](crate#method-names));
//! - when the request body fails (the client reset the stream, closed or
//!   lost its connection), the handler's [`Inbound`](crate::Inbound) yields
//!   CANCELLED, with what happened, instead of a clean end, and the call
//!   ends CANCELLED;
//! - a call whose result is OK is over when its response's end (the
//!   trailers) has been handed to HTTP/2; a response dropped before that
//!   (the client went away first) ends the call CANCELLED;
//! - a call whose response stream is dropped after tonic sent an error in
//!   the trailers (a reply over `max_encoding_message_size`) ends with that
//!   error, and one whose handler is dropped once the client's deadline
//!   (`grpc-timeout`) passed ends as tonic's server answers it, CANCELLED
//!   "Timeout expired".
//!
//! One line in the server's setup:
//!
//! ```no_run
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! # let routes = tonic::service::Routes::default();
//! tonic::transport::Server::builder()
//!     .layer(interceptor_runtime::InterceptLayer::new())
//! #   .add_routes(routes)
//! #   .serve("127.0.0.1:50051".parse()?)
//! #   .await?;
//! #   Ok(())
//! # }
//! ```
//!
//! It costs an allocation, a reference count on the path, two extensions and
//! a look for `grpc-timeout` per HTTP request, and one check per HTTP/2 frame
//! of each body, not per message. Requests of services that are not intercepted pass through
//! unchanged.

mod body;
mod deadline;
mod failure;
pub(crate) mod names;
mod tap;

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use tonic::codegen::{http, Bytes};

use body::RequestBody;
pub use body::ResponseBody;
pub(crate) use failure::transport_failure;
pub(crate) use tap::{Deferred, Ended, Tap};

/// The `tower` layer that lets intercepted calls see their methods' names
/// as clients call them and how they really ended; see the
/// [module docs](self).
///
/// `Server::builder().layer(InterceptLayer::new())`. Without it everything
/// works, but methods are named as the Rust code guesses, a client that
/// cancels an upload looks like a clean end to the handler, and an OK
/// response the client never got still counts OK.
#[derive(Clone, Copy, Debug, Default)]
pub struct InterceptLayer;

impl InterceptLayer {
    /// The layer.
    pub fn new() -> Self {
        InterceptLayer
    }
}

impl<S> tower_layer::Layer<S> for InterceptLayer {
    type Service = InterceptService<S>;

    fn layer(&self, inner: S) -> InterceptService<S> {
        InterceptService::new(inner)
    }
}

/// What [`InterceptLayer`] makes of a service: it puts a tap (what the
/// transport sees of the call) into each request's extensions, where the
/// call's engine finds it, and watches the request and response bodies.
#[derive(Clone, Debug)]
pub struct InterceptService<S> {
    inner: S,
}

impl<S, B, ResBody> tower_service::Service<http::Request<B>> for InterceptService<S>
where
    S: tower_service::Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: http_body::Body,
{
    type Response = http::Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let tap = Arc::new(Tap::new(deadline::timed_out_from(&parts.headers)));
        if let Some(path) = parts.uri.path_and_query().cloned() {
            parts.extensions.insert(names::RequestPath(path));
        }
        // tonic's generated server keeps the extensions in the
        // `tonic::Request` the handler gets: `Method::start` finds it there.
        parts.extensions.insert(tap.clone());
        let body = tonic::body::Body::new(RequestBody::new(body, tap.clone()));
        ResponseFuture { inner: self.inner.call(http::Request::from_parts(parts, body)), tap: Some(tap) }
    }
}

impl<S> InterceptService<S> {
    /// The layer on one service of a server, which then keeps its name:
    /// `Server::builder().add_service(InterceptService::new(RouteGuideServer::new(guide)))`.
    pub fn new(inner: S) -> Self {
        InterceptService { inner }
    }
}

/// So that the layer can wrap one service of a server
/// ([`InterceptService::new`]).
impl<S: tonic::server::NamedService> tonic::server::NamedService for InterceptService<S> {
    const NAME: &'static str = S::NAME;
}

pin_project_lite::pin_project! {
    /// The future of a [`InterceptService`]'s response. Dropped before it is
    /// ready, the client went away before the response.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        tap: Option<Arc<Tap>>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(tap) = this.project().tap.take() {
                tap.response_ended(Ended::Dropped);
            }
        }
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: http_body::Body,
{
    type Output = Result<http::Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let tap = this.tap.take();
        Poll::Ready(match result {
            Ok(response) => Ok(response.map(|body| ResponseBody::new(body, tap))),
            Err(error) => {
                if let Some(tap) = tap {
                    tap.response_ended(Ended::Dropped);
                }
                Err(error)
            }
        })
    }
}
