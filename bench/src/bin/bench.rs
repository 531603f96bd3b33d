//! `bench`: measures the guest-visible latency of `skylark_put` / `skylark_put_many` and
//! `skylark_get_bundle` (probe guest, interpreter and AOT) next to native redis-rs
//! commands on the same throw-away redis-server, and prints one Markdown table.
//!
//! ```text
//! cargo run --release -p skylark-bench --bin bench -- [--iterations 5000,2000,300] [--warmup-pct 10] [--rounds 3]
//! ```
//! `--iterations` gives the measured iterations for 1 KiB, 64 KiB and 1 MiB values; each
//! measurement runs `warmup-pct` percent more iterations first and discards them; every
//! group of rows is measured `rounds` times, interleaved, and reports the median of the
//! rounds' medians and the p99 of all samples. Use
//! `scripts/bench.sh`, which builds everything first.
//!
//! Modes: `native` is a synchronous redis-rs connection used directly; `native async` is
//! a redis-rs multiplexed connection on a one-worker tokio runtime, with the calling thread
//! waiting on a channel for each answer (the plugin v1's I/O path, without wasm; the
//! plugin now does the guest's own reads and writes on the calling thread); `interp`
//! and `aot` are the probe guest under `wasmedge`, interpreted or AOT-compiled.

use skylark_testkit::{chain_id, cli, percentile, wasm, wasmedge_bin, Guest, Redis};
use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SIZES: [(usize, &str); 3] = [(1024, "1 KiB"), (64 * 1024, "64 KiB"), (1 << 20, "1 MiB")];
const FIELDS: [usize; 2] = [1, 10];
/// The plugin's default `SKYLARK_TTL_SECS`, used by the native MULTI/EXEC baseline too.
const TTL_SECS: u64 = 86_400;
/// Deadline of one guest run (1 MiB × 10 fields in the interpreter is the slowest).
const GUEST_TIMEOUT: Duration = Duration::from_secs(600);

struct Options {
    iterations: [usize; 3],
    warmup_pct: usize,
    rounds: usize,
}

const USAGE: &str = "\
usage: bench [--iterations N1K,N64K,N1M] [--warmup-pct P] [--rounds R]
  --iterations  measured iterations for 1 KiB, 64 KiB and 1 MiB values; default 5000,2000,300
  --warmup-pct  iterations run first and discarded, in percent of the measured; default 10
  --rounds      times every group of rows is measured, interleaved (the median of the
                rounds' medians and the p99 of all samples are reported); default 3";

fn options(p: &mut lexopt::Parser) -> Result<Options, lexopt::Error> {
    use lexopt::prelude::*;
    let mut o = Options {
        iterations: [5000, 2000, 300],
        warmup_pct: 10,
        rounds: 3,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("iterations") => {
                let n: Vec<usize> = cli::list(p)?;
                if n.len() != 3 || n.contains(&0) {
                    return Err("--iterations takes three numbers greater than zero".into());
                }
                o.iterations = [n[0], n[1], n[2]];
            }
            Long("warmup-pct") => o.warmup_pct = p.value()?.parse()?,
            Long("rounds") => o.rounds = cli::positive(p)?,
            Short('h') | Long("help") => cli::help(USAGE),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(o)
}

/// Guest-side or native operation measured in one row.
#[derive(Clone, Copy, PartialEq)]
enum Op {
    Set,
    Hset,
    MultiHsetExpire,
    Hgetall,
    GuestPut,
    GuestGet,
}

impl Op {
    fn label(self, fields: usize) -> &'static str {
        match self {
            Op::Set => "SET",
            Op::Hset => "HSET",
            Op::MultiHsetExpire => "MULTI{HSET,EXPIRE}/EXEC",
            Op::Hgetall => "HGETALL",
            Op::GuestPut if fields == 1 => "skylark_put",
            Op::GuestPut => "skylark_put_many",
            Op::GuestGet => "skylark_get_bundle",
        }
    }
}

struct Row {
    op: Op,
    mode: &'static str,
    fields: usize,
    size: &'static str,
    iterations: usize,
    median_ns: u64,
    p99_ns: u64,
    /// Median / median of the plain native command (SET for 1 field, HSET for 10, HGETALL).
    vs_plain: f64,
    /// Median / median of native MULTI{HSET,EXPIRE}/EXEC (writes only).
    vs_multi: Option<f64>,
}

fn stats(mut samples: Vec<u64>) -> (u64, u64) {
    samples.sort_unstable();
    let at = |p| percentile(&samples, p).unwrap_or(0);
    (at(50.0), at(99.0))
}

/// Runs `f` `warmup + n` times; returns the last `n` durations in nanoseconds.
fn time_native(warmup: usize, n: usize, mut f: impl FnMut()) -> Vec<u64> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let t = Instant::now();
        f();
        let ns = t.elapsed().as_nanos() as u64;
        if i >= warmup {
            samples.push(ns);
        }
    }
    samples
}

