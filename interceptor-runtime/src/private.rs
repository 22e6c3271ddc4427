//! What `#[intercept]` expands to calls into this module; it is not a public
//! API and may change in any release.
//!
//! One intercepted handler does, in order:
//! ```text
//! static SLOT                      // the method's interceptors, built on first call
//! let call = SLOT.start(&mut request)?        // on_start hooks; may reject
//! let request = call.inbound(request)         // streaming: Streaming<T> -> Inbound<T>
//!            |  call.recv_unary(request).await   // unary: the message hooks run now
//! let result = call.run(async move { <handler body> }).await;   // the timers beside it
//! call.finish_stream(result)                  // streaming: S -> Outbound<S>
//!     | call.finish_unary(result).await       // unary: the message hooks run now
//! ```
//! The call is finalized exactly once: by `finish_unary`, by the outbound
//! stream when it ends or is dropped, or, if the handler future is dropped
//! first (the client went away), by `Call`'s destructor with CANCELLED.

use std::{
    any::{Any, TypeId},
    cell::UnsafeCell,
    collections::HashMap,
    future::{poll_fn, Future},
    marker::PhantomData,
    mem::ManuallyDrop,
    pin::Pin,
    ptr::NonNull,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, OnceLock, Weak,
    },
    task::{Context, Poll, RawWaker, RawWakerVTable, Waker},
};

use tonic::{Request, Response, Status, Streaming};

#[cfg(feature = "budget")]
pub use crate::budget::{Budget, BudgetConfig};
pub use crate::call::{MethodInfo, RpcKind};
pub use crate::dispatch::{
    in_shape, kind, out_shape, prelude, reply_probe, request_probe, with, HandlerRequest, HandlerResult,
};
pub use crate::interceptor::Chain;
#[cfg(feature = "monitor")]
pub use crate::monitor::{Monitor, MonitorConfig};
pub use crate::options::{duration, int, size, with_per_call, BadOption, Methods};
#[cfg(feature = "rate")]
pub use crate::rate::{OnExceed, Rate, RateConfig, RateScope};
use crate::{
    call::{flag, CallContext, CallHandle, CallRef, HasContext},
    inbound::Inbound,
    interceptor::{Direction, Interceptor, MessageRef},
    outbound::OutboundStream,
};
pub use std::time::Duration;

/// Checks, where the user wrote `with = expr`, that `expr` is an interceptor.
#[inline]
pub fn interceptor<I: Interceptor>(interceptor: I) -> I {
    interceptor
}

/// `my_crate::Guide<T>` → `"Guide"`: the service name used when the attribute
/// sits on a single method and no `service = ..` is given.
pub fn type_name_of<T: ?Sized>() -> &'static str {
    let name = std::any::type_name::<T>();
    let name = name.split('<').next().unwrap_or(name);
    name.rsplit("::").next().unwrap_or(name)
}

/// Calls whose state is alive; see [`crate::stats::live_calls`].
pub(crate) static LIVE_CALLS: AtomicUsize = AtomicUsize::new(0);

/// The interceptors of one method, built once.
// `repr(C)`, `info` first: a call finds its `Method` from `CallContext::method`.
#[repr(C)]
pub struct Method<I> {
    info: MethodInfo,
    interceptors: I,
}

/// Where a handler keeps its [`Method`]: one `static` per intercepted handler.
pub struct Slot(OnceLock<Box<dyn Any + Send + Sync>>);

impl Slot {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Slot(OnceLock::new())
    }

    /// The method's interceptors, built by `build` on the first call.
    pub fn get_or_init<I: Interceptor>(
        &'static self,
        info: impl FnOnce() -> MethodInfo,
        build: impl FnOnce() -> I,
    ) -> &'static Method<I> {
        let mut parts = Some((info, build));
        let method = self.0.get_or_init(|| {
            let (info, build) = parts.take().expect("taken once");
            Box::new(Method { info: info(), interceptors: build() })
        });
        match (method.downcast_ref::<Method<I>>(), parts) {
            (Some(method), _) => method,
            // A handler in a generic impl whose interceptors' type depends on
            // the impl's parameters: one static serves several types.
            (None, Some((info, build))) => shared_by_type(self, info, build),
            (None, None) => unreachable!("the slot was just filled with a `Method<I>`"),
        }
    }
}

