//! Runs the wasm fuzz guest (`tests/guests/fuzz-guest`) under real `wasmedge` with the
//! real plugin against real redis-server processes, several guest processes with
//! different seeds and plugin configurations, and adds up their tallies.
//!
//! Configurations, cycled over the processes:
//! - `local`: propagation off, default limits (bundle contents checked exactly);
//! - `local-small`: propagation off, small limits (`SKYLARK_MAX_VALUE_BYTES=4096`,
//!   `MAX_FIELDS=8`, `MAX_PENDING=2`, `MAX_BUNDLE_BYTES=65536`), so the limit paths and
//!   pending-result eviction are hit often;
//! - `prop`: propagation on, a three-node topology (this node, `fz-sat`, `fz-global`,
//!   each its own redis-server), so fuzzed put options (destinations, SLOs up to
//!   `u64::MAX`, policies, cleanup) drive real elections and background copies, and gets
//!   fall back to other nodes;
//! - `prop-small`: the same with the small limits.
//!
//! A process passes when it exits 0 (the guest exits 1 on a violation); any other exit,
//! a signal, a missing tally, or `panicked` on its stderr is a crash.

use serde_json::Value;
use skylark_testkit::{aot, Guest, Redis};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Fuzzed calls in all, spread over the processes.
    pub calls: u64,
    /// Guest processes (seeds `seed .. seed + procs`).
    pub procs: usize,
    /// Processes at a time.
    pub parallel: usize,
    pub seed: u64,
    /// Deadline of one process.
    pub timeout: Duration,
}

/// The plugin configuration of one process.
#[derive(Debug, Clone, Copy)]
struct Variant {
    name: &'static str,
    propagation: bool,
    small: bool,
}

const VARIANTS: [Variant; 4] = [
    Variant {
        name: "local",
        propagation: false,
        small: false,
    },
    Variant {
        name: "local-small",
        propagation: false,
        small: true,
    },
    Variant {
        name: "prop",
        propagation: true,
        small: false,
    },
    Variant {
        name: "prop-small",
        propagation: true,
        small: true,
    },
];

/// One guest process's outcome.
#[derive(Debug, Clone)]
pub struct ProcessReport {
    pub seed: u64,
    pub variant: &'static str,
    pub calls: u64,
    pub checks: u64,
    pub violations: u64,
    pub examples: Vec<String>,
    /// `None` if the process exited normally (0, or 1 for violations).
    pub crash: Option<String>,
    pub elapsed: Duration,
    /// import -> status code -> count
    pub statuses: BTreeMap<String, BTreeMap<i32, u64>>,
}

/// All processes' outcomes.
#[derive(Debug, Default)]
pub struct Report {
    pub processes: Vec<ProcessReport>,
    pub elapsed: Duration,
    /// The plugin's counters on this node after the run (`skylark:stats:test-node`):
    /// how much of the propagation machinery the fuzzed calls drove.
    pub counters: BTreeMap<String, String>,
}

impl Report {
    pub fn calls(&self) -> u64 {
        self.processes.iter().map(|p| p.calls).sum()
    }

    pub fn checks(&self) -> u64 {
        self.processes.iter().map(|p| p.checks).sum()
    }

    pub fn violations(&self) -> u64 {
        self.processes.iter().map(|p| p.violations).sum()
    }

    pub fn crashes(&self) -> Vec<String> {
        self.processes
            .iter()
            .filter_map(|p| {
                p.crash
                    .as_ref()
                    .map(|c| format!("seed {} ({}): {c}", p.seed, p.variant))
            })
            .collect()
    }

    /// import -> status code -> count, over all processes.
    pub fn statuses(&self) -> BTreeMap<String, BTreeMap<i32, u64>> {
        let mut all: BTreeMap<String, BTreeMap<i32, u64>> = BTreeMap::new();
        for p in &self.processes {
            for (import, codes) in &p.statuses {
                let e = all.entry(import.clone()).or_default();
                for (code, n) in codes {
                    *e.entry(*code).or_insert(0) += n;
                }
            }
        }
        all
    }

