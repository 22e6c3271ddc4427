//! The call's waker: what `Interceptor::poll_interrupt` gets, so that a
//! timer wakes the whole call, both directions, holding the call weakly.

use std::{
    mem::ManuallyDrop,
    sync::{Arc, Weak},
    task::{RawWaker, RawWakerVTable, Waker},
};

use super::CallCell;
use crate::interceptor::Interceptor;

impl<I: Interceptor> CallCell<I> {
    /// A waker for the whole call, handed to `poll_interrupt`: a timer an
    /// interceptor registers with it sets both directions' interrupt flags
    /// and wakes whichever waits. It holds the call weakly, so a timer kept
    /// in the call's own state does not keep the call alive.
    pub(super) fn call_waker(cell: &Arc<Self>) -> Waker
    where
        Self: Send + Sync,
    {
        let weak = Weak::into_raw(Arc::downgrade(cell));
        // SAFETY: I6: the data is a `Weak<CallCell<I>>` with its weak count,
        // and the vtable is this `I`'s; I7: that `Weak` may be sent and
        // shared between threads, as a `Waker` is (the cell is `Send + Sync`).
        unsafe { Waker::from_raw(RawWaker::new(weak as *const (), waker_vtable::<I>())) }
    }
}

/// The waker's vtable for `I`: a constant, promoted to `'static`.
fn waker_vtable<I: Interceptor>() -> &'static RawWakerVTable {
    const { &RawWakerVTable::new(clone_waker::<I>, wake_waker::<I>, wake_waker_by_ref::<I>, drop_waker::<I>) }
}

unsafe fn clone_waker<I: Interceptor>(ptr: *const ()) -> RawWaker {
    // SAFETY: I6: `ptr` is a `Weak<CallCell<I>>` owning a weak count, made
    // by `call_waker` or here; `ManuallyDrop` leaves that count as it is.
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
