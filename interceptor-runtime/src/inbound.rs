//! `Inbound<T>`: the client's stream as an intercepted handler receives it.

use std::{
    fmt,
    future::poll_fn,
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
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        match poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await {
            Some(Ok(message)) => Ok(Some(message)),
            Some(Err(status)) => Err(status),
            None => Ok(None),
        }
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

impl<T: prost::Message + 'static> Stream for Inbound<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.tap.is_done(Direction::Inbound) {
            return Poll::Ready(None);
        }
        if this.pending.is_some() {
            return this.pass_pending(cx);
        }
        // The message stays where `Streaming` wrote it while the interceptors
        // look at it, and is returned in place: moving a value just written
        // field by field into another place stalls the load on store
        // forwarding, which shows at 16 B messages.
        let polled = Pin::new(&mut this.inner).poll_next(cx);
        let Poll::Ready(Some(Ok(message))) = &polled else { return this.no_message(cx, polled) };
        match this.tap.poll_message(cx, message) {
            Poll::Ready(Ok(())) => polled,
            Poll::Ready(Err(status)) => Poll::Ready(Some(Err(status))),
            Poll::Pending => {
                if let Poll::Ready(Some(Ok(message))) = polled {
                    this.pending = Some(Box::new(message));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: prost::Message + 'static> Inbound<T> {
    /// Runs the interceptors again on the message held back.
    #[cold]
    fn pass_pending(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, Status>>> {
        match self.pending.take() {
            Some(message) => self.pass(cx, *message),
            None => Poll::Pending,
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
