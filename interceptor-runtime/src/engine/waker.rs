//! The call's waker: what `Interceptor::poll_interrupt` gets, so that a
//! timer wakes the whole call, both directions, holding the call weakly.
//! The waker lent to the hook is borrowed; its clones own a weak count each.

use std::{
    mem::ManuallyDrop,
    sync::{Arc, Weak},
    task::{RawWaker, RawWakerVTable, Waker},
};

use super::CallCell;
use crate::interceptor::Interceptor;

impl<I: Interceptor> CallCell<I> {
    /// Runs `f` with a waker for the whole call, handed to `poll_interrupt`:
    /// a timer an interceptor registers with it sets both directions'
    /// interrupt flags and wakes whichever waits. What the timer keeps is a
    /// clone, which holds the call weakly, so a timer kept in the call's own
    /// state does not keep the call alive.
    ///
    /// The waker lent to `f` is borrowed (I6): it owns no count, so lending
    /// it writes nothing to the `Arc`'s counts, which share a cache line
    /// with the inbound counters. A direction polls the timers each time its
    /// stream has nothing ready, so with the two directions on two cores
    /// each count taken and given back here had to move that line.
    pub(super) fn with_call_waker<R>(cell: &Arc<Self>, f: impl FnOnce(&Waker) -> R) -> R
    where
        Self: Send + Sync,
    {
        // Borrowed: `cell` keeps the allocation alive while `f` runs, and the
        // waker is never dropped, so it gives back no count it does not own;
        // a clone takes a weak count of its own. It stands for a
        // `Weak<CallCell<I>>`, which may go to other threads, as a `Waker` does.
        let data = Arc::as_ptr(cell) as *const ();
        // SAFETY: I6 (a borrowed call waker, `ManuallyDrop`), I7 (a `Send + Sync` cell).
        let waker = ManuallyDrop::new(unsafe { Waker::from_raw(RawWaker::new(data, waker_vtable::<I>())) });
        f(&waker)
    }
}

/// The waker's vtable for `I`: a constant, promoted to `'static`.
fn waker_vtable<I: Interceptor>() -> &'static RawWakerVTable {
    const { &RawWakerVTable::new(clone_waker::<I>, wake_waker::<I>, wake_waker_by_ref::<I>, drop_waker::<I>) }
}

unsafe fn clone_waker<I: Interceptor>(ptr: *const ()) -> RawWaker {
    // `ptr` is the data of a call waker, owned or borrowed: the pointer of a
    // live allocation of a `CallCell<I>`, the one address `Weak::into_raw`
    // and `Arc::as_ptr` give for it (`CallCell<I>` is sized). The `Weak` read
    // from it is never dropped, so it gives back no count, whether the waker
    // owns one or borrows; the clone owns the weak count it adds.
    // SAFETY: I6, as above (`ManuallyDrop`: no count given back).
    let weak = ManuallyDrop::new(unsafe { Weak::from_raw(ptr as *const CallCell<I>) });
    RawWaker::new(Weak::into_raw(Weak::clone(&weak)) as *const (), waker_vtable::<I>())
}

unsafe fn wake_waker<I: Interceptor>(ptr: *const ()) {
    // SAFETY: I6: as in `clone_waker`; `wake` consumes the waker, so its
    // weak count goes back after the wake.
    unsafe {
        wake_waker_by_ref::<I>(ptr);
        drop_waker::<I>(ptr);
    }
}

unsafe fn wake_waker_by_ref<I: Interceptor>(ptr: *const ()) {
    // SAFETY: I6: as in `clone_waker`.
    let weak = ManuallyDrop::new(unsafe { Weak::from_raw(ptr as *const CallCell<I>) });
    if let Some(call) = weak.upgrade() {
        call.ctx.interrupt();
    }
}

unsafe fn drop_waker<I: Interceptor>(ptr: *const ()) {
    // SAFETY: I6: as in `clone_waker`; the waker is dropped, and its weak
    // count goes back.
    drop(unsafe { Weak::from_raw(ptr as *const CallCell<I>) });
}
