#!/bin/sh
# Skylark's node installer (kwasm-style) for containerd-shim-skylark-v1 (shim/).
#
# Run on a node (by the DaemonSet in ../manifests/25-shim-installer.yaml, or by hand as
# root) it
#   1. copies, from SOURCE (default /skylark, the installer image's directory):
#        containerd-shim-skylark-v1    -> ROOT/opt/skylark/bin/containerd-shim-skylark-v1.bin
#        lib/libwasmedge.so*           -> ROOT/opt/skylark/lib/
#        libwasmedgePluginSkylark.so   -> ROOT/opt/skylark/plugin/ (the only file there:
#                                         WasmEdge loads every .so it finds, recursively)
#      and writes ROOT/opt/skylark/bin/containerd-shim-skylark-v1, a wrapper that runs the
#      shim with /opt/skylark/lib on its library path (nodes without libwasmedge0 work).
#      Every copy is atomic (a temporary file in the same directory, then a rename) and
#      skipped when the installed file is identical;
#   2. adds the runtime handler HANDLER (default `skylark`, runtime_type
#      "io.containerd.skylark.v1", runtime_path the wrapper) to containerd's configuration
#      ROOT/etc/containerd/config.toml through containerd_handler.py (tomlkit), for config
#      version 2 (containerd 1.7) and 3 (containerd 2.x); idempotent;
#   3. restarts containerd when the configuration changed, in the host's namespaces:
#      `nsenter -t 1 -m -u -i -n -p -- systemctl restart containerd` (the pod needs
#      hostPID and privileges for that). --no-restart skips it (tests, or by hand).
#
# usage: install.sh [--root DIR] [--source DIR] [--config FILE] [--handler NAME]
#                   [--no-restart]
#   --root DIR    the node's root file system (default $NODE_ROOT, else /); every path
#                 written is under it, so tests run against a temporary directory
#   --config FILE containerd's config, relative to the root (default /etc/containerd/config.toml)
# exit 0: installed (the last line says what changed); anything else: failed.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=${NODE_ROOT:-/}
source_dir=/skylark
config=/etc/containerd/config.toml
handler=skylark
restart=1
python=${PYTHON:-python3}

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case $1 in
    --root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift 2 ;;
    --source) [ $# -ge 2 ] || die "--source needs a directory"; source_dir=$2; shift 2 ;;
    --config) [ $# -ge 2 ] || die "--config needs a file"; config=$2; shift 2 ;;
    --handler) [ $# -ge 2 ] || die "--handler needs a name"; handler=$2; shift 2 ;;
    --no-restart) restart=0; shift ;;
    *) die "unknown argument: $1" ;;
  esac
done
[ -d "$root" ] || die "node root $root is not a directory"
root=${root%/}
base=$root/opt/skylark
changed=""

# install_file SRC DEST MODE: atomic copy, skipped when DEST already has SRC's content.
install_file() {
  if [ -f "$2" ] && cmp -s "$1" "$2"; then
    return 0
  fi
  mkdir -p "$(dirname "$2")"
  cp "$1" "$2.tmp.$$" || die "cannot copy $1 to $2"
  chmod "$3" "$2.tmp.$$"
  mv -f "$2.tmp.$$" "$2" || die "cannot rename into $2"
  changed="$changed ${2#"$root"}"
}

# 1. the files
shim=$source_dir/containerd-shim-skylark-v1
plugin=$source_dir/libwasmedgePluginSkylark.so
[ -f "$shim" ] || die "missing $shim"
[ -f "$plugin" ] || die "missing $plugin"
install_file "$shim" "$base/bin/containerd-shim-skylark-v1.bin" 0755
for lib in "$source_dir"/lib/libwasmedge.so*; do
  [ -e "$lib" ] || die "missing $source_dir/lib/libwasmedge.so*"
  install_file "$lib" "$base/lib/$(basename "$lib")" 0644
done
install_file "$plugin" "$base/plugin/libwasmedgePluginSkylark.so" 0644
for f in "$base"/plugin/* "$base"/plugin/.[!.]*; do
  [ -e "$f" ] || continue
  [ "$f" = "$base/plugin/libwasmedgePluginSkylark.so" ] && continue
  echo "removing ${f#"$root"}: the plugin directory must hold only the plugin"
  rm -rf "$f"
done
wrapper_tmp=$(mktemp "${TMPDIR:-/tmp}/skylark-shim-wrapper.XXXXXX")
cat >"$wrapper_tmp" <<'WRAPPER'
#!/bin/sh
# Written by Skylark's node installer: containerd-shim-skylark-v1 with the libwasmedge
# that the installer put in /opt/skylark/lib.
LD_LIBRARY_PATH=/opt/skylark/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
exec /opt/skylark/bin/containerd-shim-skylark-v1.bin "$@"
WRAPPER
install_file "$wrapper_tmp" "$base/bin/containerd-shim-skylark-v1" 0755
rm -f "$wrapper_tmp"

# 2. containerd's runtime handler
result=$("$python" "$here/containerd_handler.py" --config "$root$config" --handler "$handler" \
  --runtime-type io.containerd.skylark.v1 \
  --runtime-path /opt/skylark/bin/containerd-shim-skylark-v1) \
  || die "cannot add the handler $handler to $root$config"
[ "$result" = changed ] && changed="$changed $config"

# 3. containerd restart, only when its configuration changed
case " $changed " in
  *" $config "*)
    if [ "$restart" = 1 ]; then
      nsenter -t 1 -m -u -i -n -p -- systemctl restart containerd \
        || die "cannot restart containerd on the host (needs hostPID and privileges)"
      echo "containerd restarted"
    else
      echo "containerd not restarted (--no-restart)"
    fi
    ;;
esac
if [ -n "$changed" ]; then
  echo "installed:$changed"
else
  echo "unchanged"
fi
