//! [`Tap`]: what [`InterceptLayer`](super::InterceptLayer) saw of one call,
//! shared with the call's engine through the request's extensions.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::time::Instant;
use tonic::Status;

/// What the transport saw of one call: how its request body ended, and
/// whether its response's end was handed to HTTP/2. One per HTTP request,
/// made by the layer; the engine keeps a pointer to it in the call's
/// context (`Method::start` picks it out of the request's extensions).
pub(crate) struct Tap {
    /// Set, once, when the request body failed: the CANCELLED status the
    /// call ends with, with what happened (a reset, a lost connection).
    request_failure: OnceLock<Status>,
    /// Read and written once or twice per call: when the call's result is
    /// known, and when the response ends.
    response: Mutex<ResponseEnd>,
    /// From when the call counts as past its client's deadline, when the
    /// request had one (`grpc-timeout`).
    timed_out_from: Option<Instant>,
}

/// Where the response stands.
enum ResponseEnd {
    /// Not over yet. A call whose result was OK waits here: it is over when
    /// the response is.
    Open(Option<Arc<dyn Deferred>>),
    /// Over: its end was handed to HTTP/2 (`sent`), with the status its
    /// trailers carry (`Ok` for none or OK), or the response was dropped
    /// before (not `sent`, the CANCELLED status the call ends with).
    Ended { result: Result<(), Status>, sent: bool },
}

/// How a response ended.
pub(crate) enum Ended {
    /// Its end was handed to HTTP/2, with the status its trailers carry,
    /// if they carry one.
    Sent(Option<Status>),
    /// It was dropped before its end.
    Dropped,
}

/// A call whose OK waits for the end of its response; the engine's call
/// cell implements it.
pub(crate) trait Deferred: Send + Sync {
    /// Ends the call with `result`, now final.
    fn finish(&self, result: Result<(), Status>);
}

impl Tap {
    pub(crate) fn new(timed_out_from: Option<Instant>) -> Self {
        Tap { request_failure: OnceLock::new(), response: Mutex::new(ResponseEnd::Open(None)), timed_out_from }
    }

    /// tonic's status for a call dropped once its client's deadline passed,
    /// if it has one and it has.
    pub(crate) fn deadline_expired(&self) -> Option<Status> {
        self.timed_out_from.filter(|&from| super::deadline::passed(from)).map(|_| super::deadline::expired())
    }

    /// The request body failed; `status` is what the call ends with. The
    /// first failure is kept.
    pub(crate) fn record_request_failure(&self, status: Status) {
        let _ = self.request_failure.set(status);
    }

    /// The CANCELLED status of a request body that failed, if it did.
    #[inline]
    pub(crate) fn request_failure(&self) -> Option<&Status> {
        self.request_failure.get()
    }

    /// The call's server side is done, with OK: it is over when the
    /// response is. `None`: `call` is held until then. `Some(result)`: the
    /// response is already over, and `result` is how the call ends.
    pub(crate) fn hold_until_sent(&self, call: Arc<dyn Deferred>) -> Option<Result<(), Status>> {
        let mut response = self.response.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *response {
            ResponseEnd::Open(held) => {
                *held = Some(call);
                None
            }
            ResponseEnd::Ended { result, .. } => Some(result.clone()),
        }
    }

    /// The error status the response's trailers carried to the client, if
    /// its end was sent with one while the call's own end was still to
    /// come: tonic's encoder fails a response stream that way (a message
    /// over `max_encoding_message_size`, say), and drops the stream after.
    pub(crate) fn sent_error(&self) -> Option<Status> {
        match &*self.response.lock().unwrap_or_else(PoisonError::into_inner) {
            ResponseEnd::Ended { result: Err(status), sent: true } => Some(status.clone()),
            _ => None,
        }
    }

    /// The response is over. A call held until then ends now: OK if the
    /// response's end was sent with an OK status (or none: not a gRPC
    /// response), with the status its trailers carry otherwise (tonic's, for
    /// a response it failed to encode, say); CANCELLED if it was dropped
    /// before its end.
    pub(crate) fn response_ended(&self, end: Ended) {
        let sent = matches!(end, Ended::Sent(_));
        let result = match end {
            Ended::Sent(None) => Ok(()),
            Ended::Sent(Some(status)) if status.code() == tonic::Code::Ok => Ok(()),
            Ended::Sent(Some(status)) => Err(status),
            Ended::Dropped => Err(self
                .request_failure()
                .cloned()
                .unwrap_or_else(|| Status::cancelled("the client went away before the response was sent"))),
        };
        let held = {
            let mut response = self.response.lock().unwrap_or_else(PoisonError::into_inner);
            match std::mem::replace(&mut *response, ResponseEnd::Ended { result: result.clone(), sent }) {
                ResponseEnd::Open(held) => held,
                // Ended once already: the first end stands.
                ended @ ResponseEnd::Ended { .. } => {
                    *response = ended;
                    None
                }
            }
        };
        // Outside the lock: `finish` runs the interceptors' `on_end`.
        if let Some(call) = held {
            call.finish(result);
        }
    }
}
