#!/usr/bin/env bash
# Runs the optional global store sets (manifests/global-cluster/, manifests/global-sentinel/)
# outside Kubernetes: real redis-server processes (Debian's) on loopback, started with the
# arguments, ACL files and scripts read from the manifests and make-redis-secrets.sh, so
# that neither can drift from what is tested. Run by .ci/run after validate.sh (whose venv
# provides PyYAML); takes about half a minute.
#
# Each pod gets its own loopback address (cluster pod i: 127.0.1.<i+1>, Sentinel data pod
# i: 127.0.2.<i+1>, sentinel i: 127.0.3.<i+1>) standing for $(POD_IP); a stand-in
# `redis-cli` and `getent` map the pods' DNS names to those addresses (there is no cluster
# DNS here). Checked:
# - Cluster: six nodes with the StatefulSet's arguments; the Job's script forms the
#   cluster (3 primaries, 3 replicas) as skylark-admin; run again it changes nothing; with
#   one node reset it refuses the half-formed cluster. A tenant, with its generated
#   password, reads the slot map (CLUSTER SLOTS and MOVED name the pods' DNS names), writes
#   a bundle by EVAL and gets WAIT 1 confirmed by the slot's replica; the default user is off.
# - Sentinel: the role script makes pod 0 the primary on a first start and the others its
#   replicas (replication authenticated as skylark-replica); three sentinels with the
#   config the init container renders from the ConfigMap and the Secret answer the
#   plugin's query without credentials but refuse SENTINEL FAILOVER/SET; the primary
#   killed, they promote a replica, and the role script of the restarted pod then makes it
#   a replica of the new primary.
# Not covered: the loopback binds (all pods share this machine's 127.0.0.1, so only the
# pod's address is bound), the probes, DNS names in Sentinel (here the sentinels see
# addresses), Kubernetes itself.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="${SKYLARK_K8S_VENV:-$root/.wasmedge/k8s-validate}"
PY="$venv/bin/python"
[ -x "$PY" ] || PY=python3
"$PY" -c 'import yaml' 2>/dev/null || { echo "FAIL: no PyYAML (run runtimeclass/validate.sh first)"; exit 1; }
command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
  { echo "FAIL: needs redis-server and redis-cli (apt-get install redis-server)"; exit 1; }
REAL_CLI="$(command -v redis-cli)"

work="$(mktemp -d)"
pids=()
cleanup() {
  # SIGKILL: on SIGTERM a primary may wait for its replicas before it exits
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
# Polls a condition (a command) until it holds or the deadline passes.
eventually() {
  local what="$1" deadline=$((SECONDS + 30))
  shift
  until "$@"; do
    [ $SECONDS -lt $deadline ] || fail "not within 30 s: $what"
    sleep 0.2
  done
}

bash "$here/make-redis-secrets.sh" --files "$work/creds" skylark
creds="$work/creds/_global"
admin_pw="$(cat "$creds/admin-password")"
tenant_pw="$(cat "$work/creds/skylark/password")"

# Stand-ins for the cluster DNS.
mkdir -p "$work/bin"
cat > "$work/bin/map-host" <<'EOF'
#!/bin/sh
case "$1" in
  skylark-global-cluster-[0-9].skylark-global-cluster.skylark.svc) n=${1#skylark-global-cluster-}; echo "127.0.1.$((${n%%.*} + 1))" ;;
  skylark-global-redis-[0-9].skylark-global-redis.skylark.svc) n=${1#skylark-global-redis-}; echo "127.0.2.$((${n%%.*} + 1))" ;;
  skylark-global-sentinel-[0-9].skylark-global-sentinel.skylark.svc) n=${1#skylark-global-sentinel-}; echo "127.0.3.$((${n%%.*} + 1))" ;;
  *) echo "$1" ;;
esac
EOF
cat > "$work/bin/getent" <<'EOF'
#!/bin/sh
ip="$(map-host "$2")"
[ "$ip" != "$2" ] && echo "$ip   $2"
EOF
cat > "$work/bin/redis-cli" <<EOF
#!/bin/bash
args=()
prev=""
for a in "\$@"; do
  [ "\$prev" = -h ] && a="\$(map-host "\$a")"
  args+=("\$a")
  prev="\$a"
