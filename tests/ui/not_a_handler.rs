use interceptor_runtime::intercept;
use tonic::{Request, Response, Status};

struct Svc;

impl Svc {
    // Not a request.
    #[intercept(monitor)]
    async fn add(&self, x: u32) -> u32 {
        x + 1
    }

    // Not a tonic response.
    #[intercept(monitor)]
    async fn plain(&self, request: Request<()>) -> Result<(), Status> {
        let _ = request;
        Ok(())
    }

    // Not async, and not the shape #[tonic::async_trait] gives.
    #[intercept(monitor)]
    fn blocking(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }

    // No receiver.
    #[intercept(monitor)]
    async fn free(request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }
}

fn main() {}
