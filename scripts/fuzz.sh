#!/usr/bin/env bash
# Fuzzing of the host ABI (RELIABILITY.md, section 1):
#  1. every cargo-fuzz target of fuzz/ (the host-side ABI layer: ids, options, bundle
#     encoding, layouts, bounds checks, argument decoding, the Instance behind every
#     import) for SECONDS each under libFuzzer, then the stable replay of the committed
#     regression inputs and seeds (tests/tests/fuzz_regressions.rs);
#  2. the wasm fuzz guest (tests/guests/fuzz-guest) under real wasmedge with the real
#     plugin and real redis-servers, CALLS random calls over PROCS processes and seeds.
# Prints the executions per target and the guest's tally per import and status.
#
#   bash scripts/fuzz.sh [--seconds 60] [--calls 1000000] [--procs 8] [--seed 1]
#                        [--targets ids,decode,...] [--no-cargo-fuzz] [--no-guest]
#
# Part 1 needs a nightly toolchain and cargo-fuzz (rustup toolchain install nightly;
# cargo install cargo-fuzz). A crashing input is saved in fuzz/artifacts/<target>/;
# once fixed, copy it to fuzz/regressions/<target>/ so that the stable test keeps it
# fixed. Exits non-zero if any target crashed or the guest run found a violation or crash.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

seconds=60
calls=1000000
procs=8
seed=1
targets=""
cargo_fuzz=1
guest=1
need() { [ $# -ge 2 ] || { echo "$1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) need "$@"; seconds="$2"; shift 2 ;;
    --calls) need "$@"; calls="$2"; shift 2 ;;
    --procs) need "$@"; procs="$2"; shift 2 ;;
    --seed) need "$@"; seed="$2"; shift 2 ;;
    --targets) need "$@"; targets="${2//,/ }"; shift 2 ;;
    --no-cargo-fuzz) cargo_fuzz=0; shift ;;
    --no-guest) guest=0; shift ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done

build_all
failed=0

if [ "$cargo_fuzz" = 1 ]; then
  if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "[fuzz] cargo-fuzz on nightly is missing: rustup toolchain install nightly; cargo install cargo-fuzz" >&2
    exit 2
  fi
  echo "[fuzz] building the cargo-fuzz targets (nightly, address sanitizer)" >&2
  (cd fuzz && cargo +nightly fuzz build >&2)
  [ -n "$targets" ] || targets="$(cd fuzz && cargo +nightly fuzz list | tr '\n' ' ')"
  logs="$(mktemp -d)"
  trap 'rm -rf "$logs"' EXIT
  summary=()
  for t in $targets; do
    mkdir -p "fuzz/corpus/$t"
    seeds=()
    [ -d "fuzz/seeds/$t" ] && seeds+=("seeds/$t")
    [ -d "fuzz/regressions/$t" ] && seeds+=("regressions/$t")
    echo "[fuzz] $t for ${seconds}s" >&2
    rc=0
    (cd fuzz && cargo +nightly fuzz run "$t" "corpus/$t" "${seeds[@]}" -- \
      -max_total_time="$seconds" -print_final_stats=1) >"$logs/$t.log" 2>&1 || rc=$?
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$' | tail -1)"
    rate="$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$' | tail -1)"
    corpus="$(find "fuzz/corpus/$t" -type f | wc -l)"
    if [ "$rc" = 0 ]; then
      outcome="no crash"
    else
      failed=1
      artifact="$(grep -o 'Test unit written to [^ ]*' "$logs/$t.log" | tail -1 | sed 's/Test unit written to //')"
      outcome="CRASH ${artifact:-(see log)}"
      grep -m1 -A3 'panicked at' "$logs/$t.log" >&2 || tail -20 "$logs/$t.log" >&2
    fi
    summary+=("$(printf '%-14s %12s %10s %8s  %s' "$t" "${runs:-?}" "${rate:-?}" "$corpus" "$outcome")")
  done
  echo "[fuzz] replaying fuzz/regressions and fuzz/seeds on stable" >&2
  cargo test -q -p skylark-tests --test fuzz_regressions >&2 || failed=1
  echo
  printf '%-14s %12s %10s %8s  %s\n' target executions "exec/s" corpus outcome
  printf '%s\n' "${summary[@]}"
  echo
fi

if [ "$guest" = 1 ]; then
  echo "[fuzz] wasm fuzz guest: $calls calls, $procs processes" >&2
  cargo run --release -q -p fuzz-runner -- \
    --calls "$calls" --procs "$procs" --parallel 2 --seed "$seed" || failed=1
fi
exit "$failed"
