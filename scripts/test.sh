#!/usr/bin/env bash
# README command 2: builds the plugin and guests, then runs every test (unit tests and
# the system tests that drive real wasmedge, the real plugin and real redis-server).
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/build.sh
# shellcheck disable=SC1091
source target/build-env.sh
cargo test --workspace "$@"
