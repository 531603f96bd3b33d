//! Exit stress (issue 11, point 5): a function's wasmedge process must exit cleanly
//! whatever state the propagation of its put is in, and lose nothing it acknowledged.
//!
//! WasmEdge `dlclose`s its plugins while the process exits. The plugin's background
//! threads (its tokio runtime) are alive then: copying, waiting to retry, or, right after
//! the first host call, not even scheduled yet. Before the plugin was linked with
//! `-z nodelete` (`plugin/build.rs`), the library could be unmapped under such a thread,
//! which then died of SIGSEGV in unmapped code and took the process with it: about one
//! exit in 300 with `SKYLARK_EXIT_FLUSH_MS=0` on a busy machine.
//!
//! [`fresh_processes_exit_cleanly_mid_copy`] starts many fresh wasmedge processes (AOT
//! and interpreter) that put and exit while the put's copy to the global store is in
//! flight: the global store down (connection refused), a black hole (connections
//! accepted, never answered) or slow (the link emulator in front of a real
//! redis-server), at `SKYLARK_EXIT_FLUSH_MS` 0, 20 and the default (5 s). Several run at
//! once so that the CPUs are busy, as in the CI run that crashed. Every process must exit
//! with status 0, every put must be acknowledged, and every acknowledged put must still
//! have its job in the outbox (for a later process) or its copy in the global store.
//!
//! `SKYLARK_EXIT_STRESS_RUNS` (default 100) sets the processes per module and short flush
//! setting; the default flush, which a process whose copy cannot finish waits out in
//! full, gets a tenth of that (at least 3). `SKYLARK_EXIT_STRESS_PARALLEL` (default 6)
//! sets how many run at a time. RELIABILITY.md records a long run.

use object::read::elf::{Dyn, ElfFile64};
use object::Endianness;
use serde_json::Value;
use skylark_tests::linkemu::{LinkEmu, LinkSpec};
use skylark_tests::{aot, chain_id, plugin_dir, wasm, Guest, Redis};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest one process may take: the default flush (5 s) plus a wide margin for a
/// loaded machine. A process still running then is killed and counts as a failure.
const PROCESS_DEADLINE: Duration = Duration::from_secs(60);

/// What stands behind `SKYLARK_GLOBAL_URL`; each has its own namespace, hence its own
/// outbox, so that a later process never finishes a job against another store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Global {
    /// Nothing listens: every connection is refused.
    Down,
    /// A socket that is never accepted: connections hang until their deadline.
    BlackHole,
    /// A real redis-server behind the link emulator (50 ms one way, jitter 25 ms).
    Slow,
}

impl Global {
    const ALL: [Global; 3] = [Global::Down, Global::BlackHole, Global::Slow];

    fn namespace(self) -> &'static str {
        match self {
            Global::Down => "down",
            Global::BlackHole => "hole",
            Global::Slow => "slow",
        }
    }
}

/// One process to start.
#[derive(Clone, Debug)]
struct Run {
    module: &'static str,
    path: PathBuf,
    /// `SKYLARK_EXIT_FLUSH_MS`, or `None` for the default.
    flush_ms: Option<u64>,
    global: Global,
    chain: String,
}

impl Run {
    fn label(&self) -> String {
        let flush = self
            .flush_ms
            .map_or_else(|| "default".to_string(), |ms| format!("{ms} ms"));
        format!("{} flush {flush} global {:?}", self.module, self.global)
    }
}

/// How one process ended.
struct Outcome {
    run: Run,
    status: ExitStatus,
    /// The put's status as the probe printed it; `None` if it printed no JSON.
    put_status: Option<i64>,
    stderr: String,
}

