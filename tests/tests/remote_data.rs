//! Another node's data is input, not trusted state (issue 16 point 5): a bundle on a
//! neighbour's Redis may hold field names that are no task ids (not even UTF-8), forged
//! placement entries, or more bytes than `SKYLARK_MAX_BUNDLE_BYTES`. The reader keeps
//! only id-named state and placement entries naming valid nodes, caches nothing else, and
//! refuses an oversized bundle before its bytes leave the neighbour's Redis. Real guests
//! under real wasmedge with the plugin, real redis-servers.

use serde_json::Value;
use skylark_testkit::{chain_id, Guest, GuestRun, Redis, NS, RUN_TIMEOUT};

const BUNDLE_TOO_LARGE: i64 = 18;

/// This node (edge-a) and a neighbour (edge-b) whose Redis a hostile party writes.
struct Pair {
    a: Redis,
    b: Redis,
    _dir: tempfile::TempDir,
    topology: String,
}

impl Pair {
    fn start() -> Pair {
        let (a, b) = (Redis::start(), Redis::start());
        let dir = tempfile::tempdir().expect("temp dir");
        let topology = dir.path().join("topology.json");
        std::fs::write(
            &topology,
            format!(
                r#"{{"nodes": [{{"name": "edge-a", "type": "Edge"}},
                              {{"name": "edge-b", "type": "Edge", "redis": "{}"}}],
                    "links": [{{"source": "edge-a", "target": "edge-b", "latency_ms": 5, "bandwidth_mbps": 100}}]}}"#,
                b.url
            ),
        )
        .expect("write the topology");
        let topology = topology.to_string_lossy().into_owned();
        Pair {
            a,
            b,
            _dir: dir,
            topology,
        }
    }

    fn get(&self, chain: &str, extra: &[(&str, &str)]) -> (GuestRun, Value) {
        let mut g = Guest::new("probe", &self.a.url)
            .env("SKYLARK_LOG", "info")
            .env("SKYLARK_NODE_NAME", "edge-a")
            .env("SKYLARK_TOPOLOGY_FILE", &self.topology);
        for (k, v) in extra {
            g = g.env(k, v);
        }
        let run = g.args(["get", chain]).run(RUN_TIMEOUT);
        run.assert_success();
        let json = run.json();
        (run, json)
    }

    /// Writes raw (field, value) pairs into `chain`'s bundle on edge-b.
    fn plant(&self, chain: &str, fields: &[(&[u8], &[u8])]) {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(format!("{NS}:bundle:{chain}"));
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        let _: i64 = cmd.query(&mut self.b.conn()).expect("HSET on edge-b");
    }
}

/// Every field name of `chain`'s bundle on `redis`, as raw bytes.
fn field_names(redis: &Redis, chain: &str) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = redis::cmd("HKEYS")
        .arg(format!("{NS}:bundle:{chain}"))
        .query(&mut redis.conn())
        .expect("HKEYS");
    names.sort();
    names
}

#[test]
fn a_hostile_neighbour_cannot_poison_a_chain() {
    let pair = Pair::start();
    let chain = chain_id("poison");
    pair.plant(
        &chain,
        &[
            (b"pre", b"good state"),
            (b"@v:pre", b"7"),
            // Names no guest could have written: not UTF-8, a key separator, too long.
            (b"bad\xff\xfe", b"x"),
            (b"a:b", b"y"),
            (&[b'n'; 200], b"z"),
            // Placement entries: one valid, the others naming no valid node or task.
            (b"@at:pre", b"edge-b"),
            (b"@at:det", b"node one"),
            (b"@at:alarm", b"\xff\xfe"),
            (b"@at:x y", b"edge-b"),
        ],
    );
    let (run, v) = pair.get(&chain, &[]);
    assert_eq!(v["status"], 0, "{v}\n{}", run.stderr);
    assert_eq!(
        (v["tier"].as_str(), v["node"].as_str()),
        (Some("neighbour"), Some("edge-b")),
        "{v}"
    );
    let fields: Vec<&String> = v["fields"].as_object().expect("fields").keys().collect();
    assert_eq!(fields, ["pre"], "{v}");
    assert_eq!(v["placement"], serde_json::json!({"pre": "edge-b"}), "{v}");
    assert!(run.stderr.contains("ignored"), "{}", run.stderr);

    // The local copy (read-through cache) holds only what was taken.
    let cached = field_names(&pair.a, &chain);
    assert_eq!(
        cached,
        vec![b"@at:pre".to_vec(), b"@v:pre".to_vec(), b"pre".to_vec()],
        "{:?}",
        cached
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect::<Vec<_>>()
    );
    // And the chain stays readable on this node.
    let (run, v) = pair.get(&chain, &[]);
    assert_eq!(v["status"], 0, "{v}\n{}", run.stderr);
    assert_eq!(v["tier"], "local", "{v}");
}

#[test]
fn an_oversized_remote_bundle_is_refused_before_it_is_read() {
    let pair = Pair::start();
    let chain = chain_id("huge");
    let big = vec![b'x'; 512 * 1024];
    pair.plant(&chain, &[(b"pre", &big), (b"@v:pre", b"3")]);
    let sent = pair.b.output_bytes();
    let (run, v) = pair.get(&chain, &[("SKYLARK_MAX_BUNDLE_BYTES", "65536")]);
    assert_eq!(v["status"], BUNDLE_TOO_LARGE, "{v}\n{}", run.stderr);
    let msg = v["error"].as_str().unwrap_or("");
    assert!(
        msg.contains("SKYLARK_MAX_BUNDLE_BYTES is 65536") && msg.contains("not read"),
        "{msg}"
    );
    // Not one value's worth of bytes left edge-b's Redis, and nothing was cached.
    let out = pair.b.output_bytes() - sent;
    assert!(out < 64 * 1024, "edge-b sent {out} bytes");
    assert!(field_names(&pair.a, &chain).is_empty());

    // The same size limit holds for a bundle already on this node.
    let local = chain_id("huge-local");
    let _: i64 = redis::cmd("HSET")
        .arg(format!("{NS}:bundle:{local}"))
        .arg("pre")
        .arg(&big)
        .query(&mut pair.a.conn())
        .expect("HSET");
    let (_, v) = pair.get(&local, &[("SKYLARK_MAX_BUNDLE_BYTES", "65536")]);
    assert_eq!(v["status"], BUNDLE_TOO_LARGE, "{v}");
}
