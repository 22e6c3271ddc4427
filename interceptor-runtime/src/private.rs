//! What `#[intercept]` expands to calls into this module; it is not a public
//! API and may change in any release.
//!
//! One intercepted handler does, in order:
//! ```text
//! static SLOT                      // the method's interceptors, built on first call
//! let call = SLOT.start(&mut request)?        // on_start hooks; may reject
//! let request = call.inbound(request)         // streaming: Streaming<T> -> Inbound<T>
//!            |  call.recv_unary(request).await   // unary: the message hooks run now
//! let result = async move { <handler body> }.await;
//! call.finish_stream(result)                  // streaming: S -> Outbound<S>
//!     | call.finish_unary(result).await       // unary: the message hooks run now
//! ```
//! The call is finalized exactly once: by `finish_unary`, by the outbound
//! stream when it ends or is dropped, or, if the handler future is dropped
//! first (the client went away), by `Call`'s destructor with CANCELLED.

use std::{
    any::{Any, TypeId},
    collections::HashMap,
    future::poll_fn,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    task::{Context, Poll},
};

use tonic::{Request, Response, Status, Streaming};

#[cfg(feature = "budget")]
pub use crate::budget::{Budget, BudgetConfig};
pub use crate::call::{MethodInfo, RpcKind};
pub use crate::interceptor::Chain;
#[cfg(feature = "monitor")]
pub use crate::monitor::{Monitor, MonitorConfig};
#[cfg(feature = "rate")]
pub use crate::rate::{OnExceed, Rate, RateConfig, RateScope};
use crate::{
    call::{CallContext, CallHandle},
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

impl<I: Interceptor> Method<I> {
    /// The method's description.
    pub fn info(&self) -> &MethodInfo {
        &self.info
    }

    /// Runs the `on_start` hooks. The request gets the call's
    /// [`CallContext`] in its extensions.
    pub fn start<T>(&'static self, request: &mut Request<T>) -> Result<Call<I>, Status> {
        let ctx = Arc::new(CallContext::new(&self.info, request.remote_addr()));
        #[cfg(feature = "testing")]
        if let Some(probe) = request.extensions().get::<crate::testing::Probe>() {
            let _ = probe.0.set(ctx.clone());
        }
        match self.interceptors.on_start(&ctx, request.metadata()) {
            Ok(state) => {
                request.extensions_mut().insert(CallHandle(ctx.clone()));
                LIVE_CALLS.fetch_add(1, Ordering::Relaxed);
                Ok(Call { shared: Arc::new(Shared { ctx, method: self, state }), armed: true })
            }
            Err(status) => {
                ctx.mark_ended_by(self.interceptors.name());
                ctx.set_outcome(&Err(status.clone()));
                Err(status)
            }
        }
    }
}

/// State of one call shared by the handler and both directions.
struct Shared<I: Interceptor> {
    ctx: Arc<CallContext>,
    method: &'static Method<I>,
    state: I::Call,
}

impl<I: Interceptor> Shared<I> {
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
            self.method.interceptors.on_end(&self.state, &self.ctx);
        }
        result
    }

    fn tap(self: &Arc<Self>, direction: Direction, owns_end: bool) -> DirTap<I> {
        DirTap {
            state: Some(self.method.interceptors.on_stream(&self.state, &self.ctx, direction)),
            shared: self.clone(),
            direction,
            owns_end,
            ended: false,
        }
    }
}

impl<I: Interceptor> Drop for Shared<I> {
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
    shared: Arc<Shared<I>>,
    armed: bool,
}

impl<I: Interceptor> Drop for Call<I> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.shared.finalize(Err(gone()));
        }
    }
}

impl<I: Interceptor> Call<I> {
    /// The call's context.
    pub fn context(&self) -> &Arc<CallContext> {
        &self.shared.ctx
    }

    /// Wraps a client stream.
    pub fn inbound<T>(&self, request: Request<Streaming<T>>) -> Request<Inbound<T>>
    where
        T: prost::Message + 'static,
    {
        let tap = Box::new(self.shared.tap(Direction::Inbound, false));
        request.map(|stream| Inbound::new(stream, tap))
    }

