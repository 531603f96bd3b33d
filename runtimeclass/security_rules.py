"""Security rules of validate.py for the Skylark manifests (issue 16 points 1 and 8, and
image pinning): what a node Redis, a function pod, the admission policy and every image
reference must look like. Each function adds `problems` (validate.Problems) and returns
nothing; validate.py calls them per container or once per manifest set.

- redis_rules: any container running redis-server (its command, or the args of an image
  whose entrypoint is redis) must use ACL users from a Secret (--aclfile in a Secret
  volume), bind no wildcard address (with hostNetwork: only loopback and the node's IP from
  the downward API status.hostIP), set protected-mode yes, maxmemory with the noeviction
  policy, a socket permission without access for others, and run as a non-root user with
  every capability dropped and no privilege escalation.
- sentinel_rules: a container running `redis-server <conf> --sentinel` (the optional global
  store on Sentinel, manifests/global-sentinel/) must be hardened as a redis-server, keep
  its config file in a writable emptyDir (sentinels rewrite it) and mount a ConfigMap with
  its configuration without secrets: protected-mode yes, explicit binds without a
  wildcard, no passwords, and a `default` user (the plugin asks sentinels without
  credentials) limited to -@all plus PING, ROLE and the read-only SENTINEL queries.
- function_rules: a wasm function pod reads its Redis password from a Secret file
  (SKYLARK_REDIS_PASSWORD_FILE under a Secret mount that its non-root user can read: fsGroup
  with a group-readable mode; no SKYLARK_REDIS_PASSWORD value), sets
  SKYLARK_NAMESPACE to its own Kubernetes namespace, has no liveness or startup probe while it
  listens on loopback (the kubelet would probe the pod IP), and (Knative) is cluster-local.
- admission_rules: when Knative's hostPath flag is enabled, the admission policy that
  limits hostPath and SKYLARK_NAMESPACE must be part of the manifests, and every binding
  must name a policy that exists.
- image_rules: a third-party image (not skylark/...) must be pinned by digest
  (`name[:tag]@sha256:<64 hex>`); with --require-digests every image must. A container's
  PLUGIN_IMAGE (what the plugin installer records as installed) must be its image, so that
  pinning one pins the record too.
"""

import re

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
WILDCARD_BINDS = {"0.0.0.0", "*", "::", "-::*", "::*"}
LOOPBACK = {"127.0.0.1", "-::1", "::1", "localhost"}
ADMISSION_POLICY = "skylark-function-pods"
VAP = ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy")
VAP_BINDING = ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding")


# What the sentinels' `default` user (no credentials: the plugin's Sentinel client) may run.
SENTINEL_DEFAULT_ALLOWED = {
    "+ping", "+role", "+sentinel|masters", "+sentinel|master", "+sentinel|replicas", "+sentinel|slaves",
    "+sentinel|sentinels", "+sentinel|get-master-addr-by-name", "+sentinel|ckquorum", "+sentinel|myid",
}
SENTINEL_SECRET_DIRECTIVES = ("requirepass", "auth-pass", "sentinel-pass", "masterauth")


def runs_redis_server(c):
    """True if the container starts redis-server."""
    command = c.get("command") or []
    if command:
        return command[0].rsplit("/", 1)[-1] == "redis-server"
    # No command: the image's entrypoint runs; the official image's passes args starting
    # with '-' (or redis-server itself) to redis-server.
    image = c.get("image", "").rsplit("/", 1)[-1]
    args = c.get("args") or []
    return image.startswith("redis") and (not args or args[0] == "redis-server" or args[0].startswith("-"))


def redis_options(c):
    """The redis-server options of the container's command line: {name: [values]}."""
    words = list(c.get("command") or [])[1:] + list(c.get("args") or [])
    opts, name = {}, None
    for w in words:
        if isinstance(w, str) and w.startswith("--"):
            name = w[2:]
            opts.setdefault(name, [])
        elif name is not None:
            opts[name].append(str(w))
    return opts


def memory_bytes(text):
    """Redis memory units (1gb, 768mb, 100k, 5000) to bytes; None if unparsable."""
    m = re.fullmatch(r"(\d+)(b|k|kb|m|mb|g|gb)?", text.strip().lower())
    if not m:
        return None
    unit = {None: 1, "b": 1, "k": 1000, "kb": 1024, "m": 10**6, "mb": 1 << 20, "g": 10**9, "gb": 1 << 30}
    return int(m.group(1)) * unit[m.group(2)]


