#!/usr/bin/env bash
# The constellation experiment (see BENCHMARKS.md, "Constellation experiment"): builds the
# plugin and guests, brings up the emulated 8-node constellation (one redis-server per
# node, every path through the link emulator, the 7-slot schedule), runs the EO workflow
# under every configuration, tears everything down (also when interrupted) and writes
# the report to results/<UTC time>/ (report.md, latency.png, records.json).
#   bash scripts/experiment.sh [--quick] [--reps N] [--sizes 0.5,1,2,5] [--slot-ms MS] ...
# (all options: tests/src/bin/experiment.rs)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/build.sh
# shellcheck disable=SC1091
source target/build-env.sh
cargo build --release -p skylark-tests --bin experiment >&2
exec target/release/experiment "$@"
