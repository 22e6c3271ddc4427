//! `Inbound<T>`: the client's stream as an intercepted handler receives it.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use futures_core::Stream;
use tonic::{metadata::MetadataMap, Status, Streaming};

use crate::{__private::Tap, call::CallContext, interceptor::Direction};

/// A [`tonic::Streaming<T>`] whose messages pass the method's interceptors
/// before the handler sees them.
///
/// It offers `Streaming`'s API ([`message`](Self::message), [`Stream`],
/// [`trailers`](Self::trailers)), so a handler body written for `Streaming`
/// compiles unchanged under `#[intercept]`. When an interceptor rejects a
/// message or the call is ended (a budget, a timer, the other direction),
/// the stream yields that status once and then ends.
pub struct Inbound<T> {
    inner: Streaming<T>,
    tap: Tap<T>,
    /// A message an interceptor holds back (a rate limit, say); boxed, as it
    /// is rare, so that a stream that holds none stays small.
    pending: Option<Box<T>>,
}

// No field is structurally pinned: `Streaming` is `Unpin` and the message
// held back is only ever moved.
impl<T> Unpin for Inbound<T> {}

impl<T: 'static> fmt::Debug for Inbound<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbound")
            .field("call", self.tap.context())
            .field("done", &self.tap.is_done(Direction::Inbound))
            .finish_non_exhaustive()
    }
}

impl<T: prost::Message + 'static> Inbound<T> {
    pub(crate) fn new(inner: Streaming<T>, tap: Tap<T>) -> Self {
        Inbound { inner, tap, pending: None }
    }

    /// The next message: `Ok(None)` at the end of the stream, like
    /// [`Streaming::message`].
    #[inline]
    pub fn message(&mut self) -> impl Future<Output = Result<Option<T>, Status>> + '_ {
        NextMessage(self)
    }

    /// The client's trailers, like [`Streaming::trailers`].
    pub async fn trailers(&mut self) -> Result<Option<MetadataMap>, Status> {
        self.inner.trailers().await
    }

    /// The call this stream belongs to.
    pub fn context(&self) -> &CallContext {
        self.tap.context()
    }

    /// The plain stream, without interceptors from here on. A message an
    /// interceptor was holding back is dropped.
    pub fn into_inner(self) -> Streaming<T> {
        self.inner
    }
}

/// What [`Inbound::message`] returns.
struct NextMessage<'a, T>(&'a mut Inbound<T>);

impl<T: prost::Message + 'static> Future for NextMessage<'_, T> {
    type Output = Result<Option<T>, Status>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().0.poll_shaped(cx, |message| Ok(Some(message)), Option::transpose)
    }
}

impl<T: prost::Message + 'static> Stream for Inbound<T> {
    type Item = Result<T, Status>;

    #[inline(always)]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_shaped(cx, |message| Some(Ok(message)), |item| item)
    }
}

impl<T: prost::Message + 'static> Inbound<T> {
    /// The next item, shaped by `passed` when it is a message the
    /// interceptors passed (every message, on the fast path) and by `other`
    /// otherwise.
    ///
    /// The message is read out of the place `Streaming` wrote it to, field
    /// by field, into what the caller gets: inlined into the handler's
    /// future, nothing copies the whole item. Such a copy (wide loads of a
    /// value just written field by field) misses store forwarding and cost
    /// 5 ns per message, most of what the interceptors added at 16 B. Every
    /// way off the fast path is out of line.
    #[inline(always)]
    fn poll_shaped<R>(
        &mut self,
        cx: &mut Context<'_>,
        passed: impl FnOnce(T) -> R,
        other: impl FnOnce(Option<Result<T, Status>>) -> R,
    ) -> Poll<R> {
        if self.tap.is_done(Direction::Inbound) || self.pending.is_some() {
            return self.poll_held(cx).map(other);
        }
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        let Poll::Ready(Some(Ok(message))) = &polled else { return self.no_message(cx, polled).map(other) };
        let held = self.tap.poll_message(cx, message);
        if let Poll::Ready(Ok(())) = held {
            if let Poll::Ready(Some(Ok(message))) = polled {
                return Poll::Ready(passed(message));
            }
        }
        self.not_passed(held, polled).map(other)
    }

    /// The stream is over, or a message is held back: runs the interceptors
    /// again on the message held back.
    #[cold]
    #[inline(never)]
    fn poll_held(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, Status>>> {
        if self.tap.is_done(Direction::Inbound) {
            return Poll::Ready(None);
        }
        match self.pending.take() {
            Some(message) => self.pass(cx, *message),
            None => Poll::Pending,
        }
    }

    /// The interceptors did not pass the message `polled` holds: they
    /// rejected it (the stream yields the status), or hold it back.
    #[cold]
    #[inline(never)]
    fn not_passed(
        &mut self,
        held: Poll<Result<(), Status>>,
        polled: Poll<Option<Result<T, Status>>>,
    ) -> Poll<Option<Result<T, Status>>> {
        match held {
            Poll::Ready(Ok(())) => polled,
            Poll::Ready(Err(status)) => Poll::Ready(Some(Err(status))),
            Poll::Pending => {
                if let Poll::Ready(Some(Ok(message))) = polled {
                    self.pending = Some(Box::new(message));
                }
                Poll::Pending
            }
        }
    }

    /// Runs the interceptors on `message` (one held back before).
    fn pass(&mut self, cx: &mut Context<'_>, message: T) -> Poll<Option<Result<T, Status>>> {
        match self.tap.poll_message(cx, &message) {
            Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(message))),
            Poll::Ready(Err(status)) => Poll::Ready(Some(Err(status))),
            Poll::Pending => {
                self.pending = Some(Box::new(message));
                Poll::Pending
            }
        }
    }

    /// What `Streaming` gave when it was not a message: the end of the
    /// stream, its error, or nothing yet (the call may have been ended
    /// meanwhile).
    #[inline(never)]
    fn no_message(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<Option<Result<T, Status>>>,
    ) -> Poll<Option<Result<T, Status>>> {
        match polled {
            Poll::Ready(Some(Ok(message))) => self.pass(cx, message),
            Poll::Ready(Some(Err(status))) => Poll::Ready(self.tap.end(Err(status)).map(Err)),
            Poll::Ready(None) => Poll::Ready(self.tap.end(Ok(())).map(Err)),
            Poll::Pending => self.tap.poll_interrupt(cx).map(|status| Some(Err(status))),
        }
    }
}