fn shared_by_type<I: Interceptor>(
    slot: &'static Slot,
    info: impl FnOnce() -> MethodInfo,
    build: impl FnOnce() -> I,
) -> &'static Method<I> {
    type Key = (usize, TypeId);
    static BY_TYPE: OnceLock<Mutex<HashMap<Key, &'static (dyn Any + Send + Sync)>>> = OnceLock::new();
    let key = (slot as *const Slot as usize, TypeId::of::<I>());
    let mut map = BY_TYPE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let method = *map.entry(key).or_insert_with(|| Box::leak(Box::new(Method { info: info(), interceptors: build() })));
    method.downcast_ref().expect("keyed by the type it holds")
}

impl<I> Method<I> {
    /// The interceptors `interceptors` of the method `info`.
    pub(crate) fn new(info: MethodInfo, interceptors: I) -> Self {
        Method { info, interceptors }
    }
}

impl<I: Interceptor> Method<I> {
    /// The method's description.
    pub fn info(&self) -> &MethodInfo {
        &self.info
    }

    /// Runs the `on_start` hooks. The request gets the call's
    /// [`CallContext`] in its extensions.
    pub fn start<T>(&'static self, request: &mut Request<T>) -> Result<Call<I>, Status> {
        let ctx = CallContext::new(&self.info, request.remote_addr());
        match self.interceptors.on_start(&ctx, request.metadata()) {
            Ok(call) => {
                let state = Arc::new(CallState { ctx, outbound: Side::new(), call, inbound: Side::new() });
                LIVE_CALLS.fetch_add(1, Ordering::Relaxed);
                let handle = CallRef(state.clone());
                probe(request, || handle.clone());
                request.extensions_mut().insert(CallHandle(handle));
                Ok(Call { state, armed: true, inbound_taken: false })
            }
            Err(status) => {
                ctx.mark_ended_by(self.interceptors.name());
                ctx.set_outcome(&Err(status.clone()));
                probe(request, || CallRef(Arc::new(ctx)));
                Err(status)
            }
        }
    }
}

/// Hands the call to the test kit's probe, if the request carries one.
#[cfg_attr(not(feature = "testing"), allow(unused_variables))]
fn probe<T>(request: &Request<T>, call: impl FnOnce() -> CallRef) {
    #[cfg(feature = "testing")]
    if let Some(probe) = request.extensions().get::<crate::testing::Probe>() {
        let _ = probe.0.set(call());
    }
}

/// Everything one call keeps, in one allocation: the context, the
/// interceptors' per-call state and each direction's state.
///
/// Each direction's state is touched only by that direction's one [`Tap`]
/// (made once, by [`Call`], which hands out at most one per direction), so it
/// needs no lock. What the two directions write per message is kept apart:
/// the inbound counters open the context, the outbound counters close it,
/// the outbound state follows them and the inbound state comes last, after
/// the per-call state. The context is first, so that a [`Tap`] reaches it
/// without a virtual call.
#[repr(C)]
struct CallState<I: Interceptor> {
    ctx: CallContext,
    outbound: Side<I::Stream>,
    call: I::Call,
    inbound: Side<I::Stream>,
}

// SAFETY: the only field that is not `Sync` by itself is each `Side`'s
// `UnsafeCell`, which only that direction's single `Tap` (or `Call` before
// the `Tap` exists) reads or writes; that `Tap` may move to another thread,
// hence `I::Stream: Send`, which `Interceptor` requires.
unsafe impl<I: Interceptor> Sync for CallState<I> {}

/// The interceptors' state of one direction of one call; dropped as soon as
/// the direction ends, so that nothing it holds (a waiter in a shared
/// limiter, say) outlives the stream's end.
struct Side<S>(UnsafeCell<Option<S>>);

type SideState<S> = Option<S>;