done
exec "$REAL_CLI" "\${args[@]}"
EOF
chmod +x "$work/bin/"*
export PATH="$work/bin:$PATH"

# extract FILE KIND NAME WHAT [CONTAINER]: prints, one per line, the container's args
# (WHAT=args) or its sh -c script (WHAT=script), or a ConfigMap's key (WHAT=data:KEY).
extract() {
  "$PY" - "$@" <<'EOF'
import sys, yaml
path, kind, name, what = sys.argv[1:5]
container = sys.argv[5] if len(sys.argv) > 5 else None
for doc in yaml.safe_load_all(open(path)):
    if not doc or doc["kind"] != kind or doc["metadata"]["name"] != name:
        continue
    if what.startswith("data:"):
        sys.stdout.write(doc["data"][what[5:]])
        sys.exit(0)
    spec = doc["spec"]["template"]["spec"]
    for c in (spec.get("initContainers") or []) + spec["containers"]:
        if container is None or c["name"] == container:
            if what == "script":
                sys.stdout.write(c["args"][0])
            else:
                print("\n".join(c["args"]))
            sys.exit(0)
sys.exit(f"{path}: no {kind}/{name} {container or ''}")
EOF
}

# start_redis NAME POD_NAME POD_IP DIR ARGS_FILE: redis-server with the manifest's
# arguments, Kubernetes' $(VAR)s and the pod's paths replaced.
start_redis() {
  local name="$1" pod="$2" ip="$3" dir="$4" argsfile="$5" a
  local args=()
  mkdir -p "$dir"
  while IFS= read -r a; do
    a="${a//\$(POD_IP)/$ip}"
    a="${a//\$(POD_NAME)/$pod}"
    # the pod's paths (prefixes only: the test's own paths may contain them)
    a="${a/#\/etc\/skylark-global-redis/$creds}"
    a="${a/#\/run\/redis-role/$dir}"
    a="${a/#\/data/$dir}"
    # every pod here shares this machine's loopback: only the pod's own address
    [ "$a" = 127.0.0.1 ] && continue
    args+=("$a")
  done < "$argsfile"
  redis-server "${args[@]}" --logfile "$dir/redis.log" &
  pids+=($!)
  eventually "$name answers" sh -c "REDISCLI_AUTH='$admin_pw' '$REAL_CLI' --user skylark-admin -h $ip -p 6379 ping 2>/dev/null | grep -qx PONG"
}
admin() { REDISCLI_AUTH="$admin_pw" "$REAL_CLI" --user skylark-admin "$@"; }
tenant() { REDISCLI_AUTH="$tenant_pw" "$REAL_CLI" --user tenant-skylark "$@"; }

# ---- Redis Cluster -------------------------------------------------------------------
cluster_yaml="$here/manifests/global-cluster/32-global-cluster.yaml"
extract "$cluster_yaml" StatefulSet skylark-global-cluster args redis > "$work/cluster-args"
extract "$cluster_yaml" Job skylark-global-cluster-create script create |
  sed "s|/etc/skylark-global-redis/|$creds/|g" > "$work/create.sh"
for i in 0 1 2 3 4 5; do
  start_redis "cluster node $i" "skylark-global-cluster-$i" "127.0.1.$((i + 1))" "$work/cluster-$i" "$work/cluster-args"
done
[ "$("$REAL_CLI" -h 127.0.1.1 ping 2>&1)" != PONG ] || fail "the cluster's default user answers without credentials"

sh "$work/create.sh" > "$work/create-1.log" 2>&1 || { cat "$work/create-1.log"; fail "the Job's script did not form the cluster"; }
grep -q "cluster formed: 6 nodes, 16384 slots" "$work/create-1.log" || fail "no 'cluster formed' line"
state() { admin -h "$1" CLUSTER INFO | tr -d '\r' | grep -qx cluster_state:ok; }
for i in 1 2 3 4 5 6; do eventually "cluster_state:ok on 127.0.1.$i" state "127.0.1.$i"; done
roles() { [ "$(admin -h 127.0.1.1 CLUSTER NODES | awk '$3 ~ /master/ { m++ } $3 ~ /slave/ { s++ } END { print m + 0, s + 0 }')" = "3 3" ]; }
eventually "3 primaries and 3 replicas in CLUSTER NODES" roles
sh "$work/create.sh" > "$work/create-2.log" 2>&1 || { cat "$work/create-2.log"; fail "a second run on the formed cluster failed"; }
! grep -q "Performing hash slots allocation" "$work/create-2.log" || fail "the second run created the cluster again"
echo "ok: the Job's script formed the cluster (3 primaries, 3 replicas) and left it alone on a second run"

