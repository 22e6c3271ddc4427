//! The call's one allocation, [`CallCell`]: the context, the
//! interceptors' per-call state and each direction's state; and the ways it
//! ends.

use std::{
    cell::UnsafeCell,
    marker::PhantomData,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use tonic::Status;

use super::{flag, gone, panic, CallContext, CellPtr, DirectionHandle, HasContext, Method, VTableOf};
use crate::{
    interceptor::{Direction, Interceptor},
    transport::Deferred,
};

/// Calls whose cell is alive; see [`crate::stats::live_calls`].
pub(crate) static LIVE_CALLS: AtomicUsize = AtomicUsize::new(0);

/// Everything one call keeps, in one allocation: the context, the
/// interceptors' per-call state and each direction's state.
///
/// Each direction's state is touched only by that direction's one
/// [`DirectionHandle`] (made once, by the [`CallGuard`](super::CallGuard),
/// which hands out at most one per direction), so it needs no lock. What the
/// two directions write per message is kept apart: the inbound counters open
/// the context, the outbound counters close it, the outbound state follows
/// them and the inbound state comes last, after the per-call state. The
/// context is first, so that a [`DirectionHandle`] reaches it without a
/// virtual call.
#[repr(C)]
pub(super) struct CallCell<I: Interceptor> {
    pub(super) ctx: CallContext,
    pub(super) outbound: DirectionState<I::Stream>,
    pub(super) call_state: I::Call,
    pub(super) inbound: DirectionState<I::Stream>,
}

/// The interceptors' state of one direction of one call; dropped as soon as
/// the direction ends, so that nothing it holds (a waiter in a shared
/// limiter, say) outlives the stream's end.
pub(super) struct DirectionState<S>(pub(super) UnsafeCell<Option<S>>);

// SAFETY: I1, I7: only the direction's one owner reads or writes the state,
// one at a time, as if it held a mutex's lock; the owner may be on any
// thread, hence `S: Send` (`Interceptor` requires it of `I::Stream`). With
// this, a `CallCell<I>` is `Sync` by its fields.
unsafe impl<S: Send> Sync for DirectionState<S> {}

impl<S> DirectionState<S> {
    pub(super) fn new() -> Self {
        DirectionState(UnsafeCell::new(None))
    }
}

impl<I: Interceptor> HasContext for CallCell<I> {
    fn context(&self) -> &CallContext {
        &self.ctx
    }
}

impl<I: Interceptor> CallCell<I> {
    /// The method's interceptors.
    #[inline]
    pub(super) fn method(&self) -> &'static Method<I> {
        // SAFETY: I5: `Method::start` made the context from the whole
        // `&'static Method<I>` that started this call, this cell's `I`.
        unsafe { self.ctx.method.method::<I>() }
    }

    /// Ends the call; the first caller wins. An interceptor's terminal status
    /// takes precedence over what the handler or stream reported.
    ///
    /// The interceptors' `on_end` runs here, exactly once; a panic in it is
    /// caught and logged (a `Chain` catches each link's, so that the others
    /// still run), and the call ends all the same.
    pub(super) fn finalize(&self, result: Result<(), Status>) -> Result<(), Status> {
        let result = match self.ctx.terminal_status() {
            Some(status) => Err(status.clone()),
            None => result,
        };
        if let Err(status) = &result {
            // Wakes a direction that waits (in a limiter, say) so it ends now.
            self.ctx.terminate(status);
        }
        if self.ctx.set_outcome(&result) {
            let interceptors = &self.method().interceptors;
            if let Err(payload) = panic::catch(|| interceptors.on_end(&self.call_state, &self.ctx)) {
                let _ = panic::caught_in_hook(&self.ctx, interceptors, "on_end", payload);
            }
        }
        result
    }

    /// The server's side of the call is done with `result`: the handler's
    /// unary response passed, or its response stream ended. An OK is final
    /// once the response's end has been handed to HTTP/2, when
    /// [`InterceptLayer`](crate::InterceptLayer) watches the call: until then
    /// the layer's tap holds the call, and a response dropped first ends it
    /// CANCELLED. Anything else, or without the layer, ends the call now.
    pub(super) fn complete(self: &Arc<Self>, result: Result<(), Status>) -> Result<(), Status> {
        if let (Ok(()), None, Some(tap)) = (&result, self.ctx.terminal_status(), self.ctx.tap()) {
            return match tap.hold_until_sent(self.clone()) {
                None => Ok(()),
                Some(result) => self.finalize(result),
            };
        }
        self.finalize(result)
    }

    /// Makes the one [`DirectionHandle`] of `direction`.
    ///
    /// # Safety
    /// The caller owns `direction` (I1) and hands its ownership to the
    /// handle: at most once per direction and call.
    pub(super) unsafe fn handle<M: prost::Message + 'static>(
        self: &Arc<Self>,
        direction: Direction,
        owns_end: bool,
    ) -> DirectionHandle<M> {
        // SAFETY: I1: the caller owns the direction until it returns. The
        // outbound state may exist already: made while the handler ran (see
        // `CallGuard::run`).
        unsafe { self.state_of(direction) };
        if owns_end {
            self.ctx.flags.fetch_or(flag::OWNS_END, Ordering::Relaxed);
        }
        // I2: the handle holds one strong count, given back by its
        // `release`. I3: the vtable below is this `I`'s, for this direction.
        let cell = CellPtr::new(self.clone());
        let vtable = match direction {
            Direction::Inbound => VTableOf::<I, false, M>::VTABLE,
            Direction::Outbound => VTableOf::<I, true, M>::VTABLE,
        };
        DirectionHandle { cell, vtable, message: PhantomData }
    }

    /// The state of `direction`, made by `on_stream` if it does not exist
    /// yet.
    ///
    /// # Safety
    /// Only by the direction's owner (I1), and the `&mut` returned is gone
    /// before the owner asks again.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn state_of(&self, direction: Direction) -> &mut Option<I::Stream> {
        // SAFETY: I1: the caller owns the direction, so nothing else reads
        // or writes its state while this `&mut` lives.
        let state = unsafe { &mut *self.direction_state(direction).0.get() };
        // A call already over starts no direction: its wrapper yields the
        // terminal status.
        if state.is_none() && self.ctx.terminal_status().is_none() {
            let interceptors = &self.method().interceptors;
            match panic::catch(|| interceptors.on_stream(&self.call_state, &self.ctx, direction)) {
                Ok(made) => *state = Some(made),
                // The direction has no state: its wrapper yields the
                // terminal status, and the call ends with it.
                Err(payload) => {
                    self.ctx.terminate(&panic::caught_in_hook(&self.ctx, interceptors, "on_stream", payload))
                }
            }
        }
        state
    }

    /// Where `direction` keeps its state.
    pub(super) fn direction_state(&self, direction: Direction) -> &DirectionState<I::Stream> {
        match direction {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        }
    }
}

/// What the layer's tap holds of a call whose OK waits for its response's
/// end.
impl<I: Interceptor> Deferred for CallCell<I> {
    fn finish(&self, result: Result<(), Status>) {
        let _ = self.finalize(result);
    }
}

impl<I: Interceptor> Drop for CallCell<I> {
    fn drop(&mut self) {
        LIVE_CALLS.fetch_sub(1, Ordering::Relaxed);
        // Every path finalizes before this; this is the backstop.
        let _ = self.finalize(Err(gone()));
    }
}
