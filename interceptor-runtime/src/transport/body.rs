//! The request and response bodies as [`InterceptLayer`](super::InterceptLayer)
//! watches them: one check per HTTP/2 frame, none per message.

use std::{
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use http_body::{Body, Frame, SizeHint};
use tonic::{codegen::Bytes, Status};

use super::{
    failure::{client_cancelled, request_broke},
    Ended, Tap,
};

pin_project_lite::pin_project! {
    /// A request body that records in the call's [`Tap`] how it failed, if
    /// it does. Its frames and errors pass unchanged: tonic's decoder still
    /// turns a CANCELLED error into a clean end, and the call's `Inbound`
    /// asks the tap when it sees that end.
    pub(crate) struct RequestBody<B> {
        #[pin]
        inner: B,
        tap: Arc<Tap>,
    }
}

impl<B> RequestBody<B> {
    pub(crate) fn new(inner: B, tap: Arc<Tap>) -> Self {
        RequestBody { inner, tap }
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Status;

    #[inline]
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
            None => Poll::Ready(None),
            Some(Err(error)) => {
                // As tonic would make it (a `Status` passes as it is, with
                // its source), so that the decoder sees the same error.
                let status = Status::from_error(error.into());
                // A gRPC client cancels its call when its deadline passes:
                // past the deadline, that is what ended the call, in the
                // words tonic's own timer would have used.
                let failure = match this.tap.deadline_expired() {
                    Some(expired) if client_cancelled(&status) => expired,
                    _ => request_broke(&status),
                };
                this.tap.record_request_failure(failure);
                Poll::Ready(Some(Err(status)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A response body that tells the call's tap when the response is over:
    /// its end (the trailers, or the end of the body) handed to HTTP/2, or
    /// the body dropped before that, which is a client that went away. The
    /// trailers' `grpc-status` is the call's status as the client gets it.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        // `None` once the response is over.
        tap: Option<Arc<Tap>>,
    }

    impl<B> PinnedDrop for ResponseBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(tap) = this.project().tap.take() {
                tap.response_ended(Ended::Dropped);
            }
        }
    }
}

impl<B: Body> ResponseBody<B> {
    pub(crate) fn new(inner: B, tap: Option<Arc<Tap>>) -> Self {
        // A body empty from the start (tonic's answer with an error status
        // in its headers) is sent with the headers, and never polled.
        if inner.is_end_stream() {
            if let Some(tap) = tap {
                tap.response_ended(Ended::Sent(None));
            }
            return ResponseBody { inner, tap: None };
        }
        ResponseBody { inner, tap }
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let polled = ready!(this.inner.as_mut().poll_frame(cx));
        if this.tap.is_some() {
            // `Some(end)` once the response is over.
            let over = match &polled {
                Some(Ok(frame)) => match frame.trailers_ref() {
                    Some(trailers) => Some(Ended::Sent(Status::from_header_map(trailers))),
                    None => this.inner.is_end_stream().then_some(Ended::Sent(None)),
                },
                None => Some(Ended::Sent(None)),
                Some(Err(_)) => Some(Ended::Dropped),
            };
            if let Some(end) = over {
                if let Some(tap) = this.tap.take() {
                    tap.response_ended(end);
                }
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