    /// A plain-text summary: per process, per import and status, totals.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "process  variant      calls     checks  violations  time     outcome"
        );
        for p in &self.processes {
            let _ = writeln!(
                s,
                "seed {:<3} {:<11} {:>9} {:>9} {:>8}  {:>6.1} s  {}",
                p.seed,
                p.variant,
                p.calls,
                p.checks,
                p.violations,
                p.elapsed.as_secs_f64(),
                p.crash.as_deref().unwrap_or("exited normally")
            );
        }
        let _ = writeln!(s, "\nimport                 calls  statuses (code: count)");
        for (import, codes) in self.statuses() {
            let total: u64 = codes.values().sum();
            let list: Vec<String> = codes
                .iter()
                .map(|(c, n)| {
                    let name = if import == "skylark_version" {
                        format!("version {c}")
                    } else {
                        skylark_abi::Status::from_code(*c)
                            .map(|st| st.name().to_string())
                            .unwrap_or_else(|| format!("undocumented {c}"))
                    };
                    format!("{name}: {n}")
                })
                .collect();
            let _ = writeln!(s, "{import:<20} {total:>8}  {}", list.join(", "));
        }
        let _ = writeln!(
            s,
            "\ntotal: {} fuzzed calls + {} last-error checks in {} processes, {:.1} s; \
             violations: {}; crashes: {}",
            self.calls(),
            self.checks(),
            self.processes.len(),
            self.elapsed.as_secs_f64(),
            self.violations(),
            self.crashes().len()
        );
        let counters: Vec<String> = self
            .counters
            .iter()
            .filter(|(k, _)| !k.starts_with("propagation_"))
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if !counters.is_empty() {
            let _ = writeln!(s, "plugin counters on this node: {}", counters.join(", "));
        }
        for p in &self.processes {
            for e in &p.examples {
                let _ = writeln!(s, "violation: {e}");
            }
        }
        for c in self.crashes() {
            let _ = writeln!(s, "crash: {c}");
        }
        s
    }
}

/// The stores of a run: this node's, and two remote nodes' for the propagation variants.
struct Stores {
    local: Redis,
    _sat: Redis,
    _global: Redis,
    topology: PathBuf,
    _dir: tempfile::TempDir,
}

impl Stores {
    fn start() -> Stores {
        let (local, sat, global) = (Redis::start(), Redis::start(), Redis::start());
        let dir = tempfile::tempdir().expect("temp dir");
        let topology = dir.path().join("topology.json");
        let node = |name: &str, kind: &str, r: &Redis| serde_json::json!({"name": name, "type": kind, "ip": "127.0.0.1", "redis": r.url});
        let doc = serde_json::json!({
            "slot_ms": 60000,
            "epoch_ms": 0,
            "global": "fz-global",
            "nodes": [
                node("test-node", "Edge", &local),
                node("fz-sat", "Sat", &sat),
                node("fz-global", "Cloud", &global),
            ],
            "links": [
                {"source": "test-node", "target": "fz-sat", "latency_ms": 5, "jitter_ms": 1, "bandwidth_mbps": 100},
                {"source": "fz-sat", "target": "fz-global", "latency_ms": 20, "jitter_ms": 5, "bandwidth_mbps": 50},
            ],
        });
        std::fs::write(&topology, doc.to_string()).expect("write topology");
        Stores {
            local,
            _sat: sat,
            _global: global,
            topology,
            _dir: dir,
        }
    }
}

