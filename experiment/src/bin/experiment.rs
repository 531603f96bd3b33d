//! `experiment`: the research evaluation, reproduced on one machine. Brings up the
//! emulated constellation (`skylark_netemu::constellation`: the testbed's 8 nodes, one
//! redis-server each, every node-to-node path through a link emulator routed over shared
//! per-link wires with the testbed's measured characteristics, the 7-slot orbital
//! schedule), runs the Earth-observation
//! workflow as real `wasmedge` processes with the plugin, and writes a report
//! (`skylark_experiment::report`): Markdown, a PNG plot and every record as JSON.
//!
//! ```text
//! cargo run --release -p skylark-experiment --bin experiment -- [--quick | --full]
//!     [--reps N] [--reps-large N] [--sizes 1] [--policies skylark,research,random,stateless]
//!     [--states bundled,single] [--slot-ms MS] [--concurrency 5]
//!     [--throughput-workflows W] [--scenarios chain,far,slot-change,dag] [--scenario-reps N]
//!     [--fusion-reps N] [--fusion-size MB] [--slo loose,binding,infeasible] [--slo-ms MS]
//!     [--mode aot|interp] [--default-exit-flush | --exit-flush-ms MS] [--out DIR]
//! ```
//! Use `scripts/experiment.sh`, which builds everything first.
//!
//! One workflow (scenario `chain`, the research's): `preprocess` on satellite s(i),
//! `detect` on s(i+1), `detect` again (task `detect2`) on s(i+2), `alarm` on the cloud
//! node, i = repetition mod 5 along the satellite chain. Scenario `far`: each consumer 2
//! hops from its producer (s(i), s(i+2), s(i+4), cloud). Scenario `slot-change`: the
//! producer `preprocess` runs on the cloud node shortly before a slot boundary and its
//! consumers on the satellite that gets the ground link at that boundary (and the next
//! one along the chain); `detect` is started just after the boundary, so the route
//! between producer and consumer changes in between (the time waited for the boundary is
//! not counted in T(W)). Scenario `dag` (issue 17, fan-out / fan-in): the chain's nodes, but
//! `preprocess` puts once for both detectors (`--dests s(i+1),s(i+2)`, put option
//! `destinations`), `detect` and `detect2` start together when it has printed its result
//! and each puts for `alarm` on the cloud node, which starts when both have printed theirs
//! and joins their detections. Policy `research` is Skylark with the research's election rule
//! (`SKYLARK_ELECTION=research`); `skylark` runs the default rule (`retrieval`).
//! Each step names the next step's node as its put's destination and
//! runs with the configuration's policy and state layout. A step's function latency T(f)
//! runs from its process start until it prints its result; the next step starts then,
//! as a FaaS platform would invoke it on the predecessor's response, while the
//! predecessor's process finishes its background propagation and exits. T(W) runs from
//! the first step's start to the last step's result; T*(W), its physical bound, is the
//! steps' execution times plus the image's transfer over the bottleneck of each hand-off
//! that carries it (to `detect` and `detect2`; `alarm` reads only their small results).
//!
//! Paired design: within a repetition every policy starts on the same satellite, the
//! policies in an order shuffled per repetition from a fixed seed, so slot drift and
//! machine load do not favour the policy that always runs first
//! (`skylark_experiment::paired`). Throughput's wall time runs from the first start until
//! the last workflow's propagation has drained (every process exited, every outbox
//! empty).

use serde_json::Value;
use skylark_experiment::handoff;
use skylark_experiment::quiet::{self, pending, Quiet};
use skylark_experiment::report::{
    self, Config, Meta, StepRecord, ThroughputRecord, WorkflowRecord,
};
use skylark_experiment::slo::{self, Migration, Profile};
use skylark_netemu::constellation::{Constellation, NetOptions};
use skylark_testkit::redis::NS;
use skylark_testkit::{chain_id, cli, Rng, Running};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The longest a step may take to print its result, and a process to exit afterwards.
const STEP_TIMEOUT: Duration = Duration::from_secs(600);
/// How often a step is invoked before the run gives up on it.
const STEP_ATTEMPTS: u32 = 10;
/// Delay before invoking a failed step again, times the attempts so far.
const RETRY_DELAY: Duration = Duration::from_millis(200);
/// In scenario `slot-change`, how long after the boundary the consumer is started.
const AFTER_BOUNDARY: Duration = Duration::from_millis(100);
/// How often the arrival of a step's state in its own store is polled.
const ARRIVAL_POLL: Duration = Duration::from_millis(1);
/// The store deadline (`SKYLARK_TIMEOUT_MS`) of the throughput phase's guests.
const THROUGHPUT_TIMEOUT_MS: u64 = 30_000;
/// The step processes' exit flush (`SKYLARK_EXIT_FLUSH_MS`), set once from the options
/// ([`exit_flush_ms`]).
static EXIT_FLUSH: OnceLock<ExitFlush> = OnceLock::new();

/// How long a step's process waits for its copies at exit.
#[derive(Debug, Clone, Copy)]
enum ExitFlush {
    /// As long as a store request may take, wherever the run sets a store deadline (the
    /// throughput phase, sizes above [`LARGE_BYTES`]): rather than give a copy up after
    /// the default 5 s with part of the bytes sent (a resumer then sends them all again
    /// over the same loaded links). A deployment's serving process lives on after a
    /// response and finishes its copies; a step's process here exits.
    Store,
    /// The plugin's default (`--default-exit-flush`).
    Default,
    /// A fixed value (`--exit-flush-ms`).
    Fixed(u64),
}
/// States above this size get a longer store deadline (`SKYLARK_TIMEOUT_MS`).
const LARGE_BYTES: u64 = 5_000_000;
/// The longest the outboxes may take to drain after the throughput phase's processes
/// ended, and at least how long after a sequential workflow's ([`quiesce`]). Jobs a process left in its node's outbox when it exited are resumed by a later
/// process on that node: the node's resumer ([`start_resumers`]), or, without resumers,
/// a later step there; when none comes, they stay (reported as undrained).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Seed of the per-repetition shuffle of the policies' order.
const ORDER_SEED: u64 = 0x0_5EED_0013;

struct Options {
    reps: u32,
    /// Repetitions at sizes above 5 MB (at most `reps`).
    reps_large: u32,
    sizes: Vec<u64>,
    policies: Vec<String>,
    states: Vec<String>,
    slot_ms: u64,
    /// The slot pinned for the whole run (chain, far and DAG scenarios), if any.
    fixed_slot: Option<usize>,
    concurrency: Vec<u32>,
    /// Workflows per throughput measurement; `None`: twice the concurrency.
    throughput_workflows: Option<u32>,
    scenarios: Vec<Scenario>,
    scenario_reps: u32,
    fusion_reps: u32,
    fusion_size: u64,
    slo: Vec<String>,
    slo_ms: Option<u64>,
    mode: String,
    out: PathBuf,
    quick: bool,
    /// One long-lived process per node during the throughput phase ([`start_resumers`]).
    resumers: bool,
    /// The step processes' exit flush.
    exit_flush: ExitFlush,
}

