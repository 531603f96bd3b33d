#!/usr/bin/env bash
# Propagation benchmark (see BENCHMARKS.md): builds the plugin and guests, then measures
# put latency with and without 60 ms remote links and the delay until copies are readable
# on the simulated constellation, and prints Markdown tables.
#   bash scripts/prop-bench.sh [--puts N] [--copies N]
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
build_all
cargo run --release -p skylark-bench --bin prop-bench -- "$@"
