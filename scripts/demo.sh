#!/usr/bin/env bash
# README command 1: builds everything, starts three throw-away redis-servers standing for
# three nodes (satellites sat-a and sat-b, and the cloud node holding the global store)
# and runs the Earth-observation workflow preprocess -> detect -> alarm as three wasmedge
# processes with the Skylark plugin, each step on the node its predecessor named as the
# next one: every step finds the state it needs in its own node-local store, because the
# plugin propagated it there in the background. Then the bundled-state example. Prints
# each step's result and timing, where the bundle ended up, the placement and propagation
# events and the nodes' counters. Guests run AOT-compiled (`wasmedge compile`, cached in
# target/aot/); set SKYLARK_DEMO_MODE=interp to run them in the interpreter,
# SKYLARK_DEMO_SIZE for the image size in bytes (default 1048576).
#
# `bash scripts/demo.sh --dag` runs the workflow as a fan-out / fan-in DAG on four nodes
# instead: preprocess on sat-a puts once for two successors (put option `destinations`),
# the detectors detect-a on sat-b and detect-b on sat-c run at the same time, each on the
# state propagated to its node, and alarm on cloud joins both detections.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
mode="${SKYLARK_DEMO_MODE:-aot}"
size="${SKYLARK_DEMO_SIZE:-1048576}"
case "$mode" in aot|interp) ;; *) echo "SKYLARK_DEMO_MODE must be aot or interp" >&2; exit 2 ;; esac
dag=0
case "${1:-}" in
  "") ;;
  --dag) dag=1 ;;
  *) echo "usage: $0 [--dag]" >&2; exit 2 ;;
esac

