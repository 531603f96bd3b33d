#!/usr/bin/env bash
# Installs the machine packages the build and tests need if they are missing:
# redis-server (the stores), redis-tools (redis-cli, redis-benchmark), GNU time (the bench's peak RSS), libclang (bindgen in wasmedge-sys), the Debian archive
# keyring (to verify trixie's WasmEdge packages), the DejaVu font (text in the
# experiment's plot), python3-tomlkit (the node installer's containerd config edit),
# openssl and curl (the TLS and HTTP tests), python3-yaml (the node
# Redis manifest test), protoc (the CRI test's generated client, crate k8s-cri), gcc with
# a static libc and util-linux's unshare (the CRI test's pause program and crun wrapper),
# libseccomp-dev and pkg-config (youki's libcontainer in the containerd shim, shim/), and
# the wasm32-wasip1 Rust target.
# With --arm64 (scripts/test.sh passes it) also what the arm64 cross-build and its test
# under qemu-user need (scripts/build-arm64.sh, tests/tests/arm64.rs): Debian's cross
# toolchain (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross), qemu-user-static and the
# aarch64-unknown-linux-gnu Rust target.
# With --c-guest (scripts/test.sh passes it) also the C compiler for wasm32-wasi guests
# (the C guest's test, tests/tests/c_guest.rs): Debian trixie's clang, lld, wasi-libc and
# wasm32 builtins, unpacked without root into the project's .wasi-clang/
# (scripts/install-wasi-clang.sh; about 90 MB downloaded once, then cached there).
# Uses apt-get as root, or through sudo.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
arm64=0 c_guest=0
for arg in "$@"; do
  case "$arg" in
    --arm64) arm64=1 ;;
    --c-guest) c_guest=1 ;;
    *) echo "setup-deps.sh: unknown argument $arg" >&2; exit 1 ;;
  esac
done
need=()
# redis-server also runs the sentinels of tests/tests/global_cluster.rs (--sentinel), and
# redis-cli (redis-tools) forms its Redis Cluster: no redis-sentinel package needed.
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
# The latency bench's outside reference (bench/src/bin/bench/native.rs).
command -v redis-benchmark >/dev/null || need+=(redis-tools)
# GNU time: the peak RSS of a wasmedge process in the bench's plugin load cost rows.
[ -x /usr/bin/time ] || need+=(time)
# bindgen loads libclang.so or libclang-<N>.so; libclang-cpp*.so (shipped by some machine
# images) is a different library and does not count. Let dpkg decide.
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
# tests/tests/redis_manifest.rs reads runtimeclass/manifests/31-redis.yaml with PyYAML.
python3 -c 'import yaml' >/dev/null 2>&1 || need+=(python3-yaml)
# runtimeclass/node-installer/ edits containerd's TOML with Debian's python3-tomlkit.
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import tomlkit' >/dev/null 2>&1 || need+=(python3-tomlkit)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v gcc >/dev/null || need+=(gcc)
dpkg -s libc6-dev >/dev/null 2>&1 || need+=(libc6-dev)
command -v unshare >/dev/null || need+=(util-linux)
dpkg -s libseccomp-dev >/dev/null 2>&1 || need+=(libseccomp-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
if [ "$arm64" = 1 ]; then
  command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
  dpkg -s libc6-dev-arm64-cross >/dev/null 2>&1 || need+=(libc6-dev-arm64-cross)
  command -v qemu-aarch64-static >/dev/null || command -v qemu-aarch64 >/dev/null || need+=(qemu-user-static)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${need[*]}" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  rustup target add wasm32-wasip1 >&2
fi
if [ "$arm64" = 1 ] && ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  rustup target add aarch64-unknown-linux-gnu >&2
fi
if [ "$c_guest" = 1 ]; then
  bash "$(dirname "${BASH_SOURCE[0]}")/install-wasi-clang.sh" >&2
fi
