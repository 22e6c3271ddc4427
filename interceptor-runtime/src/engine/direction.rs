//! [`DirectionView`]: the call seen from one direction, what a
//! [`DirectionHandle`](super::DirectionHandle)'s vtable calls; the
//! per-message path.

use std::{
    mem::ManuallyDrop,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
};

use tonic::Status;

use super::{flag, panic, CallCell};
use crate::interceptor::{Direction, Interceptor, MessageRef};

/// The call's cell seen from one direction (`OUT`: the outbound one); a
/// [`DirectionHandle`](super::DirectionHandle)'s vtable calls it.
#[repr(transparent)]
pub(super) struct DirectionView<I: Interceptor, const OUT: bool>(CallCell<I>);

impl<I: Interceptor, const OUT: bool> DirectionView<I, OUT> {
    /// `cell`, seen from direction `OUT`.
    pub(super) fn of(cell: &CallCell<I>) -> &Self {
        // SAFETY: I4: `DirectionView` is a `repr(transparent)` view of the
        // cell.
        unsafe { &*(cell as *const CallCell<I> as *const Self) }
    }
}

/// What a [`DirectionHandle`](super::DirectionHandle)'s vtable calls.
///
/// # Safety
/// Every method with `unsafe` touches the direction's state: only the
/// direction's one `DirectionHandle` calls them, through `&mut self` (I1),
/// with its own pointer as `cell_ptr` (I2).
pub(super) trait ErasedDirection<M> {
    /// `cell_ptr`: the handle's pointer to the cell, for the call's waker.
    unsafe fn poll_message(&self, cell_ptr: *const (), cx: &mut Context<'_>, msg: &M) -> Poll<Result<(), Status>>;
    unsafe fn poll_interrupt(&self, cell_ptr: *const (), cx: &mut Context<'_>) -> Poll<Status>;
    unsafe fn end(&self, cell_ptr: *const (), result: Result<(), Status>) -> Option<Status>;
    unsafe fn release(&self);
}

// The per-message path below keeps to what every message does; each way out
// of it (a flag set, a rejection, a wait) is out of line, so that it stays
// small.
impl<I: Interceptor, const OUT: bool> DirectionView<I, OUT> {
    const DIRECTION: Direction = if OUT { Direction::Outbound } else { Direction::Inbound };
    const INTERRUPT: u8 = if OUT { flag::INTERRUPT_OUT } else { flag::INTERRUPT_IN };

    /// This direction's state.
    ///
    /// # Safety
    /// Only by the direction's owner (I1), and the `&mut` returned is gone
    /// before the owner asks again.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    unsafe fn state(&self) -> &mut Option<I::Stream> {
        // SAFETY: I1: the caller owns the direction, so nothing else reads
        // or writes its state while this `&mut` lives.
        unsafe { &mut *self.0.direction_state(Self::DIRECTION).0.get() }
    }

    /// This direction ends with `status`: its state goes, and its wrapper
    /// yields nothing after `status`.
    #[cold]
    fn close(&self, state: &mut Option<I::Stream>, status: Status) -> Status {
        self.give_back_unseen(state);
        *state = None;
        self.0.ctx.flags.fetch_or(flag::done(Self::DIRECTION), Ordering::Relaxed);
        status
    }

    /// Gives the interceptors back the messages they let pass unseen and
    /// that did not come: before they see a message, and before the state
    /// goes (a `rate` returns the permits to its shared limiter).
    #[inline]
    fn give_back_unseen(&self, state: &mut Option<I::Stream>) {
        let unseen = self.0.ctx.unseen(Self::DIRECTION);
        let left = unseen.load(Ordering::Relaxed);
        if left != 0 {
            unseen.store(0, Ordering::Relaxed);
            if let Some(stream) = state.as_mut() {
                self.0.method().interceptors.__spend_unseen(stream, -i64::from(left));
            }
        }
    }

    /// An interceptor rejected: the whole call ends with `status`.
    #[cold]
    #[inline(never)]
    fn reject(&self, state: &mut Option<I::Stream>, status: Status) -> Status {
        let ctx = &self.0.ctx;
        ctx.mark_ended_by(self.0.method().interceptors.name());
        ctx.terminate(&status);
        self.close(state, status)
    }

    /// The status a direction that has already ended reports.
    #[cold]
    fn ended_status(&self) -> Status {
        let ctx = &self.0.ctx;
        ctx.terminal_status().cloned().unwrap_or_else(|| ctx.gone_status())
    }

    /// A hook panicked: the whole call ends with INTERNAL, as if the
    /// interceptor had rejected.
    #[cold]
    #[inline(never)]
    fn hook_panicked(
        &self,
        state: &mut Option<I::Stream>,
        hook: &'static str,
        payload: Box<dyn std::any::Any + Send>,
    ) -> Status {
        let (ctx, interceptors) = (&self.0.ctx, &self.0.method().interceptors);
        let status = match (hook, state.as_ref()) {
            // The message hooks leave no blame in the context: the state
            // tells which interceptor had the message.
            ("poll_message" | "on_delivered", Some(stream)) => {
                let owner = panic::catch(|| interceptors.__message_hook_owner(stream, hook))
                    .unwrap_or_else(|_| panic::name_of(interceptors));
                panic::caught_in(ctx, owner, hook, payload)
            }
            _ => panic::caught_in_hook(ctx, interceptors, hook, payload),
        };
        self.reject(state, status)
    }

    /// The `Arc` of the cell behind a handle's pointer, for what must hold
    /// the call (its waker, the layer's tap), borrowed: the handle's count
    /// stays the handle's.
    ///
    /// # Safety
    /// `cell_ptr` is this direction's handle's pointer (I2).
    unsafe fn arc(cell_ptr: *const ()) -> ManuallyDrop<Arc<CallCell<I>>> {
        // SAFETY: I2: the caller's promise: `cell_ptr` comes from
        // `Arc::into_raw` and holds the handle's count, which `ManuallyDrop`
        // leaves as it is.
        ManuallyDrop::new(unsafe { Arc::from_raw(cell_ptr as *const CallCell<I>) })
    }

    /// A flag is set (the call ended, or a timer fired, or this direction
    /// has not polled the timers yet): deals with it before the message.
    ///
    /// # Safety
    /// `cell_ptr` is this direction's handle's pointer (I2).
    #[cold]
    #[inline(never)]
    unsafe fn attend(&self, cell_ptr: *const (), state: &mut Option<I::Stream>) -> Option<Status> {
        let ctx = &self.0.ctx;
        if let Some(status) = ctx.terminal_status() {
            return Some(self.close(state, status.clone()));
        }
        // SAFETY: I2: the caller's promise, passed on.
        let cell = unsafe { Self::arc(cell_ptr) };
        match self.interrupt(&cell, state) {
            Poll::Ready(status) => Some(status),
            Poll::Pending => None,
        }
    }

    /// Polls the interceptors' timers with the call's waker; `arc` is the
    /// `Arc` of this view's cell.
    pub(super) fn interrupt(&self, arc: &Arc<CallCell<I>>, state: &mut Option<I::Stream>) -> Poll<Status> {
        let cell = &self.0;
        // Cleared only when set: a direction whose stream has nothing ready
        // comes here each time, and a read leaves the line shared.
        if cell.ctx.flags.load(Ordering::Acquire) & Self::INTERRUPT != 0 {
            cell.ctx.flags.fetch_and(!Self::INTERRUPT, Ordering::AcqRel);
        }
        let Some(stream) = state.as_mut() else { return Poll::Ready(self.close(state, self.ended_status())) };
        let interceptors = &cell.method().interceptors;
        let polled = CallCell::with_call_waker(arc, |waker| {
            let mut cx = Context::from_waker(waker);
            panic::catch(|| interceptors.poll_interrupt(&cell.call_state, stream, &cell.ctx, &mut cx))
        });
        match polled {
            Ok(Poll::Ready(status)) => Poll::Ready(self.reject(state, status)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(self.hook_panicked(state, "poll_interrupt", payload)),
        }
    }

    /// An interceptor holds the message back (a `rate` waits for a permit):
    /// the direction is quiet, as one that finds no message ready is, so it
    /// polls the interceptors' timers too (a `monitor` publishes its counts,
    /// a `budget`'s idle timer restarts), then waits, unless the call was
    /// ended meanwhile.
    ///
    /// # Safety
    /// `cell_ptr` is this direction's handle's pointer (I2).
    #[inline(never)]
    unsafe fn held_back(
        &self,
        cell_ptr: *const (),
        state: &mut Option<I::Stream>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Status>> {
        // Registered first, as in `poll_interrupt`: an end or a timer from
        // now on wakes it, and `attend` sees any that came before. (A timer
        // that fired between `attend` and a registration after it would
        // wake no one: the loom model found it.)
        self.0.ctx.register(Self::DIRECTION, cx.waker());
        // SAFETY: I2: the caller's promise, passed on.
        match unsafe { self.attend(cell_ptr, state) } {
            Some(status) => Poll::Ready(Err(status)),
            None => Poll::Pending,
        }
    }
}

impl<I: Interceptor, const OUT: bool> DirectionView<I, OUT> {
    /// A flag is set, or the direction has no state: `poll_message` out of
    /// line, so that the fast path saves no register for it and ends in a
    /// jump here (its arguments in the registers the vtable's function got
    /// them in: the view is the cell, at the handle's pointer).
    ///
    /// # Safety
    /// As `poll_message`'s: `cell_ptr` is this direction's handle's pointer
    /// (I2), to a `CallCell<I>` (I3).
    #[cold]
    #[inline(never)]
    unsafe fn poll_message_attending<M: prost::Message + 'static>(
        cell_ptr: *const (),
        cx: &mut Context<'_>,
        msg: &M,
    ) -> Poll<Result<(), Status>> {
        // SAFETY: I2, I3: the caller's promise: a live `CallCell<I>`; I4:
        // the view is a transparent view of it.
        let this = unsafe { &*(cell_ptr as *const Self) };
        // SAFETY: I1: the caller is the direction's one handle, `&mut`.
        let state = unsafe { this.state() };
        if this.0.ctx.flags.load(Ordering::Relaxed) & (flag::TERMINATED | Self::INTERRUPT) != 0 {
            // SAFETY: I2: the caller's promise, passed on.
            if let Some(status) = unsafe { this.attend(cell_ptr, state) } {
                return Poll::Ready(Err(status));
            }
        }
        // SAFETY: I1, I2: the caller's promise, passed on.
        unsafe { this.run_hooks(cell_ptr, state, cx, msg) }
    }

    /// The message hooks on `msg`, then its count.
    ///
    /// # Safety
    /// As `poll_message`'s; `state` is this direction's.
    #[inline(always)]
    unsafe fn run_hooks<M: prost::Message + 'static>(
        &self,
        cell_ptr: *const (),
        state: &mut Option<I::Stream>,
        cx: &mut Context<'_>,
        msg: &M,
    ) -> Poll<Result<(), Status>> {
        let cell = &self.0;
        let ctx = &cell.ctx;
        self.give_back_unseen(state);
        let Some(stream) = state.as_mut() else { return Poll::Ready(Err(self.close(state, self.ended_status()))) };
        let counters = ctx.counters(Self::DIRECTION);
        let view = MessageRef {
            ctx,
            direction: Self::DIRECTION,
            message: msg,
            encoded_len: msg.encoded_len(),
            index: counters.messages.load(Ordering::Relaxed),
            bytes_before: counters.bytes.load(Ordering::Relaxed),
        };
        let interceptors = &cell.method().interceptors;
        // A panic in a hook is caught (costing nothing until it happens) and
        // ends the call; the message is not delivered.
        match panic::catch(|| interceptors.poll_message(&cell.call_state, stream, cx, &view)) {
            Ok(Poll::Ready(Ok(()))) => {
                // Then, how many of the next messages may pass unseen (one
                // at most `u16::MAX` at a time), taken from the interceptors.
                let delivered = || {
                    interceptors.on_delivered(&cell.call_state, stream, &view);
                    let next = (view.index + 1, view.bytes_before + view.encoded_len as u64);
                    let unseen = interceptors.__unseen_allowance(&cell.call_state, stream, next.0, next.1);
                    let unseen = u16::try_from(unseen).unwrap_or(u16::MAX);
                    if unseen != 0 {
                        interceptors.__spend_unseen(stream, i64::from(unseen));
                    }
                    unseen
                };
                match panic::catch(delivered) {
                    Ok(unseen) => ctx.unseen(Self::DIRECTION).store(unseen, Ordering::Relaxed),
                    Err(payload) => return Poll::Ready(Err(self.hook_panicked(state, "on_delivered", payload))),
                }
                counters.record(view.index, view.bytes_before, view.encoded_len);
                Poll::Ready(Ok(()))
            }
            Ok(Poll::Ready(Err(status))) => Poll::Ready(Err(self.reject(state, status))),
            // SAFETY: I2: the caller's promise, passed on.
            Ok(Poll::Pending) => unsafe { self.held_back(cell_ptr, state, cx) },
            Err(payload) => Poll::Ready(Err(self.hook_panicked(state, "poll_message", payload))),
        }
    }
}

impl<I: Interceptor, const OUT: bool, M: prost::Message + 'static> ErasedDirection<M> for DirectionView<I, OUT> {
    #[inline]
    unsafe fn poll_message(&self, cell_ptr: *const (), cx: &mut Context<'_>, msg: &M) -> Poll<Result<(), Status>> {
        // SAFETY: I1: the caller is the direction's one handle, `&mut`.
        let state = unsafe { self.state() };
        if self.0.ctx.flags.load(Ordering::Relaxed) & (flag::TERMINATED | Self::INTERRUPT) != 0 || state.is_none() {
            // `state` is not used again: the function asks for its own.
            // SAFETY: I1, I2: the caller's promise, passed on.
            return unsafe { Self::poll_message_attending(cell_ptr, cx, msg) };
        }
        // SAFETY: I1, I2: the caller's promise, passed on.
        unsafe { self.run_hooks(cell_ptr, state, cx, msg) }
    }

