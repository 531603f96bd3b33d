#!/usr/bin/env bash
# Builds containerd-shim-skylark-v1 for an amd64 Debian trixie node, for the installer
# image (runtimeclass/node-installer/build-image.sh): linked against trixie's
# libwasmedge of the WasmEdge install (scripts/install-wasmedge.sh) with the standard
# dynamic loader and no run path into this machine (SKYLARK_SHIM_FOR_NODE=1, see
# shim/build.rs), in its own target directory (--target x86_64-unknown-linux-gnu) so the
# CRI test's shim (built for this machine) stays as it is. arm64: scripts/build-arm64.sh
# --shim. The last line on stdout is the shim's path.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target=x86_64-unknown-linux-gnu
[ "$(uname -m)" = x86_64 ] || { echo "build-node-shim.sh: builds the amd64 shim on an amd64 machine" >&2; exit 1; }
bash scripts/install-wasmedge.sh >&2
# shellcheck disable=SC1091
source .wasmedge/env
export WASMEDGE_INCLUDE_DIR WASMEDGE_LIB_DIR
export SKYLARK_SHIM_FOR_NODE=1
cargo build --release --target "$target" -p containerd-shim-skylark >&2
shim="$root/target/$target/release/containerd-shim-skylark-v1"
interp="$(readelf -l "$shim" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')"
[ "$interp" = /lib64/ld-linux-x86-64.so.2 ] || { echo "build-node-shim.sh: $shim has the interpreter $interp" >&2; exit 1; }
echo "$shim"
