//! Redis AUTH, ACL users and TLS end to end: real `wasmedge` running the probe guest with
//! the real plugin against real redis-servers configured with `requirepass`, ACL users
//! limited to the plugin's keys and commands, and TLS-only ports requiring client
//! certificates (made with `openssl` in the test). Secrets must never reach the guest's
//! error messages or the plugin's log.

use serde_json::Value;
use skylark_netemu::linkemu::{LinkEmu, LinkSpec};
use skylark_testkit::secure::{node_acl, peer_acl, Pki, SecureRedis, Setup};
use skylark_testkit::{chain_id, eventually, Guest, GuestRun, RUN_TIMEOUT};
use std::path::Path;
use std::time::{Duration, Instant};

/// Status codes of the ABI (ABI.md).
const STORE_UNAVAILABLE: i64 = 20;
const STORE_ERROR: i64 = 22;
const CONDITION_FAILED: i64 = 24;
const CONFIG_INVALID: i64 = 30;

const ADMIN_PW: &str = "AdminPw7f3a";
const NODE_PW: &str = "NodePw19c2e";
const TENANT_PW: &str = "TenantPw5d81";

fn bundle_key(chain: &str) -> String {
    format!("skylark:bundle:{chain}")
}

/// A probe run on `url` with the plugin logging everything, so that the log can be
/// searched for secrets too.
fn probe(url: &str, env: &[(&str, &str)]) -> Guest {
    let mut g = Guest::new("probe", url).env("SKYLARK_LOG", "trace");
    for (k, v) in env {
        g = g.env(k, v);
    }
    g
}

fn run(g: Guest, args: &[&str]) -> (GuestRun, Value) {
    let run = g.args(args).run(RUN_TIMEOUT);
    run.assert_success();
    let json = run.json();
    (run, json)
}

fn assert_ok(run: &GuestRun, v: &Value) {
    assert_eq!(
        v["status"], 0,
        "expected success: {v}\nstderr:\n{}",
        run.stderr
    );
}

/// Asserts a failure with `status` whose message contains every one of `needles`, and
/// that none of `secrets` appears in the message or the plugin's log.
fn assert_fails(run: &GuestRun, v: &Value, status: i64, needles: &[&str], secrets: &[&str]) {
    let message = v["error"].as_str().unwrap_or_default();
    eprintln!("refused as expected: {message}");
    assert_eq!(v["status"], status, "{v}\nstderr:\n{}", run.stderr);
    for n in needles {
        assert!(message.contains(n), "{n:?} not in {message:?}");
    }
    for s in secrets {
        assert!(!message.contains(s), "secret in the error: {message}");
        assert!(
            !run.stderr.contains(s) && !run.stdout.contains(s),
            "secret in the output: {}\n{}",
            run.stdout,
            run.stderr
        );
    }
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write test file");
    path.to_string_lossy().into_owned()
}

