//! Exit stress (issue 11, point 5): a function's wasmedge process must exit cleanly
//! whatever state the propagation of its put is in, and lose nothing it acknowledged.
//!
//! WasmEdge `dlclose`s its plugins while the process exits. The plugin's background
//! threads (its tokio runtime) are alive then: copying, waiting to retry, or, right after
//! the first host call, not even scheduled yet. Before the plugin was linked with
//! `-z nodelete` (`plugin/build.rs`), the library could be unmapped under such a thread,
//! which then died of SIGSEGV in unmapped code and took the process with it.
//!
//! [`fresh_processes_exit_cleanly_mid_copy`] starts many fresh wasmedge processes (AOT
//! and interpreter) that put and exit while the put's copy to the global store is in
//! flight: the global store down (connection refused), a black hole (connections
//! accepted, never answered) or slow (the link emulator in front of a real
//! redis-server). A fourth kind of process exits right after the plugin started its
//! runtime, its put refused (value over `SKYLARK_MAX_VALUE_BYTES`) before any I/O: the
//! window in which the runtime's thread may not have run yet is widest there. All run at
//! `SKYLARK_EXIT_FLUSH_MS` 0, 20 and the default (5 s), several at once so that the CPUs
//! are busy, as in the CI run that crashed. Every process must exit with status 0, every
//! put must be acknowledged (or refused, for the fourth kind), and every acknowledged put
//! must still have its job in the outbox (for a later process) or its copy in the global
//! store.
//!
//! `SKYLARK_EXIT_STRESS_RUNS` (default 100) sets the processes per module and short flush
//! setting; the default flush, which a process whose copy cannot finish waits out in
//! full, gets a tenth of that (at least 4). `SKYLARK_EXIT_STRESS_PARALLEL` (default 6)
//! sets how many run at a time. RELIABILITY.md records a long run.
//!
//! [`the_plugin_library_is_never_unloaded`] checks the fix itself, deterministically.

use object::read::elf::{Dyn, ElfFile64};
use object::Endianness;
use serde_json::Value;
use skylark_netemu::linkemu::{LinkEmu, LinkSpec};
use skylark_testkit::{aot, chain_id, plugin_dir, wasm, Guest, Redis};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest one process may take: the default flush (5 s) plus a wide margin for a
/// loaded machine. A process still running then is killed and counts as a failure.
const PROCESS_DEADLINE: Duration = Duration::from_secs(60);

/// Status of a put whose value exceeds `SKYLARK_MAX_VALUE_BYTES`.
const VALUE_TOO_LARGE: i64 = 13;

/// What a process meets: mostly, what stands behind `SKYLARK_GLOBAL_URL`. Each case has
/// its own namespace, hence its own outbox, so that a later process never finishes a job
/// against another case's store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Case {
    /// Nothing listens: every connection is refused.
    Down,
    /// A socket that is never accepted: connections hang until their deadline.
    BlackHole,
    /// A real redis-server behind the link emulator (50 ms one way, jitter 25 ms).
    Slow,
    /// The global store is down and the put is refused (`ValueTooLarge`) right after the
    /// plugin started its runtime: nothing to copy, only the first outbox sweep.
    Refused,
}

impl Case {
    const ALL: [Case; 4] = [Case::Down, Case::BlackHole, Case::Slow, Case::Refused];

