//! Interceptors made from a closure, for the checks most services write:
//! no type of your own, no state, no downcast.
//!
//! - [`check_metadata`]: a synchronous check of the request's metadata,
//!   before the handler runs (the [`Interceptor::on_start`] of a stateless
//!   interceptor).
//! - [`validate`]: a check of every message of one type, by default those
//!   the client sends; other types pass.
//! - [`check_async`]: an asynchronous check awaited before the handler runs
//!   (a token introspection, a quota lookup), with a time limit of its own.
//!
//! Each is a value for `with = ..`, named by `.named("..")` (the name the
//! stats' and the outcome's `ended_by` give when it rejects a call):
//!
//! ```
//! use interceptor_runtime::{check_metadata, intercept, validate};
//! use tonic::{Code, Request, Response, Status};
//!
//! struct Notes;
//!
//! impl Notes {
//!     #[intercept(
//!         with = check_metadata(|_, md| match md.get("x-tenant") {
//!             Some(_) => Ok(()),
//!             None => Err(Status::invalid_argument("missing `x-tenant` metadata")),
//!         })
//!         .named("tenant"),
//!         with = validate(|note: &String| match note.is_empty() {
//!             true => Err(Status::invalid_argument("a note must say something")),
//!             false => Ok(()),
//!         }),
//!         service = "demo.Notes",
//!     )]
//!     async fn add(&self, _: Request<String>) -> Result<Response<()>, Status> {
//!         Ok(Response::new(()))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut note = Request::new(String::new());
//! note.metadata_mut().insert("x-tenant", "acme".parse().unwrap());
//! let status = Notes.add(note).await.unwrap_err(); // an empty note
//! assert_eq!((status.code(), status.message()), (Code::InvalidArgument, "a note must say something"));
//! # }
//! ```
//!
//! A check that needs state of its own per call or per stream, or several
//! hooks, implements [`Interceptor`] (two type lines and the hooks it needs).
//!
//! [`Interceptor`]: crate::Interceptor
//! [`Interceptor::on_start`]: crate::Interceptor::on_start

mod async_check;
mod metadata;
mod validate;

pub use async_check::{check_async, AsyncCheck};
pub use metadata::{check_metadata, MetadataCheck};
pub use validate::{validate, Validate};
