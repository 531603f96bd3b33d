//! Every key the plugin writes expires once unused (issue 16 point 3, in part): the
//! node's counters `<ns>:stats:<node>` get a TTL (30 days) with every update, and the
//! outbox (`<ns>:outbox`, `<ns>:outbox:jobs`) the bundle TTL with every put, so a node or
//! namespace that stops running leaves nothing behind for ever. Real wasmedge with the
//! plugin, a real redis-server.

use skylark_testkit::{chain_id, Guest, Redis, NS, RUN_TIMEOUT};

#[test]
fn node_counters_expire() {
    let redis = Redis::start();
    let run = Guest::new("probe", &redis.url)
        .env("SKYLARK_PROPAGATION", "on")
        .env("SKYLARK_EXIT_FLUSH_MS", "0")
        .args(["put", &chain_id("ttl"), "pre", "64", "1"])
        .run(RUN_TIMEOUT);
    run.assert_success();
    assert_eq!(run.json()["status"], 0, "{}", run.stderr);
    let key = format!("{NS}:stats:test-node");
    assert!(
        redis.stats("test-node").get("puts") >= Some(&1),
        "counters written"
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query(&mut redis.conn())
        .expect("TTL");
    assert!(
        (29 * 86_400..=30 * 86_400).contains(&ttl),
        "{key} has TTL {ttl}"
    );
    // No topology and no global store: the job waits in the outbox, which expires with
    // the bundle TTL (SKYLARK_TTL_SECS, default one day).
    assert_eq!(redis.outbox_len(), 1);
    for key in [format!("{NS}:outbox"), format!("{NS}:outbox:jobs")] {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query(&mut redis.conn())
            .expect("TTL");
        assert!((86_000..=86_400).contains(&ttl), "{key} has TTL {ttl}");
    }
}
