// On a method alone, the attribute cannot rewrite `type ListFeaturesStream`:
// a concrete stream type must be written as `Outbound<S>` (or boxed).
use interceptor_examples::pb::{route_guide_server::RouteGuide, Feature, Point, Rectangle, RouteNote, RouteSummary};
use interceptor_runtime::intercept;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

struct Svc;

#[tonic::async_trait]
impl RouteGuide for Svc {
    async fn get_feature(&self, _: Request<Point>) -> Result<Response<Feature>, Status> {
        Err(Status::unimplemented(""))
    }

    type ListFeaturesStream = ReceiverStream<Result<Feature, Status>>;

    #[intercept(monitor)]
    async fn list_features(&self, _: Request<Rectangle>) -> Result<Response<Self::ListFeaturesStream>, Status> {
        Err(Status::unimplemented(""))
    }

    async fn record_route(&self, _: Request<Streaming<Point>>) -> Result<Response<RouteSummary>, Status> {
        Err(Status::unimplemented(""))
    }

    type RouteChatStream = ReceiverStream<Result<RouteNote, Status>>;

    async fn route_chat(&self, _: Request<Streaming<RouteNote>>) -> Result<Response<Self::RouteChatStream>, Status> {
        Err(Status::unimplemented(""))
    }
}

fn main() {}
