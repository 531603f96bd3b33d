#!/usr/bin/env bash
# One 5 MB hand-off on the emulated constellation, slot 0 pinned (BENCHMARKS.md section 4,
# "The consumer pulled what was on its way"): preprocess on pi5u3 puts for pi5u4; detect
# on pi5u4 starts the moment preprocess prints, as the experiment invokes it. Prints
# when the copy was on pi5u4, detect's get time, the tier that answered, and how many
# bundle reads (HGETALL, also inside scripts) pi5u3's store served meanwhile: its own
# job's snapshot is one, a consumer's pull another. DETECT=0 leaves detect out (the copy alone). First, two raw
# 5 MB SETs over the same emulated path, without the plugin.
#   bash results/pull-2026-12-07/handoff.sh [runs]      (after scripts/build.sh)
#   SKYLARK_PLUGIN_DIR=<dir> ...                         another plugin build
set -euo pipefail
cd "$(dirname "$0")/../.."
source target/build-env.sh
runs=${1:-3}
work=$(mktemp -d)
target/release/constellation-hold --slot 0 > "$work/hold" 2>&1 &
hold=$!
trap 'kill $hold 2>/dev/null; wait $hold 2>/dev/null; rm -rf "$work"' EXIT
until grep -q '^ready' "$work/hold"; do sleep 0.1; done
env_of() { grep "^env $1 " "$work/hold" | cut -d' ' -f3-; }
port_of() { grep "^node $1 " "$work/hold" | sed 's/.*://'; }
reads() {
  local n
  n=$(redis-cli -p "$(port_of pi5u3)" info commandstats | sed -n 's/^cmdstat_hgetall:calls=\([0-9]*\),.*/\1/p')
  echo "${n:-0}"
}
export WASMEDGE_PLUGIN_PATH=$SKYLARK_PLUGIN_DIR
# The link itself: 5 MB through pi5u3's path to pi5u4's store, without the plugin.
proxy=$(env_of pi5u3 | tr ' ' '\n' | sed -n 's/^SKYLARK_NODE_ADDRS=//p' | tr ',' '\n' \
  | sed -n 's#^pi5u4=redis://127.0.0.1:##p')
head -c 5000000 /dev/zero > "$work/value"
for i in 1 2; do
  t0=$(date +%s%N)
  redis-cli -p "$proxy" -x SET "handoff-raw-$$" < "$work/value" > /dev/null
  echo "raw 5 MB SET from pi5u3 to pi5u4's store: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
done
for i in $(seq "$runs"); do
  chain=handoff-$$-$i
  before=$(reads)
  env $(env_of pi5u3) "$WASMEDGE_BIN" target/bench/preprocess-aot.wasm "$chain" --policy skylark \
    --state bundled --max-latency-ms 5000 --dest pi5u4 --size 5000000 --seed 11 > "$work/pre" 2>/dev/null &
  pre=$!
  until [ -s "$work/pre" ]; do sleep 0.001; done
  printed=$(date +%s%N)
  arrived=-; get=-; tier=-
  if [ "${DETECT:-1}" = 1 ]; then
    # Nothing else runs meanwhile: a poller here takes CPU the reader needs and changes
    # who wins the race measured.
    env $(env_of pi5u4) "$WASMEDGE_BIN" target/bench/detect-aot.wasm "$chain" --policy skylark \
      --state bundled --max-latency-ms 5000 --dest pi4u5 --task detect > "$work/det" 2>/dev/null
    get=$(grep -o '"get_ms":[0-9.]*' "$work/det" | cut -d: -f2)
    tier=$(grep -o '"tier":"[a-z]*"' "$work/det" | head -1 | cut -d'"' -f4)
  else
    # Polled every 20 ms.
    until [ "$(redis-cli -p "$(port_of pi5u4)" HEXISTS "skylark:bundle:$chain" preprocess)" = 1 ]; do
      sleep 0.02
    done
    arrived=$(( ($(date +%s%N) - printed) / 1000000 ))
  fi
  wait $pre
  echo "run $i: copy on pi5u4 $arrived ms after preprocess printed (DETECT=0 only); detect" \
    "get_ms $get, answered by $tier; bundle reads on pi5u3 $(( $(reads) - before ))"
done
