//! The ways off the fast path of [`Inbound`](crate::Inbound) and
//! [`Outbound`](crate::Outbound), which they share: a message held back, a
//! rejection, the end of the inner stream, its error, nothing ready yet.
//!
//! `OUT` is the direction: the outbound stream owns the end of the call, so
//! when its interceptors end it, it ends the call with their status; the
//! inbound stream yields the status to the handler, which returns it.
//!
//! The inbound stream's end is where a client that went away shows: tonic
//! reports a request the client reset as a clean end, and a lost connection
//! as an error of the transport's. [`client_gone`] tells them apart from a
//! real end or error, and ends the call CANCELLED.

use std::task::{Context, Poll};

use tonic::Status;

use crate::{
    engine::{panic, DirectionHandle},
    interceptor::Direction,
    transport::transport_failure,
};

/// What a wrapper yields.
type Item<T> = Poll<Option<Result<T, Status>>>;

const fn direction<const OUT: bool>() -> Direction {
    if OUT {
        Direction::Outbound
    } else {
        Direction::Inbound
    }
}

/// The interceptors ended the direction with `status`: what it yields last.
fn ended<T, const OUT: bool>(handle: &mut DirectionHandle<T>, status: Status) -> Option<Status> {
    if OUT {
        handle.end(Err(status))
    } else {
        Some(status)
    }
}

/// The stream is over, or a message is held back: runs the interceptors
/// again on the message held back.
#[cold]
#[inline(never)]
pub(crate) fn poll_held<T: prost::Message, const OUT: bool>(
    handle: &mut DirectionHandle<T>,
    pending: &mut Option<Box<T>>,
    cx: &mut Context<'_>,
) -> Item<T> {
    if handle.is_done(direction::<OUT>()) {
        return Poll::Ready(None);
    }
    match pending.take() {
        Some(message) => pass::<T, OUT>(handle, pending, cx, *message),
        None => Poll::Pending,
    }
}

/// The interceptors did not pass the message `polled` holds (`held` says
/// what they did instead): they rejected it, or hold it back.
#[cold]
#[inline(never)]
pub(crate) fn not_passed<T: prost::Message, const OUT: bool>(
    handle: &mut DirectionHandle<T>,
    pending: &mut Option<Box<T>>,
    held: Poll<Result<(), Status>>,
    polled: Item<T>,
) -> Item<T> {
    match held {
        Poll::Ready(Ok(())) => polled,
        Poll::Ready(Err(status)) => Poll::Ready(ended::<T, OUT>(handle, status).map(Err)),
        Poll::Pending => {
            if let Poll::Ready(Some(Ok(message))) = polled {
                *pending = Some(Box::new(message));
            }
            Poll::Pending
        }
    }
}

/// Runs the interceptors on `message` (one held back before).
fn pass<T: prost::Message, const OUT: bool>(
    handle: &mut DirectionHandle<T>,
    pending: &mut Option<Box<T>>,
    cx: &mut Context<'_>,
    message: T,
) -> Item<T> {
    match handle.poll_message(cx, &message, direction::<OUT>()) {
        Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(message))),
        Poll::Ready(Err(status)) => Poll::Ready(ended::<T, OUT>(handle, status).map(Err)),
        Poll::Pending => {
            *pending = Some(Box::new(message));
            Poll::Pending
        }
    }
}

/// What the inner stream gave when it was not a message: its end, its error,
/// or nothing yet (the call may have been ended meanwhile).
#[inline(never)]
pub(crate) fn no_message<T: prost::Message, const OUT: bool>(
    handle: &mut DirectionHandle<T>,
    pending: &mut Option<Box<T>>,
    cx: &mut Context<'_>,
    polled: Item<T>,
) -> Item<T> {
    match polled {
        Poll::Ready(Some(Ok(message))) => pass::<T, OUT>(handle, pending, cx, message),
        Poll::Ready(Some(Err(status))) => {
            let result = Err(status);
            Poll::Ready(if OUT { handle.end(result) } else { client_gone(handle, result) }.map(Err))
        }
        Poll::Ready(None) => Poll::Ready(if OUT { handle.end(Ok(())) } else { client_gone(handle, Ok(())) }.map(Err)),
        Poll::Pending => handle.poll_interrupt(cx).map(|status| ended::<T, OUT>(handle, status).map(Err)),
    }
}

/// The inner response stream panicked: the call ends with INTERNAL, the
/// stream's last item.
#[cold]
#[inline(never)]
pub(crate) fn stream_panicked<T>(handle: &mut DirectionHandle<T>, payload: Box<dyn std::any::Any + Send>) -> Item<T> {
    let status = panic::caught(handle.context().method(), panic::Site::ResponseStream, payload);
    Poll::Ready(handle.end(Err(status)).map(Err))
}

/// The inbound stream ended with `result` (`Ok`: tonic's clean end). If the
/// request broke below tonic instead (the client reset the stream, or its
/// connection was lost: what [`InterceptLayer`](crate::InterceptLayer) saw, or
/// the transport's error tonic passed on), the whole call ends CANCELLED,
/// with what happened, and that is what the handler gets.
fn client_gone<T>(handle: &mut DirectionHandle<T>, result: Result<(), Status>) -> Option<Status> {
    let ctx = handle.context();
    let gone = ctx.request_failure().or_else(|| result.as_ref().err().and_then(transport_failure));
    match gone {
        Some(cancelled) => {
            ctx.terminate(&cancelled);
            handle.end(Err(cancelled))
        }
        None => handle.end(result),
    }
}
