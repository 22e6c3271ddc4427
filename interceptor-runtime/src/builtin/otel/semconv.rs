//! The names `otel` writes: OpenTelemetry's RPC and gRPC semantic conventions
//! v1.45.0 (`docs/rpc/rpc-spans.md`, `rpc-metrics.md` and `grpc.md` of
//! open-telemetry/semantic-conventions, where the RPC conventions became
//! stable), and this crate's own names for what they do not define.

use tonic::Code;

/// The schema the names follow, given with the instrumentation scope.
pub(super) const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.45.0";

/// `"grpc"`, required on spans and the duration metric.
pub(super) const RPC_SYSTEM_NAME: &str = "rpc.system.name";
/// `package.Service/Method`: the span's name too.
pub(super) const RPC_METHOD: &str = "rpc.method";
/// The final status code as gRPC spells it (`DEADLINE_EXCEEDED`); renamed
/// from `rpc.response.status_code` (v1.39 to v1.44) and `rpc.grpc.status_code`
/// (an integer, up to v1.38).
pub(super) const RPC_STATUS_CODE: &str = "rpc.status_code";
/// The code again, only when it is an error on the server side.
pub(super) const ERROR_TYPE: &str = "error.type";
/// The client's address and port, as the transport saw them.
pub(super) const NETWORK_PEER_ADDRESS: &str = "network.peer.address";
/// See [`NETWORK_PEER_ADDRESS`].
pub(super) const NETWORK_PEER_PORT: &str = "network.peer.port";

/// The histogram of call durations, in seconds.
pub(super) const RPC_SERVER_CALL_DURATION: &str = "rpc.server.call.duration";
/// The buckets the conventions advise for it.
pub(super) const DURATION_BOUNDARIES: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

// Ours: the conventions deprecated per-message events and define no per-call
// counts (v1.45.0), so these are in the crate's own namespace.
/// Messages the handler received from the client.
pub(super) const MESSAGES_RECEIVED: &str = "interceptor_runtime.messages_received";
/// Their encoded bytes (`prost::Message::encoded_len`: before compression
/// and framing).
pub(super) const BYTES_RECEIVED: &str = "interceptor_runtime.bytes_received";
/// Messages sent to the client.
pub(super) const MESSAGES_SENT: &str = "interceptor_runtime.messages_sent";
/// Their encoded bytes.
pub(super) const BYTES_SENT: &str = "interceptor_runtime.bytes_sent";
/// The interceptor that ended the call (`budget`, `rate`, a `with`
/// interceptor's name), when one did.
pub(super) const ENDED_BY: &str = "interceptor_runtime.ended_by";

/// The code as `rpc.status_code` spells it: gRPC's own names.
pub(super) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Whether a server span with this code is an error (status Error and
/// `error.type`): the gRPC conventions' list for the server side. The other
/// codes are the client's doing (INVALID_ARGUMENT, NOT_FOUND, CANCELLED ...)
/// or a limit the server applied on purpose (RESOURCE_EXHAUSTED), not a
/// failure of the server.
pub(super) fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_grpc_name() {
        for i in 0..17 {
            let code = Code::from_i32(i);
            let expected = format!("{code:?}");
            // `DeadlineExceeded` -> `DEADLINE_EXCEEDED`.
            let mut upper = String::new();
            for (k, c) in expected.chars().enumerate() {
                if c.is_ascii_uppercase() && k > 0 {
                    upper.push('_');
                }
                upper.push(c.to_ascii_uppercase());
            }
            assert_eq!(code_name(code), upper);
        }
        let errors: Vec<_> = (0..17).map(Code::from_i32).filter(|c| is_server_error(*c)).map(code_name).collect();
        assert_eq!(errors, ["UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"]);
    }
}
