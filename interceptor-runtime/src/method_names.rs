//! The names a method is called by on the wire, for [`MethodInfo`]:
//! `package.Service` and `Method` as the client's request path
//! `/package.Service/Method` spells them.
//!
//! tonic's generated servers do not hand them to the handler: the request a
//! handler gets has no URI, and tonic 0.14's generated code inserts
//! `tonic::GrpcMethod` on the client's requests only, not on the server's.
//! So a request carries its names when:
//! - the server has [`MethodNamesLayer`], which keeps each request's path in
//!   its extensions (one line: `Server::builder().layer(MethodNamesLayer)`);
//! - or it has a `tonic::GrpcMethod`: a request made by a tonic client and
//!   handed to the server in-process (the client inserts one), or one a
//!   user's own layer inserted;
//! - or, in the test kit, [`set_grpc_path`](crate::testing::set_grpc_path)
//!   gave it one.
//!
//! A method's names are read once, from its first call (see
//! [`NameSource`]); a call that carries none leaves the names guessed from
//! the Rust code.
//!
//! [`MethodInfo`]: crate::MethodInfo
//! [`NameSource`]: crate::NameSource

use std::task::{Context, Poll};

use http::{uri::PathAndQuery, Extensions};
use tonic::GrpcMethod;
use tower_layer::Layer;
use tower_service::Service;

/// A tower layer for a tonic server: intercepted handlers name their
/// methods as clients call them (`/package.Service/Method`) in stats,
/// metrics and spans, whatever the Rust code calls the trait.
///
/// ```
/// use interceptor_runtime::MethodNamesLayer;
///
/// let server = tonic::transport::Server::builder().layer(MethodNamesLayer);
/// // server.add_service(EchoServer::new(MyEcho)).serve(addr).await?;
/// ```
///
/// It costs a reference count per call: it keeps the request's path (shared
/// bytes, not a copy) in the request's extensions, where the method's first
/// call reads it.
#[derive(Clone, Copy, Debug, Default)]
pub struct MethodNamesLayer;

impl<S> Layer<S> for MethodNamesLayer {
    type Service = MethodNames<S>;

    fn layer(&self, inner: S) -> MethodNames<S> {
        MethodNames { inner }
    }
}

/// The service [`MethodNamesLayer`] makes: `inner`, with each request's path
/// kept in the request's extensions.
#[derive(Clone, Debug)]
pub struct MethodNames<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for MethodNames<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        if let Some(path) = request.uri().path_and_query().cloned() {
            request.extensions_mut().insert(RequestPath(path));
        }
        self.inner.call(request)
    }
}

/// The request's HTTP/2 path, as the server received it.
#[derive(Clone, Debug)]
pub(crate) struct RequestPath(pub(crate) PathAndQuery);

/// `(service, method)` as the request names them, if it does: its path (see
/// [`MethodNamesLayer`]) or its `tonic::GrpcMethod`.
pub(crate) fn wire_names(extensions: &Extensions) -> Option<(&str, &str)> {
    if let Some(names) = extensions.get::<RequestPath>().and_then(|RequestPath(path)| split(path.path())) {
        return Some(names);
    }
    let method = extensions.get::<GrpcMethod<'static>>()?;
    (!method.service().is_empty() && !method.method().is_empty()).then(|| (method.service(), method.method()))
}

/// `/package.Service/Method` → `("package.Service", "Method")`; `None` for a
/// path that is not a gRPC method's.
pub(crate) fn split(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some((service, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_path_is_split_into_its_names() {
        assert_eq!(split("/grpc.examples.echo.Echo/UnaryEcho"), Some(("grpc.examples.echo.Echo", "UnaryEcho")));
        assert_eq!(split("/Svc/M"), Some(("Svc", "M")));
        for not_grpc in ["", "/", "//M", "/Svc/", "/Svc", "Svc/M", "/a/b/c"] {
            assert_eq!(split(not_grpc), None, "{not_grpc:?}");
        }
    }

    #[test]
    fn the_path_comes_before_a_grpc_method() {
        let mut extensions = Extensions::new();
        assert_eq!(wire_names(&extensions), None);
        extensions.insert(GrpcMethod::new("pkg.FromClient", "Call"));
        assert_eq!(wire_names(&extensions), Some(("pkg.FromClient", "Call")));
        extensions.insert(RequestPath(PathAndQuery::from_static("/pkg.Routed/Call")));
        assert_eq!(wire_names(&extensions), Some(("pkg.Routed", "Call")));
        // A path that is not a method's is ignored.
        extensions.insert(RequestPath(PathAndQuery::from_static("/health")));
        assert_eq!(wire_names(&extensions), Some(("pkg.FromClient", "Call")));
    }

    #[test]
    fn the_layer_keeps_the_path() {
        let mut service = MethodNamesLayer.layer(tower_service_fn(|request: http::Request<()>| {
            request.extensions().get::<RequestPath>().map(|RequestPath(p)| p.as_str().to_owned())
        }));
        let request = http::Request::builder().uri("http://host/pkg.Svc/Call").body(()).unwrap();
        let seen = futures_util::FutureExt::now_or_never(service.call(request)).unwrap().unwrap();
        assert_eq!(seen.as_deref(), Some("/pkg.Svc/Call"));
    }

    /// A service that answers with `f(request)`.
    fn tower_service_fn<F, R>(f: F) -> impl Service<http::Request<()>, Response = R, Error = std::convert::Infallible>
    where
        F: FnMut(http::Request<()>) -> R,
    {
        struct Fn<F>(F);
        impl<F: FnMut(http::Request<()>) -> R, R> Service<http::Request<()>> for Fn<F> {
            type Response = R;
            type Error = std::convert::Infallible;
            type Future = std::future::Ready<Result<R, std::convert::Infallible>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, request: http::Request<()>) -> Self::Future {
                std::future::ready(Ok((self.0)(request)))
            }
        }
        Fn(f)
    }
}
