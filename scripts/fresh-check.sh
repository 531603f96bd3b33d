#!/usr/bin/env bash
# Fresh-machine check: runs README command 1 (`bash scripts/demo.sh`) and
# `cargo test -p skylark-abi` as root inside a minimal Debian bookworm root, the way they
# run on a new machine, so that a missing install step fails here and not on the next
# developer's machine (a machine that has been used keeps what was installed by hand).
#
# The root stands for a new machine of this project's kind: `mmdebstrap --variant=minbase`
# plus the packages of that machine's image that matter to a build (see `packages` below).
# Of what setup-deps.sh installs when missing it has only what the image has as well (curl,
# openssl, the Debian archive keyring, which apt itself needs); redis-server, redis-tools,
# libclang-dev and the DejaVu font are not there. It keeps libclang-cpp14 and llvm: their
# presence is what made the old setup-deps.sh believe libclang was installed. The host's
# Rust toolchain is bind-mounted into it (~/.rustup read-only, ~/.cargo read-write so that
# cargo's registry cache is shared).
#
# Each run unpacks a pristine copy of the cached root into a temporary directory, puts the
# committed tree of the checkout into it (`git archive`, never the host's target/ or
# .wasmedge/) and deletes it all afterwards, so nothing one run installs (apt packages,
# WasmEdge, build output) reaches the next. Every mount lives in a private mount namespace
# (`unshare`) that dies with the step, so no mount outlives the script, whatever the way
# it ends. Needs root, Linux, util-linux's unshare, and Debian's archive (mmdebstrap is
# installed with apt-get when missing).
#
# Usage: bash scripts/fresh-check.sh [--rev REV] [--rebuild-root] [--keep] [--verbose]
#   --rev REV        check the committed tree of REV instead of HEAD (e.g. an old commit)
#   --rebuild-root   build the base root anew even if a cached one exists (cold run)
#   --keep           keep the used root (unmounted) and print where it is
#   --verbose        stream every step's output, not only a failing step's last lines
# Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/skylark/fresh-root-bookworm-<key>.tar (~0.8 GB),
# keyed by suite, mirrors and package list. Logs: target/fresh-check/*.log.
# Environment: SKYLARK_FRESH_MIRROR and SKYLARK_FRESH_SECURITY_MIRROR (Debian mirrors,
# default deb.debian.org), SKYLARK_FRESH_TMPDIR (where the root is unpacked, default
# /var/tmp), SKYLARK_FRESH_TAIL (lines of a failing step's log shown, default 150).
#
# Cost on the 2-core machine, measured: cold (--rebuild-root) 5 min 45 s with the machine
# otherwise quiet (50 s to build the root, 4.5 min for README command 1, of it 3 min the
# plugin build, 19 s for the ABI tests; 8.7 min of CPU); warm (cached root) the root's 50 s
# less. While other engineers' builds ran (load 5-11) it took 22 min cold and 12 min warm.
# Almost all of it is building the plugin (wasmedge-sys with bindgen included) and the
# guests from scratch, which is the point; cargo's registry cache is shared, so no crate
# is downloaded twice.
set -euo pipefail

self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"

# Inside the step's own mount and PID namespaces (see `in_root` below): mounts what the root
# needs and runs the command there as root with a clean environment. Nothing here is
# unmounted by hand: the mounts go away with the namespace when the step ends.
if [ "${1:-}" = __enter ]; then
  shift
  r="$1" rustup_home="$2" cargo_home="$3"
  shift 3
  mount -t proc proc "$r/proc"
  mount --rbind /sys "$r/sys"
  mount --rbind /dev "$r/dev"
  mkdir -p "$r/root/.rustup" "$r/root/.cargo"
  mount --bind "$rustup_home" "$r/root/.rustup"
  mount -o remount,bind,ro "$r/root/.rustup"
  mount --bind "$cargo_home" "$r/root/.cargo"
  env=(HOME=/root USER=root LOGNAME=root SHELL=/bin/bash LANG=C.UTF-8 TERM=dumb
       PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
  for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [ -n "${!v:-}" ] && env+=("$v=${!v}")
  done
  # shellcheck disable=SC2016 # expanded by the shell inside the root
  chroot "$r" /usr/bin/env -i "${env[@]}" /bin/bash -c 'cd /root/skylark && "$@"' bash "$@"
  exit $?
fi

repo="$(cd "$(dirname "$self")/.." && pwd)"
rev=HEAD rebuild=0 keep=0 verbose=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rev) [ $# -ge 2 ] || { echo "--rev needs a revision" >&2; exit 2; }; rev="$2"; shift 2 ;;
    --rebuild-root) rebuild=1; shift ;;
    --keep) keep=1; shift ;;
    --verbose) verbose=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$self" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '[fresh-check] %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (it builds and enters a chroot)"
