//! System tests of the plugin's imports: real wasmedge, the real plugin `.so`, the probe
//! guest, and a fresh redis-server per test.

use probe::{fnv1a, pattern};
use skylark_abi::Status;
use skylark_testkit::{chain_id, plugin_dir, wasmedge_bin, Guest, Redis, RUN_TIMEOUT};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

fn probe(redis: &Redis, args: &[&str]) -> serde_json::Value {
    Guest::new("probe", &redis.url)
        .args(args)
        .run(RUN_TIMEOUT)
        .assert_success()
        .json()
}

fn status(v: &serde_json::Value) -> i64 {
    v["status"]
        .as_i64()
        .unwrap_or_else(|| panic!("no status in {v}"))
}

#[test]
fn wasmedge_version_lists_the_plugin() {
    let out = Command::new(wasmedge_bin())
        .arg("--version")
        .env("WASMEDGE_PLUGIN_PATH", plugin_dir())
        .output()
        .expect("run wasmedge --version");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("libwasmedgePluginSkylark.so (plugin \"skylark\") version 0.1.0"),
        "plugin not listed:\n{text}"
    );
}

#[test]
fn the_store_connection_opens_before_the_guest_calls() {
    // The plugin connects to the node-local store when WasmEdge creates its module, on a
    // thread of its own, so that the guest's first call does not pay for it: a guest
    // that makes no Skylark call at all still finds the connection open while it runs.
    let redis = Redis::start();
    let mut conn = redis.conn();
    let clients = |conn: &mut redis::Connection| -> usize {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(conn).unwrap();
        list.lines().count()
    };
    let alone = clients(&mut conn);
    let guest = Guest::new("probe", &redis.url)
        .args(["idle", "3000"])
        .spawn();
    let deadline = std::time::Instant::now() + Duration::from_millis(2500);
    let mut connected = false;
    while !connected && std::time::Instant::now() < deadline {
        connected = clients(&mut conn) > alone;
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = guest.wait(RUN_TIMEOUT);
    run.assert_success();
    assert!(
        connected,
        "no connection from the plugin while the guest ran; stderr:\n{}",
        run.stderr
    );
}

#[test]
fn a_fresh_process_putting_at_once_uses_the_warm_up_connection() {
    // A guest that puts as soon as it starts (propagation off: the put is the process's
    // only use of the node-local store) comes while the warm-up is still connecting. It
    // used to open a connection of its own (the warm-up's was then dropped unused): two
    // connections per invocation. Now it waits for the warm-up's connection, reads the
    // warm-up PING's reply and sends its put there: one connection per process.
    let redis = Redis::start();
    let mut conn = redis.conn();
    let accepted = |conn: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("stats").query(conn).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("total_connections_received in INFO stats")
    };
    // AOT-compiled, the guest reaches its put within a millisecond or two of the
    // module's creation (interpreted, the warm-up is long done by then).
    let module = skylark_testkit::aot("probe");
    const RUNS: u64 = 40;
    let before = accepted(&mut conn);
    for i in 0..RUNS {
        let chain = chain_id("one-connection");
        let put = Guest::at(&module, &redis.url)
            .args(["put", &chain, "t", "1024", &i.to_string()])
            .run(RUN_TIMEOUT)
            .assert_success()
            .json();
        assert_eq!(status(&put), 0, "{put}");
    }
    let opened = accepted(&mut conn) - before;
    assert_eq!(
        opened, RUNS,
        "{RUNS} fresh processes, one put each, opened {opened} connections to the store"
    );
}

#[test]
fn put_then_get_bundle() {
    let redis = Redis::start();
    let chain = chain_id("put-get");
    let put = probe(&redis, &["put", &chain, "preprocess", "1000", "7"]);
    assert_eq!(status(&put), 0, "{put}");

    let key = format!("skylark:bundle:{chain}");
    let stored = redis.state(&key);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored["preprocess"], pattern(1000, 7));
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query(&mut redis.conn())
        .unwrap();
    assert!((1..=86_400).contains(&ttl), "TTL {ttl}");

    let got = probe(&redis, &["get", &chain]);
    assert_eq!(status(&got), 0, "{got}");
    assert_eq!(got["chain"], chain.as_str());
    assert_eq!(got["tier"], "local");
    assert_eq!(got["node"], "test-node");
    assert_eq!(got["fields"]["preprocess"]["len"], 1000);
    assert_eq!(
        got["fields"]["preprocess"]["fnv"],
        fnv1a(&pattern(1000, 7)).as_str()
    );
}

