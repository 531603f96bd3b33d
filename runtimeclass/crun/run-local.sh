#!/usr/bin/env bash
# Runs the probe guest as an OCI container through Debian trixie's crun (its built-in
# WasmEdge handler, selected by the annotation module.wasm.image/variant=compat-smart), with
# the Skylark plugin loaded from a directory inside the container's rootfs, and checks that
# the guest's put and get against a redis-server started here succeed. In host-network
# mode it then runs preprocess.wasm in HTTP mode (`--serve`, what the Knative Services run)
# as a container and sends it a request.
#
#   exit 0   the container ran and put/get succeeded (proves crun loaded the plugin)
#   exit 77  this machine cannot run it; one line on stdout says why (for a test to skip)
#   exit 1   crun, the guest or the plugin failed (a real failure; anything the checks above
#            did not classify as a missing machine capability)
#
# crun 1.21 and its libraries come from trixie through a private apt configuration
# (cache: <repo>/.wasmedge/crun, git-ignored; the machine's apt sources are not touched)
# and run through the trixie runtime prefix's dynamic loader, like .wasmedge/bin/wasmedge.
#
# Environment:
#   SKYLARK_CRUN_NET=host|unix  host (default): no network namespace, Redis on 127.0.0.1:<port>;
#                               unix: own network namespace, Redis on a unix socket bind-mounted
#                               into the container at /run/skylark/redis.sock
#   SKYLARK_CRUN_HYBRID_WORKAROUND=1|0
#                               on hosts with hybrid cgroups (v1 controllers + a v2 'unified'
#                               hierarchy that has controllers), crun refuses every container.
#                               1 (default): run crun in a private mount namespace in which
#                               /sys/fs/cgroup/unified is unmounted, so crun sees legacy v1.
#                               Nothing outside that namespace changes. 0: do not; skip.
#   SKYLARK_CRUN_KEEP=1         keep the bundle and logs (path printed on stderr)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
prefix="$root/.wasmedge"
cache="$prefix/crun"
net_mode="${SKYLARK_CRUN_NET:-host}"
hybrid_workaround="${SKYLARK_CRUN_HYBRID_WORKAROUND:-1}"
multiarch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"

log() { printf '[crun-local] %s\n' "$*" >&2; }
skip() { printf 'SKIP: %s\n' "$*"; exit 77; }
fail() { printf 'FAIL: %s\n' "$*"; exit 1; }

case "$net_mode" in host|unix) ;; *) fail "SKYLARK_CRUN_NET must be host or unix, not '$net_mode'" ;; esac

# ---------------------------------------------------------------- prerequisites
[ "$(uname -s)" = Linux ] || skip "crun needs Linux (this is $(uname -s))"
[ "$(id -u)" = 0 ] || skip "needs root (a rootful crun container; rootless is not set up here)"
for tool in apt-get dpkg-deb redis-server redis-cli timeout; do
  command -v "$tool" >/dev/null 2>&1 || skip "missing tool: $tool"
done
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] \
  || skip "missing /usr/share/keyrings/debian-archive-keyring.gpg (debian-archive-keyring)"

# WasmEdge prefix (trixie runtime + libwasmedge.so.0) and the plugin and guest.
if [ ! -f "$prefix/.complete" ]; then
  log "installing WasmEdge into $prefix (scripts/install-wasmedge.sh)"
  bash "$root/scripts/install-wasmedge.sh" >&2 || skip "scripts/install-wasmedge.sh failed"
fi
loader="$prefix/runtime/usr/lib/$multiarch/ld-linux-x86-64.so.2"
[ -e "$loader" ] || loader="$(find "$prefix/runtime" -name 'ld-linux*.so.*' 2>/dev/null | head -n1)"
[ -n "$loader" ] && [ -e "$loader" ] \
  || skip "no trixie runtime prefix in $prefix/runtime (a system wasmedge is in use); this script runs crun through that prefix"
[ -e "$prefix/wasmedge/usr/lib/$multiarch/libwasmedge.so.0" ] \
  || skip "no libwasmedge.so.0 in $prefix/wasmedge/usr/lib/$multiarch"

plugin="$root/target/plugin/libwasmedgePluginSkylark.so"
guest="$root/target/wasm32-wasip1/release/probe.wasm"
server="$root/target/wasm32-wasip1/release/preprocess.wasm"
if [ ! -f "$plugin" ] || [ ! -f "$guest" ] || [ ! -f "$server" ]; then
  log "building the plugin and guests (scripts/build.sh)"
  bash "$root/scripts/build.sh" >&2 || fail "scripts/build.sh failed"
