// `with = ..` that mentions `self` is evaluated on every call, and calls with
// equal values share one interceptor: its type must be `PartialEq + Clone`.
use interceptor_runtime::{intercept, CallContext, Direction, Interceptor};
use tonic::{metadata::MetadataMap, Request, Response, Status};

#[derive(Clone)]
struct TokenCheck {
    token: String,
}

impl Interceptor for TokenCheck {
    type Call = ();
    type Stream = ();
    fn name(&self) -> &'static str {
        "token_check"
    }
    fn on_start(&self, _: &CallContext, metadata: &MetadataMap) -> Result<(), Status> {
        match metadata.get("token") {
            Some(token) if token == self.token.as_str() => Ok(()),
            _ => Err(Status::unauthenticated("no token")),
        }
    }
    fn on_stream(&self, _: &(), _: &CallContext, _: Direction) {}
}

struct Svc {
    check: TokenCheck,
}

impl Svc {
    #[intercept(with = self.check.clone())]
    async fn unary(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }
}

fn main() {}
