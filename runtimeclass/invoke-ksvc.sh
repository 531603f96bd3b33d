#!/usr/bin/env bash
# Sends one EO workflow through the Knative Services of manifests 50-52: a POST to
# skylark-preprocess, then skylark-detect, then skylark-alarm, each with the chain id, each
# answered by the function's JSON line (printed) once its run is over. State moves between
# the steps through Skylark, not through the requests.
#
#   bash runtimeclass/invoke-ksvc.sh [CHAIN_ID]     (default: eo-<unix time>)
#
# Each Service is reached at its status.url. The Services are cluster-local
# (networking.knative.dev/visibility), so that URL (http://skylark-<step>.skylark.svc.cluster.local)
# resolves only inside the cluster: run the script where cluster DNS works, or forward
# the cluster-local gateway and set INGRESS=host:port, e.g. with Kourier
#   kubectl port-forward -n kourier-system svc/kourier-internal 8081:80 &
#   INGRESS=127.0.0.1:8081 bash runtimeclass/invoke-ksvc.sh
# (the request goes to INGRESS with the Service's host name in the Host header). PREPROCESS_QUERY adds query
# parameters to the first step (default size=1048576; any preprocess flag, e.g.
# "size=65536&seed=3"). Needs kubectl and curl; exits non-zero when a step does not answer
# 200 within STEP_TIMEOUT seconds (default 300; the first request may wait for a
# scale-from-zero).
set -euo pipefail

chain="${1:-eo-$(date +%s)}"
timeout="${STEP_TIMEOUT:-300}"
ns=skylark
pre_query="${PREPROCESS_QUERY:-size=1048576}"

if ! [[ "$chain" =~ ^[A-Za-z0-9._-]{1,128}$ ]]; then
  echo "chain id '$chain': use 1-128 of A-Z a-z 0-9 . _ -" >&2
  exit 2
fi

body="$(mktemp)"
trap 'rm -f "$body"' EXIT

for step in preprocess detect alarm; do
  url="$(kubectl get ksvc "skylark-$step" -n "$ns" -o jsonpath='{.status.url}')"
  if [[ -z "$url" ]]; then
    echo "Service skylark-$step has no URL yet: kubectl get ksvc -n $ns" >&2
    exit 1
  fi
  query="chain=$chain"
  [[ "$step" == preprocess && -n "$pre_query" ]] && query="$query&$pre_query"
  if [[ -n "${INGRESS:-}" ]]; then
    host="${url#*://}"
    host="${host%%/*}"
    target=(-H "Host: $host" "http://$INGRESS/?$query")
  else
    target=("$url/?$query")
  fi
  code="$(curl -sS -X POST --max-time "$timeout" -o "$body" -w '%{http_code}' "${target[@]}")" || {
    echo "$step: no answer from $url within ${timeout}s" >&2
    exit 1
  }
  cat "$body"
  if [[ "$code" != 200 ]]; then
    echo "$step: HTTP $code from $url" >&2
    exit 1
  fi
done