def effective(pod_sc, c_sc, key):
    """A securityContext field: the container's, else the pod's."""
    if key in (c_sc or {}):
        return c_sc[key]
    return (pod_sc or {}).get(key)


def hardening_rules(where, pod_spec, c, problems):
    """Non-root, no privilege escalation, every capability dropped."""
    pod_sc = pod_spec.get("securityContext") or {}
    sc = c.get("securityContext") or {}
    if effective(pod_sc, sc, "runAsNonRoot") is not True:
        problems.add(where, "redis-server must run with runAsNonRoot: true")
    user = effective(pod_sc, sc, "runAsUser")
    if not isinstance(user, int) or user == 0:
        problems.add(where, "redis-server must run as a non-zero runAsUser (the image's redis user is 999)")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.add(where, "redis-server needs allowPrivilegeEscalation: false")
    if sc.get("privileged"):
        problems.add(where, "redis-server must not be privileged")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        problems.add(where, "redis-server must drop all capabilities (capabilities.drop: [ALL])")
    if caps.get("add"):
        problems.add(where, f"redis-server must not add capabilities {caps['add']}")


def host_ip_vars(c):
    """Names of the container's env variables set from the node's IP (downward API)."""
    out = set()
    for e in c.get("env") or []:
        path = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if path in ("status.hostIP", "status.hostIPs"):
            out.add(e.get("name"))
    return out


def redis_rules(where, pod_spec, c, mounts, volumes, problems):
    opts = redis_options(c)
    if opts.get("protected-mode") != ["yes"]:
        problems.add(where, f"redis-server: --protected-mode must be yes, found {opts.get('protected-mode')}")
    binds = opts.get("bind")
    if not binds:
        problems.add(where, "redis-server: needs --bind with explicit addresses (the default listens on every interface)")
    else:
        for b in binds:
            if b in WILDCARD_BINDS:
                problems.add(where, f"redis-server: binds {b}, every interface of the node")
            elif pod_spec.get("hostNetwork") and b not in LOOPBACK:
                m = re.fullmatch(r"\$\((\w+)\)", b)
                if not m or m.group(1) not in host_ip_vars(c):
                    problems.add(where, f"redis-server: with hostNetwork, bind only loopback and the node's IP "
                                        f"($(VAR) with VAR from fieldRef status.hostIP), not {b}")
    if "requirepass" in opts:
        problems.add(where, "redis-server: --requirepass puts a password on the command line; use --aclfile from a Secret")
    if "masterauth" in opts:
        problems.add(where, "redis-server: --masterauth puts a password on the command line; load it from a config "
                            "file in a Secret")
    acl = (opts.get("aclfile") or [None])[0]
    if not acl:
        problems.add(where, "redis-server: needs --aclfile (ACL users from a Secret; the default user off)")
    else:
        vol = None
        for path, m in mounts.items():
            if acl.startswith(path.rstrip("/") + "/"):
                vol = volumes.get(m.get("name"), {})
        if not vol or "secret" not in vol:
            problems.add(where, f"redis-server: --aclfile {acl} must be in a mounted Secret volume")
        elif not readable_secret(vol, pod_spec):
            problems.add(where, f"redis-server: --aclfile {acl}: the Secret's files are not readable by the "
                                "non-root user (set securityContext.fsGroup with a group-readable mode)")
    maxmemory = memory_bytes((opts.get("maxmemory") or ["0"])[0])
    if not maxmemory:
        problems.add(where, "redis-server: needs --maxmemory (a non-zero limit below the container's memory limit)")
    policy = (opts.get("maxmemory-policy") or ["noeviction"])[0]
    if policy != "noeviction":
        problems.add(where, f"redis-server: --maxmemory-policy {policy} evicts acknowledged state; use noeviction")
    perm = (opts.get("unixsocketperm") or [None])[0]
    if "unixsocket" in opts and (perm is None or not re.fullmatch(r"[0-7]{2,3}0", perm)):
        problems.add(where, f"redis-server: --unixsocketperm {perm} must give others no access (e.g. 770)")
    for opt in ("enable-debug-command", "enable-module-command", "enable-protected-configs"):
        if opts.get(opt, ["no"])[0] != "no":
            problems.add(where, f"redis-server: --{opt} must stay no")
    hardening_rules(where, pod_spec, c, problems)


