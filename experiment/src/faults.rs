//! Fault injection on the emulated constellation ([`skylark_netemu::constellation`]): the harness of
//! the `fault-run` binary (`scripts/fault-run.sh`) and of `tests/tests/faults.rs`.
//!
//! **Put run** ([`run_puts`]). Real `wasmedge` processes running the fault guest
//! (`tests/guests/fault-guest`, AOT-compiled) on several nodes at once overwrite each
//! node's pool of fields ([`fault_guest::versioned`]): one put after the other, each
//! value carrying its chain, task, version and a checksum, some puts with `cleanup`,
//! and after about half of them a read of one of the node's chains. The processes are
//! paced so that the run lasts about [`PutOptions::duration`]; every process does
//! [`PutOptions::batch`] puts and exits, so jobs it leaves in the outbox are finished by
//! the next process on its node, and the guest reports each put's status and each read's
//! fields as soon as the host call returns. The put nodes run with the TTLs of
//! [`PutOptions::ttls`] (by default a day and none, alternately). Meanwhile the topology
//! moves (a slot every `slot_ms`, [`Bench::start`]) and a chaos thread, driven by a seeded
//! PRNG, cuts and blackholes node-to-node paths (one proxy each), isolates whole nodes
//! (every path to and from them cut) and SIGKILLs node `redis-server`s, restarting them
//! (same port, same directory) after a random downtime. Afterwards every fault is healed,
//! one idle plugin instance per node sweeps the outboxes, and the harness polls (with a
//! deadline) until every outbox is empty. Then it checks the reads against each node's
//! put history ([`crate::history`]) and every field and bundle expiry on every store
//! ([`crate::fault_checks`], which defines lost, stale, superseded, corrupted, wrongly
//! deleted and TTL violations).
//!
//! During the same put phase, under the same faults, the **compare-and-swap workload**
//! ([`CasOptions`], [`fault_guest::cas`]): on each of a few nodes several guest processes
//! at once increment that node's shared counters by CAS loops (`if_version` on the
//! version last seen, an idempotency key per increment, the same put repeated after an
//! unknown outcome). After the drain [`crate::cas_checks`] checks every counter on its
//! node and at the global store: no acknowledged increment lost, none applied twice,
//! versions growing with the count, the global copy equal to the node's.
//!
//! **SIGKILL check** ([`run_kills`]). Processes that put bundles of several MiB-sized
//! fields in one `skylark_put_many` each are SIGKILLed at a random moment: a calibration
//! run per node measures when a process starts its first put's host call, gets it
//! acknowledged, finishes its puts and exits, and each kill falls, with equal chance, into
//! start-up, the first put's host call, the later puts or the exit flush (copies in
//! flight); the guest's output tells where it really was. Then one later
//! instance per node must empty the outboxes, and every bundle must be, on every store,
//! either absent or complete with the right bytes; an acknowledged bundle, and any bundle
//! its node holds, must be complete at the global store; every bundle key of the run must
//! have its writer's TTL. The processes run at the plugin's default `SKYLARK_TIMEOUT_MS`
//! unless [`KillOptions::store_timeout_ms`] says otherwise.
//!
//! Stores run with the [`Durability`] the options give: node Redis must keep what it
//! acknowledged (`--appendonly yes --appendfsync always`) for the plugin's guarantees to
//! hold across a store restart; weaker modes show what is lost.

use crate::cas_checks::{self, CasTally, Inc};
use crate::fault_checks::{self, Attempt, StoreTally};
use crate::history::{self, Ended, PutEvent, ReadEvent, ReadTally};
use fault_guest::cas;
use fault_guest::versioned::{Pool, VPut, Verdict};
use fault_guest::BigPut;
use skylark_netemu::constellation::{Constellation, Durability, NetOptions};
use skylark_testkit::{Guest, Rng, Running};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// The namespace the plugin uses by default.
const NS: &str = "skylark";

/// Pause between polls of the outboxes while they drain.
const DRAIN_POLL: Duration = Duration::from_millis(200);

/// Plugin settings of every guest: short deadlines, retries and leases, so that faults
/// are noticed and jobs change hands within the run (the defaults are 2 s, 100 ms, 3,
/// 5 s and 2 s).
const PLUGIN_ENV: [(&str, &str); 7] = [
    ("SKYLARK_TIMEOUT_MS", "1000"),
    ("SKYLARK_CONNECT_TIMEOUT_MS", "500"),
    ("SKYLARK_RETRY_BASE_MS", "50"),
    ("SKYLARK_RETRIES", "2"),
    ("SKYLARK_LEASE_MS", "1000"),
    ("SKYLARK_SWEEP_MS", "200"),
    ("SKYLARK_LOG", "warn"),
];

/// The plugin's default `SKYLARK_TTL_SECS`.
const DEFAULT_TTL_SECS: u64 = 86_400;

/// The generator of a run from `seed`, drawing what the runs recorded in RELIABILITY.md
/// drew with the same seed (their generator stepped once more before its first draw).
fn seeded(seed: u64) -> Rng {
    let mut rng = Rng::new(seed);
    rng.next_u64();
    rng
}

/// The constellation of a run, the guest module and the run's name.
pub struct Bench {
    c: RwLock<Constellation>,
    module: PathBuf,
    /// Part of every chain id, so that runs never share state.
    pub run: String,
    /// Whether to narrate faults and progress on stderr.
    pub verbose: bool,
    started: Instant,
    /// `SKYLARK_TTL_SECS` per node, where set ([`Bench::set_ttl`]).
    ttls: RwLock<BTreeMap<String, u64>>,
}

impl Bench {
    /// Brings up the testbed's eight nodes with stores of the given durability; `module`
    /// is the fault guest. With `slot_ms` the topology moves (a slot every `slot_ms`
    /// milliseconds, the plugin and the links following the schedule while the chaos
    /// thread injects its faults on top); without, slot 0 is pinned and only the chaos
    /// changes links.
    pub fn start(
        durability: Durability,
        module: &Path,
        run: &str,
        slot_ms: Option<u64>,
    ) -> Result<Bench, String> {
        let opts = match slot_ms {
            Some(ms) => NetOptions {
                slot_ms: ms,
                ..NetOptions::default()
            },
            None => NetOptions {
                fixed_slot: Some(0),
                ..NetOptions::default()
            },
        };
        let c = Constellation::try_start_with(opts, durability)?;
        Ok(Bench {
            c: RwLock::new(c),
            module: module.to_path_buf(),
            run: run.to_string(),
            verbose: false,
            started: Instant::now(),
            ttls: RwLock::new(BTreeMap::new()),
        })
    }

