#!/usr/bin/env bash
# The constellation experiment (see BENCHMARKS.md, "Constellation experiment"): builds the
# plugin and guests, brings up the emulated 8-node constellation (one redis-server per
# node, every path through the link emulator over shared links, the 7-slot schedule), runs the EO workflow
# under every configuration, tears everything down (also when interrupted) and writes
# the report to results/<UTC time>/ (report.md, latency.png, records.json, one
# scenario-*/ report per election scenario, fusion.json).
#   bash scripts/experiment.sh            # default run, under 30 minutes
#   bash scripts/experiment.sh --quick    # smoke run, 1-2 minutes (CI)
#   bash scripts/experiment.sh --full     # the published scale (hours; BENCHMARKS.md)
# (all options: bash scripts/experiment.sh --help)
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
build_all
cargo build --release -p skylark-experiment --bin experiment >&2
exec target/release/experiment "$@"
