#!/usr/bin/env bash
# Runs the EO workflow preprocess -> detect -> alarm on the cluster as three Jobs
# (manifests/60-job-workflow-example.yaml), one after the other: each step is applied,
# awaited and its JSON line printed before the next starts.
#
#   bash runtimeclass/run-workflow.sh [CHAIN_ID]     (default: eo-<unix time>)
#
# CHAIN_ID becomes part of the Job names: lowercase letters, digits and '-', at most 40.
# Needs kubectl with access to the cluster; exits non-zero when a step fails or times out
# (STEP_TIMEOUT seconds per step, default 300).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
manifest="$here/manifests/60-job-workflow-example.yaml"
chain="${1:-eo-$(date +%s)}"
timeout="${STEP_TIMEOUT:-300}"
ns=skylark

if ! [[ "$chain" =~ ^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$ ]]; then
  echo "chain id '$chain': use 1-40 of a-z 0-9 '-', starting and ending alphanumeric" >&2
  exit 2
fi

# Waits until job $1 has succeeded (0) or failed (1), at most $timeout seconds (1).
wait_job() {
  local job="$1" deadline=$((SECONDS + timeout)) status
  while ((SECONDS < deadline)); do
    status="$(kubectl get job "$job" -n "$ns" -o jsonpath='{.status.succeeded}/{.status.failed}')"
    case "$status" in
      1/*) return 0 ;;
      */1) echo "job $job failed" >&2; return 1 ;;
    esac
    sleep 2
  done
  echo "job $job did not finish within ${timeout}s" >&2
  return 1
}

for step in preprocess detect alarm; do
  job="$chain-$step"
  echo "== $step (job $job)" >&2
  sed "s/eo-demo-1/$chain/g" "$manifest" | kubectl apply -n "$ns" -l "skylark-step=$step" -f - >&2
  ok=0
  wait_job "$job" || ok=1
  kubectl get pods -n "$ns" -l "job-name=$job" -o wide >&2 || true
  kubectl logs -n "$ns" "job/$job" --all-containers || true
  if ((ok != 0)); then
    kubectl describe job "$job" -n "$ns" >&2 || true
    exit 1
  fi
done
echo "workflow $chain done; bundle: redis-cli -s /run/skylark/redis.sock HGETALL skylark:bundle:$chain (on a node)" >&2
