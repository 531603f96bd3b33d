//! Every guest call to a store that is not a nearby node-local one has one total deadline
//! (issue 16 point 4): socket timeouts apply per system call, so a store, or an on-path
//! delay, that trickles its reply a segment at a time used to hold the guest's thread for
//! as long as the reply took. Real wasmedge with the plugin, a real redis-server behind
//! the project's link emulator (`netemu`) throttled to a trickle, and the same server
//! paused with SIGSTOP.

use serde_json::Value;
use skylark_netemu::linkemu::{LinkEmu, LinkSpec};
use skylark_testkit::{chain_id, Guest, Redis, NS, RUN_TIMEOUT};
use std::time::{Duration, Instant};

const STORE_TIMEOUT: i64 = 21;
const STORE_UNAVAILABLE: i64 = 20;
const TIMEOUT_MS: u64 = 1000;

fn stateless_get(local: &Redis, global_url: &str, chain: &str) -> (Value, Duration, String) {
    let started = Instant::now();
    let run = Guest::new("probe", &local.url)
        .env("SKYLARK_GLOBAL_URL", global_url)
        .env("SKYLARK_TIMEOUT_MS", &TIMEOUT_MS.to_string())
        .env("SKYLARK_EXIT_FLUSH_MS", "0")
        .args(["get", chain, "--policy", "stateless"])
        .run(RUN_TIMEOUT);
    run.assert_success();
    (run.json(), started.elapsed(), run.stderr)
}

fn plant(global: &Redis, chain: &str, bytes: usize) {
    let _: i64 = redis::cmd("HSET")
        .arg(format!("{NS}:bundle:{chain}"))
        .arg("pre")
        .arg(vec![b'x'; bytes])
        .query(&mut global.conn())
        .expect("HSET on the global store");
}

#[test]
fn a_trickling_link_cannot_hold_a_guest_call() {
    let local = Redis::start();
    let global = Redis::start();
    let chain = chain_id("trickle");
    plant(&global, &chain, 256 * 1024);
    let upstream = format!("127.0.0.1:{}", global.port)
        .parse()
        .expect("address");
    // 0.1 Mbit/s: the 256 KiB reply takes about 20 s, every segment well within the
    // 1 s socket timeout.
    let link = LinkEmu::start(upstream, LinkSpec::new(1.0, 0.0, Some(0.1))).expect("link");
    let (v, took, stderr) = stateless_get(&local, &link.url(), &chain);
    assert_eq!(v["status"], STORE_TIMEOUT, "{v}\n{stderr}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("no answer within 1000 ms"),
        "{v}"
    );
    assert!(
        took < Duration::from_millis(TIMEOUT_MS * 4),
        "the call took {took:?} (SKYLARK_TIMEOUT_MS is {TIMEOUT_MS})"
    );

    // Through an ideal link the same read succeeds: the deadline, not the link, failed it.
    let fast = LinkEmu::start(upstream, LinkSpec::ideal()).expect("link");
    let (v, _, stderr) = stateless_get(&local, &fast.url(), &chain);
    assert_eq!(v["status"], 0, "{v}\n{stderr}");
}

#[test]
fn a_paused_store_cannot_hold_a_guest_call() {
    let local = Redis::start();
    let global = Redis::start();
    let chain = chain_id("paused");
    plant(&global, &chain, 1024);
    // SAFETY: sending a signal to the test's own child process.
    let stop = |sig| unsafe { libc::kill(global.pid() as i32, sig) };
    assert_eq!(stop(libc::SIGSTOP), 0);
    let (v, took, stderr) = stateless_get(&local, &global.url, &chain);
    assert_eq!(stop(libc::SIGCONT), 0);
    // Connecting (the handshake gets no answer) or the read times out.
    assert!(
        [STORE_TIMEOUT, STORE_UNAVAILABLE].contains(&v["status"].as_i64().unwrap_or(0)),
        "{v}\n{stderr}"
    );
    assert!(
        took < Duration::from_millis(TIMEOUT_MS * 4),
        "took {took:?}"
    );
}
