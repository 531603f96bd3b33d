#!/usr/bin/env bash
# Builds everything the demo, tests and benchmarks run: installs missing machine packages
# (setup-deps.sh) and WasmEdge (project-local, see install-wasmedge.sh), builds the plugin
# in release mode into target/plugin/ (a directory holding only the plugin, for
# WASMEDGE_PLUGIN_PATH) and every guest for wasm32-wasip1 into target/wasm32-wasip1/release/.
# Prints the environment to use as `export` lines on stdout when called with --print-env.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/setup-deps.sh >&2
bash scripts/install-wasmedge.sh >&2
# shellcheck disable=SC1091
source .wasmedge/env
export WASMEDGE_INCLUDE_DIR WASMEDGE_LIB_DIR

echo "[build] plugin (release)" >&2
cargo build --release -p skylark-plugin >&2
mkdir -p target/plugin
# Replace, never overwrite in place: a wasmedge process running meanwhile has the old
# file mapped and would crash (SIGBUS) if its pages changed under it.
cp -f target/release/libwasmedgePluginSkylark.so target/plugin/.skylark-plugin.tmp
mv -f target/plugin/.skylark-plugin.tmp target/plugin/libwasmedgePluginSkylark.so

echo "[build] guests (wasm32-wasip1, release)" >&2
cargo build --release --target wasm32-wasip1 \
  -p preprocess -p detect -p alarm -p bundled -p probe -p bad-guest -p fault-guest -p fuzz-guest >&2

if [ "${1:-}" = "--print-env" ]; then
  echo "export WASMEDGE_BIN='$WASMEDGE_BIN'"
  echo "export WASMEDGE_INCLUDE_DIR='$WASMEDGE_INCLUDE_DIR'"
  echo "export WASMEDGE_LIB_DIR='$WASMEDGE_LIB_DIR'"
  echo "export SKYLARK_PLUGIN_DIR='$root/target/plugin'"
  echo "export SKYLARK_WASM_DIR='$root/target/wasm32-wasip1/release'"
fi
