//! The handler's side of one call: [`Method::start`] makes the call and the
//! [`CallGuard`] the expansion drives.
//!
//! One intercepted handler does, in order:
//! ```text
//! static SLOT                      // the method's interceptors, built on first call
//! let call = SLOT.start(&mut request).await?  // on_start hooks, then before_handler checks; may reject
//! let request = call.inbound(request)         // streaming: Streaming<T> -> Inbound<T>
//!            |  call.recv_unary(request).await   // unary: the message hooks run now
//! let result = call.run(async move { <handler body> }).await;   // the timers beside it
//! call.finish_stream(result)                  // streaming: S -> Outbound<S>
//!     | call.finish_unary(result).await       // unary: the message hooks run now
//! ```
//! The call is finalized exactly once: by `finish_unary`, by the outbound
//! stream when it ends or is dropped, or, if the handler future is dropped
//! first (the client went away), by the guard's destructor with CANCELLED.
//! With [`InterceptLayer`](crate::InterceptLayer) in the server, an OK is final
//! only once the response's end has been handed to HTTP/2: until then the
//! layer's tap holds the call (`CallCell::complete`). A panic of the body is
//! caught by [`Run`], and is the handler's result: INTERNAL.

use std::{
    future::{poll_fn, Future},
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
};

use tonic::{metadata::MetadataMap, Request, Response, Status, Streaming};

use super::{
    cell::{DirectionState, LIVE_CALLS},
    flag, panic, CallCell, CallContext, CallExtension, CallRef, DirectionHandle, DirectionView, ErasedMethod, Method,
};
use crate::{
    interceptor::{Direction, Interceptor},
    stream::{Inbound, OutboundStream},
    transport::Tap,
};

impl<I: Interceptor> Method<I> {
    /// Runs the `on_start` hooks, then awaits the `before_handler` checks.
    /// The request gets the call's [`CallContext`] in its extensions.
    ///
    /// With [`InterceptLayer`](crate::InterceptLayer) in the server, the call
    /// keeps the layer's tap from the request's extensions; a request whose
    /// body already failed (a unary request the client cancelled right
    /// after sending it, say) starts ended: its handler sees CANCELLED
    /// before anything else, and the checks are skipped.
    ///
    /// Dropped while a check is pending (the client went away), the call
    /// ends as a guard dropped early does.
    pub async fn start<T>(&'static self, request: &mut Request<T>) -> Result<CallGuard<I>, Status> {
        let mut call = self.start_call(request)?;
        call.check_before_handler(request.metadata()).await?;
        Ok(call)
    }

    /// The `on_start` hooks: the call and its guard, or the rejection.
    fn start_call<T>(&'static self, request: &mut Request<T>) -> Result<CallGuard<I>, Status> {
        let tap = request.extensions().get::<Arc<Tap>>().cloned();
        let ctx = CallContext::new(ErasedMethod::new(self), request.remote_addr(), tap);
        let started = match panic::catch(|| self.interceptors.on_start(&ctx, request.metadata())) {
            Ok(started) => started,
            // A `Chain` turns a panic of one of its links into an error
            // itself; this is one interceptor alone.
            Err(payload) => Err(panic::caught_in_hook(&ctx, &self.interceptors, "on_start", payload)),
        };
        match started {
            Ok(call_state) => {
                if let Some(status) = ctx.request_failure() {
                    ctx.terminate(&status);
                }
                let cell = Arc::new(CallCell {
                    ctx,
                    outbound: DirectionState::new(),
                    call_state,
                    inbound: DirectionState::new(),
                });
                LIVE_CALLS.fetch_add(1, Ordering::Relaxed);
                let call = CallRef(cell.clone());
                probe(request, || call.clone());
                request.extensions_mut().insert(CallExtension(call));
                Ok(CallGuard { cell, armed: true, inbound_handed_out: false })
            }
            Err(status) => {
                ctx.mark_ended_by(panic::name_of(&self.interceptors));
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
pub struct CallGuard<I: Interceptor> {
    pub(super) cell: Arc<CallCell<I>>,
    armed: bool,
    inbound_handed_out: bool,
}

impl<I: Interceptor> Drop for CallGuard<I> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.cell.finalize(Err(self.cell.ctx.gone_status()));
        }
    }
}

impl<I: Interceptor> CallGuard<I> {
    /// The call's context.
    pub fn context(&self) -> &CallContext {
        &self.cell.ctx
    }

