#!/usr/bin/env python3
"""Offline validation of the Skylark Kubernetes manifests (runtimeclass/manifests/*.yaml,
and each alternative set in a subdirectory, e.g. manifests/global-cluster/, laid over them).

Run through validate.sh, which provides the `kubernetes-validate` package (it ships the
Kubernetes OpenAPI/JSON schemas, so nothing is fetched at validation time).

Checks, each failure printed as `FILE: kind/name: problem`:
1. every file parses as YAML; every document has apiVersion, kind, metadata.name, and its
   names are valid DNS-1123 names;
2. built-in kinds (Namespace, RuntimeClass, DaemonSet, StatefulSet, Service,
   PodDisruptionBudget, ConfigMap, Secret, Job, ValidatingAdmissionPolicy and its binding) against the Kubernetes schemas of each
   requested version, strictly (unknown fields are errors); the Secrets that
   make-redis-secrets.sh generates (for namespace skylark) are validated and count as
   defined before every manifest;
3. Knative Services (no schema shipped): apiVersion serving.knative.dev/v1, one container,
   at most one port (a readiness probe on it), RevisionSpec's own fields
   (containerConcurrency, timeouts) checked and removed, and the rest of
   `spec.template` validated as a Pod against the same schemas;
   every PodSpec feature Knative gates (runtimeClassName, hostPath, fieldRef,
   nodeSelector, pod securityContext) must be enabled in the config-features manifest;
4. references: volume mounts name volumes; ConfigMaps (volumes, envFrom, configMapKeyRef),
   Secrets (volumes, secretKeyRef), the RuntimeClass and the namespace exist in an earlier
   or the same file (apply order); images carry an explicit tag, and third-party images
   (every image with --require-digests) a digest;
5. Skylark rules for wasm pods (runtimeClassName of the Skylark RuntimeClass): the
   annotation module.wasm.image/variant=compat-smart, WASMEDGE_PLUGIN_PATH one path
   without ':' that is a read-only hostPath mount of the plugin directory, the Redis
   socket directory mounted when SKYLARK_REDIS_URL is a unix socket, SKYLARK_NODE_NAME
   from spec.nodeName, and security_rules.function_rules (password from a Secret file,
   SKYLARK_NAMESPACE = the pod's namespace, Knative Services cluster-local);
   security_rules.redis_rules for every container running redis-server
   (security_rules.sentinel_rules for one running as a sentinel), and
   security_rules.admission_rules (the admission policy present when Knative's hostPath
   flag is on), and the policy's CEL, run offline by policy_check, admits every wasm
   function pod of the manifests;
6. the topology ConfigMap's topology.json: JSON in Skylark's format, links between known
   nodes, non-negative numbers;
7. embedded `sh -c` scripts pass `sh -n`.
8. each alternative set (a subdirectory with *.yaml files; applied after the default set,
   a file of the same name replacing the default's): all of the above on the combined set,
   plus: a ConfigMap it redefines differs from the default only in SKYLARK_GLOBAL_* keys,
   and each host of a cluster or Sentinel SKYLARK_GLOBAL_URL is
   <pod>.<service>.<namespace>.svc:<port> of a StatefulSet of the set, behind its headless
   Service with that port (for Sentinel, the primary's name is one a sentinel monitors).
Exit status 0 when all pass, 1 otherwise, 2 on usage errors.

`--self-test` instead checks that the rules refuse what they must: it validates copies of
the manifests with known-bad files from testdata/ swapped in (the open node Redis of
before issue 16, a function pod without its Secret, the admission policy removed, an open
Sentinel set, a drifted cluster configuration) and
fails unless every expected FAIL line appears; and it runs the admission policy's CEL on
variants of the shipped function pod (policy_check.CASES): each bad one must be refused
with its message, the others admitted.
"""

import argparse
import copy
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import yaml