#[test]
fn requirepass_from_variable_or_file_and_clear_refusals() {
    let r = SecureRedis::start(&Setup {
        password: Some(ADMIN_PW),
        ..Setup::default()
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let chain = chain_id("pw");

    // The password from the environment.
    let env = [("SKYLARK_REDIS_PASSWORD", ADMIN_PW)];
    let (g, v) = run(probe(&r.url(), &env), &["put", &chain, "pre", "512", "3"]);
    assert_ok(&g, &v);
    let fnv = v["fnv"].clone();
    assert_eq!(r.state(&bundle_key(&chain)).len(), 1);

    // From a file with a trailing newline, as `echo pw > file` writes it.
    let file = write(dir.path(), "password", &format!("{ADMIN_PW}\n"));
    let env = [("SKYLARK_REDIS_PASSWORD_FILE", file.as_str())];
    let (g, v) = run(probe(&r.url(), &env), &["get", &chain]);
    assert_ok(&g, &v);
    assert_eq!(v["fields"]["pre"]["fnv"], fnv);
    assert_eq!(v["tier"], "local");

    // A password in the URL wins over the variables.
    let url = format!("redis://:{ADMIN_PW}@127.0.0.1:{}", r.port);
    let env = [("SKYLARK_REDIS_PASSWORD", "WrongPw0000")];
    let (g, v) = run(probe(&url, &env), &["get", &chain]);
    assert_ok(&g, &v);
    assert!(
        !g.stderr.contains(ADMIN_PW),
        "password in the log: {}",
        g.stderr
    );

    // A wrong password: refused, and the message says where the credentials came from.
    let env = [("SKYLARK_REDIS_PASSWORD", "WrongPw1234")];
    let (g, v) = run(probe(&r.url(), &env), &["put", &chain, "pre", "16", "1"]);
    assert_fails(
        &g,
        &v,
        STORE_ERROR,
        &[
            "access refused",
            "authentication failed",
            "SKYLARK_REDIS_PASSWORD",
        ],
        &["WrongPw1234", ADMIN_PW],
    );

    // No password at all: the server's NOAUTH, and the hint that none is configured.
    let (g, v) = run(probe(&r.url(), &[]), &["get", &chain]);
    assert_fails(
        &g,
        &v,
        STORE_ERROR,
        &["access refused", "NOAUTH", "none configured"],
        &[ADMIN_PW],
    );

    // A password file that cannot be read: a configuration error naming the variable.
    let missing = dir.path().join("absent").to_string_lossy().into_owned();
    let env = [("SKYLARK_REDIS_PASSWORD_FILE", missing.as_str())];
    let (g, v) = run(probe(&r.url(), &env), &["get", &chain]);
    assert_fails(
        &g,
        &v,
        CONFIG_INVALID,
        &["SKYLARK_REDIS_PASSWORD_FILE", "cannot read"],
        &[ADMIN_PW],
    );

    // The refused attempts changed nothing.
    assert_eq!(r.state(&bundle_key(&chain)).len(), 1);
}

#[test]
fn acl_users_with_the_documented_minimal_permissions() {
    // Two edge nodes whose stores let user `skylark` do what a plugin does on its own
    // store (and what the other node's plugin does there), and a global store run by
    // another operator with a tenant user that may only touch bundles.
    let s = DocumentedAcls::start(None);
    let (a, b, global) = (&s.a, &s.b, &s.global);
    let env = |node: &'static str| s.env(node);
    let guest = |url: &str, env: &[(&'static str, String)]| {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        probe(url, &pairs)
    };
    let secrets = [NODE_PW, TENANT_PW, ADMIN_PW];

    // A put on edge-a for a successor on edge-b: the bundle, its outbox job and counters
    // on a, copies on b and on the global store (by the exit flush, before the process
    // ends).
    let chain = chain_id("acl");
    let key = bundle_key(&chain);
    let (g, v) = run(
        guest(&a.url(), &env("edge-a")),
        &["put", &chain, "pre", "2048", "5", "--dest", "edge-b"],
    );
    assert_ok(&g, &v);
    let fnv = v["fnv"].clone();
    for s in secrets {
        assert!(!g.stderr.contains(s), "secret in the log: {}", g.stderr);
    }
    assert!(a.hgetall(&key).contains_key("pre"));
    for (name, r) in [("edge-b", b), ("global", global)] {
        assert!(
            r.hgetall(&key).contains_key("pre"),
            "no copy on {name}; plugin log:\n{}",
            g.stderr
        );
    }

    // On edge-b the successor finds the state locally.
    let (g, v) = run(guest(&b.url(), &env("edge-b")), &["get", &chain]);
    assert_ok(&g, &v);
    assert_eq!(
        (v["tier"].as_str(), &v["fields"]["pre"]["fnv"]),
        (Some("local"), &fnv)
    );

    // With the copies on a and b gone, a get on b asks its neighbour a, then reads the
    // global store and keeps a local copy.
    a.del(&key);
    b.del(&key);
    let (g, v) = run(guest(&b.url(), &env("edge-b")), &["get", &chain]);
    assert_ok(&g, &v);
    assert_eq!(v["tier"], "global", "{v}");
    assert_eq!(v["fields"]["pre"]["fnv"], fnv);
    assert!(b.hgetall(&key).contains_key("pre"));

    // Waiting for state subscribes to the chain's arrivals: on the node store under the
    // node user, and (policy stateless) on the global store under the tenant user.
    for policy in ["skylark", "stateless"] {
        let (g, v) = run(
            guest(&b.url(), &env("edge-b")),
            &["wait", &chain, "--wait-for", "pre", "--policy", policy],
        );
        assert_eq!(v["status"], 0, "{v}\n{}", g.stderr);
        assert_eq!(v["fields"]["pre"]["fnv"], fnv, "{v}");
    }

    // Everything above stayed inside the ACLs.
    s.assert_nothing_refused();

    // A namespace outside the ACL: NOPERM, reported clearly, with no secret.
    let mut other = env("edge-a");
    other.push(("SKYLARK_NAMESPACE", "other".to_string()));
    let (g, v) = run(
        guest(&a.url(), &other),
        &["put", &chain_id("noperm"), "pre", "16", "1"],
    );
    assert_fails(
        &g,
        &v,
        STORE_ERROR,
        &["access refused", "no permissions", "SKYLARK_REDIS_USERNAME"],
        &secrets,
    );
    assert!(!a.take_acl_log().is_empty(), "the refusal is in ACL LOG");

    // The tenant's password for the node user: refused, naming the variables.
    let mut wrong = env("edge-a");
    wrong.retain(|(k, _)| *k != "SKYLARK_REDIS_PASSWORD_FILE");
    wrong.push(("SKYLARK_REDIS_PASSWORD", TENANT_PW.to_string()));
    let (g, v) = run(guest(&a.url(), &wrong), &["get", &chain]);
    assert_fails(
        &g,
        &v,
        STORE_ERROR,
        &[
            "access refused",
            "SKYLARK_REDIS_USERNAME, SKYLARK_REDIS_PASSWORD",
        ],
        &secrets,
    );
}

/// Two edge nodes' stores (edge-a, edge-b) under README.md's node user and a global
/// store under its tenant user, with edge-b reached through `link` when given (a link
/// emulator in front of it), and the plugin's environment for a node.
struct DocumentedAcls {
    a: SecureRedis,
    b: SecureRedis,
    global: SecureRedis,
    _link: Option<LinkEmu>,
    _dir: tempfile::TempDir,
    topology: String,
    node_pw: String,
    tenant_pw: String,
}

impl DocumentedAcls {
    fn start(link: Option<LinkSpec>) -> DocumentedAcls {
        let node_user = format!("skylark on >{NODE_PW} {}", node_acl("skylark"));
        let tenant_user = format!("tenant on >{TENANT_PW} {}", peer_acl("skylark"));
        let store = |user: &String| {
            SecureRedis::start(&Setup {
                password: Some(ADMIN_PW),
                users: std::slice::from_ref(user),
                tls: None,
            })
        };
        let (a, b, global) = (store(&node_user), store(&node_user), store(&tenant_user));
        let link = link.map(|spec| {
            let upstream = ([127, 0, 0, 1], b.port).into();
            LinkEmu::start(upstream, spec).expect("start the link emulator")
        });
        let b_url = link.as_ref().map_or_else(|| b.url(), LinkEmu::url);
        let dir = tempfile::tempdir().expect("temp dir");
        let topology = write(
            dir.path(),
            "topology.json",
            &format!(
                r#"{{"global": "cloud",
                    "nodes": [{{"name": "edge-a", "type": "Edge", "redis": "{}"}},
                              {{"name": "edge-b", "type": "Edge", "redis": "{b_url}"}},
                              {{"name": "cloud", "type": "Cloud"}}],
                    "links": [{{"source": "edge-a", "target": "edge-b",
                                "latency_ms": 5, "bandwidth_mbps": 100}}]}}"#,
                a.url()
            ),
        );
        DocumentedAcls {
            // With a trailing newline, as a file written by an editor has: read trimmed.
            node_pw: write(dir.path(), "node-password", &format!("{NODE_PW}\n")),
            tenant_pw: write(dir.path(), "tenant-password", TENANT_PW),
            a,
            b,
            global,
            _link: link,
            _dir: dir,
            topology,
        }
    }

    /// The plugin's environment on `node` (edge-a or edge-b): the node user on its store,
    /// the tenant user on the global store, each password from its file.
    fn env(&self, node: &'static str) -> Vec<(&'static str, String)> {
        vec![
            ("SKYLARK_NODE_NAME", node.to_string()),
            ("SKYLARK_TOPOLOGY_FILE", self.topology.clone()),
            ("SKYLARK_REDIS_USERNAME", "skylark".to_string()),
            ("SKYLARK_REDIS_PASSWORD_FILE", self.node_pw.clone()),
            ("SKYLARK_GLOBAL_URL", self.global.url()),
            ("SKYLARK_GLOBAL_USERNAME", "tenant".to_string()),
            ("SKYLARK_GLOBAL_PASSWORD_FILE", self.tenant_pw.clone()),
        ]
    }

    /// A probe on edge-a (`extra`: more environment).
    fn probe_a(&self, extra: &[(&str, &str)]) -> Guest {
        let env = self.env("edge-a");
        let mut pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        pairs.extend_from_slice(extra);
        probe(&self.a.url(), &pairs)
    }

    /// Asserts that no store refused a command (`ACL LOG` is empty everywhere).
    fn assert_nothing_refused(&self) {
        for (name, r) in [
            ("edge-a", &self.a),
            ("edge-b", &self.b),
            ("global", &self.global),
        ] {
            let refused = r.take_acl_log();
            assert!(refused.is_empty(), "{name} refused: {refused:?}");
        }
    }
}

#[test]
fn a_lease_is_renewed_under_the_documented_acls() {
    // edge-b behind a slow link: the 1 MB copy takes about 4 s, well over the 1.5 s lease,
    // which the producer renews every 0.5 s (`outbox::renew`: once a script calling ZSCORE,
    // which the ACL did not grant; now a `ZADD XX GT`).
    // A renewal the ACL refuses lets the lease run out: the other processes on edge-a
    // then claim the job and send it again.
    let s = DocumentedAcls::start(Some(LinkSpec::new(20.0, 0.0, Some(2.0))));
    let lease = [("SKYLARK_LEASE_MS", "1500"), ("SKYLARK_COPY_MIN_MBPS", "1")];
    let chain = chain_id("acl-lease");
    let key = bundle_key(&chain);
    let producer = s
        .probe_a(&[lease[0], lease[1], ("SKYLARK_EXIT_FLUSH_MS", "20000")])
        .args(["put", &chain, "pre", "1000000", "7", "--dest", "edge-b"])
        .spawn();
    let outbox_len = || -> usize {
        redis::cmd("ZCARD")
            .arg("skylark:outbox")
            .query(&mut s.a.admin())
            .expect("ZCARD")
    };
    eventually(
        "the put is stored with its outbox job",
        Duration::from_secs(30),
        || s.a.hgetall(&key).contains_key("pre") && outbox_len() == 1,
    );
    std::thread::sleep(Duration::from_millis(2000));
    let until = Instant::now() + Duration::from_millis(1500);
    let mut others = 0;
    while Instant::now() < until && outbox_len() == 1 {
        let (g, v) = run(
            s.probe_a(&lease),
            &["get", &chain_id("acl-other"), "--local-only"],
        );
        assert_eq!(v["status"], 1, "{v}\n{}", g.stderr);
        others += 1;
    }
    let g = producer.wait(RUN_TIMEOUT);
    g.assert_success();
    assert_ok(&g, &g.json());
    assert!(
        others >= 1,
        "no other process ran while the copy was on its way"
    );
    s.assert_nothing_refused();
    let stats = s.a.hgetall("skylark:stats:edge-a");
    assert_eq!(
        stats.get("resumed"),
        None,
        "another process claimed the job while the producer still copied it ({others} ran)"
    );
    assert_eq!(
        outbox_len(),
        0,
        "the producer finished its job:\n{}",
        g.stderr
    );
    assert!(s.b.hgetall(&key).contains_key("pre"), "the copy on edge-b");
}

#[test]
fn a_put_if_absent_under_the_documented_acls() {
    // On the node-local store (the outbox's guarded put, as the node user) and on the
    // global store (policy stateless: the versions script, as the tenant user), the
    // condition checks each field with HEXISTS.
    let s = DocumentedAcls::start(None);
    for policy in ["skylark", "stateless"] {
        let chain = chain_id("acl-absent");
        let put = |seed: &str| {
            run(
                s.probe_a(&[]),
                &[
                    "put",
                    &chain,
                    "t",
                    "300",
                    seed,
                    "--v2",
                    "--if-absent",
                    "--policy",
                    policy,
                ],
            )
        };
        let (g, v) = put("1");
        assert_ok(&g, &v);
        let (g, v) = put("2");
        assert_eq!(v["status"], CONDITION_FAILED, "{policy}: {v}\n{}", g.stderr);
        s.assert_nothing_refused();
    }
}

#[test]
fn users_without_evalsha_get_the_scripts_text() {
    // The minimal ACLs before scripts went by digest (no `+evalsha`) and before large
    // bundles were read with `WATCH` (no `+watch`, `+unwatch`): every put, read and copy
    // still works; the plugin sends the scripts' text after one refusal per store, and
    // reads a large bundle through the script after a refused `WATCH`.
    let without = |rules: String| {
        rules
            .replace(" +evalsha", "")
            .replace(" +watch", "")
            .replace(" +unwatch", "")
    };
    let node_user = format!("skylark on >{NODE_PW} {}", without(node_acl("skylark")));
    let tenant_user = format!("tenant on >{TENANT_PW} {}", without(peer_acl("skylark")));
    assert!(!node_user.contains("evalsha") && !tenant_user.contains("evalsha"));
    assert!(!node_user.contains("watch"));
    let a = SecureRedis::start(&Setup {
        password: Some(ADMIN_PW),
        users: std::slice::from_ref(&node_user),
        tls: None,
    });
    let global = SecureRedis::start(&Setup {
        password: Some(ADMIN_PW),
        users: std::slice::from_ref(&tenant_user),
        tls: None,
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let node_pw = write(dir.path(), "node-password", NODE_PW);
    let tenant_pw = write(dir.path(), "tenant-password", TENANT_PW);
    let global_url = global.url();
    let env = [
        ("SKYLARK_NODE_NAME", "edge-a"),
        ("SKYLARK_REDIS_USERNAME", "skylark"),
        ("SKYLARK_REDIS_PASSWORD_FILE", node_pw.as_str()),
        ("SKYLARK_GLOBAL_URL", global_url.as_str()),
        ("SKYLARK_GLOBAL_USERNAME", "tenant"),
        ("SKYLARK_GLOBAL_PASSWORD_FILE", tenant_pw.as_str()),
    ];
    let chain = chain_id("noevalsha");
    let key = bundle_key(&chain);
    for (size, puts) in [("1024", "20"), ("70000", "3")] {
        let (g, v) = run(
            probe(&a.url(), &env),
            &["bench", "put", &chain, size, "1", puts],
        );
        assert_ok(&g, &v);
    }
    let (g, v) = run(probe(&a.url(), &env), &["get", &chain]);
    assert_ok(&g, &v);
    assert_eq!(v["tier"], "local", "{v}");
    assert!(g.stderr.contains("may not run EVALSHA"), "{}", g.stderr);
    assert!(a.hgetall(&key).contains_key("f0"));
    assert!(
        global.hgetall(&key).contains_key("f0"),
        "no copy on the global store; plugin log:\n{}",
        g.stderr
    );
    // Refused only EVALSHA, once per store and process, and the node-local store the
    // WATCH of the one large read.
    for (name, r, most) in [("edge-a", &a, 4), ("global", &global, 3)] {
        let refused = r.take_acl_log();
        assert!(
            refused
                .iter()
                .all(|e| e.contains("evalsha") || e.contains("watch")),
            "{name} refused: {refused:?}"
        );
        assert!(
            !refused.is_empty() && refused.len() <= most,
            "{name}: {refused:?}"
        );
    }
}

#[test]
fn users_with_the_acl_before_quotas_put_under_a_quota() {
    // The minimal ACLs before put-time limits and quotas (issue 16 point 3: no
    // `+memory|usage`, no `+pttl`): puts under a quota, small (one script) and large (a
    // transaction), still store, refuse and count; the quota forgets an expired bundle
    // through the field list instead of `PTTL`. The only refusals are those two commands,
    // inside the scripts (`pcall`): before, a refused `PTTL` failed the put.
    let node_user = format!(
        "skylark on >{NODE_PW} {}",
        node_acl("skylark")
            .replace(" +memory|usage", "")
            .replace(" +pttl", "")
    );
    let a = SecureRedis::start(&Setup {
        password: Some(ADMIN_PW),
        users: std::slice::from_ref(&node_user),
        tls: None,
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let node_pw = write(dir.path(), "node-password", NODE_PW);
    let global = skylark_testkit::Redis::start();
    let env = || -> Vec<(&str, &str)> {
        vec![
            ("SKYLARK_NODE_NAME", "edge-a"),
            ("SKYLARK_REDIS_USERNAME", "skylark"),
            ("SKYLARK_REDIS_PASSWORD_FILE", node_pw.as_str()),
            ("SKYLARK_GLOBAL_URL", global.url.as_str()),
            ("SKYLARK_NAMESPACE_MAX_BYTES", "200000"),
        ]
    };
    let chain = chain_id("prequota");
    for (size, puts) in [("1024", "20"), ("70000", "1")] {
        let (g, v) = run(
            probe(&a.url(), &env()),
            &["bench", "put", &chain, size, "1", puts],
        );
        assert_ok(&g, &v);
    }
    let over = chain_id("overquota");
    let (g, v) = run(probe(&a.url(), &env()), &["put", &over, "t", "150000", "1"]);
    assert_fails(&g, &v, 19, &["SKYLARK_NAMESPACE_MAX_BYTES"], &[NODE_PW]);
    // A bundle that is gone (deleted here, as a clean-up does) is forgotten by the next
    // put once it is due to be looked at again (made due now here, not in a minute).
    let brief = chain_id("brief");
    let put = |chain: &str| {
        let (g, v) = run(probe(&a.url(), &env()), &["put", chain, "t2", "1024", "1"]);
        assert_ok(&g, &v);
    };
    put(&brief);
    let counted = |chain: &str| -> bool {
        let usage = a.hgetall("skylark:usage");
        usage.contains_key(&bundle_key(chain))
    };
    assert!(counted(&brief));
    a.del(&bundle_key(&brief));
    redis::cmd("ZADD")
        .arg("skylark:usage:expiry")
        .arg(0)
        .arg(bundle_key(&brief))
        .query::<()>(&mut a.admin())
        .expect("ZADD");
    put(&chain);
    assert!(!counted(&brief), "the expired bundle still counts");
    assert!(counted(&chain));
    let refused = a.take_acl_log();
    assert!(
        refused
            .iter()
            .all(|e| e.contains("memory") || e.contains("pttl")),
        "refused: {refused:?}"
    );
    assert!(refused.iter().any(|e| e.contains("pttl")), "{refused:?}");
}

#[test]
fn readme_documents_the_tested_acls() {
    let readme =
        std::fs::read_to_string(skylark_testkit::root().join("README.md")).expect("read README.md");
    for (user, rules) in [
        ("skylark", node_acl("skylark")),
        ("tenant", peer_acl("skylark")),
    ] {
        let line = format!("ACL SETUSER {user} on >PASSWORD {rules}");
        assert!(readme.contains(&line), "README.md lacks\n{line}");
    }
}

/// A topology in which edge-a links to sat-b, known only by its IP (reached at
/// `SKYLARK_REMOTE_PORT`, over TLS with `SKYLARK_REMOTE_TLS`), and the cloud node is the
/// global store (at `SKYLARK_GLOBAL_URL`).
const TLS_TOPOLOGY: &str = r#"{"global": "cloud",
  "nodes": [{"name": "edge-a", "type": "Edge"},
            {"name": "sat-b", "type": "Sat", "ip": "127.0.0.1"},
            {"name": "cloud", "type": "Cloud"}],
  "links": [{"source": "edge-a", "target": "sat-b", "latency_ms": 5, "bandwidth_mbps": 100}]}"#;

#[test]
fn tls_only_stores_with_client_certificates() {
    let pki = Pki::new();
    let tls = Setup {
        tls: Some(&pki),
        ..Setup::default()
    };
    let (a, b, global) = (
        SecureRedis::start(&tls),
        SecureRedis::start(&tls),
        SecureRedis::start(&tls),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let topology = write(dir.path(), "topology.json", TLS_TOPOLOGY);
    let (b_port, global_url) = (b.port.to_string(), global.url_at("localhost"));
    let tls_env = pki.plugin_env();
    let guest = |extra: &[(&str, &str)]| {
        let mut g = probe(&a.url(), &[])
            .env("SKYLARK_NODE_NAME", "edge-a")
            .env("SKYLARK_TOPOLOGY_FILE", &topology)
            .env("SKYLARK_REMOTE_TLS", "on")
            .env("SKYLARK_REMOTE_PORT", &b_port)
            .env("SKYLARK_GLOBAL_URL", &global_url);
        for (k, v) in &tls_env {
            g = g.env(k, v);
        }
        for (k, v) in extra {
            g = g.env(k, v);
        }
        g
    };
    assert!(a.url().starts_with("rediss://"), "{}", a.url());

    // The put reaches the local store, the elected sat-b and the global store, all over
    // TLS, before the process exits.
    let chain = chain_id("tls");
    let key = bundle_key(&chain);
    let (g, v) = run(
        guest(&[]),
        &["put", &chain, "pre", "4096", "9", "--dest", "sat-b"],
    );
    assert_ok(&g, &v);
    let fnv = v["fnv"].clone();
    assert!(a.hgetall(&key).contains_key("pre"));
    assert!(
        b.hgetall(&key).contains_key("pre"),
        "no copy on sat-b; plugin log:\n{}",
        g.stderr
    );
    assert_eq!(
        b.hgetall(&key).get("@at:pre").map(|n| n.as_slice()),
        Some(&b"sat-b"[..])
    );
    assert!(
        global.hgetall(&key).contains_key("pre"),
        "no global copy; plugin log:\n{}",
        g.stderr
    );

    // Reads back: locally, then (local copy gone) from the neighbour, then (that gone
    // too) from the global store.
    let (g, v) = run(guest(&[]), &["get", &chain]);
    assert_ok(&g, &v);
    assert_eq!(
        (v["tier"].as_str(), &v["fields"]["pre"]["fnv"]),
        (Some("local"), &fnv)
    );
    a.del(&key);
    let (g, v) = run(guest(&[]), &["get", &chain]);
    assert_ok(&g, &v);
    assert_eq!(
        (v["tier"].as_str(), v["node"].as_str()),
        (Some("neighbour"), Some("sat-b"))
    );
    assert_eq!(v["fields"]["pre"]["fnv"], fnv);
    a.del(&key);
    b.del(&key);
    let (g, v) = run(guest(&[]), &["get", &chain]);
    assert_ok(&g, &v);
    assert_eq!(v["tier"], "global", "{v}");
    assert_eq!(v["fields"]["pre"]["fnv"], fnv);

    // A CA that did not sign the servers' certificates: refused, saying why.
    let other_ca = pki.other_ca().to_string_lossy().into_owned();
    let (g, v) = run(
        guest(&[("SKYLARK_TLS_CA_FILE", &other_ca)]),
        &["get", &chain],
    );
    assert_fails(
        &g,
        &v,
        STORE_UNAVAILABLE,
        &["connecting", "certificate", "SKYLARK_TLS_CA_FILE"],
        &[],
    );

    // Without a client certificate the servers refuse the connection.
    let (g, v) = run(
        probe(&a.url(), &[])
            .env("SKYLARK_NODE_NAME", "edge-a")
            .env("SKYLARK_TLS_CA_FILE", &pki.ca().to_string_lossy()),
        &["get", &chain],
    );
    assert_fails(
        &g,
        &v,
        STORE_UNAVAILABLE,
        &["CertificateRequired", "SKYLARK_TLS_CERT_FILE"],
        &[],
    );
}