fn env_number(var: &str, default: usize) -> usize {
    match std::env::var(var) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn run_one(run: &Run, local: &str, urls: &BTreeMap<Global, String>) -> Outcome {
    let mut guest = Guest::at(&run.path, local)
        .env("SKYLARK_NAMESPACE", run.global.namespace())
        .env("SKYLARK_GLOBAL_URL", &urls[&run.global])
        .env("SKYLARK_CONNECT_TIMEOUT_MS", "100")
        .env("SKYLARK_MAX_OUTBOX", "10000000")
        .args(["put", &run.chain, "t", "1024", "7"]);
    if let Some(ms) = run.flush_ms {
        guest = guest.env("SKYLARK_EXIT_FLUSH_MS", &ms.to_string());
    }
    let out = guest.spawn().wait_or_kill(PROCESS_DEADLINE);
    let put_status = out
        .stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|v| v["status"].as_i64());
    Outcome {
        run: run.clone(),
        status: out.status,
        put_status,
        stderr: out.stderr,
    }
}

/// Chains that have a job in the outbox of `namespace`.
fn outbox_chains(local: &Redis, namespace: &str) -> BTreeSet<String> {
    let jobs: Vec<String> = redis::cmd("HVALS")
        .arg(format!("{namespace}:outbox:jobs"))
        .query(&mut local.conn())
        .expect("HVALS of the outbox");
    jobs.iter()
        .map(|j| {
            let v: Value = serde_json::from_str(j).expect("an outbox job is JSON");
            v["chain"]
                .as_str()
                .expect("a job names its chain")
                .to_string()
        })
        .collect()
}

fn exists(redis: &Redis, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query::<i64>(&mut redis.conn())
        .expect("EXISTS")
        == 1
}

