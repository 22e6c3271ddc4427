//! The client's deadline: the request's `grpc-timeout` header, which tonic's
//! server enforces by dropping the handler when it passes (and answering
//! CANCELLED "Timeout expired"). The layer keeps it, so that a call whose
//! handler was dropped then ends with what the client was told, not as a
//! client that went away.

use std::time::Duration;

use tokio::time::Instant;
use tonic::{codegen::http::HeaderMap, Status};

/// From when a call whose request arrived now with `headers` counts as
/// timed out, if the request has a valid `grpc-timeout`: its deadline, less
/// a slack for the timers that race ours:
/// - 1 ms: tonic starts its timer a moment before the layer sees the
///   request, and tokio's timers fire on whole milliseconds;
/// - 1% of the timeout: a gRPC client rounds the timeout it sends up to
///   three significant figures (gRPC core does), so its own timer, whose
///   cancel may reach the server first, fires up to that much earlier.
pub(crate) fn timed_out_from(headers: &HeaderMap) -> Option<Instant> {
    let timeout = parse(headers.get("grpc-timeout")?.to_str().ok()?)?;
    let slack = (timeout / 100).max(Duration::from_millis(1));
    Instant::now().checked_add(timeout.saturating_sub(slack))
}

/// Whether a call that counts as timed out from `from` does now.
pub(crate) fn passed(from: Instant) -> bool {
    Instant::now() >= from
}

/// The status tonic's server answers a call whose deadline passed with.
pub(crate) fn expired() -> Status {
    Status::from_error(Box::new(tonic::TimeoutExpired(())))
}

/// A `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`, `S`, `m`,
/// `u`, `n`), as the gRPC over HTTP/2 spec has it.
fn parse(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit() {
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("4S"), Some(Duration::from_secs(4)));
        assert_eq!(parse("50m"), Some(Duration::from_millis(50)));
        assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
    }

    #[test]
    fn not_a_timeout() {
        for value in ["", "m", "5", "5x", "123456789S", "-5S", "+5S", "5 S", "1.5S", "é"] {
            assert_eq!(parse(value), None, "{value:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_less_its_slack() {
        for (timeout, from) in [("50m", 49), ("1S", 990), ("2M", 118_800)] {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", timeout.parse().expect("a header value"));
            let at = timed_out_from(&headers).expect("a deadline");
            tokio::time::advance(Duration::from_millis(from - 1)).await;
            assert!(!passed(at), "{timeout}: not yet at {} ms", from - 1);
            tokio::time::advance(Duration::from_millis(1)).await;
            assert!(passed(at), "{timeout}: at {from} ms");
        }
        assert_eq!(timed_out_from(&HeaderMap::new()), None);
    }

    #[test]
    fn tonics_status() {
        let status = expired();
        assert_eq!((status.code(), status.message()), (tonic::Code::Cancelled, "Timeout expired"));
    }
}
