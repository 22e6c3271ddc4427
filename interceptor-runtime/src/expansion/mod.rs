//! What the expansion of `#[intercept]` calls besides the engine, re-exported
//! through `__private`:
//! - [`dispatch`]: the handler's request and response told apart by their
//!   real types (a client stream or one message; a response stream or one
//!   message), so that aliases and renamed imports work;
//! - [`options`]: option values written as expressions, checked and
//!   converted at run time, and the per-value cache of a method's
//!   interceptors for values that mention `self`;
//! - [`names`]: the method's names, from its first call's request, or the
//!   macro's when it carries none.

mod dispatch;
mod names;
mod options;

pub use dispatch::{
    in_shape, kind, out_shape, prelude, reply_probe, request_probe, with, HandlerRequest, HandlerResult,
};
pub use names::Names;
#[cfg(feature = "rate")]
pub use options::backend;
#[cfg(any(feature = "rate", feature = "budget"))]
pub use options::metadata_key;
pub use options::{duration, int, size, with_per_call, BadOption, Methods};
