//! The node Redis exactly as `runtimeclass/manifests/31-redis.yaml` runs it (issue 16
//! point 1): the test reads the redis-server command line from the manifest (so the two
//! cannot drift), generates credentials with `runtimeclass/make-redis-secrets.sh`, starts a
//! real redis-server with those arguments (paths of the pod's volumes mapped to temporary
//! directories, the node's IP played by 127.0.0.2, a free port) and runs the probe guest
//! through the real plugin against it:
//! - a function with its tenant's user and password file puts and gets;
//! - a connection without credentials can do nothing, on the socket or over TCP, and the
//!   server does not listen on other addresses;
//! - the topology loader's user can set the topology key but not read bundles, and a
//!   function using it fails; another tenant's user cannot read this tenant's bundles
//!   even when it claims this namespace;
//! - the pod's readiness probe and the topology-loader sidecar's script, taken from the
//!   manifest too, work with their narrow user.

use serde_json::Value;
use skylark_testkit::{chain_id, free_port, root, Guest, GuestRun, RUN_TIMEOUT};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `StoreError` (ABI.md): a refused `AUTH` or a command outside the user's ACL.
const STORE_ERROR: i64 = 22;

/// The redis-server container of the manifest (its command line, readiness probe, plain
/// env values and where its volumes are mounted) and the topology loader's script, as
/// JSON from PyYAML.
const EXTRACT: &str = r#"
import json, sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    spec = ((doc or {}).get("spec") or {}).get("template", {}).get("spec") or {}
    containers = {c["name"]: c for c in spec.get("containers") or []}
    for c in containers.values():
        if (c.get("command") or [""])[0] == "redis-server":
            loader = containers["topology-loader"]
            print(json.dumps({
                "command": c["command"] + (c.get("args") or []),
                "probe": c["readinessProbe"]["exec"]["command"],
                "env": {e["name"]: e["value"] for e in c.get("env") or [] if "value" in e},
                "mounts": {m["name"]: m["mountPath"] for m in c.get("volumeMounts") or []},
                "secrets": {v["name"]: v["secret"]["secretName"]
                            for v in spec.get("volumes") or [] if "secret" in v},
                "loader": {
                    "command": loader["command"] + (loader.get("args") or []),
                    "env": {e["name"]: e["value"] for e in loader.get("env") or [] if "value" in e},
                    "mounts": {m["name"]: m["mountPath"] for m in loader.get("volumeMounts") or []},
                },
            }))
"#;

fn manifest_redis() -> Value {
    let manifest = root().join("runtimeclass/manifests/31-redis.yaml");
    let out = Command::new("python3")
        .arg("-c")
        .arg(EXTRACT)
        .arg(&manifest)
        .output()
        .expect("python3 not found (scripts/setup-deps.sh installs python3-yaml)");
    assert!(
        out.status.success(),
        "reading {}: {}",
        manifest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let first = lines
        .next()
        .expect("a redis-server container in 31-redis.yaml");
    assert!(
        lines.next().is_none(),
        "one redis-server container expected"
    );
    serde_json::from_str(first).expect("extracted JSON")
}

/// Credentials as make-redis-secrets.sh writes them with `--files`.
struct Credentials {
    dir: PathBuf,
}

impl Credentials {
    fn generate(dir: &Path, tenants: &[&str]) -> Credentials {
        let out = Command::new("bash")
            .arg(root().join("runtimeclass/make-redis-secrets.sh"))
            .arg("--files")
            .arg(dir)
            .args(tenants)
            .output()
            .expect("run make-redis-secrets.sh");
        assert!(
            out.status.success(),
            "make-redis-secrets.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Credentials {
            dir: dir.to_path_buf(),
        }
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.join(rel)).expect("generated credential")
    }

    fn password_file(&self, tenant: &str) -> PathBuf {
        self.dir.join(tenant).join("password")
    }
}

/// A redis-server started with the manifest's arguments.
struct NodeRedis {
    child: Child,
    port: u16,
    socket: PathBuf,
}

