// Option values may be expressions; one of the wrong type is an error at it,
// saying what the option takes.
use std::time::Duration;

use interceptor_runtime::intercept;
use tonic::{Request, Response, Status};

const TIMEOUT_SECONDS: u64 = 30;
const LIMIT: f64 = 10.0;

#[derive(Clone)]
struct Check;

struct Svc {
    scope: &'static str,
    check: Check,
}

impl Svc {
    // A duration is a `Duration` or a string like "30s", not a number.
    #[intercept(budget(duration = TIMEOUT_SECONDS))]
    async fn seconds(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }

    // A rate is a whole number.
    #[intercept(rate = LIMIT)]
    async fn float(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }

    // A choice is a word, fixed at compile time.
    #[intercept(rate(recv = 10, scope = self.scope))]
    async fn scope(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }

    // Fine: a `Duration` expression.
    #[intercept(budget(idle = Duration::from_secs(TIMEOUT_SECONDS)))]
    async fn idle(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }
}

fn main() {}
