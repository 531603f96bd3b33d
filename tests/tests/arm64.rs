//! The plugin on arm64 (issue 15 point 4; the testbed's nodes are Raspberry Pis): the
//! plugin cross-built for `aarch64-unknown-linux-gnu` with Debian's cross toolchain against
//! Debian trixie's arm64 libwasmedge (`scripts/build-arm64.sh`), loaded by trixie's arm64
//! `wasmedge` running under qemu-user, serves the probe guest's put and then get against a
//! real redis-server. Control: the same arm64 `wasmedge` with the machine's own (x86-64)
//! plugin cannot load it, and the guest fails at its `skylark` imports, so the passing
//! run used the arm64 plugin.
//!
//! The first run downloads the arm64 root (about 180 MB unpacked, cached in
//! `~/.cache/skylark/trixie-arm64`) and cross-builds the plugin in release mode (about
//! two minutes on the project's 2-core machine); later runs take seconds. Where the
//! machine cannot (no cross toolchain, qemu or network) the script says why (exit 77):
//! outside CI a visible skip; in CI (`CI=true`) a failure unless
//! `SKYLARK_SKIP_ARM64=<reason>` names why this CI machine may skip it.

use skylark_testkit::{chain_id, plugin_dir, root, wasm, Guest, Redis, RUN_TIMEOUT};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the test makes of the build script's outcome.
#[derive(Debug, PartialEq)]
enum Verdict {
    Run,
    Skip(String),
    Fail(String),
}

/// `code`: the script's exit code; `ci`: whether this is a CI run; `opt_out`: the value of
/// `SKYLARK_SKIP_ARM64`, if any.
fn verdict(code: Option<i32>, why: &str, ci: bool, opt_out: Option<&str>) -> Verdict {
    match (code, opt_out.filter(|r| !r.trim().is_empty())) {
        (Some(0), _) => Verdict::Run,
        (Some(77), Some(reason)) => Verdict::Skip(format!("{why} (allowed: {reason})")),
        (Some(77), None) if !ci => Verdict::Skip(why.to_string()),
        (Some(77), None) => Verdict::Fail(format!(
            "the arm64 test cannot run on this CI machine: {why}; \
             set SKYLARK_SKIP_ARM64=<reason> to allow that"
        )),
        (other, _) => Verdict::Fail(format!("scripts/build-arm64.sh failed ({other:?}): {why}")),
    }
}

/// What `scripts/build-arm64.sh` built.
struct Arm64 {
    wasmedge: PathBuf,
    plugin_dir: PathBuf,
}

/// Runs the build script; `None` when this machine may skip.
fn build() -> Option<Arm64> {
    let script = root().join("scripts/build-arm64.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .expect("run scripts/build-arm64.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or("").trim().to_string();
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let opt_out = std::env::var("SKYLARK_SKIP_ARM64").ok();
    match verdict(out.status.code(), &last, ci, opt_out.as_deref()) {
        Verdict::Run => {}
        Verdict::Skip(why) => {
            eprintln!("SKIPPED: arm64 test on this machine: {why}");
            return None;
        }
        Verdict::Fail(why) => panic!("{why}\n{stdout}\n{stderr}"),
    }
    let env = std::fs::read_to_string(&last).unwrap_or_else(|e| panic!("read {last}: {e}"));
    let var = |name: &str| -> PathBuf {
        env.lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| PathBuf::from(v.trim_matches('\'')))
            .unwrap_or_else(|| panic!("{last}: no {name}"))
    };
    Some(Arm64 {
        wasmedge: var("SKYLARK_ARM64_WASMEDGE"),
        plugin_dir: var("SKYLARK_ARM64_PLUGIN_DIR"),
    })
}

/// The ELF machine (`e_machine`) of a 64-bit little-endian ELF file.
fn elf_machine(path: &Path) -> u16 {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        bytes.len() > 20 && bytes.starts_with(b"\x7fELF") && bytes[4] == 2 && bytes[5] == 1,
        "{} is not a 64-bit little-endian ELF file",
        path.display()
    );
    u16::from_le_bytes([bytes[18], bytes[19]])
}

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

