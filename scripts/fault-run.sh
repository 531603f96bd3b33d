#!/usr/bin/env bash
# Fault-injection run (RELIABILITY.md, section 2): builds the plugin and guests, then
# overwrites versioned fields (some puts with cleanup, reads in between) across the
# emulated constellation while its topology moves, links are cut, blackholed and restored
# and node redis-servers are SIGKILLed and restarted at random; checks the reads against
# the put history and every field and bundle TTL on every store, and SIGKILLs wasmedge in
# the middle of large puts. Prints the tallies; exits non-zero if anything was lost,
# stale, corrupted, wrongly deleted, given a wrong TTL, read against the rules, left
# partial or stuck.
#   bash scripts/fault-run.sh [--puts N] [--seed S] [--duration SECS] [--kills N] ...
# (all options: bash scripts/fault-run.sh --help)
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
build_all
cargo run --release -p skylark-experiment --bin fault-run -- "$@"
