//! User interceptors: a bearer-token check that rejects bad callers with
//! UNAUTHENTICATED before the handler runs, and a validator that ends a chat
//! with INVALID_ARGUMENT on a bad note. Both are in `src/checks.rs`.
//!
//! `cargo run --example auth`

use interceptor_examples::{
    pb::{route_guide_client::RouteGuideClient, route_guide_server::RouteGuideServer, Point, RouteNote},
    SecureGuide,
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{metadata::MetadataValue, transport::Server, Request, Status};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = format!("http://{}", listener.local_addr()?);
    tokio::spawn(
        Server::builder()
            .layer(interceptor_runtime::InterceptLayer::new())
            .add_service(RouteGuideServer::new(SecureGuide::default()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(addr)?.connect().await?;

    let mut anonymous = RouteGuideClient::new(channel.clone());
    let denied = anonymous.get_feature(Point { latitude: 0, longitude: 0 }).await;
    report("GetFeature without a token", denied.map(|r| r.into_inner().name));

    // A client-side tonic interceptor adds the token to every request.
    let mut client = RouteGuideClient::with_interceptor(channel, |mut request: Request<()>| {
        request.metadata_mut().insert("authorization", MetadataValue::from_static("Bearer secret"));
        Ok(request)
    });
    let allowed = client.get_feature(Point { latitude: 0, longitude: 0 }).await;
    report("GetFeature with the token", allowed.map(|r| r.into_inner().name));

    let notes = ["hello", "world", ""]
        .map(|text| RouteNote { location: Some(Point { latitude: 1, longitude: 1 }), message: text.to_owned() });
    // Spaced out, so that the replies to the good notes are out before the bad
    // one ends the call (which drops whatever was not sent yet).
    let notes = tokio_stream::StreamExt::throttle(tokio_stream::iter(notes), std::time::Duration::from_millis(20));
    let mut replies = client.route_chat(notes).await?.into_inner();
    loop {
        match replies.message().await {
            Ok(Some(note)) => println!("RouteChat reply: {:?}", note.message),
            Ok(None) => break println!("RouteChat ended OK"),
            Err(status) => break report("RouteChat with an empty note", Err::<(), _>(status)),
        }
    }
    Ok(())
}

fn report<T: std::fmt::Debug>(what: &str, result: Result<T, Status>) {
    match result {
        Ok(value) => println!("{what}: OK {value:?}"),
        Err(status) => println!("{what}: {:?} {:?}", status.code(), status.message()),
    }
}
