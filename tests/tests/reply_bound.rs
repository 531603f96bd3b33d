//! Every reply the plugin reads from a store over its runtime connections is bounded in
//! size (issue 16 point 4): the Redis client reads a reply whole, so a hostile store that
//! answers a bundle read or a copy with 256 MiB used to push all of it into the wasmedge
//! process within the call's deadline. Real wasmedge with the plugin and a real
//! redis-server as the node-local store; the global store is the test kit's hostile store
//! (`skylark_testkit::hostile_store`), which models an attacker, not Redis.

use skylark_testkit::{chain_id, eventually, Flood, Guest, HostileStore, Redis, NS, RUN_TIMEOUT};
use std::time::Duration;

const STORE_ERROR: i64 = 22;
const FLOOD: u64 = 256 << 20;
/// What wasmedge's peak RSS may grow by over a normal call's: far below the flood, above
/// the 13 MiB a bundle read may buffer here.
const GROWTH: u64 = 32 << 20;
/// Long enough for the whole flood to arrive over loopback: the deadline does not end the
/// call, the bound does.
const TIMEOUT_MS: &str = "20000";

fn peak_and_message(
    global_url: &str,
    local: &Redis,
    args: &[&str],
) -> (serde_json::Value, u64, String) {
    let (run, peak) = Guest::new("probe", &local.url)
        .env("SKYLARK_GLOBAL_URL", global_url)
        .env("SKYLARK_TIMEOUT_MS", TIMEOUT_MS)
        .env("SKYLARK_MAX_BUNDLE_BYTES", &(1 << 20).to_string())
        .env("SKYLARK_MAX_REPLY_BYTES", &(1 << 20).to_string())
        .env("SKYLARK_EXIT_FLUSH_MS", "2000")
        .env("SKYLARK_RETRY_BASE_MS", "100")
        .env("SKYLARK_LOG", "info")
        .args(args)
        .spawn()
        .wait_peak_rss(RUN_TIMEOUT);
    run.assert_success();
    (run.json(), peak, run.stderr)
}

/// Asserts that the call `(result, peak RSS, stderr)` against `hostile` failed with
/// `StoreError` naming the store and `error`, within milliseconds, with wasmedge's peak
/// RSS within [`GROWTH`] of `baseline` (the same call against a redis-server), and that
/// the plugin dropped the connection instead of reading the flood.
fn refused_unread(
    flood: Flood,
    hostile: &HostileStore,
    (v, peak, stderr): (&serde_json::Value, u64, &str),
    baseline: u64,
    error: &str,
) {
    eprintln!(
        "{flood:?}: {} ms, wasmedge's peak RSS {} MiB ({} MiB against redis-server), \
         the hostile store sent {} KiB",
        v["ms"],
        peak >> 20,
        baseline >> 20,
        hostile.sent() >> 10
    );
    assert_eq!(v["status"], STORE_ERROR, "{flood:?}: {v}\n{stderr}");
    let message = v["error"].as_str().unwrap_or("");
    assert!(
        message.contains(error) && message.contains(&hostile.url),
        "{flood:?}: {v}"
    );
    assert!(
        v["ms"].as_f64().unwrap_or(f64::MAX) < 5000.0,
        "{flood:?}: the call took {} ms",
        v["ms"]
    );
    assert!(
        peak < baseline + GROWTH,
        "{flood:?}: wasmedge's peak RSS was {} MiB, {} MiB against redis-server",
        peak >> 20,
        baseline >> 20
    );
    assert!(
        hostile.sent() < FLOOD / 4,
        "{flood:?}: the hostile store sent {} MiB",
        hostile.sent() >> 20
    );
}

#[test]
fn a_huge_reply_to_a_bundle_read_fails_the_call_without_being_read() {
    for flood in [Flood::Bulk, Flood::Elements] {
        let local = Redis::start();
        let hostile = HostileStore::start(flood, FLOOD);
        let chain = chain_id("flood");
        let get = ["get", &chain, "--policy", "stateless"];
        // The same call to a redis-server that holds no such bundle.
        let proper = Redis::start();
        let (v, baseline, stderr) = peak_and_message(&proper.url, &local, &get);
        assert_eq!(v["status"], 1, "not found: {v}\n{stderr}");
        let (v, peak, stderr) = peak_and_message(&hostile.url, &local, &get);
        // SKYLARK_MAX_BUNDLE_BYTES 1 MiB: state, versions and placement entries
        // (1 + 3 MiB) three times over, plus 1 MiB.
        refused_unread(
            flood,
            &hostile,
            (&v, peak, &stderr),
            baseline,
            "reply larger than 13631488 bytes",
        );
    }
}

