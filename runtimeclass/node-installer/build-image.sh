#!/usr/bin/env bash
# Builds the shim installer image (skylark/shim-installer) without Docker, for one or
# several architectures (an OCI index with one manifest per platform, e.g. linux/amd64 and
# linux/arm64): per architecture a root file system of Debian trixie's busybox-static,
# python3-minimal and python3-tomlkit of that architecture (with their dependency closure,
# downloaded through a private apt state, scripts/lib/private-apt.sh, nothing installed on
# this machine), plus in /skylark: install.sh, containerd_handler.py, the shim,
# libwasmedge and the plugin of that architecture. `oci-image rootfs` packs it and refuses
# native code of another machine in a platform's layer; the image's entrypoint is
# /skylark/install.sh (kwasm-operator runs installer images with their entrypoint and
# NODE_ROOT set to the host's root).
#
#   build-image.sh [--arch ARCH] --shim FILE --plugin FILE --libwasmedge FILE
#                  [--arch ARCH2 --shim FILE --plugin FILE --libwasmedge FILE ...]
#                  --out DIR [--name NAME:TAG] [--tar FILE] [--rootfs DIR]
#
# ARCH is a Debian architecture (amd64, arm64); files before the first --arch are this
# machine's. The shims must be built for a trixie node (standard dynamic loader, e.g.
# /lib/ld-linux-aarch64.so.1): scripts/build-node-shim.sh (amd64) and
# scripts/build-arm64.sh --shim (arm64); a shim linked to this machine's private WasmEdge
# prefix (target/*/containerd-shim-skylark-v1 on a non-trixie machine) is refused.
# --rootfs keeps the assembled roots there, one directory per architecture (tests run
# install.sh in this machine's with chroot).
# The last line on stdout is oci-image's JSON (index digest to pin the DaemonSet's image).
# exit 77: the Debian packages cannot be downloaded here (no network, not Debian).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
name=skylark/shim-installer:0.1.0
out="" tar="" keep=""
host_arch="$(dpkg --print-architecture)"
arches=() # in order of appearance
declare -A shim=() plugin=() libwasmedge=()
arch=""
current() { # the architecture the next file belongs to
  if [ -z "$arch" ]; then arch=$host_arch; arches+=("$arch"); fi
}
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || { echo "build-image.sh: $1 needs a value" >&2; exit 1; }
  case $1 in
    --arch)
      arch=$2
      case " ${arches[*]} " in *" $arch "*) echo "build-image.sh: --arch $arch given twice" >&2; exit 1 ;; esac
      arches+=("$arch")
      shift 2 ;;
    --shim) current; shim[$arch]=$2; shift 2 ;;
    --plugin) current; plugin[$arch]=$2; shift 2 ;;
    --libwasmedge) current; libwasmedge[$arch]=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --tar) tar=$2; shift 2 ;;
    --rootfs) keep=$2; shift 2 ;;
    *) echo "build-image.sh: unknown argument $1" >&2; exit 1 ;;
  esac
done
[ -n "$out" ] || { echo "build-image.sh: --out is required" >&2; exit 1; }
[ ${#arches[@]} -gt 0 ] || { echo "build-image.sh: --shim, --plugin and --libwasmedge are required" >&2; exit 1; }

# The standard dynamic loader of a trixie node, and the qemu-user that lists busybox's
# applets of a foreign architecture.
loader_of() { case $1 in amd64) echo /lib64/ld-linux-x86-64.so.2 ;; arm64) echo /lib/ld-linux-aarch64.so.1 ;; *) return 1 ;; esac; }
qemu_of() { case $1 in arm64) echo qemu-aarch64-static ;; amd64) echo qemu-x86_64-static ;; esac; }
for a in "${arches[@]}"; do
  for f in "${shim[$a]:-}" "${plugin[$a]:-}" "${libwasmedge[$a]:-}"; do
    [ -f "$f" ] || { echo "build-image.sh: $a: --shim, --plugin and --libwasmedge must be files" >&2; exit 1; }
  done
  want="$(loader_of "$a")" || { echo "build-image.sh: unsupported architecture $a (amd64, arm64)" >&2; exit 1; }
  interp="$(readelf -l "${shim[$a]}" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')" || interp=""
  if [ "$interp" != "$want" ]; then
    echo "build-image.sh: $a: ${shim[$a]} starts with the interpreter '$interp', not $want: not a shim for a trixie node (build it with scripts/build-node-shim.sh or scripts/build-arm64.sh --shim)" >&2
    exit 1
  fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
