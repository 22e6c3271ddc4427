//! The call engine: what one intercepted call is, and how its interceptors
//! run on every message of both directions.
//!
//! - [`method`]: the method and its interceptors, built once per handler.
//! - [`context`], [`counters`], [`flag`], [`outcome`]: the call as the
//!   interceptors and the handler see it.
//! - [`cell`]: the call's one allocation, and how the call ends.
//! - [`guard`]: the handler's side of the call, what the expansion drives.
//! - [`handle`], [`direction`]: a wrapper's handle on its direction, and the
//!   per-message path behind it.
//! - [`waker`]: the call's waker, for the interceptors' timers.

mod cell;
mod context;
mod counters;
mod direction;
pub(crate) mod flag;
mod guard;
mod handle;
mod method;
mod outcome;
mod waker;

#[cfg(all(test, feature = "budget"))]
mod tests;

use cell::CallState;
pub(crate) use cell::LIVE_CALLS;
pub use context::{CallContext, CallRef};
pub(crate) use context::{CallHandle, HasContext};
pub use counters::CallStats;
pub(crate) use counters::Counters;
use direction::{Dir, ErasedTap};
pub use guard::{Call, Run};
pub use handle::Tap;
use handle::VTableOf;
pub use method::{type_name_of, Method, MethodInfo, RpcKind, Slot};
use outcome::gone;
pub use outcome::Outcome;
