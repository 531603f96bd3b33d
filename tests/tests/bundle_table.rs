//! The table layout of a bundle (issue 14 point 4, get option `layout = "table"`) through
//! real wasmedge, the real plugin and a real redis-server: the block the guest receives is
//! exactly the layout of what the store holds (names, values, versions), through the
//! first buffer and through `BufferTooSmall` and `skylark_take_result` (a buffer one byte
//! short leaves the result pending); a bundle exactly at `SKYLARK_MAX_BUNDLE_BYTES` is
//! delivered, one byte over is refused without its bytes leaving the store, on the
//! guarded `HGETALL` path of large bundles (`bundle_read.rs`) as on the script path; and
//! that guarded read, racing a writer, always returns one whole write; and the SDK's
//! first buffer holds the table layout of one 64 KiB value (one host call).

use probe::{fnv1a, pattern};
use serde_json::Value;
use skylark_abi::table;
use skylark_abi::wire::{Source, Tier};
use skylark_testkit::{chain_id, Guest, Redis, NS, RUN_TIMEOUT};

const BUFFER_TOO_SMALL: i64 = 2;
const BUNDLE_TOO_LARGE: i64 = 18;

fn probe(redis: &Redis, env: &[(&str, &str)], args: &[&str]) -> Value {
    let mut g = Guest::new("probe", &redis.url)
        .env("SKYLARK_PROPAGATION", "off")
        .args(args);
    for (k, v) in env {
        g = g.env(k, v);
    }
    g.run(RUN_TIMEOUT).assert_success().json()
}

fn status(v: &Value) -> i64 {
    v.get("status")
        .or_else(|| v.get("get_status"))
        .and_then(Value::as_i64)
        .unwrap_or(-1)
}

/// The table layout of what the store holds for `chain`, built independently of the
/// host from the raw hash (state fields, their `@v:` versions), as the guest must see it.
fn expected_block(redis: &Redis, chain: &str, node: &str) -> Vec<u8> {
    let hash = redis.hgetall(&format!("{NS}:bundle:{chain}"));
    let version = |t: &str| -> u64 {
        hash.get(&format!("@v:{t}"))
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0)
    };
    // A BTreeMap iterates in name order, as the layout sorts.
    let state: Vec<(&String, &Vec<u8>, u64)> = hash
        .iter()
        .filter(|(k, _)| !k.starts_with('@'))
        .map(|(k, v)| (k, v, version(k)))
        .collect();
    assert!(
        state.iter().all(|(_, _, v)| *v > 0),
        "every put assigned a version"
    );
    let fields: Vec<table::FieldIn> = state
        .iter()
        .map(|(k, v, ver)| (k.as_bytes(), v.as_slice(), *ver))
        .collect();
    let source = Source {
        tier: Tier::Local,
        node: node.to_string(),
    };
    table::plan(chain, &source, &fields, &[])
        .expect("a layout")
        .to_vec()
}

