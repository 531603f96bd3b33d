//! `put-request-bench`: what the default put's request costs in Redis and on the wire,
//! without wasmedge, the guest or the background copies (BENCHMARKS.md section 1,
//! issue 14 point 3).
//!
//! ```text
//! cargo run --release -p skylark-bench --bin put-request-bench -- [--blocks 20] [--size 1024] [--quota 0]
//! ```
//! One throw-away redis-server and one plugin `Store` (the blocking connection a put
//! uses). Interleaved, one of each per iteration, in blocks of 500 (the first block
//! discarded): the put as a transaction with its scripts' text (`MULTI`, the guard script,
//! the values' `HSET`, the undo script, `EXEC`: every put before scripts went by digest,
//! and every put above `outbox::INLINE_MAX` now), the put as one script by digest
//! (`EVALSHA`, values inside: a put up to `INLINE_MAX` now), and native
//! `MULTI{HSET,EXPIRE}/EXEC` on a redis-rs connection; then encoding the job as JSON
//! (`Job::to_json`, a single-destination job). The put's limits are the default bundle
//! limit and, with `--quota`, a namespace quota of that many bytes (the `_QUOTA` scripts).
//! Medians in µs.

use skylark_abi::wire::Policy;
use skylark_core::config::{Credentials, Tls};
use skylark_core::fence::{Guard, Limits};
use skylark_core::outbox::{self, GuardedPut, Job};
use skylark_core::store::Store;
use skylark_testkit::{chain_id, cli, Redis, NS};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: put-request-bench [--blocks N] [--size BYTES] [--quota BYTES]";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut blocks, mut size, mut quota) = (20usize, 1024usize, 0u64);
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        use lexopt::prelude::*;
        match arg {
            Long("blocks") => blocks = cli::positive(&mut p)?,
            Long("size") => size = cli::positive(&mut p)?,
            Long("quota") => quota = p.value()?.parse()?,
            Short('h') | Long("help") => cli::help(USAGE),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let r = Redis::start();
    let d = Duration::from_secs(5);
    let store = Store::new(&r.url, &Credentials::default(), &Tls::default(), d, d)?;
    let bundle = format!("{NS}:bundle:{}", chain_id("request"));
    let value = probe::pattern(size, 7);
    let fields: [(&str, &[u8]); 1] = [("t", &value)];
    let plain = Guard::default();
    let job = Job {
        id: outbox::new_id(1),
        chain: "request".into(),
        tasks: vec!["t".into()],
        origin: "node".into(),
        policy: Policy::Skylark,
        destination: Some("pi5u1".into()),
        more_destinations: vec![],
        max_latency_ms: 5000,
        min_bandwidth_mbps: 0.0,
        exec_ms: 0,
        successor_in_ms: 0,
        put_at_ms: 1,
        cleanup: false,
        target: None,
        more_targets: vec![],
        done: vec![],
        exclude: vec![],
        carried: Default::default(),
        landed: Default::default(),
        attempts: 0,
        merged: vec![],
    };
    let json = job.to_json()?;
    let limits = Limits::local(256 << 20, NS, quota);
    let put = GuardedPut::new(
        NS,
        &bundle,
        &fields,
        Some(Duration::from_secs(600)),
        &job.id,
        &json,
        1,
        outbox::Bounds {
            jobs: u64::MAX,
            bytes: u64::MAX,
        },
        &plain,
        &limits,
    );
    let mut conn = r.conn();
    let mut native = redis::pipe();
    native
        .atomic()
        .cmd("HSET")
        .arg("native")
        .arg("t")
        .arg(&value)
        .ignore()
        .cmd("EXPIRE")
        .arg("native")
        .arg(600)
        .ignore();
    let timed = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_nanos() as u64
    };
    let mut samples: [Vec<u64>; 4] = Default::default();
    for block in 0..blocks + 1 {
        if block == 1 {
            // Server-side time counts from the first measured block.
            redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query::<()>(&mut conn)?;
        }
        for _ in 0..500 {
            let one = [
                timed(&mut || {
                    let [g, v, u] = put.commands();
                    store
                        .query_transaction(&[&g, &v, &u])
                        .expect("the transaction");
                }),
                timed(&mut || {
                    let (script, args) = put.inline();
                    store.query_script(script, &args).expect("the script");
                }),
                timed(&mut || native.query::<()>(&mut conn).expect("native")),
                timed(&mut || {
                    std::hint::black_box(job.to_json().expect("json"));
                }),
            ];
            if block > 0 {
                for (s, ns) in samples.iter_mut().zip(one) {
                    s.push(ns);
                }
            }
        }
    }
    let server = server_us(&mut conn)?;
    let [old, new, multi, enc] = samples.map(|mut v| {
        v.sort_unstable();
        v[v.len() / 2] as f64 / 1000.0
    });
    println!(
        "{size} B put request, medians over {} iterations: transaction with the scripts' text \
         {old:.1} µs ({:.2}x native), one script by digest {new:.1} µs ({:.2}x), native \
         MULTI{{HSET,EXPIRE}}/EXEC {multi:.1} µs; Job::to_json ({} bytes) {enc:.2} µs",
        blocks * 500,
        old / multi,
        new / multi,
        json.len()
    );
    println!("server-side µs per call (INFO commandstats): {server}");
    Ok(())
}

/// `usec_per_call` of the commands the three requests run, from `INFO commandstats`.
fn server_us(conn: &mut redis::Connection) -> redis::RedisResult<String> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn)?;
    let rows: Vec<String> = info
        .lines()
        .filter_map(|l| {
            let (name, stats) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let per_call = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("usec_per_call="))?;
            ["evalsha", "eval", "multi", "exec", "hset", "expire"]
                .contains(&name)
                .then(|| format!("{name} {per_call}"))
        })
        .collect();
    Ok(rows.join(", "))
}