    /// Runs the inbound hooks on a unary request. On rejection the call is
    /// over and the status is returned.
    pub async fn recv_unary<T>(&mut self, request: Request<T>) -> Result<Request<T>, Status>
    where
        T: prost::Message + 'static,
    {
        let mut tap = self.shared.tap(Direction::Inbound, false);
        match poll_fn(|cx| Tap::<T>::poll_message(&mut tap, cx, request.get_ref())).await {
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
                let tap = Box::new(self.shared.tap(Direction::Outbound, true));
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
        let mut tap = self.shared.tap(Direction::Outbound, false);
        let passed = poll_fn(|cx| Tap::<T>::poll_message(&mut tap, cx, response.get_ref())).await;
        drop(tap);
        self.end(passed).map(|()| response)
    }

    fn end(&mut self, result: Result<(), Status>) -> Result<(), Status> {
        self.armed = false;
        self.shared.finalize(result)
    }
}

/// One direction of one call, as the wrappers see it: type-erased over the
/// interceptors, so that `Inbound<T>` and `Outbound<S>` can be named.
pub trait Tap<M>: Send + 'static {
    /// Runs the message hooks; counts the message when it passes.
    fn poll_message(&mut self, cx: &mut Context<'_>, msg: &M) -> Poll<Result<(), Status>>;
    /// Polled while the direction waits: the call was ended by the other
    /// direction or by an interceptor's timer.
    fn poll_interrupt(&mut self, cx: &mut Context<'_>) -> Poll<Status>;
    /// The direction ended with `result`; for the outbound direction this ends
    /// the call. Returns the error the stream should yield last, if any.
    fn end(&mut self, result: Result<(), Status>) -> Option<Status>;
    /// The call.
    fn context(&self) -> &Arc<CallContext>;
}

struct DirTap<I: Interceptor> {
    shared: Arc<Shared<I>>,
    /// Dropped as soon as the direction ends, so that nothing it holds (a
    /// waiter in a shared limiter, a timer) outlives the stream's end.
    state: Option<I::Stream>,
    direction: Direction,
    /// The outbound stream ends the call, also when dropped before its end.
    owns_end: bool,
    ended: bool,
}

// The per-message path below keeps to what every message does; each way out
// of it (the call already ended, a rejection, a wait) is out of line, so that
// it stays small.
impl<I: Interceptor> DirTap<I> {
    #[cold]
    #[inline(never)]
    fn reject(&mut self, status: Status) -> Poll<Result<(), Status>> {
        self.state = None;
        let ctx = &self.shared.ctx;
        ctx.mark_ended_by(self.shared.method.interceptors.name());
        ctx.terminate(&status);
        Poll::Ready(Err(status))
    }

    /// The status a direction that has already ended reports.
    #[cold]
    fn ended_status(&self) -> Status {
        self.shared.ctx.terminal_status().cloned().unwrap_or_else(gone)
    }

    /// The call was ended (by the other direction or an interceptor): this
    /// direction ends with its status.
    #[cold]
    #[inline(never)]
    fn terminated(&mut self) -> Poll<Result<(), Status>> {
        self.state = None;
        Poll::Ready(Err(self.ended_status()))
    }

    /// An interceptor holds the message back: wait, unless the call was ended
    /// meanwhile.
    #[inline(never)]
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        match self.shared.ctx.poll_terminated(self.direction, cx.waker()) {
            // Ended while this message waited: stop waiting now.
            Some(status) => {
                let status = status.clone();
                self.state = None;
                Poll::Ready(Err(status))
            }
            None => Poll::Pending,
        }
    }
}

impl<I: Interceptor, M: prost::Message + 'static> Tap<M> for DirTap<I> {
    #[inline]
    fn poll_message(&mut self, cx: &mut Context<'_>, msg: &M) -> Poll<Result<(), Status>> {
        let ctx = &*self.shared.ctx;
        if ctx.terminal_status().is_some() {
            return self.terminated();
        }
        let Some(state) = &mut self.state else { return Poll::Ready(Err(self.ended_status())) };
        let counters = ctx.counters(self.direction);
        let view = MessageRef {
            ctx,
            direction: self.direction,
            message: msg,
            encoded_len: msg.encoded_len(),
            index: counters.messages.load(std::sync::atomic::Ordering::Relaxed),
        };
        let interceptors = &self.shared.method.interceptors;
        match interceptors.poll_message(&self.shared.state, state, cx, &view) {
            Poll::Ready(Ok(())) => {
                interceptors.on_delivered(&self.shared.state, state, &view);
                counters.add(view.encoded_len);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(status)) => self.reject(status),
            Poll::Pending => self.wait(cx),
        }
    }

    fn poll_interrupt(&mut self, cx: &mut Context<'_>) -> Poll<Status> {
        let ctx = &*self.shared.ctx;
        if let Some(status) = ctx.poll_terminated(self.direction, cx.waker()) {
            let status = status.clone();
            self.state = None;
            return Poll::Ready(status);
        }
        let Some(state) = &mut self.state else { return Poll::Ready(self.ended_status()) };
        let interceptors = &self.shared.method.interceptors;
        match interceptors.poll_interrupt(&self.shared.state, state, ctx, cx) {
            Poll::Ready(status) => {
                let _ = self.reject(status.clone());
                Poll::Ready(status)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn end(&mut self, result: Result<(), Status>) -> Option<Status> {
        self.ended = true;
        self.state = None;
        if self.owns_end {
            self.shared.finalize(result).err()
        } else {
            match self.shared.ctx.terminal_status() {
                Some(status) => Some(status.clone()),
                None => result.err(),
            }
        }
    }

    fn context(&self) -> &Arc<CallContext> {
        &self.shared.ctx
    }
}

impl<I: Interceptor> Drop for DirTap<I> {
    fn drop(&mut self) {
        if self.owns_end && !self.ended {
            let _ = self.shared.finalize(Err(gone()));
        }
    }
}
