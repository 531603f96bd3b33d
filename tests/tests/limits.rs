//! Limits that protect a node from a flood of puts: the bounded outbox
//! (`SKYLARK_MAX_OUTBOX`, status `Backlogged`) and a Redis at its `maxmemory`. Refused
//! puts store nothing and say why; accepted ones are not lost. Real guests, real
//! wasmedge, real redis-servers.

use serde_json::Value;
use skylark_testkit::{chain_id, free_port, Guest, Redis, ServerConfig, RUN_TIMEOUT};
use std::time::Duration;

const BACKLOGGED: i64 = 23;
const STORE_ERROR: i64 = 22;

/// Polls `done` for at most 30 s.
fn eventually(what: &str, done: impl FnMut() -> bool) {
    skylark_testkit::wait::eventually_every(
        what,
        Duration::from_secs(30),
        Duration::from_millis(25),
        done,
    )
}

fn zcard(redis: &Redis, key: &str) -> u64 {
    redis::cmd("ZCARD")
        .arg(key)
        .query(&mut redis.conn())
        .expect("ZCARD")
}

#[test]
fn a_refused_put_leaves_an_existing_bundle_as_it_was() {
    // The values of a put travel outside the guard script (a plain HSET in the same
    // transaction); a refused put must still change nothing: not the field it would
    // overwrite, not its version, not the TTL, and no field it would add.
    let local = Redis::start();
    let global_url = format!("redis://127.0.0.1:{}", free_port());
    let put = |chain: &str, task: &str, seed: &str| -> Value {
        Guest::new("probe", &local.url)
            .env("SKYLARK_GLOBAL_URL", &global_url)
            .env("SKYLARK_MAX_OUTBOX", "1")
            .env("SKYLARK_EXIT_FLUSH_MS", "0")
            .env("SKYLARK_CONNECT_TIMEOUT_MS", "100")
            .args(["put", chain, task, "70000", seed])
            .run(RUN_TIMEOUT)
            .assert_success()
            .json()
    };
    let chain = chain_id("refused");
    let key = format!("skylark:bundle:{chain}");
    let first = put(&chain, "t", "1");
    assert_eq!(first["status"], 0, "{first}");
    let before = local.hgetall(&key);
    assert!(
        before.contains_key("t") && before.contains_key("@v:t"),
        "{:?}",
        before.keys()
    );
    let ttl = || -> i64 {
        redis::cmd("TTL")
            .arg(&key)
            .query(&mut local.conn())
            .expect("TTL")
    };
    let ttl_before = ttl();

    for (task, seed) in [("t", "2"), ("u", "3")] {
        let refused = put(&chain, task, seed);
        assert_eq!(refused["status"], BACKLOGGED, "{refused}");
        assert_eq!(
            local.hgetall(&key),
            before,
            "a refused put of {task} changed the bundle"
        );
    }
    let ttl_after = ttl();
    assert!(
        ttl_after <= ttl_before && ttl_after > ttl_before - 30,
        "TTL {ttl_before} then {ttl_after}"
    );
    assert_eq!(zcard(&local, "skylark:outbox"), 1);
}

#[test]
fn a_full_outbox_refuses_puts_until_it_drains() {
    let local = Redis::start();
    let global_port = free_port();
    let global_url = format!("redis://127.0.0.1:{global_port}");
    let put = |chain: &str| -> Value {
        Guest::new("probe", &local.url)
            .env("SKYLARK_GLOBAL_URL", &global_url)
            .env("SKYLARK_MAX_OUTBOX", "3")
            .env("SKYLARK_EXIT_FLUSH_MS", "0")
            .env("SKYLARK_RETRY_BASE_MS", "20")
            .env("SKYLARK_SWEEP_MS", "50")
            .env("SKYLARK_LEASE_MS", "200")
            .env("SKYLARK_CONNECT_TIMEOUT_MS", "100")
            .args(["put", chain, "t", "1024", "1"])
            .run(RUN_TIMEOUT)
            .assert_success()
            .json()
    };

    // The global store is down: every job stays in the outbox.
    let chains: Vec<String> = (0..4).map(|_| chain_id("backlog")).collect();
    for chain in &chains[..3] {
        let out = put(chain);
        assert_eq!(out["status"], 0, "{out}");
    }
    assert_eq!(zcard(&local, "skylark:outbox"), 3);

    let refused = put(&chains[3]);
    assert_eq!(refused["status"], BACKLOGGED, "{refused}");
    let msg = refused["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("SKYLARK_MAX_OUTBOX is 3") && msg.contains("holds 3"),
        "{msg}"
    );
    assert!(
        local
            .hgetall(&format!("skylark:bundle:{}", chains[3]))
            .is_empty(),
        "a refused put stores nothing"
    );
    assert_eq!(zcard(&local, "skylark:outbox"), 3);

    // The global store comes back; a sweeping process drains the outbox, every accepted
    // put reaches it, and puts are accepted again.
    let global = Redis::start_with(ServerConfig::tcp(global_port))
        .unwrap_or_else(|e| panic!("start the global redis-server: {e}"));
    let global_client = redis::Client::open(global_url.as_str()).expect("global url");
    eventually("the global store to start", || {
        global_client
            .get_connection_with_timeout(Duration::from_millis(200))
            .is_ok()
    });
    let drainer = Guest::new("probe", &local.url)
        .env("SKYLARK_GLOBAL_URL", &global_url)
        .env("SKYLARK_SWEEP_MS", "50")
        .env("SKYLARK_LEASE_MS", "200")
        .args(["get", &chains[0], "--sleep-after-ms", "20000"])
        .spawn();
    eventually("the outbox to drain", || {
        zcard(&local, "skylark:outbox") == 0
    });
    drainer.kill();
    let mut g = global_client.get_connection().expect("global connection");
    for chain in &chains[..3] {
        let n: u64 = redis::cmd("HLEN")
            .arg(format!("skylark:bundle:{chain}"))
            .query(&mut g)
            .expect("HLEN");
        assert!(n >= 1, "chain {chain} never reached the global store");
    }
    let again = put(&chains[3]);
    assert_eq!(again["status"], 0, "{again}");
    drop(global);
}

#[test]
fn a_redis_at_maxmemory_fails_the_put_clearly() {
    let local = Redis::start();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .exec(&mut local.conn())
        .expect("CONFIG SET");
    let used: String = redis::cmd("INFO")
        .arg("memory")
        .query(&mut local.conn())
        .expect("INFO");
    let used: u64 = used
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory");
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used + 512 * 1024)
        .exec(&mut local.conn())
        .expect("CONFIG SET");

    let put = |chain: &str, size: &str| -> Value {
        Guest::new("probe", &local.url)
            .args(["put", chain, "t", size, "1"])
            .run(RUN_TIMEOUT)
            .assert_success()
            .json()
    };
    let first = chain_id("oom");
    let ok = put(&first, "65536");
    assert_eq!(ok["status"], 0, "{ok}");
    // Fill memory past the limit, then one more put.
    let mut refused = None;
    for _ in 0..20 {
        let out = put(&chain_id("oom"), "262144");
        if out["status"] != 0 {
            refused = Some(out);
            break;
        }
    }
    let refused = refused.expect("a put beyond maxmemory was refused");
    assert_eq!(refused["status"], STORE_ERROR, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("OOM"),
        "{refused}"
    );
    // What was stored before is intact.
    assert_eq!(
        local.hgetall(&format!("skylark:bundle:{first}"))["t"].len(),
        65536
    );
}
