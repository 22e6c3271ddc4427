//! Generates the bench service from `proto/bench.proto`, with `protox` (no
//! system `protoc` needed).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["bench.proto"], ["proto"])?;
    // `bytes` fields as `bytes::Bytes`: the benches clone one payload per
    // message without copying it, for the raw and intercepted services alike.
    tonic_prost_build::configure().bytes(".").compile_fds(descriptors)?;
    Ok(())
}
