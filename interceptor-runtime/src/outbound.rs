//! `Outbound<S>`: the handler's response stream as the client receives it.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use futures_core::{Stream, TryStream};
use pin_project_lite::pin_project;
use tonic::Status;

use crate::{__private::Tap, call::CallContext, interceptor::Direction};

pin_project! {
    /// A response stream whose messages pass the method's interceptors before
    /// they go to the client. It ends the call: OK at its end, the error it
    /// yields, or CANCELLED when tonic drops it before its end because the
    /// client went away.
    ///
    /// `#[intercept]` on an impl rewrites `type XStream = S;` into
    /// `type XStream = Outbound<S>;` for you. With `#[intercept]` on the method
    /// alone, write that rewrite yourself, or use a boxed stream type
    /// (`BoxStream<T>`, `Pin<Box<dyn Stream<..> + Send>>`), which the wrapper
    /// is boxed back into.
    pub struct Outbound<S>
    where
        S: TryStream,
    {
        #[pin]
        inner: S,
        tap: Tap<S::Ok>,
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
            .field("call", self.tap.context())
            .field("done", &self.tap.is_done(Direction::Outbound))
            .finish_non_exhaustive()
    }
}

impl<S: TryStream> Outbound<S>
where
    S::Ok: 'static,
{
    pub(crate) fn new(inner: S, tap: Tap<S::Ok>) -> Self {
        Outbound { inner, tap, pending: None }
    }

    /// The call this stream belongs to.
    pub fn context(&self) -> &CallContext {
        self.tap.context()
    }
}

impl<S> Stream for Outbound<S>
where
    S: TryStream<Error = Status>,
    S::Ok: 'static,
{
    type Item = Result<S::Ok, Status>;

    // As in `Inbound`: the message is looked at where the inner stream wrote
    // it and read out of there field by field, never copied whole; every way
    // off the fast path is out of line.
    #[inline]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        if this.tap.is_done(Direction::Outbound) || this.pending.is_some() {
            return poll_held(this.tap, this.pending, cx);
        }
        let polled = this.inner.try_poll_next(cx);
        let Poll::Ready(Some(Ok(message))) = &polled else {
            return no_message(this.tap, this.pending, cx, polled);
        };
        let held = this.tap.poll_message(cx, message);
        if let Poll::Ready(Ok(())) = held {
            if let Poll::Ready(Some(Ok(message))) = polled {
                return Poll::Ready(Some(Ok(message)));
            }
        }
        not_passed(this.tap, this.pending, held, polled)
    }
}

/// The stream is over, or a message is held back: runs the interceptors
/// again on the message held back.
#[cold]
#[inline(never)]
fn poll_held<T: 'static>(
    tap: &mut Tap<T>,
    pending: &mut Option<Box<T>>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<T, Status>>> {
    if tap.is_done(Direction::Outbound) {
        return Poll::Ready(None);
    }
    match pending.take() {
        Some(message) => pass(tap, pending, cx, *message),
        None => Poll::Pending,
    }
}

/// The interceptors did not pass the message `polled` holds: they rejected
/// it, which ends the call, or hold it back.
#[cold]
#[inline(never)]
fn not_passed<T: 'static>(
    tap: &mut Tap<T>,
    pending: &mut Option<Box<T>>,
    held: Poll<Result<(), Status>>,
    polled: Poll<Option<Result<T, Status>>>,
) -> Poll<Option<Result<T, Status>>> {
    match held {
        Poll::Ready(Ok(())) => polled,
        Poll::Ready(Err(status)) => Poll::Ready(tap.end(Err(status)).map(Err)),
        Poll::Pending => {
            if let Poll::Ready(Some(Ok(message))) = polled {
                *pending = Some(Box::new(message));
            }
            Poll::Pending
        }
    }
}

/// Runs the interceptors on `message` (one held back before).
fn pass<T: 'static>(
    tap: &mut Tap<T>,
    pending: &mut Option<Box<T>>,
    cx: &mut Context<'_>,
    message: T,
) -> Poll<Option<Result<T, Status>>> {
    match tap.poll_message(cx, &message) {
        Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(message))),
        Poll::Ready(Err(status)) => Poll::Ready(tap.end(Err(status)).map(Err)),
        Poll::Pending => {
            *pending = Some(Box::new(message));
            Poll::Pending
        }
    }
}

/// What the inner stream gave when it was not a message: its end, its error,
/// or nothing yet (the call may have been ended meanwhile).
#[inline(never)]
fn no_message<T: 'static>(
    tap: &mut Tap<T>,
    pending: &mut Option<Box<T>>,
    cx: &mut Context<'_>,
    polled: Poll<Option<Result<T, Status>>>,
) -> Poll<Option<Result<T, Status>>> {
    match polled {
        Poll::Ready(Some(Ok(message))) => pass(tap, pending, cx, message),
        Poll::Ready(Some(Err(status))) => Poll::Ready(tap.end(Err(status)).map(Err)),
        Poll::Ready(None) => Poll::Ready(tap.end(Ok(())).map(Err)),
        Poll::Pending => match tap.poll_interrupt(cx) {
            Poll::Ready(status) => Poll::Ready(tap.end(Err(status)).map(Err)),
            Poll::Pending => Poll::Pending,
        },
    }
}

/// A response stream type an intercepted handler may return: the handler body
/// produces `Inner`, the client gets `Self`.
#[diagnostic::on_unimplemented(
    message = "`#[intercept]` cannot wrap the response stream type `{Self}`",
    label = "the handler's declared stream type",
    note = "put `#[intercept(..)]` on the impl block (above `#[tonic::async_trait]`): it rewrites `type XStream = S;` for you",
    note = "or declare `type XStream = interceptor_runtime::Outbound<S>;`, or use a boxed stream (`tonic::codegen::BoxStream<T>`)"
)]
pub trait OutboundStream: Sized {
    /// What the handler body returns.
    type Inner;
    /// The message type.
    type Message: prost::Message + 'static;
    #[doc(hidden)]
    fn wrap(inner: Self::Inner, tap: Tap<Self::Message>) -> Self;
}

impl<S> OutboundStream for Outbound<S>
where
    S: TryStream<Error = Status>,
    S::Ok: prost::Message + 'static,
{
    type Inner = S;
    type Message = S::Ok;
    fn wrap(inner: S, tap: Tap<S::Ok>) -> Self {
        Outbound::new(inner, tap)
    }
}

macro_rules! boxed_stream {
    ($($bounds:tt)*) => {
        impl<T: prost::Message + 'static> OutboundStream
            for Pin<Box<dyn Stream<Item = Result<T, Status>> $($bounds)*>>
        {
            type Inner = Self;
            type Message = T;
            fn wrap(inner: Self, tap: Tap<T>) -> Self {
                Box::pin(Outbound::new(inner, tap))
            }
        }
    };
}
boxed_stream!(+ Send + 'static);
