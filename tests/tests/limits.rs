//! Limits that protect a node from a flood of puts: the bounded outbox
//! (`SKYLARK_MAX_OUTBOX` jobs, `SKYLARK_MAX_OUTBOX_BYTES` bytes: status `Backlogged`), the
//! bundle limit checked at put time (`SKYLARK_MAX_BUNDLE_BYTES`: `BundleTooLarge`), the
//! namespace's quota (`SKYLARK_NAMESPACE_MAX_BYTES`: `QuotaExceeded`; issue 16 point 3)
//! and a Redis at its `maxmemory`. Refused puts store nothing and say why; accepted ones
//! are not lost. Real guests, real wasmedge, real redis-servers.

use serde_json::Value;
use skylark_testkit::{chain_id, free_port, Guest, Redis, ServerConfig, RUN_TIMEOUT};
use std::time::Duration;

const BACKLOGGED: i64 = 23;
const STORE_ERROR: i64 = 22;
const BUNDLE_TOO_LARGE: i64 = 18;
const QUOTA_EXCEEDED: i64 = 19;

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

/// The fields of `chain`'s bundle in namespace `ns` (state and reserved), by name.
fn fields(redis: &Redis, ns: &str, chain: &str) -> Vec<String> {
    redis
        .hgetall(&format!("{ns}:bundle:{chain}"))
        .into_keys()
        .collect()
}

#[test]
fn a_put_that_would_outgrow_the_bundle_limit_stores_nothing() {
    // Before issue 16 point 3 a put never looked at its bundle's size: the second put
    // below was accepted, and the bundle could then no longer be read by anyone. With
    // propagation on, values of 6,000 bytes go as one script (`outbox::INLINE_MAX`),
    // values of 60,000 as a transaction.
    for (propagation, size) in [("off", 60000), ("on", 60000), ("on", 6000)] {
        bundle_limit_at_put(propagation, size);
    }
}

/// A put of `size` bytes to a bundle holding one of `size`, with a bundle limit of
/// `size * 5 / 3`.
fn bundle_limit_at_put(propagation: &str, size: u64) {
    let limit = (size * 5 / 3).to_string();
    {
        let local = Redis::start();
        let put = |task: &str, size: &str| -> Value {
            Guest::new("probe", &local.url)
                .env("SKYLARK_PROPAGATION", propagation)
                .env("SKYLARK_EXIT_FLUSH_MS", "0")
                .env("SKYLARK_MAX_BUNDLE_BYTES", &limit)
                .args(["put", "big", task, size, "1"])
                .run(RUN_TIMEOUT)
                .assert_success()
                .json()
        };
        let first = put("a", &size.to_string());
        assert_eq!(first["status"], 0, "{propagation}: {first}");
        let before = local.hgetall("skylark:bundle:big");
        let jobs = local.outbox_len();

        let refused = put("b", &size.to_string());
        assert_eq!(
            refused["status"], BUNDLE_TOO_LARGE,
            "{propagation}: {refused}"
        );
        let msg = refused["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(&format!("SKYLARK_MAX_BUNDLE_BYTES is {limit}"))
                && msg.contains(&format!(" {} bytes", 2 * size + 2)),
            "{propagation}: {msg}"
        );
        assert_eq!(
            local.hgetall("skylark:bundle:big"),
            before,
            "{propagation}: a refused put changes nothing"
        );
        assert_eq!(local.outbox_len(), jobs, "{propagation}: and leaves no job");
        if propagation == "on" {
            // (Counters are written by propagation's flush.)
            assert_eq!(local.stats("test-node").get("limit_refusals"), Some(&1));
        }

        // Replacing a field counts its new size, not both.
        let replaced = put("a", &(size * 5 / 3 - 100).to_string());
        assert_eq!(replaced["status"], 0, "{propagation}: {replaced}");
        let got = Guest::new("probe", &local.url)
            .env("SKYLARK_PROPAGATION", propagation)
            .env("SKYLARK_MAX_BUNDLE_BYTES", &limit)
            .args(["get", "big"])
            .run(RUN_TIMEOUT)
            .assert_success()
            .json();
        assert_eq!(
            got["status"], 0,
            "{propagation}: what a put accepts a read delivers: {got}"
        );
    }
}

