#!/usr/bin/env bash
# Propagation benchmark (see BENCHMARKS.md): builds the plugin and guests, then measures
# put latency with and without 60 ms remote links and the delay until copies are readable
# on the simulated constellation, and prints Markdown tables.
#   bash scripts/prop-bench.sh [--puts N] [--copies N]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/build.sh
# shellcheck disable=SC1091
source target/build-env.sh
cargo run --release -p skylark-tests --bin prop-bench -- "$@"
