//! A guest in C (issue 17 §4): `ex_functions/c-hello`, written against the generated
//! header `guest-sdk/include/skylark.h` and wasi-libc only, built with Debian's clang for
//! wasm32-wasi (scripts/build.sh, with the toolchain `scripts/setup-deps.sh --c-guest`
//! installs into `.wasi-clang/`), runs under real wasmedge with the plugin against a real
//! redis-server: its `skylark_put` and `skylark_put_many` (FieldRef records laid out by the
//! header) store the bytes Redis then holds, and it reads its bundle back through
//! `BufferTooSmall` and `skylark_take_result` and decodes it; the Rust SDK (the probe
//! guest) reads the same bundle. Its error path: an invalid
//! id gives `InvalidId` and the host's message through `skylark_last_error`.
//!
//! When the module is missing (no toolchain on this machine): outside CI a visible skip; in
//! CI (`CI=true`) a failure unless `SKYLARK_SKIP_C_GUEST=<reason>` names why this machine
//! may skip it.

use probe::fnv1a;
use skylark_abi::{Status, ABI_VERSION};
use skylark_testkit::{chain_id, root, Guest, GuestRun, Redis, RUN_TIMEOUT};
use std::path::{Path, PathBuf};

/// What the test makes of a missing module.
#[derive(Debug, PartialEq)]
enum Verdict {
    Run,
    Skip(String),
    Fail(String),
}

/// `found`: whether the module exists; `ci`: whether this is a CI run; `opt_out`: the value
/// of `SKYLARK_SKIP_C_GUEST`, if any.
fn verdict(found: bool, why: &str, ci: bool, opt_out: Option<&str>) -> Verdict {
    match (found, opt_out.filter(|r| !r.trim().is_empty())) {
        (true, _) => Verdict::Run,
        (false, Some(reason)) => Verdict::Skip(format!("{why} (allowed: {reason})")),
        (false, None) if !ci => Verdict::Skip(why.to_string()),
        (false, None) => Verdict::Fail(format!(
            "the C guest test cannot run on this CI machine: {why}; \
             set SKYLARK_SKIP_C_GUEST=<reason> to allow that"
        )),
    }
}

/// The built C guest, `None` when this machine may skip.
fn module() -> Option<PathBuf> {
    let dir = std::env::var_os("SKYLARK_C_WASM_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/c-guests"));
    let module = dir.join("c-hello.wasm");
    let why = format!(
        "{} is missing: scripts/build.sh builds it once `bash scripts/setup-deps.sh \
         --c-guest` has installed the wasm32-wasi C toolchain (scripts/test.sh does both)",
        module.display()
    );
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let opt_out = std::env::var("SKYLARK_SKIP_C_GUEST").ok();
    match verdict(module.is_file(), &why, ci, opt_out.as_deref()) {
        Verdict::Run => Some(module),
        Verdict::Skip(why) => {
            eprintln!("SKIPPED: C guest test on this machine: {why}");
            None
        }
        Verdict::Fail(why) => panic!("{why}"),
    }
}

fn c_hello(module: &Path, redis: &Redis, args: &[&str]) -> GuestRun {
    Guest::at(module, &redis.url).args(args).run(RUN_TIMEOUT)
}

#[test]
fn the_c_guest_puts_and_reads_back_its_bundle() {
    let Some(module) = module() else {
        return;
    };
    let redis = Redis::start();
    let chain = chain_id("c-guest");
    // Quotes and a backslash: the guest prints them JSON-escaped; the store holds the bytes.
    let value = "hello from C, \"quoted\" \\ ok";
    let run = c_hello(&module, &redis, &[&chain, "c-hello", value]);
    let out = run.assert_success().json();

    assert_eq!(out["status"], 0, "{out}");
    assert_eq!(out["abi"], ABI_VERSION, "{out}");
    assert_eq!(out["fields"], 3, "{out}");
    assert_eq!(
        out["value_ok"], true,
        "the guest's decoding did not find its fields: {out}"
    );
    assert_eq!(out["tier"], "local", "{out}");
    assert_eq!(out["node"], "test-node", "{out}");
    assert_eq!(
        out["took_result"], true,
        "the 16-byte buffer did not give BufferTooSmall: {out}"
    );
    let bundle_len = out["bundle_len"].as_u64().expect("bundle_len");
    assert!(bundle_len > 16, "{out}");

    let stored = redis.bundle(&chain);
    let expected: std::collections::BTreeMap<String, Vec<u8>> = [
        ("c-hello", value.as_bytes().to_vec()),
        ("c-hello.len", value.len().to_string().into_bytes()),
        ("c-hello.lang", b"c".to_vec()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(stored, expected);

    // The Rust SDK (the probe guest) reads the same bundle the C guest wrote.
    let got = Guest::new("probe", &redis.url)
        .args(["get", &chain])
        .run(RUN_TIMEOUT)
        .assert_success()
        .json();
    assert_eq!(got["status"], 0, "{got}");
    for (task, bytes) in &expected {
        assert_eq!(got["fields"][task]["len"], bytes.len(), "{task}: {got}");
        assert_eq!(got["fields"][task]["fnv"], fnv1a(bytes), "{task}: {got}");
    }
}

#[test]
fn the_c_guest_reports_an_invalid_id_with_the_hosts_message() {
    let Some(module) = module() else {
        return;
    };
    let redis = Redis::start();

    // An invalid chain id: skylark_put refuses it, nothing is stored.
    let run = c_hello(&module, &redis, &["bad:chain", "c-hello", "x"]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    let out = run.json();
    assert_eq!(out["status"], Status::InvalidId.code(), "{out}");
    assert_eq!(out["name"], "InvalidId", "{out}");
    assert_eq!(out["op"], "put", "{out}");
    let error = out["error"].as_str().expect("error message");
    assert_eq!(
        error,
        "skylark_put: chain id \"bad:chain\" has byte 0x3a at offset 3; \
         allowed are A-Z a-z 0-9 . _ -"
    );
    assert_eq!(out["error_len"], error.len(), "{out}");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.conn())
        .expect("KEYS");
    assert!(keys.is_empty(), "an invalid put stored {keys:?}");

    // A task id of the longest valid length: skylark_put stores it, but `<task>.len` in
    // the skylark_put_many that follows is too long, so that call stores none of its two.
    let chain = chain_id("c-guest-long");
    let task = "t".repeat(skylark_abi::ids::MAX_ID_LEN);
    let run = c_hello(&module, &redis, &[&chain, &task, "v"]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    let out = run.json();
    assert_eq!(out["status"], Status::InvalidId.code(), "{out}");
    assert_eq!(out["op"], "put_many", "{out}");
    let error = out["error"].as_str().expect("error message");
    assert!(
        error.contains("is 132 bytes long (max 128)"),
        "unexpected message {error:?}"
    );
    let stored: Vec<String> = redis.bundle(&chain).into_keys().collect();
    assert_eq!(stored, [task]);
}

#[test]
fn a_missing_module_skips_outside_ci_and_fails_in_ci_unless_allowed() {
    assert_eq!(verdict(true, "w", true, None), Verdict::Run);
    assert_eq!(verdict(false, "w", false, None), Verdict::Skip("w".into()));
    assert_eq!(
        verdict(false, "w", true, Some("no network")),
        Verdict::Skip("w (allowed: no network)".into())
    );
    assert!(matches!(verdict(false, "w", true, None), Verdict::Fail(_)));
    assert!(matches!(
        verdict(false, "w", true, Some("  ")),
        Verdict::Fail(_)
    ));
}