fi
[ -f "$plugin" ] || fail "missing $plugin after the build"
[ -f "$guest" ] || fail "missing $guest after the build"
[ -f "$server" ] || fail "missing $server after the build"

# ---------------------------------------------------------------- crun from trixie
crun_bin="$cache/root/usr/bin/crun"
if [ ! -f "$cache/.complete" ] || [ ! -x "$crun_bin" ]; then
  log "downloading trixie's crun and its libraries into $cache (private apt configuration)"
  apt_dir="$cache/apt"
  rm -rf "$cache"
  mkdir -p "$cache/root"
  # shellcheck source=scripts/lib/private-apt.sh
  source "$root/scripts/lib/private-apt.sh"
  private_apt_setup "$apt_dir" trixie
  apt-get "${PRIVATE_APT_OPTS[@]}" -qq update >&2 || skip "cannot fetch Debian trixie package lists (no network?)"
  apt-get "${PRIVATE_APT_OPTS[@]}" -qq -y --download-only install crun >/dev/null \
    || skip "cannot download trixie's crun package (no network?)"
  for deb in "$apt_dir"/cache/archives/*.deb; do
    case "$(dpkg-deb -f "$deb" Package)" in
      libc6|libgcc-s1|gcc-14-base) ;;   # provided by the WasmEdge runtime prefix
      *) dpkg-deb -x "$deb" "$cache/root" ;;
    esac
  done
  rm -rf "$apt_dir/cache/archives"/*.deb "$apt_dir/lists"
  [ -x "$crun_bin" ] || fail "crun binary missing after unpacking"
  touch "$cache/.complete"
fi

libpath="$cache/root/usr/lib/$multiarch:$prefix/wasmedge/usr/lib/$multiarch:$prefix/runtime/usr/lib/$multiarch"
crun() { "$loader" --library-path "$libpath" "$crun_bin" "$@"; }

features="$(crun --version 2>&1)" || skip "trixie's crun does not start here: $(printf '%s' "$features" | tail -n1)"
case "$features" in
  *+WASM:wasmedge*) ;;
  *) skip "this crun is built without WasmEdge support: $(printf '%s' "$features" | tail -n1)" ;;
esac
log "$(printf '%s' "$features" | head -n1); $(printf '%s' "$features" | tail -n1)"

# ---------------------------------------------------------------- cgroup mode
use_unshare=0
if [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" != cgroup2fs ] \
   && [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ] \
   && controllers="$(tr '\n' ' ' </sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null | sed 's/ *$//')" \
   && [ -n "$controllers" ]; then   # (cgroupfs files report size 0: read, do not test -s)
  reason="hybrid cgroups with controllers on the v2 hierarchy ($controllers in /sys/fs/cgroup/unified/cgroup.controllers): crun 1.21 refuses every container ('cgroups in hybrid mode not supported, drop all controllers from cgroupv2'), with any --cgroup-manager"
  [ "$hybrid_workaround" = 1 ] || skip "$reason"
  command -v unshare >/dev/null 2>&1 || skip "$reason; and no unshare(1) for the private-mount-namespace workaround"
  log "hybrid cgroups ($controllers on v2): running crun in a private mount namespace without /sys/fs/cgroup/unified"
  use_unshare=1
fi

# ---------------------------------------------------------------- scratch, redis, cleanup
work="$(mktemp -d /tmp/skylark-crun.XXXXXX)"
state="$work/state"
mkdir -p "$state"
redis_pid=""
ids=()
cleanup() {
  set +e
  for id in "${ids[@]}"; do crun --root "$state" delete -f "$id" >/dev/null 2>&1; done
  if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; fi
  if [ "${SKYLARK_CRUN_KEEP:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_redis() { # args for redis-server; sets redis_pid; 0 when it answers PING
  redis-server --save '' --appendonly no --logfile "$work/redis.log" "$@" &
  redis_pid=$!
  local _
  for _ in $(seq 1 50); do
    if ! kill -0 "$redis_pid" 2>/dev/null; then wait "$redis_pid" 2>/dev/null || true; redis_pid=""; return 1; fi
    if redis-cli "${cli[@]}" ping 2>/dev/null | grep -q PONG; then return 0; fi
    sleep 0.1
  done
  kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; redis_pid=""
  return 1
}

if [ "$net_mode" = host ]; then
  started=0
  for _ in 1 2 3 4 5 6 7 8; do
    port=$(( 20000 + RANDOM % 20000 ))
    cli=(-h 127.0.0.1 -p "$port")
    if start_redis --bind 127.0.0.1 --port "$port"; then started=1; break; fi
  done
  [ "$started" = 1 ] || skip "could not start redis-server on 127.0.0.1 (see the log: $(tail -n1 "$work/redis.log" 2>/dev/null))"
  redis_url="redis://127.0.0.1:$port"
else
  mkdir -p "$work/sock"
  cli=(-s "$work/sock/redis.sock")
  start_redis --port 0 --unixsocket "$work/sock/redis.sock" --unixsocketperm 777 \
    || skip "could not start redis-server on a unix socket ($(tail -n1 "$work/redis.log" 2>/dev/null))"
  redis_url="unix:///run/skylark/redis.sock"
fi
log "redis-server (pid $redis_pid) at $redis_url"

# ---------------------------------------------------------------- OCI bundle
bundle="$work/bundle"
mkdir -p "$bundle/rootfs/opt/skylark/plugin" "$bundle/rootfs/run/skylark"
cp "$guest" "$bundle/rootfs/probe.wasm"
cp "$server" "$bundle/rootfs/preprocess.wasm"
cp "$plugin" "$bundle/rootfs/opt/skylark/plugin/"

write_config() { # args of the guest (after the module), as JSON strings joined by commas; module (default /probe.wasm)
  local args_json="$1" module="${2:-/probe.wasm}" netns="" extra_mount=""
  if [ "$net_mode" = unix ]; then
    netns='{ "type": "network" },'
    extra_mount=',
    { "destination": "/run/skylark", "type": "bind", "source": "'"$work/sock"'", "options": ["rbind", "rw"] }'
  fi
  cat >"$bundle/config.json" <<JSON
{
  "ociVersion": "1.0.0",
  "annotations": { "module.wasm.image/variant": "compat-smart" },
  "process": {
    "terminal": false,
    "user": { "uid": 0, "gid": 0 },
    "args": [ "$module", $args_json ],
    "env": [
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "WASMEDGE_PLUGIN_PATH=/opt/skylark/plugin",
      "SKYLARK_REDIS_URL=$redis_url",
      "SKYLARK_NODE_NAME=crun-local"
    ],
    "cwd": "/",
    "capabilities": {
      "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "inheritable": [],
      "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    },
    "rlimits": [ { "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 } ],
    "noNewPrivileges": true
  },
  "root": { "path": "rootfs", "readonly": true },
  "hostname": "crun",
  "mounts": [
    { "destination": "/proc", "type": "proc", "source": "proc" },
    { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
    { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
    { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
    { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] },
    { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }$extra_mount
  ],
  "linux": {
    "resources": { "devices": [ { "allow": false, "access": "rwm" } ] },
    "namespaces": [ { "type": "pid" }, $netns { "type": "ipc" }, { "type": "uts" }, { "type": "mount" } ],
    "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
    "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
  }
}
JSON
}

# Runs one container; stdout -> $work/<id>.out, stderr -> $work/<id>.err; returns crun's status.
run_container() { # id
  local id="$1" rc=0
  ids+=("$id")
  local cmd=("$loader" --library-path "$libpath" "$crun_bin" --root "$state" run --bundle "$bundle" "$id")
  if [ "$use_unshare" = 1 ]; then
    timeout 120 unshare --mount --propagation private -- \
      sh -c 'umount /sys/fs/cgroup/unified && exec "$@"' sh "${cmd[@]}" \
      >"$work/$id.out" 2>"$work/$id.err" </dev/null || rc=$?
  else
    timeout 120 "${cmd[@]}" >"$work/$id.out" 2>"$work/$id.err" </dev/null || rc=$?
  fi
  crun --root "$state" delete -f "$id" >/dev/null 2>&1 || true
  return "$rc"
}

# A run without guest output, after every check above found the machine able to run
# containers: a failure (1), with crun's last words. Never a skip: an unknown failure of
# the path under test must not pass as "this machine cannot".
judge_failure() { # id rc
  local id="$1" rc="$2" last
  last="$(grep -v '^[[:space:]]*$' "$work/$id.err" | tail -n1 || true)"
  [ -n "$last" ] || last="(no message)"
  if grep -qE '\[libcrun:wasmedge\]|\[error\]' "$work/$id.err"; then
    sed 's/^/  /' "$work/$id.err" >&2
    fail "crun ran the WasmEdge handler but the guest failed (exit $rc): $last"
  fi
  [ "$rc" = 124 ] && fail "crun run timed out after 120 s"
  sed 's/^/  /' "$work/$id.err" >&2
  fail "crun failed to run the container (exit $rc): $last"
}

chain="crun-$$-$RANDOM"
log "bundle $bundle; container: /probe.wasm put $chain crun 4096 7"
write_config '"put", "'"$chain"'", "crun", "4096", "7"'
rc=0; run_container "skylark-put-$$" || rc=$?
put_out="$(grep '"op":"put"' "$work/skylark-put-$$.out" || true)"
[ -n "$put_out" ] || judge_failure "skylark-put-$$" "$rc"
log "put: $put_out"
printf '%s' "$put_out" | grep -q '"status":0' || fail "guest put failed in the container: $put_out"
[ "$rc" = 0 ] || fail "crun exited $rc after a successful put: $(tail -n1 "$work/skylark-put-$$.err")"
[ "$(redis-cli "${cli[@]}" hexists "skylark:bundle:$chain" crun)" = 1 ] \
  || fail "the put reported success but skylark:bundle:$chain has no field 'crun' in the redis-server"

write_config '"get", "'"$chain"'"'
rc=0; run_container "skylark-get-$$" || rc=$?
get_out="$(grep '"op":"get"' "$work/skylark-get-$$.out" || true)"
[ -n "$get_out" ] || judge_failure "skylark-get-$$" "$rc"
log "get: $get_out"
printf '%s' "$get_out" | grep -q '"status":0' || fail "guest get failed in the container: $get_out"
printf '%s' "$get_out" | grep -q '"crun":{[^}]*"len":4096' || fail "get did not return the field written by the put: $get_out"
[ "$rc" = 0 ] || fail "crun exited $rc after a successful get"

# ---------------------------------------------------------------- HTTP mode (host network only)
served=""
if [ "$net_mode" = host ] && command -v curl >/dev/null 2>&1; then
  http_port=""
  for _ in 1 2 3 4 5 6 7 8; do
    p=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then http_port=$p; break; fi
  done
  [ -n "$http_port" ] || fail "no free port for the HTTP-mode container"
  id="skylark-serve-$$"
  ids+=("$id")
  write_config '"--serve", "'"$http_port"'"' /preprocess.wasm
  log "container: /preprocess.wasm --serve $http_port"
  cmd=("$loader" --library-path "$libpath" "$crun_bin" --root "$state" run --bundle "$bundle" "$id")
  if [ "$use_unshare" = 1 ]; then
    timeout 120 unshare --mount --propagation private -- \
      sh -c 'umount /sys/fs/cgroup/unified && exec "$@"' sh "${cmd[@]}" \
      >"$work/$id.out" 2>"$work/$id.err" </dev/null &
  else
    timeout 120 "${cmd[@]}" >"$work/$id.out" 2>"$work/$id.err" </dev/null &
  fi
  serve_pid=$!
  ready=0
  for _ in $(seq 1 300); do
    if [ "$(curl -s --max-time 2 "http://127.0.0.1:$http_port/healthz" 2>/dev/null)" = ok ]; then ready=1; break; fi
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ "$ready" = 1 ]; then
    http_chain="$chain-http"
    reply="$(curl -s --max-time 60 -X POST "http://127.0.0.1:$http_port/?chain=$http_chain&size=4096" || true)"
  fi
  crun --root "$state" kill "$id" KILL >/dev/null 2>&1 || kill "$serve_pid" 2>/dev/null || true
  wait "$serve_pid" 2>/dev/null || true
  crun --root "$state" delete -f "$id" >/dev/null 2>&1 || true
  [ "$ready" = 1 ] || fail "preprocess --serve never answered /healthz in the container: $(tail -n2 "$work/$id.err" | tr '\n' ' ')"
  log "HTTP: $reply"
  printf '%s' "$reply" | grep -q '"function":"preprocess"' || fail "the HTTP-mode container answered: $reply"
  [ "$(redis-cli "${cli[@]}" hexists "skylark:bundle:$http_chain" preprocess)" = 1 ] \
    || fail "the HTTP request succeeded but skylark:bundle:$http_chain has no field 'preprocess'"
  served="; preprocess.wasm --serve answered an HTTP request and stored its state"
fi

echo "OK: crun $(printf '%s' "$features" | head -n1 | awk '{print $3}') ran probe.wasm with the Skylark plugin (WASMEDGE_PLUGIN_PATH=/opt/skylark/plugin inside the rootfs); put and get via $redis_url succeeded$served$([ "$use_unshare" = 1 ] && echo ' (hybrid-cgroup workaround: private mount namespace without /sys/fs/cgroup/unified)')"