def is_sentinel(c):
    """True if the container's redis-server runs as a sentinel."""
    words = list(c.get("command") or []) + list(c.get("args") or [])
    return "--sentinel" in words


def sentinel_rules(where, pod_spec, c, mounts, volumes, configmaps_data, ns, problems):
    """A sentinel container; configmaps_data: {(namespace, name): data} of the manifests."""
    hardening_rules(where, pod_spec, c, problems)
    words = list(c.get("command") or [])[1:] + list(c.get("args") or [])
    conf = next((w for w in words if isinstance(w, str) and not w.startswith("--")), None)
    if not conf:
        problems.add(where, "sentinel: needs its config file as the first argument")
    else:
        vol = None
        for path, m in mounts.items():
            if conf.startswith(path.rstrip("/") + "/"):
                vol = volumes.get(m.get("name"), {})
        if not vol or "emptyDir" not in vol:
            problems.add(where, f"sentinel: config file {conf} must be in a mounted emptyDir (sentinels rewrite it)")
    templates = []
    for v in volumes.values():
        data = configmaps_data.get((ns, (v.get("configMap") or {}).get("name")), {})
        templates += [text for text in data.values() if isinstance(text, str) and "sentinel monitor " in text]
    if not templates:
        problems.add(where, "sentinel: no ConfigMap with its configuration (a `sentinel monitor` line) among the "
                            "pod's volumes")
    for text in templates:
        sentinel_config_rules(where, text, problems)


def sentinel_config_rules(where, text, problems):
    """The rules for a sentinel configuration template (see the module doc)."""
    lines = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    directives = {}
    for words in lines:
        key = words[0].lower()
        if key == "sentinel" and len(words) > 1:
            key = words[1].lower()
        directives.setdefault(key, []).append(words)
    if [w[1:] for w in directives.get("protected-mode", [])] != [["yes"]]:
        problems.add(where, "sentinel: its configuration needs protected-mode yes")
    binds = [b for w in directives.get("bind", []) for b in w[1:]]
    if not binds:
        problems.add(where, "sentinel: needs a bind line with explicit addresses")
    for b in binds:
        if b in WILDCARD_BINDS:
            problems.add(where, f"sentinel: binds {b}, every interface")
    for key in SENTINEL_SECRET_DIRECTIVES:
        if key in directives:
            problems.add(where, f"sentinel: {key} in a ConfigMap: passwords belong in a Secret")
    defaults = [w for w in directives.get("user", []) if len(w) > 1 and w[1] == "default"]
    if not defaults:
        problems.add(where, "sentinel: needs a `user default` line limiting what clients without credentials may run")
    for w in defaults:
        rules = w[2:]
        if "off" not in rules and "-@all" not in rules:
            problems.add(where, "sentinel: the default user needs -@all before what it is granted")
        for r in rules:
            if r in ("allcommands", "+@all") or (r.startswith("+") and r.lower() not in SENTINEL_DEFAULT_ALLOWED):
                problems.add(where, f"sentinel: the default user (reached without credentials) must not have {r}")


def readable_secret(volume, pod_spec):
    """Whether a non-root pod user can read the files of a Secret volume: Kubernetes makes
    them root-owned with group fsGroup (if set) and mode defaultMode (default 0644), or an
    item's own mode."""
    secret = volume.get("secret") or {}
    modes = [i["mode"] for i in secret.get("items") or [] if "mode" in i] or [secret.get("defaultMode", 0o644)]
    if all(m & 0o004 for m in modes):
        return True
    return (pod_spec.get("securityContext") or {}).get("fsGroup") is not None and all(m & 0o040 for m in modes)