#[test]
fn a_namespace_at_its_quota_cannot_grow_while_others_can() {
    // With propagation on, values of 8,000 bytes go as one script
    // (`outbox::INLINE_MAX`), values of 80,000 as a transaction.
    for (propagation, size) in [("off", 80000), ("on", 80000), ("on", 8000)] {
        namespace_at_its_quota(propagation, size);
    }
}

/// Puts of `size` bytes against a quota of `size * 5 / 2`.
fn namespace_at_its_quota(propagation: &str, size: usize) {
    let local = Redis::start();
    let quota = (size * 5 / 2).to_string();
    let size = &size.to_string();
    let put = |ns: &str, chain: &str, size: &str| -> Value {
        Guest::new("probe", &local.url)
            .env("SKYLARK_NAMESPACE", ns)
            .env("SKYLARK_PROPAGATION", propagation)
            .env("SKYLARK_EXIT_FLUSH_MS", "0")
            .env("SKYLARK_NAMESPACE_MAX_BYTES", &quota)
            .args(["put", chain, "t", size, "1"])
            .run(RUN_TIMEOUT)
            .assert_success()
            .json()
    };
    for chain in ["c1", "c2"] {
        let out = put("tenant-a", chain, size);
        assert_eq!(out["status"], 0, "{propagation}: {out}");
    }
    // Before issue 16 point 3 this put was accepted: nothing bounded a namespace.
    let refused = put("tenant-a", "c3", size);
    assert_eq!(
        refused["status"], QUOTA_EXCEEDED,
        "{propagation}: {refused}"
    );
    let msg = refused["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("quota of {quota}")) && msg.contains("SKYLARK_NAMESPACE_MAX_BYTES"),
        "{msg}"
    );
    assert!(
        fields(&local, "tenant-a", "c3").is_empty(),
        "nothing stored"
    );
    // A put that does not grow its bundle is accepted at the quota; another tenant's
    // quota is its own.
    let same = put("tenant-a", "c1", size);
    assert_eq!(same["status"], 0, "{same}");
    let other = put("tenant-b", "c3", size);
    assert_eq!(other["status"], 0, "{other}");
    // What tenant-a stored is intact.
    for chain in ["c1", "c2"] {
        assert_eq!(
            local.hgetall(&format!("tenant-a:bundle:{chain}"))["t"]
                .len()
                .to_string(),
            *size
        );
    }
}

#[test]
fn a_namespace_gets_its_quota_back_when_its_bundles_go() {
    let local = Redis::start();
    let put = |chain: &str, ttl: &str| -> Value {
        Guest::new("probe", &local.url)
            .env("SKYLARK_PROPAGATION", "off")
            .env("SKYLARK_TTL_SECS", ttl)
            .env("SKYLARK_NAMESPACE_MAX_BYTES", "200000")
            .args(["put", chain, "t", "150000", "1"])
            .run(RUN_TIMEOUT)
            .assert_success()
            .json()
    };
    let first = put("short", "1");
    assert_eq!(first["status"], 0, "{first}");
    let refused = put("long", "600");
    assert_eq!(refused["status"], QUOTA_EXCEEDED, "{refused}");
    // The first bundle expires; the next put finds it gone and counts it no more.
    eventually("the short-lived bundle to expire", || {
        let n: u64 = redis::cmd("EXISTS")
            .arg("skylark:bundle:short")
            .query(&mut local.conn())
            .expect("EXISTS");
        n == 0
    });
    let mut accepted = Value::Null;
    eventually("a put within the quota again", || {
        accepted = put("long", "600");
        accepted["status"] == 0
    });
    let total: u64 = redis::cmd("HGET")
        .arg("skylark:usage")
        .arg("@total")
        .query(&mut local.conn())
        .expect("HGET @total");
    assert!(
        (150000..200000).contains(&total),
        "usage counts one bundle: {total}"
    );
    // The usage keys expire like the outbox, with the TTL of the last put.
    for key in ["skylark:usage", "skylark:usage:expiry"] {
        let ttl: i64 = redis::cmd("TTL")
            .arg(key)
            .query(&mut local.conn())
            .expect("TTL");
        assert!((1..=600).contains(&ttl), "{key} has TTL {ttl}");
    }
}