#[test]
fn the_table_layout_delivers_exactly_the_stored_bytes() {
    let redis = Redis::start();
    let chain = chain_id("table");
    // 10 × 100,000 bytes and one of 70,000: larger than the script returns itself, so
    // the host reads it with the guarded HGETALL; and a small field.
    let put = probe(&redis, &[], &["put-many", &chain, "f", "10", "100000", "7"]);
    assert_eq!(status(&put), 0, "{put}");
    let put = probe(&redis, &[], &["put", &chain, "pre", "70000", "3"]);
    assert_eq!(status(&put), 0, "{put}");
    let put = probe(&redis, &[], &["put", &chain, "a", "1", "9"]);
    assert_eq!(status(&put), 0, "{put}");

    // A first buffer too small, a take one byte short (still pending), then the take.
    let got = probe(
        &redis,
        &[],
        &[
            "wait-raw",
            &chain,
            "4096",
            "--layout",
            "table",
            "--short-take",
        ],
    );
    assert_eq!(status(&got), BUFFER_TOO_SMALL, "{got}");
    let len = got["len"].as_u64().expect("len");
    assert!(len > 1_070_000, "{got}");
    assert_ne!(got["handle"], 0, "{got}");
    assert_eq!(got["short_take_status"], BUFFER_TOO_SMALL, "{got}");
    assert_eq!(got["short_take_len"], len, "{got}");
    assert_eq!(
        got["short_take_handle"], got["handle"],
        "still pending: {got}"
    );
    assert_eq!(got["take_status"], 0, "{got}");
    assert_eq!(got["table"], true, "{got}");
    assert_eq!(got["block_len"], len, "{got}");
    assert_eq!(got["chain"], chain.as_str());
    assert_eq!(got["tier"], "local");
    let node = got["node"].as_str().expect("node").to_string();
    let expected = expected_block(&redis, &chain, &node);
    assert_eq!(expected.len() as u64, len);
    assert_eq!(
        got["block_fnv"].as_str(),
        Some(fnv1a(&expected).as_str()),
        "the block is byte for byte the layout of the stored hash: {got}"
    );
    let fields = got["fields"].as_object().expect("fields");
    assert_eq!(fields.len(), 12, "{got}");
    for i in 0..10u64 {
        assert_eq!(
            fields[&format!("f{i}")]["fnv"].as_str(),
            Some(fnv1a(&pattern(100_000, 7 + i)).as_str()),
            "f{i}"
        );
    }
    assert_eq!(
        fields["pre"]["fnv"].as_str(),
        Some(fnv1a(&pattern(70_000, 3)).as_str())
    );
    assert_eq!(got["versions"].as_object().map(|v| v.len()), Some(12));

    // A buffer of exactly the length: delivered by the first call, the same block.
    let exact = probe(
        &redis,
        &[],
        &["wait-raw", &chain, &len.to_string(), "--layout", "table"],
    );
    assert_eq!(status(&exact), 0, "{exact}");
    assert_eq!(exact["handle"], 0);
    assert_eq!(exact["block_fnv"], got["block_fnv"], "{exact}");

    // The SDK's default is the table; the MessagePack layout still answers the same.
    let sdk = probe(&redis, &[], &["get", &chain]);
    assert_eq!(status(&sdk), 0, "{sdk}");
    assert_eq!(sdk["fields"], got["fields"]);
    assert_eq!(sdk["versions"], got["versions"]);
    let msgpack = probe(
        &redis,
        &[],
        &["wait-raw", &chain, "4096", "--layout", "msgpack"],
    );
    assert_eq!(msgpack["take_status"], 0, "{msgpack}");
    assert_eq!(msgpack["table"], false, "{msgpack}");
    assert_eq!(msgpack["fields"], got["fields"]);
    assert_eq!(msgpack["versions"], got["versions"]);

    // A small bundle (returned by the script itself) in the table layout.
    let small = chain_id("table-small");
    let put = probe(&redis, &[], &["put", &small, "t", "100", "1"]);
    assert_eq!(status(&put), 0, "{put}");
    let got = probe(
        &redis,
        &[],
        &["wait-raw", &small, "4096", "--layout", "table"],
    );
    assert_eq!(status(&got), 0, "{got}");
    let expected = expected_block(&redis, &small, &node);
    assert_eq!(got["block_fnv"].as_str(), Some(fnv1a(&expected).as_str()));
}

#[test]
fn the_sdk_gets_one_64_kib_value_in_one_host_call() {
    let redis = Redis::start();
    let chain = chain_id("first-buffer");
    let put = probe(&redis, &[], &["put", &chain, "image", "65536", "5"]);
    assert_eq!(status(&put), 0, "{put}");
    let larger = chain_id("first-buffer-larger");
    let put = probe(&redis, &[], &["put", &larger, "image", "100000", "5"]);
    assert_eq!(status(&put), 0, "{put}");
    // With SKYLARK_LOG=debug the host logs every BufferTooSmall answer (the result kept
    // under a handle for skylark_take_result).
    let get = |chain: &str| {
        let run = Guest::new("probe", &redis.url)
            .env("SKYLARK_PROPAGATION", "off")
            .env("SKYLARK_LOG", "debug")
            .args(["get", chain])
            .run(RUN_TIMEOUT);
        run.assert_success();
        (run.json(), run.stderr.clone())
    };
    let (got, log) = get(&chain);
    assert_eq!(status(&got), 0, "{got}");
    assert_eq!(got["fields"]["image"]["len"], 65536, "{got}");
    assert_eq!(
        got["fields"]["image"]["fnv"].as_str(),
        Some(fnv1a(&pattern(65_536, 5)).as_str())
    );
    assert!(
        !log.contains("does not fit a buffer"),
        "the table layout of one 64 KiB value fits the SDK's first buffer:\n{log}"
    );
    // A larger bundle still goes through skylark_take_result, and the log shows it.
    let (got, log) = get(&larger);
    assert_eq!(got["fields"]["image"]["len"], 100_000, "{got}");
    assert!(log.contains("does not fit a buffer"), "{log}");
}

