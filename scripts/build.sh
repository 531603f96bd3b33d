#!/usr/bin/env bash
# Builds everything the demo, tests and benchmarks run: installs missing machine packages
# (setup-deps.sh) and WasmEdge (project-local, see install-wasmedge.sh), builds the plugin
# in release mode into target/plugin/ (a directory holding only the plugin, for
# WASMEDGE_PLUGIN_PATH) and every guest for wasm32-wasip1 into target/wasm32-wasip1/release/;
# the C guests (ex_functions/c-hello) into target/c-guests/ when the wasm32-wasi C
# toolchain is installed (scripts/install-wasi-clang.sh; `setup-deps.sh --c-guest`, which
# scripts/test.sh runs, installs it), else it removes the stale ones and says so.
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

# The C guests: compiled and linked in two steps (see install-wasi-clang.sh), against the
# generated header guest-sdk/include/skylark.h and wasi-libc only.
mkdir -p target/c-guests
rm -f target/c-guests/*.wasm target/c-guests/*.o
if [ -f .wasi-clang/.complete ] && [ -f .wasi-clang/env ]; then
  echo "[build] C guests (wasm32-wasi, Debian clang)" >&2
  # shellcheck disable=SC1091
  source .wasi-clang/env
  for c in ex_functions/c-hello/hello.c; do
    name="$(basename "$(dirname "$c")")"
    "$SKYLARK_WASI_CC" -O2 -std=c11 -Wall -Wextra -Werror -pedantic -I guest-sdk/include \
      -c -o "target/c-guests/$name.o" "$c" >&2
    "$SKYLARK_WASI_CC" -Wl,--strip-all -o "target/c-guests/$name.wasm" "target/c-guests/$name.o" >&2
  done
else
  echo "[build] C guests skipped: no wasm32-wasi C toolchain (bash scripts/setup-deps.sh --c-guest installs it)" >&2
fi

cat >target/build-env.sh.tmp <<ENV
export WASMEDGE_BIN='$WASMEDGE_BIN'
export WASMEDGE_INCLUDE_DIR='$WASMEDGE_INCLUDE_DIR'
export WASMEDGE_LIB_DIR='$WASMEDGE_LIB_DIR'
export SKYLARK_PLUGIN_DIR='$root/target/plugin'
export SKYLARK_WASM_DIR='$root/target/wasm32-wasip1/release'
export SKYLARK_C_WASM_DIR='$root/target/c-guests'
ENV
mv -f target/build-env.sh.tmp target/build-env.sh
