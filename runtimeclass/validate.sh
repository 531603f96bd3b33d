#!/usr/bin/env bash
# Validates runtimeclass/manifests/*.yaml offline, and each alternative set in a
# subdirectory (global-cluster/, global-sentinel/) laid over them: YAML, Kubernetes schemas
# (strict) of the built-in kinds, Knative Services structurally (their template as a Pod),
# references between the manifests and Skylark's rules for wasm pods and Redis
# (validate.py says what exactly).
#
#   bash runtimeclass/validate.sh [--kubernetes-version 1.31.0 ...] [--require-digests]
#   bash runtimeclass/validate.sh --self-test   # the security rules refuse testdata/'s bad manifests
#
# Exits non-zero on any problem. The first run creates a Python venv in the git-ignored
# .wasmedge/k8s-validate (or $SKYLARK_K8S_VENV) with kubernetes-validate (it ships the Kubernetes JSON schemas, so
# validating fetches nothing) and cel-expr-python (Google's CEL runtime: runs the admission
# policy's expressions, policy_check.py) from PyPI; later runs reuse it. Needs python3 with venv
# (Debian: apt-get install python3-venv, done here when run as root).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="${SKYLARK_K8S_VENV:-$root/.wasmedge/k8s-validate}"
requirement="kubernetes-validate==1.37.0 cel-expr-python==0.1.3"

if [ ! -f "$venv/.complete" ] || [ "$(cat "$venv/.complete")" != "$requirement" ]; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "validate.sh: installing python3-venv" >&2
      apt-get install -y -qq python3-venv >&2 || { apt-get update -qq >&2 && apt-get install -y -qq python3-venv >&2; }
    else
      echo "validate.sh: needs python3 with the venv module (apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
  echo "validate.sh: creating $venv with $requirement" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086 # one word per package
  "$venv/bin/pip" install --quiet $requirement >&2
  echo "$requirement" > "$venv/.complete"
fi

bash -n "$here/run-workflow.sh"
bash -n "$here/make-redis-secrets.sh"
exec "$venv/bin/python" "$here/validate.py" "$here/manifests" "$@"
