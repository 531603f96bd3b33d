#!/usr/bin/env bash
# Tests install.sh (the node installer for containerd-shim-skylark-v1) against node roots
# in a temporary directory, with --no-restart. Run by .ci/run; takes a few seconds.
#
# Configurations edited:
#   - containerd 1.7's own `containerd config default`, from the private-prefix containerd
#     of ../cri/install-containerd.sh (skipped, with a line saying so, when that cannot
#     install here); the edited file must still load: `containerd --config FILE config dump`
#     shows the handler;
#   - containerd 2.x's documented default (testdata/containerd-2.x-default.toml; no 2.x
#     binary here);
#   - a file that already has a different `skylark` section (updated, not duplicated);
#   - no file at all (created as version 2).
# For each: the handler section has the runtime type and path; every other key of the file
# is unchanged (the parsed documents are compared) and comments are kept; a second run
# changes no byte and reports "unchanged". The installed files equal their sources and the
# plugin directory holds only the plugin. And build-image.sh refuses (before any download)
# a shim that would not start on a trixie node: this machine's own cargo build of it when
# that is linked to the private WasmEdge prefix, and a file that is no program.
#
# `test.sh --image` also builds the installer image for linux/amd64 and linux/arm64
# (the node shims: scripts/build-node-shim.sh and scripts/build-arm64.sh --shim, then
# build-image.sh: trixie packages of both architectures; the first run builds both shims
# from scratch, many minutes, so not in .ci/run), checks its index (check_image.py: both
# platforms, every native file of its platform's ELF machine, the shims' loaders), that the arm64 root's
# python3 imports tomlkit (under qemu-user), and runs the amd64 root's install.sh with its
# own busybox and python3 (chroot, as root) against a containerd 1.7 default config, twice.
set -euo pipefail
with_image=0
[ "${1:-}" != --image ] || with_image=1
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# Debian's python3 with python3-tomlkit (scripts/setup-deps.sh installs it).
PYTHON="${PYTHON:-/usr/bin/python3}"
export PYTHON
"$PYTHON" -c 'import tomlkit' 2>/dev/null || { echo "FAIL: $PYTHON has no tomlkit (apt-get install python3-tomlkit)"; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
pass=0

# The installer's source directory: the real plugin and libwasmedge when built, the real
# shim when built, else a stand-in file (copying is what is tested here; the CRI test runs
# the shim).
src="$work/source"
mkdir -p "$src/lib"
if [ -f "$repo/target/plugin/libwasmedgePluginSkylark.so" ]; then
  cp "$repo/target/plugin/libwasmedgePluginSkylark.so" "$src/"
else
  echo "stand-in plugin" >"$src/libwasmedgePluginSkylark.so"
fi
libdir="$(dirname "$(find -L "$repo/.wasmedge" -name 'libwasmedge.so.0' 2>/dev/null | head -n1)")"
if [ -f "$libdir/libwasmedge.so.0" ]; then
  cp -L "$libdir/libwasmedge.so.0" "$src/lib/"
else
  echo "stand-in libwasmedge" >"$src/lib/libwasmedge.so.0"
fi
shim_bin=""
for f in "$repo"/target/release/containerd-shim-skylark-v1 "$repo"/target/debug/containerd-shim-skylark-v1; do
  if [ -f "$f" ]; then shim_bin=$f; break; fi
done
if [ -n "$shim_bin" ]; then cp "$shim_bin" "$src/containerd-shim-skylark-v1"; else
  printf '#!/bin/sh\necho stand-in shim\n' >"$src/containerd-shim-skylark-v1"
fi

# check_case NAME VERSION [CONFIG-FILE|-]: install into a fresh root and check everything.
check_case() {
  local name=$1 version=$2 input=$3 node="$work/$1"
  local cfg="$node/etc/containerd/config.toml"
  mkdir -p "$node/etc/containerd" "$node/opt/skylark/plugin"
  echo stray >"$node/opt/skylark/plugin/stray.so"
  if [ "$input" != - ]; then
    cp "$input" "$cfg"
    printf '\n# a comment the installer must keep\n' >>"$cfg"
    cp "$cfg" "$work/$name.orig"
  fi
  local out
  out="$("$here/install.sh" --root "$node" --source "$src" --no-restart)" \
    || fail "$name: install.sh failed: $out"
  [ "$(tail -n1 <<<"$out")" != unchanged ] || fail "$name: the first run changed nothing"
  grep -q '/etc/containerd/config.toml' <<<"$out" || fail "$name: config not reported changed: $out"
  cp "$cfg" "$work/$name.once"
  out="$("$here/install.sh" --root "$node" --source "$src" --no-restart)" || fail "$name: second run failed"
  [ "$(tail -n1 <<<"$out")" = unchanged ] || fail "$name: second run changed something: $out"
  cmp -s "$cfg" "$work/$name.once" || fail "$name: second run changed the config"
  [ "$(grep -c 'runtimes.skylark\]' "$cfg")" = 1 ] || fail "$name: not exactly one skylark section"
  if [ "$input" != - ]; then
    grep -q '^# a comment the installer must keep$' "$cfg" || fail "$name: comment lost"
  fi
  "$PYTHON" - "$cfg" "$version" "$work/$name.orig" <<'PY' || fail "$name: config check failed"
import sys, os, tomllib
path, version, orig = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, "rb") as f:
    doc = tomllib.load(f)
plugin = {2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}[version]
assert doc["version"] == version, doc.get("version")
runtimes = doc["plugins"][plugin]["containerd"]["runtimes"]
sec = runtimes.pop("skylark")
assert sec["runtime_type"] == "io.containerd.skylark.v1", sec
assert sec["runtime_path"] == "/opt/skylark/bin/containerd-shim-skylark-v1", sec
if os.path.exists(orig):
    with open(orig, "rb") as f:
        before = tomllib.load(f)
    old = before["plugins"][plugin]["containerd"]["runtimes"].pop("skylark", None)
    if old is not None:  # keys other than ours stay
        for key, value in old.items():
            if key not in ("runtime_type", "runtime_path"):
                assert sec[key] == value, (key, sec.get(key), value)
    if not runtimes:
        del doc["plugins"][plugin]["containerd"]["runtimes"]
    if not before["plugins"][plugin]["containerd"]["runtimes"]:
        del before["plugins"][plugin]["containerd"]["runtimes"]
    assert doc == before, "keys other than the handler's changed"
PY
  # Files: copies equal their sources; the plugin directory holds only the plugin.
  cmp -s "$src/containerd-shim-skylark-v1" "$node/opt/skylark/bin/containerd-shim-skylark-v1.bin" || fail "$name: shim"
  cmp -s "$src/lib/libwasmedge.so.0" "$node/opt/skylark/lib/libwasmedge.so.0" || fail "$name: libwasmedge"
  [ "$(ls -A "$node/opt/skylark/plugin")" = libwasmedgePluginSkylark.so ] || fail "$name: plugin directory: $(ls -A "$node/opt/skylark/plugin")"
  cmp -s "$src/libwasmedgePluginSkylark.so" "$node/opt/skylark/plugin/libwasmedgePluginSkylark.so" || fail "$name: plugin"
  [ -x "$node/opt/skylark/bin/containerd-shim-skylark-v1" ] || fail "$name: wrapper not executable"
  pass=$((pass + 1))
}

