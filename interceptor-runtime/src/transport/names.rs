//! The names a method is called by on the wire, for [`MethodInfo`]:
//! `package.Service` and `Method` as the client's request path
//! `/package.Service/Method` spells them.
//!
//! tonic's generated servers do not hand them to the handler: the request a
//! handler gets has no URI, and tonic 0.14's generated code inserts
//! `tonic::GrpcMethod` on the client's requests only, not on the server's.
//! So a request carries its names when:
//! - the server has [`InterceptLayer`](super::InterceptLayer), which keeps
//!   each request's path in its extensions;
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

use http::{uri::PathAndQuery, Extensions};
use tonic::GrpcMethod;

/// The request's HTTP/2 path, as the server received it.
#[derive(Clone, Debug)]
pub(crate) struct RequestPath(pub(crate) PathAndQuery);

/// `(service, method)` as the request names them, if it does: its path (see
/// [`InterceptLayer`](super::InterceptLayer)) or its `tonic::GrpcMethod`.
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
        use tower_layer::Layer;
        use tower_service::Service;

        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let mut service = super::super::InterceptLayer::new().layer(RecordPath(seen.clone()));
        let request =
            http::Request::builder().uri("http://host/pkg.Svc/Call").body(tonic::body::Body::empty()).unwrap();
        let _ = futures_util::FutureExt::now_or_never(service.call(request)).unwrap().unwrap();
        assert_eq!(seen.lock().unwrap().as_deref(), Some("/pkg.Svc/Call"));
    }

    /// A service that keeps the path its request carries in its extensions.
    struct RecordPath(std::sync::Arc<std::sync::Mutex<Option<String>>>);

    impl tower_service::Service<http::Request<tonic::body::Body>> for RecordPath {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
            *self.0.lock().unwrap() =
                request.extensions().get::<RequestPath>().map(|RequestPath(p)| p.as_str().to_owned());
            std::future::ready(Ok(http::Response::new(tonic::body::Body::empty())))
        }
    }
}
