#!/usr/bin/env bash
# Generates the Redis credentials of a Skylark installation: fresh random passwords, the
# node Redis ACL file (31-redis.yaml loads it with --aclfile) and, for every tenant, its
# own ACL user limited to its namespace's keys and channels. Nothing here is shipped with
# real passwords: run it once per installation and apply its output.
#
#   bash runtimeclass/make-redis-secrets.sh [TENANT_NAMESPACE...] | kubectl apply -f -
#   bash runtimeclass/make-redis-secrets.sh --files DIR [TENANT_NAMESPACE...]
#
# Tenants are Kubernetes namespaces whose functions use Skylark (default: skylark). Each
# tenant's SKYLARK_NAMESPACE is its Kubernetes namespace name (46-admission-policy.yaml
# enforces that), and its ACL user `tenant-<namespace>` may touch only `<namespace>:*`
# keys and the channels `<namespace>/events` and `<namespace>/arrivals:*`, with the
# commands README.md "Minimal ACL" lists. Output (YAML on stdout, or files under DIR with --files):
# - Secret skylark/skylark-redis-acl: `users.acl` (the ACL file: `default` user off,
#   passwords only as SHA-256 hashes) and `loader-password` (the topology loader's, which
#   the Redis pod's probes use too);
# - Secret <tenant>/skylark-redis-credentials per tenant: `username` and `password`,
#   which the function pods read (SKYLARK_REDIS_USERNAME, SKYLARK_REDIS_PASSWORD_FILE).
# - Secret skylark/skylark-global-redis-acl, for the optional global store on Redis
#   Cluster or Sentinel (manifests/global-cluster/, manifests/global-sentinel/; unused
#   otherwise): `users.acl` with the same tenant users and passwords (so functions reach the
#   global store with their own credentials) plus what a distributed store needs
#   (`+wait +cluster|slots +role`), `skylark-admin` (probes and forming the cluster: PING,
#   INFO, ROLE, CLUSTER, CONFIG GET), `skylark-replica` (replication: PSYNC, REPLCONF,
#   PING) and `skylark-sentinel` (the sentinels' commands on the data nodes);
#   `replication.conf` (masteruser/masterauth, loaded as a config file, so the password is
#   never on a command line), `admin-password`, and `sentinel-auth.conf` (the sentinels'
#   auth-user/auth-pass for the data nodes and the user they use between themselves);
#   with --files, under DIR/_global/.
# The loader user `skylark-loader` may only PING, and EXISTS/SET the tenants' `<ns>:topology`
# keys. Re-running makes new passwords: apply all Secrets, then restart the Redis
# DaemonSet (it reads the ACL file at start), the global store's pods and the functions.
# Needs bash, coreutils (od, sha256sum) and /dev/urandom.
set -euo pipefail

SYSTEM_NS=skylark
ACL_SECRET=skylark-redis-acl
GLOBAL_SECRET=skylark-global-redis-acl
SENTINEL_MASTER=skylark-global
TENANT_SECRET=skylark-redis-credentials
LOADER_USER=skylark-loader
# README.md "Minimal ACL": what the plugin does on a node-local store (and, as the same
# user, on other nodes' stores and the global store).
TENANT_COMMANDS="-@all +ping +get +del +expire +pttl +hset +hget +hexists +hdel +hgetall +hkeys +hstrlen +memory|usage +hincrby +zadd +zrem +zcard +zrangebyscore +eval +evalsha +multi +exec +watch +unwatch +publish +subscribe +unsubscribe"
# README.md "The global store on Redis Cluster or Sentinel": WAIT (SKYLARK_GLOBAL_MIN_REPLICAS),
# the cluster client's slot map, the Sentinel client's check that it reached the primary.
GLOBAL_EXTRA_COMMANDS="+wait +cluster|slots +role"

usage() {
  echo "usage: make-redis-secrets.sh [--files DIR] [TENANT_NAMESPACE...]" >&2
  exit 2
}

out_dir=""
tenants=()
while [ $# -gt 0 ]; do
  case "$1" in
    --files) [ $# -ge 2 ] || usage; out_dir="$2"; shift 2 ;;
    -h|--help) usage ;;
    -*) usage ;;
    *) tenants+=("$1"); shift ;;
  esac
