//! The crun path of runtimeclass/: an ex_function's guest runs as an OCI container under
//! Debian trixie's crun (its WasmEdge handler, selected by the `compat-smart` annotation)
//! with the Skylark plugin inside the container's root filesystem, talking to a real
//! redis-server (`runtimeclass/crun/run-local.sh`, findings in
//! `runtimeclass/crun/FINDINGS.md`). Where the machine cannot run containers the script
//! says why in one line, and this test reports the skip with that reason instead of failing.

use skylark_tests::root;
use std::process::Command;

#[test]
fn a_guest_runs_under_crun_with_the_plugin() {
    let script = root().join("runtimeclass/crun/run-local.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("WASMEDGE_PLUGIN_PATH", skylark_tests::plugin_dir())
        .output()
        .expect("run runtimeclass/crun/run-local.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => assert!(stdout.contains("OK"), "no OK line:\n{stdout}\n{stderr}"),
        Some(77) => eprintln!("crun test skipped on this machine: {}", stdout.trim()),
        other => panic!("crun run failed ({other:?}):\n{stdout}\n{stderr}"),
    }
}
