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
    ///
    /// # Safety
    /// `cell_ptr` is a handle's pointer to the cell (from `Arc::into_raw`), still holding its count.
    pub(super) unsafe fn call_waker(cell_ptr: *const ()) -> Waker {
        // SAFETY: the caller's promise; `ManuallyDrop` leaves the count as it is.
        let arc = ManuallyDrop::new(unsafe { Arc::from_raw(cell_ptr as *const Self) });
        let weak = Weak::into_raw(Arc::downgrade(&arc));
        // SAFETY: the vtable's functions treat the pointer as the `Weak`
        // it is.
        unsafe { Waker::from_raw(RawWaker::new(weak as *const (), waker_vtable::<I>())) }
    }
}

fn waker_vtable<I: Interceptor>() -> &'static RawWakerVTable {
    &RawWakerVTable::new(clone_waker::<I>, wake_waker::<I>, wake_waker_by_ref::<I>, drop_waker::<I>)
}

unsafe fn clone_waker<I: Interceptor>(ptr: *const ()) -> RawWaker {
    // SAFETY: `ptr` is a `Weak<CallCell<I>>` made by `call_waker`.
    let weak = ManuallyDrop::new(unsafe { Weak::from_raw(ptr as *const CallCell<I>) });
    RawWaker::new(Weak::into_raw(Weak::clone(&weak)) as *const (), waker_vtable::<I>())
}

unsafe fn wake_waker<I: Interceptor>(ptr: *const ()) {
    // SAFETY: as in `clone_waker`; this consumes the waker's `Weak`.
    unsafe {
        wake_waker_by_ref::<I>(ptr);
        drop_waker::<I>(ptr);
    }
}

unsafe fn wake_waker_by_ref<I: Interceptor>(ptr: *const ()) {
    // SAFETY: as in `clone_waker`.
    let weak = ManuallyDrop::new(unsafe { Weak::from_raw(ptr as *const CallCell<I>) });
    if let Some(call) = weak.upgrade() {
        call.ctx.interrupt();
    }
}

unsafe fn drop_waker<I: Interceptor>(ptr: *const ()) {
    // SAFETY: as in `clone_waker`; this drops the waker's `Weak`.
    drop(unsafe { Weak::from_raw(ptr as *const CallCell<I>) });
}