const USAGE: &str = "\
usage: experiment [--quick | --full] [--reps N] [--reps-large N] [--sizes MB,MB..]
                  [--policies skylark,research,random,stateless] [--states bundled,single]
                  [--slot-ms MS] [--fixed-slot N] [--concurrency K,K..]
                  [--throughput-workflows W] [--scenarios chain,far,slot-change,dag] [--scenario-reps N]
                  [--fusion-reps N] [--fusion-size MB] [--slo LEVELS] [--slo-ms MS]
                  [--mode aot|interp] [--no-resumers]
                  [--default-exit-flush | --exit-flush-ms MS] [--out DIR]
  --quick                 a short run: 1 rep, 64 kB, 20 s slots, concurrency 2, 2 workflows,
                          every scenario once, fusion once at 64 kB (options after it apply)
  --full                  the published scale: sizes 1,2,5,10,20,50, 20 reps (5 above
                          5 MB), concurrency 5,10,20,50, SLO loose,binding,infeasible,
                          20 reps per scenario, 10 fusion reps (options after it apply)
  --reps                  workflows per configuration; default 20
  --reps-large            workflows per configuration above 5 MB (at most --reps); default 5
  --sizes                 image sizes in MB (10^6 bytes, as the research), each in (0, 64];
                          default 1
  --policies              default skylark,research,random,stateless (research: Skylark
                          with the research's election rule)
  --states                default bundled
  --slot-ms               slot length; default 60000 (the testbed's minute)
  --fixed-slot            pin slot N (0-6) for the chain, far and DAG scenarios, to reproduce
                          what one slot's routes do (slot-change keeps its moving slots)
  --concurrency           workflows at once in the throughput phase, one measurement per
                          value, at 2 MB (at the run's size with --quick); default 5
  --throughput-workflows  workflows per throughput measurement; default twice the
                          concurrency
  --scenarios             chain (the research's), far (consumers 2 hops away), slot-change
                          (producer on the cloud node, consumer after a slot boundary that
                          moves its route), dag (preprocess fans out to both detectors at
                          once, alarm joins them); default all four; all but chain run at
                          the first size, bundled, the first SLO level
  --scenario-reps         repetitions of far, slot-change and dag; default 10
  --fusion-reps           repetitions of the fusion measurement (1-5 fused functions,
                          bundled vs single, `bundled` guest); 0: none; default 3
  --fusion-size           state per function in the fusion measurement, MB; default 10
  --slo                   SLO levels of tests/data/slo-profile.json to sweep, each a full
                          run of the matrix (loose: 5000 ms; binding: 1.2x one satellite
                          hop's migration time for the size; infeasible: 1 ms); the first
                          level's runs make the tables and the headline; default loose
  --slo-ms                one fixed per-step budget instead of the profile's levels
  --mode                  guests AOT-compiled or interpreted; default aot
  --no-resumers           no long-lived process per node in the throughput phase (jobs a
                          step's process leaves at exit then wait for a later step on its
                          node, and may never drain)
  --default-exit-flush    step processes keep the plugin's default exit flush (5 s) instead
                          of waiting for their copies as long as a store request may take
                          (throughput phase: 30 s; sizes above 5 MB: 2 s + 1.6 s per MB)
  --exit-flush-ms         every step process's exit flush (SKYLARK_EXIT_FLUSH_MS)
  --out                   report directory; default results/<UTC time>";

/// The items of a comma-separated list, each one of `allowed`.
fn names(p: &mut lexopt::Parser, allowed: &[&str]) -> Result<Vec<String>, lexopt::Error> {
    let items: Vec<String> = cli::list(p)?;
    match items.iter().find(|i| !allowed.contains(&i.as_str())) {
        Some(bad) => Err(format!("{bad:?} is not one of {}", allowed.join(", ")).into()),
        None => Ok(items),
    }
}

fn options(p: &mut lexopt::Parser) -> Result<Options, lexopt::Error> {
    use lexopt::prelude::*;
    let stamp = command_output("date", &["-u", "+%Y%m%d-%H%M%S"]);
    let mut o = Options {
        reps: 20,
        reps_large: 5,
        sizes: vec![mb_bytes(1.0)],
        policies: ["skylark", "research", "random", "stateless"]
            .map(String::from)
            .to_vec(),
        states: vec!["bundled".into()],
        slot_ms: 60_000,
        fixed_slot: None,
        concurrency: vec![5],
        throughput_workflows: None,
        scenarios: Scenario::ALL.to_vec(),
        scenario_reps: 10,
        fusion_reps: 3,
        fusion_size: mb_bytes(10.0),
        slo: vec!["loose".into()],
        slo_ms: None,
        mode: "aot".into(),
        out: skylark_testkit::root().join(format!("results/{}", stamp.trim())),
        quick: false,
        resumers: true,
        exit_flush: ExitFlush::Store,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("quick") => {
                o.quick = true;
                o.reps = 1;
                o.sizes = vec![64_000];
                o.slot_ms = 20_000;
                o.concurrency = vec![2];
                o.throughput_workflows = Some(2);
                o.scenario_reps = 1;
                o.fusion_reps = 1;
                o.fusion_size = 64_000;
            }
            Long("full") => {
                o.reps = 20;
                o.reps_large = 5;
                o.sizes = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0]
                    .iter()
                    .map(|mb| mb_bytes(*mb))
                    .collect();
                o.concurrency = vec![5, 10, 20, 50];
                o.slo = ["loose", "binding", "infeasible"]
                    .map(String::from)
                    .to_vec();
                o.scenario_reps = 20;
                o.fusion_reps = 10;
            }
            Long("reps") => o.reps = cli::positive(p)?,
            Long("reps-large") => o.reps_large = cli::positive(p)?,
            Long("scenarios") => {
                o.scenarios = cli::list::<String>(p)?
                    .iter()
                    .map(|n| {
                        Scenario::parse(n).ok_or_else(|| {
                            format!("{n:?} is not one of chain, far, slot-change, dag")
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
            Long("scenario-reps") => o.scenario_reps = cli::positive(p)?,
            Long("fusion-reps") => o.fusion_reps = p.value()?.parse()?,
            Long("fusion-size") => {
                let mb: f64 = p.value()?.parse()?;
                if !(mb > 0.0 && mb <= 64.0) {
                    return Err(format!("fusion size {mb} is not a number of MB in (0, 64]").into());
                }
                o.fusion_size = mb_bytes(mb);
            }
            Long("sizes") => {
                o.sizes = cli::list::<f64>(p)?
                    .into_iter()
                    .map(|mb| match mb {
                        mb if mb > 0.0 && mb <= 64.0 => Ok(mb_bytes(mb)),
                        _ => Err(format!("size {mb} is not a number of MB in (0, 64]")),
                    })
                    .collect::<Result<_, _>>()?
            }
            Long("policies") => {
                o.policies = names(p, &["skylark", "research", "random", "stateless"])?
            }
            Long("states") => o.states = names(p, &["bundled", "single"])?,
            Long("slot-ms") => o.slot_ms = cli::positive(p)?,
            Long("fixed-slot") => o.fixed_slot = Some(p.value()?.parse()?),
            Long("concurrency") => {
                o.concurrency = cli::list::<u32>(p)?;
                if o.concurrency.is_empty() || o.concurrency.contains(&0) {
                    return Err("--concurrency takes positive numbers".into());
                }
            }
            Long("throughput-workflows") => o.throughput_workflows = Some(cli::positive(p)?),
            Long("slo") => o.slo = cli::list(p)?,
            Long("slo-ms") => o.slo_ms = Some(cli::positive(p)?),
            Long("mode") => {
                o.mode = p.value()?.string()?;
                if o.mode != "aot" && o.mode != "interp" {
                    return Err("--mode is aot or interp".into());
                }
            }
            Long("out") => o.out = PathBuf::from(p.value()?),
            Long("no-resumers") => o.resumers = false,
            Long("default-exit-flush") => o.exit_flush = ExitFlush::Default,
            Long("exit-flush-ms") => o.exit_flush = ExitFlush::Fixed(p.value()?.parse()?),
            Short('h') | Long("help") => cli::help(USAGE),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(o)
}

/// MB as in the research: 10^6 bytes.
fn mb_bytes(mb: f64) -> u64 {
    (mb * 1e6).round() as u64
}

/// Where a workflow's steps run (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Chain,
    Far,
    SlotChange,
    Dag,
}

impl Scenario {
    const ALL: [Scenario; 4] = [
        Scenario::Chain,
        Scenario::Far,
        Scenario::SlotChange,
        Scenario::Dag,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Chain => "chain",
            Scenario::Far => "far",
            Scenario::SlotChange => "slot-change",
            Scenario::Dag => "dag",
        }
    }

    fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The guest modules, AOT-compiled or not.
struct Modules {
    preprocess: PathBuf,
    detect: PathBuf,
    alarm: PathBuf,
    bundled: PathBuf,
}

impl Modules {
    fn load(mode: &str) -> Modules {
        let get = |name: &str| {
            if mode == "aot" {
                skylark_testkit::aot(name)
            } else {
                skylark_testkit::wasm(name)
            }
        };
        Modules {
            preprocess: get("preprocess"),
            detect: get("detect"),
            alarm: get("alarm"),
            bundled: get("bundled"),
        }
    }
}

/// Every node's placement and propagation events, collected in the background.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Value>>>);

impl Events {
    fn subscribe(net: &Constellation) -> Events {
        let events = Events::default();
        for node in net.nodes() {
            let lines = skylark_testkit::subscribe(&net.redis(&node).url, "skylark/events");
            let sink = events.clone();
            std::thread::spawn(move || {
                for line in lines {
                    let mut parts = line.splitn(3, ' ');
                    let (Some(_), Some(name), Some(body)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        continue;
                    };
                    if let Ok(mut v) = serde_json::from_str::<Value>(body) {
                        v["event"] = Value::String(name.to_string());
                        if let Ok(mut all) = sink.0.lock() {
                            all.push(v);
                        }
                    }
                }
            });
        }
        events
    }

    /// Propagation times (ms) of the chain's jobs, waiting up to a second for `expected`
    /// of them (events travel through pub/sub after the process published them).
    fn migrations_wait(&self, chain: &str, expected: usize) -> Vec<f64> {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let m = self.migrations(chain);
            if m.len() >= expected || Instant::now() >= deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The propagation events of the chain's jobs, in either state layout.
    fn propagations(&self, chain: &str) -> Vec<Value> {
        let prefix = format!("{chain}.");
        let Ok(all) = self.0.lock() else {
            return Vec::new();
        };
        all.iter()
            .filter(|v| v["event"] == "propagated")
            .filter(|v| {
                v["chain"]
                    .as_str()
                    .is_some_and(|c| c == chain || c.starts_with(&prefix))
            })
            .cloned()
            .collect()
    }

    /// Whether the election of job `job` judged the SLO feasible (its placement event).
    fn judged_feasible(&self, job: &str) -> Option<bool> {
        let all = self.0.lock().ok()?;
        all.iter()
            .find(|v| v["event"] == "placement" && v["job"].as_str() == Some(job))
            .and_then(|v| v["slo_feasible"].as_bool())
    }

    /// Propagation times (ms) of the chain's jobs, in either state layout.
    fn migrations(&self, chain: &str) -> Vec<f64> {
        let prefix = format!("{chain}.");
        let Ok(all) = self.0.lock() else {
            return Vec::new();
        };
        all.iter()
            .filter(|v| v["event"] == "propagated")
            .filter(|v| {
                v["chain"]
                    .as_str()
                    .is_some_and(|c| c == chain || c.starts_with(&prefix))
            })
            .filter_map(slo::placed_ms)
            .collect()
    }
}

/// One step of a workflow.
struct Step<'a> {
    function: &'static str,
    module: &'a Path,
    node: String,
    args: Vec<String>,
    /// The tasks whose state the step reads.
    reads: &'static [&'static str],
}

/// Whether every task of `tasks` has its state field of `chain` (in layout `state`) in
/// the store behind `conn` now; `None` if the store does not answer.
fn present(conn: &mut redis::Connection, chain: &str, state: &str, tasks: &[&str]) -> Option<bool> {
    let mut all = true;
    for task in tasks {
        let key = match state {
            "single" => format!("{NS}:bundle:{chain}.{task}"),
            _ => format!("{NS}:bundle:{chain}"),
        };
        let there: bool = redis::cmd("HEXISTS").arg(key).arg(task).query(conn).ok()?;
        all &= there;
    }
    Some(all)
}

/// Where the state of `tasks` of `chain` (layout `state`) is now, node by node, and the
/// chain's jobs in each node's outbox with their due time: what a step that found its
/// state nowhere reports, so that a lost state is told from one still waiting to move.
fn whereabouts(net: &Constellation, chain: &str, state: &str, tasks: &[&str]) -> String {
    let now = skylark_testkit::now_ms();
    let mut lines = vec![format!("where the state of {tasks:?} is (now {now} ms):")];
    for node in net.nodes() {
        let Some(mut conn) = net.redis(&node).try_conn() else {
            lines.push(format!("  {node}: store does not answer"));
            continue;
        };
        let held: Vec<&str> = tasks
            .iter()
            .copied()
            .filter(|t| present(&mut conn, chain, state, &[*t]) == Some(true))
            .collect();
        let jobs: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(format!("{NS}:outbox:jobs"))
            .query(&mut conn)
            .unwrap_or_default();
        let mut pending = Vec::new();
        for (id, json) in jobs {
            let Ok(job) = serde_json::from_str::<Value>(&json) else {
                continue;
            };
            let of_chain = job["chain"]
                .as_str()
                .is_some_and(|c| c == chain || c.starts_with(&format!("{chain}.")));
            if !of_chain {
                continue;
            }
            let due: Option<u64> = redis::cmd("ZSCORE")
                .arg(format!("{NS}:outbox"))
                .arg(&id)
                .query(&mut conn)
                .ok()
                .flatten();
            pending.push(format!(
                "job {id} tasks {} target {} done {} due {}",
                job["tasks"],
                job["target"],
                job["done"],
                due.map_or("none".into(), |d| format!("{:+} ms", d as i64 - now as i64))
            ));
        }
        lines.push(format!(
            "  {node}: holds {held:?}; outbox {} job(s), of this chain: {}",
            net.outbox_len(&node),
            if pending.is_empty() {
                "none".into()
            } else {
                pending.join("; ")
            }
        ));
    }
    lines.join("\n")
}

/// Polls `node`'s own store until every field of `tasks` is there or `stop` is set;
/// the thread's result is when they were first all there, in ms after `t0` (`None`:
/// not before `stop`, or the store did not answer).
fn watch_arrival(
    net: &Constellation,
    node: &str,
    chain: &str,
    state: &str,
    tasks: &'static [&'static str],
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<Option<f64>>> {
    if tasks.is_empty() {
        return None;
    }
    let mut conn = net.redis(node).try_conn()?;
    let (chain, state) = (chain.to_string(), state.to_string());
    Some(std::thread::spawn(move || loop {
        let stopping = stop.load(Ordering::SeqCst);
        if present(&mut conn, &chain, &state, tasks)? {
            return Some(t0.elapsed().as_secs_f64() * 1e3);
        }
        if stopping {
            return None;
        }
        std::thread::sleep(ARRIVAL_POLL);
    }))
}

/// The nodes of a workflow's four steps, and what the first step is told about its
/// successor's start.
struct Plan {
    nodes: [String; 4],
    /// `--successor-in-ms` of the first step.
    successor_in_ms: Option<u64>,
    /// When the first hand-off's slot boundary passes (scenario `slot-change`).
    boundary: Option<Instant>,
}

/// How long before a slot boundary scenario `slot-change` starts its producer: enough
/// for `preprocess` and its copy over two links at 40 Mbit/s, twice over.
fn slot_change_lead(size_bytes: u64) -> Duration {
    Duration::from_millis(1000 + 2 * size_bytes / 5_000)
}

/// The satellite the cloud node links to in `slot`.
fn ground_satellite(net: &Constellation, slot: usize) -> String {
    let schedule = net.schedule();
    let cloud = schedule
        .id(&net.cloud())
        .expect("the cloud node is in the schedule");
    let (sat, _) = schedule
        .neighbours(slot, cloud)
        .next()
        .expect("the cloud node has a ground link in every slot");
    schedule.name(sat).to_string()
}

/// Where the steps of repetition `rep` run in `scenario`; for `slot-change` this waits
/// until `lead` before the next slot boundary.
fn plan(net: &Constellation, scenario: Scenario, rep: u32, size_bytes: u64) -> Plan {
    let sats = net.satellites();
    let cloud = net.cloud();
    let at = |idx: &[usize]| -> [String; 4] {
        [
            sats[idx[0]].clone(),
            sats[idx[1]].clone(),
            sats[idx[2]].clone(),
            cloud.clone(),
        ]
    };
    match scenario {
        Scenario::Chain | Scenario::Dag => {
            let i = rep as usize % (sats.len() - 2);
            Plan {
                nodes: at(&[i, i + 1, i + 2]),
                successor_in_ms: None,
                boundary: None,
            }
        }
        Scenario::Far => {
            let i = rep as usize % (sats.len() - 4);
            Plan {
                nodes: at(&[i, i + 2, i + 4]),
                successor_in_ms: None,
                boundary: None,
            }
        }
        Scenario::SlotChange => {
            let lead = slot_change_lead(size_bytes);
            if net.until_next_slot() < lead + Duration::from_millis(50) {
                std::thread::sleep(net.until_next_slot() + Duration::from_millis(20));
            }
            std::thread::sleep(net.until_next_slot().saturating_sub(lead));
            let until = net.until_next_slot();
            let boundary = Instant::now() + until;
            let next = (net.slot_now() + 1) % net.schedule().slots();
            let consumer = ground_satellite(net, next);
            let j = sats.iter().position(|s| *s == consumer).unwrap_or(0);
            let second = if j + 1 < sats.len() { j + 1 } else { j - 1 };
            Plan {
                nodes: [
                    cloud.clone(),
                    consumer.clone(),
                    sats[second].clone(),
                    cloud.clone(),
                ],
                successor_in_ms: Some((until + AFTER_BOUNDARY).as_millis() as u64),
                boundary: Some(boundary),
            }
        }
    }
}

/// The plugin's policy and election rule (`SKYLARK_ELECTION`) of an experiment policy:
/// `research` is the Skylark policy with the research's election rule.
fn policy_and_rule(policy: &str) -> (&str, &'static str) {
    match policy {
        "research" => ("skylark", "research"),
        p => (p, "retrieval"),
    }
}

/// The store deadline (`SKYLARK_TIMEOUT_MS`) of a configuration's guests, if not the
/// default. Large states need a longer one than the default 2 s, and so do the
/// throughput phase's concurrent workflows: at 10 at once, Stateless's synchronous 2 MB
/// puts over the shared ground link take longer than 2 s and time out.
fn store_timeout_ms(cfg: &Config) -> Option<u64> {
    if cfg.concurrency > 1 {
        Some(THROUGHPUT_TIMEOUT_MS.max(2_000 + cfg.size_bytes / 625))
    } else {
        (cfg.size_bytes > LARGE_BYTES).then(|| 2_000 + cfg.size_bytes / 625)
    }
}

/// The exit flush of `cfg`'s step processes, `None` for the plugin's default.
fn exit_flush_ms(cfg: &Config) -> Option<u64> {
    match EXIT_FLUSH.get().copied().unwrap_or(ExitFlush::Store) {
        ExitFlush::Store => store_timeout_ms(cfg),
        ExitFlush::Default => None,
        ExitFlush::Fixed(ms) => Some(ms),
    }
}

/// Starts one long-lived process on each of `nodes` (for the throughput phase, and to
/// drain what a sequential workflow left, [`quiesce`]): the `alarm` function serving
/// HTTP on a loopback port nobody calls, configured as the configuration's guests.
/// It stands for the serving processes of a deployment, whose plugin sweeps the node's
/// outbox every `SKYLARK_SWEEP_MS`: a job a step's process left when it exited (its exit
/// flush ran out while its copies were still on their way) is resumed on that node even
/// when no later step runs there. Without them the last workflows' leftover jobs would
/// wait for a process that never comes, and the wall time could not end at the drain.
fn start_resumers(net: &Constellation, mods: &Modules, cfg: &Config, nodes: &[String]) -> Resumers {
    let (_, rule) = policy_and_rule(&cfg.policy);
    let procs = nodes
        .iter()
        .map(|node| {
            let mut guest = net
                .guest_at(&mods.alarm, node)
                .env("SKYLARK_ELECTION", rule)
                .stderr(std::process::Stdio::null());
            if let Some(ms) = store_timeout_ms(cfg) {
                guest = guest.env("SKYLARK_TIMEOUT_MS", &ms.to_string());
            }
            let port = skylark_testkit::free_port().to_string();
            guest.args(["--serve", &port]).spawn()
        })
        .collect();
    Resumers(procs)
}

/// The resumers of a throughput measurement, killed when dropped (also when a step
/// fails and the run unwinds: a serving process never exits on its own).
struct Resumers(Vec<Running>);

impl Drop for Resumers {
    fn drop(&mut self) {
        for r in std::mem::take(&mut self.0) {
            r.kill();
        }
    }
}

/// Runs one workflow; returns its record, its chain id and the still running processes.
fn run_workflow(
    net: &Constellation,
    mods: &Modules,
    cfg: &Config,
    rep: u32,
    slo_ms: u64,
    scenario: Scenario,
) -> (WorkflowRecord, String, Vec<Running>) {
    let chain = chain_id(&format!("wf-{}-{}", cfg.policy, cfg.state));
    let plan = plan(net, scenario, rep, cfg.size_bytes);
    let [n0, n1, n2, n3] = plan.nodes.clone();
    let (policy, rule) = policy_and_rule(&cfg.policy);
    let common = |dest: Option<&str>| {
        let mut a = vec![
            "--policy".to_string(),
            policy.to_string(),
            "--state".into(),
            cfg.state.clone(),
            "--max-latency-ms".into(),
            slo_ms.to_string(),
        ];
        if let Some(d) = dest {
            a.extend(["--dest".to_string(), d.to_string()]);
        }
        a
    };
    let with = |mut a: Vec<String>, more: &[&str]| {
        a.extend(more.iter().map(|s| s.to_string()));
        a
    };
    // The DAG: preprocess puts for both detectors, which both put for alarm.
    let dag = scenario == Scenario::Dag;
    let mut first = with(
        common((!dag).then_some(n1.as_str())),
        &[
            "--size",
            &cfg.size_bytes.to_string(),
            "--seed",
            &(rep + 1).to_string(),
        ],
    );
    if dag {
        first.extend(["--dests".to_string(), format!("{n1},{n2}")]);
    }
    if let Some(ms) = plan.successor_in_ms {
        first.extend(["--successor-in-ms".to_string(), ms.to_string()]);
    }
    let steps = [
        Step {
            function: "preprocess",
            reads: &[],
            module: &mods.preprocess,
            node: n0.clone(),
            args: first,
        },
        Step {
            function: "detect",
            reads: &["preprocess"],
            module: &mods.detect,
            node: n1.clone(),
            args: with(
                common(Some(if dag { n3.as_str() } else { n2.as_str() })),
                &["--task", "detect"],
            ),
        },
        Step {
            function: "detect2",
            reads: &["preprocess"],
            module: &mods.detect,
            node: n2.clone(),
            args: with(common(Some(&n3)), &["--task", "detect2"]),
        },
        Step {
            function: "alarm",
            reads: &["detect", "detect2"],
            module: &mods.alarm,
            node: n3.clone(),
            args: with(common(None), &["--inputs", "detect,detect2"]),
        },
    ];
    let timeout_ms = store_timeout_ms(cfg);
    // Runs one step: invokes it (again, if it fails) until it prints its result; returns
    // its record and the process, which still finishes its propagation.
    let run_step = |step: &Step| -> (StepRecord, Running) {
        let stop = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now();
        let watcher = watch_arrival(
            net,
            &step.node,
            &chain,
            &cfg.state,
            step.reads,
            t0,
            Arc::clone(&stop),
        );
        // A step that fails (its state is nowhere yet: kept on a node two hops away while
        // the global copy is still on its way, or, under load, its copy not even started
        // and so not announced) is invoked again after a growing delay, as a FaaS
        // platform retries a failed invocation; the failed attempts count in its T(f).
        let mut attempts = 0;
        let (proc, line, at) = loop {
            attempts += 1;
            let mut guest = net
                .guest_at(step.module, &step.node)
                .env("SKYLARK_ELECTION", rule);
            if let Some(ms) = timeout_ms {
                guest = guest.env("SKYLARK_TIMEOUT_MS", &ms.to_string());
            }
            if let Some(ms) = exit_flush_ms(cfg) {
                guest = guest.env("SKYLARK_EXIT_FLUSH_MS", &ms.to_string());
            }
            let proc = guest.args([&chain]).args(&step.args).spawn();
            if let Some((line, _)) = proc.next_line(STEP_TIMEOUT) {
                break (proc, line, t0.elapsed());
            }
            let run = proc.wait(STEP_TIMEOUT);
            assert!(
                attempts < STEP_ATTEMPTS,
                "{} on {} printed no result in {attempts} attempts (exit {:?}):\n{}\n{}",
                step.function,
                step.node,
                run.status,
                run.stderr,
                whereabouts(net, &chain, &cfg.state, step.reads)
            );
            eprintln!(
                "[experiment] {} on {} failed (attempt {attempts}), invoking it again: {}",
                step.function,
                step.node,
                run.stderr.lines().last().unwrap_or("")
            );
            std::thread::sleep(RETRY_DELAY * attempts);
        };
        stop.store(true, Ordering::SeqCst);
        let arrived = watcher.and_then(|w| w.join().ok().flatten());
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{} printed {line:?}, not JSON: {e}", step.function));
        let mut record = step_record(net, step, &v, at, slo_ms);
        record.attempts = attempts;
        if !step.reads.is_empty() {
            record.read_at_ms = v["total_ms"].as_f64().map(|total| record.t_f_ms - total);
            record.arrived_at_ms = arrived;
            record.local_at_request = handoff::local_at_read(&record);
        }
        (record, proc)
    };
    let started = Instant::now();
    let mut idle = Duration::ZERO;
    let mut records = Vec::new();
    let mut running = Vec::new();
    let mut k = 0;
    while k < steps.len() {
        if k == 1 {
            if let Some(boundary) = plan.boundary {
                let resume = boundary + AFTER_BOUNDARY;
                let now = Instant::now();
                if resume > now {
                    idle = resume - now;
                    std::thread::sleep(idle);
                }
            }
        }
        // In the DAG both detectors start at once.
        let together = if dag && k == 1 { 2 } else { 1 };
        let done: Vec<(StepRecord, Running)> = std::thread::scope(|s| {
            let others: Vec<_> = steps[k + 1..k + together]
                .iter()
                .map(|step| s.spawn(|| run_step(step)))
                .collect();
            let mut done = vec![run_step(&steps[k])];
            for t in others {
                done.push(t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
            }
            done
        });
        for (record, proc) in done {
            records.push(record);
            running.push(proc);
        }
        k += together;
    }
    let t_w_ms = (started.elapsed() - idle).as_secs_f64() * 1e3;
    let t_star_ms = physical_bound(net, &steps, &records, cfg.size_bytes, dag);
    let record = WorkflowRecord {
        config: cfg.clone(),
        rep,
        t_w_ms,
        steps: records,
        migration_ms: Vec::new(),
        state_bytes: cfg.size_bytes,
        t_star_ms,
        slo_level: None,
        outbox_at_start: None,
        quiet: None,
    };
    (record, chain, running)
}

/// T*(W): the steps' execution times plus, for each step that reads the image, its
/// transfer from the previous step's node over that path's bottleneck in the current
/// slot (the image exists only once the producer ends, so nothing overlaps it). In the
/// DAG (`dag`) the detectors run at once, each reading the image from the producer's
/// node: the slower of them counts, for execution and for transfer.
fn physical_bound(
    net: &Constellation,
    steps: &[Step],
    records: &[StepRecord],
    size_bytes: u64,
    dag: bool,
) -> Option<f64> {
    let schedule = net.schedule();
    let slot = net.slot_now();
    if dag {
        // 1 Mbit/s moves 125 bytes per millisecond.
        let hand_off = |from: &str, to: &str| -> Option<f64> {
            if from == to {
                return Some(0.0);
            }
            let path = schedule.shortest_path(slot, schedule.id(from)?, schedule.id(to)?)?;
            Some(size_bytes as f64 / (path.bottleneck_mbps * 125.0))
        };
        let [pre, a, b, alarm] = records else {
            return None;
        };
        let exec = pre.compute_ms + a.compute_ms.max(b.compute_ms) + alarm.compute_ms;
        let transfer = hand_off(&steps[0].node, &steps[1].node)?
            .max(hand_off(&steps[0].node, &steps[2].node)?);
        return Some(exec + transfer);
    }
    let exec: f64 = records.iter().map(|r| r.compute_ms).sum();
    let mut transfer = 0.0;
    for pair in steps.windows(2) {
        let (from, to) = (&pair[0], &pair[1]);
        if to.function == "alarm" || from.node == to.node {
            continue;
        }
        let path =
            schedule.shortest_path(slot, schedule.id(&from.node)?, schedule.id(&to.node)?)?;
        // 1 Mbit/s moves 125 bytes per millisecond.
        transfer += size_bytes as f64 / (path.bottleneck_mbps * 125.0);
    }
    Some(exec + transfer)
}

fn step_record(
    net: &Constellation,
    step: &Step,
    v: &Value,
    at: Duration,
    slo_ms: u64,
) -> StepRecord {
    let slot = net.slot_now();
    let hops = v["sources"]
        .as_array()
        .map(|sources| {
            sources
                .iter()
                .map(|s| match (s["tier"].as_str(), s["node"].as_str()) {
                    (Some("local"), _) | (_, None) => 0,
                    (_, Some(from)) => net.hops(slot, from, &step.node).unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default();
    let own_store_answered = v["sources"].as_array().and_then(|sources| {
        (!sources.is_empty()).then(|| {
            sources
                .iter()
                .all(|s| s["node"].as_str() == Some(step.node.as_str()))
        })
    });
    StepRecord {
        function: step.function.to_string(),
        node: step.node.clone(),
        t_f_ms: at.as_secs_f64() * 1e3,
        get_ms: v["get_ms"].as_f64(),
        gets: v["gets"].as_u64().unwrap_or(0) as u32,
        local_gets: v["local_gets"].as_u64().unwrap_or(0) as u32,
        hops,
        put_ms: v["put_ms"].as_f64().unwrap_or(0.0),
        compute_ms: v["compute_ms"].as_f64().unwrap_or(0.0),
        slo_ms: slo_ms as f64,
        local_at_request: None,
        own_store_answered,
        exec_ms: v["total_ms"]
            .as_f64()
            .zip(v["put_ms"].as_f64())
            .map(|(total, put)| total - put),
        migrations: Vec::new(),
        read_at_ms: None,
        arrived_at_ms: None,
        attempts: 1,
    }
}

/// Fills each step's placed copies from the chain's propagation events: elected node,
/// hops from the step's node (in the current slot), T(dm) and the step's exec.
fn attach_migrations(
    net: &Constellation,
    rec: &mut WorkflowRecord,
    events: &[Value],
    all: &Events,
) {
    let slot = net.slot_now();
    for step in &mut rec.steps {
        step.migrations = events
            .iter()
            .filter(|e| {
                e["tasks"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t.as_str() == Some(&step.function)))
            })
            .filter_map(|e| {
                let elected = e["elected"].as_str()?.to_string();
                Some(Migration {
                    hops: net.hops(slot, &step.node, &elected),
                    elected,
                    ms: slo::placed_ms(e)?,
                    all_ms: e["ms"].as_f64(),
                    exec_ms: step.exec_ms.unwrap_or(step.t_f_ms),
                    judged_feasible: e["job"].as_str().and_then(|j| all.judged_feasible(j)),
                })
            })
            .collect();
    }
}

/// [`quiet::quiesce`] after a sequential workflow, the left jobs resumed by processes
/// configured as `cfg`'s guests, for the longer of [`DRAIN_TIMEOUT`] and its store
/// deadline.
fn quiesce(net: &Constellation, mods: &Modules, cfg: &Config) -> Quiet {
    let limit = DRAIN_TIMEOUT.max(Duration::from_millis(
        store_timeout_ms(cfg).unwrap_or_default(),
    ));
    let q = quiet::quiesce(net, limit, |nodes| {
        std::mem::take(&mut start_resumers(net, mods, cfg, nodes).0)
    });
    if q.undrained > 0 {
        eprintln!(
            "[experiment] {} propagation job(s) still in the outboxes {limit:?} after a workflow's processes exited; the next workflow shares the links with them",
            q.undrained
        );
    }
    q
}

/// The report's note on the waits between sequential workflows ([`quiesce`]).
fn quiet_note(records: &[WorkflowRecord], others: &[(Scenario, Vec<WorkflowRecord>)]) -> String {
    let all: Vec<&WorkflowRecord> = records
        .iter()
        .chain(others.iter().flat_map(|(_, r)| r))
        .collect();
    let quiets: Vec<Quiet> = all.iter().filter_map(|r| r.quiet).collect();
    let at_start: Vec<u64> = all.iter().filter_map(|r| r.outbox_at_start).collect();
    quiet::note(&quiets, &at_start)
}

/// Waits for a workflow's processes (their exit flush) and checks they all succeeded.
fn finish(running: Vec<Running>) {
    for r in running {
        r.wait(STEP_TIMEOUT).assert_success();
    }
}

/// Runs `total` workflows, `concurrency` at a time (with [`start_resumers`] if
/// `resumers`); returns the wall time in seconds and the jobs still in the outboxes when
/// [`DRAIN_TIMEOUT`] ran out (then the wall time ends there).
fn throughput(
    net: &Constellation,
    mods: &Modules,
    cfg: &Config,
    total: u32,
    slo_ms: u64,
    resumers: bool,
) -> (f64, u64) {
    let resumers = if resumers {
        let r = start_resumers(net, mods, cfg, &net.nodes());
        // Their start-up is not the workflows' time.
        std::thread::sleep(Duration::from_secs(2));
        r
    } else {
        Resumers(Vec::new())
    };
    let next = Mutex::new(0u32);
    let started = Instant::now();
    let leftovers: Mutex<Vec<Running>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..cfg.concurrency {
            s.spawn(|| loop {
                let rep = {
                    let mut n = next.lock().unwrap_or_else(|p| p.into_inner());
                    if *n >= total {
                        return;
                    }
                    *n += 1;
                    *n
                };
                let (_, _, running) = run_workflow(net, mods, cfg, rep, slo_ms, Scenario::Chain);
                leftovers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(running);
            });
        }
    });
    let last_result = started.elapsed().as_secs_f64();
    finish(leftovers.into_inner().unwrap_or_else(|p| p.into_inner()));
    let exited = started.elapsed().as_secs_f64();
    let left = quiet::drain(net, Instant::now() + DRAIN_TIMEOUT);
    let outcome = (started.elapsed().as_secs_f64(), left);
    if left > 0 {
        eprintln!(
            "[experiment] {left} propagation job(s) still in the outboxes {DRAIN_TIMEOUT:?} after the last workflow"
        );
    }
    eprintln!(
        "[experiment] throughput {} at {}: last result {last_result:.1} s, every step's process exited {exited:.1} s, outboxes drained {:.1} s{}",
        cfg.policy,
        cfg.concurrency,
        outcome.0,
        if resumers.0.is_empty() {
            " (no resumers)"
        } else {
            ""
        }
    );
    drop(resumers);
    outcome
}

/// The sequential runs of one scenario: every SLO level, state, size and repetition,
/// the policies of a repetition in a shuffled order.
struct Matrix<'a> {
    net: &'a Constellation,
    mods: &'a Modules,
    events: &'a Events,
    policies: &'a [String],
    states: &'a [String],
    sizes: &'a [u64],
    levels: &'a [String],
}

impl Matrix<'_> {
    fn run(
        &self,
        scenario: Scenario,
        reps_at: &dyn Fn(u64) -> u32,
        budget: &dyn Fn(&str, u64) -> u64,
    ) -> Vec<WorkflowRecord> {
        let mut records: Vec<WorkflowRecord> = Vec::new();
        let total: usize = self.levels.len()
            * self.states.len()
            * self.policies.len()
            * self
                .sizes
                .iter()
                .map(|&s| reps_at(s) as usize)
                .sum::<usize>();
        for level in self.levels {
            for state in self.states {
                for &size in self.sizes {
                    for rep in 0..reps_at(size) {
                        // Policies take turns within a repetition, in a shuffled order, so
                        // drift and load hit them alike.
                        let mut order = self.policies.to_vec();
                        let mut rng = Rng::new(ORDER_SEED ^ (u64::from(rep) << 20) ^ size);
                        for i in (1..order.len()).rev() {
                            order.swap(i, rng.below(i as u64 + 1) as usize);
                        }
                        for policy in &order {
                            let cfg = Config {
                                policy: policy.clone(),
                                state: state.clone(),
                                size_bytes: size,
                                concurrency: 1,
                            };
                            let slo_ms = budget(level, size);
                            let at_start = pending(self.net);
                            let (mut rec, chain, running) =
                                run_workflow(self.net, self.mods, &cfg, rep, slo_ms, scenario);
                            finish(running);
                            rec.outbox_at_start = Some(at_start);
                            rec.quiet = Some(quiesce(self.net, self.mods, &cfg));
                            // Every step's put propagates, except with Stateless
                            // (synchronous).
                            let expected = if policy == "stateless" { 0 } else { 4 };
                            rec.migration_ms = self.events.migrations_wait(&chain, expected);
                            rec.slo_level = Some(level.clone());
                            attach_migrations(
                                self.net,
                                &mut rec,
                                &self.events.propagations(&chain),
                                self.events,
                            );
                            records.push(rec);
                            eprintln!(
                                "[experiment] {} {}/{total} {level} {state} {:.2} MB {policy} rep {rep}: T(W) {:.0} ms",
                                scenario.name(),
                                records.len(),
                                size as f64 / 1e6,
                                records.last().map_or(0.0, |r| r.t_w_ms)
                            );
                        }
                    }
                }
            }
        }
        records
    }
}

/// One fusion measurement: `bundled` with `functions` functions, both layouts.
#[derive(Debug, Clone, serde::Serialize)]
struct FusionRecord {
    functions: u32,
    rep: u32,
    size_bytes: u64,
    bundled_storage_ms: f64,
    single_storage_ms: f64,
    bundled_round_trips: u64,
    single_round_trips: u64,
}

/// Runs the `bundled` guest on `node` for 1 to 5 fused functions, `reps` times each: each
/// layout in a process of its own (a fused instance pays for its own memory: in one
/// process the layout measured second ran on memory the first had already grown and
/// touched, which favoured `single`, always second, by 30-50 ms of about 300 at 10 MB,
/// 5 functions), the layout that goes first alternating by repetition.
fn fusion(
    net: &Constellation,
    mods: &Modules,
    node: &str,
    size: u64,
    reps: u32,
) -> Vec<FusionRecord> {
    let mut out = Vec::new();
    for rep in 0..reps {
        for functions in 1..=5u32 {
            let chain = chain_id("fusion");
            let layout = |mode: &str| -> (f64, u64) {
                // Storage latency against the node-local store alone: no propagation, no
                // fallback reads (a first read of a missing bundle would otherwise probe
                // the neighbours and the global store over the emulated links).
                let run = net
                    .guest_at(&mods.bundled, node)
                    .env("SKYLARK_PROPAGATION", "off")
                    .args([
                        format!("{chain}-{mode}").as_str(),
                        "--functions",
                        &functions.to_string(),
                        "--size",
                        &size.to_string(),
                        "--mode",
                        mode,
                        "--seed",
                        &(rep + 1).to_string(),
                    ])
                    .run(STEP_TIMEOUT);
                run.assert_success();
                let v = run.json();
                (
                    v[mode]["storage_ms"].as_f64().unwrap_or(f64::NAN),
                    v[mode]["round_trips"].as_u64().unwrap_or(0),
                )
            };
            let (bundled, single) = if rep % 2 == 0 {
                let b = layout("bundled");
                (b, layout("single"))
            } else {
                let s = layout("single");
                (layout("bundled"), s)
            };
            out.push(FusionRecord {
                functions,
                rep,
                size_bytes: size,
                bundled_storage_ms: bundled.0,
                single_storage_ms: single.0,
                bundled_round_trips: bundled.1,
                single_round_trips: single.1,
            });
            eprintln!(
                "[experiment] fusion {functions} functions rep {rep}: bundled {:.1} ms, single {:.1} ms",
                bundled.0, single.0
            );
        }
    }
    out
}

/// The report's fusion section: per number of functions, the medians of both layouts'
/// storage latency and the saving of bundling.
fn fusion_markdown(records: &[FusionRecord], node: &str) -> String {
    let mut md = format!(
        "\n## Fusion\n\nThe `bundled` guest on {node}, propagation off (its node-local store only): N functions, each \
         reading all its predecessors' state and storing its own ({}), bundled (one bundle, \
         one read per function) against single (one key per function, one read per \
         predecessor), each layout in a fresh process, which goes first alternating by \
         repetition; storage latency is the sum of the storage calls. Medians over {} \
         repetitions.\n\n\
         | functions | bundled storage ms | single storage ms | saving | round trips bundled / single |\n\
         | --- | --- | --- | --- | --- |\n",
        records.first().map_or_else(String::new, |r| report::size_label(r.size_bytes)),
        records.iter().map(|r| r.rep).max().map_or(0, |m| m + 1)
    );
    for functions in 1..=5u32 {
        let of: Vec<&FusionRecord> = records
            .iter()
            .filter(|r| r.functions == functions)
            .collect();
        if of.is_empty() {
            continue;
        }
        let b = report::median(&of.iter().map(|r| r.bundled_storage_ms).collect::<Vec<_>>());
        let s = report::median(&of.iter().map(|r| r.single_storage_ms).collect::<Vec<_>>());
        let saving = b.zip(s).map(|(b, s)| (1.0 - b / s) * 100.0);
        let f =
            |v: Option<f64>, unit: &str| v.map_or_else(|| "—".into(), |v| format!("{v:.1}{unit}"));
        md.push_str(&format!(
            "| {functions} | {} | {} | {} | {} / {} |\n",
            f(b, ""),
            f(s, ""),
            f(saving, "%"),
            of[0].bundled_round_trips,
            of[0].single_round_trips
        ));
    }
    md
}

/// The experiment's settings for one constellation: its slot length, and the slot it
/// pins, if any.
fn start_constellation(slot_ms: u64, fixed_slot: Option<usize>) -> Constellation {
    Constellation::start(NetOptions {
        slot_ms,
        fixed_slot,
        ..NetOptions::default()
    })
}

fn main() {
    let o = cli::parse_or_exit(USAGE, options);
    let _ = EXIT_FLUSH.set(o.exit_flush);
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mods = Modules::load(&o.mode);
    if let Err(e) = skylark_netemu::constellation::install_interrupt_cleanup() {
        eprintln!(
            "experiment: cannot handle interrupts ({e}); an interrupted run may leave temp files"
        );
    }
    let started = Instant::now();
    let profile = Profile::load(&skylark_testkit::root().join(slo::PROFILE_FILE))
        .unwrap_or_else(|e| fail(&e));
    let sat = NetOptions::default().sat_sat;
    let budget = |level: &str, size: u64| -> u64 {
        match o.slo_ms {
            Some(ms) => ms,
            None => profile
                .budget_ms(
                    level,
                    size,
                    sat.bandwidth_mbps.unwrap_or(f64::INFINITY),
                    sat.latency_ms,
                )
                .unwrap_or_else(|e| fail(&e)),
        }
    };
    let levels: Vec<String> = match o.slo_ms {
        Some(ms) => vec![format!("{ms} ms")],
        None => o.slo.clone(),
    };
    // Checked before anything runs.
    for level in &levels {
        budget(level, o.sizes[0]);
    }
    let reps = o.reps;
    let reps_large = o.reps_large.min(o.reps);
    let reps_at = |size: u64| if size > LARGE_BYTES { reps_large } else { reps };
    let scenario_reps = |_: u64| o.scenario_reps;

    let net = start_constellation(o.slot_ms, o.fixed_slot);
    let events = Events::subscribe(&net);
    let mut records: Vec<WorkflowRecord> = Vec::new();
    let mut others: Vec<(Scenario, Vec<WorkflowRecord>)> = Vec::new();
    let first_size = [o.sizes[0]];
    let bundled = ["bundled".to_string()];
    let first_level = [levels[0].clone()];
    for &scenario in &o.scenarios {
        if scenario == Scenario::SlotChange {
            continue; // on its own constellation, below
        }
        let m = Matrix {
            net: &net,
            mods: &mods,
            events: &events,
            policies: &o.policies,
            states: if scenario == Scenario::Chain {
                &o.states
            } else {
                &bundled
            },
            sizes: if scenario == Scenario::Chain {
                &o.sizes
            } else {
                &first_size
            },
            levels: if scenario == Scenario::Chain {
                &levels
            } else {
                &first_level
            },
        };
        match scenario {
            Scenario::Chain => records = m.run(scenario, &reps_at, &budget),
            _ => others.push((scenario, m.run(scenario, &scenario_reps, &budget))),
        }
    }

    let mut tput = Vec::new();
    // Throughput at 2 MB (the published scale), at the run's size in a quick run.
    let tsize = if o.quick { o.sizes[0] } else { mb_bytes(2.0) };
    for &concurrency in &o.concurrency {
        for policy in &o.policies {
            let cfg = Config {
                policy: policy.clone(),
                state: "bundled".into(),
                size_bytes: tsize,
                concurrency,
            };
            let total = o.throughput_workflows.unwrap_or(2 * concurrency);
            let slo_ms = budget(&levels[0], tsize);
            let (wall_s, undrained) = throughput(&net, &mods, &cfg, total, slo_ms, o.resumers);
            eprintln!(
                "[experiment] throughput {policy}: {total} workflows, {concurrency} at a time, {wall_s:.1} s"
            );
            tput.push(ThroughputRecord {
                config: cfg,
                workflows: total,
                wall_s,
                undrained,
            });
        }
    }

    let fusion_node = net.satellites()[0].clone();
    let fused = fusion(&net, &mods, &fusion_node, o.fusion_size, o.fusion_reps);
    drop(events);
    drop(net);

    if o.scenarios.contains(&Scenario::SlotChange) {
        // Short slots, so that waiting for a boundary costs seconds, not a minute.
        let slot_ms = slot_change_lead(o.sizes[0]).as_millis() as u64 * 4;
        let net = start_constellation(slot_ms.max(6_000), None);
        let events = Events::subscribe(&net);
        let m = Matrix {
            net: &net,
            mods: &mods,
            events: &events,
            policies: &o.policies,
            states: &bundled,
            sizes: &first_size,
            levels: &first_level,
        };
        others.push((
            Scenario::SlotChange,
            m.run(Scenario::SlotChange, &scenario_reps, &budget),
        ));
    }

    let meta = |what: String| {
        Meta {
        date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine: format!(
            "nproc {}, {}, wasmedge {}, {}",
            command_output("nproc", &[]),
            cpu_model(),
            command_output(&skylark_testkit::wasmedge_bin().to_string_lossy(), &["--version"])
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().last())
                .unwrap_or("?"),
            command_output("redis-server", &["--version"])
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        command: command.clone(),
        notes: vec![
            what,
            format!(
                "guests {}, slot length {} ms{}, SLO levels {} ({}; tables and headline: {}); the whole run took {:.0} s",
                o.mode,
                o.slot_ms,
                o.fixed_slot.map_or(String::new(), |n| format!(" (slot {n} pinned)")),
                levels.join(", "),
                slo::PROFILE_FILE,
                levels[0],
                started.elapsed().as_secs_f64()
            ),
            "links: satellite-satellite 10 ms ± 9 ms, 40 Mbit/s; cloud-satellite 60 ms ± 30 ms, 90 Mbit/s; every physical link one shared resource per direction (flows crossing it share its bandwidth), paths cross their links hop by hop, a new connection pays the path's round trip".into(),
            "policies: skylark = the Skylark policy with its default election rule (retrieval: least expected retrieval time for the consumer); research = the Skylark policy with the research's rule (SKYLARK_ELECTION=research); sizes in MB = 10^6 bytes".into(),
            "paired design: per repetition every policy starts on the same satellite, policies in a shuffled order; throughput wall time ends when the last propagation has drained".into(),
            format!(
                "throughput phase: {}",
                if o.resumers {
                    "one long-lived process per node (a serving function's, idle) resumes the jobs a step's process left in its node's outbox at exit"
                } else {
                    "no resumers (--no-resumers): a job a step's process left at exit waits for a later step on its node"
                }
            ),
            format!(
                "step processes wait for their copies at exit (SKYLARK_EXIT_FLUSH_MS): {}",
                match o.exit_flush {
                    ExitFlush::Store => format!(
                        "as long as a store request may take where the run sets a store deadline (throughput phase: {} s; sizes above 5 MB: 2 s + 1.6 s per MB), else the default 5 s",
                        THROUGHPUT_TIMEOUT_MS / 1000
                    ),
                    ExitFlush::Default => "the default 5 s (--default-exit-flush)".into(),
                    ExitFlush::Fixed(ms) => format!("{ms} ms (--exit-flush-ms)"),
                }
            ),
            quiet_note(&records, &others),
            "T(f): process start until the step printed its result (the next step starts then); T(W): first start to last result; T(dm): put until the copy on the elected node was acknowledged (propagated events; the whole job, global copy included, where the state stayed on the producer's node); Stateless writes synchronously, so it has no T(dm)".into(),
            "local availability: the step's state was in its own store when its read was issued (polled every ms from just before its process started; the read is issued when the guest starts: T(f) minus the guest's own total time)".into(),
        ]
        .into_iter()
        .chain(o.quick.then(|| "quick (smoke) run: small state, one repetition".to_string()))
        .collect(),
    }
    };
    let main_meta = meta(format!(
        "scenario chain: {} workflows of 4 steps ({} repetitions per configuration, {} above 5 MB); throughput at {} MB, concurrency {:?}",
        records.len(),
        reps,
        reps_large,
        tsize as f64 / 1e6,
        o.concurrency
    ));
    let written = report::write_report(&o.out, &main_meta, &records, &tput);
    let path = match written {
        Ok(path) => path,
        Err(e) => {
            eprintln!("experiment: writing the report: {e}");
            std::process::exit(1);
        }
    };
    let mut extra = String::new();
    let undrained: Vec<String> = tput
        .iter()
        .filter(|t| t.undrained > 0)
        .map(|t| {
            format!(
                "{} at concurrency {}: {} job(s)",
                t.config.policy, t.config.concurrency, t.undrained
            )
        })
        .collect();
    if !undrained.is_empty() {
        extra.push_str(&format!(
            "\n## Throughput: propagation that did not drain\n\nJobs still in the outboxes {} s \
             after the last workflow (a job a process leaves in its node's outbox at exit \
             is resumed by a later process on that node, or by its resumer); the wall time \
             of these measurements ends there: {}.\n",
            DRAIN_TIMEOUT.as_secs(),
            undrained.join("; ")
        ));
    }
    for (scenario, recs) in &others {
        let dir = o.out.join(format!("scenario-{}", scenario.name()));
        let m = meta(format!(
            "scenario {}: {} workflows of 4 steps ({} repetitions per policy)",
            scenario.name(),
            recs.len(),
            o.scenario_reps
        ));
        if let Err(e) = report::write_report(&dir, &m, recs, &[]) {
            eprintln!("experiment: writing the {} report: {e}", scenario.name());
            std::process::exit(1);
        }
        extra.push_str(&format!(
            "\n## Scenario {} ([report](scenario-{}/report.md))\n",
            scenario.name(),
            scenario.name()
        ));
        extra.push_str(&skylark_experiment::paired::markdown(recs));
        extra.push_str(&handoff::markdown(recs));
    }
    if !fused.is_empty() {
        extra.push_str(&fusion_markdown(&fused, &fusion_node));
        let json = serde_json::to_string_pretty(&fused).unwrap_or_default();
        if let Err(e) = std::fs::write(o.out.join("fusion.json"), json) {
            eprintln!("experiment: writing fusion.json: {e}");
        }
    }
    if !extra.is_empty() {
        let mut md = std::fs::read_to_string(&path).unwrap_or_default();
        md.push_str(&extra);
        if let Err(e) = std::fs::write(&path, md) {
            eprintln!("experiment: writing {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    let summaries = report::summarize(&report::primary_level(&records), &tput);
    println!("{}", report::headline(&summaries, o.sizes[0]));
    eprintln!("[experiment] report: {}", path.display());
}

/// Prints `message` and exits with status 2 (a bad option or profile).
fn fail(message: &str) -> ! {
    eprintln!("experiment: {message}");
    std::process::exit(2)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
