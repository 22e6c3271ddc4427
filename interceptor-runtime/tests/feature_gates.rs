//! Naming an interceptor whose cargo feature is off is a compile error that
//! names the feature. Checked by building a small crate (tests/feature-off)
//! that depends on this one with `default-features = false, features = ["monitor"]`.

use std::process::Command;

#[test]
fn an_interceptor_whose_feature_is_off_names_the_feature() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/feature-off/Cargo.toml");
    // A target directory of its own: the outer build holds the lock on ours.
    let target = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/feature-off");
    let output = Command::new(env!("CARGO"))
        .args(["check", "--quiet", "--message-format=short", "--manifest-path", manifest, "--target-dir", target])
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the build should fail:\n{stderr}");
    for feature in ["rate", "budget", "otel"] {
        let expected = format!("the `{feature}` interceptor is behind the `{feature}` feature of interceptor-runtime");
        assert!(stderr.contains(&expected), "no error for `{feature}`:\n{stderr}");
    }
    assert!(!stderr.contains("the `monitor` interceptor"), "monitor is enabled:\n{stderr}");
}
