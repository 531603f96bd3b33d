//! A simulated constellation for system tests and benchmarks: one redis-server per node,
//! a link emulator ([`crate::linkemu`]) in front of each (other nodes reach it only
//! through that link, so a test can slow it down or cut it), and the original testbed's
//! topology rewritten as a Skylark document whose current slot the test chooses.

use crate::linkemu::{LinkEmu, LinkSpec};
use crate::{Guest, Redis};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The namespace the plugin uses by default.
pub const NS: &str = "skylark";

/// Prefix of the bundle fields holding the placement record.
pub const PLACEMENT_PREFIX: &str = "@at:";

/// The testbed's seven topologies (`tests/data/constellation-topologies.json`).
pub fn testbed_file() -> PathBuf {
    crate::root().join("tests/data/constellation-topologies.json")
}

/// One simulated node.
pub struct SimNode {
    pub name: String,
    pub kind: String,
    pub redis: Redis,
    /// The link other nodes use to reach this node's store.
    pub link: LinkEmu,
}

/// Several nodes, their stores and links, and a topology file.
pub struct Cluster {
    pub nodes: Vec<SimNode>,
    dir: tempfile::TempDir,
    /// Extra plugin settings for every guest of this cluster.
    pub env: Vec<(String, String)>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Nodes (name, type) of the testbed file, in order of first appearance.
fn testbed_nodes(doc: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for slot in doc.as_array().expect("testbed file is an array of slots") {
        for link in slot.as_array().expect("a slot is an array of links") {
            for end in ["source", "target"] {
                let n = &link[end];
                let name = n["node_name"].as_str().expect("node_name").to_string();
                if !out.iter().any(|(x, _)| *x == name) {
                    let kind = n["node_type"].as_str().unwrap_or("Sat").to_string();
                    out.push((name, kind));
                }
            }
        }
    }
    out
}

impl Cluster {
    /// The testbed's eight nodes (seven satellites, cloud node `pi5u1`), all links ideal.
    pub fn constellation() -> Cluster {
        let doc: Value = serde_json::from_slice(
            &std::fs::read(testbed_file()).expect("read the testbed topology"),
        )
        .expect("testbed topology is JSON");
        let names = testbed_nodes(&doc);
        let nodes = names
            .into_iter()
            .map(|(name, kind)| {
                let redis = Redis::start();
                let upstream = format!("127.0.0.1:{}", redis.port)
                    .parse()
                    .expect("socket address");
                let link =
                    LinkEmu::start(upstream, LinkSpec::ideal()).expect("start link emulator");
                SimNode {
                    name,
                    kind,
                    redis,
                    link,
                }
            })
            .collect();
        let c = Cluster {
            nodes,
            dir: tempfile::tempdir().expect("temp dir"),
            env: Vec::new(),
        };
        c.write_topology(0, 3_600_000);
        c
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> &SimNode {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in the cluster"))
    }

    /// The topology file every guest of this cluster reads.
    pub fn topology_path(&self) -> PathBuf {
        self.dir.path().join("topology.json")
    }

    /// The testbed topology as a Skylark document in which slot `slot` (of 7) is current
    /// for at least `slot_ms / 2` from now, with each node's store behind its link.
    pub fn topology_doc(&self, slot: usize, slot_ms: u64) -> String {
        let doc: Value = serde_json::from_slice(
            &std::fs::read(testbed_file()).expect("read the testbed topology"),
        )
        .expect("testbed topology is JSON");
        let slots: Vec<Value> = doc
            .as_array()
            .expect("slots")
            .iter()
            .map(|slot| {
                Value::Array(
                    slot.as_array()
                        .expect("links")
                        .iter()
                        .map(|l| {
                            json!({
                                "source": l["source"]["node_name"],
                                "target": l["target"]["node_name"],
                                "latency_ms": l["latency"],
                                "bandwidth_mbps": l["bandwidth"],
                            })
                        })
                        .collect(),
                )
            })
            .collect();
        let n = slots.len() as u64;
        let epoch = now_ms() - (slot as u64 % n) * slot_ms - slot_ms / 2;
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .map(|s| json!({"name": s.name, "type": s.kind, "redis": s.link.url()}))
            .collect();
        json!({"slot_ms": slot_ms, "epoch_ms": epoch, "global": "pi5u1",
               "nodes": nodes, "slots": slots})
        .to_string()
    }

    /// Rewrites the topology file (see [`Cluster::topology_doc`]).
    pub fn write_topology(&self, slot: usize, slot_ms: u64) {
        std::fs::write(self.topology_path(), self.topology_doc(slot, slot_ms))
            .expect("write topology file");
    }

    /// `name=url` of every node's link, for `SKYLARK_NODE_ADDRS`.
    pub fn node_addrs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}={}", n.name, n.link.url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A guest running on node `node`: its own store directly, others through their links.
    /// Retries and leases are short so that tests run fast.
    pub fn guest(&self, module: &str, node: &str) -> Guest {
        self.guest_at(&crate::wasm(module), node)
    }

