//! How a call ended.

use std::time::Duration;

use tonic::{Code, Status};

use super::CallStats;

/// How a call ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// `Ok`, the handler's or stream's error code, `Cancelled` when the client
    /// went away, `Internal` when the handler, its response stream or an
    /// interceptor panicked, or the code of the interceptor that ended it.
    pub code: Code,
    /// The status message (empty for OK).
    pub message: String,
    /// The interceptor that ended the call (`"budget"`, `"rate"`, ...), if one did.
    pub ended_by: Option<&'static str>,
    /// Final counts.
    pub stats: CallStats,
    /// From the start of the call to its end.
    pub duration: Duration,
}

/// The status of a call whose handler or response stream was dropped before
/// it ended: hyper drops them when the client resets the stream or its
/// connection is lost, and does not say which.
pub(super) fn gone() -> Status {
    if std::thread::panicking() {
        Status::internal("the handler panicked")
    } else {
        Status::cancelled("the client went away")
    }
}