#[test]
fn the_arm64_plugin_serves_put_and_get_under_qemu() {
    let Some(arm) = build() else {
        return;
    };
    let plugin = arm.plugin_dir.join("libwasmedgePluginSkylark.so");
    assert_eq!(
        elf_machine(&plugin),
        EM_AARCH64,
        "{} is not an aarch64 library",
        plugin.display()
    );
    let only: Vec<_> = std::fs::read_dir(&arm.plugin_dir)
        .expect("read the arm64 plugin directory")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        only.len(),
        1,
        "the plugin directory must hold only the plugin: {only:?}"
    );

    // arm64 wasmedge lists the arm64 plugin.
    let version = Command::new(&arm.wasmedge)
        .arg("--version")
        .env("WASMEDGE_PLUGIN_PATH", &arm.plugin_dir)
        .output()
        .expect("arm64 wasmedge --version");
    let listed = String::from_utf8_lossy(&version.stdout);
    assert!(
        listed.contains("(plugin \"skylark\")"),
        "arm64 wasmedge does not list the plugin: {listed}{}",
        String::from_utf8_lossy(&version.stderr)
    );

    let redis = Redis::start();
    let chain = chain_id("arm64");
    let probe = wasm("probe");
    let put = Guest::with_runtime(&arm.wasmedge, &arm.plugin_dir, &probe, &redis.url)
        .args(["put", &chain, "arm64", "4096", "7"])
        .run(RUN_TIMEOUT);
    put.assert_success();
    let put_line = put.json();
    assert_eq!(put_line["op"], "put", "{put_line}");
    assert_eq!(
        put_line["status"], 0,
        "the put failed under qemu: {put_line}"
    );
    let stored = redis.hgetall(&format!("skylark:bundle:{chain}"));
    assert_eq!(
        stored.get("arm64").map(Vec::len),
        Some(4096),
        "the put reported success but the bundle has no 4096-byte field 'arm64': {:?}",
        stored.keys()
    );

    let get = Guest::with_runtime(&arm.wasmedge, &arm.plugin_dir, &probe, &redis.url)
        .args(["get", &chain])
        .run(RUN_TIMEOUT);
    get.assert_success();
    let get_line = get.json();
    assert_eq!(
        get_line["status"], 0,
        "the get failed under qemu: {get_line}"
    );
    assert_eq!(get_line["tier"], "local", "{get_line}");
    let field = &get_line["fields"]["arm64"];
    assert_eq!(field["len"], 4096, "{get_line}");
    assert_eq!(
        field["fnv"], put_line["fnv"],
        "the get returned other bytes than the put stored"
    );
    eprintln!(
        "arm64 under qemu: put {:.1} s, get {:.1} s (whole wasmedge runs)",
        put.elapsed.as_secs_f64(),
        get.elapsed.as_secs_f64()
    );

    // Control: the machine's own plugin is no arm64 code; arm64 wasmedge cannot load it.
    let host_plugin = plugin_dir();
    assert_eq!(
        elf_machine(&host_plugin.join("libwasmedgePluginSkylark.so")),
        EM_X86_64,
        "the control needs the x86-64 build of the plugin"
    );
    let control_chain = chain_id("arm64-control");
    let control = Guest::with_runtime(&arm.wasmedge, &host_plugin, &probe, &redis.url)
        .args(["put", &control_chain, "arm64", "64", "1"])
        .run(RUN_TIMEOUT);
    assert!(
        !control.status.success(),
        "arm64 wasmedge ran the probe with the x86-64 plugin: {}",
        control.stdout
    );
    // WasmEdge logs its errors to stdout.
    let said = format!("{}{}", control.stdout, control.stderr);
    assert!(
        said.contains("unknown import"),
        "the x86-64 plugin's run failed, but not at the skylark imports: {said}"
    );
    assert!(redis
        .hgetall(&format!("skylark:bundle:{control_chain}"))
        .is_empty());
}

#[test]
fn a_skip_fails_in_ci_unless_a_reason_is_given() {
    assert_eq!(verdict(Some(0), "env", true, None), Verdict::Run);
    assert!(matches!(
        verdict(Some(77), "SKIP: no qemu", false, None),
        Verdict::Skip(_)
    ));
    assert!(matches!(
        verdict(Some(77), "SKIP: no qemu", true, None),
        Verdict::Fail(_)
    ));
    assert!(matches!(
        verdict(Some(77), "SKIP: no qemu", true, Some(" ")),
        Verdict::Fail(_)
    ));
    assert!(matches!(
        verdict(
            Some(77),
            "SKIP: no qemu",
            true,
            Some("no arm64 on this runner")
        ),
        Verdict::Skip(_)
    ));
    assert!(matches!(
        verdict(Some(1), "FAIL: cargo", false, Some("x")),
        Verdict::Fail(_)
    ));
}
