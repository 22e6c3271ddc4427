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
//! Every interceptor implements [`Interceptor`]: a hook before the stream, one
//! per message in each direction, one after. Those named in one attribute are
//! composed statically with [`Chain`], in the order written.
//!
//! # The attribute
//! - `monitor`, `monitor(warn_size = "1MiB")`: counts, a `tracing` span per call,
//!   per-method totals in [`stats`].
//!
//! On an impl, the attribute may stand above or below `#[tonic::async_trait]`;
//! on a single method, below it. Option values may be expressions (see the
//! README's "The attribute").
#![warn(missing_docs)]

mod call;
mod dispatch;
mod inbound;
mod interceptor;
mod options;
mod outbound;
mod slow_path;
pub mod stats;

#[cfg(feature = "budget")]
pub mod budget;
#[cfg(feature = "metrics")]
#[path = "metrics_export.rs"]
pub mod metrics;
#[cfg(feature = "monitor")]
pub mod monitor;
#[cfg(feature = "rate")]
pub mod rate;
#[cfg(feature = "testing")]
pub mod testing;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use call::{CallContext, CallRef, CallStats, MethodInfo, Outcome, RpcKind};
pub use inbound::Inbound;
pub use interceptor::{Chain, ChainStream, Direction, Interceptor, MessageRef};
pub use outbound::{Outbound, OutboundStream};

/// Wraps tonic handlers' streams with interceptors; see the [crate docs](crate).
pub use interceptor_macros::intercept;