    /// Every plugin process standing for `node` runs with `SKYLARK_TTL_SECS=secs`.
    pub fn set_ttl(&self, node: &str, secs: u64) {
        self.ttls
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), secs);
    }

    /// The bundle TTL in seconds `node`'s processes run with (0: none); the plugin's
    /// default (a day) unless [`Bench::set_ttl`] said otherwise.
    pub fn ttl_of(&self, node: &str) -> u64 {
        self.ttls
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .copied()
            .unwrap_or(DEFAULT_TTL_SECS)
    }

    /// Time since the constellation started.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// The constellation, shared.
    pub fn net(&self) -> RwLockReadGuard<'_, Constellation> {
        self.c.read().unwrap_or_else(|p| p.into_inner())
    }

    fn net_mut(&self) -> RwLockWriteGuard<'_, Constellation> {
        self.c.write().unwrap_or_else(|p| p.into_inner())
    }

    fn say(&self, what: impl fmt::Display) {
        if self.verbose {
            eprintln!(
                "[fault-run +{:7.3}s] {what}",
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    /// The fault guest on `node`, with [`PLUGIN_ENV`] and the node's TTL.
    fn guest(&self, node: &str) -> Guest {
        let mut g = self.net().guest_at(&self.module, node);
        for (k, v) in PLUGIN_ENV {
            g = g.env(k, v);
        }
        g.env("SKYLARK_TTL_SECS", &self.ttl_of(node).to_string())
    }

    /// Jobs left in each node's outbox: `(name, due-time entries, job records)`, for the
    /// nodes that hold any.
    pub fn outbox_left(&self) -> Result<Vec<(String, u64, u64)>, String> {
        let net = self.net();
        let mut left = Vec::new();
        for node in net.nodes() {
            let mut conn = connect(&net, &node)?;
            let (due, jobs): (u64, u64) = redis::pipe()
                .cmd("ZCARD")
                .arg(format!("{NS}:outbox"))
                .cmd("HLEN")
                .arg(format!("{NS}:outbox:jobs"))
                .query(&mut conn)
                .map_err(|e| format!("reading the outbox of {node}: {e}"))?;
            if due + jobs > 0 {
                left.push((node, due, jobs));
            }
        }
        Ok(left)
    }

    /// Up to `limit` jobs left in the outboxes, one line each: node, chain, tasks, the
    /// elected target, the nodes done and excluded, and the failed attempts.
    pub fn stuck_jobs(&self, limit: usize) -> Result<Vec<String>, String> {
        let net = self.net();
        let mut out = Vec::new();
        for node in net.nodes() {
            let mut conn = connect(&net, &node)?;
            let jobs: Vec<String> = redis::cmd("HVALS")
                .arg(format!("{NS}:outbox:jobs"))
                .query(&mut conn)
                .map_err(|e| format!("reading the outbox of {node}: {e}"))?;
            for job in jobs.iter().take(limit.saturating_sub(out.len())) {
                let v: serde_json::Value = serde_json::from_str(job).unwrap_or_default();
                out.push(format!(
                    "job on {node}: chain {} tasks {} target {} done {} excluded {} attempts {}",
                    v["chain"], v["tasks"], v["target"], v["done"], v["exclude"], v["attempts"]
                ));
            }
        }
        Ok(out)
    }

    /// Runs one idle plugin instance on each of `nodes` (their sweeps claim what earlier
    /// processes left), with the extra settings `env` (an empty value removes the
    /// variable: the plugin's default applies), and polls until every outbox is
    /// empty or `timeout` has passed. Returns the time it took and the entries left.
    pub fn drain(
        &self,
        nodes: &[String],
        timeout: Duration,
        env: &[(&str, &str)],
    ) -> Result<Drained, String> {
        let started = Instant::now();
        let idle_ms = (timeout + Duration::from_secs(30)).as_millis().to_string();
        let mut idle: Vec<Running> = Vec::new();
        for node in nodes {
            let mut guest = self.guest(node);
            for (k, v) in env {
                guest = if v.is_empty() {
                    guest.env_remove(k)
                } else {
                    guest.env(k, v)
                };
            }
            let running = guest.args(["idle", &idle_ms]).spawn();
            match running.next_line(Duration::from_secs(30)) {
                Some((line, _)) if line == "ready" => idle.push(running),
                other => {
                    let run = running.wait_or_kill(Duration::ZERO);
                    return Err(format!(
                        "the idle instance on {node} did not start ({other:?}): {}",
                        run.stderr.trim()
                    ));
                }
            }
        }
        let deadline = started + timeout;
        let left = loop {
            let left = self.outbox_left()?;
            if left.is_empty() || Instant::now() >= deadline {
                break left;
            }
            std::thread::sleep(DRAIN_POLL);
        };
        for running in idle {
            // Nothing is in flight once the outboxes are empty.
            running.kill();
        }
        Ok(Drained {
            took: started.elapsed(),
            left,
        })
    }

    /// The counters of every node's stats hash, summed.
    pub fn plugin_stats(&self) -> Result<BTreeMap<String, u64>, String> {
        let net = self.net();
        let mut sum = BTreeMap::new();
        for node in net.nodes() {
            let mut conn = connect(&net, &node)?;
            let stats: HashMap<String, u64> = redis::cmd("HGETALL")
                .arg(format!("{NS}:stats:{node}"))
                .query(&mut conn)
                .map_err(|e| format!("reading the stats of {node}: {e}"))?;
            for (k, v) in stats {
                *sum.entry(k).or_insert(0) += v;
            }
        }
        Ok(sum)
    }
}

/// What [`Bench::drain`] found.
#[derive(Debug)]
pub struct Drained {
    pub took: Duration,
    /// `(node, due-time entries, job records)` still in the outbox at the deadline.
    pub left: Vec<(String, u64, u64)>,
}

impl Drained {
    /// Outbox entries left (the larger of the two structures, per node).
    pub fn entries(&self) -> u64 {
        self.left.iter().map(|(_, a, b)| (*a).max(*b)).sum()
    }
}

/// A direct connection to `node`'s store.
fn connect(net: &Constellation, node: &str) -> Result<redis::Connection, String> {
    let url = net.redis(node).url.clone();
    redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .map_err(|e| format!("connecting to the store of {node} ({url}): {e}"))
}

// ---------------------------------------------------------------------------------------
// Chaos

/// Kinds of fault, by the name the tallies use.
pub const FAULT_KINDS: [&str; 4] = [
    "link_cut",
    "link_blackhole",
    "node_isolated",
    "store_killed",
];

/// Relative weights of [`FAULT_KINDS`] once each kind has occurred once.
const FAULT_WEIGHTS: [u64; 4] = [30, 20, 15, 35];

/// Stores down at the same time, at most.
const MAX_STORES_DOWN: usize = 2;

/// One injected fault, until healed.
enum Fault {
    /// The `from`->`to` path cut or blackholed.
    Link {
        from: String,
        to: String,
        blackhole: bool,
    },
    /// These paths (every free one to and from `node`) cut.
    Isolated {
        node: String,
        links: Vec<(String, String)>,
    },
    /// The store of `node` killed.
    Store { node: String },
}

/// The chaos thread's state.
struct Chaos<'a> {
    bench: &'a Bench,
    rng: Rng,
    /// Mean time between faults.
    every: Duration,
    /// Paths some fault holds.
    held: BTreeSet<(String, String)>,
    /// Faults in force and when each is healed.
    active: Vec<(Instant, Fault)>,
    counts: BTreeMap<&'static str, u64>,
    /// Kinds still to be tried once (in random order) before weights apply.
    first_round: Vec<usize>,
}

impl<'a> Chaos<'a> {
    fn new(bench: &'a Bench, seed: u64, every: Duration) -> Chaos<'a> {
        let mut rng = seeded(seed ^ 0xC4A0_5C4A_05C4_A05C);
        let mut first_round: Vec<usize> = (0..FAULT_KINDS.len()).collect();
        for i in (1..first_round.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            first_round.swap(i, j);
        }
        Chaos {
            bench,
            rng,
            every,
            held: BTreeSet::new(),
            active: Vec::new(),
            counts: FAULT_KINDS.iter().map(|k| (*k, 0)).collect(),
            first_round,
        }
    }

    /// Time until the next fault: uniform between half and one and a half the mean.
    fn gap(&mut self) -> Duration {
        let mean = self.every.as_millis() as u64;
        self.rng.millis(mean / 2, mean + mean / 2)
    }

    /// Injects faults until `stop` says so (or is dropped), healing each when its time
    /// has come; heals everything before returning.
    fn run(mut self, stop: &mpsc::Receiver<()>) -> Result<BTreeMap<&'static str, u64>, String> {
        let mut next = Instant::now() + self.gap();
        loop {
            let wake = self
                .active
                .iter()
                .map(|(at, _)| *at)
                .min()
                .map_or(next, |at| at.min(next));
            match stop.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            let (due, rest): (Vec<_>, Vec<_>) =
                self.active.drain(..).partition(|(at, _)| *at <= now);
            self.active = rest;
            for (_, fault) in due {
                self.heal(fault)?;
            }
            if now >= next {
                self.inject()?;
                next = now + self.gap();
            }
        }
        for (_, fault) in std::mem::take(&mut self.active) {
            self.heal(fault)?;
        }
        Ok(self.counts)
    }

    fn pick_kind(&mut self) -> usize {
        if let Some(kind) = self.first_round.pop() {
            return kind;
        }
        let total: u64 = FAULT_WEIGHTS.iter().sum();
        let mut x = self.rng.below(total);
        for (kind, w) in FAULT_WEIGHTS.iter().enumerate() {
            if x < *w {
                return kind;
            }
            x -= w;
        }
        0
    }

    fn inject(&mut self) -> Result<(), String> {
        let nodes = self.bench.net().nodes();
        let kind = self.pick_kind();
        let name = FAULT_KINDS[kind];
        let fault = match name {
            "link_cut" | "link_blackhole" => {
                let from = self.rng.pick(&nodes).clone();
                let others: Vec<&String> = nodes.iter().filter(|n| **n != from).collect();
                let to = (*self.rng.pick(&others)).clone();
                if !self.held.insert((from.clone(), to.clone())) {
                    return Ok(()); // that path is down already
                }
                let blackhole = name == "link_blackhole";
                self.bench.net().fault_link(&from, &to, blackhole);
                let hold = self.rng.millis(200, 4000);
                self.bench
                    .say(format_args!("{name} {from}->{to} for {hold:?}"));
                (
                    hold,
                    Fault::Link {
                        from,
                        to,
                        blackhole,
                    },
                )
            }
            "node_isolated" => {
                if self
                    .active
                    .iter()
                    .any(|(_, f)| matches!(f, Fault::Isolated { .. }))
                {
                    return Ok(());
                }
                let node = self.rng.pick(&nodes).clone();
                let mut links = Vec::new();
                {
                    let net = self.bench.net();
                    for other in nodes.iter().filter(|n| **n != node) {
                        for path in [(node.clone(), other.clone()), (other.clone(), node.clone())] {
                            if self.held.insert(path.clone()) {
                                net.fault_link(&path.0, &path.1, false);
                                links.push(path);
                            }
                        }
                    }
                }
                let hold = self.rng.millis(500, 4000);
                self.bench.say(format_args!("{name} {node} for {hold:?}"));
                (hold, Fault::Isolated { node, links })
            }
            _ => {
                let net = self.bench.net();
                let up: Vec<String> = nodes
                    .iter()
                    .filter(|n| net.store_running(n))
                    .cloned()
                    .collect();
                drop(net);
                if nodes.len() - up.len() >= MAX_STORES_DOWN || up.is_empty() {
                    return Ok(());
                }
                let node = self.rng.pick(&up).clone();
                self.bench.net_mut().kill_store(&node)?;
                let hold = self.rng.millis(100, 3000);
                self.bench
                    .say(format_args!("{name} {node} (SIGKILL) for {hold:?}"));
                (hold, Fault::Store { node })
            }
        };
        *self.counts.entry(name).or_insert(0) += 1;
        self.active.push((Instant::now() + fault.0, fault.1));
        Ok(())
    }

    fn heal(&mut self, fault: Fault) -> Result<(), String> {
        match fault {
            Fault::Link {
                from,
                to,
                blackhole,
            } => {
                self.bench.net().heal_link(&from, &to);
                self.held.remove(&(from.clone(), to.clone()));
                let what = if blackhole { "blackhole" } else { "cut" };
                self.bench
                    .say(format_args!("restored {from}->{to} ({what})"));
            }
            Fault::Isolated { node, links } => {
                let net = self.bench.net();
                for path in links {
                    net.heal_link(&path.0, &path.1);
                    self.held.remove(&path);
                }
                self.bench.say(format_args!("reconnected {node}"));
            }
            Fault::Store { node } => {
                let t = Instant::now();
                self.bench.net_mut().restart_store(&node)?;
                self.bench.say(format_args!(
                    "restarted the store of {node} (ready in {:?})",
                    t.elapsed()
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Put run

/// Settings of [`run_puts`].
#[derive(Clone, Debug)]
pub struct PutOptions {
    /// Puts in all.
    pub puts: u64,
    /// Seeds the chaos (and names the run).
    pub seed: u64,
    /// About how long the puts should take: each node paces its puts to spread its share
    /// over this time (a slow machine takes longer).
    pub duration: Duration,
    /// Nodes running put guests (one process at a time each).
    pub nodes: Vec<String>,
    /// Puts per guest process.
    pub batch: u64,
    /// Each node's pool of overwritten fields, and how often puts clean up and read.
    pub pool: Pool,
    /// `SKYLARK_TTL_SECS` of the put nodes, in turn (node `i` gets `ttls[i % len]`; 0: no
    /// expiry); empty: the plugin's default everywhere.
    pub ttls: Vec<u64>,
    /// Mean time between two faults; `None`: no faults.
    pub fault_every: Option<Duration>,
    /// How long to wait for the outboxes to drain after the faults are healed.
    pub drain_timeout: Duration,
    /// `SKYLARK_EXIT_FLUSH_MS` of the put processes: short, so that processes leave jobs
    /// behind for their successors.
    pub exit_flush_ms: u64,
    /// The compare-and-swap workload run alongside the puts.
    pub cas: CasOptions,
}

/// The compare-and-swap workload of [`run_puts`] ([`fault_guest::cas`]).
#[derive(Clone, Debug)]
pub struct CasOptions {
    /// Nodes whose counters are incremented, each by processes on that node (CAS is
    /// per accepting node, so the racing writers of a counter share its node).
    pub nodes: Vec<String>,
    /// Processes running at once per node, racing for its counters.
    pub workers: u64,
    /// Increments in all; 0: no CAS workload.
    pub increments: u64,
    /// Counters per node.
    pub counters: u64,
    /// Increments per guest process.
    pub batch: u64,
}

impl Default for CasOptions {
    fn default() -> Self {
        CasOptions {
            nodes: ["pi5u2", "pi4u6"].map(String::from).to_vec(),
            workers: 3,
            increments: 1200,
            counters: 3,
            batch: 50,
        }
    }
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions {
            puts: 10_000,
            seed: 1,
            duration: Duration::from_secs(120),
            nodes: ["pi5u2", "pi5u4", "pi4u6", "pi4p1"]
                .map(String::from)
                .to_vec(),
            batch: 100,
            pool: Pool::default(),
            ttls: vec![86_400, 0],
            fault_every: Some(Duration::from_millis(700)),
            drain_timeout: Duration::from_secs(120),
            exit_flush_ms: 1000,
            cas: CasOptions::default(),
        }
    }
}

/// How one put ended, as its guest reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Status 0: the plugin acknowledged the put.
    Acked,
    /// The guest saw this error status.
    Failed(i32),
    /// The guest process ended without reporting this put.
    Unknown,
}

/// The result of [`run_puts`].
#[derive(Clone, Debug, Default)]
pub struct PutTally {
    pub attempted: u64,
    pub acknowledged: u64,
    /// Puts whose guest saw an error status (not a loss).
    pub failed: u64,
    /// Failures by status name.
    pub failed_by_status: BTreeMap<String, u64>,
    /// Failed puts of policy `stateless` (written synchronously to the global store).
    pub failed_stateless: u64,
    /// Failures by status and message, digits masked (`#`), so that ports and times
    /// do not split a kind of failure.
    pub failure_kinds: BTreeMap<String, u64>,
    /// Puts that asked for `cleanup`.
    pub cleanups: u64,
    /// Puts of guest processes that ended (crashed, hung) before reporting them.
    pub unreported: u64,
    pub guest_processes: u64,
    /// Guest processes that exited abnormally.
    pub guest_crashes: u64,
    /// Outbox entries left when the drain deadline passed.
    pub outbox_left: u64,
    pub drain: Option<Duration>,
    pub faults: BTreeMap<&'static str, u64>,
    /// Slot changes of the emulated constellation during the put phase.
    pub slot_changes: u64,
    pub put_phase: Duration,
    /// The stores after the drain ([`fault_checks`]).
    pub stores: StoreTally,
    /// The reads the guests made during the puts ([`history`]).
    pub reads: ReadTally,
    /// The compare-and-swap workload ([`cas_checks`]).
    pub cas: CasTally,
    /// The plugin's counters, summed over the nodes.
    pub plugin: BTreeMap<String, u64>,
    /// Up to a few examples of each problem, for the report.
    pub examples: Vec<String>,
    /// Every put and how it ended (to check the stores again, see [`verify`]).
    pub attempts: Vec<Attempt>,
}

impl PutTally {
    /// True if nothing was lost, stale, corrupted, wrongly deleted or given a wrong TTL,
    /// every read kept the rules, no counter increment was lost or applied twice, nothing
    /// was left in an outbox or unreported, and no guest process crashed.
    pub fn clean(&self) -> bool {
        self.stores.clean()
            && self.reads.clean()
            && self.cas.clean()
            && self.outbox_left == 0
            && self.unreported == 0
            && self.guest_crashes == 0
    }

    fn example(&mut self, what: String) {
        if self.examples.len() < 20 {
            self.examples.push(what);
        }
    }
}

impl fmt::Display for PutTally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults: u64 = self.faults.values().sum();
        writeln!(f, "puts attempted       {}", self.attempted)?;
        writeln!(f, "  acknowledged       {}", self.acknowledged)?;
        let by: Vec<String> = self
            .failed_by_status
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(
            f,
            "  failed             {} ({}; {} of them stateless)",
            self.failed,
            by.join(", "),
            self.failed_stateless
        )?;
        let mut kinds: Vec<(&String, &u64)> = self.failure_kinds.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1));
        for (kind, n) in kinds.iter().take(8) {
            writeln!(f, "    {n:>6} {kind}")?;
        }
        writeln!(f, "  unreported         {}", self.unreported)?;
        writeln!(f, "  with cleanup       {}", self.cleanups)?;
        writeln!(
            f,
            "guest processes      {} ({} crashed)",
            self.guest_processes, self.guest_crashes
        )?;
        writeln!(
            f,
            "put phase            {:.1} s ({} slot changes)",
            self.put_phase.as_secs_f64(),
            self.slot_changes
        )?;
        let kinds: Vec<String> = self
            .faults
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(f, "faults injected      {faults} ({})", kinds.join(", "))?;
        match self.drain {
            Some(d) => writeln!(f, "outboxes drained in  {:.1} s", d.as_secs_f64())?,
            None => writeln!(f, "outboxes drained in  -")?,
        }
        writeln!(f, "outbox entries left  {}", self.outbox_left)?;
        write!(f, "{}", self.stores)?;
        let r = &self.reads;
        writeln!(
            f,
            "reads                {} ({} failed, {} fields): {} corrupted, {} unwritten, {} stale, {} missing",
            r.reads, r.failed, r.fields, r.corrupted, r.unwritten, r.stale, r.missing
        )?;
        for e in &r.examples {
            writeln!(f, "  ! {e}")?;
        }
        write!(f, "{}", self.cas)?;
        let keys = [
            "jobs",
            "propagated",
            "copies",
            "retries",
            "retargets",
            "resumed",
            "coalesced",
            "cleanups",
            "dropped",
            "conditions_failed",
            "idempotent_repeats",
        ];
        let plugin: Vec<String> = keys
            .iter()
            .map(|k| format!("{k} {}", self.plugin.get(*k).copied().unwrap_or(0)))
            .collect();
        writeln!(f, "plugin counters      {}", plugin.join(", "))?;
        for e in &self.examples {
            writeln!(f, "  ! {e}")?;
        }
        Ok(())
    }
}

/// What one guest process of [`put_batch`] did.
struct Batch {
    /// Its puts and how each ended.
    puts: Vec<(VPut, Outcome)>,
    reads: Vec<ReadEvent>,
    /// How the process ended abnormally, if it did.
    crash: Option<String>,
    /// Its failures, as [`failure_kinds`] names them.
    failures: Vec<String>,
}

/// The put run; see the [module documentation](self).
pub fn run_puts(bench: &Bench, opts: &PutOptions) -> Result<PutTally, String> {
    if opts.nodes.is_empty() || opts.batch == 0 {
        return Err("need at least one node and a batch of at least one put".into());
    }
    let known = bench.net().nodes();
    if let Some(bad) = opts.nodes.iter().find(|n| !known.contains(n)) {
        return Err(format!("no node {bad} (nodes: {})", known.join(", ")));
    }
    if !opts.ttls.is_empty() {
        for (i, node) in opts.nodes.iter().enumerate() {
            bench.set_ttl(node, opts.ttls[i % opts.ttls.len()]);
        }
    }
    let per_node = opts.puts.div_ceil(opts.nodes.len() as u64).max(1);
    let interval_us = (opts.duration.as_micros() as u64 / per_node).to_string();
    let dests = known.join(",");
    // node -> its batches, in order
    let batches: Mutex<BTreeMap<String, Vec<Batch>>> = Mutex::new(BTreeMap::new());
    let cas_batches: Mutex<Vec<CasBatch>> = Mutex::new(Vec::new());
    let processes = AtomicU64::new(0);
    let reported = AtomicU64::new(0);
    let started = Instant::now();
    let first_slot = bench.net().slot_now();
    let slot_changes = AtomicU64::new(0);
    let (stop_chaos, chaos_stop) = mpsc::channel::<()>();
    let (faults, worker_errors) = std::thread::scope(|s| {
        let chaos = opts.fault_every.map(|every| {
            let chaos = Chaos::new(bench, opts.seed, every);
            s.spawn(move || chaos.run(&chaos_stop))
        });
        let nodes = opts.nodes.len() as u64;
        let mut workers: Vec<_> = opts
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let (batches, processes, reported) = (&batches, &processes, &reported);
                let (interval_us, dests) = (&interval_us, &dests);
                // This node's share of the puts.
                let share = opts.puts / nodes + u64::from((i as u64) < opts.puts % nodes);
                s.spawn(move || {
                    let mut next_id = 0;
                    while next_id < share {
                        let (first, count) = (next_id, opts.batch.min(share - next_id));
                        next_id += count;
                        let batch = put_batch(bench, opts, node, first, count, interval_us, dests);
                        processes.fetch_add(1, Ordering::Relaxed);
                        reported.fetch_add(batch.puts.len() as u64, Ordering::Relaxed);
                        batches
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(node.clone())
                            .or_default()
                            .push(batch);
                    }
                })
            })
            .collect();
        let cas = &opts.cas;
        let cas_workers = cas.nodes.len() as u64 * cas.workers;
        if cas.increments > 0 && cas_workers > 0 {
            let per_worker = cas.increments.div_ceil(cas_workers).max(1);
            let interval = opts.duration / per_worker as u32;
            for node in &cas.nodes {
                for w in 0..cas.workers {
                    let cas_batches = &cas_batches;
                    workers.push(s.spawn(move || {
                        let mut done = 0;
                        let mut k = 0;
                        while done < per_worker {
                            let count = cas.batch.max(1).min(per_worker - done);
                            let process = format!("{node}.w{w}.{k}");
                            let b = cas_batch(bench, opts, node, &process, count, interval);
                            cas_batches
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(b);
                            done += count;
                            k += 1;
                        }
                    }));
                }
            }
        }
        let mut errors = Vec::new();
        let mut last_report = Instant::now();
        let mut slot = first_slot;
        for w in workers {
            while !w.is_finished() {
                std::thread::sleep(Duration::from_millis(100));
                let now = bench.net().slot_now();
                if now != slot {
                    slot = now;
                    slot_changes.fetch_add(1, Ordering::Relaxed);
                    bench.say(format_args!("slot {now} begins"));
                }
                if last_report.elapsed() >= Duration::from_secs(10) {
                    last_report = Instant::now();
                    bench.say(format_args!(
                        "{} of {} puts done",
                        reported.load(Ordering::Relaxed),
                        opts.puts
                    ));
                }
            }
            if w.join().is_err() {
                errors.push("a put worker panicked".to_string());
            }
        }
        drop(stop_chaos);
        let faults = match chaos.map(|c| c.join()) {
            None => Ok(BTreeMap::new()),
            Some(Ok(r)) => r,
            Some(Err(_)) => Err("the chaos thread panicked".to_string()),
        };
        (faults, errors)
    });
    if let Some(e) = worker_errors.into_iter().next() {
        return Err(e);
    }
    let batches = batches.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut tally = PutTally {
        faults: faults?,
        put_phase: started.elapsed(),
        slot_changes: slot_changes.load(Ordering::Relaxed),
        guest_processes: processes.load(Ordering::Relaxed),
        ..PutTally::default()
    };
    for kind in FAULT_KINDS {
        tally.faults.entry(kind).or_insert(0);
    }
    // The reads, checked against each node's history.
    for (node, node_batches) in &batches {
        let mut puts = Vec::new();
        let mut reads = Vec::new();
        for b in node_batches {
            puts.extend(b.puts.iter().map(|(p, o)| PutEvent {
                id: p.id,
                chain: p.chain.clone(),
                task: p.task.clone(),
                version: p.version,
                ended: if *o == Outcome::Acked {
                    Ended::Acked
                } else {
                    Ended::NotAcked
                },
            }));
            reads.extend(b.reads.iter().cloned());
        }
        tally.reads.add(&history::check(node, &puts, &reads));
    }
    for (node, node_batches) in batches {
        for b in node_batches {
            if let Some(crash) = b.crash {
                tally.guest_crashes += 1;
                tally.example(crash);
            }
            for kind in b.failures {
                *tally.failure_kinds.entry(kind).or_insert(0) += 1;
            }
            for (put, outcome) in b.puts {
                tally.attempted += 1;
                tally.cleanups += u64::from(put.cleanup);
                match outcome {
                    Outcome::Acked => tally.acknowledged += 1,
                    Outcome::Failed(code) => {
                        tally.failed += 1;
                        if put.policy == "stateless" {
                            tally.failed_stateless += 1;
                        }
                        *tally.failed_by_status.entry(status_name(code)).or_insert(0) += 1;
                    }
                    Outcome::Unknown => tally.unreported += 1,
                }
                tally.attempts.push(Attempt {
                    node: node.clone(),
                    put,
                    acked: outcome == Outcome::Acked,
                });
            }
        }
    }
    bench.say(format_args!(
        "puts done in {:.1} s; faults healed; draining the outboxes",
        tally.put_phase.as_secs_f64()
    ));
    let drained = bench.drain(&opts.nodes, opts.drain_timeout, &[])?;
    tally.outbox_left = drained.entries();
    for (node, due, jobs) in &drained.left {
        tally.example(format!(
            "outbox of {node}: {due} due entries, {jobs} job records"
        ));
    }
    for job in bench.stuck_jobs(5)? {
        tally.example(job);
    }
    if drained.left.is_empty() {
        tally.drain = Some(drained.took);
    }
    bench.say("verifying every field on every store");
    tally.stores = verify(bench, &tally.attempts)?;
    tally.plugin = bench.plugin_stats()?;
    let cas_batches = cas_batches.into_inner().unwrap_or_else(|p| p.into_inner());
    tally.cas = check_cas(bench, &opts.cas, &cas_batches)?;
    tally.cas.idempotent_repeats = tally.plugin.get("idempotent_repeats").copied().unwrap_or(0);
    for b in &cas_batches {
        if let Some(crash) = &b.crash {
            tally.guest_crashes += 1;
            tally.example(crash.clone());
        }
    }
    Ok(tally)
}

