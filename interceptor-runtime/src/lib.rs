//! Message-level interceptors for tonic gRPC streams, declared with one attribute.
//!
//! tonic's `Interceptor` sees a request's metadata and a tower layer sees HTTP frames; neither sees
//! the typed messages of a stream. [`#[intercept(..)]`](intercept) wraps a handler's inbound
//! [`tonic::Streaming<T>`] and its response stream, so that interceptors see every message both ways:
//! [`monitor`](#monitor) counts and traces calls, [`rate`](#rate) limits messages per second,
//! [`budget`](#budget) caps a stream's messages, bytes, time and concurrent calls, [`otel`](#otel)
//! makes an OpenTelemetry span per call, and [your own](#your-own-interceptors) check whatever they
//! need. The handler bodies compile unchanged.
//!
//! ```
//! use futures_util::StreamExt;
//! use interceptor_runtime::{intercept, stats};
//! use tonic::{Code, Request, Response, Status, Streaming};
//! # mod pb {
//! #     #[derive(Clone, PartialEq, prost::Message)]
//! #     pub struct Point { #[prost(int32, tag = "1")] pub latitude: i32 }
//! #     #[derive(Clone, PartialEq, prost::Message)]
//! #     pub struct Rectangle { #[prost(int32, tag = "1")] pub lo: i32, #[prost(int32, tag = "2")] pub hi: i32 }
//! #     #[derive(Clone, PartialEq, prost::Message)]
//! #     pub struct Feature { #[prost(string, tag = "1")] pub name: String }
//! #     #[derive(Clone, PartialEq, prost::Message)]
//! #     pub struct RouteSummary { #[prost(int32, tag = "1")] pub point_count: i32 }
//! #     /// As tonic-build generates it.
//! #     pub mod route_guide_server {
//! #         use super::*;
//! #         use tonic::{Request, Response, Status, Streaming};
//! #         pub const SERVICE_NAME: &str = "routeguide.RouteGuide";
//! #         #[tonic::async_trait]
//! #         pub trait RouteGuide: Send + Sync + 'static {
//! #             async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status>;
//! #             type ListFeaturesStream: futures_core::Stream<Item = Result<Feature, Status>> + Send + 'static;
//! #             async fn list_features(&self, request: Request<Rectangle>)
//! #                 -> Result<Response<Self::ListFeaturesStream>, Status>;
//! #             async fn record_route(&self, request: Request<Streaming<Point>>)
//! #                 -> Result<Response<RouteSummary>, Status>;
//! #         }
//! #     }
//! # }
//! use pb::{route_guide_server, Feature, Point, Rectangle, RouteSummary};
//!
//! struct Guide;
//!
//! #[intercept(monitor)] // every handler of the impl
//! #[tonic::async_trait]
//! impl route_guide_server::RouteGuide for Guide {
//!     async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
//!         let point = request.into_inner();
//!         Ok(Response::new(Feature { name: format!("the feature at {}", point.latitude) }))
//!     }
//!
//!     // Left as written: inside the impl it is still this type.
//!     type ListFeaturesStream = futures_util::stream::Iter<std::vec::IntoIter<Result<Feature, Status>>>;
//!
//!     #[intercept(rate(send = 100), budget(messages = 3))] // adds to the impl's list
//!     async fn list_features(&self, request: Request<Rectangle>) -> Result<Response<Self::ListFeaturesStream>, Status> {
//!         let rect = request.into_inner();
//!         let features: Vec<_> = (rect.lo..rect.hi).map(|i| Ok(Feature { name: format!("feature {i}") })).collect();
//!         Ok(Response::new(futures_util::stream::iter(features)))
//!     }
//!
//!     async fn record_route(&self, request: Request<Streaming<Point>>) -> Result<Response<RouteSummary>, Status> {
//!         let mut points = request.into_inner(); // an `Inbound<Point>`, with `Streaming`'s API
//!         let mut summary = RouteSummary::default();
//!         while let Some(_point) = points.message().await? {
//!             summary.point_count += 1;
//!         }
//!         Ok(Response::new(summary))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Called in process here; a server serves it as any tonic service (see "Set-up").
//! use route_guide_server::RouteGuide as _;
//! let feature = Guide.get_feature(Request::new(Point { latitude: 7 })).await.unwrap();
//! assert_eq!(feature.into_inner().name, "the feature at 7");
//!
//! // Three features pass the budget; the fourth ends the call.
//! let mut features = Guide.list_features(Request::new(Rectangle { lo: 0, hi: 10 })).await.unwrap().into_inner();
//! for _ in 0..3 {
//!     assert!(features.next().await.unwrap().is_ok());
//! }
//! let status = features.next().await.unwrap().unwrap_err();
//! assert_eq!(status.code(), Code::ResourceExhausted);
//! assert_eq!(status.message(), "budget: 3 messages per stream used up (send)");
//!
//! // `monitor`'s per-method totals.
//! let totals = stats::method("/routeguide.RouteGuide/ListFeatures").unwrap();
//! assert_eq!((totals.finished, totals.messages_sent, totals.ended_by["budget"]), (1, 3, 1));
//! # }
//! ```
//!
//! # Set-up
//! One dependency, `interceptor-runtime`: it re-exports the attribute. It is not on crates.io; depend
//! on it by path or git:
//!
//! ```toml
//! [dependencies]
//! interceptor-runtime = { path = "../tonic-stream-interceptors/interceptor-runtime", features = ["metrics"] }
//! ```
//!
//! | cargo feature | default | gives |
//! |---|---|---|
//! | `monitor` | yes | the [`monitor`](#monitor) interceptor, which fills [`stats`] |
//! | `rate` | yes | the [`rate`](#rate) interceptor, and [`key`] (limits per client) |
//! | `budget` | yes | the [`budget`](#budget) interceptor, and [`key`] |
//! | `metrics` | no | `monitor` also exports through the `metrics` facade (the [`metrics`] module) |
//! | `otel` | no | the [`otel`](#otel) interceptor: an OpenTelemetry span and duration metric per call |
//! | `redis` | no | [`RedisBackend`]: a `rate` shared by servers through Redis (implies `rate`) |
//! | `testing` | no | the test kit (the [`testing`] module) |
//!
//! Naming an interceptor whose feature is off is a compile error that names the feature.
//!
//! Give the server one layer, [`InterceptLayer`]: with it, methods are named as clients call them
//! ([Method names](#method-names)) and every call ends as it really ended ([How a call
//! ends](#how-a-call-ends)). Calls of services that are not intercepted pass through unchanged.
//!
//! ```no_run
//! # async fn serve(routes: tonic::service::Routes) -> Result<(), Box<dyn std::error::Error>> {
//! tonic::transport::Server::builder()
//!     .layer(interceptor_runtime::InterceptLayer::new())
//! #   .add_routes(routes)
//!     // .add_service(RouteGuideServer::new(Guide::default()))
//!     .serve("127.0.0.1:50051".parse()?)
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! Or on one service of the server: `.add_service(InterceptService::new(RouteGuideServer::new(guide)))`.
//!
//! # The attribute
//! ```text
//! #[intercept(item, ..)]     item: monitor | monitor(..) | rate = N | rate(..) | budget = N | budget(..) | otel
//!                                  | with = EXPR | service = "package.Service"
//! ```
//!
//! | written | does |
//! |---|---|
//! | `monitor`, `monitor(warn_size = "1MiB")` | counts messages and bytes each way, a `tracing` span per call, a WARN for a message over `warn_size`, per-method totals in [`stats`]; with feature `metrics`, Prometheus-style metrics |
//! | `rate = 10`, `rate(recv = 100, send = 50, burst = 5, scope = stream\|method, on_exceed = wait\|reject)` | at most N messages per second each way; a message over the rate waits (pushing back on the client through HTTP/2 flow control) or, with `reject`, ends the call with RESOURCE_EXHAUSTED |
//! | `rate(.., key = peer\|metadata("x-api-key"), key_fn = path, max_keys = N, on_missing_key = .., backend = EXPR, on_backend_error = allow\|reject)` | a limit per client, and one kept in a store that servers share (Redis) |
//! | `budget = 1000`, `budget(messages = 1000, bytes = "4MiB", duration = "30s", idle = "10s", streams = 64)` | per stream and direction, N messages or bytes pass and the next ends the call with RESOURCE_EXHAUSTED; `duration` and `idle` end it with DEADLINE_EXCEEDED; `streams` caps the method's concurrent calls |
//! | `budget(streams = 4, key = .., key_fn = .., max_keys = .., on_missing_key = ..)` | `streams` per client |
//! | `otel` | (feature `otel`) an OpenTelemetry SERVER span per call, and `rpc.server.call.duration`; it always runs first |
//! | `with = EXPR` | your own interceptor: any value whose type implements [`Interceptor`]; repeatable |
//! | `service = "pkg.Service"` | the service name in stats, spans and metrics, instead of the one clients call |
//!
//! It goes on an impl of a tonic service trait, above or below `#[tonic::async_trait]` (every
//! handler of the impl), on a single method below `#[tonic::async_trait]` (or of a trait with native
//! `async fn`s, or of an inherent impl), or both: a method's list is added to the impl's, and a
//! built-in named in both takes the method's options. Interceptors run in the order written, the
//! impl's first, except `otel`, which always runs first. On an impl, every `type XStream = S;` becomes `Outbound<S>`; a method alone cannot
//! reach that type, so there a concrete stream type is written [`Outbound<S>`](Outbound) (a boxed
//! `BoxStream<T>` works as it is). Option values may be expressions: a `const` or `static` is
//! evaluated once per method, a value that mentions `self` on every call. [`intercept`] has the
//! exhaustive reference: the grammar, every option with its default, values and errors.
//!
//! ```
//! use std::time::Duration;
//!
//! use interceptor_runtime::{intercept, Outbound};
//! use tonic::{Code, Request, Response, Status};
//! # #[derive(Clone, PartialEq, prost::Message)]
//! # pub struct Tick { #[prost(uint64, tag = "1")] pub n: u64 }
//!
//! type Ticks = futures_util::stream::Iter<std::vec::IntoIter<Result<Tick, Status>>>;
//!
//! const MAX_TICKS: u64 = 1000;
//!
//! struct Clock {
//!     per_second: u64,
//! }
//!
//! impl Clock {
//!     // On one method. `MAX_TICKS` and the `Duration` are read on the method's first call; a value
//!     // that mentions `self` on every call, so two `Clock`s each keep their own rate.
//!     #[intercept(
//!         monitor(warn_size = "1KiB"),
//!         rate(send = self.per_second, burst = 5),
//!         budget(messages = MAX_TICKS, duration = Duration::from_secs(30)),
//!         service = "demo.Clock",
//!     )]
//!     async fn ticks(&self, request: Request<Tick>) -> Result<Response<Outbound<Ticks>>, Status> {
//!         let ticks: Vec<_> = (0..request.into_inner().n).map(|n| Ok(Tick { n })).collect();
//!         Ok(Response::new(futures_util::stream::iter(ticks)))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use futures_util::StreamExt;
//!
//! let clock = Clock { per_second: 100 };
//! let ticks = clock.ticks(Request::new(Tick { n: 3 })).await.unwrap().into_inner();
//! assert_eq!(ticks.count().await, 3);
//!
//! // A bad value at run time ends the call with INTERNAL, naming the option; never a panic.
//! let status = Clock { per_second: 0 }.ticks(Request::new(Tick { n: 3 })).await.unwrap_err();
//! assert_eq!(status.code(), Code::Internal);
//! assert!(status.message().contains("`rate(send)`"), "{}", status.message());
//! # }
//! ```
//!
//! # In the handler
//! Inside an intercepted handler `request` is a `Request<Inbound<T>>` where it was a
//! `Request<Streaming<T>>`: [`Inbound`] has `Streaming`'s API (`message().await`, `Stream`,
//! `trailers()`), plus `into_inner()` for the plain stream and `context()` for the call. The stream the
//! handler returns is wrapped in an [`Outbound`]. [`CallContext::of(&request)`](CallContext::of) gives
//! the call ([`CallRef`], cheap to clone into spawned work): its method, peer, live counts ([`CallStats`]),
//! the [`Outcome`] once it has ended, and [`cancelled()`](CallContext::cancelled), a `CancellationToken`
//! that fires when the call is over for any reason (made on first use: a call that never asks pays
//! nothing for it).
//!
//! ```
//! use interceptor_runtime::{intercept, CallContext};
//! use tonic::{Request, Response, Status};
//!
//! struct Worker;
//!
//! impl Worker {
//!     #[intercept(monitor, service = "demo.Worker")]
//!     async fn work(&self, request: Request<()>) -> Result<Response<()>, Status> {
//!         let call = CallContext::of(&request).expect("an intercepted call");
//!         assert_eq!(call.method().full_name, "/demo.Worker/Work");
//!         let done = call.cancelled().clone();
//!         tokio::spawn(async move {
//!             done.cancelled().await; // stops when the call is over, however it ends
//!         });
//!         Ok(Response::new(()))
//!     }
//! }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! # Worker.work(Request::new(())).await.unwrap();
//! # }
//! ```
//!
//! # How a call ends
//! Every call is finalized exactly once: its [`Outcome`] is set ([`CallContext::outcome`]), then every
//! interceptor that started hears [`on_end`](Interceptor::on_end). Some endings happen below tonic,
//! where a handler cannot see them: tonic's decoder turns a request stream that the client reset into
//! a clean end, and a response the handler returned is not yet one the client received.
//! [`InterceptLayer`] watches each call's HTTP/2 request and response bodies and notes its deadline
//! (an allocation and a header lookup per request and a check per HTTP/2 frame, nothing per
//! message). With it:
//!
//! | the call | the handler sees | the client gets | the outcome |
//! |---|---|---|---|
//! | completes | `Ok(None)` at the end of its inbound stream | the response, OK | OK, once the response's end (its trailers) was handed to HTTP/2 |
//! | the handler, or its response stream, returns an error | | that status | that status |
//! | tonic refuses a message over `max_decoding_message_size` or `max_encoding_message_size` | OUT_OF_RANGE on its inbound stream, for a message it was sent (a unary or server-streaming request refused is no call) | OUT_OF_RANGE; what tonic had not sent of the response is dropped | OUT_OF_RANGE |
//! | an interceptor ends it (a budget, a rate with `reject`, a failed check) | that status on its inbound stream (a `duration` or `idle` budget drops a handler still running) | that status; what the response stream still held is not sent | that status, `ended_by` the interceptor |
//! | the client cancels (`RST_STREAM(CANCEL)`) | `Err(CANCELLED "the client cancelled the call")` instead of the next message or the end | | CANCELLED |
//! | the client resets the stream with another reason | `Err(CANCELLED "the client reset the stream (REASON)")` | | CANCELLED |
//! | the client's connection is lost | `Err(CANCELLED "the connection to the client was lost (..)")` | | CANCELLED |
//! | the client's deadline (`grpc-timeout`) passes | while it runs, nothing: tonic's server drops it; once it has returned a response stream, `Err(CANCELLED "Timeout expired")` on its inbound stream, where the client's cancel arrives | CANCELLED "Timeout expired" | the same (a timeout of the server's own: CANCELLED "the client went away") |
//! | the client went away while the handler was busy, then the handler answered OK | nothing: it has returned | | CANCELLED "the client went away before the response was sent" |
//! | the handler panics | | INTERNAL "the handler panicked" | INTERNAL |
//! | its response stream panics | | what was sent, then INTERNAL "the response stream panicked" | INTERNAL |
//! | an interceptor's hook panics | INTERNAL on its inbound stream | INTERNAL "an interceptor panicked" | INTERNAL, `ended_by` the interceptor |
//!
//! The status a handler sees for a cancel, a reset or a lost connection keeps tonic's own error as
//! its [`source`](std::error::Error::source), so a handler that walks the chain down to the
//! `h2::Error` or `std::io::Error` (tonic's streaming example does, to spot a broken pipe) finds it.
//!
//! A handler that waits on something other than its inbound stream when the client goes away is
//! dropped (hyper drops its future), and the call ends CANCELLED "the client went away"; so does a call
//! whose response stream notices first. A request whose client is gone before its handler starts
//! starts ended: its handler sees CANCELLED on its first read, and a unary handler does not run. Each
//! caught panic is logged once, as a `tracing` ERROR naming the method, where it happened and the
//! panic's message. A panic in an `on_end` is logged and the other interceptors' `on_end` still run.
//! Either way no slot (`budget(streams = ..)`) and no call state is left behind
//! ([`stats::live_calls`]), and the server keeps serving.
//!
//! Without the layer, everything above works but these endings are not seen: a client that cancels a
//! client-streaming or bidi call mid-upload looks like a clean end to the handler (and a
//! client-streaming handler that then returns OK is counted OK), an OK response whose client went
//! away before it was sent counts OK, a reply tonic refuses counts as what the handler returned
//! (a unary OK), or CANCELLED for a response stream, and a handler dropped at its client's deadline
//! counts CANCELLED "the client went away". A handler still runs for a request its client cancelled right
//! after sending it. Resets with another reason, lost connections, dropped handlers and panics are
//! seen all the same.
//!
//! # Method names
//! Stats, spans and metrics name a method as clients call it, `/package.Service/Method`, when the
//! server has [`InterceptLayer`]: tonic's generated server does not tell a handler which method was
//! called, and the layer keeps each request's path for the method's first call to read (a request
//! that carries a `tonic::GrpcMethod` is named by it too). A method takes its names from its first
//! call, once. When that call names no method (a server without the layer, a handler called directly),
//! they are guessed from the Rust code: the service is `module::SERVICE_NAME` for an impl of
//! `module::Trait` (as tonic-build generates it: the right name), else the trait's name, else, on a
//! single method, the impl type's name; the method is the handler's name in upper camel case
//! (`get_http_status` gives `GetHttpStatus`, where the .proto may say `GetHTTPStatus`). A guess is
//! logged at INFO once per method, and [`MethodInfo::names`] says [`NameSource::Guessed`].
//! `service = "pkg.Service"` sets the service name in every case. In tests,
//! [`testing::set_grpc_path`] names a call as the layer would.
//!
//! # Monitor
//! `monitor` records every call: messages and bytes each way (`prost::Message::encoded_len`), the
//! duration and the final code, in a `tracing` span `grpc.call` (fields `rpc.method`, `rpc.kind`,
//! `net.peer`) with a `call ended` event; a WARN for a message over `warn_size`; per-method totals in
//! [`stats`] (`snapshot`, `method`, `since`, `reset`); and, with feature `metrics`, the Prometheus
//! metrics gRPC dashboards expect ([Metrics](#metrics)). Nothing is written to shared memory per
//! message: the counts are the call's own until it ends. The [`monitor`] module has the details.
//!
//! ```
//! use interceptor_runtime::{intercept, stats};
//! use tonic::{Code, Request, Response, Status};
//!
//! struct Echo;
//!
//! impl Echo {
//!     #[intercept(monitor(warn_size = "1KiB"), service = "demo.Echo")]
//!     async fn echo(&self, request: Request<String>) -> Result<Response<String>, Status> {
//!         Ok(Response::new(request.into_inner()))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let before = stats::snapshot();
//! Echo.echo(Request::new("hello".to_string())).await.unwrap();
//! Echo.echo(Request::new("x".repeat(2048))).await.unwrap(); // logs a WARN: over 1 KiB
//!
//! let echo = stats::since(&before).into_iter().find(|m| m.method == "/demo.Echo/Echo").unwrap();
//! assert_eq!((echo.finished, echo.code(Code::Ok), echo.messages_received), (2, 2, 2));
//! # }
//! ```
//!
//! # Rate
//! `rate = N` lets at most N messages per second through each way, per stream; `rate(recv = .., send
//! = ..)` sets each direction. Permits follow elapsed time on tokio's clock, so a greedy stream gets N
//! a second, and a paused test clock drives it. A message over the rate waits (inbound, the slow read
//! pushes back on the client through HTTP/2 flow control) or, with `on_exceed = reject`, ends the call
//! with RESOURCE_EXHAUSTED. `scope = method` shares one limiter among the method's streams, served in
//! turn.
//!
//! ```
//! use futures_util::StreamExt;
//! use interceptor_runtime::intercept;
//! use tokio::time::Instant;
//! use tonic::{codegen::BoxStream, Request, Response, Status};
//!
//! struct Counter;
//!
//! impl Counter {
//!     #[intercept(rate(send = 10), service = "demo.Counter")]
//!     async fn count(&self, request: Request<u64>) -> Result<Response<BoxStream<u64>>, Status> {
//!         let numbers = futures_util::stream::iter(0..request.into_inner()).map(Ok);
//!         Ok(Response::new(Box::pin(numbers)))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // On tokio's paused clock, as a test runs it: 21 messages at 10 a second take 2 s.
//! let start = Instant::now();
//! let numbers = Counter.count(Request::new(21)).await.unwrap().into_inner();
//! assert_eq!(numbers.count().await, 21);
//! assert_eq!(start.elapsed().as_secs(), 2);
//! # }
//! ```
//!
//! **Per client.** `key = metadata("x-api-key")` (or `key = peer`, the client's IP address, or
//! `key_fn = path`, your own function) keeps one limit per value of the key, shared by the method's
//! streams with that value. A call without its key ends before the handler runs, with
//! INVALID_ARGUMENT by default (`on_missing_key`). The keys held are bounded (`max_keys`, 100,000 by
//! default; a key with nothing to remember is dropped); see [`key`].
//!
//! ```
//! use interceptor_runtime::intercept;
//! use tonic::{Code, Request, Response, Status};
//!
//! struct Api;
//!
//! impl Api {
//!     // 1 call a second per API key, 2 back to back.
//!     #[intercept(rate(recv = 1, burst = 2, key = metadata("x-api-key"), on_exceed = reject), service = "demo.Api")]
//!     async fn get(&self, _: Request<()>) -> Result<Response<()>, Status> {
//!         Ok(Response::new(()))
//!     }
//! }
//!
//! fn call_with(key: Option<&str>) -> Request<()> {
//!     let mut request = Request::new(());
//!     if let Some(key) = key {
//!         request.metadata_mut().insert("x-api-key", key.parse().unwrap());
//!     }
//!     request
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! assert!(Api.get(call_with(Some("alice"))).await.is_ok());
//! assert!(Api.get(call_with(Some("alice"))).await.is_ok());
//! let third = Api.get(call_with(Some("alice"))).await.unwrap_err();
//! assert_eq!(third.code(), Code::ResourceExhausted);
//! assert!(Api.get(call_with(Some("bob"))).await.is_ok()); // a limit of its own
//!
//! let anonymous = Api.get(call_with(None)).await.unwrap_err();
//! assert_eq!(anonymous.code(), Code::InvalidArgument);
//! assert_eq!(anonymous.message(), "rate: the call has no `x-api-key` metadata, by which this method's limit is kept");
//! # }
//! ```
//!
//! **Shared by servers.** `backend = EXPR` keeps the limiters in a store every replica uses, so that N
//! replicas together let the rate through, not N times it: [`rate::Backend`] wraps any [`rate::LimiterBackend`];
//! [`RedisBackend`] (feature `redis`) is Redis's. A stream leases its permits in batches (about 10
//! round trips a second per busy key, whatever the rate), a lease waits 50 ms at most, and while the
//! store fails `on_backend_error = allow` (the default) lets streams go on, each limited by itself, or
//! `reject` ends them with UNAVAILABLE. The [`rate`] module has the details.
//!
#![cfg_attr(feature = "redis", doc = "```no_run")]
#![cfg_attr(not(feature = "redis"), doc = "```text")]
//! // Cargo.toml: interceptor-runtime = { .., features = ["redis"] }
//! use std::{sync::LazyLock, time::Duration};
//!
//! use interceptor_runtime::{intercept, rate::{Backend, RedisBackend}};
//! use tonic::{Request, Response, Status};
//!
//! static REDIS: LazyLock<Backend> = LazyLock::new(|| {
//!     Backend::new(RedisBackend::new("redis://127.0.0.1:6379").expect("a redis:// URL"))
//!         .lease_timeout(Duration::from_millis(50)) // the default; `.retry_after(..)`: 1 s
//! });
//!
//! struct Uploads;
//!
//! impl Uploads {
//!     // 100 messages a second per API key, over every server that uses this Redis.
//!     #[intercept(rate(recv = 100, key = metadata("x-api-key"), backend = REDIS.clone()))]
//!     async fn upload(&self, request: Request<String>) -> Result<Response<()>, Status> {
//!         Ok(Response::new(()))
//!     }
//! }
//! ```
//!
//! # Budget
//! `budget = N` lets exactly N messages pass each way per stream, and the next one ends the call with
//! RESOURCE_EXHAUSTED; `bytes` does the same for their encoded size. `duration` and `idle` end the
//! call with DEADLINE_EXCEEDED, by a timer that interrupts both directions and drops a handler still
//! running. `streams` caps the method's concurrent calls (one more is rejected with
//! RESOURCE_EXHAUSTED before the handler runs), per client with `key`. Each status names the limit:
//! `budget: 1000 messages per stream used up (recv)`. The [`budget`] module has the details.
//!
//! ```
//! use std::time::Duration;
//!
//! use interceptor_runtime::intercept;
//! use tonic::{Code, Request, Response, Status};
//!
//! struct Slow;
//!
//! impl Slow {
//!     #[intercept(budget(duration = "30s", streams = 64), service = "demo.Slow")]
//!     async fn wait(&self, _: Request<()>) -> Result<Response<()>, Status> {
//!         tokio::time::sleep(Duration::from_secs(60)).await; // dropped after 30 s
//!         Ok(Response::new(()))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let status = Slow.wait(Request::new(())).await.unwrap_err();
//! assert_eq!((status.code(), status.message()), (Code::DeadlineExceeded, "budget: stream duration of 30s used up"));
//! # }
//! ```
//!
//! # Otel
//! With feature `otel`, `#[intercept(otel, ..)]` gives every call one OpenTelemetry SERVER span,
//! through the globally installed providers: named `package.Service/Method`, a child of the client's
//! span (`traceparent`), lasting until the call really ends and carrying its final status
//! (`rpc.status_code`) and counts; and a `rpc.server.call.duration` sample. Install the providers
//! before the first call. `otel` always runs first, wherever it is written in the list, so that its
//! span covers the other interceptors: a call that one of them rejects before the handler runs (a
//! token check, `budget(streams = ..)`) has a span whose status is that rejection. The [`otel`]
//! module lists the attributes.
//!
#![cfg_attr(feature = "otel", doc = "```")]
#![cfg_attr(not(feature = "otel"), doc = "```text")]
//! // Cargo.toml: interceptor-runtime = { .., features = ["otel"] }, opentelemetry_sdk = "0.33"
//! use interceptor_runtime::{check_metadata, intercept};
//! use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
//! use tonic::{Request, Response, Status};
//!
//! struct Vault;
//!
//! impl Vault {
//!     // The span records the token check's rejection.
//!     #[intercept(
//!         otel,
//!         with = check_metadata(|_, md| match md.get("authorization") {
//!             Some(_) => Ok(()),
//!             None => Err(Status::unauthenticated("no token")),
//!         }),
//!         service = "demo.Vault",
//!     )]
//!     async fn open(&self, _: Request<()>) -> Result<Response<()>, Status> {
//!         Ok(Response::new(()))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Before the first call. An application exports over OTLP, to stdout ...
//! let exporter = InMemorySpanExporter::default();
//! let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
//! opentelemetry::global::set_tracer_provider(provider.clone());
//!
//! assert!(Vault.open(Request::new(())).await.is_err());
//!
//! let spans = exporter.get_finished_spans().unwrap();
//! assert_eq!(spans[0].name, "demo.Vault/Open");
//! let code = spans[0].attributes.iter().find(|kv| kv.key.as_str() == "rpc.status_code").unwrap();
//! assert_eq!(code.value.as_str(), "UNAUTHENTICATED");
//! provider.shutdown().unwrap(); // exports what is still buffered
//! # }
//! ```
//!
//! # Your own interceptors
//! Every interceptor implements one trait, [`Interceptor`], which the built-ins implement too: a hook
//! before the handler ([`on_start`](Interceptor::on_start), and the asynchronous
//! [`before_handler`](Interceptor::before_handler)), one per message in each direction, which may wait
//! or reject ([`on_message`](Interceptor::on_message), [`poll_message`](Interceptor::poll_message)),
//! and one after ([`on_end`](Interceptor::on_end), with the final [`Outcome`]). Every item has a
//! default but the two state types, so the least to write is two type lines and one hook. Those named
//! in one attribute are composed statically with [`Chain`], in the order they run: no boxing per
//! message.
//!
//! ```
//! use interceptor_runtime::{intercept, Interceptor, MessageRef};
//! use tonic::{Code, Request, Response, Status};
//!
//! /// Rejects any message over `max` bytes, either way.
//! struct MaxSize {
//!     max: usize,
//! }
//!
//! impl Interceptor for MaxSize {
//!     type Call = (); // per-call state, shared by both directions
//!     type Stream = (); // per-direction state, owned by one stream: no lock
//!
//!     fn on_message<M: prost::Message + 'static>(
//!         &self,
//!         _call: &(),
//!         _stream: &mut (),
//!         msg: &MessageRef<'_, M>,
//!     ) -> Result<(), Status> {
//!         match msg.encoded_len() > self.max {
//!             true => Err(Status::invalid_argument(format!("a message over {} bytes", self.max))),
//!             false => Ok(()),
//!         }
//!     }
//! }
//!
//! struct Echo;
//!
//! impl Echo {
//!     #[intercept(monitor, with = MaxSize { max: 16 }, service = "demo.Echo")]
//!     async fn echo(&self, request: Request<String>) -> Result<Response<String>, Status> {
//!         Ok(Response::new(request.into_inner()))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let status = Echo.echo(Request::new("x".repeat(100))).await.unwrap_err();
//! assert_eq!(status.code(), Code::InvalidArgument); // the handler never ran
//! # }
//! ```
//!
//! Shorter still, with no type of your own, three helpers (the [`check`] module) make an interceptor
//! from a closure: [`check_metadata`] (a synchronous check of the request's metadata), [`validate`]
//! (every message of one type, by default those the client sends) and [`check_async`] (awaited before
//! the handler runs, with a time limit of its own). `.named("..")` names each, as the interceptor that
//! ended a call it rejects (`ended_by`).
//!
//! ```
//! use std::time::Duration;
//!
//! use interceptor_runtime::{check_async, check_metadata, intercept, validate};
//! use tonic::{Code, Request, Response, Status};
//!
//! /// A quota service the check asks.
//! async fn has_quota(tenant: &str) -> bool {
//!     tenant != "spent"
//! }
//!
//! fn tenant(metadata: &tonic::metadata::MetadataMap) -> String {
//!     metadata.get("x-tenant").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
//! }
//!
//! struct Notes;
//!
//! impl Notes {
//!     #[intercept(
//!         with = check_metadata(|_ctx, md| match md.get("x-tenant") {
//!             Some(_) => Ok(()),
//!             None => Err(Status::invalid_argument("missing `x-tenant` metadata")),
//!         })
//!         .named("tenant"),
//!         with = validate(|note: &String| match note.is_empty() {
//!             true => Err(Status::invalid_argument("a note may not be empty")),
//!             false => Ok(()),
//!         }),
//!         with = check_async(|_ctx, md| {
//!             let tenant = tenant(md); // the future cannot borrow `md`: take what it needs
//!             async move {
//!                 match has_quota(&tenant).await {
//!                     true => Ok(()),
//!                     false => Err(Status::resource_exhausted(format!("`{tenant}` has no calls left"))),
//!                 }
//!             }
//!         })
//!         .named("quota")
//!         .timeout(Duration::from_secs(2)), // UNAVAILABLE if the quota service takes longer
//!         service = "demo.Notes",
//!     )]
//!     async fn add(&self, _: Request<String>) -> Result<Response<()>, Status> {
//!         Ok(Response::new(()))
//!     }
//! }
//!
//! fn note(tenant: Option<&str>, text: &str) -> Request<String> {
//!     let mut request = Request::new(text.to_owned());
//!     if let Some(tenant) = tenant {
//!         request.metadata_mut().insert("x-tenant", tenant.parse().unwrap());
//!     }
//!     request
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! assert!(Notes.add(note(Some("acme"), "hello")).await.is_ok());
//! let code = |result: Result<_, Status>| result.unwrap_err().code();
//! assert_eq!(code(Notes.add(note(None, "hello")).await), Code::InvalidArgument);
//! assert_eq!(code(Notes.add(note(Some("acme"), "")).await), Code::InvalidArgument);
//! assert_eq!(code(Notes.add(note(Some("spent"), "hello")).await), Code::ResourceExhausted);
//! # }
//! ```
//!
//! # Testing
//! The `testing` feature calls an intercepted handler directly, with its interceptors active and no
//! network: `MockStream` scripts a client stream (messages, errors, delays), `probe` reads
//! back the call's live stats and [`Outcome`], `set_grpc_path` names the call as a server would, and
//! `collect` / `collect_n` read a response stream (dropping it early is a client going away). The
//! [`testing`] module has the whole kit. The per-method totals are the process's: a test reads what its
//! own calls did with [`stats::since`].
//!
//! ```toml
//! [dev-dependencies]
//! interceptor-runtime = { path = "../tonic-stream-interceptors/interceptor-runtime", features = ["testing"] }
//! ```
//!
#![cfg_attr(feature = "testing", doc = "```")]
#![cfg_attr(not(feature = "testing"), doc = "```text")]
//! use interceptor_runtime::{intercept, testing::{probe, set_grpc_path, streaming_request}};
//! use tonic::{Code, Request, Response, Status, Streaming};
//!
//! struct Upload;
//!
//! impl Upload {
//!     #[intercept(monitor, budget = 2)]
//!     async fn put(&self, request: Request<Streaming<String>>) -> Result<Response<u64>, Status> {
//!         let mut chunks = request.into_inner();
//!         let mut total = 0;
//!         while let Some(chunk) = chunks.message().await? {
//!             total += chunk.len() as u64;
//!         }
//!         Ok(Response::new(total))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut request = streaming_request(["abc", "defg", "hijkl"].map(String::from));
//! set_grpc_path(&mut request, "/demo.Upload/Put");
//! let call = probe(&mut request);
//!
//! let status = Upload.put(request).await.unwrap_err(); // the third chunk is over the budget
//! assert_eq!(status.code(), Code::ResourceExhausted);
//! let outcome = call.outcome().unwrap();
//! assert_eq!((outcome.ended_by, outcome.stats.messages_received), (Some("budget"), 2));
//! assert_eq!(call.context().unwrap().method().full_name, "/demo.Upload/Put");
//! # }
//! ```
//!
//! # Metrics
//! With feature `metrics`, `monitor` also exports through the [`metrics`](https://docs.rs/metrics)
//! facade, to whichever recorder the application installs (metrics-exporter-prometheus, say), with
//! the names and labels of grpc-ecosystem's Prometheus interceptors: `grpc_server_started_total`,
//! `grpc_server_handled_total{grpc_code}`, `grpc_server_msg_received_total`,
//! `grpc_server_msg_sent_total`, `grpc_server_handling_seconds`, labels `grpc_type`, `grpc_service`,
//! `grpc_method`; plus `grpc_server_msg_{received,sent}_bytes` and `grpc_server_limited_total{limit}`.
//! Message counts reach the shared counters in batches, not per message. The [`metrics`] module lists
//! them with their semantics. For OpenTelemetry's metric, `rpc.server.call.duration`, see
//! [Otel](#otel).
//!
#![cfg_attr(feature = "metrics", doc = "```")]
#![cfg_attr(not(feature = "metrics"), doc = "```text")]
//! // Cargo.toml: interceptor-runtime = { .., features = ["metrics"] }
//! use interceptor_runtime::intercept;
//! use metrics_util::debugging::{DebugValue, DebuggingRecorder};
//! use tonic::{Request, Response, Status};
//!
//! struct Echo;
//!
//! impl Echo {
//!     #[intercept(monitor, service = "demo.Echo")]
//!     async fn echo(&self, request: Request<String>) -> Result<Response<String>, Status> {
//!         Ok(Response::new(request.into_inner()))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Before the first call; an application installs its exporter's recorder.
//! let recorder = DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! recorder.install().unwrap();
//!
//! Echo.echo(Request::new("hello".into())).await.unwrap();
//!
//! let handled = snapshotter.snapshot().into_vec().into_iter().find_map(|(key, _, _, value)| {
//!     let key = key.key();
//!     let ok = key.labels().any(|label| (label.key(), label.value()) == ("grpc_code", "OK"));
//!     (key.name() == "grpc_server_handled_total" && ok).then_some(value)
//! });
//! assert_eq!(handled, Some(DebugValue::Counter(1)));
//! # }
//! ```
//!
// Links to the items of features that may be off: to the item, or else to this page's section.
#![cfg_attr(feature = "monitor", doc = "[`monitor`]: crate::monitor")]
#![cfg_attr(not(feature = "monitor"), doc = "[`monitor`]: #monitor")]
#![cfg_attr(feature = "rate", doc = "[`rate`]: crate::rate")]
#![cfg_attr(not(feature = "rate"), doc = "[`rate`]: #rate")]
#![cfg_attr(feature = "budget", doc = "[`budget`]: crate::budget")]
#![cfg_attr(not(feature = "budget"), doc = "[`budget`]: #budget")]
#![cfg_attr(any(feature = "rate", feature = "budget"), doc = "[`key`]: crate::key")]
#![cfg_attr(not(any(feature = "rate", feature = "budget")), doc = "[`key`]: #rate")]
#![cfg_attr(feature = "rate", doc = "[`rate::Backend`]: crate::rate::Backend")]
#![cfg_attr(not(feature = "rate"), doc = "[`rate::Backend`]: #rate")]
#![cfg_attr(feature = "rate", doc = "[`rate::LimiterBackend`]: crate::rate::LimiterBackend")]
#![cfg_attr(not(feature = "rate"), doc = "[`rate::LimiterBackend`]: #rate")]
#![cfg_attr(feature = "metrics", doc = "[`metrics`]: crate::metrics")]
#![cfg_attr(not(feature = "metrics"), doc = "[`metrics`]: #metrics")]
#![cfg_attr(feature = "otel", doc = "[`otel`]: crate::otel")]
#![cfg_attr(not(feature = "otel"), doc = "[`otel`]: #otel")]
#![cfg_attr(feature = "redis", doc = "[`RedisBackend`]: crate::rate::RedisBackend")]
#![cfg_attr(not(feature = "redis"), doc = "[`RedisBackend`]: #rate")]
#![cfg_attr(feature = "testing", doc = "[`testing`]: crate::testing")]
#![cfg_attr(not(feature = "testing"), doc = "[`testing`]: #testing")]
#![cfg_attr(feature = "testing", doc = "[`testing::set_grpc_path`]: crate::testing::set_grpc_path")]
#![cfg_attr(not(feature = "testing"), doc = "[`testing::set_grpc_path`]: #testing")]
// docs.rs builds with `--cfg docsrs` (Cargo.toml): the items of each feature are marked with it.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod builtin;
pub mod check;
mod engine;
mod expansion;
mod interceptor;
pub mod stats;
mod stream;
pub mod transport;

