//! `Inbound<T>`: the client's stream as an intercepted handler receives it.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use futures_core::Stream;
use tonic::{metadata::MetadataMap, Status, Streaming};

use super::slow_path;
use crate::{
    engine::{take_message, CallContext, DirectionHandle},
    interceptor::Direction,
};

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
    handle: DirectionHandle<T>,
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
            .field("call", self.handle.context())
            .field("done", &self.handle.is_done(Direction::Inbound))
            .finish_non_exhaustive()
    }
}

impl<T: prost::Message + 'static> Inbound<T> {
    pub(crate) fn new(inner: Streaming<T>, handle: DirectionHandle<T>) -> Self {
        Inbound { inner, handle, pending: None }
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
        self.handle.context()
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
    /// The next item, shaped by `passed` when it is a message that passed
    /// unseen (the fast path) and by `other` otherwise.
    ///
    /// The message is looked at where `Streaming` wrote it. Passed unseen,
    /// it is moved on from there by [`take_message`], in words as wide as
    /// `Streaming`'s stores, so that the loads take them from the store
    /// buffer; a plain move, or the item returned whole, stalled on each
    /// message (see `engine::message`). One the hooks saw and passed goes
    /// out in its item as it came: a separate tail, so that the compiler
    /// does not merge it with the fast path's. Every other way off the fast
    /// path is out of line, in [`slow_path`].
    #[inline(always)]
    fn poll_shaped<R>(
        &mut self,
        cx: &mut Context<'_>,
        passed: impl FnOnce(T) -> R,
        other: impl FnOnce(Option<Result<T, Status>>) -> R,
    ) -> Poll<R> {
        if self.handle.is_done(Direction::Inbound) || self.pending.is_some() {
            return slow_path::poll_held::<T, false>(&mut self.handle, &mut self.pending, cx).map(other);
        }
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        let Poll::Ready(Some(Ok(message))) = &polled else {
            return slow_path::no_message::<T, false>(&mut self.handle, &mut self.pending, cx, polled).map(other);
        };
        if self.handle.passed_unseen(message, Direction::Inbound) {
            return Poll::Ready(passed(take_message(polled)));
        }
        let held = self.handle.poll_hooks(cx, message);
        if let Poll::Ready(Ok(())) = held {
            return polled.map(other);
        }
        slow_path::not_passed::<T, false>(&mut self.handle, &mut self.pending, held, polled).map(other)
    }
}
