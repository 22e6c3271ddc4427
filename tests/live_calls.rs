//! `stats::live_calls()`, exactly: the intercepted calls whose state is alive,
//! over the whole process. A test binary of its own with one test, so that no
//! other test's calls count.

mod common;

use common::{
    events::{started, wait_for},
    eventually,
    handlers::{client_stream, rect, service},
    in_real_time,
};
use interceptor_examples::pb::{route_guide_server::RouteGuide, Point, RouteNote};
use interceptor_runtime::stats::live_calls;
use tonic::{Code, Request};

service!(Held: budget(streams = 1), service = "test.Held");

/// Three calls held open (a server stream, a unary call, a bidi call) count
/// 3; a call rejected before its handler runs never counts; each call that
/// ends leaves the count, back to 0.
#[tokio::test]
async fn live_calls_counts_the_calls_held_open() {
    in_real_time(async {
        assert_eq!(live_calls(), 0, "no call yet");

        // A server stream that stays open after its one feature.
        let features = Held.list_features(Request::new(rect(1, 0, true, 0))).await.unwrap().into_inner();
        assert_eq!(live_calls(), 1);

        // A unary call whose handler never answers.
        let unary = tokio::spawn(async { Held.get_feature(Request::new(Point { latitude: -3, longitude: 0 })).await });
        wait_for("/test.Held/GetFeature", |e| (started(e) == 1).then_some(())).await;
        assert_eq!(live_calls(), 2);

        // A bidi call whose client keeps both halves.
        let (notes, stream) = client_stream::<RouteNote>();
        let replies = Held.route_chat(Request::new(stream)).await.unwrap().into_inner();
        assert_eq!(live_calls(), 3);

        // budget(streams = 1) turns a second GetFeature away before its state is made.
        let status = Held.get_feature(Request::new(Point { latitude: 1, longitude: 1 })).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(live_calls(), 3);

        drop(features);
        eventually("the server stream's state is freed", || live_calls() == 2).await;
        unary.abort();
        eventually("the unary call's state is freed", || live_calls() == 1).await;
        drop((notes, replies));
        eventually("the bidi call's state is freed", || live_calls() == 0).await;
    })
    .await;
}
