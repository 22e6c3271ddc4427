//! The handler's side of one call: [`Method::start`] makes the call and the
//! [`Call`] guard the expansion drives.
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
    future::{poll_fn, Future},
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
};

use tonic::{Request, Response, Status, Streaming};

use super::{
    cell::{Side, LIVE_CALLS},
    flag, gone, CallContext, CallHandle, CallRef, CallState, Dir, Method, Tap,
};
use crate::{
    interceptor::{Direction, Interceptor},
    stream::{Inbound, OutboundStream},
};

impl<I: Interceptor> Method<I> {
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

/// The handler's side of one call. Dropped before `finish_*` (the client went
/// away, or the handler panicked), it ends the call as CANCELLED (INTERNAL).
pub struct Call<I: Interceptor> {
    pub(super) state: Arc<CallState<I>>,
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
