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

#[cfg(test)]
mod tests {
    use std::{future::poll_fn, pin::pin, time::Duration};

    use tokio::time::Instant;
    use tonic::codegen::http;

    use super::*;

    /// A reset of the request stream with `reason` as the server's h2
    /// reports it, sent by the client (`by_client`) or by the server itself,
    /// made by an h2 client and server over an in-memory connection.
    async fn a_reset(reason: h2::Reason, by_client: bool) -> h2::Error {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut connection = h2::server::handshake(server_io).await.expect("a server handshake");
            let (request, mut respond) = connection.accept().await.expect("a request").expect("a stream");
            tokio::spawn(async move { while connection.accept().await.is_some() {} });
            let mut body = request.into_body();
            let error = loop {
                match body.data().await.expect("data, then the reset") {
                    Ok(_) if !by_client => respond.send_reset(reason),
                    Ok(_) => continue,
                    Err(error) => break error,
                }
            };
            drop(respond);
            error
        });
        let (mut client, connection) = h2::client::handshake(client_io).await.expect("a client handshake");
        tokio::spawn(connection);
        let request = http::Request::post("http://test/upload").body(()).expect("a request");
        let (_response, mut upload) = client.send_request(request, false).expect("sent");
        upload.send_data(Bytes::from_static(b"part"), false).expect("data");
        if by_client {
            upload.send_reset(reason);
        }
        let error = server.await.expect("the server's task");
        drop(upload);
        error
    }

    async fn a_clients_cancel() -> h2::Error {
        a_reset(h2::Reason::CANCEL, true).await
    }

    /// A request body that fails with its error.
    struct Failing<E>(Option<E>);

    impl<E: std::error::Error + Send + Sync + Unpin + 'static> Body for Failing<E> {
        type Data = Bytes;
        type Error = E;

        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, E>>> {
            Poll::Ready(self.0.take().map(Err))
        }
    }

    /// What the tap records of a request body failing with `error`, for a
    /// call that counts as timed out from `timed_out_from`.
    async fn recorded<E>(error: E, timed_out_from: Option<Instant>) -> String
    where
        E: std::error::Error + Send + Sync + Unpin + 'static,
    {
        let tap = Arc::new(Tap::new(timed_out_from));
        let mut body = pin!(RequestBody::new(Failing(Some(error)), tap.clone()));
        let polled = poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        assert!(matches!(polled, Some(Err(_))), "the error passes on");
        tap.request_failure().expect("a failure recorded").message().to_owned()
    }

    #[tokio::test]
    async fn a_clients_cancel_past_its_deadline_is_the_deadline() {
        let later = Some(Instant::now() + Duration::from_secs(60));
        assert_eq!(recorded(a_clients_cancel().await, None).await, "the client cancelled the call");
        assert_eq!(recorded(a_clients_cancel().await, later).await, "the client cancelled the call");
        assert_eq!(recorded(a_clients_cancel().await, Some(Instant::now())).await, "Timeout expired");
        // Other failures past the deadline are what they are.
        let lost = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let lost = recorded(lost, Some(Instant::now())).await;
        assert!(lost.starts_with("the connection to the client was lost"), "{lost}");
        let refused = recorded(a_reset(h2::Reason::REFUSED_STREAM, true).await, Some(Instant::now())).await;
        assert_eq!(refused, "the client reset the stream (REFUSED_STREAM)");
    }

    #[tokio::test]
    async fn only_a_cancel_the_client_sent_is_the_clients() {
        let cancelled =
            |error: h2::Error| super::super::failure::client_cancelled(&Status::from_error(Box::new(error)));
        assert!(cancelled(a_clients_cancel().await));
        assert!(!cancelled(a_reset(h2::Reason::CANCEL, false).await), "the server's own reset");
        assert!(!cancelled(a_reset(h2::Reason::REFUSED_STREAM, true).await), "another reason");
    }
}