#[test]
fn many_fields_are_written_and_read_in_one_round_trip_each() {
    let redis = Redis::start();
    let chain = chain_id("many");
    let hset_before = redis.command_calls("hset");
    let eval_before = redis.command_calls("eval");
    let exec_before = redis.command_calls("exec");
    let put = probe(&redis, &["put-many", &chain, "f", "50", "300", "100"]);
    assert_eq!(status(&put), 0, "{put}");
    assert_eq!(
        redis.command_calls("exec") - exec_before,
        1,
        "one transaction (one round trip) for 50 fields and their versions"
    );
    assert_eq!(
        redis.command_calls("eval") - eval_before,
        2,
        "one script for the 50 fields' versions (and the put's limits), and the undo that \
         does nothing unless they refused the put"
    );
    assert_eq!(
        redis.command_calls("hset") - hset_before,
        2,
        "one HSET for the 50 values (outside the script), one for their versions"
    );

    let stored = redis.state(&format!("skylark:bundle:{chain}"));
    assert_eq!(stored.len(), 50);
    for i in 0..50u64 {
        assert_eq!(
            stored[&format!("f{i}")],
            pattern(300, 100 + i),
            "field f{i}"
        );
    }

    let before = redis.command_calls("hgetall");
    let got = probe(&redis, &["get", &chain]);
    assert_eq!(
        redis.command_calls("hgetall") - before,
        1,
        "one HGETALL for 50 fields"
    );
    let fields = got["fields"].as_object().expect("fields");
    assert_eq!(fields.len(), 50);
    for i in 0..50u64 {
        assert_eq!(
            fields[&format!("f{i}")]["fnv"],
            fnv1a(&pattern(300, 100 + i)).as_str()
        );
    }
}

#[test]
fn eight_mib_value_goes_through_the_buffer_protocol_without_a_second_round_trip() {
    let redis = Redis::start();
    let chain = chain_id("big");
    let size = 8 * 1024 * 1024;
    let put = probe(&redis, &["put", &chain, "image", &size.to_string(), "3"]);
    assert_eq!(status(&put), 0, "{put}");
    let expected = pattern(size, 3);
    assert_eq!(
        redis.hgetall(&format!("skylark:bundle:{chain}"))["image"],
        expected
    );

    let before = redis.command_calls("hgetall");
    let got = probe(&redis, &["get", &chain]);
    assert_eq!(status(&got), 0, "{got}");
    assert_eq!(got["fields"]["image"]["len"], size);
    assert_eq!(got["fields"]["image"]["fnv"], fnv1a(&expected).as_str());
    assert_eq!(
        redis.command_calls("hgetall") - before,
        1,
        "the oversized result must come from the host's pending copy"
    );
}

#[test]
fn missing_bundle_is_not_found() {
    let redis = Redis::start();
    let got = probe(&redis, &["get", "no-such-chain"]);
    assert_eq!(status(&got), Status::NotFound.code() as i64, "{got}");
    assert!(
        got["error"].as_str().unwrap().contains("no-such-chain"),
        "{got}"
    );
}

#[test]
fn invalid_ids_are_rejected_and_nothing_is_written() {
    let redis = Redis::start();
    for (chain, task) in [("a:b", "t"), ("ok", "x*"), ("ok", "has space")] {
        let put = probe(&redis, &["put", chain, task, "10", "1"]);
        assert_eq!(
            status(&put),
            Status::InvalidId.code() as i64,
            "{chain}/{task}: {put}"
        );
    }
    let long = "c".repeat(129);
    let put = probe(&redis, &["put", &long, "t", "10", "1"]);
    assert_eq!(status(&put), Status::InvalidId.code() as i64, "{put}");
    let keys: i64 = redis::cmd("DBSIZE").query(&mut redis.conn()).unwrap();
    assert_eq!(keys, 0);
}

#[test]
fn refused_connection_fails_fast_with_store_unavailable() {
    // Reserve a port, then free it: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let run = Guest::new("probe", &url)
        .args(["put", "c", "t", "10", "1"])
        .run(Duration::from_secs(60));
    run.assert_success();
    let v = run.json();
    assert_eq!(status(&v), Status::StoreUnavailable.code() as i64, "{v}");
    assert!(v["ms"].as_f64().unwrap() < 3_000.0, "{v}");
}

