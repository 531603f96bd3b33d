//! The `<ns>:topology` key cannot decide where state and credentials go (issue 16 points
//! 2 and 6): whoever can write that key on a node's Redis may change links and slots, but
//! every store address comes from the operator (`SKYLARK_NODE_ADDRS`, the topology file,
//! `SKYLARK_NODE_ADDR_TEMPLATE`), the key may not move the global node, and
//! `SKYLARK_TOPOLOGY_KEY=off` ignores it. Real guests under real wasmedge with the plugin,
//! real redis-servers: an "attacker" redis-server that the hostile key points every node
//! at receives not one connection.

use serde_json::Value;
use skylark_testkit::secure::{SecureRedis, Setup};
use skylark_testkit::{chain_id, Events, Guest, GuestRun, Redis, NS, RUN_TIMEOUT};
use std::time::Duration;

const NODE_PW: &str = "node-secret-pw";
const CLOUD_PW: &str = "cloud-secret-pw";

/// edge-a (this node), its neighbour edge-b and the cloud node, and an attacker's server.
struct Net {
    a: SecureRedis,
    b: SecureRedis,
    cloud: SecureRedis,
    attacker: Redis,
    _dir: tempfile::TempDir,
    topology: String,
}

impl Net {
    fn start() -> Net {
        let node = Setup {
            password: Some(NODE_PW),
            ..Setup::default()
        };
        let (a, b) = (SecureRedis::start(&node), SecureRedis::start(&node));
        let cloud = SecureRedis::start(&Setup {
            password: Some(CLOUD_PW),
            ..Setup::default()
        });
        let attacker = Redis::start();
        let dir = tempfile::tempdir().expect("temp dir");
        let topology = dir.path().join("topology.json");
        std::fs::write(
            &topology,
            format!(
                r#"{{"global": "cloud",
                    "nodes": [{{"name": "edge-a", "type": "Edge"}},
                              {{"name": "edge-b", "type": "Edge", "redis": "{}"}},
                              {{"name": "cloud", "type": "Cloud", "redis": "{}"}}],
                    "links": [{{"source": "edge-a", "target": "edge-b", "latency_ms": 5, "bandwidth_mbps": 100}},
                              {{"source": "edge-a", "target": "cloud", "latency_ms": 40, "bandwidth_mbps": 30}}]}}"#,
                b.url(),
                cloud.url()
            ),
        )
        .expect("write the topology file");
        let topology = topology.to_string_lossy().into_owned();
        Net {
            a,
            b,
            cloud,
            attacker,
            _dir: dir,
            topology,
        }
    }

    /// The probe guest on edge-a, with the node-wide and the global password.
    fn probe(&self, extra: &[(&str, &str)], args: &[&str]) -> (GuestRun, Value) {
        let mut g = Guest::new("probe", &self.a.url())
            .env("SKYLARK_LOG", "info")
            .env("SKYLARK_NODE_NAME", "edge-a")
            .env("SKYLARK_TOPOLOGY_FILE", &self.topology)
            .env("SKYLARK_REDIS_PASSWORD", NODE_PW)
            .env("SKYLARK_GLOBAL_PASSWORD", CLOUD_PW);
        for (k, v) in extra {
            g = g.env(k, v);
        }
        let run = g.args(args).run(RUN_TIMEOUT);
        run.assert_success();
        let json = run.json();
        (run, json)
    }

    fn set_key(&self, doc: &str) {
        let _: () = redis::cmd("SET")
            .arg(format!("{NS}:topology"))
            .arg(doc)
            .query(&mut self.a.admin())
            .expect("SET the topology key");
    }

    /// A hostile document: every node, and a new one, at the attacker's server (with
    /// a password in the URL, as a lure), links to all of them.
    fn hostile(&self, global: &str) -> String {
        let evil = format!("redis://:lure@127.0.0.1:{}", self.attacker.port);
        format!(
            r#"{{"global": "{global}",
                "nodes": [{{"name": "edge-a", "type": "Edge", "redis": "{evil}"}},
                          {{"name": "edge-b", "type": "Edge", "redis": "{evil}"}},
                          {{"name": "cloud", "type": "Cloud", "redis": "{evil}"}},
                          {{"name": "evil", "type": "Edge", "ip": "127.0.0.1", "redis": "{evil}"}}],
                "links": [{{"source": "edge-a", "target": "edge-b", "latency_ms": 5, "bandwidth_mbps": 100}},
                          {{"source": "edge-a", "target": "evil", "latency_ms": 1, "bandwidth_mbps": 1000}},
                          {{"source": "edge-a", "target": "cloud", "latency_ms": 40, "bandwidth_mbps": 30}}]}}"#
        )
    }

    /// Connections the attacker's server has accepted, not counting this check's own.
    fn attacker_connections(&self) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query(&mut self.attacker.conn())
            .expect("INFO stats");
        let n: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("total_connections_received");
        n
    }
}

fn assert_ok(run: &GuestRun, v: &Value) {
    assert_eq!(v["status"], 0, "{v}\nstderr:\n{}", run.stderr);
}

fn bundle_key(chain: &str) -> String {
    format!("{NS}:bundle:{chain}")
}

