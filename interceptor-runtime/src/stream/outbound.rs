//! `Outbound<S>`: the handler's response stream as the client receives it.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use futures_core::{Stream, TryStream};
use pin_project_lite::pin_project;
use tonic::Status;

use super::slow_path;
use crate::{
    engine::{catch_item, CallContext, DirectionHandle},
    interceptor::Direction,
};

pin_project! {
    /// A response stream whose messages pass the method's interceptors before
    /// they go to the client. It ends the call: OK at its end, the error it
    /// yields, INTERNAL if it panics, or CANCELLED when tonic drops it before
    /// its end because the client went away.
    ///
    /// `#[intercept]` on an impl rewrites `type XStream = S;` into
    /// `type XStream = Outbound<S>;` for you. With `#[intercept]` on the method
    /// alone, write that rewrite yourself, or use a boxed stream type
    /// (`BoxStream<T>`, `Pin<Box<dyn Stream<..> + Send>>`, also with
    /// `+ Sync`), which the wrapper is boxed back into.
    pub struct Outbound<S>
    where
        S: TryStream,
    {
        #[pin]
        inner: S,
        handle: DirectionHandle<S::Ok>,
        // Boxed, as in `Inbound`.
        pending: Option<Box<S::Ok>>,
    }
}

impl<S: TryStream> fmt::Debug for Outbound<S>
where
    S::Ok: 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbound")
            .field("call", self.handle.context())
            .field("done", &self.handle.is_done(Direction::Outbound))
            .finish_non_exhaustive()
    }
}

impl<S: TryStream> Outbound<S>
where
    S::Ok: 'static,
{
    pub(crate) fn new(inner: S, handle: DirectionHandle<S::Ok>) -> Self {
        Outbound { inner, handle, pending: None }
    }

    /// The call this stream belongs to.
    pub fn context(&self) -> &CallContext {
        self.handle.context()
    }
}

impl<S> Stream for Outbound<S>
where
    S: TryStream<Error = Status>,
    S::Ok: prost::Message + 'static,
{
    type Item = Result<S::Ok, Status>;

    // As in `Inbound`: the message is looked at where the inner stream wrote
    // it, and the item moved on from there in words whose loads and stores
    // do not stall (`catch_item`); every way off the fast path is out of
    // line, in `slow_path`.
    #[inline]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        if this.handle.is_done(Direction::Outbound) || this.pending.is_some() {
            return slow_path::poll_held::<S::Ok, true>(this.handle, this.pending, cx);
        }
        // A panic of the inner stream is caught (costing nothing until it
        // happens): the call ends with INTERNAL, which the client receives.
        // The whole fast path is inside the catch, and hands the item out
        // of it in 16-byte words, as tonic's encoder reads it.
        let (inner, handle, pending) = (this.inner, this.handle, this.pending);
        catch_item(
            handle,
            |handle, out| {
                let polled = inner.try_poll_next(cx);
                let Poll::Ready(Some(Ok(message))) = &polled else {
                    return out.put(slow_path::no_message::<S::Ok, true>(handle, pending, cx, polled));
                };
                if handle.passed_unseen(message, Direction::Outbound) {
                    return out.put_wide(polled);
                }
                let held = handle.poll_hooks(cx, message);
                if let Poll::Ready(Ok(())) = held {
                    return out.put_wide(polled);
                }
                out.put(slow_path::not_passed::<S::Ok, true>(handle, pending, held, polled))
            },
            slow_path::stream_panicked,
        )
    }
}

/// A response stream type an intercepted handler may return: the handler body
/// produces `Inner`, the client gets `Self`.
///
/// Implemented for [`Outbound<S>`](Outbound) and for a boxed stream,
/// `Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>` (that is
/// `tonic::codegen::BoxStream<T>`) or `.. + Send + Sync>>`, and sealed: the
/// expansion relies on these impls alone.
#[diagnostic::on_unimplemented(
    message = "`#[intercept]` cannot wrap the response stream type `{Self}`",
    label = "the handler's declared stream type",
    note = "put `#[intercept(..)]` on the impl block (above `#[tonic::async_trait]`): it rewrites `type XStream = S;` for you",
    note = "or declare `type XStream = interceptor_runtime::Outbound<S>;`, or use a boxed stream (`tonic::codegen::BoxStream<T>`)",
    note = "a reply that is one message must be a `prost::Message`: messages of another codec (JSON, say) cannot be intercepted"
)]
pub trait OutboundStream: sealed::Sealed + Sized {
    /// What the handler body returns.
    type Inner;
    /// The message type.
    type Message: prost::Message + 'static;
    #[doc(hidden)]
    fn wrap(inner: Self::Inner, handle: DirectionHandle<Self::Message>) -> Self;
}

/// Only this crate implements [`OutboundStream`]: the expansion relies on
/// `wrap` being one of the impls below.
mod sealed {
    pub trait Sealed {}
}

impl<S> sealed::Sealed for Outbound<S>
where
    S: TryStream<Error = Status>,
    S::Ok: prost::Message + 'static,
{
}

impl<S> OutboundStream for Outbound<S>
where
    S: TryStream<Error = Status>,
    S::Ok: prost::Message + 'static,
{
    type Inner = S;
    type Message = S::Ok;
    fn wrap(inner: S, handle: DirectionHandle<S::Ok>) -> Self {
        Outbound::new(inner, handle)
    }
}

// The message must be `Sync` where the box is: the wrapper may hold one
// back.
macro_rules! boxed_stream {
    ($($message_bounds:path),* ; $($bounds:tt)*) => {
        impl<T: prost::Message + 'static $(+ $message_bounds)*> sealed::Sealed
            for Pin<Box<dyn Stream<Item = Result<T, Status>> $($bounds)*>>
        {
        }

        impl<T: prost::Message + 'static $(+ $message_bounds)*> OutboundStream
            for Pin<Box<dyn Stream<Item = Result<T, Status>> $($bounds)*>>
        {
            type Inner = Self;
            type Message = T;
            fn wrap(inner: Self, handle: DirectionHandle<T>) -> Self {
                Box::pin(Outbound::new(inner, handle))
            }
        }
    };
}
boxed_stream!(; + Send + 'static);
boxed_stream!(Sync; + Send + Sync + 'static);
