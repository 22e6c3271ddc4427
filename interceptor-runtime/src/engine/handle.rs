//! [`DirectionHandle`]: a wrapper's handle on its direction of the call, type-erased
//! over the interceptors.

use std::{
    marker::PhantomData,
    ptr::NonNull,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
};

use tonic::Status;

use super::{flag, CallCell, CallContext, DirectionView, ErasedDirection};
use crate::interceptor::{Direction, Interceptor};

/// A wrapper's handle on its direction of one call: type-erased over the
/// interceptors, so that `Inbound<T>` and `Outbound<S>` can be named. It
/// points into the call's cell; there is one per direction.
///
/// A hand-made trait object: a thin pointer to the call's cell, whose first
/// field is the [`CallContext`] (so reading the context is one load, with no
/// offset to compute from a vtable's alignment), and a `'static` vtable of
/// the direction's functions.
pub struct DirectionHandle<M> {
    pub(super) cell: CellPtr,
    /// `VTableOf::<I, OUT, M>::VTABLE`. Its type does not name `M`: a
    /// `&'static` of a type that did would need `M: 'static` on the handle
    /// and on `Inbound<T>` and `Outbound<S>`, which hold one.
    pub(super) vtable: &'static DirectionVTable,
    /// The message type the vtable was made for.
    pub(super) message: PhantomData<fn(&M)>,
}

/// A handle's pointer to its cell: `Arc::into_raw` of an `Arc<CallCell<I>>`
/// with `I` forgotten, owning that strong count (I2), and the context's
/// address (I4). The handle is `Send` and `Sync` because this is: for
/// whatever `M`, since the handle holds no message (it lends one to the
/// hooks for the length of a call).
pub(super) struct CellPtr(NonNull<CallContext>);

// SAFETY: I7: `new` takes the strong count of an `Arc<CallCell<I>>` whose
// cell the compiler checked is `Send + Sync`, so that count may move to,
// and be given back on, another thread, as the `Arc` could; the direction
// state it reaches goes with its one owner (I1).
unsafe impl Send for CellPtr {}
// SAFETY: I7: shared, it gives `&CallContext` alone, of a cell that `new`
// checked is `Sync`.
unsafe impl Sync for CellPtr {}

impl CellPtr {
    /// Takes over `cell`'s strong count (I2).
    pub(super) fn new<I: Interceptor>(cell: Arc<CallCell<I>>) -> Self
    where
        CallCell<I>: Send + Sync,
    {
        const { assert!(std::mem::offset_of!(CallCell<I>, ctx) == 0, "I4") };
        // SAFETY: `into_raw` never returns null; I4: the context is the
        // cell's first field, at the same address (asserted above).
        CellPtr(unsafe { NonNull::new_unchecked(Arc::into_raw(cell) as *mut CallContext) })
    }

    /// The pointer, for the vtable's functions.
    #[inline]
    fn as_ptr(&self) -> *const () {
        self.0.as_ptr() as *const ()
    }

    /// The call's context.
    #[inline]
    fn context(&self) -> &CallContext {
        // SAFETY: I2: the strong count this owns keeps the cell alive; I4:
        // the context is at the cell's address.
        unsafe { self.0.as_ref() }
    }
}

/// `poll_message` of a vtable: the handle's pointer, the task's context, and
/// the message, the handle's `&M` with its type erased.
type PollMessage = unsafe fn(*const (), &mut Context<'_>, NonNull<()>) -> Poll<Result<(), Status>>;

/// The functions of one `VTableOf`; each takes the handle's pointer.
pub(super) struct DirectionVTable {
    poll_message: PollMessage,
    poll_interrupt: unsafe fn(*const (), &mut Context<'_>) -> Poll<Status>,
    end: unsafe fn(*const (), Result<(), Status>) -> Option<Status>,
    /// Releases the direction and the handle's strong count.
    release: unsafe fn(*const ()),
}

/// The vtable of the direction `OUT` (outbound when true) of a call whose
/// interceptors are `I`, for messages `M`.
pub(super) struct VTableOf<I, const OUT: bool, M>(PhantomData<fn() -> (I, M)>);

impl<I: Interceptor, const OUT: bool, M: prost::Message + 'static> VTableOf<I, OUT, M> {
    /// A reference to a constant, promoted to `'static` by the compiler: one
    /// vtable per `I`, `OUT` and `M`, in read-only memory, never freed.
    pub(super) const VTABLE: &'static DirectionVTable = &DirectionVTable {
        poll_message: Self::poll_message,
        poll_interrupt: Self::poll_interrupt,
        end: Self::end,
        release: Self::release,
    };

    /// # Safety (all five)
    /// `cell` is the pointer of a `DirectionHandle<M>` made by
    /// `CallCell::<I>::handle` for direction `OUT` (I3), and that handle is
    /// the caller, through `&mut self` (I1).
    unsafe fn view<'a>(cell: *const ()) -> &'a DirectionView<I, OUT> {
        // SAFETY: I2: the handle's count keeps the `CallCell<I>` alive (I3:
        // this `I`); I4: `DirectionView<I, OUT>` is a transparent view of it.
        unsafe { &*(cell as *const DirectionView<I, OUT>) }
    }
    unsafe fn poll_message(cell: *const (), cx: &mut Context<'_>, msg: NonNull<()>) -> Poll<Result<(), Status>> {
        // SAFETY: I1, I3: the caller's promise, passed on; I3: `msg` is the
        // `&M` the handle was given, borrowed for this call.
        unsafe { ErasedDirection::<M>::poll_message(Self::view(cell), cell, cx, msg.cast::<M>().as_ref()) }
    }
    unsafe fn poll_interrupt(cell: *const (), cx: &mut Context<'_>) -> Poll<Status> {
        // SAFETY: I1, I3: the caller's promise, passed on.
        unsafe { ErasedDirection::<M>::poll_interrupt(Self::view(cell), cell, cx) }
    }
    unsafe fn end(cell: *const (), result: Result<(), Status>) -> Option<Status> {
        // SAFETY: I1, I3: the caller's promise, passed on.
        unsafe { ErasedDirection::<M>::end(Self::view(cell), cell, result) }
    }
    unsafe fn release(cell: *const ()) {
        // SAFETY: I2: this is the handle's last use: the strong count it
        // owns is taken back here, once, and given back when `_count` drops,
        // after the direction is released or should releasing it unwind.
        let _count = unsafe { Arc::from_raw(cell as *const CallCell<I>) };
        // SAFETY: I1, I3: the caller's promise, passed on; I2: `_count`
        // keeps the cell alive meanwhile.
        unsafe { ErasedDirection::<M>::release(Self::view(cell)) }
    }
}

