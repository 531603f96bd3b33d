#!/usr/bin/env bash
# Builds the probe guest as it was at ABI version 1 into tests/data/v1/probe.wasm: the
# unchanged version-1 guest that tests/tests/versions.rs runs against the current host
# (issue 17, point 5). The source is `git archive` of V1_COMMIT (the last commit before
# ABI version 2), built alone in a temporary directory with the lock file of that commit,
# the `release-wasm` profile (stripped) and source paths remapped, so that the module
# holds no path of the machine that built it. Writes tests/data/v1/SOURCE (commit,
# toolchain, SHA-256). Run from anywhere inside the repository; needs its git history.
#
#   bash scripts/build-v1-probe.sh           # rebuild and replace the committed module
#   bash scripts/build-v1-probe.sh --check   # rebuild and compare with the committed one
set -euo pipefail
V1_COMMIT=7ecb89ad54ef571986379720300d10952c2bc424
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/tests/data/v1"
check=0
[[ "${1:-}" == "--check" ]] && check=1

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git -C "$root" archive "$V1_COMMIT" | tar -x -C "$work"
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 ||
  rustup target add wasm32-wasip1 >&2

cargo_home="${CARGO_HOME:-$HOME/.cargo}"
rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
export RUSTFLAGS="--remap-path-prefix=$work=/skylark-v1 --remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$rustup_home=/rustup"
echo "[v1-probe] building probe at $V1_COMMIT" >&2
(cd "$work" && cargo build --locked --profile release-wasm --target wasm32-wasip1 \
  --target-dir "$work/target" -p probe >&2)
built="$work/target/wasm32-wasip1/release-wasm/probe.wasm"
if grep -aq -e "$work" -e "$cargo_home" -e "$HOME" "$built"; then
  echo "[v1-probe] the module still holds a path of this machine" >&2
  exit 1
fi
sum="$(sha256sum "$built" | cut -d' ' -f1)"
if ((check)); then
  want="$(sha256sum "$out/probe.wasm" | cut -d' ' -f1)"
  if [[ "$sum" != "$want" ]]; then
    echo "[v1-probe] built $sum, committed $want (another toolchain? see $out/SOURCE)" >&2
    exit 1
  fi
  echo "[v1-probe] the committed module is reproduced ($sum)" >&2
  exit 0
fi
mkdir -p "$out"
cp "$built" "$out/probe.wasm"
cat >"$out/SOURCE" <<INFO
tests/guests/probe at commit $V1_COMMIT (ABI version 1), built by scripts/build-v1-probe.sh
toolchain: $(rustc --version)
sha256: $sum
INFO
echo "[v1-probe] wrote $out/probe.wasm ($(wc -c <"$out/probe.wasm") bytes, $sum)" >&2
