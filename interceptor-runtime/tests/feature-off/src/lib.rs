use interceptor_runtime::intercept;
use tonic::{Request, Response, Status};

pub struct Svc;

impl Svc {
    #[intercept(otel, monitor, rate = 10, budget = 5)]
    pub async fn unary(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }
}