#[test]
fn fresh_processes_exit_cleanly_mid_copy() {
    let runs_per_config = env_number("SKYLARK_EXIT_STRESS_RUNS", 100).max(1);
    let parallel = env_number("SKYLARK_EXIT_STRESS_PARALLEL", 6).max(1);
    let default_flush_runs = (runs_per_config / 10).max(3);

    let local = Redis::start();
    let global = Redis::start();
    let upstream: SocketAddr = ([127, 0, 0, 1], global.port).into();
    let slow = LinkEmu::start(upstream, LinkSpec::new(50.0, 25.0, None)).expect("link emulator");
    let hole = TcpListener::bind("127.0.0.1:0").expect("black-hole socket");
    let hole_port = hole.local_addr().expect("black-hole address").port();
    let down_port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let urls: BTreeMap<Global, String> = [
        (Global::Down, format!("redis://127.0.0.1:{down_port}")),
        (Global::BlackHole, format!("redis://127.0.0.1:{hole_port}")),
        (Global::Slow, slow.url()),
    ]
    .into();

    // One list per module and flush setting, interleaved so that every configuration
    // runs alongside the others.
    let modules = [("interpreter", wasm("probe")), ("aot", aot("probe"))];
    let mut lists: Vec<Vec<Run>> = Vec::new();
    for (module, path) in &modules {
        for flush_ms in [Some(0), Some(20), None] {
            let n = if flush_ms.is_some() {
                runs_per_config
            } else {
                default_flush_runs
            };
            lists.push(
                (0..n)
                    .map(|i| Run {
                        module,
                        path: path.clone(),
                        flush_ms,
                        global: Global::ALL[i % Global::ALL.len()],
                        chain: chain_id("exit"),
                    })
                    .collect(),
            );
        }
    }
    let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
    let mut runs: Vec<Run> = Vec::new();
    for i in 0..longest {
        let mut round: Vec<Run> = lists.iter().filter_map(|l| l.get(i).cloned()).collect();
        // Default-flush runs first: they take longest, and the quick ones fill the gaps.
        round.sort_by_key(|r| r.flush_ms.is_some());
        runs.extend(round);
    }

    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(Vec::with_capacity(runs.len()));
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(run) = runs.get(i) else { break };
                let outcome = run_one(run, &local.url, &urls);
                outcomes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(outcome);
            });
        }
    });
    let outcomes = outcomes.into_inner().unwrap_or_else(|p| p.into_inner());
    assert_eq!(outcomes.len(), runs.len(), "a worker thread panicked");

    // Per configuration: processes, abnormal exits.
    let mut tally: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for o in &outcomes {
        let t = tally.entry(o.run.label()).or_default();
        t.0 += 1;
        t.1 += usize::from(!o.status.success());
    }
    let abnormal: Vec<&Outcome> = outcomes.iter().filter(|o| !o.status.success()).collect();
    let signalled = abnormal
        .iter()
        .filter(|o| std::os::unix::process::ExitStatusExt::signal(&o.status).is_some())
        .count();
    eprintln!(
        "[exit-stress] {} processes ({parallel} at a time) in {:.1} s: {} abnormal exits \
         ({signalled} by a signal)",
        outcomes.len(),
        started.elapsed().as_secs_f64(),
        abnormal.len()
    );
    for (label, (n, bad)) in &tally {
        eprintln!("[exit-stress]   {label}: {n} processes, {bad} abnormal");
    }
    let details: Vec<String> = abnormal
        .iter()
        .take(5)
        .map(|o| {
            let tail: Vec<&str> = o.stderr.lines().rev().take(3).collect();
            format!(
                "{} (chain {}): {:?}; stderr ends {:?}",
                o.run.label(),
                o.run.chain,
                o.status,
                tail
            )
        })
        .collect();
    assert!(
        abnormal.is_empty(),
        "{} of {} wasmedge processes exited abnormally ({signalled} by a signal):\n{}",
        abnormal.len(),
        outcomes.len(),
        details.join("\n")
    );

    let refused: Vec<String> = outcomes
        .iter()
        .filter(|o| o.put_status != Some(0))
        .map(|o| {
            format!(
                "{} (chain {}): {:?}",
                o.run.label(),
                o.run.chain,
                o.put_status
            )
        })
        .collect();
    assert!(
        refused.is_empty(),
        "{} puts were not acknowledged: {:?}",
        refused.len(),
        &refused[..refused.len().min(5)]
    );

    // Nothing acknowledged is lost: each put's job waits in the outbox of its namespace,
    // or its copy reached the global store (only the slow one can take copies).
    let mut reached_global = 0;
    let mut lost: Vec<String> = Vec::new();
    for g in Global::ALL {
        let ns = g.namespace();
        let pending = outbox_chains(&local, ns);
        for o in outcomes.iter().filter(|o| o.run.global == g) {
            let chain = &o.run.chain;
            if pending.contains(chain) {
                continue;
            }
            if g == Global::Slow && exists(&global, &format!("{ns}:bundle:{chain}")) {
                reached_global += 1;
                continue;
            }
            lost.push(format!("{} (chain {chain})", o.run.label()));
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged puts are neither in the outbox nor in the global store: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // The slow store is reachable: at least the processes that wait out the default
    // flush get their copies there, so copies were really in flight.
    assert!(
        reached_global > 0,
        "no copy reached the slow global store: the link emulator path is broken"
    );
    eprintln!(
        "[exit-stress] every put acknowledged; {reached_global} reached the slow global store, \
         the rest wait in the outbox"
    );
    drop(hole);
}

/// The cause of the crash, checked directly: the plugin library asks the dynamic loader
/// never to unload it (`DF_1_NODELETE`), so WasmEdge's `dlclose` at exit leaves its code
/// mapped for the background threads that still run it.
#[test]
fn the_plugin_library_is_never_unloaded() {
    let path = plugin_dir().join("libwasmedgePluginSkylark.so");
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let elf = ElfFile64::<Endianness>::parse(&*data)
        .unwrap_or_else(|e| panic!("{} is not a 64-bit ELF file: {e}", path.display()));
    let endian = elf.endian();
    let (entries, _) = elf
        .elf_section_table()
        .dynamic(endian, &*data)
        .expect("a readable dynamic section")
        .expect("the plugin has a dynamic section");
    let flags_1 = entries
        .iter()
        .filter(|d| d.tag(endian) == object::elf::DT_FLAGS_1)
        .fold(0u64, |acc, d| acc | d.val(endian));
    assert_ne!(
        flags_1 & object::elf::DF_1_NODELETE.0,
        0,
        "{} lacks DF_1_NODELETE (DT_FLAGS_1 = {flags_1:#x}): WasmEdge's dlclose at exit would \
         unmap it under the plugin's background threads; plugin/build.rs links it with \
         -z nodelete",
        path.display()
    );
}