/// What one guest process of the CAS workload ([`cas_batch`]) did.
struct CasBatch {
    node: String,
    process: String,
    /// Increments it was to make.
    count: u64,
    acked: Vec<Inc>,
    conflicts: u64,
    unknown: u64,
    given_up: u64,
    /// How the process ended abnormally (or without its totals), if it did.
    crash: Option<String>,
}

/// One guest process making `count` increments of `node`'s counters as `process`.
fn cas_batch(
    bench: &Bench,
    opts: &PutOptions,
    node: &str,
    process: &str,
    count: u64,
    interval: Duration,
) -> CasBatch {
    let cas = &opts.cas;
    let run = bench
        .guest(node)
        .env("SKYLARK_EXIT_FLUSH_MS", &opts.exit_flush_ms.to_string())
        .args(["cas", &bench.run, node, process, &count.to_string()])
        .args(["--counters", &cas.counters.to_string()])
        .args(["--interval-us", &interval.as_micros().to_string()])
        .spawn()
        .wait_or_kill(interval * count as u32 + Duration::from_secs(180));
    let mut b = CasBatch {
        node: node.to_string(),
        process: process.to_string(),
        count,
        acked: Vec::new(),
        conflicts: 0,
        unknown: 0,
        given_up: 0,
        crash: None,
    };
    let mut totals = false;
    for line in run.stdout.lines() {
        let w: Vec<&str> = line.split(' ').collect();
        match w.as_slice() {
            ["c", c, n, v, key] => {
                if let (Ok(c), Ok(n), Ok(v)) = (c.parse(), n.parse(), v.parse()) {
                    b.acked.push(Inc {
                        chain: cas::chain_name(&bench.run, node, c),
                        count: n,
                        version: v,
                        key: key.to_string(),
                    });
                }
            }
            ["ct", c, u, g] => {
                b.conflicts = c.parse().unwrap_or(0);
                b.unknown = u.parse().unwrap_or(0);
                b.given_up = g.parse().unwrap_or(0);
                totals = true;
            }
            _ => {}
        }
    }
    let ok = run.status.success() && totals && run.stdout.lines().any(|l| l == "end");
    if !ok {
        let lines: Vec<&str> = run.stderr.lines().collect();
        let crash = format!(
            "cas guest {process} on {node} ended with {:?} after {:.1} s; stderr ends: {}",
            run.status,
            run.elapsed.as_secs_f64(),
            lines[lines.len().saturating_sub(3)..].join(" | ")
        );
        eprintln!("[fault-run] {crash}");
        b.crash = Some(crash);
    }
    b
}