tenant -h 127.0.1.1 CLUSTER SLOTS | grep -qx "skylark-global-cluster-[0-5].skylark-global-cluster.skylark.svc" ||
  fail "CLUSTER SLOTS (as the tenant) does not name the pods' DNS names"
key="skylark:bundle:k8s-test"
# The primary holding the key's slot, from CLUSTER KEYSLOT and CLUSTER NODES.
slot="$(admin -h 127.0.1.1 CLUSTER KEYSLOT "$key")"
owner="$(admin -h 127.0.1.1 CLUSTER NODES | "$PY" -c '
import sys
slot = int(sys.argv[1])
for line in sys.stdin:
    f = line.split()
    if "master" not in f[2]:
        continue
    for r in f[8:]:
        lo, _, hi = r.partition("-")
        if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
            print(f[1].split(":")[0])
' "$slot")"
[ -n "$owner" ] || fail "no primary holds slot $slot"
other=127.0.1.1
[ "$owner" != 127.0.1.1 ] || other=127.0.1.2
tenant -h "$other" HGET "$key" f 2>&1 | grep -q "^MOVED $slot skylark-global-cluster-[0-5].skylark-global-cluster.skylark.svc:6379" ||
  fail "another node's MOVED does not name the owner by its DNS name"
[ "$(tenant -h "$owner" EVAL "return redis.call('hset', KEYS[1], 'f', 'v')" 1 "$key")" = 1 ] ||
  fail "the tenant could not write a bundle by EVAL"
acked() { [ "$(tenant -h "$owner" EVAL "redis.call('hset', KEYS[1], 'g', 'w') return 1" 1 "$key" >/dev/null; tenant -h "$owner" WAIT 1 1000)" = 1 ]; }
eventually "WAIT 1 confirmed by the slot's replica" acked
echo "ok: a tenant reads the slot map and redirects (DNS names), writes a bundle by EVAL, and WAIT 1 is confirmed by the replica"

# One node loses its state (a new volume): the Job must refuse the half-formed cluster.
kill -KILL "${pids[5]}"
wait "${pids[5]}" 2>/dev/null || true
rm -rf "$work/cluster-5"
start_redis "cluster node 5 (reset)" skylark-global-cluster-5 127.0.1.6 "$work/cluster-5" "$work/cluster-args"
if sh "$work/create.sh" > "$work/create-3.log" 2>&1; then fail "the Job's script accepted a half-formed cluster"; fi
grep -q "half-formed" "$work/create-3.log" || { cat "$work/create-3.log"; fail "no half-formed message"; }
echo "ok: the Job's script refuses a half-formed cluster"
for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()

# ---- Sentinel ------------------------------------------------------------------------
sentinel_yaml="$here/manifests/global-sentinel/33-global-sentinel.yaml"
extract "$sentinel_yaml" StatefulSet skylark-global-redis args redis |
  sed 's|^$(POD_NAME).skylark-global-redis.skylark.svc$|$(POD_IP)|' > "$work/data-args"
extract "$sentinel_yaml" StatefulSet skylark-global-redis script role > "$work/role.sh"
extract "$sentinel_yaml" StatefulSet skylark-global-sentinel script config > "$work/config.sh"
extract "$sentinel_yaml" ConfigMap skylark-global-sentinel data:sentinel.conf > "$work/sentinel.conf.tpl"
# start_data I: the role script, then redis-server, as the pod's init container and container
start_data() {
  local i="$1" dir="$work/data-$1"
  mkdir -p "$dir"
  sed "s|/run/redis-role/|$dir/|g" "$work/role.sh" > "$dir/role.sh"
  POD_NAME="skylark-global-redis-$i" sh "$dir/role.sh" > "$dir/role.log"
  # The sentinels here know addresses, not DNS names: a named primary becomes its address.
  local target
  target="$(sed -n 's/^replicaof \([^ ]*\) .*/\1/p' "$dir/role.conf")"
  [ -z "$target" ] || echo "replicaof $(map-host "$target") 6379" > "$dir/role.conf"
  start_redis "data pod $i" "skylark-global-redis-$i" "127.0.2.$((i + 1))" "$dir" "$work/data-args"
}
for i in 0 1 2; do start_data "$i"; done
grep -q ": primary" "$work/data-0/role.log" || fail "pod 0 did not become the primary on a first start"
linked() { admin -h "127.0.2.$1" INFO replication | tr -d '\r' | grep -qx master_link_status:up; }
eventually "pod 1 replicates pod 0" linked 2
eventually "pod 2 replicates pod 0" linked 3
echo "ok: first start: pod 0 primary, pods 1 and 2 its replicas (replication as skylark-replica)"