# containerd 1.7: the real default configuration, and the real containerd reads the result.
containerd=""
if env_file="$(bash "$repo/runtimeclass/cri/install-containerd.sh" 2>/dev/null | tail -n1)" && [ -f "$env_file" ]; then
  # shellcheck disable=SC1090
  source "$env_file"
  containerd="$SKYLARK_CRI_BIN/containerd"
fi
if [ -n "$containerd" ]; then
  "$containerd" config default >"$work/containerd-1.7-default.toml"
  check_case c17 2 "$work/containerd-1.7-default.toml"
  dump="$("$containerd" --config "$work/c17/etc/containerd/config.toml" config dump)" \
    || fail "containerd $SKYLARK_CRI_VERSION cannot load the edited configuration"
  grep -A20 -F '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.skylark]' <<<"$dump" \
    | grep -q 'runtime_type = "io.containerd.skylark.v1"' \
    || fail "containerd's config dump has no skylark handler"
  echo "containerd $SKYLARK_CRI_VERSION loads the edited configuration with the handler"
else
  echo "SKIP: no containerd 1.7 here (runtimeclass/cri/install-containerd.sh); its default config is not tested"
fi

check_case c2x 3 "$here/testdata/containerd-2.x-default.toml"

cat >"$work/existing.toml" <<'TOML'
version = 2
# the operator's own comment
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.skylark]
  runtime_type = "io.containerd.runc.v2"   # to be replaced
  pod_annotations = ["example/*"]
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
TOML
check_case existing 2 "$work/existing.toml"
grep -q '^# the operator.s own comment$' "$work/existing/etc/containerd/config.toml" || fail "existing: comment lost"

check_case missing 2 -

# A version 1 file (containerd 1.x without `version`) is refused and left alone.
mkdir -p "$work/v1/etc/containerd"
printf '[plugins.cri]\n  sandbox_image = "x"\n' >"$work/v1/etc/containerd/config.toml"
cp "$work/v1/etc/containerd/config.toml" "$work/v1.orig"
if "$here/install.sh" --root "$work/v1" --source "$src" --no-restart >/dev/null 2>&1; then
  fail "a version 1 configuration was accepted"
