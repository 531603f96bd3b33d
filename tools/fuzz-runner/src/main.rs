//! `fuzz-guest`: runs the wasm fuzz guest under real `wasmedge` with the real plugin and
//! real redis-server processes, several processes and seeds, and prints the tally
//! (`fuzz_runner` says what runs; the guest says what it checks).
//!
//! ```text
//! cargo run --release -p skylark-tests --bin fuzz-guest -- [--calls 1000000] [--procs 8] [--parallel 2] [--seed 1]
//! ```
//! Exits 1 if any process crashed (non-zero exit, signal, host panic) or found a
//! violation, or fewer calls ran than asked. `scripts/fuzz.sh` builds everything first.

use fuzz_runner::{run, Options};
use std::time::Duration;

fn usage() -> ! {
    eprintln!("usage: fuzz-guest [--calls N] [--procs N] [--parallel N] [--seed N]");
    std::process::exit(2);
}

fn main() {
    let mut o = Options {
        calls: 1_000_000,
        procs: 8,
        parallel: 2,
        seed: 1,
        timeout: Duration::from_secs(1800),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v: u64 = args
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| usage());
        match a.as_str() {
            "--calls" => o.calls = v,
            "--procs" => o.procs = v.max(1) as usize,
            "--parallel" => o.parallel = v.max(1) as usize,
            "--seed" => o.seed = v,
            _ => usage(),
        }
    }
    let report = run(&o);
    print!("{}", report.render());
    let failed =
        report.violations() > 0 || !report.crashes().is_empty() || report.calls() < o.calls;
    std::process::exit(i32::from(failed));
}
