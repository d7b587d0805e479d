//! Compiles `proto/strata/v1/strata.proto` and the standard health protocol
//! `proto/grpc/health/v1/health.proto` with protox (pure Rust, no system protoc) and
//! generates prost messages and tonic services (with [`codec::StrataCodec`]), plus the
//! encoded descriptor set that the agent's server reflection serves.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(
        ["strata/v1/strata.proto", "grpc/health/v1/health.proto"],
        ["proto"],
    )?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("strata_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .bytes(".strata.v1")
        .codec_path("crate::codec::StrataCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
