#!/usr/bin/env bash
# Latency benchmark (see BENCHMARKS.md): builds the plugin and guests, then measures
# guest-visible skylark_put / skylark_get_bundle (interpreter and AOT) against native
# redis-rs commands on one throw-away redis-server and prints a Markdown table.
#   bash scripts/bench.sh [--out FILE] [--iterations N1K,N64K,N1M] [--warmup-pct P]
# --out FILE also writes the table to FILE; other arguments go to the bench binary.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

out=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out)
      [ $# -ge 2 ] || { echo "--out needs a file name" >&2; exit 2; }
      out="$2"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

build_all
if [ -n "$out" ]; then
  # Write to a temporary file first so that a failed run leaves no half table behind.
  tmp="$(mktemp)"
  trap 'rm -f "$tmp"' EXIT
  cargo run --release -p skylark-bench --bin bench -- "${args[@]}" >"$tmp"
  cat "$tmp"
  cat "$tmp" >"$out"
  echo "[bench] table written to $out" >&2
else
  cargo run --release -p skylark-bench --bin bench -- "${args[@]}"
fi