    fn namespace(self) -> &'static str {
        match self {
            Case::Down => "down",
            Case::BlackHole => "hole",
            Case::Slow => "slow",
            Case::Refused => "refused",
        }
    }

    /// The status the probe must report for its put.
    fn put_status(self) -> i64 {
        match self {
            Case::Refused => VALUE_TOO_LARGE,
            Case::Down | Case::BlackHole | Case::Slow => 0,
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
    case: Case,
    chain: String,
}

impl Run {
    fn label(&self) -> String {
        let flush = self
            .flush_ms
            .map_or_else(|| "default".to_string(), |ms| format!("{ms} ms"));
        format!("{} flush {flush} {:?}", self.module, self.case)
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

impl Outcome {
    fn describe(&self) -> String {
        let tail: Vec<&str> = self.stderr.lines().rev().take(3).collect();
        format!(
            "{} (chain {}): {:?}, put status {:?}; stderr ends {:?}",
            self.run.label(),
            self.run.chain,
            self.status,
            self.put_status,
            tail
        )
    }
}

/// The stand-ins for the global store, alive as long as this value.
struct Globals {
    /// The redis-server behind the slow link.
    store: Redis,
    _slow: LinkEmu,
    _hole: TcpListener,
    urls: BTreeMap<Case, String>,
}

impl Globals {
    fn start() -> Globals {
        let store = Redis::start();
        let upstream: SocketAddr = ([127, 0, 0, 1], store.port).into();
        let slow =
            LinkEmu::start(upstream, LinkSpec::new(50.0, 25.0, None)).expect("link emulator");
        let hole = TcpListener::bind("127.0.0.1:0").expect("black-hole socket");
        let hole_url = format!("redis://{}", hole.local_addr().expect("black-hole address"));
        // Bound and closed at once: nothing listens there.
        let down_url = format!(
            "redis://{}",
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
        );
        let urls = BTreeMap::from([
            (Case::Down, down_url.clone()),
            (Case::BlackHole, hole_url),
            (Case::Slow, slow.url()),
            (Case::Refused, down_url),
        ]);
        Globals {
            store,
            _slow: slow,
            _hole: hole,
            urls,
        }
    }
}

fn env_number(var: &str, default: usize) -> usize {
    match std::env::var(var) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Every process to start: per module and flush setting, the cases in turn; the lists
/// are interleaved so that every configuration runs alongside the others.
fn plan(runs_per_config: usize) -> Vec<Run> {
    let default_flush_runs = (runs_per_config / 10).max(Case::ALL.len());
    let modules = [("interpreter", wasm("probe")), ("aot", aot("probe"))];
    let mut lists: Vec<Vec<Run>> = Vec::new();
    for (module, path) in modules {
        for flush_ms in [Some(0), Some(20), None] {
            let n = match flush_ms {
                Some(_) => runs_per_config,
                None => default_flush_runs,
            };
            lists.push(
                (0..n)
                    .map(|i| Run {
                        module,
                        path: path.clone(),
                        flush_ms,
                        case: Case::ALL[i % Case::ALL.len()],
                        chain: chain_id("exit"),
                    })
                    .collect(),
            );
        }
    }
    let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
    let mut runs = Vec::new();
    for i in 0..longest {
        let mut round: Vec<Run> = lists.iter().filter_map(|l| l.get(i).cloned()).collect();
        // Default-flush runs first: they take longest, and the quick ones fill the gaps.
        round.sort_by_key(|r| r.flush_ms.is_some());
        runs.extend(round);
    }
    runs
}

fn run_one(run: &Run, local: &str, urls: &BTreeMap<Case, String>) -> Outcome {
    let mut guest = Guest::at(&run.path, local)
        .env("SKYLARK_NAMESPACE", run.case.namespace())
        .env("SKYLARK_GLOBAL_URL", &urls[&run.case])
        .env("SKYLARK_MAX_OUTBOX", "10000000")
        .args(["put", &run.chain, "t", "1024", "7"]);
    if run.case == Case::Refused {
        guest = guest.env("SKYLARK_MAX_VALUE_BYTES", "16");
    }
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

/// Runs every process, `parallel` at a time.
fn run_all(runs: &[Run], parallel: usize, local: &str, globals: &Globals) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(Vec::with_capacity(runs.len()));
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| {
                while let Some(run) = runs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let outcome = run_one(run, local, &globals.urls);
                    outcomes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(outcome);
                }
            });
        }
    });
    let outcomes = outcomes.into_inner().unwrap_or_else(|p| p.into_inner());
    assert_eq!(outcomes.len(), runs.len(), "a worker thread panicked");
    outcomes
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

fn first<T: std::fmt::Debug>(items: &[T]) -> &[T] {
    &items[..items.len().min(5)]
}

#[test]
fn fresh_processes_exit_cleanly_mid_copy() {
    let runs_per_config = env_number("SKYLARK_EXIT_STRESS_RUNS", 100).max(1);
    let parallel = env_number("SKYLARK_EXIT_STRESS_PARALLEL", 6).max(1);
    let local = Redis::start();
    let globals = Globals::start();
    let runs = plan(runs_per_config);

    let started = Instant::now();
    let outcomes = run_all(&runs, parallel, &local.url, &globals);

    // Per configuration: processes, abnormal exits.
    let mut tally: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for o in &outcomes {
        let t = tally.entry(o.run.label()).or_default();
        t.0 += 1;
        t.1 += usize::from(!o.status.success());
    }
    let abnormal: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.status.success())
        .map(Outcome::describe)
        .collect();
    let signalled = outcomes
        .iter()
        .filter(|o| o.status.signal().is_some())
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
    assert!(
        abnormal.is_empty(),
        "{} of {} wasmedge processes exited abnormally ({signalled} by a signal):\n{}",
        abnormal.len(),
        outcomes.len(),
        first(&abnormal).join("\n")
    );

    let unexpected: Vec<String> = outcomes
        .iter()
        .filter(|o| o.put_status != Some(o.run.case.put_status()))
        .map(Outcome::describe)
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} puts did not end with their case's status (0, or {VALUE_TOO_LARGE} when \
         refused):\n{}",
        unexpected.len(),
        first(&unexpected).join("\n")
    );

    // Nothing acknowledged is lost: each put's job waits in the outbox of its namespace,
    // or its copy reached the global store (only the slow one can take copies).
    let mut reached_global = 0;
    let mut lost: Vec<String> = Vec::new();
    for case in [Case::Down, Case::BlackHole, Case::Slow] {
        let ns = case.namespace();
        let pending = outbox_chains(&local, ns);
        for o in outcomes.iter().filter(|o| o.run.case == case) {
            let chain = &o.run.chain;
            if pending.contains(chain) {
                continue;
            }
            if case == Case::Slow && exists(&globals.store, &format!("{ns}:bundle:{chain}")) {
                reached_global += 1;
                continue;
            }
            lost.push(o.describe());
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged puts are neither in the outbox nor in the global store:\n{}",
        lost.len(),
        first(&lost).join("\n")
    );
    // Copies were really in flight: at least the processes that wait out the default
    // flush get theirs through the slow link.
    assert!(
        reached_global > 0,
        "no copy reached the slow global store: the link emulator path is broken"
    );
    // A refused put stores nothing and leaves no job.
    assert!(
        outbox_chains(&local, Case::Refused.namespace()).is_empty(),
        "a refused put left a job in the outbox"
    );
    eprintln!(
        "[exit-stress] every put acknowledged or refused as required; {reached_global} \
         reached the slow global store, the others' jobs wait in the outbox"
    );
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
