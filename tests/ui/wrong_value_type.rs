use interceptor_runtime::intercept;
use tonic::{Request, Response, Status};

struct Svc;

impl Svc {
    #[intercept(budget(duration = 30))]
    async fn seconds(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }

    #[intercept(rate(recv = 10, scope = everyone))]
    async fn scope(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }

    #[intercept(monitor(warn_size = true))]
    async fn size(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }
}

fn main() {}
