use interceptor_runtime::intercept;
use tonic::{Request, Response, Status};

struct Svc;

impl Svc {
    #[intercept(rate(recv = 10, key = metadata("X-Api-Key")))]
    async fn uppercase(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }

    #[intercept(rate(recv = 10, key = metadata("token-bin")))]
    async fn binary(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }

    #[intercept(rate(recv = 10, key = tenant_of))]
    async fn function_as_key(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }

    #[intercept(rate(recv = 10, key = peer, scope = method))]
    async fn key_and_scope(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }

    #[intercept(rate(recv = 10, key = peer, key_fn = tenant_of))]
    async fn two_keys(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }

    #[intercept(budget(key = peer))]
    async fn key_without_streams(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }

    #[intercept(rate(recv = 10, on_backend_error = reject))]
    async fn policy_without_backend(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }

    #[intercept(rate(recv = 10, key_fn = self.key_of))]
    async fn key_fn_with_self(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }

    #[intercept(rate(recv = 10, backend = "redis://127.0.0.1"))]
    async fn backend_url(&self, request: Request<()>) -> Result<Response<()>, Status> {
        let _ = request;
        Ok(Response::new(()))
    }
}

fn main() {}
