#!/usr/bin/env bash
# Installs WasmEdge 0.14.1 into a project-local prefix (default: <repo>/.wasmedge) from
# Debian trixie's packages, without touching the machine's apt sources or system libraries.
#
# Layout of the prefix:
#   wasmedge/   the wasmedge, libwasmedge0 and libwasmedge-dev packages (headers, libwasmedge.so)
#   runtime/    trixie's glibc, libstdc++, LLVM 19 and the other shared libraries they need;
#               kept apart so that rustc never sees this libc on LD_LIBRARY_PATH
#   bin/wasmedge  a wrapper that runs the real binary through runtime/'s dynamic loader
#   env         shell fragment: WASMEDGE_BIN, WASMEDGE_INCLUDE_DIR, WASMEDGE_LIB_DIR
#
# If a compatible wasmedge (0.14.x-0.16.x, plugin API 4) is already on PATH together with its
# headers and library, that one is used and only `env` is written.
# Idempotent: a complete prefix is left as it is. Set SKYLARK_WASMEDGE_FORCE=1 to redo it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="${SKYLARK_WASMEDGE_PREFIX:-$root/.wasmedge}"
suite="${SKYLARK_WASMEDGE_SUITE:-trixie}"
version_want="0.14.1"
mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"

log() { printf '[install-wasmedge] %s\n' "$*" >&2; }

write_env() { # bin include lib
  cat >"$prefix/env" <<ENV
export WASMEDGE_BIN="$1"
export WASMEDGE_INCLUDE_DIR="$2"
export WASMEDGE_LIB_DIR="$3"
ENV
}

compatible_version() { # prints version if 0.14-0.16
  local v
  v="$("$1" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1)" || return 1
  case "$v" in 0.14.*|0.15.*|0.16.*) echo "$v" ;; *) return 1 ;; esac
}

# 1. A compatible wasmedge already installed on the machine.
if [ "${SKYLARK_WASMEDGE_FORCE:-0}" != 1 ] && command -v wasmedge >/dev/null 2>&1 \
   && [ "$(command -v wasmedge)" != "$prefix/bin/wasmedge" ]; then
  sys_bin="$(command -v wasmedge)"
  if v="$(compatible_version "$sys_bin")"; then
    sys_root="$(dirname "$(dirname "$(readlink -f "$sys_bin")")")"
    inc="$sys_root/include"; lib=""
    for d in "$sys_root/lib" "$sys_root/lib64" "$sys_root/lib/x86_64-linux-gnu"; do
      [ -e "$d/libwasmedge.so" ] && lib="$d" && break
    done
    if [ -f "$inc/wasmedge/wasmedge.h" ] && [ -n "$lib" ]; then
      log "using wasmedge $v found at $sys_bin"
      write_env "$sys_bin" "$inc" "$lib"
      exit 0
    fi
    log "wasmedge $v on PATH has no headers/library next to it; installing a local copy"
  fi
fi

# 2. The project-local prefix, complete already.
if [ "${SKYLARK_WASMEDGE_FORCE:-0}" != 1 ] && [ -x "$prefix/bin/wasmedge" ] && [ -f "$prefix/.complete" ] \
   && v="$(compatible_version "$prefix/bin/wasmedge")"; then
  log "wasmedge $v already installed in $prefix"
  exit 0
fi

# 3. Download from Debian trixie with a private apt configuration.
# shellcheck source=scripts/lib/private-apt.sh
source "$root/scripts/lib/private-apt.sh"
private_apt_check install-wasmedge || exit 1

apt_dir="$prefix/apt"
rm -rf "${prefix:?}/wasmedge" "${prefix:?}/runtime" "${prefix:?}/bin" "${prefix:?}/.complete"
private_apt_setup "$apt_dir" "$suite"
log "fetching $suite package lists into a private apt state"
apt-get "${PRIVATE_APT_OPTS[@]}" -qq update
log "resolving and downloading wasmedge $version_want and its dependency closure"
apt-get "${PRIVATE_APT_OPTS[@]}" -qq -y --download-only install \
  "wasmedge=$version_want*" "libwasmedge0=$version_want*" "libwasmedge-dev=$version_want*" >/dev/null

mkdir -p "$prefix/wasmedge" "$prefix/runtime" "$prefix/bin"
for deb in "$apt_dir"/cache/archives/*.deb; do
  name="$(dpkg-deb -f "$deb" Package)"
  case "$name" in
    wasmedge|libwasmedge0|libwasmedge-dev) dpkg-deb -x "$deb" "$prefix/wasmedge" ;;
    *) dpkg-deb -x "$deb" "$prefix/runtime" ;;
  esac
done

multiarch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
loader="$(find "$prefix/runtime" -name 'ld-linux*.so.*' -type f -o -name 'ld-linux*.so.*' -type l | head -n1)"
[ -n "$loader" ] || { log "no dynamic loader found in the trixie runtime prefix"; exit 1; }
libpath="$prefix/wasmedge/usr/lib/$multiarch"
for d in lib/$multiarch usr/lib/$multiarch usr/lib/llvm-19/lib; do
  [ -d "$prefix/runtime/$d" ] && libpath="$libpath:$prefix/runtime/$d"
done
cat >"$prefix/bin/wasmedge" <<WRAP
#!/bin/sh
# Runs Debian trixie's wasmedge through trixie's own dynamic loader and libraries.
exec "$loader" --library-path "$libpath" "$prefix/wasmedge/usr/bin/wasmedge" "\$@"
WRAP
chmod +x "$prefix/bin/wasmedge"
write_env "$prefix/bin/wasmedge" "$prefix/wasmedge/usr/include" "$prefix/wasmedge/usr/lib/$multiarch"

v="$(compatible_version "$prefix/bin/wasmedge")" || {
  log "installed wasmedge does not run:"; "$prefix/bin/wasmedge" --version >&2 || true; exit 1; }
rm -rf "$apt_dir/cache/archives"/*.deb "$apt_dir/lists"
touch "$prefix/.complete"
log "wasmedge $v installed in $prefix (run $prefix/bin/wasmedge)"
