//! Services whose messages are protobuf's well-known types, which
//! tonic-build maps to Rust types instead of structs of its own:
//! `google.protobuf.Empty` is `()`, `StringValue` is `String`
//! (`tests/proto/wkt.proto`). `#[intercept]` tells the RPC kinds apart by
//! the types, so `Request<()>` must be one message and
//! `Request<Streaming<String>>` a stream; each call is counted with the bytes
//! protobuf encodes.

use std::pin::Pin;

use interceptor_runtime::{intercept, stats, RpcKind};
use tokio_stream::{Stream, StreamExt};
use tonic::{service::Routes, transport::Channel, Request, Response, Status, Streaming};

mod common;

use common::{eventually, in_real_time, serve_routes};

mod pb {
    tonic::include_proto!("fixture.wkt");
}

use pb::{
    beacon_client::BeaconClient,
    beacon_server::{Beacon, BeaconServer},
};

type Words = Pin<Box<dyn Stream<Item = Result<String, Status>> + Send>>;

pub struct Tower;

#[intercept(monitor)]
#[tonic::async_trait]
impl Beacon for Tower {
    async fn ping(&self, _request: Request<()>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }

    type WatchStream = Words;

    async fn watch(&self, _request: Request<()>) -> Result<Response<Self::WatchStream>, Status> {
        let words = ["a", "bb"].map(|word| Ok(word.to_owned()));
        Ok(Response::new(Box::pin(tokio_stream::iter(words)) as Self::WatchStream))
    }

    async fn collect(&self, request: Request<Streaming<String>>) -> Result<Response<()>, Status> {
        let mut words = request.into_inner();
        while words.message().await?.is_some() {}
        Ok(Response::new(()))
    }

    type TalkStream = Words;

    async fn talk(&self, request: Request<Streaming<String>>) -> Result<Response<Self::TalkStream>, Status> {
        let replies = request.into_inner().map(|word| word.map(|word| word + "!"));
        Ok(Response::new(Box::pin(replies) as Self::TalkStream))
    }
}

async fn serve() -> BeaconClient<Channel> {
    let addr = serve_routes(Routes::new(BeaconServer::new(Tower))).await;
    BeaconClient::connect(format!("http://{addr}")).await.expect("the server accepts")
}

/// The messages of a stream, to its end.
async fn words(stream: Result<Response<Streaming<String>>, Status>) -> Vec<String> {
    let mut stream = stream.expect("a stream").into_inner();
    let mut words = Vec::new();
    while let Some(word) = stream.message().await.expect("a word") {
        words.push(word);
    }
    words
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_wrapper_messages_are_counted_as_their_kinds() {
    in_real_time(async {
        let mut client = serve().await;
        client.ping(()).await.expect("ping");
        assert_eq!(words(client.watch(()).await).await, ["a", "bb"]);
        let upload = || tokio_stream::iter(["x", "yy"].map(str::to_owned));
        client.collect(upload()).await.expect("collect");
        assert_eq!(words(client.talk(upload()).await).await, ["x!", "yy!"]);

        // A `StringValue` of n bytes encodes as 2 + n (a tag and a length);
        // an `Empty`, as nothing.
        for (method, kind, received, sent) in [
            ("Ping", RpcKind::Unary, (1, 0), (1, 0)),
            ("Watch", RpcKind::ServerStreaming, (1, 0), (2, 7)),
            ("Collect", RpcKind::ClientStreaming, (2, 7), (1, 0)),
            ("Talk", RpcKind::Bidi, (2, 7), (2, 9)),
        ] {
            let name = format!("/fixture.wkt.Beacon/{method}");
            eventually(&format!("{name} ended"), || stats::method(&name).is_some_and(|m| m.finished == 1)).await;
            let totals = stats::method(&name).expect("its totals");
            assert_eq!(totals.kind, kind, "{name}");
            assert_eq!((totals.messages_received, totals.bytes_received), received, "{name}");
            assert_eq!((totals.messages_sent, totals.bytes_sent), sent, "{name}");
        }
    })
    .await;
}
