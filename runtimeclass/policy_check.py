"""Runs the CEL of a ValidatingAdmissionPolicy (46-admission-policy.yaml) offline, as the
API server would for one pod, with Google's CEL runtime (PyPI `cel-expr-python`, with
its optional-types extension: the `.?field` and `[?key]` syntax of Kubernetes CEL).

validate.py uses it twice: every wasm function pod of the manifests must be admitted,
and `--self-test` checks that the policy refuses the variants in CASES (a writable plugin
mount, another hostPath, a foreign SKYLARK_NAMESPACE, ...) and admits the pods it must
leave alone. Kubernetes evaluates with cel-go and its own libraries; the expressions
here use only the core language, its macros and optional types, which both implement.
"""

import copy

import cel_expr_python.cel as cel
from cel_expr_python.ext.ext_optional import ExtOptional

_ENV = cel.NewEnv(
    variables={"object": cel.Type.DYN, "namespaceObject": cel.Type.DYN, "variables": cel.Type.DYN},
    extensions=[ExtOptional()],
)


class PolicyError(Exception):
    """An expression of the policy does not compile or does not evaluate."""


def _eval(expression, data):
    try:
        return _ENV.compile(expression).eval(data=data).plain_value()
    except Exception as e:  # the binding raises plain RuntimeError/ValueError
        raise PolicyError(f"{expression!r}: {e}") from e


def denials(policy, pod, namespace):
    """The messages of the policy's validations that refuse `pod` in `namespace` (an
    object with metadata.name and labels); [] when it is admitted."""
    spec = policy.get("spec") or {}
    data = {"object": pod, "namespaceObject": namespace, "variables": {}}
    for var in spec.get("variables") or []:
        data["variables"] = dict(data["variables"], **{var["name"]: _eval(var["expression"], data)})
    out = []
    for v in spec.get("validations") or []:
        result = _eval(v["expression"], data)
        if result is not True:
            if "messageExpression" in v:
                out.append(str(_eval(v["messageExpression"], data)))
            else:
                out.append(v.get("message", v["expression"]))
    return out


def namespace_object(name, tenant=False):
    labels = {"kubernetes.io/metadata.name": name}
    if tenant:
        labels["skylark.io/tenant"] = "true"
    return {"metadata": {"name": name, "labels": labels}}


def _plugin_mount(c):
    return next(m for m in c["volumeMounts"] if m["mountPath"] == "/opt/skylark/plugin")


def _set_namespace(c, value):
    for e in c["env"]:
        if e["name"] == "SKYLARK_NAMESPACE":
            e["value"] = value


def _drop_namespace(c):
    c["env"] = [e for e in c["env"] if e["name"] != "SKYLARK_NAMESPACE"]


def _add_host_path(pod, path, read_only=True):
    pod["spec"]["volumes"].append({"name": "extra", "hostPath": {"path": path}})
    pod["spec"]["containers"][0]["volumeMounts"].append(
        {"name": "extra", "mountPath": "/extra", "readOnly": read_only})


def _writable_plugin(pod):
    _plugin_mount(pod["spec"]["containers"][0])["readOnly"] = False


def _writable_socket_dir_init(pod):
    pod["spec"]["initContainers"] = [{"name": "init", "image": "x",
                                     "volumeMounts": [{"name": "redis-socket", "mountPath": "/s"}]}]


def _writable_ephemeral(pod):
    pod["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "x",
                                          "volumeMounts": [{"name": "skylark-plugin", "mountPath": "/p"}]}]


def _no_runtime_class(pod):
    pod["spec"].pop("runtimeClassName", None)


def _shim_runtime_class(pod):
    """The same function through containerd-shim-skylark-v1 (11-runtimeclass-shim.yaml)."""
    pod["spec"]["runtimeClassName"] = "wasmedge-skylark-shim"


# (what, change to the shipped function pod, tenant namespace?, expected message part or
# None for admitted). The pod is in namespace `skylark` unless the case says a tenant's.
CASES = [
    ("the shipped pod", lambda p: None, False, None),
    ("a writable plugin mount", _writable_plugin, False, "read-only"),
    ("a writable socket-dir mount in an init container", _writable_socket_dir_init, False, "read-only"),
    ("a writable plugin mount in an ephemeral container", _writable_ephemeral, False, "ephemeral"),
    ("another hostPath", lambda p: _add_host_path(p, "/etc"), False, "only for /opt/skylark/plugin"),
    ("a hostPath below the plugin dir", lambda p: _add_host_path(p, "/opt/skylark"), False,
     "only for /opt/skylark/plugin"),
    ("another SKYLARK_NAMESPACE", lambda p: _set_namespace(p["spec"]["containers"][0], "other"), False,
     "SKYLARK_NAMESPACE must be the pod's namespace skylark"),
    ("no SKYLARK_NAMESPACE", lambda p: _drop_namespace(p["spec"]["containers"][0]), False,
     "must set SKYLARK_NAMESPACE"),
    ("the shipped pod under the shim's RuntimeClass", _shim_runtime_class, False, None),
    ("the shim's RuntimeClass and another hostPath",
     lambda p: (_shim_runtime_class(p), _add_host_path(p, "/var/lib")), False, "only for /opt/skylark/plugin"),
    ("the shim's RuntimeClass and a writable plugin mount",
     lambda p: (_shim_runtime_class(p), _writable_plugin(p)), False, "read-only"),
    ("a tenant's pod without the RuntimeClass and another hostPath",
     lambda p: (_no_runtime_class(p), _add_host_path(p, "/var/lib")), True, "only for /opt/skylark/plugin"),
    ("a pod outside the RuntimeClass in a namespace that is no tenant's",
     lambda p: (_no_runtime_class(p), _add_host_path(p, "/var/lib", read_only=False)), False, None),
]


def self_test(policy, pod):
    """Runs CASES against `pod` (a shipped function pod in namespace skylark); returns
    the failures as text lines ([] when all pass)."""
    failures = []
    for what, change, tenant, expected in CASES:
        variant = copy.deepcopy(pod)
        change(variant)
        ns = "tenant-a" if tenant else "skylark"
        if tenant:
            for c in variant["spec"]["containers"]:
                _set_namespace(c, ns)
        try:
            got = denials(policy, variant, namespace_object(ns, tenant))
        except PolicyError as e:
            failures.append(f"{what}: {e}")
            continue
        if expected is None and got:
            failures.append(f"{what}: refused ({got}), must be admitted")
        elif expected is not None and not any(expected in m for m in got):
            failures.append(f"{what}: not refused with {expected!r} (got {got})")
    return failures