/// Reads every counter of the CAS workload on its node and at the global store and checks
/// it against the increments the processes reported ([`cas_checks::check_counter`]).
fn check_cas(bench: &Bench, cas: &CasOptions, batches: &[CasBatch]) -> Result<CasTally, String> {
    let mut t = CasTally::default();
    let mut tried: HashSet<String> = HashSet::new();
    let mut acked: BTreeMap<&str, Vec<Inc>> = BTreeMap::new();
    for b in batches {
        t.processes += 1;
        t.crashed += u64::from(b.crash.is_some());
        t.conflicts += b.conflicts;
        t.unknown_retried += b.unknown;
        t.given_up += b.given_up;
        tried.extend((0..b.count).map(|n| cas::key(&b.process, n)));
        for inc in &b.acked {
            acked.entry(b.node.as_str()).or_default().push(inc.clone());
        }
    }
    if batches.is_empty() {
        return Ok(t);
    }
    let net = bench.net();
    let global = net.cloud();
    for node in &cas.nodes {
        let chains: Vec<String> = (0..cas.counters.max(1))
            .map(|i| cas::chain_name(&bench.run, node, i))
            .collect();
        let on_node = read_hashes(&net, node, &chains)?;
        let at_global = read_hashes(&net, &global, &chains)?;
        let node_acked = acked.get(node.as_str()).map_or(&[][..], Vec::as_slice);
        for ((chain, n), g) in chains.iter().zip(&on_node).zip(&at_global) {
            let incs: Vec<Inc> = node_acked
                .iter()
                .filter(|i| i.chain == *chain)
                .cloned()
                .collect();
            cas_checks::check_counter(
                chain,
                &incs,
                &tried,
                cas_checks::held(n).as_ref(),
                cas_checks::held(g).as_ref(),
                &mut t,
            );
        }
    }
    Ok(t)
}