/// One probe `bench` run; returns the measured samples after the warm-up, or panics with
/// the guest's output if anything about the run is off.
fn time_guest(
    module: &Path,
    redis: &Redis,
    kind: &str,
    size: usize,
    fields: usize,
    warmup: usize,
    n: usize,
) -> Vec<u64> {
    let chain = chain_id("bench");
    let run = Guest::at(module, &redis.url)
        .args([
            "bench",
            kind,
            &chain,
            &size.to_string(),
            &fields.to_string(),
            &(warmup + n).to_string(),
        ])
        .run(GUEST_TIMEOUT);
    run.assert_success();
    let out = run.json();
    let context = || {
        format!(
            "{} bench {kind} size={size} fields={fields}: {out}\nstderr:\n{}",
            module.display(),
            run.stderr
        )
    };
    assert_eq!(out["status"], 0, "guest call failed: {}", context());
    assert!(
        out["kind"] == kind && out["size"] == size && out["fields"] == fields,
        "guest measured something else: {}",
        context()
    );
    let samples: Vec<u64> = out["samples_ns"]
        .as_array()
        .unwrap_or_else(|| panic!("no samples_ns array: {}", context()))
        .iter()
        .map(|v| {
            v.as_u64()
                .unwrap_or_else(|| panic!("bad sample {v}: {}", context()))
        })
        .collect();
    assert_eq!(
        samples.len(),
        warmup + n,
        "wrong sample count: {}",
        context()
    );
    redis::cmd("DEL")
        .arg(format!("skylark:bundle:{chain}"))
        .query::<()>(&mut redis.conn())
        .expect("DEL the guest's bundle");
    samples[warmup..].to_vec()
}

/// A multiplexed async connection driven by its own one-worker tokio runtime; every
/// request is spawned onto the runtime while the caller blocks on a channel.
struct AsyncPath {
    rt: tokio::runtime::Runtime,
    conn: redis::aio::MultiplexedConnection,
}

impl AsyncPath {
    fn new(url: &str) -> AsyncPath {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("start the tokio runtime");
        let client = redis::Client::open(url).expect("redis URL");
        let conn = rt
            .block_on(client.get_multiplexed_async_connection())
            .expect("async connection to the bench redis");
        AsyncPath { rt, conn }
    }

    /// Runs `f(conn)` on the runtime with a 2 s deadline and waits for its result.
    fn run<T, F>(&self, f: impl FnOnce(redis::aio::MultiplexedConnection) -> F) -> T
    where
        T: Send + 'static,
        F: Future<Output = redis::RedisResult<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = f(self.conn.clone());
        self.rt.spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(2), fut).await;
            let _ = tx.send(r);
        });
        rx.recv()
            .expect("async task ended without an answer")
            .expect("async request timed out")
            .expect("async redis request failed")
    }
}

