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
//!     direction: what the handle's vtable calls, the per-message path;
//!   - **unseen messages**: those the interceptors let pass without their
//!     message hooks. After each message they passed, the view asks them
//!     how many of the direction's next messages may (their
//!     `__unseen_allowance`: a `rate` the permits it holds, a `budget` what
//!     is left of it, a `monitor` the messages until its next batch, none
//!     for an interceptor with hooks of its own), takes them
//!     (`__spend_unseen`) and keeps the count in the context; while it is
//!     not zero, no flag asks anything of the message and the message is
//!     at most `UNSEEN_MAX_LEN` bytes, the handle counts the message
//!     itself, inlined into the wrapper, as the view would have (the
//!     counters are the context's atomics, written by the direction's one
//!     handle). What is left of the count goes back to the interceptors
//!     before their hooks next see a message and before the direction's
//!     state is dropped (a `rate` returns the permits to its limiter).
//! - **guard**: the [`CallGuard`], the handler's side of the call, which the
//!   expansion drives; dropped early, it ends the call.
//!
//! # Unsafe: the invariants
//! The crate's `unsafe` is all here, and rests on the invariants below; the
//! `// SAFETY:` comment of every `unsafe` block and `unsafe impl` names the
//! ones it relies on. (Lints enforce the comments and `unsafe` blocks in
//! `unsafe fn`s: see the workspace's Cargo.toml.)
//!
//! - **I1 One owner per direction.** A direction's state (the `UnsafeCell`
//!   of its `DirectionState`) has one owner at a time, and only the owner
//!   reads or writes it: the `CallGuard`, through `&mut self` (the outbound
//!   state while the handler runs, say), except while the direction's
//!   `DirectionHandle` exists; that handle, through `&mut self`. The guard
//!   hands out at most one handle per direction: the inbound one once
//!   (checked), the outbound one by `finish_*`, which consume the guard. No
//!   hook can reach back into a direction while its state is borrowed (hooks
//!   get the state itself, and wakers only schedule). So a `&mut` made from
//!   the `UnsafeCell` never aliases.
//! - **I2 A handle owns a strong count of its cell.** A `DirectionHandle`'s
//!   pointer (its `CellPtr`) is `Arc::into_raw` of the call's
//!   `Arc<CallCell<I>>`, with the
//!   count that came with it: the cell outlives the handle, and the pointer
//!   may be read as the whole cell. The handle's `Drop` gives the count back
//!   (`release`), once.
//! - **I3 A handle's vtable is its cell's.** `CallCell::<I>::handle` alone
//!   makes handles: it pairs the pointer to a `CallCell<I>` with
//!   `VTableOf::<I, OUT, M>::VTABLE` (a `&'static` to a promoted constant)
//!   for the direction handed out (`OUT`: outbound) and the handle's message
//!   type `M`. So the vtable's functions read the pointer as the `I` and
//!   direction it was made for, and the type-erased message as an `&M`.
//! - **I4 Layouts.** `CallCell` is `repr(C)` with the `CallContext` first,
//!   so a pointer to the cell is a pointer to its context;
//!   `DirectionView<I, OUT>` is `repr(transparent)` over `CallCell<I>`;
//!   `Method` is `repr(C)` with its `MethodInfo` first. The two offsets are
//!   asserted at compile time where the pointers relying on them are made.
//! - **I5 A method lives for the process.** A `Method<I>` is leaked, in its
//!   `Slot` or the by-type map, and never freed. A call's context keeps an
//!   `ErasedMethod` made from the whole `&'static Method<I>` that started it
//!   (`Method::start`): it reads back as the method's `MethodInfo` (I4) and,
//!   in that call's cell, which knows `I`, as the `Method<I>`. Never by
//!   widening a reference to the `info` field, which only covers the
//!   `MethodInfo` (Stacked Borrows).
//! - **I6 The call's waker holds a weak count, or borrows the cell.** The
//!   call's waker has for data the pointer of a `CallCell<I>` (what
//!   `Arc::as_ptr` and `Weak::into_raw` give) and for vtable the functions
//!   of the same `I`. The one `with_call_waker` lends to `poll_interrupt`
//!   is borrowed: the `Arc` it was made from outlives the loan, and it is
//!   never dropped (`ManuallyDrop`), so it owns no count. Every clone owns
//!   one weak count: `clone` adds one, `wake` and `drop` give theirs back.
//! - **I7 Threads: as the interceptor allows.** `Interceptor` requires
//!   `I: Send + Sync`, `I::Call: Send + Sync` and `I::Stream: Send`. A
//!   `DirectionState` is `Sync` when its state is `Send`, as a mutex's
//!   contents are (I1); so a `CallCell<I>` is `Send + Sync` by its fields.
//!   Where a type forgets `I`, it stands for what it was made from, and is
//!   `Send`/`Sync` as that is, which its constructor has the compiler
//!   check: a `CellPtr` for its `Arc<CallCell<I>>`, an `ErasedMethod` for
//!   its `&'static Method<I>`, the call's waker for its `Weak<CallCell<I>>`. A `DirectionHandle<M>` holds no `M` (it lends the
//!   hooks an `&M` for the length of a call), so it is `Send + Sync`
//!   whatever `M`; `Inbound<T>` and `Outbound<S>` are as their own fields.
//! - **I8 A message taken or an item put is moved, not copied.**
//!   [`take_message`] copies a message's bytes out of the item a stream
//!   returned, and `ItemOut::put_wide` an item's bytes into the slot
//!   [`catch_item`] returns it from, in 8-byte words of `MaybeUninit`
//!   (padding included; `put_wide` writes them in pairs, still as
//!   `MaybeUninit`), only for a type whose size is a multiple of 8 and whose
//!   alignment is at least 8 (checked where they copy), and forget what they
//!   took the bytes from: the copy is the one owner of whatever it holds.
//!   `catch_item` reads its slot only after its closure returned normally,
//!   which it can only do with the `Written` that writing the slot whole
//!   gives (one per `ItemOut`, branded with the call's lifetime).
//!
//! # Waking: the protocol
//! Not memory safety but liveness: a direction that waits is woken when the
//! call ends or one of its timers fires, whichever thread does it. The
//! context's flags ([`flag`]) and its two waker slots carry it (every
//! message looks at them first, on either path: the handle's unseen count
//! and the view's hooks both leave the message to `attend` when
//! `TERMINATED` or the direction's `INTERRUPT_*` is set):
//! - **W1 Register, then check.** A direction that is about to wait (an
//!   interceptor holds its message back, no message is ready, the handler
//!   waits in [`CallGuard::run`]) registers its task's waker in its slot
//!   first, then checks what it would wait for (`attend`: the terminal
//!   status, then the timers; `poll_timers`: the interrupt flag); it waits
//!   only if that found nothing.
//! - **W2 Set, then wake.** Whoever ends the call (`terminate`: the terminal
//!   status, then `TERMINATED`) or fires a timer (the call's waker:
//!   `interrupt`, the `INTERRUPT_*` flags) sets it first, then wakes both
//!   slots. With W1, the slot's own synchronization leaves no gap: a wake
//!   that comes before the register is seen by the check after it.
//! - **W3 Published before flagged.** The terminal status is set before
//!   `TERMINATED` (`Release`), and read only once `TERMINATED` is seen
//!   (`Acquire`): a direction that sees the flag finds the status.
//! - **W4 Cancel, one side or the other.** `cancelled` makes the token, then
//!   reads the flags; the call's end (`mark_over`) sets them, then looks for
//!   the token; a `SeqCst` fence on each side between the two makes one of
//!   them see the other's write, so a token asked for while the call ends
//!   is cancelled.
//!
//! The loom model (`loom_tests.rs`, run by `.ci/test`) checks W1–W4 on the
//! engine's own code: a direction held back, one with no message ready and a
//! waiting handler, each racing with `terminate` or the call's timer (or
//! both), and the token against the call's end. W1's order in `held_back` is
//! the model's first find: the timers used to be polled before the register,
//! and a timer that fired in between woke no one.
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
//! - [`message`]: a message moved out of its stream's item without a
//!   stall (`Inbound` and `Outbound` pass every message on with it).
//! - [`panic`](mod@panic): panics caught at the engine's boundaries (the handler's
//!   body, the response stream, every interceptor hook).
//! - [`sync`]: the context's atomics, waker slots and once-cells, std's or
//!   loom's (`cfg(interceptor_loom)`, for the loom model).
//!
//! [`Direction`]: crate::Direction

