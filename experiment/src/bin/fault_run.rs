//! The fault-injection run (`scripts/fault-run.sh`, RELIABILITY.md section 2): brings up
//! the emulated eight-node constellation with durable node stores and a moving topology,
//! runs fault-guest processes on several nodes that overwrite their fields again and
//! again (each value carrying its version, some puts with `cleanup`) and read them back,
//! and processes that increment shared counters by compare-and-swap with idempotency keys,
//! while links are cut, blackholed and restored and node `redis-server`s are SIGKILLed and
//! restarted at random; lets the outboxes drain, checks the reads against each node's put
//! history, every field and bundle expiry on every store and every counter (no increment
//! lost or applied twice); then SIGKILLs `wasmedge`
//! processes in the middle of large multi-field puts and checks that no bundle is left
//! partial and that later instances finish every job left behind. See
//! `skylark_experiment::faults`.
//!
//! ```text
//! cargo run --release -p skylark-experiment --bin fault-run -- [options]
//! ```
//! (options: `fault-run --help`)
//! Prints the tallies; exits 0 if nothing was lost, stale, corrupted, wrongly deleted,
//! given a wrong TTL, read against the rules, left partial or stuck, 1 otherwise, 2 on
//! bad arguments and 3 if the run itself failed.

use skylark_experiment::faults::{self, Bench, KillOptions, PutOptions};
use skylark_netemu::constellation::{install_interrupt_cleanup, Durability};
use skylark_testkit::cli;
use std::time::Duration;

struct Options {
    puts: PutOptions,
    kills: KillOptions,
    durability: Durability,
    /// `None`: slot 0 pinned.
    slot_ms: Option<u64>,
    quiet: bool,
}

/// The options, for `--help`.
const USAGE: &str = "\
usage: fault-run [options]
  --puts N               puts in all (default 10000; 0: only the SIGKILL rounds)
  --seed S               seeds the faults and names the run (default 1)
  --duration SECS        about how long the puts take; they are paced (default 120)
  --nodes a,b,..         nodes running put guests (default pi5u2,pi5u4,pi4u6,pi4p1)
  --batch N              puts per guest process (default 100)
  --fault-every-ms N     mean time between faults (default 700; 0: no faults)
  --durability MODE      node stores: always (default), everysec or volatile
  --chains N             chains per put node (default 12)
  --tasks N              tasks per chain (default 3)
  --cleanup-pct P        puts asking for cleanup, in percent (default 25)
  --read-pct P           puts followed by a read, in percent (default 50)
  --ttls a,b,..          SKYLARK_TTL_SECS of the put nodes in turn (default
                         86400,0; 0 = no expiry)
  --slot-ms N            slot length of the moving topology (default 10000;
                         0: slot 0 pinned)
  --cas-increments N     counter increments by compare-and-swap, in all (default
                         1200; 0: none)
  --cas-nodes a,b,..     nodes whose counters are incremented (default pi5u2,pi4u6)
  --cas-workers N        processes at once per CAS node (default 3)
  --cas-counters N       counters per CAS node (default 3)
  --drain-timeout SECS   deadline for the outboxes to empty (default 120)
  --kills N              SIGKILL rounds after the put run (default 20; 0: none)
  --kill-nodes a,b,..    nodes of the killed processes (default pi5u2,pi4u6)
  --kill-size BYTES      typical field size of the killed puts (default 1048576)
  --kill-fields N        fields per killed put (default 3)
  --kill-timeout-ms N    SKYLARK_TIMEOUT_MS of the killed processes and their
                         successors (default: the plugin's, 2000)
  --quiet                no fault log on stderr";

fn parse(p: &mut lexopt::Parser) -> Result<Options, lexopt::Error> {
    use lexopt::prelude::*;
    let mut o = Options {
        puts: PutOptions::default(),
        kills: KillOptions::default(),
        durability: Durability::AofAlways,
        slot_ms: Some(10_000),
        quiet: false,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("puts") => o.puts.puts = p.value()?.parse()?,
            Long("seed") => o.puts.seed = p.value()?.parse()?,
            Long("duration") => o.puts.duration = Duration::from_secs(p.value()?.parse()?),
            Long("nodes") => o.puts.nodes = cli::list(p)?,
            Long("batch") => o.puts.batch = p.value()?.parse()?,
            Long("fault-every-ms") => {
                let ms = p.value()?.parse()?;
                o.puts.fault_every = (ms > 0).then(|| Duration::from_millis(ms));
            }
            Long("durability") => {
                let v = p.value()?.string()?;
                o.durability = Durability::parse(&v)
                    .ok_or(format!("--durability {v:?}: always, everysec or volatile"))?;
            }
            Long("chains") => o.puts.pool.chains = p.value()?.parse()?,
            Long("tasks") => o.puts.pool.tasks = p.value()?.parse()?,
            Long("cleanup-pct") => o.puts.pool.cleanup_pct = p.value()?.parse()?,
            Long("read-pct") => o.puts.pool.read_pct = p.value()?.parse()?,
            Long("ttls") => o.puts.ttls = cli::list(p)?,
            Long("cas-increments") => o.puts.cas.increments = p.value()?.parse()?,
            Long("cas-nodes") => o.puts.cas.nodes = cli::list(p)?,
            Long("cas-workers") => o.puts.cas.workers = p.value()?.parse()?,
            Long("cas-counters") => o.puts.cas.counters = p.value()?.parse()?,
            Long("slot-ms") => {
                let ms = p.value()?.parse()?;
                o.slot_ms = (ms > 0).then_some(ms);
            }
            Long("drain-timeout") => {
                let d = Duration::from_secs(p.value()?.parse()?);
                o.puts.drain_timeout = d;
                o.kills.drain_timeout = d;
            }
            Long("kills") => o.kills.rounds = p.value()?.parse()?,
            Long("kill-nodes") => o.kills.nodes = cli::list(p)?,
            Long("kill-size") => o.kills.size = p.value()?.parse()?,
            Long("kill-fields") => o.kills.fields = p.value()?.parse()?,
            Long("kill-timeout-ms") => o.kills.store_timeout_ms = Some(p.value()?.parse()?),
            Long("quiet") => o.quiet = true,
            Short('h') | Long("help") => cli::help(USAGE),
            _ => return Err(arg.unexpected()),
        }
    }
    o.kills.seed = o.puts.seed;
    Ok(o)
}

