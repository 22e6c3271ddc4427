//! A handler's names, as the expansion builds its [`MethodInfo`] on the
//! method's first call:
//!
//! ```text
//! SLOT.get_or_init(|| Names::guessed(SERVICE, "RouteChat").info(&request, kind), || chain)
//! METHODS.get(key, || names.info(&request, kind), build)     // or, with a bad value:
//! return Err(METHODS.bad(names, &request, bad))
//! ```
//!
//! The request names the method when the server recorded its path or it
//! carries a `tonic::GrpcMethod` (see `transport::names`):
//! those names are used as they are. Otherwise the macro's are: the
//! `service = ".."` written in the attribute, or guessed from the Rust code
//! (logged at INFO, once per method, saying how to get the real ones).

use tonic::Request;

use crate::{
    engine::{MethodInfo, NameSource, RpcKind},
    transport::names::wire_names,
};

/// What the macro knows of a handler's names, for a request that carries
/// none: the service and the method, `Method` derived from the handler's
/// name.
#[derive(Clone, Copy, Debug)]
pub struct Names<'a> {
    service: &'a str,
    method: &'a str,
    /// `service` was written in the attribute: it wins over the request's.
    given: bool,
}

impl<'a> Names<'a> {
    /// `service = ".."` was written.
    #[inline]
    pub fn given(service: &'a str, method: &'a str) -> Self {
        Names { service, method, given: true }
    }

    /// The service guessed from the Rust code: `module::SERVICE_NAME`, the
    /// trait's name, or the impl type's.
    #[inline]
    pub fn guessed(service: &'a str, method: &'a str) -> Self {
        Names { service, method, given: false }
    }

    /// `(service, method, where they came from)` for a call of `request`.
    fn for_request<'r, T>(self, request: &'r Request<T>) -> (&'r str, &'r str, NameSource)
    where
        'a: 'r,
    {
        match (wire_names(request.extensions()), self.given) {
            (wire, true) => (self.service, wire.map_or(self.method, |(_, method)| method), NameSource::Given),
            (Some((service, method)), false) => (service, method, NameSource::Request),
            (None, false) => (self.service, self.method, NameSource::Guessed),
        }
    }

    /// The method's description, on its first call.
    #[cold]
    pub fn info<T>(self, request: &Request<T>, kind: RpcKind) -> MethodInfo {
        let (service, method, names) = self.for_request(request);
        let info = MethodInfo::named(service, method, kind, names);
        if names == NameSource::Guessed {
            tracing::info!(
                method = info.full_name,
                "`#[intercept]`: the first call's request does not say which gRPC method it called; the names \
                 are guessed from the Rust code. For the names clients call, add \
                 `interceptor_runtime::InterceptLayer` to the server (`Server::builder().layer(..)`), or write \
                 `service = \"package.Service\"`"
            );
        }
        info
    }

    /// `/service/method` for `request`, as [`info`](Self::info) would name
    /// it (for a status message: nothing is leaked).
    #[cold]
    pub(crate) fn full_name<T>(self, request: &Request<T>) -> String {
        let (service, method, _) = self.for_request(request);
        format!("/{service}/{method}")
    }
}

#[cfg(test)]
mod tests {
    use http::uri::PathAndQuery;

    use super::*;
    use crate::transport::names::RequestPath;

    fn routed(path: &'static str) -> Request<()> {
        let mut request = Request::new(());
        request.extensions_mut().insert(RequestPath(PathAndQuery::from_static(path)));
        request
    }

    #[test]
    fn the_request_names_win_over_a_guess_and_lose_to_the_attribute() {
        let guess = Names::guessed("Pipe", "GetHttpStatus");
        let exact = guess.info(&routed("/fixture.v1.Pipe/GetHTTPStatus"), RpcKind::Unary);
        assert_eq!(
            (exact.service, exact.method, exact.full_name, exact.names),
            ("fixture.v1.Pipe", "GetHTTPStatus", "/fixture.v1.Pipe/GetHTTPStatus", NameSource::Request)
        );
        let guessed = guess.info(&Request::new(()), RpcKind::Unary);
        assert_eq!((guessed.full_name, guessed.names), ("/Pipe/GetHttpStatus", NameSource::Guessed));

        let given = Names::given("custom.Pipe", "GetHttpStatus");
        let with_wire = given.info(&routed("/fixture.v1.Pipe/GetHTTPStatus"), RpcKind::Unary);
        assert_eq!((with_wire.full_name, with_wire.names), ("/custom.Pipe/GetHTTPStatus", NameSource::Given));
        let alone = given.info(&Request::new(()), RpcKind::Unary);
        assert_eq!((alone.full_name, alone.names), ("/custom.Pipe/GetHttpStatus", NameSource::Given));
        assert_eq!(given.full_name(&routed("/fixture.v1.Pipe/GetHTTPStatus")), "/custom.Pipe/GetHTTPStatus");
    }
}