mod cell;
mod context;
mod counters;
mod direction;
pub(crate) mod flag;
mod guard;
mod handle;
mod message;
mod method;
mod outcome;
pub(crate) mod panic;
mod sync;
mod waker;

#[cfg(all(test, interceptor_loom))]
mod loom_tests;
#[cfg(test)]
mod tests;

use cell::CallCell;
pub(crate) use cell::LIVE_CALLS;
pub(crate) use context::UNSEEN_MAX_LEN;
pub use context::{CallContext, CallRef};
pub(crate) use context::{CallExtension, HasContext};
pub use counters::CallStats;
pub(crate) use counters::Counters;
use direction::{DirectionView, ErasedDirection};
pub use guard::{CallGuard, Run};
pub use handle::DirectionHandle;
use handle::{CellPtr, VTableOf};
pub(crate) use message::{catch_item, take_message};
pub(crate) use method::ErasedMethod;
pub use method::{type_name_of, Method, MethodInfo, NameSource, RpcKind, Slot};
use outcome::gone;
pub use outcome::Outcome;

/// A call's context for unit tests of interceptors: a method of its own
/// (`test.Svc/M`, of `kind`), no peer, no layer.
#[cfg(test)]
pub(crate) fn test_context(kind: RpcKind) -> CallContext {
    let slot = Box::leak(Box::new(Slot::new()));
    let method = slot.get_or_init(|| MethodInfo::new("test.Svc", "M", kind), || ());
    CallContext::new(ErasedMethod::new(method), None, None)
}