impl Drop for NodeRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` with every path under one of `mounts` (volume name -> mount path) moved into
/// `tmp/<volume>`; longer mount paths first, so that `/etc/skylark` does not take
/// `/etc/skylark-redis-acl/...`.
fn map_paths(text: &str, mounts: &BTreeMap<String, String>, tmp: &Path) -> String {
    let mut by_length: Vec<_> = mounts.iter().collect();
    by_length.sort_by_key(|(_, path)| std::cmp::Reverse(path.len()));
    let mut out = text.to_string();
    for (volume, path) in by_length {
        let target = tmp.join(volume).to_string_lossy().into_owned();
        out = out.replace(&format!("{path}/"), &format!("{target}/"));
        if out == *path {
            out = target;
        }
    }
    out
}

/// Starts redis-server with the manifest's command line: every path under a volume mount
/// is moved into `tmp/<volume>`, the Secret volume holding the ACL file gets the generated
/// one, `$(HOST_IP)` becomes 127.0.0.2 and the port a free one.
fn start(spec: &Value, creds: &Credentials, tmp: &Path) -> NodeRedis {
    let mounts: BTreeMap<String, String> =
        serde_json::from_value(spec["mounts"].clone()).expect("mounts");
    let secrets: BTreeMap<String, String> =
        serde_json::from_value(spec["secrets"].clone()).expect("secrets");
    for volume in mounts.keys() {
        std::fs::create_dir_all(tmp.join(volume)).expect("volume dir");
        if secrets.get(volume).map(String::as_str) == Some("skylark-redis-acl") {
            for f in ["users.acl", "loader-password"] {
                std::fs::copy(creds.dir.join(f), tmp.join(volume).join(f)).expect("copy");
            }
        }
    }
    let port = free_port();
    let words: Vec<String> = serde_json::from_value(spec["command"].clone()).expect("command");
    let mut args = Vec::new();
    let mut socket = None;
    let mut previous = String::new();
    for w in words.iter().skip(1) {
        let mut arg = w.replace("$(HOST_IP)", "127.0.0.2");
        if previous == "--port" {
            arg = port.to_string();
        }
        arg = map_paths(&arg, &mounts, tmp);
        if previous == "--unixsocket" {
            socket = Some(PathBuf::from(&arg));
        }
        previous = w.clone();
        args.push(arg);
    }
    assert_eq!(words[0], "redis-server");
    let child = Command::new("redis-server")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server not found: install it (apt-get install redis-server)");
    let socket = socket.expect("the manifest's --unixsocket");
    let mut node = NodeRedis {
        child,
        port,
        socket,
    };
    let socket_url = format!("unix://{}", node.socket.display());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(st)) = node.child.try_wait() {
            panic!("redis-server {args:?} exited: {st}");
        }
        // Up when it answers at all: PONG, or a refusal for want of credentials.
        match ping(&socket_url) {
            Ok(_) => return node,
            Err(e) if format!("{e:?}").to_lowercase().contains("noauth") => return node,
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "redis-server {args:?} never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn loader_url(node: &NodeRedis, creds: &Credentials) -> String {
    format!(
        "redis://skylark-loader:{}@127.0.0.1:{}",
        creds.read("loader-password"),
        node.port
    )
}

fn connect(url: &str) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))
}

fn ping(url: &str) -> redis::RedisResult<String> {
    redis::cmd("PING").query(&mut connect(url)?)
}

fn probe(node: &NodeRedis, namespace: &str, user: &str, password_file: &Path) -> Guest {
    Guest::new("probe", &format!("unix://{}", node.socket.display()))
        .env("SKYLARK_NAMESPACE", namespace)
        .env("SKYLARK_REDIS_USERNAME", user)
        .env(
            "SKYLARK_REDIS_PASSWORD_FILE",
            &password_file.to_string_lossy(),
        )
}

fn run(g: Guest, args: &[&str]) -> (GuestRun, Value) {
    let run = g.args(args).run(RUN_TIMEOUT);
    run.assert_success();
    let json = run.json();
    (run, json)
}

#[test]
fn the_shipped_node_redis_admits_only_its_acl_users() {
    let spec = manifest_redis();
    let tmp = tempfile::tempdir().expect("temp dir");
    let creds = Credentials::generate(&tmp.path().join("creds"), &["skylark", "tenant-b"]);
    let node = start(&spec, &creds, &tmp.path().join("volumes"));

    // The socket: group access only (the function pods' supplemental group).
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&node.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o770, "socket mode {mode:o}");

    // No credentials: nothing, on the socket or over TCP (the default user is off).
    let socket_url = format!("unix://{}", node.socket.display());
    for url in [
        socket_url.as_str(),
        &format!("redis://127.0.0.1:{}", node.port),
        &format!("redis://127.0.0.2:{}", node.port),
    ] {
        let refused = ping(url).expect_err("PING without credentials must be refused");
        assert!(
            format!("{refused:?}").to_lowercase().contains("noauth"),
            "{url}: {refused:?}"
        );
    }
    // Bound to the node's IP and loopback only, not every address.
    assert!(
        std::net::TcpStream::connect(("127.0.0.3", node.port)).is_err(),
        "redis-server listens on 127.0.0.3: the manifest binds a wildcard"
    );

    // The tenant's function: put and get through the plugin, with the password file.
    let chain = chain_id("acl");
    let tenant = probe(
        &node,
        "skylark",
        "tenant-skylark",
        &creds.password_file("skylark"),
    );
    let (r, v) = run(tenant, &["put", &chain, "pre", "4096", "5"]);
    assert_eq!(v["status"], 0, "{v}\n{}", r.stderr);
    let tenant = probe(
        &node,
        "skylark",
        "tenant-skylark",
        &creds.password_file("skylark"),
    );
    let (r, v) = run(tenant, &["get", &chain]);
    assert_eq!(v["status"], 0, "{v}\n{}", r.stderr);
    assert_eq!(v["chain"], chain.as_str(), "{v}");

    // The loader: its key and nothing else.
    let loader = loader_url(&node, &creds);
    let mut c = connect(&loader).expect("loader connects");
    redis::cmd("SET")
        .arg("skylark:topology")
        .arg("{}")
        .query::<()>(&mut c)
        .expect("the loader sets the topology key");
    let read = redis::cmd("HGETALL")
        .arg(format!("skylark:bundle:{chain}"))
        .query::<redis::Value>(&mut c);
    assert_no_permission(&read, "the loader read a bundle");
    for words in [
        &["FLUSHALL"][..],
        &["CONFIG", "GET", "maxmemory-policy"],
        &["REPLICAOF", "NO", "ONE"],
        &["ACL", "LIST"],
    ] {
        let mut cmd = redis::cmd(words[0]);
        cmd.arg(&words[1..]);
        let r = cmd.query::<redis::Value>(&mut c);
        assert_no_permission(&r, &format!("the loader ran {words:?}"));
    }
    let loader_pw = tmp.path().join("loader-password");
    std::fs::write(&loader_pw, creds.read("loader-password")).expect("write");
    let (r, v) = run(
        probe(&node, "skylark", "skylark-loader", &loader_pw),
        &["get", &chain],
    );
    assert_eq!(v["status"], STORE_ERROR, "{v}\n{}", r.stderr);
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("access refused"),
        "{v}"
    );

    // The pod's readiness probe and the topology loader, as the manifest writes them.
    let volumes = tmp.path().join("volumes");
    let mounts: BTreeMap<String, String> =
        serde_json::from_value(spec["mounts"].clone()).expect("mounts");
    let probe_cmd: Vec<String> = serde_json::from_value(spec["probe"].clone()).expect("probe");
    let mut readiness = Command::new(&probe_cmd[0]);
    readiness.args(
        probe_cmd[1..]
            .iter()
            .map(|a| map_paths(a, &mounts, &volumes)),
    );
    for (k, v) in spec["env"].as_object().expect("env") {
        readiness.env(
            k,
            map_paths(v.as_str().unwrap_or_default(), &mounts, &volumes),
        );
    }
    let status = readiness.status().expect("run the readiness probe");
    assert!(status.success(), "readiness probe failed: {status}");
    assert_loader_sets_the_topology(&spec["loader"], &volumes, &node, &creds);

    // Another tenant claiming this namespace: its ACL user stops it.
    let (r, v) = run(
        probe(
            &node,
            "skylark",
            "tenant-tenant-b",
            &creds.password_file("tenant-b"),
        ),
        &["get", &chain],
    );
    assert_eq!(v["status"], STORE_ERROR, "{v}\n{}", r.stderr);
    let (r, v) = run(
        probe(
            &node,
            "skylark",
            "tenant-tenant-b",
            &creds.password_file("tenant-b"),
        ),
        &["put", &chain, "evil", "16", "1"],
    );
    assert_eq!(v["status"], STORE_ERROR, "{v}\n{}", r.stderr);
    // In its own namespace it works.
    let (r, v) = run(
        probe(
            &node,
            "tenant-b",
            "tenant-tenant-b",
            &creds.password_file("tenant-b"),
        ),
        &["put", &chain, "own", "16", "1"],
    );
    assert_eq!(v["status"], 0, "{v}\n{}", r.stderr);
}

/// Asserts that Redis refused the command for lack of permission (`NOPERM`).
fn assert_no_permission(r: &redis::RedisResult<redis::Value>, what: &str) {
    let text = format!("{r:?}").to_lowercase();
    assert!(text.contains("noperm"), "{what}: {r:?}");
}

/// Runs the topology loader's script (paths mapped like the server's) until the key
/// `skylark:topology` holds the topology file, read back as the tenant; then kills it.
fn assert_loader_sets_the_topology(
    loader: &Value,
    volumes: &Path,
    node: &NodeRedis,
    creds: &Credentials,
) {
    let mounts: BTreeMap<String, String> =
        serde_json::from_value(loader["mounts"].clone()).expect("loader mounts");
    for volume in mounts.keys() {
        std::fs::create_dir_all(volumes.join(volume)).expect("volume dir");
    }
    let topology = r#"{"nodes": [{"name": "a", "type": "Cloud"}]}"#;
    std::fs::write(volumes.join("topology").join("topology.json"), topology)
        .expect("topology file");
    let words: Vec<String> = serde_json::from_value(loader["command"].clone()).expect("command");
    let mut cmd = Command::new(&words[0]);
    cmd.args(words[1..].iter().map(|a| map_paths(a, &mounts, volumes)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    for (k, v) in loader["env"].as_object().expect("loader env") {
        cmd.env(k, v.as_str().unwrap_or_default());
    }
    let mut child = cmd.spawn().expect("start the loader script");
    let tenant = format!(
        "redis://tenant-skylark:{}@127.0.0.1:{}",
        creds.read("skylark/password"),
        node.port
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let loaded = loop {
        let got = connect(&tenant).and_then(|mut c| {
            redis::cmd("GET")
                .arg("skylark:topology")
                .query::<Option<String>>(&mut c)
        });
        if let Ok(Some(text)) = &got {
            if text.trim_end() == topology {
                break true;
            }
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The script and its `sleep` child: the whole process group.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
    assert!(loaded, "the loader never set skylark:topology");
}
