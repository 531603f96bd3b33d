#!/usr/bin/env bash
# README command 2: builds the plugin and guests, then runs every test (unit tests and
# the system tests that drive real wasmedge, the real plugin and real redis-server),
# after installing what the arm64 test needs besides (setup-deps.sh --arm64), and before
# the build the C compiler for wasm32-wasi that the C guest needs (setup-deps.sh --c-guest).
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# The C guest (ex_functions/c-hello, tests/tests/c_guest.rs): build.sh builds it when the
# wasm32-wasi C toolchain is there.
bash "$root/scripts/setup-deps.sh" --c-guest >&2
build_all
# The arm64 cross-build's test (tests/tests/arm64.rs) needs the cross toolchain and qemu.
bash "$root/scripts/setup-deps.sh" --arm64 >&2
cargo test --workspace "$@"
