//! Scripts by digest (issue 14 point 3): the put, the bundle read, the outbox claim and the
//! copies call their Lua scripts with `EVALSHA`, and a server whose script cache was
//! emptied (`SCRIPT FLUSH`) between or during puts never gets half a put: every put is
//! written whole (values, versions, job) or not at all, and succeeds. Real redis-servers;
//! the guest tests run the real plugin under wasmedge.

use probe::pattern;
use skylark_core::config::{Credentials, Tls};
use skylark_core::fence::{Condition, Guard, Limits, Verdict};
use skylark_core::outbox::{self, Guarded, GuardedPut};
use skylark_core::store::Store;
use skylark_testkit::{chain_id, Guest, Redis, NS, RUN_TIMEOUT};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn store(r: &Redis) -> Arc<Store> {
    let d = Duration::from_secs(5);
    Store::new(&r.url, &Credentials::default(), &Tls::default(), d, d).expect("store")
}

/// The job every [`put`] records.
const JOB: &str = r#"{"job":"json"}"#;

/// One put of `value` to task `t` of `bundle` as the plugin makes it (`write::put`): one
/// script by digest for a small value, a transaction for a large one; with a namespace
/// quota of `quota` bytes (0: none), which picks the scripts that count the namespace.
fn put(
    store: &Store,
    bundle: &str,
    value: &[u8],
    max_outbox: u64,
    guard: &Guard,
    quota: u64,
) -> Guarded {
    let job = outbox::new_id(1);
    let fields: [(&str, &[u8]); 1] = [("t", value)];
    let limits = Limits::local(256 << 20, NS, quota);
    let put = GuardedPut::new(
        NS,
        bundle,
        &fields,
        Some(Duration::from_secs(600)),
        &job,
        JOB,
        1,
        outbox::Bounds {
            jobs: max_outbox,
            bytes: 64 << 20,
        },
        guard,
        &limits,
    );
    let replies = if put.is_small() {
        let (script, args) = put.inline();
        vec![store.query_script(script, &args).expect("the put runs")]
    } else {
        let [g, v, u] = put.commands();
        store
            .query_transaction(&[&g, &v, &u])
            .expect("the put runs")
    };
    outbox::guarded_reply(&replies).expect("a put reply")
}

fn flush(r: &Redis) {
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query::<()>(&mut r.conn())
        .expect("SCRIPT FLUSH");
}

/// How many requests the server refused with `NOSCRIPT` (INFO errorstats).
fn noscript_errors(r: &Redis) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("errorstats")
        .query(&mut r.conn())
        .expect("INFO errorstats");
    info.lines()
        .find_map(|l| l.strip_prefix("errorstat_NOSCRIPT:count="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The bundle's value of `t`, its version, and whether refusal marks are left.
fn written(r: &Redis, bundle: &str) -> (Option<Vec<u8>>, u64, bool) {
    let h = r.hgetall(bundle);
    let version = h
        .get("@v:t")
        .and_then(|v| String::from_utf8_lossy(v).parse().ok())
        .unwrap_or(0);
    let marks = h.keys().any(|k| k.starts_with("@refused"));
    (h.get("t").cloned(), version, marks)
}

fn jobs(r: &Redis) -> usize {
    redis::cmd("HLEN")
        .arg(format!("{NS}:outbox:jobs"))
        .query(&mut r.conn())
        .expect("HLEN")
}

#[test]
fn a_flushed_script_cache_never_half_applies_a_put() {
    flushed_cache_never_half_applies_a_put(0);
}

#[test]
fn a_flushed_script_cache_never_half_applies_a_put_under_a_quota() {
    flushed_cache_never_half_applies_a_put(1 << 30);
}

fn flushed_cache_never_half_applies_a_put(quota: u64) {
    let r = Redis::start();
    let s = store(&r);
    let bundle = format!("{NS}:bundle:{}", chain_id("flush"));
    let plain = Guard::default();
    let mut last = 0;
    // The cache emptied before every put, small (one script) and large (a transaction)
    // in turn: each put is written whole, with its version and its job.
    for i in 0..40u64 {
        flush(&r);
        let value = pattern(if i % 2 == 0 { 1024 } else { 70_000 }, i);
        let Guarded::Stored(n, versions) = put(&s, &bundle, &value, 1_000_000, &plain, quota)
        else {
            panic!("put {i} not stored");
        };
        assert_eq!(n, i + 1, "put {i}: its job");
        let (v, version, marks) = written(&r, &bundle);
        assert_eq!(v.as_deref(), Some(value.as_slice()), "put {i}: its value");
        assert!(versions[0] > last && version == versions[0], "put {i}");
        assert!(!marks, "put {i}: refusal marks left");
        last = version;
    }
    assert!(noscript_errors(&r) >= 20, "the flushes hit the puts");
    let before = r.hgetall(&bundle);

    // Refused after a flush, by the outbox bound and by the put's own guard: nothing
    // written, no job, no marks.
    for size in [1024, 70_000] {
        flush(&r);
        let value = pattern(size, 99);
        let full = put(&s, &bundle, &value, 40, &plain, quota);
        let bytes = 40 * JOB.len() as u64;
        assert_eq!(full, Guarded::Full { jobs: 40, bytes });
        flush(&r);
        let cas = Guard {
            condition: Condition::Version(1),
            idempotency: None,
        };
        let refused = put(&s, &bundle, &value, 1_000_000, &cas, quota);
        assert_eq!(
            refused,
            Guarded::Refused(Verdict::ConditionFailed(vec![last]))
        );
        assert_eq!(r.hgetall(&bundle), before, "{size}: a refused put wrote");
        assert_eq!(jobs(&r), 40);
    }

    // Flushed all the time while puts run: every put whole.
    let stop = Arc::new(AtomicBool::new(false));
    let flusher = {
        let (stop, url) = (Arc::clone(&stop), r.url.clone());
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .expect("flusher connection");
            while !stop.load(Ordering::Relaxed) {
                redis::cmd("SCRIPT")
                    .arg("FLUSH")
                    .query::<()>(&mut c)
                    .expect("SCRIPT FLUSH");
            }
        })
    };
    let flushed = noscript_errors(&r);
    for i in 0..300u64 {
        let value = pattern(if i % 10 == 0 { 70_000 } else { 1024 }, 1000 + i);
        let Guarded::Stored(n, versions) = put(&s, &bundle, &value, 1_000_000, &plain, quota)
        else {
            panic!("put {i} not stored");
        };
        assert_eq!(n, 41 + i, "put {i}: its job");
        let (v, version, marks) = written(&r, &bundle);
        assert_eq!(v.as_deref(), Some(value.as_slice()), "put {i}: its value");
        assert!(versions[0] > last && version == versions[0], "put {i}");
        assert!(!marks, "put {i}: refusal marks left");
        last = version;
    }
    stop.store(true, Ordering::Relaxed);
    flusher.join().expect("flusher");
    assert!(noscript_errors(&r) > flushed, "the flusher hit puts");
    assert_eq!(jobs(&r), 340);
}