fn command_output(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Date, machine, wasmedge and redis-server versions.
fn header() -> String {
    let date = command_output(Path::new("date"), &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let wasmedge = command_output(&wasmedge_bin(), &["--version"]);
    let wasmedge = wasmedge
        .lines()
        .next()
        .and_then(|l| l.rsplit_once("version "))
        .map_or("unknown", |(_, v)| v.trim());
    let redis = command_output(Path::new("redis-server"), &["--version"]);
    let redis = redis
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or("unknown");
    format!(
        "{}, nproc {nproc}, CPU {cpu}, wasmedge {wasmedge}, redis-server {redis}",
        date.trim()
    )
}

fn fmt_us(ns: u64) -> String {
    let us = ns as f64 / 1e3;
    if us < 100.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| op | mode | fields | size | iterations | median µs | p99 µs | median ÷ native plain | median ÷ native MULTI |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let multi = r.vs_multi.map_or("—".to_string(), |x| format!("{x:.2}×"));
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.2}× | {} |\n",
            r.op.label(r.fields),
            r.mode,
            r.fields,
            r.size,
            r.iterations,
            fmt_us(r.median_ns),
            fmt_us(r.p99_ns),
            r.vs_plain,
            multi
        ));
    }
    s
}

fn main() {
    let opts = cli::parse_or_exit(USAGE, options);
    let started = Instant::now();
    let header = header();
    let redis = Redis::start();
    let interp = wasm("probe");
    let aot = skylark_testkit::aot("probe");
    let mut conn = redis.conn();
    let async_path = AsyncPath::new(&redis.url);
    let mut rows = Vec::new();

    for (si, &(size, size_label)) in SIZES.iter().enumerate() {
        let n = opts.iterations[si];
        let warmup = (n * opts.warmup_pct).div_ceil(100);
        for &fields in &FIELDS {
            eprintln!(
                "[bench] {size_label} × {fields} field(s): {n} iterations + {warmup} warm-up"
            );
            let names: Vec<String> = (0..fields).map(|i| format!("f{i}")).collect();
            let values: Vec<Vec<u8>> = (0..fields)
                .map(|i| probe::pattern(size, i as u64))
                .collect();
            let key = format!("skylark:bundle:native-{size}-{fields}");
            let hset = |c: &mut redis::Cmd| {
                c.arg(&key);
                for (n, v) in names.iter().zip(&values) {
                    c.arg(n).arg(v);
                }
            };

            // Writes: native commands, then the guest in both modes; the whole sequence
            // `rounds` times, so that a slow spell of this shared machine hits every mode.
            let mut measured = Measured::default();
            for _ in 0..opts.rounds {
                if fields == 1 {
                    let set_key = format!("{key}-set");
                    let s = time_native(warmup, n, || {
                        redis::cmd("SET")
                            .arg(&set_key)
                            .arg(&values[0])
                            .query::<()>(&mut conn)
                            .expect("native SET");
                    });
                    measured.push((Op::Set, "native", s));
                }
                let s = time_native(warmup, n, || {
                    let mut c = redis::cmd("HSET");
                    hset(&mut c);
                    c.query::<()>(&mut conn).expect("native HSET");
                });
                measured.push((Op::Hset, "native", s));
                let s = time_native(warmup, n, || {
                    let mut c = redis::cmd("HSET");
                    hset(&mut c);
                    redis::pipe()
                        .atomic()
                        .add_command(c)
                        .ignore()
                        .cmd("EXPIRE")
                        .arg(&key)
                        .arg(TTL_SECS)
                        .ignore()
                        .query::<()>(&mut conn)
                        .expect("native MULTI{HSET,EXPIRE}/EXEC");
                });
                measured.push((Op::MultiHsetExpire, "native", s));
                let s = time_native(warmup, n, || {
                    let mut c = redis::cmd("HSET");
                    hset(&mut c);
                    let mut pipe = redis::pipe();
                    pipe.atomic()
                        .add_command(c)
                        .ignore()
                        .cmd("EXPIRE")
                        .arg(&key)
                        .arg(TTL_SECS)
                        .ignore();
                    async_path
                        .run(|mut conn| async move { pipe.query_async::<()>(&mut conn).await });
                });
                measured.push((Op::MultiHsetExpire, "native async", s));
                for (mode, module) in [("interp", &interp), ("aot", &aot)] {
                    let s = time_guest(module, &redis, "put", size, fields, warmup, n);
                    measured.push((Op::GuestPut, mode, s));
                }
            }
            let plain = if fields == 1 { Op::Set } else { Op::Hset };
            push_group(&mut rows, measured, plain, true, fields, size_label, n);

            // Reads: HGETALL of the hash written above, then the guest in both modes.
            let mut measured = Measured::default();
            for _ in 0..opts.rounds {
                let s = time_native(warmup, n, || {
                    let pairs: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
                        .arg(&key)
                        .query(&mut conn)
                        .expect("native HGETALL");
                    assert_eq!(
                        pairs.len(),
                        fields,
                        "HGETALL returned the wrong field count"
                    );
                });
                measured.push((Op::Hgetall, "native", s));
                let s = time_native(warmup, n, || {
                    let mut c = redis::cmd("HGETALL");
                    c.arg(&key);
                    let pairs: Vec<(Vec<u8>, Vec<u8>)> =
                        async_path.run(|mut conn| async move { c.query_async(&mut conn).await });
                    assert_eq!(
                        pairs.len(),
                        fields,
                        "HGETALL returned the wrong field count"
                    );
                });
                measured.push((Op::Hgetall, "native async", s));
                for (mode, module) in [("interp", &interp), ("aot", &aot)] {
                    let s = time_guest(module, &redis, "get", size, fields, warmup, n);
                    measured.push((Op::GuestGet, mode, s));
                }
            }
            push_group(
                &mut rows,
                measured,
                Op::Hgetall,
                false,
                fields,
                size_label,
                n,
            );

            redis::cmd("FLUSHDB")
                .query::<()>(&mut conn)
                .expect("FLUSHDB between groups");
        }
    }

    eprintln!("[bench] done in {:.0} s", started.elapsed().as_secs_f64());
    println!(
        "{header}; warm-up {}% discarded; {} interleaved rounds per row\n",
        opts.warmup_pct, opts.rounds
    );
    print!("{}", table(&rows));
}

