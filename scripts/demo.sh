#!/usr/bin/env bash
# README command 1: builds everything, starts a throw-away redis-server, and runs the
# Earth-observation workflow preprocess -> detect -> alarm as three wasmedge processes
# with the Skylark plugin, then the bundled-state example. Prints each step's result and
# timing. Guests run AOT-compiled (`wasmedge compile`, cached in target/aot/); set
# SKYLARK_DEMO_MODE=interp to run them in the interpreter, SKYLARK_DEMO_SIZE for the
# image size in bytes (default 1048576).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mode="${SKYLARK_DEMO_MODE:-aot}"
size="${SKYLARK_DEMO_SIZE:-1048576}"
case "$mode" in aot|interp) ;; *) echo "SKYLARK_DEMO_MODE must be aot or interp" >&2; exit 2 ;; esac

eval "$(bash scripts/build.sh --print-env)"

module() { # name -> path of the module to run
  local src="$SKYLARK_WASM_DIR/$1.wasm"
  if [ "$mode" = interp ]; then echo "$src"; return; fi
  local out="$root/target/aot/$1.wasm"
  mkdir -p "$root/target/aot"
  if [ ! -f "$out" ] || [ "$src" -nt "$out" ]; then
    echo "[demo] AOT-compiling $1.wasm (once)" >&2
    "$WASMEDGE_BIN" compile "$src" "$out" >/dev/null 2>&1 || { echo "wasmedge compile $1 failed" >&2; exit 1; }
  fi
  echo "$out"
}
declare -A mods
for m in preprocess detect alarm bundled; do mods[$m]="$(module "$m")"; done

work="$(mktemp -d)"
redis_pid=""
cleanup() {
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
sock="$work/redis.sock"
redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 --save "" --appendonly no \
  --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 1 200); do
  redis-cli -s "$sock" ping >/dev/null 2>&1 && break
  kill -0 "$redis_pid" 2>/dev/null || { cat "$work/redis.log" >&2; exit 1; }
  sleep 0.05
done
redis-cli -s "$sock" ping >/dev/null || { echo "redis-server did not come up" >&2; exit 1; }

export WASMEDGE_PLUGIN_PATH="$SKYLARK_PLUGIN_DIR"
export SKYLARK_REDIS_URL="unix://$sock"
export SKYLARK_NODE_NAME="demo-node"
chain="$(cat /proc/sys/kernel/random/uuid)"

echo "Skylark demo: wasmedge $("$WASMEDGE_BIN" --version | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1)," \
     "$mode guests, node-local redis-server at $SKYLARK_REDIS_URL"
echo "chain $chain"
run() { # label module args...
  local label="$1" m="$2"; shift 2
  local t0 t1 out
  t0=$(date +%s%N)
  out="$("$WASMEDGE_BIN" "${mods[$m]}" "$@")"
  t1=$(date +%s%N)
  printf '\n== %s  (wasmedge process: %d ms)\n%s\n' "$label" $(( (t1 - t0) / 1000000 )) "$out"
}
run "1/3 preprocess: synthesise and clean a ${size}-byte image, skylark_put" preprocess "$chain" --size "$size"
run "2/3 detect: skylark_get_bundle, find bright regions, skylark_put" detect "$chain"
run "3/3 alarm: skylark_get_bundle, decide" alarm "$chain"

echo
echo "== the chain's bundle in the node-local store (one Redis hash)"
key="skylark:bundle:$chain"
for f in $(redis-cli -s "$sock" hkeys "$key"); do
  printf '  %-10s %8d bytes\n' "$f" "$(redis-cli -s "$sock" hstrlen "$key" "$f")"
done
printf '  TTL %s s\n' "$(redis-cli -s "$sock" ttl "$key")"

run "bundled state: 5 fused functions, one bundle vs one key per function" bundled "$chain-fused" --functions 5 --size 4096
