use interceptor_runtime::intercept;
use tonic::{Request, Response, Status};

struct Svc;

impl Svc {
    #[intercept(monitr)]
    async fn typo(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }

    #[intercept(monitor, throttle = 5)]
    async fn unknown(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }
}

fn main() {}
