//! The fault-injection run (`scripts/fault-run.sh`, RELIABILITY.md section 2): brings up
//! the emulated eight-node constellation with durable node stores, runs fault-guest
//! processes putting on several nodes while links are cut, blackholed and restored and
//! node `redis-server`s are SIGKILLed and restarted at random, lets the outboxes drain,
//! and checks every put on every store; then SIGKILLs `wasmedge` processes in the middle
//! of large multi-field puts and checks that no bundle is left partial and that later
//! instances finish every job left behind. See `skylark_tests::faults`.
//!
//! ```text
//! cargo run --release -p skylark-tests --bin fault-run -- [options]
//!   --puts N               puts in all (default 10000; 0: only the SIGKILL rounds)
//!   --seed S               seeds the faults and names the run (default 1)
//!   --duration SECS        about how long the puts take; they are paced (default 120)
//!   --nodes a,b,..         nodes running put guests (default pi5u2,pi5u4,pi4u6,pi4p1)
//!   --batch N              puts per guest process (default 100)
//!   --fault-every-ms N     mean time between faults (default 700; 0: no faults)
//!   --durability MODE      node stores: always (default), everysec or volatile
//!   --max-size BYTES       largest put value (default 131072)
//!   --drain-timeout SECS   deadline for the outboxes to empty (default 120)
//!   --kills N              SIGKILL rounds after the put run (default 20; 0: none)
//!   --kill-nodes a,b,..    nodes of the killed processes (default pi5u2,pi4u6)
//!   --kill-size BYTES      typical field size of the killed puts (default 1048576)
//!   --kill-fields N        fields per killed put (default 3)
//!   --kill-timeout-ms N    SKYLARK_TIMEOUT_MS of the killed processes and their
//!                          successors; must cover a whole copy (default 10000)
//!   --quiet                no fault log on stderr
//! ```
//! Prints the tallies; exits 0 if nothing was lost, corrupted, left partial or stuck,
//! 1 otherwise, 2 on bad arguments and 3 if the run itself failed.

use skylark_tests::constellation::{install_interrupt_cleanup, Durability};
use skylark_tests::faults::{self, Bench, KillOptions, PutOptions};
use std::time::Duration;

struct Options {
    puts: PutOptions,
    kills: KillOptions,
    durability: Durability,
    quiet: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        puts: PutOptions::default(),
        kills: KillOptions::default(),
        durability: Durability::AofAlways,
        quiet: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        let num = |v: &String| -> Result<u64, String> {
            v.parse()
                .map_err(|_| format!("{arg} {v:?} is not a whole number"))
        };
        match arg.as_str() {
            "--puts" => o.puts.puts = num(value()?)?,
            "--seed" => o.puts.seed = num(value()?)?,
            "--duration" => o.puts.duration = Duration::from_secs(num(value()?)?),
            "--nodes" => {
                o.puts.nodes = value()?.split(',').map(String::from).collect();
            }
            "--batch" => o.puts.batch = num(value()?)?,
            "--fault-every-ms" => {
                let ms = num(value()?)?;
                o.puts.fault_every = (ms > 0).then(|| Duration::from_millis(ms));
            }
            "--durability" => {
                let v = value()?;
                o.durability = Durability::parse(v)
                    .ok_or(format!("--durability {v:?}: always, everysec or volatile"))?;
            }
            "--max-size" => o.puts.shape.max_size = num(value()?)? as usize,
            "--drain-timeout" => {
                let d = Duration::from_secs(num(value()?)?);
                o.puts.drain_timeout = d;
                o.kills.drain_timeout = d;
            }
            "--kills" => o.kills.rounds = num(value()?)?,
            "--kill-nodes" => {
                o.kills.nodes = value()?.split(',').map(String::from).collect();
            }
            "--kill-size" => o.kills.size = num(value()?)? as usize,
            "--kill-fields" => o.kills.fields = num(value()?)? as usize,
            "--kill-timeout-ms" => o.kills.store_timeout_ms = num(value()?)?,
            "--quiet" => o.quiet = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    o.kills.seed = o.puts.seed;
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            let doc = include_str!("fault_run.rs");
            let usage: Vec<&str> = doc
                .lines()
                .skip_while(|l| !l.starts_with("//! ```text"))
                .skip(1)
                .take_while(|l| !l.starts_with("//! ```"))
                .map(|l| l.trim_start_matches("//! "))
                .collect();
            if !e.is_empty() {
                eprintln!("fault-run: {e}");
            }
            eprintln!("usage: {}", usage.join("\n"));
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
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
    let from = skylark_tests::plugin_dir().join(NAME);
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
    let module = skylark_tests::aot("fault-guest");
    let mut bench = Bench::start(o.durability, &module, &format!("s{}", o.puts.seed))?;
    bench.verbose = !o.quiet;
    println!(
        "fault run: seed {}, {} puts on {} over ~{} s, a fault every ~{} ms, node stores {} ({}), then {} SIGKILL rounds on {}",
        o.puts.seed,
        o.puts.puts,
        o.puts.nodes.join(","),
        o.puts.duration.as_secs(),
        o.puts.fault_every.map_or(0, |d| d.as_millis()),
        o.durability.name(),
        o.durability.redis_args().join(" "),
        o.kills.rounds,
        o.kills.nodes.join(",")
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
