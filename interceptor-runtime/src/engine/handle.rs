//! [`Tap`]: a wrapper's handle on its direction of the call, type-erased
//! over the interceptors.

use std::{
    marker::PhantomData,
    ptr::NonNull,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
};

use tonic::Status;

use super::{flag, CallContext, CallState, Dir, ErasedTap};
use crate::interceptor::{Direction, Interceptor};

/// One direction of one call, as the wrappers see it: type-erased over the
/// interceptors, so that `Inbound<T>` and `Outbound<S>` can be named. It
/// points into the call's one allocation; there is one per direction.
///
/// A hand-made trait object: a thin pointer to the call's state, whose first
/// field is the [`CallContext`] (so reading the context is one load, with no
/// offset to compute from a vtable's alignment), and a vtable of the
/// direction's functions.
pub struct Tap<M> {
    /// The `CallState<I>` (its context first), holding one strong count of
    /// its `Arc`.
    pub(super) call: NonNull<CallContext>,
    pub(super) vtable: NonNull<TapVTable<M>>,
}

// SAFETY: the call's state is `Send + Sync` (see `CallState`), and the
// direction's state it reaches is touched only through this one tap, by
// `&mut self`; `&Tap` only reads the context, which is `Sync`.
unsafe impl<M> Send for Tap<M> {}
unsafe impl<M> Sync for Tap<M> {}

pub(super) struct TapVTable<M> {
    poll_message: unsafe fn(*const (), &mut Context<'_>, &M) -> Poll<Result<(), Status>>,
    poll_interrupt: unsafe fn(*const (), &mut Context<'_>) -> Poll<Status>,
    end: unsafe fn(*const (), Result<(), Status>) -> Option<Status>,
    /// Releases the direction and the tap's strong count.
    release: unsafe fn(*const ()),
}

pub(super) struct VTableOf<I, const OUT: bool, M>(PhantomData<fn() -> (I, M)>);

impl<I: Interceptor, const OUT: bool, M: prost::Message + 'static> VTableOf<I, OUT, M> {
    pub(super) const VTABLE: TapVTable<M> = TapVTable {
        poll_message: Self::poll_message,
        poll_interrupt: Self::poll_interrupt,
        end: Self::end,
        release: Self::release,
    };

    /// # Safety (all four)
    /// `call` is the pointer of a `Tap` made by `CallState::<I>::tap` for
    /// direction `OUT`, used by that tap alone.
    unsafe fn dir<'a>(call: *const ()) -> &'a Dir<I, OUT> {
        unsafe { &*(call as *const Dir<I, OUT>) }
    }
    unsafe fn poll_message(call: *const (), cx: &mut Context<'_>, msg: &M) -> Poll<Result<(), Status>> {
        unsafe { ErasedTap::<M>::poll_message(Self::dir(call), call, cx, msg) }
    }
    unsafe fn poll_interrupt(call: *const (), cx: &mut Context<'_>) -> Poll<Status> {
        unsafe { ErasedTap::<M>::poll_interrupt(Self::dir(call), call, cx) }
    }
    unsafe fn end(call: *const (), result: Result<(), Status>) -> Option<Status> {
        unsafe { ErasedTap::<M>::end(Self::dir(call), result) }
    }
    unsafe fn release(call: *const ()) {
        unsafe {
            ErasedTap::<M>::release(Self::dir(call));
            drop(Arc::from_raw(call as *const CallState<I>));
        }
    }
}

impl<M> Tap<M> {
    #[inline]
    fn vtable(&self) -> &TapVTable<M> {
        // SAFETY: a `'static` constant.
        unsafe { self.vtable.as_ref() }
    }

    /// The call.
    #[inline]
    pub(crate) fn context(&self) -> &CallContext {
        // SAFETY: the tap's strong count keeps the call's state alive.
        unsafe { self.call.as_ref() }
    }

    /// The wrapper of `direction` has yielded its last item.
    #[inline]
    pub(crate) fn is_done(&self, direction: Direction) -> bool {
        self.context().flags.load(Ordering::Relaxed) & flag::done(direction) != 0
    }

    /// Runs the message hooks; counts the message when it passes. An error
    /// is the direction's last item (so are `poll_interrupt`'s and `end`'s).
    #[inline]
    pub(crate) fn poll_message(&mut self, cx: &mut Context<'_>, msg: &M) -> Poll<Result<(), Status>> {
        // SAFETY (all four): `self` is this direction's only tap, and `&mut`.
        unsafe { (self.vtable().poll_message)(self.call.as_ptr() as *const (), cx, msg) }
    }

    /// Polled while the direction waits: the call was ended by the other
    /// direction, or one of the interceptors' timers fired.
    pub(crate) fn poll_interrupt(&mut self, cx: &mut Context<'_>) -> Poll<Status> {
        unsafe { (self.vtable().poll_interrupt)(self.call.as_ptr() as *const (), cx) }
    }

    /// The direction ended with `result`; for the outbound direction this ends
    /// the call. Returns the error the stream should yield last, if any.
    pub(crate) fn end(&mut self, result: Result<(), Status>) -> Option<Status> {
        unsafe { (self.vtable().end)(self.call.as_ptr() as *const (), result) }
    }
}

impl<M> Drop for Tap<M> {
    fn drop(&mut self) {
        // SAFETY: as above; this is the tap's last use.
        unsafe { (self.vtable().release)(self.call.as_ptr() as *const ()) }
    }
}