[ -n "$keep" ] || keep="$work/rootfs"
# shellcheck source=../../scripts/lib/private-apt.sh
source "$repo/scripts/lib/private-apt.sh"
dirs=()
for a in "${arches[@]}"; do
  rootfs="$keep/$a"
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  private_apt_setup "$work/apt-$a" trixie "$a"
  apt-get "${PRIVATE_APT_OPTS[@]}" -qq update >&2 || { echo "SKIP: cannot fetch trixie package lists"; exit 77; }
  apt-get "${PRIVATE_APT_OPTS[@]}" -qq -y --download-only install busybox-static python3-minimal python3-tomlkit >/dev/null \
    || { echo "SKIP: cannot download trixie's $a busybox-static, python3-minimal, python3-tomlkit"; exit 77; }
  for deb in "$work/apt-$a"/cache/archives/*.deb; do
    dpkg-deb -x "$deb" "$rootfs"
  done
  # trixie's packages install under /usr; the merged-/usr links that a Debian system has.
  for d in bin sbin lib lib64; do
    [ -e "$rootfs/$d" ] || [ -L "$rootfs/$d" ] || { mkdir -p "$rootfs/usr/$d"; ln -s "usr/$d" "$rootfs/$d"; }
  done
  # busybox's applets (sh, cp, cmp, mv, nsenter, ...) as links in /usr/bin, where no
  # package put a program of that name. A foreign busybox (static) lists them under qemu.
  mkdir -p "$rootfs/tmp"
  chmod 1777 "$rootfs/tmp"
  busybox=("$rootfs/usr/bin/busybox")
  if [ "$a" != "$host_arch" ]; then
    q="$(qemu_of "$a")"
    command -v "$q" >/dev/null || { echo "build-image.sh: listing the $a busybox's applets needs $q (qemu-user-static)" >&2; exit 1; }
    busybox=("$q" "$rootfs/usr/bin/busybox")
  fi
  applets="$("${busybox[@]}" --list)" || { echo "build-image.sh: cannot list the $a busybox's applets" >&2; exit 1; }
  for applet in $applets; do
    [ -e "$rootfs/usr/bin/$applet" ] || [ -L "$rootfs/usr/bin/$applet" ] || ln -s busybox "$rootfs/usr/bin/$applet"
  done
  [ -e "$rootfs/usr/bin/python3" ] || { echo "build-image.sh: no /usr/bin/python3 in the $a packages" >&2; exit 1; }

  mkdir -p "$rootfs/skylark/lib"
  install -m 0755 "$here/install.sh" "$here/containerd_handler.py" "$rootfs/skylark/"
  install -m 0755 "${shim[$a]}" "$rootfs/skylark/containerd-shim-skylark-v1"
  install -m 0644 "${plugin[$a]}" "$rootfs/skylark/libwasmedgePluginSkylark.so"
  install -m 0644 "${libwasmedge[$a]}" "$rootfs/skylark/lib/libwasmedge.so.0"
  dirs+=(--dir "linux/$a=$rootfs")
done

args=(rootfs "${dirs[@]}" --name "$name" --out "$out" --entrypoint /skylark/install.sh
  --env PATH=/usr/bin:/bin)
[ -z "$tar" ] || args+=(--tar "$tar")
cargo run -q --manifest-path "$repo/Cargo.toml" -p oci-image -- "${args[@]}"