#[test]
fn an_outbox_full_of_bytes_refuses_puts_until_it_drains() {
    // A job lists its task ids: 20 ids of 100 bytes make a job of about 2.3 KB, and two
    // of them do not fit 4 KiB. Before issue 16 point 3 the outbox counted jobs only.
    let local = Redis::start();
    let global_port = free_port();
    let global_url = format!("redis://127.0.0.1:{global_port}");
    let prefix = "p".repeat(98);
    let put = |chain: &str| -> Value {
        Guest::new("probe", &local.url)
            .env("SKYLARK_GLOBAL_URL", &global_url)
            .env("SKYLARK_MAX_OUTBOX_BYTES", "4096")
            .env("SKYLARK_EXIT_FLUSH_MS", "0")
            .env("SKYLARK_RETRY_BASE_MS", "20")
            .env("SKYLARK_SWEEP_MS", "50")
            .env("SKYLARK_LEASE_MS", "200")
            .env("SKYLARK_CONNECT_TIMEOUT_MS", "100")
            .args(["put-many", chain, &prefix, "20", "16", "1"])
            .run(RUN_TIMEOUT)
            .assert_success()
            .json()
    };
    let first = put("bytes1");
    assert_eq!(first["status"], 0, "{first}");

    let refused = put("bytes2");
    assert_eq!(refused["status"], BACKLOGGED, "{refused}");
    let msg = refused["error"].as_str().unwrap_or_default();
    assert!(msg.contains("SKYLARK_MAX_OUTBOX_BYTES 4096"), "{msg}");
    assert!(
        fields(&local, "skylark", "bytes2").is_empty(),
        "nothing stored"
    );
    assert_eq!(local.outbox_len(), 1);
    let counted: u64 = redis::cmd("HGET")
        .arg("skylark:outbox:bytes")
        .arg("n")
        .query(&mut local.conn())
        .expect("HGET outbox bytes");
    let job: u64 = redis::cmd("HVALS")
        .arg("skylark:outbox:jobs")
        .query::<Vec<Vec<u8>>>(&mut local.conn())
        .expect("HVALS")
        .iter()
        .map(|j| j.len() as u64)
        .sum();
    assert_eq!(counted, job, "the count is the jobs' bytes");
    assert!(job > 2048, "a job of {job} bytes");

    // The global store comes back; a process drains the outbox, which forgets the bytes.
    let global = Redis::start_with(ServerConfig::tcp(global_port))
        .unwrap_or_else(|e| panic!("start the global redis-server: {e}"));
    let drainer = Guest::new("probe", &local.url)
        .env("SKYLARK_GLOBAL_URL", &global_url)
        .env("SKYLARK_SWEEP_MS", "50")
        .env("SKYLARK_LEASE_MS", "200")
        .args(["get", "bytes1", "--sleep-after-ms", "20000"])
        .spawn();
    eventually("the outbox to drain", || local.outbox_len() == 0);
    drainer.kill();
    let left: Option<u64> = redis::cmd("HGET")
        .arg("skylark:outbox:bytes")
        .arg("n")
        .query(&mut local.conn())
        .expect("HGET outbox bytes");
    assert_eq!(left.unwrap_or(0), 0, "a drained outbox counts no bytes");
    let again = put("bytes2");
    assert_eq!(again["status"], 0, "{again}");
    drop(global);
}
