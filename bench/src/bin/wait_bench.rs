//! `wait-bench`: the latency of `skylark_get_bundle` with `wait_for` from the arrival of
//! the state it waits for to the guest's return (BENCHMARKS.md).
//!
//! ```text
//! cargo run --release -p skylark-bench --bin wait-bench -- [--runs 30] [--size 1024]
//! ```
//! One throw-away redis-server. Per run: the probe guest (AOT) waits for task `t` of a
//! fresh chain (`probe wait --wait-for t`); once its subscription shows in `PUBSUB
//! NUMSUB`, another probe process puts `t`. The put's script publishes the arrival; this
//! process, subscribed to the same channel over loopback, timestamps the message (the
//! arrival); the waiter prints the wall-clock time at which `wait_for` returned to it.
//! The row is the distribution of (return - arrival) over the runs.

use skylark_testkit::{aot, chain_id, cli, percentile, Guest, Redis, NS};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

/// Subscribes to `channel` on a thread of its own; each message arrives with the unix ms
/// at which it was read. Returns once the subscription holds.
fn subscribe(url: &str, channel: &str) -> mpsc::Receiver<f64> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (url, channel) = (url.to_string(), channel.to_string());
    std::thread::spawn(move || {
        let client = redis::Client::open(url.as_str()).expect("redis URL");
        let mut conn = client.get_connection().expect("connect");
        let mut ps = conn.as_pubsub();
        ps.subscribe(&channel).expect("SUBSCRIBE");
        let _ = ready_tx.send(());
        while ps.get_message().is_ok() {
            if tx.send(unix_ms()).is_err() {
                return;
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("subscribed");
    rx
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
    let size_arg = size.to_string();
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let chain = chain_id("wait-bench");
        let channel = format!("{NS}/arrivals:{chain}");
        let arrivals = subscribe(&redis.url, &channel);
        let waiter = Guest::at(&probe, &redis.url)
            .args(["wait", &chain, "--wait-for", "t", "--wait-ms", "60000"])
            .spawn();
        let deadline = Instant::now() + RUN_TIMEOUT;
        while subscribers(&redis, &channel) < 2 {
            assert!(Instant::now() < deadline, "the waiter never subscribed");
            std::thread::sleep(Duration::from_millis(2));
        }
        let put = Guest::at(&probe, &redis.url)
            .args(["put", &chain, "t", &size_arg, "1"])
            .run(RUN_TIMEOUT);
        put.assert_success();
        assert_eq!(put.json()["status"], 0, "{}", put.stdout);
        let arrived = arrivals
            .recv_timeout(Duration::from_secs(10))
            .expect("the put's arrival message");
        let got = waiter.wait(RUN_TIMEOUT);
        got.assert_success();
        let v = got.json();
        assert_eq!(v["status"], 0, "{v}");
        let returned = v["returned_at_ms"].as_f64().expect("returned_at_ms");
        samples.push(returned - arrived);
    }
    samples.sort_by(f64::total_cmp);
    let p = |q: f64| percentile(&samples, q).unwrap_or(f64::NAN);
    println!("| measurement | runs | median | p10 | p90 | min | max |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| wait_for latency: arrival (PUBLISH seen by a loopback subscriber) to the guest's return, {size} B field, aot | {runs} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
        p(50.0),
        p(10.0),
        p(90.0),
        samples[0],
        samples[samples.len() - 1]
    );
}