command -v unshare >/dev/null || die "missing unshare (util-linux)"
commit="$(git -C "$repo" rev-parse --verify --quiet "$rev^{commit}")" || die "no commit $rev"

# The base root. Packages of the machine image that matter to a build (the image's list is
# in the workplace's installed-rust.txt): the C toolchain, pkg-config, git, TLS roots,
# curl, OpenSSL's headers, and libclang-cpp14/llvm (present on the image, but not the
# libclang bindgen needs). The image also has the DejaVu fonts; they matter to no build
# and are left out so that setup-deps.sh's install of them is exercised too.
suite=bookworm
mirror="${SKYLARK_FRESH_MIRROR:-http://deb.debian.org/debian}"
security="${SKYLARK_FRESH_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
packages=(build-essential pkg-config git ca-certificates curl libssl-dev libclang-cpp14 llvm-14 llvm)
sources=(
  "deb [signed-by=$keyring] $mirror $suite main"
  "deb [signed-by=$keyring] $mirror $suite-updates main"
  "deb [signed-by=$keyring] $security $suite-security main"
)
key="$(printf '%s\n' minbase-v1 "${sources[@]}" "${packages[@]}" | sha256sum | cut -c1-16)"
cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/skylark"
tarball="$cache_dir/fresh-root-$suite-$key.tar"
log_dir="$repo/target/fresh-check"
mkdir -p "$cache_dir" "$log_dir"

