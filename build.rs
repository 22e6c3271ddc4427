//! Generates the routeguide messages, client and server from `proto/`, and
//! the tests' fixture services from `tests/proto/` (included by the tests
//! alone).
//!
//! The .proto files are parsed by `protox`, a protobuf compiler in pure Rust,
//! so the build needs no system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=tests/proto");
    let descriptors = protox::compile(["routeguide.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    let fixtures =
        protox::compile(["interop.proto", "echo.proto", "names.proto", "otel.proto", "wkt.proto"], ["tests/proto"])?;
    tonic_prost_build::configure().compile_fds(fixtures)?;
    Ok(())
}