#[test]
fn silent_store_times_out_within_the_configured_deadline() {
    // A listener that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", silent.local_addr().unwrap());
    let _hold = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in silent.incoming().take(8).flatten() {
            conns.push(c);
        }
    });
    for op in [vec!["put", "c", "t", "10", "1"], vec!["get", "c"]] {
        let run = Guest::new("probe", &url)
            .env("SKYLARK_TIMEOUT_MS", "300")
            .env("SKYLARK_CONNECT_TIMEOUT_MS", "300")
            .args(&op)
            .run(Duration::from_secs(60));
        run.assert_success();
        let v = run.json();
        assert_eq!(
            status(&v),
            Status::StoreTimeout.code() as i64,
            "{op:?}: {v}"
        );
        // One deadline (plus connecting), not one per reply a request expects.
        let ms = v["ms"].as_f64().unwrap();
        assert!((250.0..900.0).contains(&ms), "{op:?} took {ms} ms");
    }
}

#[test]
fn concurrent_writers_to_one_chain_lose_no_field() {
    let redis = Redis::start();
    let chain = chain_id("concurrent");
    let writers: Vec<_> = (0..6)
        .map(|w| {
            Guest::new("probe", &redis.url)
                .args([
                    "put-many",
                    &chain,
                    &format!("w{w}-"),
                    "5",
                    "2000",
                    &(w * 100).to_string(),
                ])
                .spawn()
        })
        .collect();
    for r in writers {
        let run = r.wait(RUN_TIMEOUT);
        run.assert_success();
        assert_eq!(status(&run.json()), 0, "{}", run.stdout);
    }
    let stored = redis.state(&format!("skylark:bundle:{chain}"));
    assert_eq!(stored.len(), 30);
    for w in 0..6u64 {
        for i in 0..5u64 {
            assert_eq!(stored[&format!("w{w}-{i}")], pattern(2000, w * 100 + i));
        }
    }
}

#[test]
fn unix_socket_store() {
    let redis = Redis::start_unix();
    assert!(redis.url.starts_with("unix://"));
    let chain = chain_id("unix");
    assert_eq!(status(&probe(&redis, &["put", &chain, "t", "64", "1"])), 0);
    let got = probe(&redis, &["get", &chain]);
    assert_eq!(got["fields"]["t"]["fnv"], fnv1a(&pattern(64, 1)).as_str());
}

#[test]
fn namespace_prefixes_every_key() {
    let redis = Redis::start();
    let run = Guest::new("probe", &redis.url)
        .env("SKYLARK_NAMESPACE", "tenant-a")
        .args(["put", "c1", "t", "8", "1"])
        .run(RUN_TIMEOUT);
    assert_eq!(status(&run.assert_success().json()), 0);
    assert_eq!(redis.state("tenant-a:bundle:c1").len(), 1);
    assert!(redis.hgetall("skylark:bundle:c1").is_empty());
}

#[test]
fn value_limit_is_enforced() {
    let redis = Redis::start();
    let run = Guest::new("probe", &redis.url)
        .env("SKYLARK_MAX_VALUE_BYTES", "1000")
        .args(["put", "c1", "t", "1001", "1"])
        .run(RUN_TIMEOUT);
    let v = run.assert_success().json();
    assert_eq!(status(&v), Status::ValueTooLarge.code() as i64, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("SKYLARK_MAX_VALUE_BYTES"),
        "{v}"
    );
    let keys: i64 = redis::cmd("DBSIZE").query(&mut redis.conn()).unwrap();
    assert_eq!(keys, 0);
}

#[test]
fn invalid_configuration_is_reported_to_the_guest() {
    let redis = Redis::start();
    let run = Guest::new("probe", &redis.url)
        .env("SKYLARK_TTL_SECS", "tomorrow")
        .args(["put", "c1", "t", "8", "1"])
        .run(RUN_TIMEOUT);
    let v = run.assert_success().json();
    assert_eq!(status(&v), Status::ConfigInvalid.code() as i64, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("SKYLARK_TTL_SECS"),
        "{v}"
    );
}

#[test]
fn ttl_zero_means_no_expiry() {
    let redis = Redis::start();
    let run = Guest::new("probe", &redis.url)
        .env("SKYLARK_TTL_SECS", "0")
        .args(["put", "c1", "t", "8", "1"])
        .run(RUN_TIMEOUT);
    assert_eq!(status(&run.assert_success().json()), 0);
    let ttl: i64 = redis::cmd("TTL")
        .arg("skylark:bundle:c1")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(ttl, -1);
}
