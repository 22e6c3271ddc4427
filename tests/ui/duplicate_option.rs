use interceptor_runtime::intercept;
use tonic::{Request, Response, Status};

struct Svc;

impl Svc {
    #[intercept(monitor, budget(messages = 10, messages = 20))]
    async fn unary(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }

    #[intercept(monitor, rate = 5, monitor)]
    async fn twice(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }
}

fn main() {}
