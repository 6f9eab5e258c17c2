//! Compiles the contracts with protox (pure Rust), so no system `protoc` is
//! needed, then generates prost messages and (feature `grpc`) tonic services
//! from them.

use prost::Message;

const PROTOS: &[&str] = &[
    "mlwatch/v1/events.proto",
    "mlwatch/v1/alert.proto",
    "mlwatch/v1/action.proto",
    "mlwatch/v1/collector.proto",
    "mlwatch/v1/serving.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("mlwatch_descriptor.bin"), fds.encode_to_vec())?;
    // Services only with the `grpc` feature; messages always.
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .compile_fds(fds)?;
    Ok(())
}