/// The bundle hashes of `chains` on `node`'s store, in order.
fn read_hashes(
    net: &Constellation,
    node: &str,
    chains: &[String],
) -> Result<Vec<HashMap<String, Vec<u8>>>, String> {
    let mut conn = connect(net, node)?;
    let mut pipe = redis::pipe();
    for chain in chains {
        pipe.cmd("HGETALL").arg(format!("{NS}:bundle:{chain}"));
    }
    pipe.query(&mut conn)
        .map_err(|e| format!("reading the counters on {node}: {e}"))
}

/// Checks the stores against `attempts` ([`fault_checks::verify_stores`]) and the expiry
/// of every bundle key of the run ([`fault_checks::check_ttls`]).
pub fn verify(bench: &Bench, attempts: &[Attempt]) -> Result<StoreTally, String> {
    let net = bench.net();
    let mut t = fault_checks::verify_stores(&net, attempts)?;
    fault_checks::check_ttls(&net, &bench.run, &|n| bench.ttl_of(n), bench.age(), &mut t)?;
    Ok(t)
}

/// Failed puts in a guest's output, by status name and message with digits masked.
fn failure_kinds(stdout: &str) -> impl Iterator<Item = String> + '_ {
    stdout.lines().filter_map(|l| {
        let mut w = l.splitn(5, ' ');
        let (p, _id, status, name) = (w.next()?, w.next()?, w.next()?, w.next()?);
        if p != "p" || status == "0" {
            return None;
        }
        let message: String = w
            .next()
            .unwrap_or("")
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        // Runs of masked digits as one.
        let mut kind = format!("{name}: ");
        for c in message.chars() {
            if !(c == '#' && kind.ends_with('#')) {
                kind.push(c);
            }
        }
        Some(kind)
    })
}

