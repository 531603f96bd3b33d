#!/usr/bin/env bash
# Installs an arm64 (aarch64) Debian trixie root for cross-building and running Skylark
# for the testbed's Raspberry Pis: trixie's arm64 wasmedge, libwasmedge0 and
# libwasmedge-dev 0.14.1 with their whole dependency closure (arm64 glibc, libstdc++,
# LLVM 19, ...) and libseccomp-dev (the shim links libseccomp), unpacked into one root,
# downloaded through the private apt configuration of scripts/lib/private-apt.sh (nothing
# on this machine changes: no dpkg --add-architecture, no apt sources).
#
#   prefix (default ~/.cache/skylark/trixie-arm64, or $SKYLARK_ARM64_PREFIX), shared by
#   every checkout on the machine and never changed once complete (a lock serializes
#   installs):
#     root/   the unpacked packages; root/lib/ld-linux-aarch64.so.1 is the loader
#
# Cross-building links against root/usr/include/wasmedge and
# root/usr/lib/aarch64-linux-gnu/libwasmedge.so; running uses qemu-user (qemu-aarch64 with
# -L root, no binfmt needed): scripts/build-arm64.sh does both.
# Idempotent: a complete prefix is kept. SKYLARK_ARM64_FORCE=1 redoes it.
#
#   exit 0   installed (or already there); the last line on stdout is the root's path
#   exit 77  cannot install here (no network, not Debian); one line on stdout says why
#   exit 1   anything else
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prefix="${SKYLARK_ARM64_PREFIX:-${HOME:-/root}/.cache/skylark/trixie-arm64}"
version_want="0.14.1"

log() { printf '[install-arm64-root] %s\n' "$*" >&2; }
skip() { printf 'SKIP: %s\n' "$*"; exit 77; }
fail() { printf 'FAIL: %s\n' "$*"; exit 1; }

for tool in apt-get dpkg-deb flock; do
  command -v "$tool" >/dev/null 2>&1 || skip "missing $tool: this script needs a Debian-based machine"
done
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || skip "missing debian-archive-keyring"

complete() {
  [ -e "$prefix/root/lib/ld-linux-aarch64.so.1" ] \
    && [ -f "$prefix/root/usr/include/wasmedge/wasmedge.h" ] \
    && [ -e "$prefix/root/usr/lib/aarch64-linux-gnu/libwasmedge.so" ]
}

mkdir -p "$(dirname "$prefix")"
exec 9>"$prefix.lock"
flock 9
if [ "${SKYLARK_ARM64_FORCE:-0}" != 1 ] && [ -f "$prefix/.complete" ] && complete; then
  log "trixie arm64 root already in $prefix/root"
  echo "$prefix/root"
  exit 0
fi

rm -rf "$prefix"
mkdir -p "$prefix/root"
# shellcheck source=scripts/lib/private-apt.sh
source "$here/lib/private-apt.sh"
private_apt_setup "$prefix/apt" trixie arm64
log "fetching trixie arm64 package lists into a private apt state"
apt-get "${PRIVATE_APT_OPTS[@]}" -qq update >&2 || skip "cannot fetch Debian trixie's arm64 package lists (no network?)"
log "downloading arm64 wasmedge $version_want, libseccomp-dev and their dependency closure"
apt-get "${PRIVATE_APT_OPTS[@]}" -qq -y --download-only install \
  "wasmedge=$version_want*" "libwasmedge0=$version_want*" "libwasmedge-dev=$version_want*" \
  libseccomp-dev >/dev/null || skip "cannot download trixie's arm64 wasmedge packages (no network?)"
for deb in "$prefix"/apt/cache/archives/*.deb; do
  dpkg-deb -x "$deb" "$prefix/root"
done
rm -rf "$prefix/apt"
# trixie is merged-/usr: the loader's path /lib/ld-linux-aarch64.so.1 goes through /lib.
for d in bin sbin lib; do
  [ -e "$prefix/root/$d" ] || [ -L "$prefix/root/$d" ] || ln -s "usr/$d" "$prefix/root/$d"
done
complete || fail "the arm64 root in $prefix lacks the loader, wasmedge.h or libwasmedge.so"
touch "$prefix/.complete"
log "trixie arm64 root with wasmedge $version_want in $prefix/root ($(du -sh "$prefix/root" | cut -f1))"
echo "$prefix/root"