#[test]
fn a_bundle_at_the_size_limit_is_delivered_and_one_byte_over_is_refused_after_one_read() {
    let redis = Redis::start();
    let chain = chain_id("limit");
    // Names p0, p1, p2: 3 × (2 + 99,998) = 300,000 bytes of state.
    let put = probe(&redis, &[], &["put-many", &chain, "p", "3", "99998", "1"]);
    assert_eq!(status(&put), 0, "{put}");
    for layout in ["table", "msgpack"] {
        let at = [("SKYLARK_MAX_BUNDLE_BYTES", "300000")];
        let got = probe(
            &redis,
            &at,
            &["wait-raw", &chain, "4096", "--layout", layout],
        );
        assert_eq!(got["take_status"], 0, "{layout}: {got}");
        assert_eq!(got["fields"].as_object().map(|f| f.len()), Some(3), "{got}");
        assert_eq!(
            got["fields"]["p2"]["fnv"].as_str(),
            Some(fnv1a(&pattern(99_998, 3)).as_str())
        );

        let over = [("SKYLARK_MAX_BUNDLE_BYTES", "299999")];
        let before = redis.output_bytes();
        let got = probe(
            &redis,
            &over,
            &["wait-raw", &chain, "4096", "--layout", layout],
        );
        let sent = redis.output_bytes() - before;
        assert_eq!(status(&got), BUNDLE_TOO_LARGE, "{layout}: {got}");
        // The node-local read is one bounded HGETALL whose fields are checked once read
        // (bundle_read.rs): the bundle is sent once, not read again another way.
        assert!(
            (300_000..400_000).contains(&sent),
            "{layout}: the store sent {sent} bytes for a refused bundle of 300,000"
        );
    }
}

#[test]
fn the_guarded_read_of_a_large_bundle_sees_whole_writes_while_a_writer_races_it() {
    use skylark_core::config::{Credentials, Tls};
    use skylark_core::store::Store;
    use skylark_core::{bundle_read, keys};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    let redis = Redis::start();
    let chain = chain_id("race");
    let key = keys::bundle(NS, &chain);
    // Two fields of 40,000 bytes, both of one generation, written by one HSET each time:
    // above the 32 KiB the script returns itself, so every read is the guarded one.
    redis::cmd("HSET")
        .arg(&key)
        .arg("a")
        .arg(vec![0u8; 40_000])
        .arg("b")
        .arg(vec![0u8; 40_000])
        .query::<()>(&mut redis.conn())
        .expect("HSET");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, mut conn, key) = (Arc::clone(&stop), redis.conn(), key.clone());
        std::thread::spawn(move || {
            let mut g = 0u8;
            while !stop.load(Ordering::Relaxed) {
                g = g.wrapping_add(1);
                redis::cmd("HSET")
                    .arg(&key)
                    .arg("a")
                    .arg(vec![g; 40_000])
                    .arg("b")
                    .arg(vec![g; 40_000])
                    .query::<()>(&mut conn)
                    .expect("HSET");
            }
        })
    };
    let d = Duration::from_secs(5);
    let store =
        Store::new(&redis.url, &Credentials::default(), &Tls::default(), d, d).expect("a store");
    for i in 0..300 {
        let pairs = bundle_read::read(&store, NS, &chain, 1 << 20)
            .unwrap_or_else(|e| panic!("read {i}: {e}"));
        let a = pairs.iter().find(|(k, _)| k == b"a").expect("a");
        let b = pairs.iter().find(|(k, _)| k == b"b").expect("b");
        assert_eq!(a.1.len(), 40_000);
        assert!(a.1.iter().all(|x| *x == a.1[0]), "read {i}: a torn value");
        assert_eq!(a.1, b.1, "read {i}: fields of two writes");
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer");
}
