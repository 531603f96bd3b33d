#!/usr/bin/env bash
# Installs Debian trixie's containerd (1.7, CRI plugin built in, `ctr`, the runc v2 shim)
# and crun (1.21, +WASM:wasmedge) into a private prefix, without touching the machine's
# apt sources, packages or services (the private apt configuration of
# scripts/lib/private-apt.sh). Used by the CRI test (cri-tests/).
#
#   prefix (default ~/.cache/skylark/cri-trixie, or $SKYLARK_CRI_PREFIX), shared by every
#   checkout on the machine and never changed once complete (a lock serializes installs):
#     root/       the unpacked packages (containerd, crun and their library closure, except
#                 libc6/libgcc-s1, which come from the WasmEdge install's trixie runtime)
#   per checkout, in <repo>/target/cri/ (rewritten on every run):
#     crun        runs trixie's crun through this checkout's WasmEdge prefix's trixie dynamic
#                 loader, with libwasmedge.so.0 on its library path (crun dlopens it)
#     env         shell fragment: SKYLARK_CRI_BIN (containerd, ctr, shim), SKYLARK_CRI_CRUN
#                 (the crun wrapper), SKYLARK_CRI_VERSION, SKYLARK_CRI_LIBPATH (the trixie
#                 library directories, for the Skylark shim's wrapper in the CRI test)
#
# containerd, ctr and containerd-shim-runc-v2 are Go programs that run on the machine's
# own glibc; the script checks that they start. Idempotent: a complete prefix is kept.
# SKYLARK_CRI_FORCE=1 redoes it.
#
#   exit 0   installed (or already there); the last line on stdout is the path of `env`
#   exit 77  cannot install here (no network, not Debian); one line on stdout says why
#   exit 1   anything else
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
prefix="${SKYLARK_CRI_PREFIX:-${HOME:-/root}/.cache/skylark/cri-trixie}"
wasmedge_prefix="${SKYLARK_WASMEDGE_PREFIX:-$root/.wasmedge}"
out="$root/target/cri"
multiarch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"

log() { printf '[install-containerd] %s\n' "$*" >&2; }
skip() { printf 'SKIP: %s\n' "$*"; exit 77; }
fail() { printf 'FAIL: %s\n' "$*"; exit 1; }

for tool in apt-get dpkg-deb dpkg flock; do
  command -v "$tool" >/dev/null 2>&1 || skip "missing $tool: this script needs a Debian-based machine"
done
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || skip "missing $keyring (debian-archive-keyring)"

# The trixie runtime (dynamic loader, glibc) that crun runs on.
if [ ! -f "$wasmedge_prefix/.complete" ]; then
  log "installing WasmEdge into $wasmedge_prefix (scripts/install-wasmedge.sh)"
  bash "$root/scripts/install-wasmedge.sh" >&2 || fail "scripts/install-wasmedge.sh failed"
fi
loader="$(find "$wasmedge_prefix/runtime" -name 'ld-linux*.so.*' 2>/dev/null | head -n1)"
[ -n "$loader" ] || skip "no trixie runtime in $wasmedge_prefix/runtime (a system wasmedge is in use)"

write_wrappers() { # written to temporary names and renamed: concurrent runs see whole files
  local libpath="$prefix/root/usr/lib/$multiarch:$prefix/root/lib/$multiarch"
  libpath="$libpath:$wasmedge_prefix/wasmedge/usr/lib/$multiarch:$wasmedge_prefix/runtime/usr/lib/$multiarch"
  mkdir -p "$out"
  cat >"$out/crun.$$" <<WRAP
#!/bin/sh
# trixie's crun through trixie's dynamic loader; libwasmedge.so.0 from the WasmEdge prefix.
exec "$loader" --library-path "$libpath" "$prefix/root/usr/bin/crun" "\$@"
WRAP
  chmod +x "$out/crun.$$"
  mv -f "$out/crun.$$" "$out/crun"
  local version
  version="$("$prefix/root/usr/bin/containerd" --version 2>/dev/null | awk '{print $3}')"
  cat >"$out/env.$$" <<ENV
export SKYLARK_CRI_BIN='$prefix/root/usr/bin'
export SKYLARK_CRI_CRUN='$out/crun'
export SKYLARK_CRI_VERSION='$version'
export SKYLARK_CRI_LIBPATH='$libpath'
ENV
  mv -f "$out/env.$$" "$out/env"
}

check() { # 0 when every program starts
  "$prefix/root/usr/bin/containerd" --version >/dev/null 2>&1 \
    && "$prefix/root/usr/bin/ctr" --version >/dev/null 2>&1 \
    && "$prefix/root/usr/bin/containerd-shim-runc-v2" -v >/dev/null 2>&1 \
    && "$out/crun" --version 2>/dev/null | grep -q 'WASM:wasmedge'
}

# One install at a time (another checkout's test may be installing into the same prefix).
mkdir -p "$(dirname "$prefix")"
exec 9>"$prefix.lock"
flock 9

if [ "${SKYLARK_CRI_FORCE:-0}" != 1 ] && [ -f "$prefix/.complete" ]; then
  write_wrappers   # the WasmEdge prefix may have moved
  check || fail "the installed containerd or crun in $prefix does not start; rerun with SKYLARK_CRI_FORCE=1"
  log "containerd and crun already installed in $prefix"
  echo "$out/env"
  exit 0
fi

apt_dir="$prefix/apt"
rm -rf "$prefix"
mkdir -p "$prefix/root"
# shellcheck source=../../scripts/lib/private-apt.sh
source "$root/scripts/lib/private-apt.sh"
private_apt_setup "$apt_dir" trixie
apt_opts=("${PRIVATE_APT_OPTS[@]}")
log "fetching trixie package lists into a private apt state ($apt_dir)"
apt-get "${apt_opts[@]}" -qq update >&2 || skip "cannot fetch Debian trixie package lists (no network?)"
log "downloading containerd and crun with their dependency closure"
apt-get "${apt_opts[@]}" -qq -y --download-only install containerd crun >/dev/null \
  || skip "cannot download trixie's containerd and crun packages (no network?)"
for deb in "$apt_dir"/cache/archives/*.deb; do
  case "$(dpkg-deb -f "$deb" Package)" in
    libc6 | libgcc-s1 | gcc-14-base) ;; # from the WasmEdge install's trixie runtime
    *) dpkg-deb -x "$deb" "$prefix/root" ;;
  esac
done
rm -rf "$apt_dir"
write_wrappers
check || fail "containerd, ctr, containerd-shim-runc-v2 or crun (+WASM:wasmedge) from $prefix does not start here"
touch "$prefix/.complete"
log "containerd $("$prefix/root/usr/bin/containerd" --version | awk '{print $3}') and $("$out/crun" --version | head -n1) installed in $prefix"
echo "$out/env"
