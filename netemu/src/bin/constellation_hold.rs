//! Keeps the emulated testbed constellation (`skylark_netemu::constellation`) up until
//! Ctrl-C or SIGTERM, printing what a process standing for each node needs:
//!
//! ```text
//! cargo run --release -p skylark-netemu --bin constellation-hold -- [--slot-ms N] [--slot S]
//! ```
//!
//! Output, one item per line: `dir <path>`, `topology <path>`, `timing slot_ms=.. epoch_ms=..`,
//! `node <name> <type> <redis url>` for each node, `env <name> K=V ...` (the plugin
//! settings of that node, space-separated), then `ready`, then `slot <n>` at every slot
//! change. On SIGINT/SIGTERM the stores are stopped, the directory removed, and the
//! process exits with 130/143.

use skylark_netemu::constellation::{install_interrupt_cleanup, Constellation, NetOptions};
use skylark_testkit::cli;
use std::io::Write;
use std::time::Duration;

const USAGE: &str = "usage: constellation-hold [--slot-ms N] [--slot S]\n  \
    --slot-ms N  slot length in ms (default 60000, the testbed's minute)\n  \
    --slot S     pin slot S (0-6) instead of following the clock";

/// Options from the command line.
fn parse_args(p: &mut lexopt::Parser) -> Result<NetOptions, lexopt::Error> {
    use lexopt::prelude::*;
    let mut opts = NetOptions::default();
    while let Some(arg) = p.next()? {
        match arg {
            Long("slot-ms") => opts.slot_ms = p.value()?.parse()?,
            Long("slot") => opts.fixed_slot = Some(p.value()?.parse()?),
            Short('h') | Long("help") => cli::help(USAGE),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(opts)
}

fn main() {
    let opts = cli::parse_or_exit(USAGE, parse_args);
    if let Err(e) = install_interrupt_cleanup() {
        eprintln!("constellation-hold: {e}");
        std::process::exit(1);
    }
    let c = match Constellation::try_start(opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("constellation-hold: cannot start the constellation: {e}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout().lock();
    // Printing fails only if nobody reads any more; the constellation stays up anyway.
    let _ = writeln!(out, "dir {}", c.dir().display());
    let _ = writeln!(out, "topology {}", c.topology_path().display());
    let s = c.schedule();
    let _ = writeln!(
        out,
        "timing slot_ms={} epoch_ms={}",
        s.slot_ms(),
        s.epoch_ms()
    );
    for node in c.nodes() {
        let kind = s.id(&node).map_or("?", |id| s.node(id).kind.as_str());
        let _ = writeln!(out, "node {node} {kind} {}", c.redis(&node).url);
    }
    for node in c.nodes() {
        let env: Vec<String> = c
            .env_for(&node)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "env {node} {}", env.join(" "));
    }
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    drop(out);
    let mut shown = c.emulated_slot();
    loop {
        std::thread::sleep(c.until_next_slot() + Duration::from_millis(20));
        let slot = c.emulated_slot();
        if slot != shown {
            shown = slot;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "slot {slot}");
            let _ = out.flush();
        }
    }
}
