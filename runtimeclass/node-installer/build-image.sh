#!/usr/bin/env bash
# Builds the shim installer image (skylark/shim-installer) without Docker: a root file
# system of Debian trixie's busybox-static, python3-minimal and python3-tomlkit (with
# their dependency closure, downloaded through a private apt state, scripts/lib/
# private-apt.sh, nothing installed on this machine), plus in /skylark: install.sh,
# containerd_handler.py, the shim, libwasmedge and the plugin. `oci-image rootfs` packs
# it; the image's entrypoint is /skylark/install.sh (kwasm-operator runs installer images
# with their entrypoint and NODE_ROOT set to the host's root).
#
#   build-image.sh --shim FILE --plugin FILE --libwasmedge FILE --out DIR
#                  [--name NAME:TAG] [--tar FILE] [--rootfs DIR]
#
# --rootfs keeps the assembled root there (tests run install.sh in it with chroot).
# The last line on stdout is oci-image's JSON (index digest to pin the DaemonSet's image).
# exit 77: the Debian packages cannot be downloaded here (no network, not Debian).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
name=skylark/shim-installer:0.1.0
shim="" plugin="" libwasmedge="" out="" tar="" rootfs=""
while [ $# -gt 0 ]; do
  case $1 in
    --shim) shim=$2; shift 2 ;;
    --plugin) plugin=$2; shift 2 ;;
    --libwasmedge) libwasmedge=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --tar) tar=$2; shift 2 ;;
    --rootfs) rootfs=$2; shift 2 ;;
    *) echo "build-image.sh: unknown argument $1" >&2; exit 1 ;;
  esac
done
for f in "$shim" "$plugin" "$libwasmedge"; do
  [ -f "$f" ] || { echo "build-image.sh: --shim, --plugin and --libwasmedge must be files" >&2; exit 1; }
done
[ -n "$out" ] || { echo "build-image.sh: --out is required" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
[ -n "$rootfs" ] || rootfs="$work/rootfs"
rm -rf "$rootfs"
mkdir -p "$rootfs"

# shellcheck source=../../scripts/lib/private-apt.sh
source "$repo/scripts/lib/private-apt.sh"
private_apt_setup "$work/apt" trixie
apt-get "${PRIVATE_APT_OPTS[@]}" -qq update >&2 || { echo "SKIP: cannot fetch trixie package lists"; exit 77; }
apt-get "${PRIVATE_APT_OPTS[@]}" -qq -y --download-only install busybox-static python3-minimal python3-tomlkit >/dev/null \
  || { echo "SKIP: cannot download trixie's busybox-static, python3-minimal, python3-tomlkit"; exit 77; }
for deb in "$work"/apt/cache/archives/*.deb; do
  dpkg-deb -x "$deb" "$rootfs"
done
# trixie's packages install under /usr; the merged-/usr links that a Debian system has.
for d in bin sbin lib lib64; do
  [ -e "$rootfs/$d" ] || [ -L "$rootfs/$d" ] || { mkdir -p "$rootfs/usr/$d"; ln -s "usr/$d" "$rootfs/$d"; }
done
# busybox's applets (sh, cp, cmp, mv, nsenter, ...) as links in /usr/bin, where no
# package put a program of that name.
mkdir -p "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
for applet in $("$rootfs/usr/bin/busybox" --list); do
  [ -e "$rootfs/usr/bin/$applet" ] || [ -L "$rootfs/usr/bin/$applet" ] || ln -s busybox "$rootfs/usr/bin/$applet"
done
[ -e "$rootfs/usr/bin/python3" ] || { echo "build-image.sh: no /usr/bin/python3 in the packages" >&2; exit 1; }

mkdir -p "$rootfs/skylark/lib"
install -m 0755 "$here/install.sh" "$here/containerd_handler.py" "$rootfs/skylark/"
install -m 0755 "$shim" "$rootfs/skylark/containerd-shim-skylark-v1"
install -m 0644 "$plugin" "$rootfs/skylark/libwasmedgePluginSkylark.so"
install -m 0644 "$libwasmedge" "$rootfs/skylark/lib/libwasmedge.so.0"

args=(rootfs --dir "$rootfs" --name "$name" --out "$out" --entrypoint /skylark/install.sh
  --env PATH=/usr/bin:/bin)
[ -z "$tar" ] || args+=(--tar "$tar")
cargo run -q --manifest-path "$repo/Cargo.toml" -p oci-image -- "${args[@]}"
