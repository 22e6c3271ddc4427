// On a method, an attribute above `#[intercept]` rewrites the handler
// before the attribute sees it: the error says to put it first.
use interceptor_examples::pb::{route_guide_server::RouteGuide, Feature, Point, Rectangle, RouteNote, RouteSummary};
use interceptor_runtime::intercept;
use tonic::{codegen::BoxStream, Request, Response, Status, Streaming};

struct Svc;

#[tonic::async_trait]
impl RouteGuide for Svc {
    #[tracing::instrument(skip(self))]
    #[intercept(monitor)]
    async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
        let _ = request;
        Err(Status::unimplemented(""))
    }

    type ListFeaturesStream = BoxStream<Feature>;

    async fn list_features(&self, _: Request<Rectangle>) -> Result<Response<Self::ListFeaturesStream>, Status> {
        Err(Status::unimplemented(""))
    }

    async fn record_route(&self, _: Request<Streaming<Point>>) -> Result<Response<RouteSummary>, Status> {
        Err(Status::unimplemented(""))
    }

    type RouteChatStream = BoxStream<RouteNote>;

    async fn route_chat(&self, _: Request<Streaming<RouteNote>>) -> Result<Response<Self::RouteChatStream>, Status> {
        Err(Status::unimplemented(""))
    }
}

fn main() {}
