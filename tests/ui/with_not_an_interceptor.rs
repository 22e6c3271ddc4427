use interceptor_runtime::intercept;
use tonic::{Request, Response, Status};

struct NotAnInterceptor;

struct Svc;

impl Svc {
    #[intercept(monitor, with = NotAnInterceptor)]
    async fn unary(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }
}

fn main() {}
