//! `prop-bench`: what propagation costs a put, and how fast state reaches the elected
//! node, on the simulated 8-node constellation (one redis-server per node behind the TCP
//! link emulator; the AOT-compiled probe guest under real wasmedge with the plugin).
//!
//! ```text
//! cargo run --release -p skylark-bench --bin prop-bench -- [--puts 2000] [--copies 30] [--chains N]
//! ```
//! 1. Put latency as the guest sees it (1 KiB, one field, `--puts` puts in one process,
//!    each of its own chain unless `--chains` says how many chains they share, so that
//!    their propagation jobs do not merge into a few):
//!    propagation off (the v1 write path); propagation on with no remote (no topology, no
//!    global store: the outbox record is written, the job has nowhere to go); propagation
//!    on to the node three hops away and the global store with every remote link at 60 ms
//!    (± 30 ms jitter, 90 Mbit/s).
//! 2. Time from a put's return in the guest until the copy is readable on the elected
//!    node and on the global store (`--copies` puts, one process each), with ideal links
//!    and with 60 ms links. Readability (the put's field is in the bundle: `HEXISTS`, not
//!    the key, which the copy's announcement creates first) is polled directly on the
//!    target's redis-server every 200 µs; both clocks are this machine's wall clock.
//!
//! Use `scripts/prop-bench.sh`, which builds everything first.

use skylark_netemu::constellation::Constellation;
use skylark_netemu::linkemu::LinkSpec;
use skylark_testkit::clock::now_ms_f64;
use skylark_testkit::NS;
use skylark_testkit::{aot, chain_id, cli, percentile};
use std::path::Path;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(600);
const PRODUCER: &str = "pi5u2";
const ELECTED: &str = "pi4u5";
const GLOBAL: &str = "pi5u1";