import policy_check
import security_rules

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
BUILTIN = {
    ("v1", "Namespace"),
    ("v1", "ConfigMap"),
    ("node.k8s.io/v1", "RuntimeClass"),
    ("apps/v1", "DaemonSet"),
    ("apps/v1", "StatefulSet"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
    ("batch/v1", "Job"),
    ("v1", "Secret"),
    security_rules.VAP,
    security_rules.VAP_BINDING,
}
HERE = Path(__file__).resolve().parent
SECRETS_SCRIPT = HERE / "make-redis-secrets.sh"
DEFAULT_VERSIONS = ["1.30.0", "1.33.0"]
KNATIVE = ("serving.knative.dev/v1", "Service")
# RevisionSpec = PodSpec plus these.
KNATIVE_REVISION_FIELDS = ("containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds", "idleTimeoutSeconds")
# Namespaces that exist without these manifests.
EXTERNAL_NAMESPACES = {"knative-serving", "kube-system", "default"}
VARIANT = "module.wasm.image/variant"
# The RuntimeClass of containerd-shim-skylark-v1 (11-runtimeclass-shim.yaml): its function
# pods follow the same rules as crun's, except that they need no annotation.
SHIM_RUNTIME_CLASS = "wasmedge-skylark-shim"
PLUGIN_DIR = "/opt/skylark/plugin"
KNATIVE_FLAGS = {
    "runtimeClassName": "kubernetes.podspec-runtimeclassname",
    "hostPath": "kubernetes.podspec-volumes-hostpath",
    "fieldRef": "kubernetes.podspec-fieldref",
    "nodeSelector": "kubernetes.podspec-nodeselector",
    "securityContext": "kubernetes.podspec-securitycontext",
}


class Problems:
    """Collects problems; `where` prefixes each with file and object."""

    def __init__(self):
        self.items = []

    def add(self, where, message):
        self.items.append(f"{where}: {message}")


def load(manifest_dir, problems):
    """Returns [(order, file, doc)] of every document, files in apply (name) order."""
    files = sorted(manifest_dir.glob("*.yaml"))
    if not files:
        problems.add(str(manifest_dir), "no *.yaml files")
    docs = []
    for order, path in enumerate(files):
        if not re.match(r"^\d\d-[a-z0-9-]+\.yaml$", path.name):
            problems.add(path.name, "file name must be NN-name.yaml (apply order)")
        try:
            loaded = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            problems.add(path.name, f"YAML: {e}")
            continue
        if not loaded:
            problems.add(path.name, "no YAML documents")
        for doc in loaded:
            docs.append((order, path.name, doc))
    return docs


def ident(doc):
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind', '?')}/{meta.get('name', '?')}"


def check_basics(fname, doc, problems):
    """apiVersion, kind, metadata.name and DNS-1123 names. Returns False if unusable."""
    where = f"{fname}: {ident(doc)}"
    if not isinstance(doc, dict):
        problems.add(fname, "a document is not a mapping")
        return False
    ok = True
    for key in ("apiVersion", "kind", "metadata"):
        if key not in doc:
            problems.add(where, f"missing {key}")
            ok = False
    if not ok:
        return False
    api = (doc["apiVersion"], doc["kind"])
    if api not in BUILTIN and api != KNATIVE:
        problems.add(where, f"unknown apiVersion/kind {api[0]} {api[1]}")
        return False
    name = doc["metadata"].get("name", "")
    label_only = doc["kind"] in ("Namespace", "Service", "DaemonSet", "StatefulSet", "Job")
    pattern = DNS1123_LABEL if label_only else DNS1123_SUBDOMAIN
    if not pattern.match(name) or len(name) > (63 if label_only else 253):
        problems.add(where, f"name {name!r} is not a valid DNS-1123 name")
    ns = doc["metadata"].get("namespace")
    if ns is not None and not DNS1123_LABEL.match(ns):
        problems.add(where, f"namespace {ns!r} is not a valid DNS-1123 label")
    return True


def schema_validate(where, doc, versions, problems):
    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            problems.add(where, f"schema {version}: {path}: {e.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
            problems.add(where, f"schema {version}: {e}")


def pod_template(doc):
    """The pod template (metadata, spec) of a workload, or None."""
    kind = doc["kind"]
    if kind in ("DaemonSet", "StatefulSet", "Job") or doc["apiVersion"] == KNATIVE[0]:
        tpl = (doc.get("spec") or {}).get("template") or {}
        return tpl.get("metadata") or {}, tpl.get("spec") or {}
    return None


def knative_checks(where, doc, versions, features, problems):
    spec = (doc.get("spec") or {}).get("template", {}).get("spec")
    if not isinstance(spec, dict):
        problems.add(where, "missing spec.template.spec")
        return
    containers = spec.get("containers") or []
    if len(containers) != 1:
        problems.add(where, f"Knative needs exactly one container here, found {len(containers)}")
    for c in containers:
        ports = c.get("ports") or []
        if len(ports) > 1:
            problems.add(where, f"container {c.get('name')}: Knative allows at most one port")
        probe_port = ((c.get("readinessProbe") or {}).get("httpGet") or {}).get("port")
        if probe_port is not None and [p.get("containerPort") for p in ports] != [probe_port]:
            problems.add(where, f"container {c.get('name')}: readiness probe port {probe_port} is not the container port")
    # Fields of Knative's RevisionSpec that a PodSpec does not have.
    revision_only = {}
    for key in KNATIVE_REVISION_FIELDS:
        if key in spec:
            revision_only[key] = spec[key]
    for key, value in revision_only.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.add(where, f"{key} must be a non-negative integer, found {value!r}")
    cc = revision_only.get("containerConcurrency")
    if isinstance(cc, int) and cc > 1000:
        problems.add(where, f"containerConcurrency {cc} is over Knative's maximum 1000")
    meta = dict(doc["spec"]["template"].get("metadata") or {})
    meta["name"] = doc["metadata"]["name"]
    meta["namespace"] = doc["metadata"].get("namespace", "default")
    pod_spec = {k: v for k, v in spec.items() if k not in KNATIVE_REVISION_FIELDS}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}
    schema_validate(f"{where} (template as Pod)", pod, versions, problems)
    used = set()
    if spec.get("runtimeClassName"):
        used.add("runtimeClassName")
    if spec.get("nodeSelector"):
        used.add("nodeSelector")
    if any("hostPath" in v for v in spec.get("volumes") or []):
        used.add("hostPath")
    if "fieldRef" in json.dumps(containers):
        used.add("fieldRef")
    if spec.get("securityContext"):
        used.add("securityContext")
    for feature in sorted(used):
        flag = KNATIVE_FLAGS[feature]
        if features.get(flag) not in ("enabled", "allowed"):
            problems.add(where, f"uses {feature}: needs {flag}: enabled in knative-serving/config-features")


def env_value(container, name):
    for e in container.get("env") or []:
        if e.get("name") == name:
            return e
    return None


def reference_checks(where, order, doc, defined, configmaps_data, runtime_class, problems,
                     require_digests=False):
    """Volumes, ConfigMaps, RuntimeClass and namespace references; Skylark wasm rules."""
    ns = doc["metadata"].get("namespace", "default")
    if ns not in EXTERNAL_NAMESPACES and ("Namespace", "", ns) not in defined_before(defined, order):
        problems.add(where, f"namespace {ns} is not created by this or an earlier file")
    tpl = pod_template(doc)
    if tpl is None:
        return
    meta, spec = tpl
    before = defined_before(defined, order)
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    # a StatefulSet's per-pod volumes
    for claim in (doc.get("spec") or {}).get("volumeClaimTemplates") or []:
        name = (claim.get("metadata") or {}).get("name")
        volumes.setdefault(name, {"name": name, "persistentVolumeClaim": {"claimName": name}})
    for v in volumes.values():
        cm = (v.get("configMap") or {}).get("name")
        if cm and ("ConfigMap", ns, cm) not in before:
            problems.add(where, f"volume {v.get('name')}: ConfigMap {ns}/{cm} not defined earlier")
        secret = (v.get("secret") or {}).get("secretName")
        if secret and ("Secret", ns, secret) not in before:
            problems.add(where, f"volume {v.get('name')}: Secret {ns}/{secret} not defined earlier "
                                "(nor made by make-redis-secrets.sh)")
    rc = spec.get("runtimeClassName")
    if rc and ("RuntimeClass", "", rc) not in before:
        problems.add(where, f"runtimeClassName {rc} not defined earlier")
    containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
    for c in containers:
        cw = f"{where}: container {c.get('name')}"
        image = c.get("image", "")
        last = image.rsplit("/", 1)[-1]
        if not image or ("@" not in image and ":" not in last):
            problems.add(cw, f"image {image!r} needs an explicit tag")
        security_rules.image_rules(cw, c, require_digests, problems, bool(spec.get("hostPID")))
        mounts = {m.get("mountPath"): m for m in c.get("volumeMounts") or []}
        for m in mounts.values():
            if m.get("name") not in volumes:
                problems.add(cw, f"volumeMount {m.get('name')} names no volume")
        for ef in c.get("envFrom") or []:
            cm = (ef.get("configMapRef") or {}).get("name")
            if cm and ("ConfigMap", ns, cm) not in before:
                problems.add(cw, f"envFrom ConfigMap {ns}/{cm} not defined earlier")
        for e in c.get("env") or []:
            ref = ((e.get("valueFrom") or {}).get("configMapKeyRef")) or {}
            if ref and ("ConfigMap", ns, ref.get("name")) not in before:
                problems.add(cw, f"env {e.get('name')}: ConfigMap {ref.get('name')} not defined earlier")
            ref = ((e.get("valueFrom") or {}).get("secretKeyRef")) or {}
            if ref and ("Secret", ns, ref.get("name")) not in before:
                problems.add(cw, f"env {e.get('name')}: Secret {ref.get('name')} not defined earlier")
        check_shell(cw, c, problems)
        if security_rules.runs_redis_server(c) and security_rules.is_sentinel(c):
            security_rules.sentinel_rules(cw, spec, c, mounts, volumes, configmaps_data, ns, problems)
        elif security_rules.runs_redis_server(c):
            security_rules.redis_rules(cw, spec, c, mounts, volumes, problems)
        if rc in (runtime_class, SHIM_RUNTIME_CLASS):
            env_cfg = wasm_rules(cw, meta, c, mounts, volumes, ns, configmaps_data, problems,
                                 annotation=rc == runtime_class)
            security_rules.function_rules(cw, doc, spec, c, mounts, volumes, env_cfg, problems)


def wasm_rules(where, meta, c, mounts, volumes, ns, configmaps_data, problems, annotation=True):
    if annotation and (meta.get("annotations") or {}).get(VARIANT) != "compat-smart":
        problems.add(where, f"pod template needs annotation {VARIANT}: compat-smart")
    env = env_value(c, "WASMEDGE_PLUGIN_PATH")
    path = (env or {}).get("value")
    if not path:
        problems.add(where, "WASMEDGE_PLUGIN_PATH must be set (a value)")
    else:
        if ":" in path:
            problems.add(where, f"WASMEDGE_PLUGIN_PATH {path!r}: one path, no ':' (a trailing ':' aborts WasmEdge 0.14)")
        m = mounts.get(path)
        vol = volumes.get((m or {}).get("name"), {})
        if not m or (vol.get("hostPath") or {}).get("path") != PLUGIN_DIR:
            problems.add(where, f"WASMEDGE_PLUGIN_PATH {path} must be a mount of hostPath {PLUGIN_DIR}")
        elif not m.get("readOnly"):
            problems.add(where, f"the plugin mount {path} should be readOnly")
    node = (env_value(c, "SKYLARK_NODE_NAME") or {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    if node != "spec.nodeName":
        problems.add(where, "SKYLARK_NODE_NAME must come from fieldRef spec.nodeName")
    env_cfg = {}
    for ef in c.get("envFrom") or []:
        env_cfg.update(configmaps_data.get((ns, (ef.get("configMapRef") or {}).get("name")), {}))
    for e in c.get("env") or []:
        if "value" in e:
            env_cfg[e["name"]] = e["value"]
    url = env_cfg.get("SKYLARK_REDIS_URL", "")
    if url.startswith(("unix://", "redis+unix://")):
        sock_dir = url.split("://", 1)[1].rsplit("/", 1)[0]
        if sock_dir not in mounts:
            problems.add(where, f"SKYLARK_REDIS_URL {url}: socket directory {sock_dir} is not mounted")
    topo = env_cfg.get("SKYLARK_TOPOLOGY_FILE")
    if topo and topo.rsplit("/", 1)[0] not in mounts:
        problems.add(where, f"SKYLARK_TOPOLOGY_FILE {topo}: its directory is not mounted")
    return env_cfg


def check_shell(where, c, problems):
    cmd = (c.get("command") or []) + (c.get("args") or [])
    for i, word in enumerate(cmd[:-1]):
        if word == "-c" and i > 0 and cmd[i - 1].endswith("sh"):
            r = subprocess.run(["sh", "-n", "-c", cmd[i + 1]], capture_output=True, text=True)
            if r.returncode != 0:
                problems.add(where, f"embedded sh script: {r.stderr.strip()}")


def defined_before(defined, order):
    return {key for key, o in defined.items() if o <= order}


def check_topology(where, text, problems):
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        problems.add(where, f"topology.json is not JSON: {e}")
        return
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list):
        problems.add(where, "topology.json: expected Skylark's format (an object with nodes)")
        return
    names = set()
    for i, n in enumerate(doc["nodes"]):
        if not isinstance(n, dict) or not n.get("name") or n.get("type") not in ("Cloud", "Edge", "Sat"):
            problems.add(where, f"topology.json: node {i} needs name and type Cloud|Edge|Sat")
            continue
        if n["name"] in names:
            problems.add(where, f"topology.json: node {n['name']} twice")
        names.add(n["name"])
    if doc.get("global") is not None and doc["global"] not in names:
        problems.add(where, f"topology.json: global {doc['global']} is not a node")
    slots = doc.get("slots") if "slots" in doc else [doc.get("links") or []]
    if not isinstance(slots, list) or not slots:
        problems.add(where, "topology.json: no slots")
        return
    for s, links in enumerate(slots):
        for j, link in enumerate(links if isinstance(links, list) else []):
            at = f"topology.json: slot {s} link {j}"
            if link.get("source") not in names or link.get("target") not in names:
                problems.add(where, f"{at}: unknown node")
            for key in ("latency_ms", "bandwidth_mbps"):
                v = link.get(key)
                if not isinstance(v, (int, float)) or v < 0:
                    problems.add(where, f"{at}: {key} must be a non-negative number")


def generated_secrets(problems):
    """The Secrets make-redis-secrets.sh generates for namespace skylark, as documents."""
    r = subprocess.run(["bash", str(SECRETS_SCRIPT), "skylark"], capture_output=True, text=True)
    if r.returncode != 0:
        problems.add(SECRETS_SCRIPT.name, f"failed: {r.stderr.strip()}")
        return []
    try:
        return [d for d in yaml.safe_load_all(r.stdout) if d is not None]
    except yaml.YAMLError as e:
        problems.add(SECRETS_SCRIPT.name, f"output is not YAML: {e}")
        return []


def validate(manifest_dir, versions, runtime_class, require_digests=False):
    """Validates a manifest directory; returns (problems, documents, counts by kind)."""
    problems = Problems()
    docs = [(-1, SECRETS_SCRIPT.name, d) for d in generated_secrets(problems)]
    docs += load(manifest_dir, problems)

    usable = [(o, f, d) for o, f, d in docs if check_basics(f, d, problems)]
    defined, configmaps_data, features = {}, {}, {}
    cluster_scoped = ("Namespace", "RuntimeClass", security_rules.VAP[1], security_rules.VAP_BINDING[1])
    for order, _, doc in usable:
        ns = "" if doc["kind"] in cluster_scoped else doc["metadata"].get("namespace", "default")
        key = (doc["kind"], ns, doc["metadata"]["name"])
        defined.setdefault(key, order)
        if doc["kind"] == "ConfigMap":
            configmaps_data[(ns, doc["metadata"]["name"])] = doc.get("data") or {}
            if (ns, doc["metadata"]["name"]) == ("knative-serving", "config-features"):
                features = doc.get("data") or {}
    counts = {}
    for order, fname, doc in usable:
        where = f"{fname}: {ident(doc)}"
        counts[doc["kind"]] = counts.get(doc["kind"], 0) + 1
        if (doc["apiVersion"], doc["kind"]) == KNATIVE:
            knative_checks(where, doc, versions, features, problems)
        else:
            schema_validate(where, doc, versions, problems)
        # (make-redis-secrets.sh's Secrets, order -1, are applied after the namespace)
        if doc["kind"] not in cluster_scoped and order >= 0:
            reference_checks(where, order, doc, defined, configmaps_data, runtime_class, problems,
                             require_digests)
        if doc["kind"] == "ConfigMap" and "topology.json" in (doc.get("data") or {}):
            check_topology(where, doc["data"]["topology.json"], problems)
    security_rules.admission_rules(usable, features, problems)
    policy = admission_policy(usable)
    if policy is not None:
        # Each function pod as shipped, and switched to the other RuntimeClass (a Service
        # may select either: README "Either RuntimeClass"), must be admitted.
        for where, ns, pod in function_pods(usable, runtime_class) + function_pods(usable, SHIM_RUNTIME_CLASS):
            other = runtime_class if pod["spec"]["runtimeClassName"] == SHIM_RUNTIME_CLASS else SHIM_RUNTIME_CLASS
            switched = copy.deepcopy(pod)
            switched["spec"]["runtimeClassName"] = other
            for w, p in ((where, pod), (f"{where} (as runtimeClassName {other})", switched)):
                try:
                    refused = policy_check.denials(policy, p, policy_check.namespace_object(ns))
                except policy_check.PolicyError as e:
                    problems.add(w, f"admission policy {security_rules.ADMISSION_POLICY}: {e}")
                    continue
                for message in refused:
                    problems.add(w, f"admission policy {security_rules.ADMISSION_POLICY} refuses it: {message}")
    return problems, docs, counts


def alternatives(manifest_dir):
    """The alternative sets: subdirectories of the manifest directory with *.yaml files.
    Each is laid over the default set (kubectl apply -f <dir>/ after the default): a file
    of the same name replaces the default's, the others are added."""
    return sorted(d for d in manifest_dir.iterdir() if d.is_dir() and any(d.glob("*.yaml")))


def overlay(manifest_dir, alt, tmp):
    """A directory in tmp holding the default set with `alt` laid over it."""
    out = Path(tmp) / alt.name
    out.mkdir()
    for f in list(manifest_dir.glob("*.yaml")) + list(alt.glob("*.yaml")):
        shutil.copy(f, out / f.name)
    return out


def overlay_checks(alt_name, default_docs, docs, problems):
    """A ConfigMap an alternative set redefines may differ from the default only in
    SKYLARK_GLOBAL_* keys; SKYLARK_GLOBAL_URL's cluster or sentinel hosts must be pods of a
    StatefulSet of the set, named through its headless Service."""
    def key(doc):
        return (doc.get("kind"), doc.get("metadata", {}).get("namespace", "default"), doc.get("metadata", {}).get("name"))
    default_cms = {key(d): d for _, _, d in default_docs if isinstance(d, dict) and d.get("kind") == "ConfigMap"}
    objects = {key(d): d for _, _, d in docs if isinstance(d, dict)}
    for _, fname, doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "ConfigMap":
            continue
        where = f"{alt_name}/{fname}: {ident(doc)}"
        data = doc.get("data") or {}
        base = default_cms.get(key(doc))
        if base is not None and base is not doc:
            old = base.get("data") or {}
            for k in sorted(set(old) | set(data)):
                if not k.startswith("SKYLARK_GLOBAL_") and old.get(k) != data.get(k):
                    problems.add(where, f"{k} differs from the default set's (only SKYLARK_GLOBAL_* may)")
        if "SKYLARK_GLOBAL_URL" in data:
            global_url_checks(where, str(data["SKYLARK_GLOBAL_URL"]), objects, problems)


def global_url_checks(where, url, objects, problems):
    scheme, _, rest = url.partition("://")
    if not scheme.endswith(("+cluster", "+sentinel")):
        return
    authority, _, path = rest.partition("/")
    for hostport in authority.rsplit("@", 1)[-1].split(","):
        host, _, port = hostport.rpartition(":")
        m = re.fullmatch(r"([a-z0-9-]+)-(\d+)\.([a-z0-9-]+)\.([a-z0-9-]+)\.svc(\.cluster\.local)?", host)
        if not m or not port.isdigit():
            problems.add(where, f"SKYLARK_GLOBAL_URL: {hostport} is not <pod>.<service>.<namespace>.svc:<port> "
                                "of a StatefulSet of these manifests")
            continue
        sts_name, ordinal, svc_name, ns = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        sts = objects.get(("StatefulSet", ns, sts_name))
        if sts is None:
            problems.add(where, f"SKYLARK_GLOBAL_URL: {host}: no StatefulSet {ns}/{sts_name}")
            continue
        spec = sts.get("spec") or {}
        if ordinal >= spec.get("replicas", 1):
            problems.add(where, f"SKYLARK_GLOBAL_URL: {host}: StatefulSet {sts_name} has {spec.get('replicas', 1)} pods")
        if spec.get("serviceName") != svc_name:
            problems.add(where, f"SKYLARK_GLOBAL_URL: {host}: StatefulSet {sts_name}'s serviceName is not {svc_name}")
        svc = objects.get(("Service", ns, svc_name))
        if svc is None or (svc.get("spec") or {}).get("clusterIP") != "None":
            problems.add(where, f"SKYLARK_GLOBAL_URL: {host}: no headless Service {ns}/{svc_name}")
        elif int(port) not in [p.get("port") for p in (svc.get("spec") or {}).get("ports") or []]:
            problems.add(where, f"SKYLARK_GLOBAL_URL: {host}: Service {svc_name} has no port {port}")
    if scheme.endswith("+sentinel"):
        master = path.split("/", 1)[0].split("?", 1)[0]
        monitored = set()
        for (kind, _, _), doc in objects.items():
            if kind == "ConfigMap":
                for text in (doc.get("data") or {}).values():
                    monitored.update(re.findall(r"^\s*sentinel monitor (\S+)", str(text), re.M))
        if master not in monitored:
            problems.add(where, f"SKYLARK_GLOBAL_URL: primary name {master!r} is not monitored by a sentinel "
                                f"configuration of these manifests ({sorted(monitored)})")


def validate_all(manifest_dir, versions, runtime_class, require_digests=False):
    """The default set, then each alternative set laid over it. Returns (problem lines,
    summary lines)."""
    problems, docs, counts = validate(manifest_dir, versions, runtime_class, require_digests)
    lines = list(problems.items)
    summaries = [f"{len(docs)} documents ({summarize(counts)}) in {manifest_dir} and from {SECRETS_SCRIPT.name}: "
                 f"{len(problems.items)} problem(s)"]
    for alt in alternatives(manifest_dir):
        with tempfile.TemporaryDirectory() as tmp:
            alt_problems, alt_docs, alt_counts = validate(overlay(manifest_dir, alt, tmp), versions, runtime_class,
                                                          require_digests)
        overlay_checks(alt.name, docs, alt_docs, alt_problems)
        lines += [f"{alt.name} over the default set: {p}" for p in alt_problems.items]
        summaries.append(f"{len(alt_docs)} documents ({summarize(alt_counts)}) with {alt} laid over the default "
                         f"set: {len(alt_problems.items)} problem(s)")
    return lines, summaries


def summarize(counts):
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def admission_policy(usable):
    """The Skylark ValidatingAdmissionPolicy among the documents, or None."""
    for _, _, doc in usable:
        if (doc["apiVersion"], doc["kind"]) == security_rules.VAP and \
                doc["metadata"]["name"] == security_rules.ADMISSION_POLICY:
            return doc
    return None


def function_pods(usable, runtime_class):
    """[(where, namespace, pod)] of every workload whose pods use `runtime_class`, each
    pod as the API server would see it (a Knative Service's template without the
    RevisionSpec fields)."""
    out = []
    for _, fname, doc in usable:
        tpl = pod_template(doc)
        if tpl is None or tpl[1].get("runtimeClassName") != runtime_class:
            continue
        meta, spec = tpl
        ns = doc["metadata"].get("namespace", "default")
        spec = {k: v for k, v in spec.items() if k not in KNATIVE_REVISION_FIELDS}
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": dict(meta, name=doc["metadata"]["name"], namespace=ns), "spec": spec}
        out.append((f"{fname}: {ident(doc)}", ns, pod))
    return out


# What --self-test swaps in (file in testdata/ -> the manifest it replaces, or None to
# remove that manifest) and the FAIL lines each must produce (substrings).
SELF_TESTS = [
    (("31-redis-open.yaml", "31-redis.yaml"), [
        "redis-server: --protected-mode must be yes",
        "redis-server: binds 0.0.0.0",
        "redis-server: needs --aclfile",
        "redis-server: needs --maxmemory ",
        "redis-server: --maxmemory-policy volatile-ttl evicts acknowledged state",
        "redis-server must run with runAsNonRoot: true",
        "redis-server must run as a non-zero runAsUser",
        "redis-server needs allowPrivilegeEscalation: false",
        "redis-server must drop all capabilities",
        "image redis:7.4 is not pinned by digest",
    ]),
    (("50-ksvc-open.yaml", "50-ksvc-preprocess.yaml"), [
        "SKYLARK_REDIS_PASSWORD as a value",
        "SKYLARK_REDIS_PASSWORD_FILE must be set",
        "SKYLARK_NAMESPACE must be set in env to the pod's namespace skylark",
        "Knative Service needs label networking.knative.dev/visibility: cluster-local",
    ]),
    (("40-skylark-config-no-quota.yaml", "40-skylark-config.yaml"), [
        "SKYLARK_NAMESPACE_MAX_BYTES must be a positive quota",
    ]),
    (("51-ksvc-secret-unreadable.yaml", "51-ksvc-detect.yaml"), [
        "the Secret's files are not readable by the pod's user",
    ]),
    (("20-installer-record-differs.yaml", "20-plugin-installer.yaml"), [
        "PLUGIN_IMAGE skylark/plugin-installer:0.1.0 is not the container's image",
    ]),
    (("25-shim-installer-unpinned.yaml", "25-shim-installer.yaml"), [
        "container install: image skylark/shim-installer:0.1.0 of a container privileged is not pinned",
        "container idle: image skylark/shim-installer:0.1.0 of a container in a hostPID pod is not pinned",
    ]),
    (("33-global-sentinel-open.yaml", "global-sentinel/33-global-sentinel.yaml"), [
        "sentinel: the default user (reached without credentials) must not have allcommands",
        "sentinel: its configuration needs protected-mode yes",
        "sentinel: auth-pass in a ConfigMap",
        "redis-server: binds 0.0.0.0",
        "redis-server: --masterauth puts a password on the command line",
    ]),
    (("40-skylark-config-global-drift.yaml", "global-cluster/40-skylark-config.yaml"), [
        "SKYLARK_POLICY differs from the default set's",
        "StatefulSet skylark-global-cluster has 6 pods",
        "Service skylark-global-cluster has no port 7000",
    ]),
    ((None, "46-admission-policy.yaml"), [
        "hostPath volumes are enabled for every Knative Service, but the admission policy",
    ]),
]


def self_test(manifest_dir, versions, runtime_class):
    """Runs SELF_TESTS; prints one line per case; returns the number of failed cases."""
    failed = 0
    for (bad, replaces), expected in SELF_TESTS:
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "manifests"
            shutil.copytree(manifest_dir, copy)
            (copy / replaces).unlink()
            if bad:
                shutil.copy(HERE / "testdata" / bad, copy / replaces)
            lines, _ = validate_all(copy, versions, runtime_class)
        lines = [f"FAIL {p}" for p in lines]
        missing = [e for e in expected if not any(e in line for line in lines)]
        case = f"{bad or 'no file'} as {replaces}"
        if missing:
            failed += 1
            print(f"SELF-TEST FAILED: {case}: no FAIL line contains:")
            for m in missing:
                print(f"  {m}")
            print("  (FAIL lines were:)")
            for line in lines:
                print(f"  {line}")
        else:
            print(f"self-test ok: {case}: {len(expected)} expected FAIL line(s) among {len(lines)}")
    # The admission policy's CEL on variants of the shipped preprocess pod.
    problems = Problems()
    usable = [(o, f, d) for o, f, d in load(manifest_dir, problems) if check_basics(f, d, problems)]
    policy = admission_policy(usable)
    pods = [p for w, ns, p in function_pods(usable, runtime_class) if w.startswith("50-")]
    if policy is None or not pods:
        failed += 1
        print("SELF-TEST FAILED: admission policy cases: no policy or no 50-* function pod")
    else:
        failures = policy_check.self_test(policy, pods[0])
        if failures:
            failed += 1
            print("SELF-TEST FAILED: admission policy cases:")
            for f in failures:
                print(f"  {f}")
        else:
            print(f"self-test ok: admission policy: {len(policy_check.CASES)} pod variants refused or admitted as expected")
    return failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest_dir", type=Path)
    ap.add_argument("--kubernetes-version", action="append", dest="versions",
                    help="schema version, e.g. 1.31.0 (repeatable; default "
                         f"{' and '.join(DEFAULT_VERSIONS)}; 1.30 is the first with ValidatingAdmissionPolicy v1)")
    ap.add_argument("--runtime-class", default="wasmedge-skylark")
    ap.add_argument("--require-digests", action="store_true",
                    help="every image, the project's own too, must be pinned by digest")
    ap.add_argument("--self-test", action="store_true",
                    help="check that the rules refuse the known-bad manifests in testdata/")
    args = ap.parse_args()
    versions = args.versions or DEFAULT_VERSIONS
    if args.self_test:
        failed = self_test(args.manifest_dir, versions, args.runtime_class)
        print(f"{len(SELF_TESTS) + 1 - failed} passed, {failed} failed")
        return 1 if failed else 0
    lines, summaries = validate_all(args.manifest_dir, versions, args.runtime_class, args.require_digests)
    for p in lines:
        print(f"FAIL {p}")
    for summary in summaries:
        print(summary)
    print(f"schemas {' and '.join(versions)}: {len(lines)} problem(s)")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