fi
cmp -s "$work/v1/etc/containerd/config.toml" "$work/v1.orig" || fail "the version 1 file was changed"
pass=$((pass + 1))

# build-image.sh refuses, before downloading anything, a shim that would not start on a
# node: one linked to another loader than a trixie node's (the shim cargo builds on a
# machine with the private WasmEdge prefix), or of another architecture.
refused_shim="$work/refused-shim"
printf '\177ELF' >"$refused_shim"  # not even a loadable program
for shim_case in "$shim_bin" "$refused_shim"; do
  [ -n "$shim_case" ] || continue
  if readelf -l "$shim_case" 2>/dev/null | grep -q 'interpreter: /lib64/ld-linux-x86-64.so.2'; then
    continue # a node shim (built on a trixie machine): nothing to refuse
  fi
  if err="$(bash "$here/build-image.sh" --arch amd64 --shim "$shim_case" \
    --plugin "$src/libwasmedgePluginSkylark.so" --libwasmedge "$src/lib/libwasmedge.so.0" \
    --out "$work/refused" 2>&1)"; then
    fail "build-image.sh packed a shim that cannot start on a node ($shim_case)"
  fi
  grep -q 'not a shim for a trixie node' <<<"$err" || fail "build-image.sh refused $shim_case, but said: $err"
  [ ! -e "$work/refused" ] || fail "build-image.sh wrote an image for a refused shim"
done
pass=$((pass + 1))

if [ "$with_image" = 1 ]; then
  [ -n "$containerd" ] || fail "--image needs containerd 1.7 (runtimeclass/cri/install-containerd.sh)"
  [ "$(dpkg --print-architecture)" = amd64 ] || fail "--image builds the amd64 and arm64 image on an amd64 machine"
  img="$work/image"
  # The shims for trixie nodes (standard loader): amd64 and the arm64 cross-build.
  amd64_shim="$(bash "$repo/scripts/build-node-shim.sh" | tail -n1)" || fail "scripts/build-node-shim.sh failed"
  arm64_env="$(bash "$repo/scripts/build-arm64.sh" --shim | tail -n1)" || fail "scripts/build-arm64.sh --shim failed: $arm64_env"
  # shellcheck disable=SC1090
  source "$arm64_env"
  bash "$here/build-image.sh" \
    --arch amd64 --shim "$amd64_shim" --plugin "$src/libwasmedgePluginSkylark.so" \
    --libwasmedge "$src/lib/libwasmedge.so.0" \
    --arch arm64 --shim "$SKYLARK_ARM64_SHIM" \
    --plugin "$SKYLARK_ARM64_PLUGIN_DIR/libwasmedgePluginSkylark.so" \
    --libwasmedge "$SKYLARK_ARM64_ROOT/usr/lib/aarch64-linux-gnu/libwasmedge.so.0" \
    --out "$img/layout" --rootfs "$img/root" >"$img.json" || fail "build-image.sh failed"
  grep -q '"index":"sha256:' "$img.json" || fail "no image index digest: $(cat "$img.json")"
  # The index: both platforms, each layer's native code of its machine.
  "$PYTHON" "$here/check_image.py" "$img/layout" amd64 arm64 || fail "the image's index or layers are wrong"
  # The arm64 root's python3 and tomlkit run (under qemu-user).
  arm_root="$img/root/arm64"
  "$SKYLARK_ARM64_QEMU" -L "$arm_root" "$arm_root/usr/bin/python3" -c 'import tomlkit' \
    || fail "the arm64 image's python3 cannot import tomlkit"
  root_fs="$img/root/amd64"
  mkdir -p "$root_fs/host/etc/containerd"
  "$containerd" config default >"$root_fs/host/etc/containerd/config.toml"
  chroot_bin="$(command -v chroot)" || fail "--image needs chroot (coreutils) and root"
  run_in_image() { env -i PATH=/usr/bin:/bin "$chroot_bin" "$root_fs" /skylark/install.sh --root /host --no-restart; }
  out="$(run_in_image)" || fail "install.sh in the image failed: $out"
  grep -q '/etc/containerd/config.toml' <<<"$out" || fail "image: config not changed: $out"
  out="$(run_in_image)" || fail "install.sh in the image failed (second run): $out"
  [ "$out" = unchanged ] || fail "image: second run changed something: $out"
  "$containerd" --config "$root_fs/host/etc/containerd/config.toml" config dump \
    | grep -qF '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.skylark]' \
    || fail "image: containerd does not see the handler"
  pass=$((pass + 1))
  echo "installer image (linux/amd64, linux/arm64): install.sh ran in the amd64 root, twice; index $(grep -o 'sha256:[0-9a-f]*' "$img.json" | head -n1)"
fi

echo "node installer: $pass cases passed"
