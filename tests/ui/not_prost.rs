// A service with its own codec (tonic's json-codec example): its messages
// are not `prost::Message`s.
use interceptor_runtime::intercept;
use tonic::{Request, Response, Status};

#[derive(Debug)]
pub struct HelloRequest {
    pub name: String,
}

#[derive(Debug)]
pub struct HelloResponse {
    pub message: String,
}

#[tonic::async_trait]
pub trait Greeter: Send + Sync + 'static {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status>;
}

struct MyGreeter;

#[intercept(monitor)]
#[tonic::async_trait]
impl Greeter for MyGreeter {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        Ok(Response::new(HelloResponse { message: request.into_inner().name }))
    }
}

fn main() {}