/// One guest process doing puts `first..first + count` of the overwrite workload on
/// `node`.
fn put_batch(
    bench: &Bench,
    opts: &PutOptions,
    node: &str,
    first: u64,
    count: u64,
    interval_us: &str,
    dests: &str,
) -> Batch {
    let pool = opts.pool;
    let running = bench
        .guest(node)
        .env("SKYLARK_EXIT_FLUSH_MS", &opts.exit_flush_ms.to_string())
        .args([
            "ver",
            &bench.run,
            node,
            &first.to_string(),
            &count.to_string(),
        ])
        .args(["--interval-us", interval_us, "--dests", dests])
        .args(["--chains", &pool.chains.to_string()])
        .args(["--tasks", &pool.tasks.to_string()])
        .args(["--cleanup-pct", &pool.cleanup_pct.to_string()])
        .args(["--read-pct", &pool.read_pct.to_string()])
        .spawn();
    let interval = Duration::from_micros(interval_us.parse().unwrap_or(0));
    let run = running.wait_or_kill(interval * count as u32 + Duration::from_secs(120));
    let reported = parse_reports(&run.stdout);
    let ok = run.status.success() && run.stdout.lines().any(|l| l == "end");
    let crash = (!ok).then(|| {
        let lines: Vec<&str> = run.stderr.lines().collect();
        format!(
            "guest on {node} (puts {first}..{}) ended with {:?} after {:.1} s; stderr ends: {}",
            first + count,
            run.status,
            run.elapsed.as_secs_f64(),
            lines[lines.len().saturating_sub(3)..].join(" | ")
        )
    });
    if let Some(crash) = &crash {
        // Always shown: a guest must not crash, whatever the faults.
        eprintln!("[fault-run] {crash}");
    }
    let puts = pool
        .puts(&bench.run, node, first + count)
        .into_iter()
        .skip(first as usize)
        .map(|p| {
            let outcome = reported.get(&p.id).copied().unwrap_or(Outcome::Unknown);
            (p, outcome)
        })
        .collect();
    Batch {
        puts,
        reads: parse_reads(&run.stdout),
        crash,
        failures: failure_kinds(&run.stdout).collect(),
    }
}

/// The `p <id> <status> <name>` lines of a guest's output.
fn parse_reports(stdout: &str) -> HashMap<u64, Outcome> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.split(' ');
            if w.next()? != "p" {
                return None;
            }
            let id = w.next()?.parse().ok()?;
            let status: i32 = w.next()?.parse().ok()?;
            Some((
                id,
                if status == 0 {
                    Outcome::Acked
                } else {
                    Outcome::Failed(status)
                },
            ))
        })
        .collect()
}

/// The `r <after> <chain> <status> <name> [<task>=<verdict> ...]` lines of a guest's
/// output.
fn parse_reads(stdout: &str) -> Vec<ReadEvent> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.split(' ');
            if w.next()? != "r" {
                return None;
            }
            let after = w.next()?.parse().ok()?;
            let chain = w.next()?.to_string();
            let status: i32 = w.next()?.parse().ok()?;
            let _name = w.next()?;
            let fields = (status == 0).then(|| {
                w.filter_map(|f| {
                    let (task, verdict) = f.split_once('=')?;
                    Some((task.to_string(), Verdict::parse(verdict)))
                })
                .collect()
            });
            Some(ReadEvent {
                after,
                chain,
                fields,
            })
        })
        .collect()
}

/// The name of a status code.
fn status_name(code: i32) -> String {
    skylark_abi::Status::from_code(code)
        .map(|s| format!("{s:?}"))
        .unwrap_or_else(|| format!("status {code}"))
}

/// A bundle's state fields on each store that holds any: node -> task -> bytes.
type Holdings = BTreeMap<String, HashMap<String, Vec<u8>>>;