def function_rules(where, doc, pod_spec, c, mounts, volumes, env_cfg, problems):
    """Rules for a container of a wasm function pod; env_cfg: its effective SKYLARK_* values."""
    ns = doc["metadata"].get("namespace", "default")
    if "SKYLARK_REDIS_PASSWORD" in env_cfg:
        problems.add(where, "SKYLARK_REDIS_PASSWORD as a value: read it from a Secret file (SKYLARK_REDIS_PASSWORD_FILE)")
    pw_file = env_cfg.get("SKYLARK_REDIS_PASSWORD_FILE")
    if not pw_file:
        problems.add(where, "SKYLARK_REDIS_PASSWORD_FILE must be set (the tenant's password, from its Secret)")
    else:
        m = mounts.get(pw_file.rsplit("/", 1)[0])
        if not m or "secret" not in volumes.get(m.get("name"), {}):
            problems.add(where, f"SKYLARK_REDIS_PASSWORD_FILE {pw_file} must be in a mounted Secret volume")
        elif not readable_secret(volumes[m.get("name")], pod_spec):
            problems.add(where, f"SKYLARK_REDIS_PASSWORD_FILE {pw_file}: the Secret's files are not readable by the "
                                "pod's user (set securityContext.fsGroup, or a mode readable by others)")
    quota = env_cfg.get("SKYLARK_NAMESPACE_MAX_BYTES", "0")
    if not quota.isdigit() or int(quota) == 0:
        problems.add(where, "SKYLARK_NAMESPACE_MAX_BYTES must be a positive quota (without one a tenant's "
                            "guests may fill the node's Redis)")
    explicit = [e for e in c.get("env") or [] if e.get("name") == "SKYLARK_NAMESPACE"]
    if not explicit or explicit[-1].get("value") != ns:
        problems.add(where, f"SKYLARK_NAMESPACE must be set in env to the pod's namespace {ns} "
                            "(46-admission-policy.yaml refuses anything else)")
    if env_cfg.get("SERVE_BIND", "127.0.0.1").startswith("127."):
        for probe in ("livenessProbe", "startupProbe"):
            if probe in c:
                problems.add(where, f"{probe}: the kubelet runs it against the pod's IP, but the function listens "
                                    "on loopback (SERVE_BIND); use a readinessProbe (Knative's queue-proxy runs it)")
    if doc["apiVersion"].startswith("serving.knative.dev/"):
        labels = doc["metadata"].get("labels") or {}
        if labels.get("networking.knative.dev/visibility") != "cluster-local":
            problems.add(where, "Knative Service needs label networking.knative.dev/visibility: cluster-local")


def image_rules(where, c, require_digests, problems, host_pid=False):
    """An image's pinning. Third-party images, and every image of a container with power
    over the node (privileged, or in a pod sharing the host's PID namespace: the shim
    installer edits containerd's configuration and restarts it), must carry a digest; with
    require_digests every image."""
    image = c.get("image", "")
    if not image:
        return
    privileged = bool((c.get("securityContext") or {}).get("privileged"))
    if (privileged or host_pid) and not DIGEST.search(image):
        why = "privileged" if privileged else "in a hostPID pod"
        problems.add(where, f"image {image} of a container {why} is not pinned by digest "
                            "(it has power over the node: name:tag@sha256:<digest>; README \"Images\")")
        return
    for e in c.get("env") or []:
        if e.get("name") == "PLUGIN_IMAGE" and e.get("value") != image:
            problems.add(where, f"PLUGIN_IMAGE {e.get('value')} is not the container's image {image}")
    third_party = not image.startswith("skylark/")
    if (third_party or require_digests) and not DIGEST.search(image):
        what = "a third-party image" if third_party else "an image"
        problems.add(where, f"image {image} is not pinned by digest ({what}: name:tag@sha256:<digest>; "
                            "README \"Images\")")


def admission_rules(docs, features, problems):
    """docs: [(order, file, doc)] of usable documents."""
    policies = {d["metadata"]["name"] for _, _, d in docs if (d["apiVersion"], d["kind"]) == VAP}
    bindings = [(f, d) for _, f, d in docs if (d["apiVersion"], d["kind"]) == VAP_BINDING]
    for f, d in bindings:
        name = (d.get("spec") or {}).get("policyName")
        if name not in policies:
            problems.add(f"{f}: ValidatingAdmissionPolicyBinding/{d['metadata']['name']}",
                         f"policyName {name} is not a ValidatingAdmissionPolicy of these manifests")
        if "Deny" not in ((d.get("spec") or {}).get("validationActions") or []):
            problems.add(f"{f}: ValidatingAdmissionPolicyBinding/{d['metadata']['name']}",
                         "validationActions must include Deny")
    if features.get("kubernetes.podspec-volumes-hostpath") in ("enabled", "allowed"):
        bound = {(d.get("spec") or {}).get("policyName") for _, d in bindings}
        if ADMISSION_POLICY not in policies or ADMISSION_POLICY not in bound:
            problems.add("knative-serving/config-features",
                         f"hostPath volumes are enabled for every Knative Service, but the admission policy "
                         f"{ADMISSION_POLICY} and its binding are missing (46-admission-policy.yaml)")
