//! `#[intercept(..)]`: message-level interceptors for tonic handlers.
//!
//! Use it through `interceptor-runtime`, which re-exports it and holds the
//! types the expansion calls; the attribute's reference is on [`intercept`],
//! the guide in `interceptor-runtime`'s crate docs.
//!
//! Inside (private modules; `cargo doc --document-private-items` shows
//! them): `builtins` is the table of built-in interceptors, one row each,
//! which the grammar, its errors and the code generated all read; `attr` the
//! argument grammar; `handler` recognises a handler's shape (as written, or
//! as `#[tonic::async_trait]` rewrote it), leaving its types to the
//! compiler; `method_attrs` takes a method's own `#[intercept]`s, also under
//! `cfg_attr`; `assoc` rewrites the impl's `type XStream` and `Self::XStream`
//! in its bodies; `expand` generates the code around the unchanged body.
#![warn(missing_docs)]

mod assoc;
mod attr;
mod builtins;
mod expand;
mod handler;
mod method_attrs;

use proc_macro::TokenStream;

/// Wraps a tonic service's handlers, or one handler, with interceptors that
/// see every message of the call, both ways.
///
/// This is the attribute's exhaustive reference: where it goes, its grammar,
/// every option with its values and default, and what the expansion changes.
/// The guide, with an example that runs for each interceptor, is the crate
/// documentation of `interceptor_runtime`, which re-exports this attribute.
///
/// # Where it goes
/// ```text
/// #[intercept(monitor)]                      // on an impl of a tonic service trait: every handler
/// #[tonic::async_trait]                      // (the attribute may also stand below this line)
/// impl route_guide_server::RouteGuide for Guide {
///     type RouteChatStream = S;              // becomes `Outbound<S>`; `Self::RouteChatStream` in bodies is still S
///
///     #[intercept(rate = 10, budget = 1000)] // on one of its handlers: added to the impl's list
///     async fn route_chat(&self, request: Request<Streaming<RouteNote>>)
///         -> Result<Response<Self::RouteChatStream>, Status> { /* body unchanged */ }
/// }
/// ```
/// - **On an impl** of a tonic service trait (`impl module::Trait for T`, or
///   `impl Trait for T` with the trait imported, generic impls too), above or
///   below `#[tonic::async_trait]`. Every `fn` of the impl is a handler and is
///   wrapped; one that does not look like a handler is a compile error. Each
///   `type XStream = S;` that a handler returns becomes
///   `type XStream = Outbound<S>;`, whatever `S` is (a concrete stream, a
///   boxed one, an alias); inside the impl's handler bodies `Self::XStream`
///   still means `S`, so `Box::pin(s) as Self::XStream` compiles as written.
///   A signature that writes `S` out where the trait has `Self::XStream`
///   (`-> Result<Response<S>, Status>`) is rewritten to name the
///   `Self::XStream` named after the method (`ListFeaturesStream` for
///   `list_features`). A type already written `Outbound<S>` is left as it is.
/// - **On one method**: below `#[tonic::async_trait]` in a service impl, in
///   an impl of a trait with native `async fn`s, or in an inherent impl. A
///   method alone cannot reach the impl's `type XStream = S;`, so a concrete
///   response stream type is written `Outbound<S>` there; a boxed stream
///   (`Pin<Box<dyn Stream ..>>`, `tonic::codegen::BoxStream<T>`) works as it
///   is.
/// - **Both**: a method's list is added to the impl's. A built-in named in
///   both takes the method's options, in the impl's place; a method's
///   `service` replaces the impl's. A method's attribute may also be written
///   `#[cfg_attr(predicate, intercept(..))]` (at most 3 per method): the
///   method is expanded once for each combination of the predicates, each
///   under its `cfg`, and never wrapped twice.
/// - Anywhere else (a trait definition, a struct, a free function that is
///   not a handler) it is a compile error that says where it goes.
///
/// ```
/// use interceptor_runtime::intercept;
/// use tonic::codegen::tokio_stream::{self, Stream, StreamExt};
/// use tonic::{Code, Request, Response, Status, Streaming};
///
/// /// A service trait, as tonic-build generates it.
/// pub mod words_server {
///     use super::*;
///     pub const SERVICE_NAME: &str = "demo.Words";
///     #[tonic::async_trait]
///     pub trait Words: Send + Sync + 'static {
///         async fn count(&self, request: Request<Streaming<String>>) -> Result<Response<u64>, Status>;
///         type SpellStream: Stream<Item = Result<String, Status>> + Send + 'static;
///         async fn spell(&self, request: Request<String>) -> Result<Response<Self::SpellStream>, Status>;
///     }
/// }
///
/// struct Words;
///
/// #[intercept(monitor, budget = 100)] // every handler of the impl
/// #[tonic::async_trait]
/// impl words_server::Words for Words {
///     async fn count(&self, request: Request<Streaming<String>>) -> Result<Response<u64>, Status> {
///         let mut words = request.into_inner(); // an `Inbound<String>`, with `Streaming`'s API
///         let mut n = 0;
///         while let Some(_word) = words.message().await? {
///             n += 1;
///         }
///         Ok(Response::new(n))
///     }
///
///     // Becomes `Outbound<tokio_stream::Iter<..>>`; in the bodies, `Self::SpellStream` is still this.
///     type SpellStream = tokio_stream::Iter<std::vec::IntoIter<Result<String, Status>>>;
///
///     #[intercept(budget = 3)] // this method's budget, in place of the impl's
///     async fn spell(&self, request: Request<String>) -> Result<Response<Self::SpellStream>, Status> {
///         let letters: Vec<_> = request.into_inner().chars().map(|c| Ok(c.to_string())).collect();
///         Ok(Response::new(tokio_stream::iter(letters)))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use words_server::Words as _;
///
/// let mut letters = Words.spell(Request::new("tonic".into())).await.unwrap().into_inner();
/// for _ in 0..3 {
///     assert!(letters.next().await.unwrap().is_ok());
/// }
/// let status = letters.next().await.unwrap().unwrap_err();
/// assert_eq!(status.code(), Code::ResourceExhausted);
/// assert_eq!(status.message(), "budget: 3 messages per stream used up (send)");
/// # }
/// ```
///
/// A handler is `async fn name(&self, request: Request<T>) -> Result<Response<U>, Status>`
/// (or `#[tonic::async_trait]`'s rewrite of one), its types written in any
/// way that means the same: aliases (`type Result<T> = std::result::Result<Response<T>, Status>`,
/// `tonic::Result<..>`, a renamed `Result`), a request of `Streaming<T>` for
/// a client stream, a response of a `Stream` for a server stream. The macro
/// reads no type: it hands them to the compiler, which picks the code for
/// each RPC kind, and a type it cannot wrap is a compile error at that type.
///
/// # What the handler sees
/// The body is unchanged. Inside it, a `request: Request<Streaming<T>>` is a
/// `Request<Inbound<T>>`: `Inbound` has `Streaming`'s API (`message().await`,
/// `Stream`, `trailers()`), plus `into_inner()` for the plain stream and
/// `context()` for the call. The response stream it returns is wrapped in an
/// `Outbound`, which the client receives. `CallContext::of(&request)` gives
/// the call. A call is finalized exactly once, with the status it really
/// ended with (with `InterceptLayer` on the server, also when the client
/// resets the stream or goes away), and a panic of the handler, its response
/// stream or an interceptor ends it INTERNAL, never crashing the server.
///
/// # Grammar
/// ```text
/// #[intercept(item, item, ..)]              a trailing comma is allowed
///
/// item      := builtin | `with` = EXPR | `service` = EXPR
/// builtin   := NAME                         only where the row below says "alone"
///            | NAME = VALUE                 the shorthand
///            | NAME(option = VALUE, ..)     at least one option, each once
/// NAME      := monitor | rate | budget | otel
/// ```
/// Each built-in and `service` may be given once per attribute; `with` as
/// often as needed. A name that is not one of these is a compile error that
/// suggests the nearest (``unknown interceptor `monitr`; did you mean
/// `monitor`?``), and so is an unknown option. A built-in whose cargo feature
/// of `interceptor-runtime` is off is a compile error that names the
/// feature.
///
/// ## `monitor` (feature `monitor`, on by default)
/// Counts messages and bytes each way, a `tracing` span per call, per-method
/// totals (`interceptor_runtime::stats`), and, with feature `metrics`,
/// Prometheus-style metrics.
///
/// | written | |
/// |---|---|
/// | `monitor` | alone: every option at its default |
/// | `warn_size = SIZE` | a WARN event for a message over this size; default: none |
///
/// ## `rate` (feature `rate`, on by default)
/// At most N messages per second each way, on tokio's clock.
///
/// | written | |
/// |---|---|
/// | `rate = INT` | shorthand: `recv` and `send` both INT |
/// | `recv = INT`, `send = INT` | messages per second received, sent; `rate(..)` needs at least one; default: no limit |
/// | `burst = INT` | messages that may pass back to back; default: 1 |
/// | `scope = stream \| method` | a limiter per stream, or one shared by the method's streams, served in turn; default: `stream` |
/// | `on_exceed = wait \| reject` | a message over the rate waits (inbound, pushing back on the client through HTTP/2 flow control) or ends the call with RESOURCE_EXHAUSTED; default: `wait` |
/// | `key = KEY` | one limit per value of the key, shared by the method's streams with that value; default: none |
/// | `key_fn = KEY_FN` | the key computed by your function; default: none |
/// | `max_keys = INT` | keys held at once (a key with nothing to remember is dropped); default: 100000 |
/// | `on_missing_key = invalid_argument \| unauthenticated \| permission_denied \| failed_precondition \| share` | a call without its key ends with that code before the handler runs, or (`share`) shares one limit with the other calls without one; default: `invalid_argument` |
/// | `backend = BACKEND` | limits kept in a store every server shares (`RedisBackend`, feature `redis`); default: none, kept in this process |
/// | `on_backend_error = allow \| reject` | while the store fails, streams go on, each limited by itself, or end with UNAVAILABLE; default: `allow` |
///
/// `key` and `key_fn` exclude each other; `key`, `key_fn` and `backend`
/// exclude `scope` (they share a limit in their own way); `max_keys` and
/// `on_missing_key` need `key` or `key_fn`; `on_backend_error` needs
/// `backend`.
///
/// ## `budget` (feature `budget`, on by default)
/// Per stream and direction, N messages or bytes pass and the next ends the
/// call with RESOURCE_EXHAUSTED; `duration` and `idle` end it with
/// DEADLINE_EXCEEDED (dropping a handler still running); `streams` caps the
/// method's concurrent calls (RESOURCE_EXHAUSTED before the handler runs).
///
/// | written | |
/// |---|---|
/// | `budget = INT` | shorthand: `messages = INT` |
/// | `messages = INT` | messages per stream, each way; default: no limit |
/// | `bytes = SIZE` | encoded bytes per stream, each way; default: no limit |
/// | `duration = DURATION` | how long a call may run; default: no limit |
/// | `idle = DURATION` | how long a call may pass no message; default: no limit |
/// | `streams = INT` | the method's concurrent calls (per key with `key`, in this process); default: no limit |
/// | `key = KEY`, `key_fn = KEY_FN`, `max_keys = INT`, `on_missing_key = ..` | as for `rate`: `streams` per client |
///
/// `budget()` with no option is an error. `key` and `key_fn` exclude each
/// other and need `streams`; `max_keys` and `on_missing_key` need `key` or
/// `key_fn`.
///
/// ## `otel` (feature `otel`)
/// One OpenTelemetry SERVER span per call, through the globally installed
/// providers, ended with the call's real end and status, and a
/// `rpc.server.call.duration` sample. Written alone: it takes no options.
///
/// ## `with = EXPR`
/// Your own interceptor: any expression whose type implements
/// `interceptor_runtime::Interceptor`, such as a struct of yours or one made
/// from a closure by `check_metadata`, `validate` or `check_async`.
/// Repeatable. A `with` value that mentions `self` (see below) must also
/// implement `PartialEq` and `Clone`.
///
/// ## `service = EXPR`
/// The service name (a `&str`, e.g. `"routeguide.RouteGuide"`) in stats,
/// spans and metrics, in place of the one the request names or the macro
/// guesses. The method's name is still the request's when it names one.
///
/// # Values
/// | kind | a literal, checked at compile time | any other expression, converted when the interceptors are built |
/// |---|---|---|
/// | INT | a whole number, at least 1 (`rate = 10`) | any integer type, or a reference to one: `rate = MAX_RATE`, `rate = *LIMIT` |
/// | SIZE | bytes (`4096`) or a string with a unit (`"4MiB"`, `"512 KB"`) | an integer, `&str` or `String` |
/// | DURATION | a string with a unit (`"30s"`, `"1m 30s"`, `"250ms"`), not zero | a `Duration`, `&str` or `String` |
/// | a choice (`stream \| method` ..) | a bare word | none: fixed at compile time |
/// | KEY | `peer` (the client's IP address) or `metadata("x-api-key")` (ASCII metadata: `a-z 0-9 - _ .`, not `-bin`) | `metadata(EXPR)`, the name checked at run time |
/// | KEY_FN | none | a path or a closure, `Fn(&CallContext, &MetadataMap) -> Option<String>`; it may not mention `self` |
/// | BACKEND | none | a value whose type implements `rate::IntoBackend` (`REDIS.clone()`) |
///
/// A literal of the wrong kind (`rate = "10"`, `duration = 30`, `rate = 0`)
/// is a compile error that says what to write. Any other expression is
/// evaluated on the method's first call, once; an expression that mentions
/// `self` on every call, and the method's interceptors are then looked up by
/// the values (at most 64 distinct ones per method): calls whose values are
/// equal share them, with their method-wide state (a `scope = method`
/// limiter, `streams` slots, the totals), so that two instances of one
/// service configured differently each keep their own limits. A value that
/// is bad at run time (zero, negative, too large, a string that is not a size
/// or a duration) ends the call with INTERNAL, naming the method and the
/// option, and is logged at ERROR once per method; never a panic.
///
/// # Order
/// Interceptors run in the order written, the impl's first, then the
/// method's, except `otel`, which always runs first, wherever it is written,
/// so that its span covers what the others do (a rejection by a token check
/// or `budget(streams = ..)` is the span's status). Before the handler, each
/// interceptor's start hooks run in that order and the first rejection ends
/// the call; per message, each sees the message in that order; at the end,
/// every interceptor that started hears the outcome.
///
/// # Method names
/// Stats, spans and metrics name a method `/package.Service/Method`, as
/// clients call it, when the server has `InterceptLayer` (or the request
/// carries a `tonic::GrpcMethod`). Without it, the names are guessed from
/// the Rust code: the service is `module::SERVICE_NAME` for an impl of
/// `module::Trait` (as tonic-build generates it), else the trait's name,
/// else the impl type's; the method is the handler's name in upper camel
/// case. `service = ..` sets the service name in every case.
#[proc_macro_attribute]
pub fn intercept(args: TokenStream, item: TokenStream) -> TokenStream {
    let original: proc_macro2::TokenStream = item.clone().into();
    match expand::intercept(args.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        // The item is kept as written so that its other errors (a missing
        // trait method ...) do not pile onto this one.
        Err(err) => {
            let mut tokens = err.to_compile_error();
            tokens.extend(original);
            tokens.into()
        }
    }
}

#[cfg(test)]
mod tests;