/// The state fields of `chains`' bundles on every store, in the order of `chains`.
fn read_bundles(net: &Constellation, chains: &[String]) -> Result<Vec<Holdings>, String> {
    let mut out: Vec<Holdings> = chains.iter().map(|_| BTreeMap::new()).collect();
    for node in net.nodes() {
        let mut conn = connect(net, &node)?;
        let mut pipe = redis::pipe();
        for chain in chains {
            pipe.cmd("HGETALL").arg(format!("{NS}:bundle:{chain}"));
        }
        let hashes: Vec<HashMap<String, Vec<u8>>> = pipe
            .query(&mut conn)
            .map_err(|e| format!("reading bundles on {node}: {e}"))?;
        for (slot, mut fields) in out.iter_mut().zip(hashes) {
            fields.retain(|k, _| !k.starts_with('@'));
            if !fields.is_empty() {
                slot.insert(node.clone(), fields);
            }
        }
    }
    Ok(out)
}
// ---------------------------------------------------------------------------------------
// SIGKILL check

/// Settings of [`run_kills`].
#[derive(Clone, Debug)]
pub struct KillOptions {
    /// Guest processes started and SIGKILLed.
    pub rounds: u64,
    pub seed: u64,
    /// Nodes the processes run on (picked at random per round).
    pub nodes: Vec<String>,
    /// Bundles each process puts.
    pub puts_per_process: u64,
    /// Fields per bundle.
    pub fields: usize,
    /// Typical field size in bytes (each field is 0.5 to 1.5 times this).
    pub size: usize,
    pub drain_timeout: Duration,
    /// `SKYLARK_TIMEOUT_MS` of these processes and their successors; `None`: the
    /// plugin's default (2 s). Before each copy had its own deadline (RELIABILITY.md,
    /// section 2, finding 3) this had to cover a whole copy; now the default must do.
    pub store_timeout_ms: Option<u64>,
}

impl Default for KillOptions {
    fn default() -> Self {
        KillOptions {
            rounds: 20,
            seed: 1,
            nodes: ["pi5u2", "pi4u6"].map(String::from).to_vec(),
            puts_per_process: 2,
            fields: 3,
            size: 1 << 20,
            drain_timeout: Duration::from_secs(120),
            store_timeout_ms: None,
        }
    }
}

/// The result of [`run_kills`].
#[derive(Clone, Debug, Default)]
pub struct KillTally {
    pub processes: u64,
    /// Processes the SIGKILL ended (the others had exited already).
    pub killed: u64,
    /// Killed while starting (before its first put's host call).
    pub killed_starting: u64,
    /// Killed inside a put's host call (started, not yet reported).
    pub killed_in_put: u64,
    /// Killed between two puts.
    pub killed_between: u64,
    /// Killed after its last put (in the exit flush, copies in flight).
    pub killed_exiting: u64,
    /// Bundle puts the processes would have made.
    pub bundles: u64,
    pub acknowledged: u64,
    /// Bundles complete on their own node (acknowledged or not).
    pub complete: u64,
    /// Bundles absent from their own node.
    pub absent: u64,
    /// Bundles some store holds only part of.
    pub partial: u64,
    /// Bundles some store holds a field of with other bytes.
    pub corrupted: u64,
    /// Acknowledged bundles not complete on their own node.
    pub lost: u64,
    /// Bundles complete on their own node but not at the global store after the drain.
    pub not_at_global: u64,
    pub outbox_left: u64,
    pub drain: Option<Duration>,
    /// Bundle keys of the run whose expiry was checked afterwards, and the wrong ones
    /// ([`fault_checks::check_ttls`]).
    pub ttl_checked: u64,
    pub ttl_violations: u64,
    pub examples: Vec<String>,
}

impl KillTally {
    /// True if every bundle was absent or complete, and everything left was finished.
    pub fn clean(&self) -> bool {
        self.partial == 0
            && self.corrupted == 0
            && self.lost == 0
            && self.not_at_global == 0
            && self.outbox_left == 0
            && self.ttl_violations == 0
    }

    fn example(&mut self, what: String) {
        if self.examples.len() < 20 {
            self.examples.push(what);
        }
    }
}

impl fmt::Display for KillTally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "processes            {} ({} SIGKILLed: {} starting, {} inside a put, {} between puts, {} in the exit flush; {} had exited)",
            self.processes,
            self.killed,
            self.killed_starting,
            self.killed_in_put,
            self.killed_between,
            self.killed_exiting,
            self.processes - self.killed
        )?;
        writeln!(f, "bundles              {}", self.bundles)?;
        writeln!(f, "  acknowledged       {}", self.acknowledged)?;
        writeln!(f, "  complete on node   {}", self.complete)?;
        writeln!(f, "  absent on node     {}", self.absent)?;
        match self.drain {
            Some(d) => writeln!(f, "outboxes drained in  {:.1} s", d.as_secs_f64())?,
            None => writeln!(f, "outboxes drained in  -")?,
        }
        writeln!(f, "partial bundles      {}", self.partial)?;
        writeln!(f, "corrupted            {}", self.corrupted)?;
        writeln!(f, "lost                 {}", self.lost)?;
        writeln!(f, "outbox entries left  {}", self.outbox_left)?;
        writeln!(f, "not at global store  {}", self.not_at_global)?;
        writeln!(
            f,
            "TTL violations       {} (of {} bundle keys)",
            self.ttl_violations, self.ttl_checked
        )?;
        for e in &self.examples {
            writeln!(f, "  ! {e}")?;
        }
        Ok(())
    }
}

/// When an unkilled `big` process started and finished its first put's host call,
/// printed its `end`, and exited (after its exit flush), counted from its start.
#[derive(Clone, Copy, Debug)]
struct Timeline {
    first_put: Duration,
    first_ack: Duration,
    end: Duration,
    exit: Duration,
}

/// Where a killed `big` process was, by its output: `s <id>` before each put's host
/// call, `p <id> ...` after it, `end` after the last.
fn kill_point(stdout: &str) -> &'static str {
    let last = stdout.lines().last().unwrap_or("");
    if last.is_empty() {
        "starting"
    } else if last.starts_with("s ") {
        "in_put"
    } else if last == "end" {
        "exiting"
    } else {
        "between"
    }
}

/// The ids a guest's output reports as acknowledged.
fn acked_ids(stdout: &str) -> BTreeSet<u64> {
    parse_reports(stdout)
        .into_iter()
        .filter(|(_, o)| *o == Outcome::Acked)
        .map(|(id, _)| id)
        .collect()
}

