//! What a request stream's error says about the client: the CANCELLED
//! status a call ends with when its request broke below tonic.

use std::{error::Error, sync::Arc};

use tonic::Status;

/// The CANCELLED status for a request stream that failed with `status`,
/// when the failure came from the transport: the client reset the stream,
/// or closed or lost its connection. `None` for any other error (a message
/// that failed to decode, say), which keeps its own code.
///
/// tonic's errors keep what they came from in their source chain: an
/// `h2::Error` (below a `hyper::Error`) says which of these it was. The
/// status made keeps `status` as its source, so that a handler can still
/// walk down to the `h2::Error` or `std::io::Error` (tonic's streaming
/// example looks there for a broken pipe).
pub(crate) fn transport_failure(status: &Status) -> Option<Status> {
    let failure = sources(status).find_map(|error| match error.downcast_ref::<h2::Error>() {
        Some(h2) => Some(from_h2(h2)),
        None => error
            .downcast_ref::<std::io::Error>()
            .map(|io| Status::cancelled(format!("the connection to the client was lost ({io})"))),
    })?;
    Some(caused_by(failure, status))
}

/// Whether the request stream failed with `status` because the client
/// reset it with `CANCEL`, as a gRPC client does when it gives up on a call
/// (its `cancel()`, or its deadline).
pub(crate) fn client_cancelled(status: &Status) -> bool {
    sources(status).find_map(|error| error.downcast_ref::<h2::Error>()).is_some_and(is_clients_cancel)
}

/// The errors `status` came from, nearest first.
fn sources(status: &Status) -> impl Iterator<Item = &(dyn Error + 'static)> {
    std::iter::successors(Error::source(status), |&error| error.source())
}

/// A reset of the stream with `CANCEL`, sent by the client.
fn is_clients_cancel(error: &h2::Error) -> bool {
    error.is_reset() && error.is_remote() && error.reason() == Some(h2::Reason::CANCEL)
}

/// The CANCELLED status for a request body that failed with `status`, as
/// the layer sees it: below tonic, every error of the body is the
/// transport's.
pub(crate) fn request_broke(status: &Status) -> Status {
    transport_failure(status).unwrap_or_else(|| {
        caused_by(Status::cancelled(format!("the request stream broke ({})", status.message())), status)
    })
}

/// `status`, with `cause` (and so what `cause` came from) as its source.
fn caused_by(mut status: Status, cause: &Status) -> Status {
    status.set_source(Arc::new(cause.clone()));
    status
}

fn from_h2(error: &h2::Error) -> Status {
    let reason = error.reason().map(|reason| format!("{reason:?}")).unwrap_or_default();
    if is_clients_cancel(error) {
        return Status::cancelled("the client cancelled the call");
    }
    if error.is_reset() && error.is_remote() {
        return Status::cancelled(format!("the client reset the stream ({reason})"));
    }
    if error.is_go_away() && error.is_remote() {
        return Status::cancelled(format!("the client closed the connection (GOAWAY {reason})"));
    }
    if let Some(io) = error.get_io() {
        return Status::cancelled(format!("the connection to the client was lost ({io})"));
    }
    Status::cancelled(format!("the stream broke ({error})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_source(error: impl Error + Send + Sync + 'static) -> Status {
        Status::from_error(Box::new(Wrapped(Box::new(error))))
    }

    /// Stands for `hyper::Error`: an error whose source is the h2 error.
    #[derive(Debug)]
    struct Wrapped(Box<dyn Error + Send + Sync>);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error reading a body from connection")
        }
    }

    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn a_lost_connection_is_cancelled_with_its_reason() {
        let lost = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
        let status = transport_failure(&with_source(lost)).expect("from the transport");
        assert_eq!(status.code(), tonic::Code::Cancelled);
        assert!(status.message().contains("connection to the client was lost"), "{status:?}");
    }

    #[test]
    fn what_it_came_from_stays_reachable() {
        let lost = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
        for status in [
            transport_failure(&with_source(lost)).expect("from the transport"),
            request_broke(&with_source(Wrapped("odd".into()))),
        ] {
            let wrapped = sources(&status).find_map(|error| error.downcast_ref::<Wrapped>());
            assert!(wrapped.is_some(), "{status:?}");
        }
        let reset = transport_failure(&with_source(h2::Error::from(h2::Reason::PROTOCOL_ERROR))).expect("a reset");
        let h2 = sources(&reset).find_map(|error| error.downcast_ref::<h2::Error>());
        assert_eq!(h2.and_then(h2::Error::reason), Some(h2::Reason::PROTOCOL_ERROR));
    }

    #[test]
    fn an_h2_error_is_cancelled() {
        let status = transport_failure(&with_source(h2::Error::from(h2::Reason::PROTOCOL_ERROR)));
        assert_eq!(status.map(|s| s.code()), Some(tonic::Code::Cancelled));
    }

    #[test]
    fn only_a_clients_cancel_is_one() {
        // A reset made here, not by the client; and errors that are no reset.
        assert!(!client_cancelled(&with_source(h2::Error::from(h2::Reason::CANCEL))));
        assert!(!client_cancelled(&with_source(std::io::Error::other("gone"))));
        assert!(!client_cancelled(&Status::cancelled("no source")));
    }

    #[test]
    fn an_error_that_is_not_the_transports_keeps_its_code() {
        assert!(transport_failure(&Status::internal("failed to decode")).is_none());
        assert_eq!(request_broke(&Status::internal("odd")).code(), tonic::Code::Cancelled);
    }
}
