//! Generates the routeguide messages, client and server from `proto/`.
//!
//! The .proto is parsed by `protox`, a protobuf compiler in pure Rust, so the
//! build needs no system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["routeguide.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
