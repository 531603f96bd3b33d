//! The Earth-observation workflow as a fan-out / fan-in DAG (issue 17, section 3) on the
//! emulated constellation (`Constellation::for_system_tests`: one real redis-server per
//! node behind link emulators, real wasmedge with the plugin, the example functions):
//!
//! ```text
//!                 detect-a (pi5u4)
//! preprocess  <                    >  alarm (pi4u5)
//!  (pi5u2)        detect-b (pi4u6)
//! ```
//!
//! `preprocess` puts with `destinations` = both detectors' nodes, each detector puts with
//! `destination` = the alarm's node (and when it will start), and `alarm` joins both
//! detections. Every step must
//! find what it needs in its own node's store, brought there by propagation (the
//! producing processes' exit flush has delivered the copies when they exit).

use serde_json::Value;
use skylark_netemu::constellation::Constellation;
use skylark_testkit::{chain_id, RUN_TIMEOUT};

const PRODUCER: &str = "pi5u2";
const DETECTOR_A: &str = "pi5u4";
const DETECTOR_B: &str = "pi4u6";
const JOIN: &str = "pi4u5";
const GLOBAL: &str = "pi5u1";
/// When the join starts, from a detector's put: after the slower detector, so each
/// detector's put tells the election (`successor_in_ms`) that the copy has time to
/// arrive. Without it the retrieval rule may keep a small result on its detector, one
/// hop from the join, when reading it from there costs the join no more than the copy.
const JOIN_IN: &str = "200";

fn step(c: &Constellation, node: &str, module: &str, args: &[&str]) -> Value {
    c.guest(module, node)
        .args(args)
        .run(RUN_TIMEOUT)
        .assert_success()
        .json()
}

fn names<T>(m: &std::collections::BTreeMap<String, T>) -> Vec<&str> {
    m.keys().map(String::as_str).collect()
}

#[test]
fn preprocess_fans_out_to_two_detectors_and_alarm_joins_them() {
    let c = Constellation::for_system_tests();
    let chain = chain_id("dag");
    let dests = format!("{DETECTOR_A},{DETECTOR_B}");

    let pre = step(
        &c,
        PRODUCER,
        "preprocess",
        &[&chain, "--size", "65536", "--dests", &dests],
    );
    assert_eq!(pre["bytes"], 65536, "{pre}");
    // Both detectors' nodes received preprocess's state by propagation.
    let image = c.bundle(PRODUCER, &chain);
    for node in [DETECTOR_A, DETECTOR_B, GLOBAL] {
        assert_eq!(c.bundle(node, &chain), image, "{node}");
    }

    // The two detectors run at once, on their own nodes, with different thresholds.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            step(
                &c,
                DETECTOR_A,
                "detect",
                &[
                    &chain,
                    "--task",
                    "detect-a",
                    "--dest",
                    JOIN,
                    "--successor-in-ms",
                    JOIN_IN,
                ],
            )
        });
        let b = s.spawn(|| {
            step(
                &c,
                DETECTOR_B,
                "detect",
                &[
                    &chain,
                    "--task",
                    "detect-b",
                    "--threshold",
                    "200",
                    "--dest",
                    JOIN,
                    "--successor-in-ms",
                    JOIN_IN,
                ],
            )
        });
        (a.join().expect("detector a"), b.join().expect("detector b"))
    });
    for (det, node) in [(&a, DETECTOR_A), (&b, DETECTOR_B)] {
        assert_eq!(det["source"]["tier"], "local", "{det}");
        assert_eq!(det["source"]["node"], node, "{det}");
        assert_eq!(det["image_bytes"], 65536, "{det}");
    }
    let count = |d: &Value| d["detections"].as_u64().expect("a detection count");
    let (na, nb) = (count(&a), count(&b));
    assert!(na >= 1, "the synthetic image has bright blobs: {a}");

    // The alarm's node received both detections (and the image, which neither
    // detector's record places there).
    assert_eq!(
        names(&c.bundle(JOIN, &chain)),
        ["detect-a", "detect-b", "preprocess"]
    );
    let placement = c.placement(JOIN, &chain);
    assert_eq!(placement["detect-a"], JOIN);
    assert_eq!(placement["detect-b"], JOIN);

    let alarm = step(
        &c,
        JOIN,
        "alarm",
        &[&chain, "--inputs", "detect-a,detect-b"],
    );
    assert_eq!(alarm["source"]["tier"], "local", "{alarm}");
    assert_eq!(alarm["bundle_fields"], 3, "{alarm}");
    assert_eq!(alarm["detections"].as_u64(), Some(na.max(nb)), "{alarm}");
    assert_eq!(alarm["alarm"], true, "{alarm}");

    // Every step's state reached the global store.
    assert_eq!(
        names(&c.bundle(GLOBAL, &chain)),
        ["alarm", "detect-a", "detect-b", "preprocess"]
    );
}

/// The fan-in join started before its inputs exist (`alarm --wait-inputs-ms`, the get
/// option `wait_for`): it waits on its own node until both detections have arrived by
/// propagation, then decides; with a short deadline and one detector missing it fails
/// with `TimedOut`, naming the missing input.
#[test]
fn a_join_started_before_its_inputs_waits_for_them() {
    let c = Constellation::for_system_tests();
    let chain = chain_id("dag-wait");
    let dests = format!("{DETECTOR_A},{DETECTOR_B}");
    step(
        &c,
        PRODUCER,
        "preprocess",
        &[&chain, "--size", "65536", "--dests", &dests],
    );
    // The join starts first: neither detection has been put yet.
    let join = c
        .guest("alarm", JOIN)
        .args([
            chain.as_str(),
            "--inputs",
            "detect-a,detect-b",
            "--wait-inputs-ms",
            "20000",
        ])
        .spawn();
    assert!(
        !c.bundle(JOIN, &chain).contains_key("detect-a"),
        "no detection may exist before the join starts"
    );
    let detect = |node: &str, task: &str| {
        step(
            &c,
            node,
            "detect",
            &[
                &chain,
                "--task",
                task,
                "--dest",
                JOIN,
                "--successor-in-ms",
                JOIN_IN,
            ],
        )
    };
    let a = detect(DETECTOR_A, "detect-a");
    let b = detect(DETECTOR_B, "detect-b");
    let alarm = join.wait(RUN_TIMEOUT);
    alarm.assert_success();
    let alarm = alarm.json();
    let count = |d: &Value| d["detections"].as_u64().expect("a detection count");
    assert_eq!(alarm["source"]["tier"], "local", "{alarm}");
    assert_eq!(
        alarm["detections"].as_u64(),
        Some(count(&a).max(count(&b))),
        "{alarm}"
    );

    // A join whose second input never comes: TimedOut at its deadline.
    let chain = chain_id("dag-timeout");
    step(
        &c,
        PRODUCER,
        "preprocess",
        &[&chain, "--size", "4096", "--dests", &dests],
    );
    detect(DETECTOR_A, "detect-a");
    let late = c
        .guest("alarm", JOIN)
        .args([
            chain.as_str(),
            "--inputs",
            "detect-a,detect-b",
            "--wait-inputs-ms",
            "300",
        ])
        .run(RUN_TIMEOUT);
    assert!(!late.status.success(), "{late:?}");
    assert!(
        late.stderr.contains("TimedOut") || late.stderr.contains("timed out"),
        "{}",
        late.stderr
    );
}