#[test]
fn a_small_put_is_one_script_by_digest() {
    for quota in [0, 1 << 30] {
        a_small_put_is_one_script_by_digest_with(quota);
    }
}

fn a_small_put_is_one_script_by_digest_with(quota: u64) {
    let r = Redis::start();
    let s = store(&r);
    let bundle = format!("{NS}:bundle:{}", chain_id("sha"));
    for i in 0..50 {
        let value = pattern(1024, i);
        assert!(matches!(
            put(&s, &bundle, &value, 1000, &Guard::default(), quota),
            Guarded::Stored(..)
        ));
    }
    // The first put found no script and sent its text; the others only the digest.
    assert_eq!(r.command_calls("evalsha"), 50);
    assert_eq!(r.command_calls("eval"), 1);
    assert_eq!(r.command_calls("multi"), 0);
    assert_eq!(noscript_errors(&r), 1);
    // A large put is a transaction whose scripts go with their text.
    put(
        &s,
        &bundle,
        &pattern(70_000, 0),
        1000,
        &Guard::default(),
        quota,
    );
    assert_eq!(r.command_calls("multi"), 1);
    assert_eq!(r.command_calls("eval"), 3);
}

const NODE: &str = "scripts-node";

/// The probe with propagation on (a global store) and `args`; its JSON.
fn probe(local: &Redis, global: &Redis, args: &[&str]) -> serde_json::Value {
    Guest::new("probe", &local.url)
        .env("SKYLARK_GLOBAL_URL", &global.url)
        .env("SKYLARK_NODE_NAME", NODE)
        .args(args)
        .run(RUN_TIMEOUT)
        .assert_success()
        .json()
}

#[test]
fn the_plugin_calls_its_scripts_by_digest() {
    let (local, global) = (Redis::start(), Redis::start());
    let chain = chain_id("digest");
    let v = probe(
        &local,
        &global,
        &["bench", "put", &chain, "1024", "1", "200"],
    );
    assert_eq!(v["status"], 0, "{v}");
    let v = probe(&local, &global, &["get", &chain]);
    assert_eq!(v["status"], 0, "{v}");
    // 201 puts, the outbox claims, the reads of the bundle for its copies: by digest,
    // each script sent with its text at most once per process (the first meets an empty
    // cache). With their text only the record a finished job writes in the transaction
    // that removes it from the outbox, and that removal (`outbox::remove`, which keeps
    // the outbox's byte count: one script for a job and the jobs merged into it): two
    // per `EXEC`.
    let (by_digest, with_text) = (local.command_calls("evalsha"), local.command_calls("eval"));
    let transactions = local.command_calls("exec");
    assert!(by_digest > 201, "{by_digest} EVALSHA");
    assert!(
        with_text <= 2 * transactions + 10,
        "{with_text} EVAL, {transactions} EXEC"
    );
    // The copies to the global store too.
    assert!(global.command_calls("evalsha") >= 1);
    assert_eq!(global.state(&format!("{NS}:bundle:{chain}")).len(), 1);
}

#[test]
fn a_guest_putting_while_scripts_are_flushed_never_fails() {
    let (local, global) = (Redis::start(), Redis::start());
    let chain = chain_id("flushing");
    let stop = Arc::new(AtomicBool::new(false));
    let flusher = {
        let (stop, url) = (Arc::clone(&stop), local.url.clone());
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .expect("flusher connection");
            while !stop.load(Ordering::Relaxed) {
                redis::cmd("SCRIPT")
                    .arg("FLUSH")
                    .query::<()>(&mut c)
                    .expect("SCRIPT FLUSH");
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let v = probe(
        &local,
        &global,
        &["bench", "put", &chain, "1024", "1", "1000"],
    );
    stop.store(true, Ordering::Relaxed);
    flusher.join().expect("flusher");
    assert_eq!(v["status"], 0, "{v}");
    assert!(
        noscript_errors(&local) > 0,
        "the flushes hit the guest's requests"
    );
    let h = local.hgetall(&format!("{NS}:bundle:{chain}"));
    assert_eq!(h.get("f0"), Some(&pattern(1024, 0)));
    assert!(h.contains_key("@v:f0"));
    assert!(
        !h.keys().any(|k| k.starts_with("@refused")),
        "{:?}",
        h.keys()
    );
    assert_eq!(local.stats(NODE).get("puts").copied(), Some(1001));
}