fn main() {
    let o = cli::parse_or_exit(USAGE, parse);
    match run(&o) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("fault-run: {e}");
            std::process::exit(3);
        }
    }
}

/// Copies the built plugin into a directory of this run and points the harness at it
/// (`SKYLARK_PLUGIN_DIR`), so that a rebuild of `target/plugin/` during the run (other
/// work in the same tree) neither mixes plugin versions nor crashes running guests.
fn snapshot_plugin() -> Result<tempfile::TempDir, String> {
    const NAME: &str = "libwasmedgePluginSkylark.so";
    let dir = tempfile::Builder::new()
        .prefix("skylark-fault-plugin-")
        .tempdir()
        .map_err(|e| format!("cannot create a plugin directory: {e}"))?;
    let from = skylark_testkit::plugin_dir().join(NAME);
    std::fs::copy(&from, dir.path().join(NAME))
        .map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
    // Still single-threaded: nothing reads the environment concurrently.
    std::env::set_var("SKYLARK_PLUGIN_DIR", dir.path());
    Ok(dir)
}

fn run(o: &Options) -> Result<bool, String> {
    let _plugin = snapshot_plugin()?;
    if let Err(e) = install_interrupt_cleanup() {
        eprintln!(
            "fault-run: cannot handle interrupts ({e}); an interrupted run may leave temp files"
        );
    }
    let module = skylark_testkit::aot("fault-guest");
    let mut bench = Bench::start(
        o.durability,
        &module,
        &format!("s{}", o.puts.seed),
        o.slot_ms,
    )?;
    bench.verbose = !o.quiet;
    println!(
        "fault run: seed {}, {} puts on {} over ~{} s ({:?}, TTLs {:?}), {} CAS increments on {} ({} processes at once per node, {} counters each), a fault every ~{} ms, slots of {}, node stores {} ({}), then {} SIGKILL rounds on {} (SKYLARK_TIMEOUT_MS {})",
        o.puts.seed,
        o.puts.puts,
        o.puts.nodes.join(","),
        o.puts.duration.as_secs(),
        o.puts.pool,
        o.puts.ttls,
        o.puts.cas.increments,
        o.puts.cas.nodes.join(","),
        o.puts.cas.workers,
        o.puts.cas.counters,
        o.puts.fault_every.map_or(0, |d| d.as_millis()),
        o.slot_ms.map_or("- (slot 0 pinned)".to_string(), |ms| format!("{ms} ms")),
        o.durability.name(),
        o.durability.conf_lines().join(" "),
        o.kills.rounds,
        o.kills.nodes.join(","),
        o.kills
            .store_timeout_ms
            .map_or("default".to_string(), |ms| ms.to_string())
    );
    let puts = if o.puts.puts > 0 {
        let puts = faults::run_puts(&bench, &o.puts)?;
        println!("\n== puts under faults\n{puts}");
        Some(puts)
    } else {
        None
    };
    let kills = if o.kills.rounds > 0 {
        let kills = faults::run_kills(&bench, &o.kills)?;
        println!("== SIGKILL of wasmedge mid-put\n{kills}");
        Some(kills)
    } else {
        None
    };
    let clean = puts.as_ref().is_none_or(|p| p.clean()) && kills.as_ref().is_none_or(|k| k.clean());
    println!(
        "{}: {}",
        if clean { "PASS" } else { "FAIL" },
        faults::summary(puts.as_ref(), kills.as_ref())
    );
    Ok(clean)
}
