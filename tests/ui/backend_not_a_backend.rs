use interceptor_runtime::intercept;
use tonic::{Request, Response, Status};

struct Svc;

const REDIS_URL: &str = "redis://127.0.0.1:6379";

impl Svc {
    #[intercept(rate(recv = 10, backend = REDIS_URL))]
    async fn unary(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }
}

fn main() {}