t_start=$SECONDS
tmp="" child=""
cleanup() { # keeps the exit status; deletes the temporary root only once nothing is mounted in it
  local rc=$?
  set +e
  if [ -n "$child" ]; then
    # Interrupted during a step. unshare ignores SIGINT and SIGTERM while it waits; killed,
    # it takes its child, the namespace's first process, and so the whole step down with it.
    say "stopping the running step"
    kill -KILL "$child" 2>/dev/null
    wait "$child" 2>/dev/null
    local deadline=$((SECONDS + 10))
    while [ $SECONDS -lt $deadline ] && in_use "$tmp/root"; do sleep 0.2; done
  fi
  if [ -n "$tmp" ] && [ -d "$tmp" ]; then
    if findmnt -rn -o TARGET | grep -qF "$tmp"; then
      say "mounts left under $tmp (should be impossible: they live in the steps' namespaces); unmounting"
      findmnt -rn -o TARGET | grep -F "$tmp" | sort -r | while read -r m; do umount -l "$m"; done
    fi
    if findmnt -rn -o TARGET | grep -qF "$tmp"; then
      say "still mounted under $tmp; not deleting it"; rc=1
    elif [ "$keep" = 1 ]; then
      say "kept the root at $tmp/root"
    else
      rm -rf "$tmp"
    fi
  fi
  exit "$rc"
}
in_use() { # dir -> true while a process runs chrooted there
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$1" ] && return 0
  done
  return 1
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

build_root() {
  if ! command -v mmdebstrap >/dev/null || [ ! -f "$keyring" ]; then
    say "apt-get install mmdebstrap debian-archive-keyring"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      mmdebstrap debian-archive-keyring >/dev/null
  fi
  local log="$log_dir/root.log" t0=$SECONDS
  say "building the base root ($suite minbase + ${packages[*]}) into $tarball"
  # Its own mount namespace as well: whatever mmdebstrap mounts cannot outlive it.
  if ! unshare --mount --propagation private --fork --kill-child -- \
      mmdebstrap --mode=root --variant=minbase --format=tar \
        --include="$(IFS=,; echo "${packages[*]}")" \
        "$suite" "$tarball.part" "${sources[@]}" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    rm -f "$tarball.part"
    die "building the base root (log: $log)"
  fi
  find "$cache_dir" -maxdepth 1 -name "fresh-root-*.tar" ! -name "$(basename "$tarball")" -delete
  mv -f "$tarball.part" "$tarball"
  say "base root built in $((SECONDS - t0)) s ($(du -m "$tarball" | cut -f1) MB)"
}

(
  flock 9
  if [ "$rebuild" = 1 ] || [ ! -s "$tarball" ]; then build_root; else say "using the cached base root $tarball"; fi
) 9>"$cache_dir/.lock"

tmp="$(mktemp -d "${SKYLARK_FRESH_TMPDIR:-/var/tmp}/skylark-fresh.XXXXXX")"
root="$tmp/root"
mkdir -p "$root"
t0=$SECONDS
tar -xf "$tarball" -C "$root" --numeric-owner
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
mkdir -p "$root/root/skylark"
git -C "$repo" archive --format=tar "$commit" | tar -x -C "$root/root/skylark"
say "root unpacked, tree of ${commit:0:12} ($rev) in /root/skylark ($((SECONDS - t0)) s)"

# Runs a command in /root/skylark inside the root, in fresh mount and PID namespaces: when
# unshare ends, however, its child (the namespace's first process) is killed, and with it
# every process of the step, and the namespace's mounts go away.
in_root=(unshare --mount --pid --propagation private --fork --kill-child --
         bash "$self" __enter "$root" "${RUSTUP_HOME:-$HOME/.rustup}" "${CARGO_HOME:-$HOME/.cargo}")

step_rc=0
step() { # name log command... -> runs a step, output to log (and the terminal with --verbose)
  local name="$1" log="$2"; shift 2
  local t0=$SECONDS
  say "$name: $*"
  step_rc=0
  # In the background, so that a signal to this script is handled at once (see cleanup).
  if [ "$verbose" = 1 ]; then
    "${in_root[@]}" "$@" > >(tee "$log") 2>&1 &
  else
    "${in_root[@]}" "$@" >"$log" 2>&1 &
  fi
  child=$!
  wait "$child" || step_rc=$?
  child=""
  say "$name: exit status $step_rc after $((SECONDS - t0)) s (log: $log)"
}
fail_step() { # name log reason
  [ "$verbose" = 1 ] || { say "last lines of $2:"; tail -n "${SKYLARK_FRESH_TAIL:-150}" "$2" >&2; }
  die "$1: $3"
}

# README command 1.
step demo "$log_dir/demo.log" bash scripts/demo.sh
[ "$step_rc" = 0 ] || fail_step demo "$log_dir/demo.log" "bash scripts/demo.sh exited with status $step_rc"
for n in 1 2 3; do
  grep -qE "^== $n/3 " "$log_dir/demo.log" || fail_step demo "$log_dir/demo.log" "the output has no step $n/3 heading"
done
alarm_line="$(grep -E '^alarm: [0-9]+ detection\(s\), threshold [0-9]+: ALARM$' "$log_dir/demo.log")" \
  || fail_step demo "$log_dir/demo.log" "the output has no ALARM decision of step 3/3"
say "demo: 3 workflow steps, $alarm_line"

step abi-tests "$log_dir/abi-tests.log" cargo test -p skylark-abi
[ "$step_rc" = 0 ] || fail_step abi-tests "$log_dir/abi-tests.log" "cargo test -p skylark-abi exited with status $step_rc"
grep -qE '^test result: ok\. [1-9][0-9]* passed; 0 failed' "$log_dir/abi-tests.log" \
  || fail_step abi-tests "$log_dir/abi-tests.log" "no passing test result"
grep -E '^test result: ' "$log_dir/abi-tests.log" | sed 's/^/  abi: /' >&2

say "passed: README command 1 and cargo test -p skylark-abi on a fresh $suite root, ${commit:0:12}, $((SECONDS - t_start)) s in all"
