//! A client written outside the project, Python's grpcio, calls the routeguide
//! service with no attribute, with `#[intercept]` on the impl and with it on
//! each method, and must see identical answers from all three.
//!
//! Needs `python3` with `grpcio` and `grpcio-tools` (`.ci/run` installs them).
//! Without them the test says so and passes, except under CI, where it fails.

use std::process::Command;

mod common;

use common::{in_real_time, serve};
use interceptor_examples::{Guide, MethodGuide, PlainGuide};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_client_sees_identical_answers() {
    let python = Command::new("python3").args(["-c", "import grpc, grpc_tools"]).output();
    if !python.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(std::env::var_os("CI").is_none(), "CI must have python3 with grpcio and grpcio-tools");
        eprintln!("skipped: python3 with grpcio and grpcio-tools is not installed");
        return;
    }
    let servers =
        [serve(PlainGuide::default()).await, serve(Guide::default()).await, serve(MethodGuide::default()).await];
    let addrs = servers.each_ref().map(|server| server.addr().to_string());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/routeguide_client.py");
    // The script gives up after 50 s, before this bound.
    let client = tokio::task::spawn_blocking(move || Command::new("python3").arg(script).args(&addrs).output());
    let output = in_real_time(client).await.unwrap().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the answers differ:\n{stdout}\n{stderr}");
    assert!(stdout.contains(r#""identical": true"#), "{stdout}");
    // The answers are not empty: every method was exercised.
    assert!(stdout.contains(r#""ListFeatures": 35"#) && stdout.contains(r#""RouteChat": 22"#), "{stdout}");
}
