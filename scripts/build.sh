#!/usr/bin/env bash
# Builds everything the demo, tests and benchmarks run: installs missing machine packages
# (setup-deps.sh) and WasmEdge (project-local, see install-wasmedge.sh), builds the plugin
# in release mode into target/plugin/ (a directory holding only the plugin, for
# WASMEDGE_PLUGIN_PATH) and every guest for wasm32-wasip1 into target/wasm32-wasip1/release/.
# Writes the environment the other scripts need as `export` lines to target/build-env.sh;
# callers run this script as a step of its own (so that `set -e` stops them at a failed
# build) and then source that file.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

rm -f target/build-env.sh
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
  -p preprocess -p detect -p alarm -p bundled -p probe -p bad-guest -p fault-guest -p fuzz-guest -p hello -p redis-guest >&2

cat >target/build-env.sh.tmp <<ENV
export WASMEDGE_BIN='$WASMEDGE_BIN'
export WASMEDGE_INCLUDE_DIR='$WASMEDGE_INCLUDE_DIR'
export WASMEDGE_LIB_DIR='$WASMEDGE_LIB_DIR'
export SKYLARK_PLUGIN_DIR='$root/target/plugin'
export SKYLARK_WASM_DIR='$root/target/wasm32-wasip1/release'
ENV
mv -f target/build-env.sh.tmp target/build-env.sh
