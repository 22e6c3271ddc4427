fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/bench.proto");
    // `bytes` fields as `bytes::Bytes`: the benches clone one payload per
    // message without copying it, for the raw and intercepted services alike.
    tonic_prost_build::configure().bytes(".").compile_protos(&["proto/bench.proto"], &["proto"])?;
    Ok(())
}
