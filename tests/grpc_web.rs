//! gRPC-Web (`tonic-web`), as tonic's grpc-web example serves it: HTTP/1.1,
//! `GrpcWebLayer` beside `InterceptLayer`, in either order, and a client
//! through `GrpcWebClientLayer` on hyper's HTTP/1.1 client (what a browser
//! does through a proxy-less grpc-web library).
//!
//! The calls a browser can make (unary and server streaming) are
//! intercepted and end as they ended: OK with their counts, the handler's
//! error as the client gets it, and a download the client drops half-way
//! (over HTTP/1.1 that closes the connection) CANCELLED.

mod common;

use std::net::SocketAddr;

use common::{
    events,
    handlers::{rect, service},
    in_real_time,
};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use interceptor_examples::pb::{route_guide_client::RouteGuideClient, route_guide_server::RouteGuideServer, Point};
use interceptor_runtime::InterceptLayer;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{transport::Server, Code};
use tonic_web::{GrpcWebClientLayer, GrpcWebLayer};

service!(WebOuter: monitor, service = "web.WebOuter");
service!(WebInner: monitor, service = "web.WebInner");

/// Serves `service` for gRPC-Web on 127.0.0.1, with `GrpcWebLayer`
/// outside `InterceptLayer` (`web_outside`) or inside it.
async fn serve<S: interceptor_examples::pb::route_guide_server::RouteGuide>(
    service: S,
    web_outside: bool,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let incoming = TcpListenerStream::new(listener);
    let service = RouteGuideServer::new(service);
    let builder = Server::builder().accept_http1(true);
    if web_outside {
        let router = builder.layer(GrpcWebLayer::new()).layer(InterceptLayer::new()).add_service(service);
        tokio::spawn(router.serve_with_incoming(incoming));
    } else {
        let router = builder.layer(InterceptLayer::new()).layer(GrpcWebLayer::new()).add_service(service);
        tokio::spawn(router.serve_with_incoming(incoming));
    }
    addr
}

async fn calls_end_as_they_ended(addr: SocketAddr, service: &str) {
    let http1 = Client::builder(TokioExecutor::new()).build_http();
    let web = tower::ServiceBuilder::new().layer(GrpcWebClientLayer::new()).service(http1);
    let mut client = RouteGuideClient::with_origin(web, format!("http://{addr}").parse().expect("a URI"));
    let get_feature = format!("/{service}/GetFeature");
    let list_features = format!("/{service}/ListFeatures");

    let feature = client.get_feature(Point { latitude: 5, longitude: 6 }).await.expect("a feature").into_inner();
    assert_eq!(feature.name, "ok");
    let outcome = events::outcome(&get_feature, 0).await;
    assert_eq!(
        (outcome.code, outcome.stats.messages_received, outcome.stats.messages_sent),
        (Code::Ok, 1, 1),
        "{outcome:?}"
    );

    let status = client.get_feature(Point { latitude: -2, longitude: 0 }).await.expect_err("the handler fails");
    assert_eq!((status.code(), status.message()), (Code::FailedPrecondition, "the handler fails on purpose"));
    let outcome = events::outcome(&get_feature, 1).await;
    assert_eq!((outcome.code, outcome.message.as_str()), (Code::FailedPrecondition, "the handler fails on purpose"));

    let mut features = client.list_features(rect(3, 0, false, 0)).await.expect("a download").into_inner();
    let mut names = Vec::new();
    while let Some(feature) = features.message().await.expect("a feature") {
        names.push(feature.name);
    }
    assert_eq!(names, ["0", "1", "2"]);
    let outcome = events::outcome(&list_features, 0).await;
    assert_eq!((outcome.code, outcome.stats.messages_sent), (Code::Ok, 3), "{outcome:?}");

    // Two features of a stream that stays open, then the client drops it.
    let mut features = client.list_features(rect(2, 0, true, 0)).await.expect("a download").into_inner();
    for _ in 0..2 {
        features.message().await.expect("a feature").expect("not the end");
    }
    drop(features);
    let outcome = events::outcome(&list_features, 1).await;
    assert_eq!(
        (outcome.code, outcome.message.as_str(), outcome.stats.messages_sent),
        (Code::Cancelled, "the client went away", 2),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn with_the_web_layer_outside() {
    in_real_time(async {
        calls_end_as_they_ended(serve(WebOuter, true).await, "web.WebOuter").await;
    })
    .await;
}

#[tokio::test]
async fn with_the_web_layer_inside() {
    in_real_time(async {
        calls_end_as_they_ended(serve(WebInner, false).await, "web.WebInner").await;
    })
    .await;
}
