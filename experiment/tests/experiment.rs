//! Smoke version of the constellation experiment (`scripts/experiment.sh --quick`), so the
//! experiment cannot rot: the emulated constellation comes up, every policy and state
//! layout runs the EO workflow with real wasmedge and redis-servers, the throughput mode,
//! the scenarios and the fusion measurement run, and the report, plot and records are
//! written and consistent. It asserts what
//! does not depend on timing; the numbers themselves belong to BENCHMARKS.md.

use serde_json::Value;
use std::process::Command;

#[test]
fn quick_experiment_writes_a_consistent_report() {
    let out = tempfile::tempdir().expect("temp dir");
    let run = Command::new(env!("CARGO_BIN_EXE_experiment"))
        .args([
            "--quick",
            "--mode",
            "interp",
            "--states",
            "bundled,single",
            "--out",
        ])
        .arg(out.path())
        .output()
        .expect("run the experiment binary");
    let stderr = String::from_utf8_lossy(&run.stderr);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "experiment failed:\n{stderr}");
    assert!(stdout.contains("T(W)"), "no headline on stdout:\n{stdout}");

    let report = std::fs::read_to_string(out.path().join("report.md")).expect("report.md");
    for word in [
        "skylark",
        "research",
        "random",
        "stateless",
        "bundled",
        "single",
        "Hand-off timing",
        "## Scenario far",
        "## Scenario slot-change",
        "## Scenario dag",
        "## Fusion",
    ] {
        assert!(report.contains(word), "report lacks {word}:\n{report}");
    }
    let png = std::fs::read(out.path().join("latency.png")).expect("latency.png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    let records: Value = serde_json::from_slice(
        &std::fs::read(out.path().join("records.json")).expect("records.json"),
    )
    .expect("records.json is JSON");
    let workflows = records["workflows"]
        .as_array()
        .or_else(|| records.as_array())
        .expect("a list of workflow records");
    assert_eq!(workflows.len(), 8, "4 policies x 2 layouts x 1 repetition");
    for scenario in ["far", "slot-change", "dag"] {
        let dir = out.path().join(format!("scenario-{scenario}"));
        assert!(dir.join("report.md").is_file(), "no {scenario} report");
    }
    // The DAG ran for every policy, its detectors side by side.
    let dag: Value = serde_json::from_slice(
        &std::fs::read(out.path().join("scenario-dag/records.json")).expect("dag records"),
    )
    .expect("dag records are JSON");
    let dag = dag["workflows"]
        .as_array()
        .or_else(|| dag.as_array())
        .expect("a list of dag workflow records");
    assert_eq!(dag.len(), 4, "4 policies x 1 repetition");
    for w in dag {
        let names: Vec<&str> = w["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .filter_map(|s| s["function"].as_str())
            .collect();
        assert_eq!(names, ["preprocess", "detect", "detect2", "alarm"], "{w}");
    }
    assert!(out.path().join("fusion.json").is_file(), "no fusion.json");
    for w in workflows {
        let steps = w["steps"].as_array().expect("steps");
        let names: Vec<&str> = steps
            .iter()
            .filter_map(|s| s["function"].as_str())
            .collect();
        assert_eq!(names, ["preprocess", "detect", "detect2", "alarm"], "{w}");
        let policy = w["config"]["policy"].as_str().unwrap_or("");
        let single = w["config"]["state"] == "single";
        for s in &steps[1..] {
            let gets = s["gets"].as_u64().unwrap_or(0);
            // alarm reads two keys in the single layout, every other read is one request.
            let want = if single && s["function"] == "alarm" {
                2
            } else {
                1
            };
            assert_eq!(gets, want, "{s}");
            if policy == "stateless" {
                assert_eq!(s["local_gets"], 0, "stateless reads the global store: {s}");
            }
        }
        assert!(w["t_w_ms"].as_f64().unwrap_or(0.0) > 0.0);
        // Sequential workflows start on quiet links (experiment::quiet).
        assert_eq!(w["outbox_at_start"], 0, "started with jobs pending: {w}");
        assert_eq!(w["quiet"]["undrained"], 0, "did not drain: {w}");
    }
    assert!(
        report.contains("0 workflows started with jobs still in an outbox"),
        "{report}"
    );
}
