#!/usr/bin/env bash
# README command 2: builds the plugin and guests, then runs every test (unit tests and
# the system tests that drive real wasmedge, the real plugin and real redis-server),
# after installing what the arm64 test needs besides (setup-deps.sh --arm64).
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
build_all
# The arm64 cross-build's test (tests/tests/arm64.rs) needs the cross toolchain and qemu.
bash "$root/scripts/setup-deps.sh" --arm64 >&2
cargo test --workspace "$@"