impl<S> Side<S> {
    fn new() -> Self {
        Side(UnsafeCell::new(None))
    }
}

impl<I: Interceptor> HasContext for CallState<I> {
    fn context(&self) -> &CallContext {
        &self.ctx
    }
}

impl<I: Interceptor> CallState<I> {
    /// The method's interceptors.
    #[inline]
    fn method(&self) -> &'static Method<I> {
        // SAFETY: `Method::start` made the context with `&self.info` of the
        // `Method<I>` that made this call, and `info` is its first field
        // (`repr(C)`): the same address, valid for `'static`.
        unsafe { &*(self.ctx.method as *const MethodInfo as *const Method<I>) }
    }

    /// Ends the call; the first caller wins. An interceptor's terminal status
    /// takes precedence over what the handler or stream reported.
    fn finalize(&self, result: Result<(), Status>) -> Result<(), Status> {
        let result = match self.ctx.terminal_status() {
            Some(status) => Err(status.clone()),
            None => result,
        };
        if let Err(status) = &result {
            // Wakes a direction that waits (in a limiter, say) so it ends now.
            self.ctx.terminate(status);
        }
        if self.ctx.set_outcome(&result) {
            self.method().interceptors.on_end(&self.call, &self.ctx);
        }
        result
    }

    /// Makes the one [`Tap`] of `direction`.
    ///
    /// # Safety
    /// At most once per direction and call, and not while anything else
    /// touches that direction's state.
    unsafe fn tap<M: prost::Message + 'static>(self: &Arc<Self>, direction: Direction, owns_end: bool) -> Tap<M> {
        // SAFETY: nothing else touches this side yet (the caller's promise).
        // The outbound state may exist already: made while the handler ran
        // (see `Call::run`).
        unsafe { self.side_state(direction) };
        if owns_end {
            self.ctx.flags.fetch_or(flag::OWNS_END, Ordering::Relaxed);
        }
        // The tap holds one strong count, given back by its `release`; its
        // pointer comes from `into_raw`, valid for the whole allocation.
        // SAFETY: `into_raw` never returns null; the context is the first
        // field of the `repr(C)` `CallState`.
        let call = unsafe { NonNull::new_unchecked(Arc::into_raw(self.clone()) as *mut CallContext) };
        let vtable = match direction {
            Direction::Inbound => NonNull::from(&VTableOf::<I, false, M>::VTABLE),
            Direction::Outbound => NonNull::from(&VTableOf::<I, true, M>::VTABLE),
        };
        Tap { call, vtable }
    }

    /// The state of `direction`, made by `on_stream` if it does not exist
    /// yet.
    ///
    /// # Safety
    /// Only by the direction's one owner (its tap, or `Call` before the tap
    /// exists), and not twice at once.
    #[allow(clippy::mut_from_ref)]
    unsafe fn side_state(&self, direction: Direction) -> &mut SideState<I::Stream> {
        // SAFETY: the caller's promise.
        let side = unsafe { &mut *self.side(direction).0.get() };
        if side.is_none() {
            *side = Some(self.method().interceptors.on_stream(&self.call, &self.ctx, direction));
        }
        side
    }

    fn side(&self, direction: Direction) -> &Side<I::Stream> {
        match direction {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        }
    }

    /// A waker for the whole call, handed to `poll_interrupt`: a timer an
    /// interceptor registers with it sets both directions' interrupt flags
    /// and wakes whichever waits. It holds the call weakly, so a timer kept
    /// in the call's own state does not keep the call alive.
    ///
    /// # Safety
    /// `raw` is a tap's pointer (from `Arc::into_raw`), still holding its count.
    unsafe fn call_waker(raw: *const ()) -> Waker {
        // SAFETY: the caller's promise; `ManuallyDrop` leaves the count as it is.
        let arc = ManuallyDrop::new(unsafe { Arc::from_raw(raw as *const Self) });
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
    // SAFETY: `ptr` is a `Weak<CallState<I>>` made by `call_waker`.
    let weak = ManuallyDrop::new(unsafe { Weak::from_raw(ptr as *const CallState<I>) });
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
    let weak = ManuallyDrop::new(unsafe { Weak::from_raw(ptr as *const CallState<I>) });
    if let Some(call) = weak.upgrade() {
        call.ctx.interrupt();
    }
}