    /// Awaits the interceptors' `before_handler` checks. A rejection, or a
    /// panic (logged, INTERNAL), ends the call with its status: every
    /// interceptor has started, and hears `on_end`. A call already over
    /// (its client went away before it started) is not checked.
    async fn check_before_handler(&mut self, metadata: &MetadataMap) -> Result<(), Status> {
        let status = {
            let cell = &*self.cell;
            if cell.ctx.terminal_status().is_some() {
                return Ok(());
            }
            let interceptors = &cell.method().interceptors;
            let checked = match panic::catch(|| interceptors.before_handler(&cell.call_state, &cell.ctx, metadata)) {
                Ok(check) => panic::catch_polls(check).await,
                Err(payload) => Err(payload),
            };
            match checked {
                Ok(Ok(())) => return Ok(()),
                // A `Chain` has named its link that rejected; this is one
                // interceptor alone.
                Ok(Err(status)) => {
                    cell.ctx.mark_ended_by(panic::name_of(interceptors));
                    status
                }
                Err(payload) => panic::caught_in_hook(&cell.ctx, interceptors, "before_handler", payload),
            }
        };
        Err(self.end(Err(status)).unwrap_err())
    }

    /// The one handle of the inbound direction.
    pub(super) fn inbound_handle<T: prost::Message + 'static>(&mut self) -> DirectionHandle<T> {
        // An expansion takes the inbound direction once; this keeps
        // `CallCell::handle`'s promise whatever calls it.
        assert!(!self.inbound_handed_out, "interceptor-runtime: the inbound stream of a call was taken twice");
        self.inbound_handed_out = true;
        // SAFETY: I1: the guard owns the inbound direction until now, and
        // hands it out once (above).
        unsafe { self.cell.handle(Direction::Inbound, false) }
    }

    /// Wraps a client stream.
    pub fn inbound<T>(&mut self, request: Request<Streaming<T>>) -> Request<Inbound<T>>
    where
        T: prost::Message + 'static,
    {
        let handle = self.inbound_handle();
        request.map(|stream| Inbound::new(stream, handle))
    }

    /// Runs the inbound hooks on a unary request. On rejection the call is
    /// over and the status is returned.
    pub async fn recv_unary<T>(&mut self, request: Request<T>) -> Result<Request<T>, Status>
    where
        T: prost::Message + 'static,
    {
        let mut handle = self.inbound_handle::<T>();
        let passed = poll_fn(|cx| handle.poll_message(cx, request.get_ref(), Direction::Inbound)).await;
        drop(handle);
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
                // SAFETY: I1: the guard owns the outbound direction, and hands
                // it out once: `self` is consumed.
                let handle = unsafe { self.cell.handle(Direction::Outbound, true) };
                Ok(response.map(|inner| X::wrap(inner, handle)))
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
        // SAFETY: I1: the guard owns the outbound direction, and hands it out
        // once: `self` is consumed. The handle is dropped before `end`.
        let mut handle = unsafe { self.cell.handle::<T>(Direction::Outbound, false) };
        let passed = poll_fn(|cx| handle.poll_message(cx, response.get_ref(), Direction::Outbound)).await;
        drop(handle);
        self.end(passed).map(|()| response)
    }

    fn end(&mut self, result: Result<(), Status>) -> Result<(), Status> {
        self.armed = false;
        // The state `run` made for the response goes with the call.
        // SAFETY: I1: the guard owns the outbound direction: no outbound
        // handle exists (or it was dropped, in `finish_unary`), and `&mut self`.
        let state = unsafe { &mut *self.cell.outbound.0.get() }.take();
        // Dropped after the call is over: a panic in the state's own drop
        // leaves the call ended all the same.
        let result = self.cell.complete(result);
        drop(state);
        result
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
        Run { guard: self, body }
    }

    /// While the handler runs, the outbound direction has not started: it
    /// polls the timers on that direction's behalf, with that direction's
    /// state (made now, kept for the response) and waker slot.
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> Poll<Status> {
        let cell = &*self.cell;
        cell.ctx.register(Direction::Outbound, cx.waker());
        let flags = cell.ctx.flags.load(Ordering::Acquire);
        if flags & flag::INTERRUPT_OUT == 0 || flags & flag::DONE_OUT != 0 {
            return Poll::Pending;
        }
        // SAFETY: I1: the guard owns the outbound direction while the handler
        // runs (the handle is made by `finish_*`, which take `self`), and
        // `&mut self` excludes every other use.
        let state = unsafe { cell.state_of(Direction::Outbound) };
        DirectionView::<I, true>::of(cell).interrupt(&self.cell, state)
    }
}

pin_project_lite::pin_project! {
    /// What [`CallGuard::run`] returns.
    pub struct Run<'a, I: Interceptor, F> {
        guard: &'a mut CallGuard<I>,
        #[pin]
        body: F,
    }
}

impl<I: Interceptor, F: Future<Output = Result<R, Status>>, R> Future for Run<'_, I, F> {
    type Output = Result<R, Status>;

    /// A panic of the body is caught here: the handler's result is then
    /// INTERNAL, which the client receives as the call's status. The body is
    /// not polled again (the expansion drops it with this future).
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let body = this.body;
        match panic::catch(|| body.poll(cx)) {
            Ok(Poll::Ready(result)) => return Poll::Ready(result),
            Ok(Poll::Pending) => {}
            Err(payload) => {
                return Poll::Ready(Err(panic::caught(this.guard.context().method(), panic::Site::Handler, payload)))
            }
        }
        this.guard.poll_timers(cx).map(Err)
    }
}
