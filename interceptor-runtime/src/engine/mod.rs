//! The call engine: what one intercepted call is, and how its interceptors
//! run on every message of both directions. All of the crate's `unsafe` is
//! here.
//!
//! # Words
//! - **call**: one RPC, from [`Method::start`] to its [`Outcome`].
//! - **method**: a [`Method`], the [`MethodInfo`] and the interceptors of
//!   one handler, built on its first call and kept for the process in the
//!   handler's [`Slot`].
//! - **cell**: the call's one allocation, a [`CallCell`] behind an `Arc`:
//!   the context, the interceptors' per-call state and both directions'
//!   state. Variables holding it are named `cell`; a raw pointer to it is a
//!   `cell_ptr`.
//! - **context**: the [`CallContext`] (`ctx`), the part of the cell that
//!   interceptors and the handler see; the cell's first field.
//! - **call state**: the interceptors' `Interceptor::Call` (the cell's
//!   `call_state`), shared by both directions.
//! - **direction**: inbound or outbound ([`Direction`]); every per-direction
//!   thing is named for it:
//!   - **direction state**: the interceptors' `Interceptor::Stream` of one
//!     direction, kept in the cell in a `DirectionState` (`state`, an
//!     `Option` that is `None` once the direction ended; `stream` once
//!     unwrapped, as the trait's hooks call it);
//!   - **direction handle**: a [`DirectionHandle`], what a wrapper
//!     (`Inbound`, `Outbound`) holds: a thin pointer to the cell and a
//!     `'static` vtable, one per direction;
//!   - **direction view**: a `DirectionView<I, OUT>`, the cell seen from one
//!     direction: what the handle's vtable calls, the per-message path.
//! - **guard**: the [`CallGuard`], the handler's side of the call, which the
//!   expansion drives; dropped early, it ends the call.
//!
//! # Modules
//! - [`method`]: the method, built once per handler.
//! - [`context`], [`counters`], [`flag`], [`outcome`]: the call as the
//!   interceptors and the handler see it.
//! - [`cell`]: the call's one allocation, and how the call ends.
//! - [`guard`]: the handler's side of the call.
//! - [`handle`], [`direction`]: a wrapper's handle on its direction, and the
//!   per-message path behind it.
//! - [`waker`]: the call's waker, for the interceptors' timers.
//!
//! [`Direction`]: crate::Direction

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

use cell::CallCell;
pub(crate) use cell::LIVE_CALLS;
pub use context::{CallContext, CallRef};
pub(crate) use context::{CallExtension, HasContext};
pub use counters::CallStats;
pub(crate) use counters::Counters;
use direction::{DirectionView, ErasedDirection};
pub use guard::{CallGuard, Run};
pub use handle::DirectionHandle;
use handle::VTableOf;
pub use method::{type_name_of, Method, MethodInfo, RpcKind, Slot};
use outcome::gone;
pub use outcome::Outcome;