/// The SIGKILL check; see the [module documentation](self).
pub fn run_kills(bench: &Bench, opts: &KillOptions) -> Result<KillTally, String> {
    if opts.nodes.is_empty() || opts.puts_per_process == 0 || opts.fields == 0 {
        return Err("need a node, a put per process and a field per put".into());
    }
    let mut rng = seeded(opts.seed ^ 0x0005_16C1_11ED);
    let dests = bench.net().nodes().join(",");
    // "" removes the variable: the plugin's default applies.
    let timeout_ms = opts
        .store_timeout_ms
        .map_or(String::new(), |ms| ms.to_string());
    let with_timeout = |g: Guest| {
        if timeout_ms.is_empty() {
            g.env_remove("SKYLARK_TIMEOUT_MS")
        } else {
            g.env("SKYLARK_TIMEOUT_MS", &timeout_ms)
        }
    };
    let mut next_id: BTreeMap<String, u64> = BTreeMap::new();
    let mut take_ids = |node: &str| {
        let next = next_id.entry(node.to_string()).or_insert(0);
        *next += opts.puts_per_process;
        *next - opts.puts_per_process
    };
    let start = |node: &str, first: u64| {
        with_timeout(bench.guest(node))
            .args(["big", &bench.run, node, &first.to_string()])
            .args([&opts.puts_per_process.to_string(), &opts.fields.to_string()])
            .args([opts.size.to_string(), "--dests".into(), dests.clone()])
            .spawn()
    };
    let mut tally = KillTally::default();
    // (node, first id, acknowledged ids)
    let mut rounds: Vec<(String, u64, BTreeSet<u64>)> = Vec::new();
    // One unkilled run per node first: how long its phases last there.
    let mut timelines: BTreeMap<&str, Timeline> = BTreeMap::new();
    for node in &opts.nodes {
        let first = take_ids(node);
        let running = start(node, first);
        let (mut first_put, mut first_ack, mut end) = (None, None, None);
        while let Some((line, at)) = running.next_line(Duration::from_secs(120)) {
            if line.starts_with("s ") {
                first_put.get_or_insert(at);
            } else if line.starts_with("p ") {
                first_ack.get_or_insert(at);
            } else if line == "end" {
                end = Some(at);
            }
        }
        let run = running.wait_or_kill(Duration::from_secs(60));
        let (Some(first_put), Some(first_ack), Some(end), true) =
            (first_put, first_ack, end, run.status.success())
        else {
            return Err(format!(
                "the calibration run on {node} failed ({:?}): {}{}",
                run.status, run.stdout, run.stderr
            ));
        };
        let timeline = Timeline {
            first_put,
            first_ack,
            end,
            exit: run.elapsed,
        };
        bench.say(format_args!("kill calibration on {node}: {timeline:?}"));
        timelines.insert(node, timeline);
        tally.processes += 1;
        rounds.push((node.clone(), first, acked_ids(&run.stdout)));
    }
    for round in 0..opts.rounds {
        let node = rng.pick(&opts.nodes).as_str();
        let first = take_ids(node);
        // Each phase equally likely: start-up, the first put's host call, the later
        // puts, the exit flush.
        let t = timelines[node];
        let (lo, hi) = match rng.below(4) {
            0 => (Duration::ZERO, t.first_put),
            1 => (t.first_put, t.first_ack),
            2 => (t.first_ack, t.end),
            _ => (t.end, t.exit),
        };
        let delay = lo + rng.millis(0, hi.saturating_sub(lo).as_millis() as u64);
        let run = start(node, first).wait_or_kill(delay);
        let acked = acked_ids(&run.stdout);
        use std::os::unix::process::ExitStatusExt;
        let killed = run.status.signal() == Some(libc::SIGKILL);
        tally.processes += 1;
        let point = if killed {
            kill_point(&run.stdout)
        } else {
            "had exited"
        };
        if killed {
            tally.killed += 1;
            *match point {
                "starting" => &mut tally.killed_starting,
                "in_put" => &mut tally.killed_in_put,
                "between" => &mut tally.killed_between,
                _ => &mut tally.killed_exiting,
            } += 1;
        }
        bench.say(format_args!(
            "kill round {round}: {node} after {delay:?}: {} of {} bundles acknowledged, {point}",
            acked.len(),
            opts.puts_per_process,
        ));
        rounds.push((node.to_string(), first, acked));
    }
    let env = [("SKYLARK_TIMEOUT_MS", timeout_ms.as_str())];
    let drained = bench.drain(&opts.nodes, opts.drain_timeout, &env)?;
    tally.outbox_left = drained.entries();
    for (node, due, jobs) in &drained.left {
        tally.example(format!(
            "outbox of {node}: {due} due entries, {jobs} job records"
        ));
    }
    for job in bench.stuck_jobs(5)? {
        tally.example(job);
    }
    if drained.left.is_empty() {
        tally.drain = Some(drained.took);
    }
    let net = bench.net();
    let global = net.cloud();
    for (node, first, acked) in &rounds {
        for id in *first..first + opts.puts_per_process {
            let big = BigPut::new(&bench.run, node, id, opts.fields, opts.size);
            let want: HashMap<&str, Vec<u8>> = big
                .fields
                .iter()
                .map(|(t, _)| t.as_str())
                .zip(big.values())
                .collect();
            let held = read_bundles(&net, std::slice::from_ref(&big.chain))?
                .pop()
                .unwrap_or_default();
            tally.bundles += 1;
            let is_acked = acked.contains(&id);
            if is_acked {
                tally.acknowledged += 1;
            }
            let mut complete_on = Vec::new();
            for (store, fields) in &held {
                let bad: Vec<&String> = fields
                    .iter()
                    .filter(|(t, v)| want.get(t.as_str()).is_some_and(|w| w != *v))
                    .map(|(t, _)| t)
                    .collect();
                if !bad.is_empty() {
                    tally.corrupted += 1;
                    tally.example(format!(
                        "{} on {store}: fields {bad:?} hold other bytes",
                        big.chain
                    ));
                } else if fields.len() == want.len() && want.keys().all(|t| fields.contains_key(*t))
                {
                    complete_on.push(store.as_str());
                } else {
                    tally.partial += 1;
                    let mut names: Vec<&String> = fields.keys().collect();
                    names.sort();
                    tally.example(format!(
                        "{} on {store}: partial, fields {names:?}",
                        big.chain
                    ));
                }
            }
            let at_node = complete_on.contains(&node.as_str());
            if at_node {
                tally.complete += 1;
            } else if !held.contains_key(node) {
                tally.absent += 1;
            }
            if is_acked && !at_node {
                tally.lost += 1;
                tally.example(format!(
                    "{} acknowledged but not complete on {node}",
                    big.chain
                ));
            }
            if at_node && !complete_on.contains(&global.as_str()) {
                tally.not_at_global += 1;
                tally.example(format!(
                    "{} on {node} but not at the global store",
                    big.chain
                ));
            }
        }
    }
    let mut ttl = StoreTally::default();
    fault_checks::check_ttls(
        &net,
        &bench.run,
        &|n| bench.ttl_of(n),
        bench.age(),
        &mut ttl,
    )?;
    tally.ttl_checked = ttl.ttl_checked;
    tally.ttl_violations = ttl.ttl_violations;
    for e in ttl.examples {
        tally.example(e);
    }
    Ok(tally)
}

/// A compact one-line summary of both tallies, for logs.
pub fn summary(puts: Option<&PutTally>, kills: Option<&KillTally>) -> String {
    let mut s = String::new();
    if let Some(p) = puts {
        let _ = write!(
            s,
            "puts: {} attempted, {} acknowledged, {} failed, {} lost, {} stale, {} corrupted, {} wrongly deleted, {} TTL violations, {} not at global, {} outbox entries left; reads: {} ({} corrupted, {} unwritten, {} stale, {} missing); cas: {} increments acknowledged, {} lost, {} doubled, {} invented, {} version order, {} global behind, {} global ahead; ",
            p.attempted,
            p.acknowledged,
            p.failed,
            p.stores.lost,
            p.stores.stale_total(),
            p.stores.corrupted,
            p.stores.wrongly_deleted,
            p.stores.ttl_violations,
            p.stores.not_at_global,
            p.outbox_left,
            p.reads.reads,
            p.reads.corrupted,
            p.reads.unwritten,
            p.reads.stale,
            p.reads.missing,
            p.cas.acked,
            p.cas.lost,
            p.cas.doubled,
            p.cas.invented,
            p.cas.version_order,
            p.cas.global_behind,
            p.cas.global_ahead
        );
    }
    if let Some(k) = kills {
        let _ = write!(
            s,
            "kills: {} processes, {} killed, {} bundles, {} partial, {} corrupted, {} lost, {} TTL violations, {} outbox entries left",
            k.processes, k.killed, k.bundles, k.partial, k.corrupted, k.lost, k.ttl_violations, k.outbox_left
        );
    }
    s
}
