//! Compiles the suite's contracts with protox, so no system `protoc` is needed.
use std::{env, path::PathBuf};

use prost::Message;

const FILES: &[&str] = &[
    "tongjiao/survey/v1/survey.proto",
    "tongjiao/acceptance/v1/acceptance.proto",
    "tongjiao/tax/v1/tax.proto",
    "tongjiao/registration/v1/registration.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files: Vec<PathBuf> = FILES.iter().map(|f| root.join(f)).collect();
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // compile_fds does not write the descriptor set; reflection needs it.
    std::fs::write(out.join("tongjiao_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
