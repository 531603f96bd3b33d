//! `fuzz-runner`: runs the wasm fuzz guest under real `wasmedge` with the real plugin and
//! real redis-server processes, several processes and seeds, and prints the tally
//! (`fuzz_runner` says what runs; the guest says what it checks).
//!
//! ```text
//! cargo run --release -p fuzz-runner -- [--calls 1000000] [--procs 8] [--parallel 2] [--seed 1]
//! ```
//! Exits 1 if any process crashed (non-zero exit, signal, host panic) or found a
//! violation, or fewer calls ran than asked. `scripts/fuzz.sh` builds everything first.

use fuzz_runner::{run, Options};
use skylark_testkit::cli;
use std::time::Duration;

const USAGE: &str = "\
usage: fuzz-runner [--calls N] [--procs N] [--parallel N] [--seed N]
  --calls     random calls in all (default 1000000)
  --procs     guest processes, each with its own seed (default 8)
  --parallel  processes at once (default 2)
  --seed      the first process's seed (default 1)";

fn options(p: &mut lexopt::Parser) -> Result<Options, lexopt::Error> {
    use lexopt::prelude::*;
    let mut o = Options {
        calls: 1_000_000,
        procs: 8,
        parallel: 2,
        seed: 1,
        timeout: Duration::from_secs(1800),
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("calls") => o.calls = p.value()?.parse()?,
            Long("procs") => o.procs = p.value()?.parse::<usize>()?.max(1),
            Long("parallel") => o.parallel = p.value()?.parse::<usize>()?.max(1),
            Long("seed") => o.seed = p.value()?.parse()?,
            Short('h') | Long("help") => cli::help(USAGE),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(o)
}

fn main() {
    let o = cli::parse_or_exit(USAGE, options);
    let report = run(&o);
    print!("{}", report.render());
    let failed =
        report.violations() > 0 || !report.crashes().is_empty() || report.calls() < o.calls;
    std::process::exit(i32::from(failed));
}
