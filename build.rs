fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/routeguide.proto");
    tonic_prost_build::configure().compile_protos(&["proto/routeguide.proto"], &["proto"])?;
    Ok(())
}
