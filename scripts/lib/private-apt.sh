# shellcheck shell=bash
# Sourced by scripts/install-wasmedge.sh, scripts/install-wasi-clang.sh, scripts/install-arm64-root.sh,
# runtimeclass/crun/run-local.sh, runtimeclass/cri/install-containerd.sh and
# runtimeclass/node-installer/build-image.sh: an apt configuration of their own for
# downloading Debian packages (WasmEdge, crun, containerd and their libraries, of this
# machine's architecture or another) without touching the machine's apt sources, lists,
# status or lock.

# private_apt_check NAME: fails (returns 1, with a message prefixed by NAME on stderr)
# unless this machine has what private_apt_setup needs: apt-get, dpkg-deb and Debian's
# archive keyring.
private_apt_check() {
  local name="$1" tool keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  for tool in apt-get dpkg-deb; do
    command -v "$tool" >/dev/null || {
      echo "[$name] missing $tool: this script needs a Debian-based machine" >&2
      return 1
    }
  done
  [ -f "$keyring" ] || {
    echo "[$name] missing $keyring (install debian-archive-keyring)" >&2
    return 1
  }
}

# private_apt_setup DIR SUITE [ARCH]: empties DIR and writes there a configuration whose
# only source is Debian SUITE (main, signed by debian-archive-keyring) and an empty package
# state, for Debian architecture ARCH (default this machine's; another one, e.g. arm64,
# downloads that architecture's packages as if it were native: nothing is installed); sets the array PRIVATE_APT_OPTS, the apt-get options that use it. Packages
# downloaded with `apt-get "${PRIVATE_APT_OPTS[@]}" --download-only install ...` land in
# DIR/cache/archives.
private_apt_setup() {
  local dir="$1" suite="$2" arch="${3:-}"
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -n "$arch" ] || arch="$(dpkg --print-architecture)"
  rm -rf "$dir"
  mkdir -p "$dir"/{etc/preferences.d,etc/apt.conf.d,lists/partial,cache/archives/partial,state}
  : >"$dir/state/status"
  echo "deb [signed-by=$keyring] http://deb.debian.org/debian $suite main" >"$dir/etc/sources.list"
  # shellcheck disable=SC2034  # read by the sourcing script
  PRIVATE_APT_OPTS=(
    -o "Dir::Etc::SourceList=$dir/etc/sources.list"
    -o "Dir::Etc::SourceParts=/nonexistent"
    -o "Dir::Etc::Preferences=$dir/etc/preferences"
    -o "Dir::Etc::PreferencesParts=$dir/etc/preferences.d"
    -o "Dir::Etc::Parts=$dir/etc/apt.conf.d"
    -o "Dir::State=$dir/state"
    -o "Dir::State::Lists=$dir/lists"
    -o "Dir::State::status=$dir/state/status"
    -o "Dir::Cache=$dir/cache"
    -o "Dir::Cache::archives=$dir/cache/archives"
    -o "APT::Architecture=$arch"
    -o "APT::Architectures::=$arch"
    -o "APT::Install-Recommends=false"
    -o "APT::Install-Suggests=false"
    -o "Debug::NoLocking=true"
  )
}