const USAGE: &str = "\
usage: prop-bench [--puts N] [--copies N] [--chains N]
  --puts    puts in one process per put-latency row; default 2000
  --copies  puts (one process each) per copy-delay row; default 30
  --chains  chains the put-latency puts are spread over; default one per put (no two
            puts' jobs merge)";

/// The command line.
struct Options {
    puts: usize,
    copies: usize,
    /// `None`: one chain per put.
    chains: Option<usize>,
}

fn options(p: &mut lexopt::Parser) -> Result<Options, lexopt::Error> {
    use lexopt::prelude::*;
    let mut o = Options {
        puts: 2000,
        copies: 30,
        chains: None,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("puts") => o.puts = cli::positive(p)?,
            Long("copies") => o.copies = cli::positive(p)?,
            Long("chains") => o.chains = Some(cli::positive(p)?),
            Short('h') | Long("help") => cli::help(USAGE),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(o)
}

fn summary(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |p| percentile(&v, p).unwrap_or(f64::NAN);
    (at(50.0), at(99.0))
}

fn set_links(c: &Constellation, spec: LinkSpec) {
    for n in c.nodes() {
        c.shape_links_to(&n, spec);
    }
}

/// How a put-latency run is configured.
#[derive(Clone, Copy)]
enum Setup {
    /// Propagation off: the plugin v1 write path (no outbox record).
    Off,
    /// Propagation on, but no other node: no topology, no global store.
    Alone,
    /// Propagation on to the node three hops away and the global store.
    Remote,
}

/// Put samples (µs) of one probe `bench put` process; the first 10% are dropped.
fn put_samples(c: &Constellation, module: &Path, o: &Options, setup: Setup) -> Vec<f64> {
    let chain = chain_id("putlat");
    let (puts, warmup) = (o.puts, o.puts / 10);
    let n = (warmup + puts).to_string();
    // The bench's first put (before its samples) counts too.
    let chains = o.chains.unwrap_or(warmup + puts + 1).to_string();
    let mut g = c
        .guest_at(module, PRODUCER)
        .env("SKYLARK_LOG", "warn")
        .env("SKYLARK_EXIT_FLUSH_MS", "60000")
        .args(["bench", "put", &chain, "1024", "1", &n, "--dest", ELECTED])
        .args(["--chains", &chains]);
    match setup {
        Setup::Off => g = g.env("SKYLARK_PROPAGATION", "off"),
        Setup::Alone => g = g.env("SKYLARK_TOPOLOGY_FILE", ""),
        Setup::Remote => {}
    }
    let run = g.run(TIMEOUT);
    run.assert_success();
    let out = run.json();
    assert_eq!(out["status"], 0, "bench put failed: {out}\n{}", run.stderr);
    let samples: Vec<f64> = out["samples_ns"]
        .as_array()
        .expect("samples_ns")
        .iter()
        .filter_map(|v| v.as_u64())
        .map(|ns| ns as f64 / 1e3)
        .collect();
    assert_eq!(samples.len(), warmup + puts, "sample count");
    samples[warmup..].to_vec()
}

/// Runs every setup `ROUNDS` times, interleaved (this machine's noise moves whole runs
/// by tens of percent); per setup: the median of the run medians and the pooled p99.
fn put_latency(c: &Constellation, module: &Path, o: &Options, setups: &[Setup]) -> Vec<(f64, f64)> {
    const ROUNDS: usize = 3;
    let mut medians = vec![Vec::new(); setups.len()];
    let mut pooled = vec![Vec::new(); setups.len()];
    for _ in 0..ROUNDS {
        for (i, s) in setups.iter().enumerate() {
            let samples = put_samples(c, module, o, *s);
            medians[i].push(summary(samples.clone()).0);
            pooled[i].extend(samples);
        }
    }
    medians
        .into_iter()
        .zip(pooled)
        .map(|(m, p)| (summary(m).0, summary(p).1))
        .collect()
}

/// One put in its own process; returns ms from the put's return until the copy was
/// readable on the elected node and on the global store.
fn copy_delay(c: &Constellation, module: &Path) -> (f64, f64) {
    let chain = chain_id("copy");
    let key = format!("{NS}:bundle:{chain}");
    let mut elected = c.redis(ELECTED).conn();
    let mut global = c.redis(GLOBAL).conn();
    let running = c
        .guest_at(module, PRODUCER)
        .env("SKYLARK_LOG", "warn")
        .args(["put", &chain, "pre", "1024", "1", "--dest", ELECTED])
        .spawn();
    let (mut at_elected, mut at_global) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while (at_elected.is_none() || at_global.is_none()) && Instant::now() < deadline {
        for (conn, seen) in [
            (&mut elected, &mut at_elected),
            (&mut global, &mut at_global),
        ] {
            if seen.is_none() {
                let there: bool = redis::cmd("HEXISTS")
                    .arg(&key)
                    .arg("pre")
                    .query(conn)
                    .expect("HEXISTS");
                if there {
                    *seen = Some(now_ms_f64());
                }
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let run = running.wait(TIMEOUT);
    run.assert_success();
    let out = run.json();
    assert_eq!(out["status"], 0, "put failed: {out}\n{}", run.stderr);
    let returned = out["returned_at_ms"].as_f64().expect("returned_at_ms");
    let (Some(e), Some(g)) = (at_elected, at_global) else {
        panic!("copy of {chain} never appeared\n{}", run.stderr);
    };
    (e - returned, g - returned)
}

fn main() {
    let o = cli::parse_or_exit(USAGE, options);
    let (puts, copies) = (o.puts, o.copies);
    let module = aot("probe");
    let c = Constellation::for_system_tests();
    let slow = LinkSpec::new(60.0, 30.0, Some(90.0));

    eprintln!("[prop-bench] put latency, {puts} puts per process");
    set_links(&c, slow);
    let lat = put_latency(&c, &module, &o, &[Setup::Off, Setup::Alone, Setup::Remote]);
    let (off, alone, remote) = (lat[0], lat[1], lat[2]);

    eprintln!("[prop-bench] copy delay, {copies} puts");
    let mut rows = Vec::new();
    for (name, spec) in [
        ("ideal (0 ms)", LinkSpec::ideal()),
        ("60 ms ± 30, 90 Mbit/s", slow),
    ] {
        set_links(&c, spec);
        let (mut e, mut g) = (Vec::new(), Vec::new());
        for _ in 0..copies {
            let (de, dg) = copy_delay(&c, &module);
            e.push(de);
            g.push(dg);
        }
        rows.push((name, summary(e), summary(g)));
    }

    let spread = match o.chains {
        None => "each put its own chain".to_string(),
        Some(n) => format!("the puts spread over {n} chains"),
    };
    println!("### Put latency (AOT guest, 1 KiB, 1 field, {puts} puts per run after 10% warm-up, {spread}, 3 interleaved runs per row)\n");
    println!("| setup | median µs | p99 µs | ÷ no remote | ÷ propagation off |");
    println!("|---|---:|---:|---:|---:|");
    for (name, r) in [
        ("propagation off (no outbox record)", off),
        (
            "propagation on, no remote (no topology, no global store)",
            alone,
        ),
        (
            "propagation on, every remote link 60 ms ± 30 ms, 90 Mbit/s",
            remote,
        ),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.2}× | {:.2}× |",
            r.0,
            r.1,
            r.0 / alone.0,
            r.0 / off.0
        );
    }
    println!("\n### Put return until the copy is readable ({copies} puts, {PRODUCER} → {ELECTED}, 3 hops)\n");
    println!("| links | elected median ms | elected p99 ms | global median ms | global p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, e, g) in rows {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} |",
            e.0, e.1, g.0, g.1
        );
    }
}
