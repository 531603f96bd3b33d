#!/usr/bin/env bash
# Fault-injection run (RELIABILITY.md, section 2): builds the plugin and guests, then puts
# across the emulated constellation while links are cut and restored and node
# redis-servers are SIGKILLed and restarted at random, verifies every put on every store,
# and SIGKILLs wasmedge in the middle of large puts. Prints the tallies; exits non-zero
# if anything was lost, corrupted, left partial or stuck.
#   bash scripts/fault-run.sh [--puts N] [--seed S] [--duration SECS] [--kills N] ...
# (all options: bash scripts/fault-run.sh --help)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/build.sh
# shellcheck disable=SC1091
source target/build-env.sh
cargo run --release -p skylark-tests --bin fault-run -- "$@"
