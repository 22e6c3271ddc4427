//! The wrappers a handler's streams become: [`Inbound`] around the client's
//! `tonic::Streaming<T>`, [`Outbound`] around the handler's response stream.
//!
//! Each holds its direction's handle on the call (see [`crate::engine`]) and
//! runs the interceptors on every message. The fast path (a message that
//! passes) is inlined into the wrapper; every other way (a message held back,
//! a rejection, the inner stream's end or error) is in [`slow_path`], shared
//! by both.

mod inbound;
mod outbound;
mod slow_path;

pub use inbound::Inbound;
pub use outbound::{Outbound, OutboundStream};
