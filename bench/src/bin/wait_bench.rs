//! `wait-bench`: the latency of `skylark_get_bundle` with `wait_for` from the arrival of
//! the state it waits for to the guest's return (BENCHMARKS.md).
//!
//! ```text
//! cargo run --release -p skylark-bench --bin wait-bench -- [--runs 30] [--size 1024]
//! ```
//! One throw-away redis-server. Per run: the probe guest (AOT) waits for task `t` of a
//! fresh chain (`probe wait --wait-for t`); once its subscription shows in `PUBSUB
//! NUMSUB`, this process puts `t` with the plugin's own put transaction
//! (`skylark_core::fence::put`: the versions script, which publishes the arrival, and the
//! values' `HSET`, in one `MULTI`/`EXEC`) and notes the wall-clock time of `EXEC`'s reply
//! (the arrival, acknowledged); the waiter prints the wall-clock time at which `wait_for`
//! returned to it. The rows are the distributions of (return - send) and (return - ack)
//! over the runs: the publish happened between the two. Both clocks are this machine's
//! wall clock; on a loaded machine this process may read the ack late, so the second row
//! can go negative.

use skylark_testkit::{aot, chain_id, cli, percentile, Guest, Redis, NS};
use std::time::{Duration, Instant};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// The plugin's default bundle TTL.
const TTL: Duration = Duration::from_secs(86_400);

fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

fn subscribers(redis: &Redis, channel: &str) -> i64 {
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query(&mut redis.conn())
        .expect("PUBSUB NUMSUB");
    n
}

fn main() {
    let usage = "wait-bench [--runs N] [--size BYTES]";
    let (runs, size) = cli::parse_or_exit(usage, |p| {
        let (mut runs, mut size) = (30usize, 1024usize);
        while let Some(arg) = p.next()? {
            match arg {
                lexopt::Arg::Long("runs") => runs = cli::positive(p)?,
                lexopt::Arg::Long("size") => size = cli::positive(p)?,
                lexopt::Arg::Short('h') | lexopt::Arg::Long("help") => cli::help(usage),
                other => return Err(other.unexpected()),
            }
        }
        Ok((runs, size))
    });
    let redis = Redis::start();
    let probe = aot("probe");
    let value = probe::pattern(size, 1);
    let mut conn = redis.conn();
    let (mut from_send, mut from_ack) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        let chain = chain_id("wait-bench");
        let channel = format!("{NS}/arrivals:{chain}");
        let waiter = Guest::at(&probe, &redis.url)
            .args(["wait", &chain, "--wait-for", "t", "--wait-ms", "60000"])
            .spawn();
        let deadline = Instant::now() + RUN_TIMEOUT;
        while subscribers(&redis, &channel) < 1 {
            assert!(Instant::now() < deadline, "the waiter never subscribed");
            std::thread::sleep(Duration::from_millis(2));
        }
        let key = format!("{NS}:bundle:{chain}");
        let put = skylark_core::fence::put(&key, &[("t", &value)], Some(TTL));
        let sent = unix_ms();
        let _: redis::Value = put.query(&mut conn).expect("the put transaction");
        let acked = unix_ms();
        let got = waiter.wait(RUN_TIMEOUT);
        got.assert_success();
        let v = got.json();
        assert_eq!(v["status"], 0, "{v}");
        let returned = v["returned_at_ms"].as_f64().expect("returned_at_ms");
        from_send.push(returned - sent);
        from_ack.push(returned - acked);
    }
    println!("| measurement | runs | median | p10 | p90 | min | max |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (what, mut samples) in [
        ("the put's send (an upper bound)", from_send),
        (
            "the put's ack (`EXEC` reply of the publishing transaction)",
            from_ack,
        ),
    ] {
        samples.sort_by(f64::total_cmp);
        let p = |q: f64| percentile(&samples, q).unwrap_or(f64::NAN);
        println!(
            "| wait_for latency: {what} to the guest's return, {size} B field, aot | {runs} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            p(50.0),
            p(10.0),
            p(90.0),
            samples[0],
            samples[samples.len() - 1]
        );
    }
}