unsafe fn drop_waker<I: Interceptor>(ptr: *const ()) {
    // SAFETY: as in `clone_waker`; this drops the waker's `Weak`.
    drop(unsafe { Weak::from_raw(ptr as *const CallState<I>) });
}

impl<I: Interceptor> Drop for CallState<I> {
    fn drop(&mut self) {
        // Every path finalizes before this; this is the backstop.
        let _ = self.finalize(Err(gone()));
        LIVE_CALLS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The status of a call whose handler or response stream was dropped before
/// it ended.
fn gone() -> Status {
    if std::thread::panicking() {
        Status::internal("the handler panicked")
    } else {
        Status::cancelled("the client cancelled the call")
    }
}

/// The handler's side of one call. Dropped before `finish_*` (the client went
/// away, or the handler panicked), it ends the call as CANCELLED (INTERNAL).
pub struct Call<I: Interceptor> {
    state: Arc<CallState<I>>,
    armed: bool,
    inbound_taken: bool,
}

impl<I: Interceptor> Drop for Call<I> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.state.finalize(Err(gone()));
        }
    }
}

impl<I: Interceptor> Call<I> {
    /// The call's context.
    pub fn context(&self) -> &CallContext {
        &self.state.ctx
    }

    /// The one tap of the inbound direction.
    fn inbound_tap<T: prost::Message + 'static>(&mut self) -> Tap<T> {
        // An expansion takes the inbound direction once; this keeps `tap`'s
        // promise whatever calls it.
        assert!(!self.inbound_taken, "interceptor-runtime: the inbound stream of a call was taken twice");
        self.inbound_taken = true;
        // SAFETY: the first and only inbound tap of this call (above); the
        // outbound one is made only by `finish_*`, which consume `self`.
        unsafe { self.state.tap(Direction::Inbound, false) }
    }

    /// Wraps a client stream.
    pub fn inbound<T>(&mut self, request: Request<Streaming<T>>) -> Request<Inbound<T>>
    where
        T: prost::Message + 'static,
    {
        let tap = self.inbound_tap();
        request.map(|stream| Inbound::new(stream, tap))
    }

    /// Runs the inbound hooks on a unary request. On rejection the call is
    /// over and the status is returned.
    pub async fn recv_unary<T>(&mut self, request: Request<T>) -> Result<Request<T>, Status>
    where
        T: prost::Message + 'static,
    {
        let mut tap = self.inbound_tap::<T>();
        let passed = poll_fn(|cx| tap.poll_message(cx, request.get_ref())).await;
        drop(tap);
        match passed {
            Ok(()) => Ok(request),
            Err(status) => Err(self.end(Err(status)).unwrap_err()),
        }
    }

    /// Wraps the handler's response stream, which from now on owns the end of
    /// the call; or ends the call with the handler's error.
    pub fn finish_stream<X: OutboundStream>(
        mut self,
        result: Result<Response<X::Inner>, Status>,
    ) -> Result<Response<X>, Status> {
        match result {
            Ok(response) => {
                self.armed = false;
                // SAFETY: the only outbound tap: `self` is consumed.
                let tap = unsafe { self.state.tap(Direction::Outbound, true) };
                Ok(response.map(|inner| X::wrap(inner, tap)))
            }
            Err(status) => Err(self.end(Err(status)).unwrap_err()),
        }
    }

    /// Runs the outbound hooks on a unary response and ends the call.
    pub async fn finish_unary<T>(mut self, result: Result<Response<T>, Status>) -> Result<Response<T>, Status>
    where
        T: prost::Message + 'static,
    {
        let response = match result {
            Ok(response) => response,
            Err(status) => return Err(self.end(Err(status)).unwrap_err()),
        };
        // SAFETY: the only outbound tap: `self` is consumed.
        let mut tap = unsafe { self.state.tap::<T>(Direction::Outbound, false) };
        let passed = poll_fn(|cx| tap.poll_message(cx, response.get_ref())).await;
        drop(tap);
        self.end(passed).map(|()| response)
    }

    fn end(&mut self, result: Result<(), Status>) -> Result<(), Status> {
        self.armed = false;
        // SAFETY: as in `poll_timers`: no outbound tap exists, and `&mut self`.
        // The state `run` made for the response goes with the call.
        *unsafe { &mut *self.state.outbound.0.get() } = None;
        self.state.finalize(result)
    }

    /// Runs the handler's body, and the interceptors' timers beside it: when
    /// one of them fires (budget's `duration`, say) while the handler still
    /// runs, the body is dropped and its result is that status. Without
    /// this, a handler that is not reading or writing a stream (any unary
    /// one) would outlive its budget.
    pub fn run<F, R>(&mut self, body: F) -> Run<'_, I, F>
    where
        F: Future<Output = Result<R, Status>>,
    {
        Run { call: self, body }
    }

    /// While the handler runs, the outbound direction has not started: it
    /// polls the timers on that direction's behalf, with that direction's
    /// state (made now, kept for the response) and waker slot.
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> Poll<Status> {
        let state = &*self.state;
        state.ctx.register(Direction::Outbound, cx.waker());
        let flags = state.ctx.flags.load(Ordering::Acquire);
        if flags & flag::INTERRUPT_OUT == 0 || flags & flag::DONE_OUT != 0 {
            return Poll::Pending;
        }
        // SAFETY: the outbound state is touched by the outbound tap alone,
        // which `finish_*` make, taking `self`: it does not exist yet, and
        // `&mut self` excludes every other use.
        let side = unsafe { state.side_state(Direction::Outbound) };
        let raw = Arc::as_ptr(&self.state) as *const ();
        // SAFETY: `Dir` is a `repr(transparent)` view of the call's state;
        // `raw` comes from the `Arc` this call holds for as long as `self`.
        let dir = unsafe { &*(raw as *const Dir<I, true>) };
        dir.interrupt(raw, side)
    }
}

