//! The images the CRI test imports into its containerd: a pause image (the sandbox
//! program `pause/pause.c`, linked with `gcc -static`) and the probe and preprocess
//! function images, all written as OCI archives by the project's `oci-image` tool.

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The sandbox image's name (containerd's `sandbox_image`).
pub const PAUSE: &str = "docker.io/skylark/cri-pause:0.1.0";
/// The probe guest (`put`/`get`) as a function image.
pub const PROBE: &str = "docker.io/skylark/probe:0.1.0";
/// The preprocess function (`--serve`) as a function image.
pub const PREPROCESS: &str = "docker.io/skylark/preprocess:0.1.0";

/// OCI archives to import, in order.
#[derive(Debug)]
pub struct Archives {
    pub tars: Vec<PathBuf>,
}

/// Runs a command, turning a failure into an error that carries its output.
fn run(cmd: &mut Command, what: &str) -> Result<std::process::Output> {
    let out = cmd
        .output()
        .map_err(|e| Error::io("run", Path::new(what), e))?;
    if !out.status.success() {
        return Err(Error::Failed(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out)
}

/// The workspace binary `bin`, built now with cargo (dev profile; a no-op when
/// `cargo test --workspace` built it already), from whichever package holds it.
pub fn cargo_bin(repo_root: &Path, bin: &str) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = run(
        Command::new(cargo)
            .current_dir(repo_root)
            .args(["build", "--workspace", "--bin", bin])
            .args(["--message-format", "json-render-diagnostics"]),
        &format!("cargo build --bin {bin}"),
    )?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == bin)
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| Error::Failed(format!("cargo built no {bin} executable")))
}

/// The `oci-image` binary: `$SKYLARK_OCI_IMAGE`, or built now.
pub fn oci_image_tool(repo_root: &Path) -> Result<PathBuf> {
    match std::env::var_os("SKYLARK_OCI_IMAGE") {
        Some(p) => Ok(PathBuf::from(p)),
        None => cargo_bin(repo_root, "oci-image"),
    }
}

/// Builds the pause program and the three images into `work`.
pub fn build(repo_root: &Path, work: &Path, wasm_dir: &Path) -> Result<Archives> {
    let tool = oci_image_tool(repo_root)?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("pause/pause.c");
    let pause = work.join("pause");
    run(
        Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&pause)
            .arg(&src),
        "gcc -static pause.c",
    )?;
    let mut tars = Vec::new();
    let mut image = |kind: &str, flag: &str, input: &Path, name: &str, dir: &str| {
        let tar = work.join(format!("{dir}.tar"));
        run(
            Command::new(&tool)
                .arg(kind)
                .arg(flag)
                .arg(input)
                .args(["--name", name, "--out"])
                .arg(work.join(dir))
                .arg("--tar")
                .arg(&tar),
            &format!("oci-image {kind} {}", input.display()),
        )?;
        tars.push(tar);
        Ok::<(), Error>(())
    };
    image("static", "--bin", &pause, PAUSE, "pause-image")?;
    image(
        "wasm",
        "--wasm",
        &wasm_dir.join("probe.wasm"),
        PROBE,
        "probe-image",
    )?;
    image(
        "wasm",
        "--wasm",
        &wasm_dir.join("preprocess.wasm"),
        PREPROCESS,
        "preprocess-image",
    )?;
    Ok(Archives { tars })
}
