//! Link settings for machines whose WasmEdge is the project's private trixie install
//! (`scripts/install-wasmedge.sh` on an older Debian, found through `WASMEDGE_LIB_DIR` =
//! `<prefix>/wasmedge/usr/lib/<multiarch>` next to `<prefix>/runtime`): trixie's
//! `libwasmedge.so.0` needs trixie's glibc, libstdc++ and LLVM, so the shim executable is
//! linked to start under the prefix's trixie dynamic loader, with the prefix's library
//! directories as its run path. A wrapper script would not do: the shim re-executes its
//! own binary (`/proc/self/exe`) to daemonize. With a system libwasmedge (a trixie node)
//! nothing is added and the shim links normally. With `SKYLARK_SHIM_FOR_NODE=1` (the
//! installer image's shims) neither: see `main`.

use std::path::{Path, PathBuf};

/// The private prefix's (loader, library directories), if `lib_dir` is in one.
fn private_trixie(lib_dir: &Path) -> Option<(PathBuf, Vec<PathBuf>)> {
    let multiarch = lib_dir.file_name()?.to_str()?.to_string();
    let prefix = lib_dir.ancestors().nth(4)?;
    let runtime = prefix.join("runtime");
    if lib_dir != prefix.join("wasmedge/usr/lib").join(&multiarch) || !runtime.is_dir() {
        return None;
    }
    let candidates = [
        runtime.join("usr/lib").join(&multiarch),
        runtime.join("lib").join(&multiarch),
        runtime.join("usr/lib/llvm-19/lib"),
    ];
    let dirs: Vec<PathBuf> = std::iter::once(lib_dir.to_path_buf())
        .chain(candidates.into_iter().filter(|d| d.is_dir()))
        .collect();
    let loader = dirs.iter().skip(1).find_map(|d| {
        std::fs::read_dir(d).ok()?.flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with("ld-linux") && name.contains(".so.")).then(|| e.path())
        })
    })?;
    Some((loader, dirs))
}

fn main() {
    println!("cargo:rerun-if-env-changed=WASMEDGE_LIB_DIR");
    println!("cargo:rerun-if-env-changed=SKYLARK_SHIM_FOR_NODE");
    if std::env::var_os("SKYLARK_SHIM_FOR_NODE").is_some_and(|v| v == "1") {
        // Built for a trixie node (the installer image: scripts/build-arm64.sh --shim,
        // scripts/build-node-shim.sh): the standard dynamic loader, libraries from the
        // node's library path. This machine's C library may be older than the one trixie's
        // libwasmedge and LLVM were built against, and their own dependencies (libxml2,
        // libffi, z3, ...) are not installed for linking: the node's trixie libraries
        // provide them at run time; only the shim's own symbols must resolve here.
        println!("cargo:rustc-link-arg-bins=-Wl,--allow-shlib-undefined");
        return;
    }
    let Some(lib_dir) = std::env::var_os("WASMEDGE_LIB_DIR").map(PathBuf::from) else {
        return;
    };
    if let Some((loader, dirs)) = private_trixie(&lib_dir) {
        let rpath = dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--dynamic-linker={}",
            loader.display()
        );
        // DT_RPATH (not RUNPATH): it also applies to libwasmedge's own dependencies.
        println!("cargo:rustc-link-arg-bins=-Wl,--disable-new-dtags");
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{rpath}");
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath-link,{rpath}");
    }
}