#[test]
fn a_hostile_topology_key_cannot_redirect_state_or_credentials() {
    let net = Net::start();
    let before = net.attacker_connections();
    net.set_key(&net.hostile("cloud"));

    // The key's links are in force (the put elects over them), its addresses are not:
    // the copies go to edge-b and the cloud node where the operator's file says.
    let chain = chain_id("hostile");
    let (run, v) = net.probe(
        &[],
        &["put", &chain, "pre", "2048", "3", "--dest", "edge-b"],
    );
    assert_ok(&run, &v);
    assert!(
        run.stderr.contains("from Key"),
        "the key's topology is in force:\n{}",
        run.stderr
    );
    for (name, store) in [("edge-b", &net.b), ("cloud", &net.cloud)] {
        assert!(
            store.hgetall(&bundle_key(&chain)).contains_key("pre"),
            "no copy on {name}:\n{}",
            run.stderr
        );
    }
    // A node only the key knows has no address: a get told to ask it skips it.
    let (run, v) = net.probe(
        &[("SKYLARK_INCOMING_WAIT_MS", "0")],
        &["get", &chain_id("absent"), "--from", "evil"],
    );
    assert_eq!(v["status"], 1, "{v}\n{}", run.stderr);
    // A put that elects the key's node (its 1 ms link) cannot place state there.
    let chain2 = chain_id("evil-dest");
    let (run, v) = net.probe(&[], &["put", &chain2, "pre", "64", "4", "--dest", "evil"]);
    assert_ok(&run, &v);
    assert!(net.cloud.hgetall(&bundle_key(&chain2)).contains_key("pre"));
    for secret in [NODE_PW, CLOUD_PW, "lure"] {
        assert!(
            !run.stderr.contains(secret),
            "{secret} in the log:\n{}",
            run.stderr
        );
    }
    assert_eq!(
        net.attacker_connections(),
        before + 1,
        "the attacker's server was contacted (only this check's connection may count)"
    );
}

#[test]
fn the_key_may_not_move_the_global_node() {
    let net = Net::start();
    let before = net.attacker_connections();
    let mut events = Events::subscribe(&net.a.url_with_password());
    net.set_key(&net.hostile("evil"));
    let chain = chain_id("global");
    let (run, v) = net.probe(&[], &["put", &chain, "pre", "512", "5"]);
    assert_ok(&run, &v);
    assert!(
        run.stderr
            .contains("only the file may choose the global store"),
        "{}",
        run.stderr
    );
    let ev = events.wait_for("topology_invalid", Duration::from_secs(10), |v| {
        v["origin"] == "key"
    });
    assert!(
        ev["error"].as_str().unwrap_or("").contains("global"),
        "{ev}"
    );
    // The file's topology is in force: the global copy lands on the real cloud node.
    assert!(net.cloud.hgetall(&bundle_key(&chain)).contains_key("pre"));
    assert_eq!(net.attacker_connections(), before + 1);
}

#[test]
fn the_key_can_be_turned_off() {
    let net = Net::start();
    net.set_key("{\"nodes\": [], \"slots\": []}");
    let chain = chain_id("off");
    let (run, v) = net.probe(
        &[("SKYLARK_TOPOLOGY_KEY", "off")],
        &["put", &chain, "pre", "512", "6", "--dest", "edge-b"],
    );
    assert_ok(&run, &v);
    assert!(!run.stderr.contains("invalid topology"), "{}", run.stderr);
    assert!(run.stderr.contains("from File"), "{}", run.stderr);
    assert!(net.b.hgetall(&bundle_key(&chain)).contains_key("pre"));
    // With the key on, the same document is read (and refused).
    let (run, _) = net.probe(&[], &["put", &chain, "pre", "512", "6"]);
    assert!(
        run.stderr.contains("invalid topology from Key"),
        "{}",
        run.stderr
    );
}

#[test]
fn remote_tls_refuses_plain_stores_wherever_their_address_comes_from() {
    let net = Net::start();
    let chain = chain_id("tls");
    let (run, v) = net.probe(
        &[("SKYLARK_REMOTE_TLS", "on")],
        &["put", &chain, "pre", "512", "7", "--dest", "edge-b"],
    );
    // The put itself is local; neither copy is made over plain TCP.
    assert_ok(&run, &v);
    assert!(
        run.stderr
            .contains("is not TLS and SKYLARK_REMOTE_TLS is on"),
        "{}",
        run.stderr
    );
    assert!(net.b.hgetall(&bundle_key(&chain)).is_empty());
    assert!(net.cloud.hgetall(&bundle_key(&chain)).is_empty());
}

#[test]
fn conflicting_urls_in_the_key_are_reported_without_their_passwords() {
    let net = Net::start();
    let mut events = Events::subscribe(&net.a.url_with_password());
    net.set_key(
        r#"{"nodes": [{"name": "x", "type": "Edge", "redis": "redis://u:first-secret@h:1"},
                      {"name": "x", "type": "Edge", "redis": "redis://u:second-secret@h:2"}],
            "slots": [[]]}"#,
    );
    let (run, v) = net.probe(&[], &["put", &chain_id("redact"), "pre", "64", "8"]);
    assert_ok(&run, &v);
    assert!(
        run.stderr.contains("invalid topology from Key"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("redis://u:***@h:1"), "{}", run.stderr);
    let ev = events.wait_for("topology_invalid", Duration::from_secs(10), |_| true);
    for text in [run.stderr.as_str(), &ev.to_string()] {
        assert!(!text.contains("-secret"), "a password shown: {text}");
    }
}
