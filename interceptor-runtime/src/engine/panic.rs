//! Panics caught where the engine runs code it does not own: the handler's
//! body, the response stream, and every interceptor hook.
//!
//! Each caught panic is logged once, as a `tracing` ERROR naming the method,
//! where it happened (the handler, the response stream, or which
//! interceptor's which hook) and the panic's message; the client gets a
//! short INTERNAL status that tells nothing more. The call then ends as any
//! other: every interceptor that started hears `on_end`, and nothing of the
//! call is left behind.
//!
//! A [`Chain`](crate::Chain) does not catch: it leaves a [`Blame`] on each
//! link while the link runs a hook, which, if the hook unwinds, notes the
//! link's name in the call's context on the way out; the engine's catch,
//! further up, reads it back. An unwinding edge costs nothing until it is
//! taken, but a blame's fields are written for every call: so the message
//! hooks, run for every message, leave none, and the chain's state for the
//! direction tells instead which link had the message
//! (`Interceptor::__message_hook_owner`, asked after the catch).
//!
//! An asynchronous hook (`before_handler`) is caught at every poll of its
//! future ([`catch_polls`]), and a `Chain` blames its link at each poll.

use std::{
    any::Any,
    future::{poll_fn, Future},
    panic::{catch_unwind, AssertUnwindSafe},
    pin::pin,
    task::Poll,
};

use tonic::Status;

use super::{CallContext, MethodInfo};
use crate::interceptor::Interceptor;

/// Where a panic was caught.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Site {
    /// The handler's body.
    Handler,
    /// The stream the handler returned.
    ResponseStream,
    /// An interceptor's hook.
    Hook {
        /// The interceptor's `name()`.
        interceptor: &'static str,
        /// `on_start`, `before_handler`, `on_stream`, `poll_message`,
        /// `on_delivered`, `poll_interrupt` or `on_end`.
        hook: &'static str,
    },
}

impl Site {
    /// What the client is told: where, in general words, and no more.
    fn client_message(self) -> &'static str {
        match self {
            Site::Handler => "the handler panicked",
            Site::ResponseStream => "the response stream panicked",
            Site::Hook { .. } => "an interceptor panicked",
        }
    }
}

/// Runs `f`, catching a panic. The caller never looks at what `f` touched
/// after a panic (it drops it, or ends the call), hence `AssertUnwindSafe`.
#[inline(always)]
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Box<dyn Any + Send>> {
    catch_unwind(AssertUnwindSafe(f))
}

/// Awaits `future`, catching a panic of any of its polls; it is not polled
/// again after one.
pub(crate) async fn catch_polls<F: Future>(future: F) -> Result<F::Output, Box<dyn Any + Send>> {
    let mut future = pin!(future);
    poll_fn(|cx| match catch(|| future.as_mut().poll(cx)) {
        Ok(polled) => polled.map(Ok),
        Err(payload) => Poll::Ready(Err(payload)),
    })
    .await
}

/// Logs a caught panic once and returns the INTERNAL status the call ends
/// with.
#[cold]
#[inline(never)]
pub(crate) fn caught(method: &MethodInfo, site: Site, payload: Box<dyn Any + Send>) -> Status {
    let panic = message(&*payload);
    match site {
        Site::Handler | Site::ResponseStream => tracing::error!(
            rpc.method = method.full_name,
            panicked_in = if let Site::Handler = site { "handler" } else { "response stream" },
            panic,
            "caught a panic; the call ends with INTERNAL"
        ),
        Site::Hook { interceptor, hook } => tracing::error!(
            rpc.method = method.full_name,
            panicked_in = "interceptor",
            interceptor,
            hook,
            panic,
            "caught a panic; the call ends with INTERNAL"
        ),
    }
    forget_if_drop_panics(payload);
    Status::internal(site.client_message())
}

/// A caught panic in a hook of `interceptors`: the site names the link a
/// [`Blame`] noted in `ctx`, or else `interceptors` itself. The link is
/// recorded as the interceptor that ended the call.
#[cold]
#[inline(never)]
pub(crate) fn caught_in_hook<I: Interceptor>(
    ctx: &CallContext,
    interceptors: &I,
    hook: &'static str,
    payload: Box<dyn Any + Send>,
) -> Status {
    let interceptor = ctx.blamed(hook).unwrap_or_else(|| name_of(interceptors));
    caught_in(ctx, interceptor, hook, payload)
}

/// A caught panic in `hook` of the interceptor named `interceptor`, which is
/// recorded as the one that ended the call.
#[cold]
#[inline(never)]
pub(crate) fn caught_in(
    ctx: &CallContext,
    interceptor: &'static str,
    hook: &'static str,
    payload: Box<dyn Any + Send>,
) -> Status {
    ctx.mark_ended_by(interceptor);
    caught(ctx.method(), Site::Hook { interceptor, hook }, payload)
}

/// `interceptor.name()`, or its type's name should `name` itself panic.
pub(crate) fn name_of<I: Interceptor + ?Sized>(interceptor: &I) -> &'static str {
    catch(|| interceptor.name()).unwrap_or_else(|payload| {
        forget_if_drop_panics(payload);
        std::any::type_name::<I>()
    })
}

/// The message a panic was raised with (`panic!("..")`'s text), if it has
/// one.
fn message(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "(a panic payload that is not a string)"
    }
}

/// Drops a panic payload, unless dropping it panics too: then it is leaked,
/// as `std::panic::catch_unwind`'s documentation advises.
fn forget_if_drop_panics(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch(move || drop(payload)) {
        std::mem::forget(again);
    }
}

/// Runs `f`, a hook of `link`, with a [`Blame`] on it.
#[inline(always)]
pub(crate) fn blaming<A: Interceptor, R>(ctx: &CallContext, link: &A, hook: &'static str, f: impl FnOnce() -> R) -> R {
    let blame = Blame { ctx, link, hook };
    let result = f();
    std::mem::forget(blame);
    result
}

/// Left on a link of a [`Chain`](crate::Chain) while it runs a hook: if the
/// hook unwinds, its drop notes the link's name and the hook in the call's
/// context, for the engine's catch to log. The innermost blame is dropped
/// first, so the link that panicked is the one noted. [`blaming`] forgets it
/// once the hook returned.
struct Blame<'a, A: Interceptor> {
    ctx: &'a CallContext,
    link: &'a A,
    hook: &'static str,
}

impl<A: Interceptor> Drop for Blame<'_, A> {
    // Runs only while a hook unwinds: `name_of` catches a panicking `name`,
    // so that nothing unwinds out of this drop (which would abort).
    fn drop(&mut self) {
        let name = name_of(self.link);
        let _ = catch(|| self.ctx.blame(name, self.hook));
    }
}
