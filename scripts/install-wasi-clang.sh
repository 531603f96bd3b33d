#!/usr/bin/env bash
# Installs a C compiler for wasm32-wasi guests into a project-local prefix (default:
# <repo>/.wasi-clang) from Debian trixie's packages: clang, lld (wasm-ld), wasi-libc and
# compiler-rt's wasm32 builtins, without root and without touching the machine's apt
# sources or system libraries (the private apt configuration of scripts/lib/private-apt.sh,
# like scripts/install-wasmedge.sh).
#
# Layout of the prefix:
#   root/                 the unpacked packages and the trixie libraries clang runs on
#                         (glibc, libstdc++, LLVM); wasi-libc is root/usr/{include,lib}/wasm32-wasi
#   bin/wasm32-wasi-clang a wrapper: trixie's clang through trixie's own dynamic loader, with
#                         the target, the sysroot, the resource directory and the linker set
#   bin/wasm-ld           the same for the linker, which clang starts as a program of its own
#   env                   shell fragment: SKYLARK_WASI_CC (the wrapper)
#
# The wrapper runs one step per call: compile with `-c`, then link the objects in a second
# call (clang starts a compile-and-link job's compiler as a process of its own, which the
# loader indirection cannot start; a single step runs inside the driver).
#
# About 90 MB downloaded, about 310 MB unpacked; about 10 s with a nearby mirror.
# Idempotent: a complete prefix is left as it is. Set SKYLARK_WASI_CLANG_FORCE=1 to redo it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="${SKYLARK_WASI_CLANG_PREFIX:-$root/.wasi-clang}"
suite="${SKYLARK_WASI_CLANG_SUITE:-trixie}"
mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"

log() { printf '[install-wasi-clang] %s\n' "$*" >&2; }

# Compiles and links a tiny C program with the wrapper; true when the result is a wasm module.
self_check() {
  local dir
  dir="$(mktemp -d)"
  printf '#include <stdio.h>\nint main(void) { puts("ok"); return 0; }\n' >"$dir/t.c"
  "$prefix/bin/wasm32-wasi-clang" -O2 -c -o "$dir/t.o" "$dir/t.c" \
    && "$prefix/bin/wasm32-wasi-clang" -o "$dir/t.wasm" "$dir/t.o" \
    && [ "$(head -c 4 "$dir/t.wasm" | od -An -tx1 | tr -d ' \n')" = 0061736d ]
  local rc=$?
  rm -rf "$dir"
  return $rc
}

if [ "${SKYLARK_WASI_CLANG_FORCE:-0}" != 1 ] && [ -f "$prefix/.complete" ] \
   && [ -x "$prefix/bin/wasm32-wasi-clang" ] && self_check; then
  log "wasm32-wasi clang already installed in $prefix"
  exit 0
fi

# shellcheck source=scripts/lib/private-apt.sh
source "$root/scripts/lib/private-apt.sh"
private_apt_check install-wasi-clang || exit 1

apt_dir="$prefix/apt"
rm -rf "${prefix:?}/root" "${prefix:?}/bin" "${prefix:?}/env" "${prefix:?}/.complete"
private_apt_setup "$apt_dir" "$suite"
log "fetching $suite package lists into a private apt state"
apt-get "${PRIVATE_APT_OPTS[@]}" -qq update
log "resolving and downloading clang, lld, wasi-libc and the wasm32 builtins"
apt-get "${PRIVATE_APT_OPTS[@]}" -qq -y --download-only install \
  clang lld wasi-libc libclang-rt-dev-wasm32 >/dev/null

mkdir -p "$prefix/root" "$prefix/bin"
for deb in "$apt_dir"/cache/archives/*.deb; do
  name="$(dpkg-deb -f "$deb" Package)"
  case "$name" in
    # What clang's packages depend on for compiling and linking native (x86-64) C and C++
    # programs: binutils, glibc's and GCC's development files and sanitizer runtimes. A
    # wasm32-wasi build uses none of them.
    binutils*|libbinutils|libctf*|libgprofng*|libsframe*|libjansson*|libc6-dev|libc-dev-bin|\
    linux-libc-dev|libcrypt-dev|rpcsvc-proto|libstdc++-*-dev|libgcc-*-dev|libobjc*|libgc1|\
    libasan*|liblsan*|libtsan*|libubsan*|libhwasan*|libquadmath*|libgomp*|libitm*|libatomic*) ;;
    *) dpkg-deb -x "$deb" "$prefix/root" ;;
  esac
done

multiarch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
loader="$(find "$prefix/root" \( -name 'ld-linux*.so.*' -type f \) -o \( -name 'ld-linux*.so.*' -type l \) | head -n1)"
[ -n "$loader" ] || { log "no dynamic loader found in the unpacked packages"; exit 1; }
# The one LLVM the clang package pulled in (llvm-19 in trixie).
llvm="$(find "$prefix/root/usr/lib" -maxdepth 1 -name 'llvm-*' -type d | head -n1)"
[ -n "$llvm" ] && [ -x "$llvm/bin/clang" ] && [ -x "$llvm/bin/wasm-ld" ] \
  || { log "no clang and wasm-ld under $prefix/root/usr/lib/llvm-*"; exit 1; }
resource="$(find "$llvm/lib/clang" -mindepth 1 -maxdepth 1 -type d | head -n1)"
[ -n "$resource" ] && [ -f "$resource/lib/wasi/libclang_rt.builtins-wasm32.a" ] \
  || { log "no wasm32 builtins in $llvm/lib/clang/*/lib/wasi"; exit 1; }
[ -f "$prefix/root/usr/lib/wasm32-wasi/libc.a" ] || { log "no wasi-libc in $prefix/root/usr/lib/wasm32-wasi"; exit 1; }
libpath="$prefix/root/usr/lib/$multiarch:$prefix/root/lib/$multiarch:$llvm/lib"

cat >"$prefix/bin/wasm-ld" <<WRAP
#!/bin/sh
# Runs Debian $suite's wasm-ld through $suite's own dynamic loader and libraries.
exec "$loader" --library-path "$libpath" "$llvm/bin/wasm-ld" "\$@"
WRAP
# Target wasm32-wasi: the triple whose directories Debian's wasi-libc and builtins use.
# -resource-dir: clang derives it from its own path, which is the loader's here.
cat >"$prefix/bin/wasm32-wasi-clang" <<WRAP
#!/bin/sh
# Runs Debian $suite's clang for wasm32-wasi (wasi-libc from Debian) through $suite's own
# dynamic loader. One step per call: compile with -c, link in a second call.
exec "$loader" --library-path "$libpath" "$llvm/bin/clang" --target=wasm32-wasi \\
  --sysroot="$prefix/root/usr" -resource-dir "$resource" -fuse-ld="$prefix/bin/wasm-ld" \\
  -Wno-unused-command-line-argument "\$@"
WRAP
chmod +x "$prefix/bin/wasm-ld" "$prefix/bin/wasm32-wasi-clang"
echo "export SKYLARK_WASI_CC=\"$prefix/bin/wasm32-wasi-clang\"" >"$prefix/env"

self_check || { log "the installed clang does not build a wasm32-wasi module"; exit 1; }
rm -rf "$apt_dir/cache/archives"/*.deb "$apt_dir/lists"
touch "$prefix/.complete"
log "$("$loader" --library-path "$libpath" "$llvm/bin/clang" --version | head -n1) for wasm32-wasi installed in $prefix"
