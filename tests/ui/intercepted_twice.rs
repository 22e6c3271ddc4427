// The impl's attribute merges the methods' own `#[intercept]`s; one it cannot
// recognise (a renamed import) would wrap the handler a second time, and is
// an error instead.
use interceptor_examples::pb::{route_guide_server::RouteGuide, Feature, Point, Rectangle, RouteNote, RouteSummary};
use interceptor_runtime::intercept;
use interceptor_runtime::intercept as limits;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

struct Svc;

#[intercept(monitor)]
#[tonic::async_trait]
impl RouteGuide for Svc {
    #[limits(rate = 5)]
    async fn get_feature(&self, _: Request<Point>) -> Result<Response<Feature>, Status> {
        Err(Status::unimplemented(""))
    }

    type ListFeaturesStream = ReceiverStream<Result<Feature, Status>>;

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
