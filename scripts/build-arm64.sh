#!/usr/bin/env bash
# Cross-builds Skylark for arm64 nodes (the testbed's Raspberry Pis,
# aarch64-unknown-linux-gnu) on this machine, and sets up arm64 `wasmedge` to run under
# qemu-user:
#   - the trixie arm64 root (scripts/install-arm64-root.sh, cached in
#     ~/.cache/skylark/trixie-arm64): libwasmedge and its headers to link against, and
#     arm64 wasmedge with its libraries to run;
#   - the plugin, built with Debian's cross toolchain (gcc-aarch64-linux-gnu,
#     libc6-dev-arm64-cross) and the Rust target aarch64-unknown-linux-gnu (both installed
#     by scripts/setup-deps.sh), copied alone into target/aarch64-unknown-linux-gnu/plugin/
#     (for WASMEDGE_PLUGIN_PATH);
#   - with --shim, also containerd-shim-skylark-v1 (linked for a trixie node: the standard
#     dynamic loader, libwasmedge.so.0 and libseccomp.so.2 from the node's library path);
#   - target/arm64/wasmedge: runs the root's arm64 wasmedge through qemu-user
#     (`qemu-aarch64-static -L ROOT`, the root's own loader and libraries; no binfmt needed);
#   - target/arm64/env: SKYLARK_ARM64_ROOT, SKYLARK_ARM64_WASMEDGE, SKYLARK_ARM64_PLUGIN_DIR,
#     SKYLARK_ARM64_QEMU and, with --shim, SKYLARK_ARM64_SHIM.
# Release builds (what the installer image ships). Used by tests/tests/arm64.rs.
#
#   build-arm64.sh [--shim]
#   exit 0   built; the last line on stdout is the path of target/arm64/env
#   exit 77  this machine cannot do it (no cross toolchain, qemu or network); one line on
#            stdout says why
#   exit 1   anything else (a failed build)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target=aarch64-unknown-linux-gnu
with_shim=0
case "${1:-}" in
  --shim) with_shim=1 ;;
  "") ;;
  *) echo "build-arm64.sh: unknown argument $1" >&2; exit 1 ;;
esac

log() { printf '[build-arm64] %s\n' "$*" >&2; }
skip() { printf 'SKIP: %s\n' "$*"; exit 77; }
fail() { printf 'FAIL: %s\n' "$*"; exit 1; }

command -v aarch64-linux-gnu-gcc >/dev/null || skip "no aarch64-linux-gnu-gcc (scripts/setup-deps.sh installs gcc-aarch64-linux-gnu)"
[ -d /usr/aarch64-linux-gnu/include ] || skip "no arm64 C library headers (scripts/setup-deps.sh installs libc6-dev-arm64-cross)"
qemu="$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)"
[ -n "$qemu" ] || skip "no qemu-aarch64 (scripts/setup-deps.sh installs qemu-user-static)"
rustup target list --installed 2>/dev/null | grep -qx "$target" \
  || skip "no Rust target $target (scripts/setup-deps.sh adds it)"

set +e
arm_root_out="$(bash "$root/scripts/install-arm64-root.sh")"
rc=$?
set -e
arm_root="$(tail -n1 <<<"$arm_root_out")"
case $rc in
  0) ;;
  77) printf '%s\n' "$arm_root"; exit 77 ;;
  *) fail "scripts/install-arm64-root.sh failed: $arm_root" ;;
esac
multiarch=aarch64-linux-gnu
libdir="$arm_root/usr/lib/$multiarch"

# The cross build: Debian's cross gcc links and compiles the C parts (ring, libdbus);
# bindgen reads wasmedge.h for aarch64; wasmedge-sys links the root's libwasmedge.so.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--sysroot=/usr/$multiarch"
export WASMEDGE_INCLUDE_DIR="$arm_root/usr/include"
export WASMEDGE_LIB_DIR="$libdir"
# The shim (youki's libcontainer) links libseccomp; pkg-config looks only in the root.
export LIBSECCOMP_LIB_PATH="$libdir"
export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_SYSROOT_DIR="$arm_root"
export PKG_CONFIG_LIBDIR="$libdir/pkgconfig:$arm_root/usr/share/pkgconfig"
# The shim for a trixie node: standard loader, no run path into this machine (shim/build.rs).
export SKYLARK_SHIM_FOR_NODE=1
packages=(-p skylark-plugin)
[ "$with_shim" = 0 ] || packages+=(-p containerd-shim-skylark)
log "cargo build --release --target $target ${packages[*]}"
cargo build --release --target "$target" "${packages[@]}" >&2 || fail "cargo build --target $target failed"

out="$root/target/$target/release"
plugin_dir="$root/target/$target/plugin"
mkdir -p "$plugin_dir" "$root/target/arm64"
# Replace, never overwrite in place (a running wasmedge has the old file mapped).
cp -f "$out/libwasmedgePluginSkylark.so" "$plugin_dir/.skylark-plugin.tmp"
mv -f "$plugin_dir/.skylark-plugin.tmp" "$plugin_dir/libwasmedgePluginSkylark.so"

wrapper="$root/target/arm64/wasmedge"
cat >"$wrapper.$$" <<WRAP
#!/bin/sh
# Debian trixie's arm64 wasmedge under qemu-user, with the arm64 root's loader and libraries.
exec "$qemu" -L "$arm_root" "$arm_root/lib/ld-linux-aarch64.so.1" --library-path "$libdir" "$arm_root/usr/bin/wasmedge" "\$@"
WRAP
chmod +x "$wrapper.$$"
mv -f "$wrapper.$$" "$wrapper"
"$wrapper" --version >/dev/null 2>&1 || fail "arm64 wasmedge does not start under $qemu"

env_file="$root/target/arm64/env"
{
  echo "export SKYLARK_ARM64_ROOT='$arm_root'"
  echo "export SKYLARK_ARM64_QEMU='$qemu'"
  echo "export SKYLARK_ARM64_WASMEDGE='$wrapper'"
  echo "export SKYLARK_ARM64_PLUGIN_DIR='$plugin_dir'"
  [ "$with_shim" = 0 ] || echo "export SKYLARK_ARM64_SHIM='$out/containerd-shim-skylark-v1'"
} >"$env_file.$$"
mv -f "$env_file.$$" "$env_file"
log "arm64 plugin in $plugin_dir; arm64 wasmedge: $wrapper"
echo "$env_file"
