//! The crun path of runtimeclass/: an ex_function's guest runs as an OCI container under
//! Debian trixie's crun (its WasmEdge handler, selected by the `compat-smart` annotation)
//! with the Skylark plugin inside the container's root filesystem, talking to a real
//! redis-server (`runtimeclass/crun/run-local.sh`, findings in
//! `runtimeclass/crun/FINDINGS.md`).
//!
//! Where the machine cannot run containers the script says why in one line (exit 77).
//! Outside CI that is a visible skip; in CI (`CI=true`) it is a failure unless
//! `SKYLARK_SKIP_CRUN=<reason>` names why this CI machine may skip it.

use skylark_testkit::root;
use std::process::Command;

/// What the test makes of the script's exit code.
#[derive(Debug, PartialEq)]
enum Verdict {
    Pass,
    Skip(String),
    Fail(String),
}

/// `code`: the script's exit code; `ci`: whether this is a CI run; `opt_out`: the value of
/// `SKYLARK_SKIP_CRUN` (the reason this machine may skip), if any.
fn verdict(code: Option<i32>, why: &str, ci: bool, opt_out: Option<&str>) -> Verdict {
    match (code, opt_out.filter(|r| !r.trim().is_empty())) {
        (Some(0), _) => Verdict::Pass,
        (Some(77), Some(reason)) => Verdict::Skip(format!("{why} (allowed: {reason})")),
        (Some(77), None) if !ci => Verdict::Skip(why.to_string()),
        (Some(77), None) => Verdict::Fail(format!(
            "the crun test cannot run on this CI machine: {why}; \
             set SKYLARK_SKIP_CRUN=<reason> to allow that"
        )),
        (other, _) => Verdict::Fail(format!("run-local.sh failed ({other:?}): {why}")),
    }
}

#[test]
fn a_guest_runs_under_crun_with_the_plugin() {
    let script = root().join("runtimeclass/crun/run-local.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("WASMEDGE_PLUGIN_PATH", skylark_testkit::plugin_dir())
        .output()
        .expect("run runtimeclass/crun/run-local.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let opt_out = std::env::var("SKYLARK_SKIP_CRUN").ok();
    match verdict(out.status.code(), stdout.trim(), ci, opt_out.as_deref()) {
        Verdict::Pass => assert!(stdout.contains("OK"), "no OK line:\n{stdout}\n{stderr}"),
        Verdict::Skip(why) => eprintln!("SKIPPED: crun test on this machine: {why}"),
        Verdict::Fail(why) => panic!("{why}\n{stdout}\n{stderr}"),
    }
}

#[test]
fn a_skip_fails_in_ci_unless_a_reason_is_given() {
    assert_eq!(verdict(Some(0), "OK", true, None), Verdict::Pass);
    assert!(matches!(
        verdict(Some(77), "SKIP: no root", false, None),
        Verdict::Skip(_)
    ));
    assert!(matches!(
        verdict(Some(77), "SKIP: no root", true, None),
        Verdict::Fail(_)
    ));
    assert!(matches!(
        verdict(Some(77), "SKIP: no root", true, Some(" ")),
        Verdict::Fail(_)
    ));
    assert!(matches!(
        verdict(
            Some(77),
            "SKIP: no root",
            true,
            Some("no containers on this runner")
        ),
        Verdict::Skip(_)
    ));
    assert!(matches!(
        verdict(Some(1), "FAIL: x", false, Some("r")),
        Verdict::Fail(_)
    ));
    assert!(matches!(
        verdict(None, "killed", false, None),
        Verdict::Fail(_)
    ));
}