/// The guest's own calls to a nearby node-local store (loopback) go over the calling
/// thread's blocking connection, which read replies whole before `direct.rs`: a node-local
/// store answering with 256 MiB pushed all of it into the process.
#[test]
fn a_huge_reply_from_the_node_local_store_fails_the_call_without_being_read() {
    for flood in [Flood::Bulk, Flood::Elements] {
        let hostile = HostileStore::start(flood, FLOOD);
        let chain = chain_id("flood-local");
        let get = ["get", &chain, "--local-only"];
        let run = |url: &str| {
            let (run, peak) = Guest::new("probe", url)
                .env("SKYLARK_TIMEOUT_MS", TIMEOUT_MS)
                .env("SKYLARK_MAX_BUNDLE_BYTES", &(1 << 20).to_string())
                .env("SKYLARK_MAX_REPLY_BYTES", &(1 << 20).to_string())
                .args(get)
                .spawn()
                .wait_peak_rss(RUN_TIMEOUT);
            run.assert_success();
            (run.json(), peak, run.stderr)
        };
        let proper = Redis::start();
        let (v, baseline, stderr) = run(&proper.url);
        assert_eq!(v["status"], 1, "not found: {v}\n{stderr}");
        let (v, peak, stderr) = run(&hostile.url);
        refused_unread(
            flood,
            &hostile,
            (&v, peak, &stderr),
            baseline,
            "reply larger than",
        );
    }
}

#[test]
fn a_copy_answered_with_a_huge_reply_fails_and_its_job_stays_in_the_outbox() {
    let local = Redis::start();
    let hostile = HostileStore::start(Flood::Bulk, FLOOD);
    let chain = chain_id("flood-copy");
    let put = ["put", &chain_id("baseline"), "pre", "1024", "7"];
    let proper = Redis::start();
    let (v, baseline, stderr) = peak_and_message(&proper.url, &local, &put);
    assert_eq!(v["status"], 0, "{v}\n{stderr}");
    let (v, peak, stderr) =
        peak_and_message(&hostile.url, &local, &["put", &chain, "pre", "1024", "7"]);
    eprintln!(
        "copy: wasmedge's peak RSS {} MiB ({} MiB against redis-server), the hostile store \
         sent {} KiB over {} connections",
        peak >> 20,
        baseline >> 20,
        hostile.sent() >> 10,
        hostile.connections()
    );
    // The put is acknowledged once it is in the node-local store.
    assert_eq!(v["status"], 0, "{v}\n{stderr}");
    assert!(
        hostile.connections() >= 1,
        "the copy never reached the hostile store\n{stderr}"
    );
    assert!(
        stderr.contains("copy to global failed")
            && stderr.contains("reply larger than")
            && stderr.contains("connection dropped [StoreError]"),
        "the copy's failure is not reported:\n{stderr}"
    );
    assert!(
        peak < baseline + GROWTH,
        "wasmedge's peak RSS was {} MiB, {} MiB against redis-server",
        peak >> 20,
        baseline >> 20
    );
    // Nothing acknowledged is lost: the bundle and its job stay on the node for a later
    // process to copy.
    let mut conn = local.conn();
    let jobs: i64 = redis::cmd("ZCARD")
        .arg(format!("{NS}:outbox"))
        .query(&mut conn)
        .expect("ZCARD");
    assert_eq!(jobs, 1, "{stderr}");
    let fields: i64 = redis::cmd("HLEN")
        .arg(format!("{NS}:bundle:{chain}"))
        .query(&mut conn)
        .expect("HLEN");
    assert!(fields >= 1);

    // A later process, whose global store answers properly, finishes the job once its
    // lease has run out.
    let global = Redis::start();
    let outbox_len = || -> i64 {
        redis::cmd("ZCARD")
            .arg(format!("{NS}:outbox"))
            .query(&mut local.conn())
            .unwrap_or(-1)
    };
    eventually(
        "a later process finishes the job",
        Duration::from_secs(60),
        || {
            let run = Guest::new("probe", &local.url)
                .env("SKYLARK_GLOBAL_URL", &global.url)
                .env("SKYLARK_EXIT_FLUSH_MS", "2000")
                .args(["get", &chain_id("other"), "--local-only"])
                .run(RUN_TIMEOUT);
            run.assert_success();
            outbox_len() == 0
        },
    );
    let copied: i64 = redis::cmd("HLEN")
        .arg(format!("{NS}:bundle:{chain}"))
        .query(&mut global.conn())
        .expect("HLEN on the global store");
    assert!(copied >= 1, "the bundle reached the global store");
}