build_all

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
pids=()
cleanup() { # keeps the script's own exit status; a failing kill or wait must not replace it
  local rc=$?
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
nodes=(sat-a sat-b cloud)
if [ "$dag" = 1 ]; then nodes=(sat-a sat-b sat-c cloud); fi
for n in "${nodes[@]}"; do
  redis-server --port 0 --unixsocket "$work/$n.sock" --unixsocketperm 700 --save "" \
    --appendonly no --dir "$work" >"$work/$n.log" 2>&1 &
  pids+=($!)
done
for n in "${nodes[@]}"; do
  for _ in $(seq 1 200); do
    redis-cli -s "$work/$n.sock" ping >/dev/null 2>&1 && break
    sleep 0.05
  done
  redis-cli -s "$work/$n.sock" ping >/dev/null || { cat "$work/$n.log" >&2; exit 1; }
done

# The topology: two satellites 10 ms apart, the cloud node 40 ms from sat-a (with --dag a
# third satellite, sat-c, 10 ms from sat-a on the other side).
sat_c_node="" sat_c_link=""
if [ "$dag" = 1 ]; then
  sat_c_node=", {\"name\": \"sat-c\", \"type\": \"Sat\", \"redis\": \"unix://$work/sat-c.sock\"}"
  sat_c_link=", {\"source\": \"sat-a\", \"target\": \"sat-c\", \"latency_ms\": 10, \"jitter_ms\": 9, \"bandwidth_mbps\": 40}"
fi
cat >"$work/topology.json" <<JSON
{ "slot_ms": 60000, "global": "cloud",
  "nodes": [ {"name": "sat-a", "type": "Sat", "redis": "unix://$work/sat-a.sock"},
             {"name": "sat-b", "type": "Sat", "redis": "unix://$work/sat-b.sock"},
             {"name": "cloud", "type": "Cloud", "redis": "unix://$work/cloud.sock"}$sat_c_node ],
  "links": [ {"source": "sat-a", "target": "sat-b", "latency_ms": 10, "jitter_ms": 9, "bandwidth_mbps": 40},
             {"source": "sat-a", "target": "cloud", "latency_ms": 40, "jitter_ms": 30, "bandwidth_mbps": 90}$sat_c_link ] }
JSON

# Every node's placement and propagation events, as they happen.
for n in "${nodes[@]}"; do
  redis-cli -s "$work/$n.sock" subscribe skylark/events >"$work/$n.events" 2>&1 &
  pids+=($!)
done

export WASMEDGE_PLUGIN_PATH="$SKYLARK_PLUGIN_DIR"
export SKYLARK_TOPOLOGY_FILE="$work/topology.json"
chain="$(cat /proc/sys/kernel/random/uuid)"

echo "Skylark demo: wasmedge $("$WASMEDGE_BIN" --version | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1)," \
     "$mode guests, nodes ${nodes[*]} (one redis-server each; cloud holds the global store)"
echo "chain $chain"
run() { # label node module args...
  local label="$1" node="$2" m="$3"; shift 3
  local t0 t1 out
  t0=$(date +%s%N)
  out="$(SKYLARK_NODE_NAME="$node" SKYLARK_REDIS_URL="unix://$work/$node.sock" \
    "$WASMEDGE_BIN" "${mods[$m]}" "$@")"
  t1=$(date +%s%N)
  printf '\n== %s  [node %s, wasmedge process: %d ms]\n%s\n' "$label" "$node" \
    $(( (t1 - t0) / 1000000 )) "$out"
}
if [ "$dag" = 1 ]; then
  run "1/3 preprocess: synthesise and clean a ${size}-byte image, skylark_put (next steps on sat-b and sat-c)" \
    sat-a preprocess "$chain" --size "$size" --dests sat-b,sat-c
  # The two detectors run at the same time; their outputs are printed in order.
  run "2/3 detect-a: skylark_get_bundle, find bright regions, skylark_put (next step on cloud)" \
    sat-b detect "$chain" --task detect-a --dest cloud >"$work/detect-a.out" &
  det_a=$!
  run "2/3 detect-b: the same with threshold 200, at the same time (next step on cloud)" \
    sat-c detect "$chain" --task detect-b --threshold 200 --dest cloud >"$work/detect-b.out" &
  det_b=$!
  wait "$det_a" || { cat "$work/detect-a.out"; exit 1; }
  wait "$det_b" || { cat "$work/detect-b.out"; exit 1; }
  cat "$work/detect-a.out" "$work/detect-b.out"
  run "3/3 alarm: skylark_get_bundle (both detections), decide" \
    cloud alarm "$chain" --inputs detect-a,detect-b
else
  run "1/3 preprocess: synthesise and clean a ${size}-byte image, skylark_put (next step on sat-b)" \
    sat-a preprocess "$chain" --size "$size" --dest sat-b
  run "2/3 detect: skylark_get_bundle, find bright regions, skylark_put (next step on cloud)" \
    sat-b detect "$chain" --dest cloud
  run "3/3 alarm: skylark_get_bundle, decide" cloud alarm "$chain"
fi

echo
echo "== where the chain's bundle is (one Redis hash per node; @at: fields are the placement record)"
key="skylark:bundle:$chain"
for n in "${nodes[@]}"; do
  fields="$(redis-cli -s "$work/$n.sock" hkeys "$key" | tr '\n' ' ')"
  printf '  %-6s %s\n' "$n" "${fields:-(none)}"
done

echo
echo "== events (channel skylark/events of each node)"
for n in "${nodes[@]}"; do
  grep -E '^[0-9]+\.[0-9]{3} ' "$work/$n.events" | sed "s/^/  $n: /" || true
done

echo
echo "== counters (hash skylark:stats:<node>)"
for n in "${nodes[@]}"; do
  printf '  %-6s %s\n' "$n" \
    "$(redis-cli -s "$work/$n.sock" hgetall "skylark:stats:$n" | paste -sd' ' - | sed -E 's/([a-z_0-9]+) ([0-9]+)/\1=\2/g')"
done

if [ "$dag" = 0 ]; then
  run "bundled state: 5 fused functions, one bundle vs one key per function" \
    sat-a bundled "$chain-fused" --functions 5 --size 4096
fi