#[cfg(feature = "metrics")]
#[path = "metrics_export.rs"]
pub mod metrics;
#[cfg(feature = "testing")]
pub mod testing;

#[cfg(feature = "budget")]
pub use builtin::budget;
#[cfg(any(feature = "rate", feature = "budget"))]
pub use builtin::key;
#[cfg(feature = "monitor")]
pub use builtin::monitor;
#[cfg(feature = "otel")]
pub use builtin::otel;
#[cfg(feature = "rate")]
pub use builtin::rate;

pub use check::{check_async, check_metadata, validate};
pub use engine::{CallContext, CallRef, CallStats, MethodInfo, NameSource, Outcome, RpcKind};
pub use interceptor::{Chain, ChainStream, Direction, Interceptor, MessageRef};
pub use stream::{Inbound, Outbound, OutboundStream};
pub use transport::{InterceptLayer, InterceptService};

pub use interceptor_macros::intercept;

/// What `#[intercept]`'s expansion names, and only that: not a public API,
/// it may change in any release. The expansion's steps are described in the
/// engine's `guard` module.
#[doc(hidden)]
pub mod __private {
    #[cfg(feature = "budget")]
    pub use crate::builtin::budget::{Budget, BudgetConfig};
    #[cfg(any(feature = "rate", feature = "budget"))]
    pub use crate::builtin::key::{Key, KeyFn, MissingKey};
    #[cfg(feature = "monitor")]
    pub use crate::builtin::monitor::{Monitor, MonitorConfig};
    #[cfg(feature = "otel")]
    pub use crate::builtin::otel::{Otel, OtelConfig};
    #[cfg(feature = "rate")]
    pub use crate::builtin::rate::{OnBackendError, OnExceed, Rate, RateConfig, RateScope};
    pub use crate::engine::{type_name_of, CallGuard, Method, MethodInfo, RpcKind, Run, Slot};
    #[cfg(feature = "rate")]
    pub use crate::expansion::backend;
    #[cfg(any(feature = "rate", feature = "budget"))]
    pub use crate::expansion::metadata_key;
    pub use crate::expansion::{
        duration, in_shape, int, kind, out_shape, prelude, reply_probe, request_probe, size, with, with_per_call,
        BadOption, HandlerRequest, HandlerResult, Methods, Names,
    };
    pub use crate::interceptor::{interceptor, Chain};
    pub use std::time::Duration;
}