/// Samples of one group: per (operation, mode), one sample list per round.
#[derive(Default)]
struct Measured(Vec<(Op, &'static str, Vec<Vec<u64>>)>);

impl Measured {
    fn push(&mut self, (op, mode, samples): (Op, &'static str, Vec<u64>)) {
        match self.0.iter_mut().find(|m| m.0 == op && m.1 == mode) {
            Some(m) => m.2.push(samples),
            None => self.0.push((op, mode, vec![samples])),
        }
    }
}

/// The median of the rounds' medians and the p99 of all rounds' samples together.
fn round_stats(rounds: Vec<Vec<u64>>) -> (u64, u64) {
    let mut medians: Vec<u64> = rounds.iter().map(|r| stats(r.clone()).0).collect();
    medians.sort_unstable();
    let pooled: Vec<u64> = rounds.into_iter().flatten().collect();
    (percentile(&medians, 50.0).unwrap_or(0), stats(pooled).1)
}

/// Turns one group's samples into rows with ratios against the group's native baselines.
fn push_group(
    rows: &mut Vec<Row>,
    measured: Measured,
    plain: Op,
    write: bool,
    fields: usize,
    size: &'static str,
    iterations: usize,
) {
    let stats: Vec<(Op, &'static str, u64, u64)> = measured
        .0
        .into_iter()
        .map(|(op, mode, rounds)| {
            let (median, p99) = round_stats(rounds);
            (op, mode, median, p99)
        })
        .collect();
    let median_of = |op: Op| {
        stats
            .iter()
            .find(|s| s.0 == op && s.1 == "native")
            .map(|s| s.2 as f64)
            .expect("baseline measured in this group")
    };
    let plain_median = median_of(plain);
    let multi_median = write.then(|| median_of(Op::MultiHsetExpire));
    for (op, mode, median_ns, p99_ns) in stats.iter().copied() {
        rows.push(Row {
            op,
            mode,
            fields,
            size,
            iterations,
            median_ns,
            p99_ns,
            vs_plain: median_ns as f64 / plain_median,
            vs_multi: multi_median.map(|m| median_ns as f64 / m),
        });
    }
}