impl<M> DirectionHandle<M> {
    /// The call's context.
    #[inline]
    pub(crate) fn context(&self) -> &CallContext {
        self.cell.context()
    }

    /// The wrapper of `direction` has yielded its last item.
    #[inline]
    pub(crate) fn is_done(&self, direction: Direction) -> bool {
        self.context().flags.load(Ordering::Relaxed) & flag::done(direction) != 0
    }

    /// Runs the message hooks of `direction` (the handle's); counts the
    /// message when it passes. An error is the direction's last item (so are
    /// `poll_interrupt`'s and `end`'s).
    ///
    /// While the interceptors let the direction's next messages pass unseen
    /// (and no flag asks anything of the message), the message is counted
    /// here, inlined into the wrapper, instead of through the vtable.
    #[inline(always)]
    pub(crate) fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
        msg: &M,
        direction: Direction,
    ) -> Poll<Result<(), Status>>
    where
        M: prost::Message,
    {
        if self.passed_unseen(msg, direction) {
            return Poll::Ready(Ok(()));
        }
        self.poll_hooks(cx, msg)
    }

    /// The fast path of [`poll_message`](Self::poll_message), for a
    /// wrapper to branch on: `true` if the message passed unseen, counted;
    /// `false` if it must go through [`poll_hooks`](Self::poll_hooks).
    ///
    /// It passes unseen while the interceptors allow it (the context's
    /// `unseen` count for the direction, which it takes one from), while it
    /// is at most [`UNSEEN_MAX_LEN`](super::UNSEEN_MAX_LEN) bytes, and while
    /// neither `TERMINATED` nor the direction's `INTERRUPT_*` is set.
    #[inline(always)]
    pub(crate) fn passed_unseen(&mut self, msg: &M, direction: Direction) -> bool
    where
        M: prost::Message,
    {
        let ctx = self.context();
        // mutants: `|` into `^` is equivalent because the two bits are
        // distinct (`.cargo/mutants.toml`).
        if ctx.flags.load(Ordering::Relaxed) & (flag::TERMINATED | flag::interrupt(direction)) != 0 {
            return false;
        }
        let unseen = ctx.unseen(direction);
        let allowed = unseen.load(Ordering::Relaxed);
        if allowed == 0 {
            return false;
        }
        let len = msg.encoded_len();
        // mutants: `>` into `>=` is equivalent because a message of exactly
        // `UNSEEN_MAX_LEN` bytes seen keeps what the interceptors allowed
        // ("at most") true all the same (`.cargo/mutants.toml`).
        if len > super::UNSEEN_MAX_LEN {
            return false;
        }
        unseen.store(allowed - 1, Ordering::Relaxed);
        let counters = ctx.counters(direction);
        let (messages, bytes) = (counters.messages.load(Ordering::Relaxed), counters.bytes.load(Ordering::Relaxed));
        counters.record(messages, bytes, len);
        true
    }

    /// [`poll_message`](Self::poll_message) through the vtable.
    #[inline]
    pub(crate) fn poll_hooks(&mut self, cx: &mut Context<'_>, msg: &M) -> Poll<Result<(), Status>> {
        // SAFETY: I1, I3: `self` is this direction's one handle, borrowed
        // `&mut`, and its pointer and vtable were made together, for `M`.
        unsafe { (self.vtable.poll_message)(self.cell.as_ptr(), cx, NonNull::from(msg).cast()) }
    }

    /// Polled while the direction waits: the call was ended by the other
    /// direction, or one of the interceptors' timers fired.
    pub(crate) fn poll_interrupt(&mut self, cx: &mut Context<'_>) -> Poll<Status> {
        // SAFETY: I1, I3, as in `poll_message`.
        unsafe { (self.vtable.poll_interrupt)(self.cell.as_ptr(), cx) }
    }

    /// The direction ended with `result`; for the outbound direction this ends
    /// the call. Returns the error the stream should yield last, if any.
    pub(crate) fn end(&mut self, result: Result<(), Status>) -> Option<Status> {
        // SAFETY: I1, I3, as in `poll_message`.
        unsafe { (self.vtable.end)(self.cell.as_ptr(), result) }
    }
}

impl<M> Drop for DirectionHandle<M> {
    fn drop(&mut self) {
        // SAFETY: I1, I3, as in `poll_message`; I2: this is the handle's last
        // use, which gives its strong count back.
        unsafe { (self.vtable.release)(self.cell.as_ptr()) }
    }
}