    /// [`Cluster::guest`] for a module file anywhere (an AOT-compiled copy).
    pub fn guest_at(&self, module: &Path, node: &str) -> Guest {
        let mut g = Guest::at(module, &self.node(node).redis.url)
            .env("SKYLARK_NODE_NAME", node)
            .env("SKYLARK_PROPAGATION", "on")
            .env(
                "SKYLARK_TOPOLOGY_FILE",
                &self.topology_path().to_string_lossy(),
            )
            .env("SKYLARK_TIMEOUT_MS", "1000")
            .env("SKYLARK_CONNECT_TIMEOUT_MS", "500")
            .env("SKYLARK_RETRY_BASE_MS", "50")
            .env("SKYLARK_RETRIES", "2")
            .env("SKYLARK_LEASE_MS", "500")
            .env("SKYLARK_EXIT_FLUSH_MS", "15000")
            .env("SKYLARK_LOG", "info");
        for (k, v) in &self.env {
            g = g.env(k, v);
        }
        g
    }

    /// The state fields of `chain`'s bundle on `node` (empty if absent), read directly.
    pub fn bundle(&self, node: &str, chain: &str) -> BTreeMap<String, Vec<u8>> {
        let mut all = self
            .node(node)
            .redis
            .hgetall(&format!("{NS}:bundle:{chain}"));
        // Reserved fields (placement, versions, announcements) start with '@'.
        all.retain(|k, _| !k.starts_with('@'));
        all
    }

    /// The placement record (task id to node) held with `chain`'s bundle on `node`.
    pub fn placement(&self, node: &str, chain: &str) -> BTreeMap<String, String> {
        self.node(node)
            .redis
            .hgetall(&format!("{NS}:bundle:{chain}"))
            .into_iter()
            .filter_map(|(k, v)| {
                let task = k.strip_prefix(PLACEMENT_PREFIX)?.to_string();
                Some((task, String::from_utf8_lossy(&v).into_owned()))
            })
            .collect()
    }

    /// Names of the nodes holding a bundle of `chain`.
    pub fn holders(&self, chain: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| !self.bundle(&n.name, chain).is_empty())
            .map(|n| n.name.clone())
            .collect()
    }

    /// Number of jobs in `node`'s outbox.
    pub fn outbox_len(&self, node: &str) -> usize {
        redis::cmd("ZCARD")
            .arg(format!("{NS}:outbox"))
            .query(&mut self.node(node).redis.conn())
            .expect("ZCARD")
    }

    /// The counters of `node` (`<ns>:stats:<node>`).
    pub fn stats(&self, node: &str) -> BTreeMap<String, u64> {
        self.node(node)
            .redis
            .hgetall(&format!("{NS}:stats:{node}"))
            .into_iter()
            .map(|(k, v)| {
                let n = String::from_utf8_lossy(&v).parse().unwrap_or(0);
                (k, n)
            })
            .collect()
    }

    /// Subscribes to `node`'s event channel; events arrive on the returned receiver.
    pub fn events(&self, node: &str) -> Events {
        let rx = crate::subscribe(&self.node(node).redis.url, &format!("{NS}/events"));
        Events {
            rx,
            seen: Vec::new(),
        }
    }
}

/// Events received from a node's channel.
pub struct Events {
    rx: mpsc::Receiver<String>,
    /// Every event line received so far.
    pub seen: Vec<String>,
}

impl Events {
    /// Waits until an event named `name` whose JSON satisfies `pred` arrives; returns it.
    pub fn wait_for(
        &mut self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let check = |line: &str| -> Option<Value> {
            let mut parts = line.splitn(3, ' ');
            let (_ts, ev, body) = (parts.next()?, parts.next()?, parts.next()?);
            let v: Value = serde_json::from_str(body).ok()?;
            (ev == name && pred(&v)).then_some(v)
        };
        if let Some(v) = self.seen.iter().find_map(|l| check(l)) {
            return v;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = check(&line);
                    self.seen.push(line);
                    if let Some(v) = hit {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no {name} event matching within {timeout:?}; events seen:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

/// Polls `cond` until it holds or `timeout` passes; panics with `what` otherwise.
pub fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(cond(), "timed out after {timeout:?} waiting for: {what}");
}