    unsafe fn poll_interrupt(&self, cell_ptr: *const (), cx: &mut Context<'_>) -> Poll<Status> {
        let ctx = &self.0.ctx;
        // SAFETY: I1: the caller is the direction's one handle, `&mut`.
        let state = unsafe { self.state() };
        // Registered first, so that an end or a timer from now on wakes it.
        ctx.register(Self::DIRECTION, cx.waker());
        // SAFETY: I2: the caller's promise, passed on.
        match unsafe { self.attend(cell_ptr, state) } {
            Some(status) => Poll::Ready(status),
            None => Poll::Pending,
        }
    }

    unsafe fn end(&self, cell_ptr: *const (), result: Result<(), Status>) -> Option<Status> {
        // SAFETY: I1: the caller is the direction's one handle, `&mut`.
        let mut state = unsafe { self.state() }.take();
        self.give_back_unseen(&mut state);
        let ctx = &self.0.ctx;
        let flags = ctx.flags.fetch_or(flag::done(Self::DIRECTION), Ordering::Relaxed);
        let last = if OUT && flags & flag::OWNS_END != 0 {
            // SAFETY: I2: the caller's promise, passed on.
            let cell = unsafe { Self::arc(cell_ptr) };
            cell.complete(result).err()
        } else {
            match ctx.terminal_status() {
                Some(status) => Some(status.clone()),
                None => result.err(),
            }
        };
        // Dropped once the call's end is settled: should the interceptors'
        // state panic in its drop, the call is ended all the same.
        drop(state);
        last
    }

    unsafe fn release(&self) {
        // SAFETY: I1: the caller is the direction's one handle, `&mut`.
        let mut state = unsafe { self.state() }.take();
        self.give_back_unseen(&mut state);
        let ctx = &self.0.ctx;
        let flags = ctx.flags.fetch_or(flag::done(Self::DIRECTION), Ordering::Relaxed);
        if OUT && flags & flag::OWNS_END != 0 && flags & flag::DONE_OUT == 0 {
            let _ = self.0.finalize(Err(ctx.gone_status()));
        }
        drop(state);
    }
}