for i in 0 1 2; do
  dir="$work/sentinel-$i"
  mkdir -p "$dir"
  # The init container's script, with the pod's paths; addresses for the DNS names.
  sed -e "s|/run/sentinel/|$dir/|g" -e "s|/etc/skylark-sentinel-template/|$work/|g" \
      -e "s|/etc/skylark-global-redis/|$creds/|g" "$work/config.sh" > "$dir/config.sh"
  cp "$work/sentinel.conf.tpl" "$work/sentinel.conf"
  POD_NAME="skylark-global-sentinel-$i" POD_IP="127.0.3.$((i + 1))" sh "$dir/config.sh" > "$dir/config.log"
  sed -i -e "s|^dir /run/sentinel|dir $dir|" \
      -e "s|announce-ip skylark-global-sentinel-$i.skylark-global-sentinel.skylark.svc|announce-ip 127.0.3.$((i + 1))|" \
      -e "s|monitor skylark-global skylark-global-redis-0.skylark-global-redis.skylark.svc|monitor skylark-global 127.0.2.1|" \
      -e "s|^bind \(.*\) 127.0.0.1$|bind \1|" \
      "$dir/sentinel.conf"
  redis-server "$dir/sentinel.conf" --sentinel --logfile "$dir/sentinel.log" &
  pids+=($!)
done
primary() { "$REAL_CLI" -h "$1" -p 26379 SENTINEL get-master-addr-by-name skylark-global 2>/dev/null | head -n 1; }
sees() { [ "$(primary 127.0.3.1)" = 127.0.2.1 ] && "$REAL_CLI" -h 127.0.3.1 -p 26379 SENTINEL MASTER skylark-global | tr -d '\r' | grep -A1 -x num-other-sentinels | tail -1 | grep -qx 2; }
eventually "the sentinels find the primary and each other" sees
refused() { "$REAL_CLI" -h 127.0.3.1 -p 26379 "$@" 2>&1 | grep -q NOPERM; }
refused SENTINEL FAILOVER skylark-global || fail "a client without credentials may SENTINEL FAILOVER"
refused SENTINEL SET skylark-global quorum 1 || fail "a client without credentials may SENTINEL SET"
echo "ok: sentinels answer the primary's address without credentials, refuse FAILOVER and SET"

kill "${pids[0]}"
wait "${pids[0]}" 2>/dev/null || true
promoted() { p="$(primary 127.0.3.2)"; [ -n "$p" ] && [ "$p" != 127.0.2.1 ]; }
eventually "a replica promoted after the primary's loss" promoted
new="$(primary 127.0.3.2)"
[ "$(admin -h "$new" ROLE | head -n 1)" = master ] || fail "$new is not a primary"
# Until every sentinel has heard of the promotion, one may still name the dead primary;
# pod 0's role script asks sentinel 0 first, so a restart that fast would follow it (here:
# itself). A pod's restart takes longer than the sentinels' agreement; wait for it.
agreed() { for s in 127.0.3.1 127.0.3.2 127.0.3.3; do [ "$(primary "$s")" = "$new" ] || return 1; done; }
eventually "every sentinel names $new" agreed
# pod 0 restarts: its role script asks the sentinels and follows the new primary
rm -f "$work/data-0/role.conf"
start_data 0
grep -q "replica of" "$work/data-0/role.log" || { cat "$work/data-0/role.log"; fail "the restarted pod 0 did not become a replica"; }
eventually "the restarted pod 0 replicates $new (role: $(cat "$work/data-0/role.log"))" linked 1
echo "ok: failover to $new; the restarted pod 0 follows it"
echo "global-store-test: all passed"
