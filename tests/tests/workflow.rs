//! The Earth-observation workflow (preprocess -> detect -> alarm) and the bundled-state
//! example, run as real guests under wasmedge with the plugin against a real redis-server.

use skylark_testkit::{chain_id, Guest, Redis, RUN_TIMEOUT};

fn step(redis: &Redis, module: &str, args: &[&str]) -> serde_json::Value {
    Guest::new(module, &redis.url)
        .args(args)
        .run(RUN_TIMEOUT)
        .assert_success()
        .json()
}

#[test]
fn preprocess_detect_alarm_share_one_bundle() {
    let redis = Redis::start();
    let chain = chain_id("eo");
    let key = format!("skylark:bundle:{chain}");

    let pre = step(
        &redis,
        "preprocess",
        &[&chain, "--size", "65536", "--seed", "1"],
    );
    assert_eq!(pre["function"], "preprocess");
    assert_eq!(pre["bytes"], 65536);
    let stored = redis.state(&key);
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["preprocess"]);
    assert_eq!(stored["preprocess"].len(), 65536);

    let det = step(&redis, "detect", &[&chain]);
    assert_eq!(det["bundle_fields"], 1);
    assert_eq!(det["source"]["tier"], "local");
    assert_eq!(det["source"]["node"], "test-node");
    let detections = det["detections"].as_u64().expect("detections");
    assert!(
        detections >= 1,
        "the synthetic image has bright blobs: {det}"
    );
    assert_eq!(redis.state(&key).len(), 2);

    let alarm = step(&redis, "alarm", &[&chain]);
    assert_eq!(alarm["bundle_fields"], 2);
    assert_eq!(alarm["detections"].as_u64(), Some(detections));
    assert_eq!(alarm["alarm"], true);
    let stored = redis.state(&key);
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        ["alarm", "detect", "preprocess"]
    );

    // The same detections with a threshold above them raise no alarm.
    let high = (detections + 1).to_string();
    let calm = step(&redis, "alarm", &[&chain, "--min-detections", &high]);
    assert_eq!(calm["alarm"], false);
}

#[test]
fn detect_without_preprocess_fails_with_a_clear_message() {
    let redis = Redis::start();
    let chain = chain_id("orphan");
    let run = Guest::new("detect", &redis.url)
        .args([&chain])
        .run(RUN_TIMEOUT);
    assert!(!run.status.success(), "detect must fail: {}", run.stdout);
    assert!(
        run.stdout.is_empty(),
        "no result line on failure: {}",
        run.stdout
    );
    assert!(
        run.stderr.contains("NotFound") && run.stderr.contains(&chain),
        "stderr: {}",
        run.stderr
    );
}

#[test]
fn bundled_state_needs_fewer_round_trips_than_one_key_per_function() {
    let redis = Redis::start();
    let chain = chain_id("fused");
    let v = step(
        &redis,
        "bundled",
        &[
            &chain,
            "--functions",
            "5",
            "--size",
            "4096",
            "--mode",
            "both",
        ],
    );
    for mode in ["bundled", "single"] {
        assert_eq!(v[mode]["verified"], true, "{mode}: {v}");
        assert_eq!(v[mode]["puts"], 5, "{mode}: {v}");
    }
    // Bundled: one get per function. Single: function i fetches i predecessors.
    assert_eq!(v["bundled"]["gets"], 5);
    assert_eq!(v["single"]["gets"], 10);
    assert_eq!(v["bundled"]["round_trips"], 10);
    assert_eq!(v["single"]["round_trips"], 15);
    assert_eq!(redis.state(&format!("skylark:bundle:{chain}")).len(), 5);
    for i in 0..5 {
        assert_eq!(
            redis.state(&format!("skylark:bundle:{chain}-f{i}")).len(),
            1
        );
    }
}
