#!/usr/bin/env bash
# README command 2: builds the plugin and guests, then runs every test (unit tests and
# the system tests that drive real wasmedge, the real plugin and real redis-server).
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
build_all
cargo test --workspace "$@"