pin_project_lite::pin_project! {
    /// What [`Call::run`] returns.
    pub struct Run<'a, I: Interceptor, F> {
        call: &'a mut Call<I>,
        #[pin]
        body: F,
    }
}

impl<I: Interceptor, F: Future<Output = Result<R, Status>>, R> Future for Run<'_, I, F> {
    type Output = Result<R, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.body.poll(cx) {
            return Poll::Ready(result);
        }
        this.call.poll_timers(cx).map(Err)
    }
}

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
    call: NonNull<CallContext>,
    vtable: NonNull<TapVTable<M>>,
}

// SAFETY: the call's state is `Send + Sync` (see `CallState`), and the
// direction's state it reaches is touched only through this one tap, by
// `&mut self`; `&Tap` only reads the context, which is `Sync`.
unsafe impl<M> Send for Tap<M> {}
unsafe impl<M> Sync for Tap<M> {}

struct TapVTable<M> {
    poll_message: unsafe fn(*const (), &mut Context<'_>, &M) -> Poll<Result<(), Status>>,
    poll_interrupt: unsafe fn(*const (), &mut Context<'_>) -> Poll<Status>,
    end: unsafe fn(*const (), Result<(), Status>) -> Option<Status>,
    /// Releases the direction and the tap's strong count.
    release: unsafe fn(*const ()),
}

struct VTableOf<I, const OUT: bool, M>(PhantomData<fn() -> (I, M)>);

impl<I: Interceptor, const OUT: bool, M: prost::Message + 'static> VTableOf<I, OUT, M> {
    const VTABLE: TapVTable<M> = TapVTable {
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

/// The view of a call from one direction (`OUT`: the outbound one); a
/// [`Tap`]'s vtable calls it.
#[repr(transparent)]
struct Dir<I: Interceptor, const OUT: bool>(CallState<I>);

/// What a [`Tap`]'s vtable calls.
///
/// # Safety
/// Every method with `unsafe` touches the direction's state: only the
/// direction's one `Tap` calls them, through `&mut self`.
trait ErasedTap<M> {
    /// `raw`: the tap's pointer, for the call's waker.
    unsafe fn poll_message(&self, raw: *const (), cx: &mut Context<'_>, msg: &M) -> Poll<Result<(), Status>>;
    unsafe fn poll_interrupt(&self, raw: *const (), cx: &mut Context<'_>) -> Poll<Status>;
    unsafe fn end(&self, result: Result<(), Status>) -> Option<Status>;
    unsafe fn release(&self);
}

// The per-message path below keeps to what every message does; each way out
// of it (a flag set, a rejection, a wait) is out of line, so that it stays
// small.
impl<I: Interceptor, const OUT: bool> Dir<I, OUT> {
    const DIRECTION: Direction = if OUT { Direction::Outbound } else { Direction::Inbound };
    const INTERRUPT: u8 = if OUT { flag::INTERRUPT_OUT } else { flag::INTERRUPT_IN };

    /// This direction's state.
    ///
    /// # Safety
    /// Only through this direction's `Tap`, and not twice at once.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    unsafe fn side(&self) -> &mut SideState<I::Stream> {
        unsafe { &mut *self.0.side(Self::DIRECTION).0.get() }
    }

    /// This direction ends with `status`: its state goes, and its wrapper
    /// yields nothing after `status`.
    #[cold]
    fn close(&self, side: &mut SideState<I::Stream>, status: Status) -> Status {
        *side = None;
        self.0.ctx.flags.fetch_or(flag::done(Self::DIRECTION), Ordering::Relaxed);
        status
    }

    /// An interceptor rejected: the whole call ends with `status`.
    #[cold]
    #[inline(never)]
    fn reject(&self, side: &mut SideState<I::Stream>, status: Status) -> Status {
        let ctx = &self.0.ctx;
        ctx.mark_ended_by(self.0.method().interceptors.name());
        ctx.terminate(&status);
        self.close(side, status)
    }

    /// The status a direction that has already ended reports.
    #[cold]
    fn ended_status(&self) -> Status {
        self.0.ctx.terminal_status().cloned().unwrap_or_else(gone)
    }

    /// A flag is set (the call ended, or a timer fired, or this direction
    /// has not polled the timers yet): deals with it before the message.
    #[cold]
    #[inline(never)]
    fn attend(&self, raw: *const (), side: &mut SideState<I::Stream>) -> Option<Status> {
        let ctx = &self.0.ctx;
        if let Some(status) = ctx.terminal_status() {
            return Some(self.close(side, status.clone()));
        }
        match self.interrupt(raw, side) {
            Poll::Ready(status) => Some(status),
            Poll::Pending => None,
        }
    }

    /// Polls the interceptors' timers with the call's waker.
    fn interrupt(&self, raw: *const (), side: &mut SideState<I::Stream>) -> Poll<Status> {
        let call = &self.0;
        call.ctx.flags.fetch_and(!Self::INTERRUPT, Ordering::AcqRel);
        let Some(state) = side.as_mut() else { return Poll::Ready(self.close(side, self.ended_status())) };
        // SAFETY: `raw` is this direction's tap's pointer.
        let waker = unsafe { CallState::<I>::call_waker(raw) };
        let mut cx = Context::from_waker(&waker);
        match call.method().interceptors.poll_interrupt(&call.call, state, &call.ctx, &mut cx) {
            Poll::Ready(status) => Poll::Ready(self.reject(side, status)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// An interceptor holds the message back: wait, unless the call was ended
    /// meanwhile.
    #[inline(never)]
    fn wait(&self, side: &mut SideState<I::Stream>, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        let ctx = &self.0.ctx;
        ctx.register(Self::DIRECTION, cx.waker());
        match ctx.terminal_status() {
            // Ended while this message waited: stop waiting now.
            Some(status) => Poll::Ready(Err(self.close(side, status.clone()))),
            None => Poll::Pending,
        }
    }
}

impl<I: Interceptor, const OUT: bool, M: prost::Message + 'static> ErasedTap<M> for Dir<I, OUT> {
    #[inline]
    unsafe fn poll_message(&self, raw: *const (), cx: &mut Context<'_>, msg: &M) -> Poll<Result<(), Status>> {
        let call = &self.0;
        let ctx = &call.ctx;
        // SAFETY: the caller's promise.
        let side = unsafe { self.side() };
        if ctx.flags.load(Ordering::Relaxed) & (flag::TERMINATED | Self::INTERRUPT) != 0 {
            if let Some(status) = self.attend(raw, side) {
                return Poll::Ready(Err(status));
            }
        }
        let Some(state) = side.as_mut() else { return Poll::Ready(Err(self.close(side, self.ended_status()))) };
        let counters = ctx.counters(Self::DIRECTION);
        let view = MessageRef {
            ctx,
            direction: Self::DIRECTION,
            message: msg,
            encoded_len: msg.encoded_len(),
            index: counters.messages.load(Ordering::Relaxed),
            bytes_before: counters.bytes.load(Ordering::Relaxed),
        };
        let interceptors = &call.method().interceptors;
        match interceptors.poll_message(&call.call, state, cx, &view) {
            Poll::Ready(Ok(())) => {
                interceptors.on_delivered(&call.call, state, &view);
                counters.record(view.index, view.bytes_before, view.encoded_len);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(status)) => Poll::Ready(Err(self.reject(side, status))),
            Poll::Pending => self.wait(side, cx),
        }
    }

    unsafe fn poll_interrupt(&self, raw: *const (), cx: &mut Context<'_>) -> Poll<Status> {
        let ctx = &self.0.ctx;
        // SAFETY: the caller's promise.
        let side = unsafe { self.side() };
        // Registered first, so that an end or a timer from now on wakes it.
        ctx.register(Self::DIRECTION, cx.waker());
        match self.attend(raw, side) {
            Some(status) => Poll::Ready(status),
            None => Poll::Pending,
        }
    }

    unsafe fn end(&self, result: Result<(), Status>) -> Option<Status> {
        // SAFETY: the caller's promise.
        *unsafe { self.side() } = None;
        let ctx = &self.0.ctx;
        let flags = ctx.flags.fetch_or(flag::done(Self::DIRECTION), Ordering::Relaxed);
        if OUT && flags & flag::OWNS_END != 0 {
            self.0.finalize(result).err()
        } else {
            match ctx.terminal_status() {
                Some(status) => Some(status.clone()),
                None => result.err(),
            }
        }
    }

    unsafe fn release(&self) {
        // SAFETY: the caller's promise.
        *unsafe { self.side() } = None;
        let flags = self.0.ctx.flags.fetch_or(flag::done(Self::DIRECTION), Ordering::Relaxed);
        if OUT && flags & flag::OWNS_END != 0 && flags & flag::DONE_OUT == 0 {
            let _ = self.0.finalize(Err(gone()));
        }
    }
}

#[cfg(all(test, feature = "budget"))]
mod tests {
    use super::*;

    /// The call's timer is registered with the call's waker, which holds the
    /// call weakly: a call that ends is freed at once, not when its timer
    /// would have fired.
    #[tokio::test]
    async fn a_call_with_a_timer_is_freed_when_it_ends() {
        static SLOT: Slot = Slot::new();
        let method = SLOT.get_or_init(
            || MethodInfo::new("test.Freed", "Get", RpcKind::Unary),
            || Budget::new(BudgetConfig { duration: Some(Duration::from_secs(3600)), ..Default::default() }),
        );
        let mut request = Request::new(());
        let mut call = method.start(&mut request).expect("no limit to reject it");
        let state = Arc::downgrade(&call.state);
        // The first message polls the timers: the `Sleep` now holds the call's waker.
        let request = call.recv_unary(request).await.expect("passes");
        call.finish_unary(Ok(Response::new(()))).await.expect("passes");
        assert!(state.upgrade().is_some(), "the request's extensions still hold the call");
        drop(request);
        assert!(state.upgrade().is_none(), "the call's state outlived the call");
    }
}
