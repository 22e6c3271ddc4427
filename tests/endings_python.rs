//! The endings seen by a client written outside the project, Python's
//! grpcio, against the service with the attribute on the impl and on each
//! method, `InterceptLayer` in the server: complete calls, calls the client
//! cancels in their middle (`cancel()`: an HTTP/2 reset), handlers and
//! response streams that panic, an interceptor whose `on_start` panics, a
//! unary handler, an upload and a bidi call that outlast the client's
//! deadline (`timeout=`). Each is checked against what the handler saw and the call's
//! outcome.
//!
//! Needs `python3` with `grpcio` and `grpcio-tools` (`.ci/run` installs them).
//! Without them the test says so and passes, except under CI, where it fails.

use std::process::Command;

use tonic::Code;

#[macro_use]
mod endings_kit;

use endings_kit::{ledger, logs, serve, Saw};

ends_service!(
    PyImpl,
    impl: [#[interceptor_runtime::intercept(monitor, with = crate::endings_kit::probe(), service = "endings.PyImpl")]],
    method: []
);

ends_service!(
    PyMethod,
    impl: [],
    method: [#[interceptor_runtime::intercept(monitor, with = crate::endings_kit::probe(), service = "endings.PyMethod")]]
);

/// One call as the Python client reports it.
#[derive(Debug)]
struct Reported {
    id: u64,
    kind: String,
    scenario: String,
    code: String,
    received: u64,
    details: String,
}

fn parse(line: &str) -> Reported {
    let fields: Vec<&str> = line.splitn(6, '\t').collect();
    assert_eq!(fields.len(), 6, "{line:?}");
    Reported {
        id: fields[0].parse().expect("an id"),
        kind: fields[1].to_owned(),
        scenario: fields[2].to_owned(),
        code: fields[3].to_owned(),
        received: fields[4].parse().expect("a count"),
        details: fields[5].to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_client_sees_every_ending() {
    let python = Command::new("python3").args(["-c", "import grpc, grpc_tools"]).output();
    if !python.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(std::env::var_os("CI").is_none(), "CI must have python3 with grpcio and grpcio-tools");
        eprintln!("skipped: python3 with grpcio and grpcio-tools is not installed");
        return;
    }
    logs::install();
    let addrs = [serve(PyImpl, true).await, serve(PyMethod, true).await].map(|addr| addr.to_string());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/endings_client.py");
    let first_id = 1_000_000;
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg(script).arg(first_id.to_string()).args(&addrs).output()
    })
    .await
    .unwrap()
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the client failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let calls: Vec<Reported> = stdout.lines().filter(|l| !l.is_empty()).map(parse).collect();
    // Two servers, four kinds, four scenarios each, a response stream that
    // panics for two of them, and a deadline for three.
    assert_eq!(calls.len(), 2 * (4 * 4 + 2 + 3), "{stdout}");

    for call in &calls {
        let what = format!("{call:?}");
        let streams_in = call.kind == "client" || call.kind == "bidi";
        match call.scenario.as_str() {
            "ok" => {
                assert_eq!(call.code, "OK", "{what}");
                let saw = ledger().wait_saw(call.id).await;
                assert_eq!(saw, Saw { messages: if streams_in { 3 } else { 1 }, end: Ok(()) }, "{what}");
                assert_eq!(ledger().wait_outcome(call.id).await.code, Code::Ok, "{what}");
            }
            "cancel" => {
                assert_eq!(call.code, "CANCELLED", "{what}");
                if streams_in {
                    // The handler read the upload to its end: a cancel, not a
                    // clean end. (A bidi call may notice the reset on its
                    // response stream first, which knows no reason.)
                    let saw = ledger().wait_saw(call.id).await;
                    let cancelled =
                        |message: &str| Saw { messages: 2, end: Err((Code::Cancelled, message.to_owned())) };
                    let noticed_on_response = call.kind == "bidi" && saw == cancelled("the client went away");
                    assert!(
                        saw == cancelled("the client cancelled the call") || noticed_on_response,
                        "{what}: {saw:?}"
                    );
                }
                let outcome = ledger().wait_outcome(call.id).await;
                assert_eq!(outcome.code, Code::Cancelled, "{what}: {outcome:?}");
            }
            "panic" => {
                assert_eq!((call.code.as_str(), call.details.as_str()), ("INTERNAL", "the handler panicked"), "{what}");
                assert_eq!(ledger().wait_outcome(call.id).await.code, Code::Internal, "{what}");
            }
            "panic-stream" => {
                let got = (call.code.as_str(), call.details.as_str(), call.received);
                assert_eq!(got, ("INTERNAL", "the response stream panicked", 1), "{what}");
                assert_eq!(ledger().wait_outcome(call.id).await.code, Code::Internal, "{what}");
            }
            "on_start" => {
                let got = (call.code.as_str(), call.details.as_str());
                assert_eq!(got, ("INTERNAL", "an interceptor panicked"), "{what}");
                // The probe that panicked never started: no outcome of its own.
                assert_eq!(ledger().ends_of(call.id), 0, "{what}");
            }
            "deadline" => {
                // At the same deadline, sent as `grpc-timeout`, tonic's
                // server drops a handler still running, or grpcio's cancel
                // reaches it first: the call ends as the deadline's either
                // way. The client hears its own timer, or tonic's answer
                // when that comes first.
                let client_saw = (call.code.as_str(), call.details.as_str());
                assert!(
                    client_saw.0 == "DEADLINE_EXCEEDED" || client_saw == ("CANCELLED", "Timeout expired"),
                    "{what}"
                );
                let outcome = ledger().wait_outcome(call.id).await;
                assert_eq!((outcome.code, outcome.message.as_str()), (Code::Cancelled, "Timeout expired"), "{what}");
                if call.kind == "bidi" {
                    // Its handler has returned: its inbound stream tells it.
                    let saw = ledger().wait_saw(call.id).await;
                    assert_eq!(
                        saw,
                        Saw { messages: 2, end: Err((Code::Cancelled, "Timeout expired".into())) },
                        "{what}"
                    );
                }
            }
            other => panic!("unknown scenario {other}"),
        }
        assert!(ledger().ends_of(call.id) <= 1, "{what}: ended more than once");
    }
}
