use interceptor_runtime::intercept;
use tonic::{Request, Response, Status};

struct Svc;

impl Svc {
    #[intercept(monitor, with = String::new())]
    async fn unary(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }
}

fn main() {}
