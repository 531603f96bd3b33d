# shellcheck shell=bash
# Sourced by the scripts that run the built plugin (bench.sh, demo.sh, experiment.sh,
# fault-run.sh, fuzz.sh, prop-bench.sh, test.sh): sets `root` to the repository root and
# changes into it, and defines `build_all`.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root" || exit 1

# Builds the plugin and every guest (scripts/build.sh, run as a step of its own so that
# `set -e` stops the caller at a failed build), then exports the environment it wrote
# (WASMEDGE_BIN, WASMEDGE_INCLUDE_DIR, WASMEDGE_LIB_DIR, SKYLARK_PLUGIN_DIR,
# SKYLARK_WASM_DIR).
build_all() {
  bash "$root/scripts/build.sh"
  # shellcheck disable=SC1091
  source "$root/target/build-env.sh"
}
