//! Message-level interceptors for tonic streams, declared with one attribute.
//!
//! tonic's `Interceptor` sees only metadata and tower layers see only HTTP
//! frames. `#[intercept]` wraps a handler's inbound [`tonic::Streaming<T>`] and
//! its outbound response stream so that interceptors see every typed message:
//!
//! ```ignore
//! use interceptor_runtime::intercept;
//!
//! #[intercept(monitor)]                 // every handler of the impl
//! #[tonic::async_trait]
//! impl RouteGuide for Guide {
//!     type RouteChatStream = ReceiverStream<Result<RouteNote, Status>>; // left as written
//!
//!     #[intercept(rate = 10, budget(messages = 1000))]       // adds to the impl's list
//!     async fn route_chat(&self, request: Request<Streaming<RouteNote>>)
//!         -> Result<Response<Self::RouteChatStream>, Status> { /* body unchanged */ }
//! }
//! ```
//!
//! # How it works
//! Inside the handler, `request` is a `Request<Inbound<T>>`: [`Inbound`] has
//! `Streaming`'s API, so the body compiles unchanged. The stream the handler
//! returns is wrapped in an [`Outbound`]. Both share one [`CallContext`], which
//! is finalized exactly once: OK, the error's code, or CANCELLED when the
//! client goes away. The context is also in the request's extensions
//! ([`CallContext::of`]).
//!
//! Every interceptor implements [`Interceptor`]: a hook before the stream (and
//! an asynchronous one awaited before the handler), one per message in each
//! direction, one after. Those named in one attribute are composed statically
//! with [`Chain`], in the order written. Every hook has a default, so a check
//! of your own is short: the trait's docs say how short, and [`check_metadata`],
//! [`validate`] and [`check_async`] make one from a closure (the [`check`]
//! module).
//!
//! Some endings are only seen below tonic: a client that cancels an upload
//! looks like a clean end of the stream to a handler, and a response the
//! handler returned is not yet one the client received. One line in the
//! server's setup, `Server::builder().layer(InterceptLayer::new())` (see
//! [`transport`]), lets each call end as it really ended. A panic of the
//! handler, of its response stream or of an interceptor is caught: the
//! client gets INTERNAL and the call ends INTERNAL.
//!
//! # The attribute
//! - `monitor`, `monitor(warn_size = "1MiB")`: counts, a `tracing` span per call,
//!   per-method totals in [`stats`].
//! - `otel` (feature `otel`): an OpenTelemetry SERVER span per call, ended
//!   with the call's real end and status, and `rpc.server.call.duration`
//!   (the `otel` module).
//!
//! On an impl, the attribute may stand above or below `#[tonic::async_trait]`;
//! on a single method, below it. Option values may be expressions (see the
//! README's "The attribute").
//!
//! # Method names
//! Stats, spans and metrics name a method as clients call it
//! (`/package.Service/Method`) when the server has [`InterceptLayer`]:
//! tonic's generated server does not tell a handler which method was called.
//! Without it, the names are guessed from the Rust code, and the method's
//! [`MethodInfo`] says so ([`NameSource::Guessed`]); `service = ".."` sets
//! the service name in any case.
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
pub use transport::InterceptLayer;

/// Wraps tonic handlers' streams with interceptors; see the [crate docs](crate).
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