done
[ ${#tenants[@]} -gt 0 ] || tenants=("$SYSTEM_NS")
for ns in "${tenants[@]}"; do
  # A DNS-1123 label: a Kubernetes namespace name, and safe in ACL patterns (no glob
  # characters, no ':' or '/').
  if ! [[ "$ns" =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]]; then
    echo "make-redis-secrets.sh: $ns is not a Kubernetes namespace name" >&2
    exit 2
  fi
done

password() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }
sha256() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
indent() { sed 's/^/    /'; }

loader_pw="$(password)"
topology_keys=""
for ns in "${tenants[@]}"; do topology_keys+=" ~$ns:topology"; done
acl="user default off resetkeys resetchannels -@all
user $LOADER_USER on #$(sha256 "$loader_pw") resetkeys$topology_keys resetchannels -@all +ping +exists +set"
admin_pw="$(password)"
replica_pw="$(password)"
sentinel_pw="$(password)"
peer_pw="$(password)"
global_acl="user default off resetkeys resetchannels -@all
user skylark-admin on #$(sha256 "$admin_pw") resetkeys resetchannels -@all +ping +info +role +cluster +config|get
user skylark-replica on #$(sha256 "$replica_pw") resetkeys resetchannels -@all +psync +replconf +ping
user skylark-sentinel on #$(sha256 "$sentinel_pw") resetkeys resetchannels &__sentinel__:hello -@all +ping +info +role +multi +exec +slaveof +replicaof +subscribe +publish +config|rewrite +client|setname +client|kill +script|kill"
declare -A tenant_pw
for ns in "${tenants[@]}"; do
  tenant_pw[$ns]="$(password)"
  acl+="
user tenant-$ns on #$(sha256 "${tenant_pw[$ns]}") resetkeys ~$ns:* resetchannels &$ns/events &$ns/arrivals:* $TENANT_COMMANDS"
  global_acl+="
user tenant-$ns on #$(sha256 "${tenant_pw[$ns]}") resetkeys ~$ns:* resetchannels &$ns/events &$ns/arrivals:* $TENANT_COMMANDS $GLOBAL_EXTRA_COMMANDS"
done
replication_conf="masteruser skylark-replica
masterauth $replica_pw"
# Appended by the sentinels' init container after their `sentinel monitor` line.
sentinel_auth="sentinel auth-user $SENTINEL_MASTER skylark-sentinel
sentinel auth-pass $SENTINEL_MASTER $sentinel_pw
sentinel sentinel-user skylark-sentinel-peer
sentinel sentinel-pass $peer_pw
user skylark-sentinel-peer on #$(sha256 "$peer_pw") resetchannels allchannels +@all"

if [ -n "$out_dir" ]; then
  umask 077
  mkdir -p "$out_dir"
  printf '%s\n' "$acl" > "$out_dir/users.acl"
  printf '%s' "$loader_pw" > "$out_dir/loader-password"
  # not a namespace name (no "_" in those), so no tenant directory can collide with it
  mkdir -p "$out_dir/_global"
  printf '%s\n' "$global_acl" > "$out_dir/_global/users.acl"
  printf '%s\n' "$replication_conf" > "$out_dir/_global/replication.conf"
  printf '%s' "$admin_pw" > "$out_dir/_global/admin-password"
  printf '%s\n' "$sentinel_auth" > "$out_dir/_global/sentinel-auth.conf"
  for ns in "${tenants[@]}"; do
    mkdir -p "$out_dir/$ns"
    printf '%s' "tenant-$ns" > "$out_dir/$ns/username"
    printf '%s' "${tenant_pw[$ns]}" > "$out_dir/$ns/password"
  done
  exit 0
fi

cat <<YAML
# Generated by runtimeclass/make-redis-secrets.sh: keep it secret, do not commit it.
apiVersion: v1
kind: Secret
metadata:
  name: $ACL_SECRET
  namespace: $SYSTEM_NS
  labels:
    app.kubernetes.io/part-of: skylark
type: Opaque
stringData:
  users.acl: |
$(printf '%s\n' "$acl" | indent)
  loader-password: "$loader_pw"
---
apiVersion: v1
kind: Secret
metadata:
  name: $GLOBAL_SECRET
  namespace: $SYSTEM_NS
  labels:
    app.kubernetes.io/part-of: skylark
type: Opaque
stringData:
  users.acl: |
$(printf '%s\n' "$global_acl" | indent)
  replication.conf: |
$(printf '%s\n' "$replication_conf" | indent)
  admin-password: "$admin_pw"
  sentinel-auth.conf: |
$(printf '%s\n' "$sentinel_auth" | indent)
YAML
for ns in "${tenants[@]}"; do
  cat <<YAML
---
apiVersion: v1
kind: Secret
metadata:
  name: $TENANT_SECRET
  namespace: $ns
  labels:
    app.kubernetes.io/part-of: skylark
type: Opaque
stringData:
  username: "tenant-$ns"
  password: "${tenant_pw[$ns]}"
YAML
done