fn run_one(
    module: &Path,
    stores: &Stores,
    seed: u64,
    calls: u64,
    timeout: Duration,
) -> ProcessReport {
    let v = VARIANTS[(seed % VARIANTS.len() as u64) as usize];
    let (max_value, max_fields, max_pending) = if v.small {
        (4096u64, 8u64, 2u64)
    } else {
        (64 << 20, 1024, 4)
    };
    let mut g = Guest::at(module, &stores.local.url)
        .env("SKYLARK_LOG", "error")
        .env("SKYLARK_MAX_VALUE_BYTES", &max_value.to_string())
        .env("SKYLARK_MAX_FIELDS", &max_fields.to_string())
        .env("SKYLARK_MAX_PENDING", &max_pending.to_string());
    if v.small {
        g = g.env("SKYLARK_MAX_BUNDLE_BYTES", "65536");
    }
    if v.propagation {
        // No waiting for required state to arrive: a fuzzed `require` must not turn
        // every get into a bounded wait.
        g = g
            .env("SKYLARK_PROPAGATION", "on")
            .env("SKYLARK_TOPOLOGY_FILE", &stores.topology.to_string_lossy())
            .env("SKYLARK_INCOMING_WAIT_MS", "0")
            .env("SKYLARK_LINGER_MS", "0");
    } else {
        g = g.env("SKYLARK_PROPAGATION", "off");
    }
    let args = [
        seed.to_string(),
        calls.to_string(),
        max_value.to_string(),
        max_fields.to_string(),
        max_pending.to_string(),
        if v.propagation { "prop" } else { "local" }.to_string(),
        format!("fz{seed}"),
    ];
    let run = g.args(&args).spawn().wait_or_kill(timeout);
    let mut report = ProcessReport {
        seed,
        variant: v.name,
        calls: 0,
        checks: 0,
        violations: 0,
        examples: Vec::new(),
        crash: None,
        elapsed: run.elapsed,
        statuses: BTreeMap::new(),
    };
    let tally: Option<Value> = run
        .stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok());
    match &tally {
        Some(t) => {
            report.calls = t["calls"].as_u64().unwrap_or(0);
            report.checks = t["checks"].as_u64().unwrap_or(0);
            report.violations = t["violations"].as_u64().unwrap_or(0);
            report.examples = t["examples"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(imports) = t["imports"].as_object() {
                for (name, i) in imports {
                    let codes = i["status"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .filter_map(|(c, n)| Some((c.parse().ok()?, n.as_u64()?)))
                                .collect()
                        })
                        .unwrap_or_default();
                    report.statuses.insert(name.clone(), codes);
                }
            }
        }
        None => report.crash = Some("printed no tally".into()),
    }
    let code = run.status.code();
    let normal = code == Some(0) || code == Some(1) && report.violations > 0;
    if !normal {
        let tail: String = run
            .stderr
            .lines()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | ");
        report.crash = Some(format!("wasmedge exited with {:?}: {tail}", run.status));
    } else if let Some(line) = run.stderr.lines().find(|l| l.contains("panicked")) {
        report.crash = Some(format!("host panic: {line}"));
    }
    report
}

/// Runs the fuzz guest as `opts` says and returns every process's tally.
pub fn run(opts: &Options) -> Report {
    let started = Instant::now();
    let module = aot("fuzz-guest");
    let stores = Stores::start();
    let procs = opts.procs.max(1);
    let per = opts.calls.div_ceil(procs as u64);
    let next = AtomicUsize::new(0);
    let done = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..opts.parallel.clamp(1, procs) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= procs {
                    break;
                }
                let seed = opts.seed + i as u64;
                let r = run_one(&module, &stores, seed, per, opts.timeout);
                eprintln!(
                    "[fuzz-guest] seed {seed} ({}): {} calls, {} violations, {:.1} s{}",
                    r.variant,
                    r.calls,
                    r.violations,
                    r.elapsed.as_secs_f64(),
                    r.crash
                        .as_deref()
                        .map(|c| format!(", CRASH {c}"))
                        .unwrap_or_default()
                );
                done.lock().unwrap_or_else(|p| p.into_inner()).push(r);
            });
        }
    });
    let mut processes = done.into_inner().unwrap_or_else(|p| p.into_inner());
    processes.sort_by_key(|p| p.seed);
    let counters = stores
        .local
        .hgetall("skylark:stats:test-node")
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    Report {
        processes,
        elapsed: started.elapsed(),
        counters,
    }
}
