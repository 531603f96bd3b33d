//! `experiment`: the research evaluation, reproduced on one machine. Brings up the
//! emulated constellation (`skylark_netemu::constellation`: the testbed's 8 nodes, one
//! redis-server each, every node-to-node path through a link emulator routed over shared
//! per-link wires with the testbed's measured characteristics, the 7-slot orbital
//! schedule), runs the Earth-observation
//! workflow as real `wasmedge` processes with the plugin, and writes a report
//! (`skylark_experiment::report`): Markdown, a PNG plot and every record as JSON.
//!
//! ```text
//! cargo run --release -p skylark-experiment --bin experiment -- [--quick] [--reps N]
//!     [--sizes 0.5,1,2,5] [--policies skylark,random,stateless] [--states bundled,single]
//!     [--slot-ms MS] [--concurrency K] [--throughput-workflows W]
//!     [--slo loose,binding,infeasible] [--slo-ms MS]
//!     [--mode aot|interp] [--out DIR]
//! ```
//! Use `scripts/experiment.sh`, which builds everything first.
//!
//! One workflow: `preprocess` on satellite s(i), `detect` on s(i+1), `detect` again (task
//! `detect2`) on s(i+2), `alarm` on the cloud node, i = repetition mod 5 along the
//! satellite chain. Each step names the next step's node as its put's destination and
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
use skylark_experiment::report::{
    self, Config, Meta, StepRecord, ThroughputRecord, WorkflowRecord,
};
use skylark_experiment::slo::{self, Migration, Profile};
use skylark_netemu::constellation::{Constellation, NetOptions};
use skylark_testkit::redis::NS;
use skylark_testkit::{chain_id, cli, Rng, Running};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest a step may take to print its result, and a process to exit afterwards.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest the outboxes may take to drain after the throughput phase's processes ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Seed of the per-repetition shuffle of the policies' order.
const ORDER_SEED: u64 = 0x0_5EED_0013;

struct Options {
    reps: u32,
    sizes: Vec<u64>,
    policies: Vec<String>,
    states: Vec<String>,
    slot_ms: u64,
    concurrency: u32,
    throughput_workflows: u32,
    slo: Vec<String>,
    slo_ms: Option<u64>,
    mode: String,
    out: PathBuf,
    quick: bool,
}

const USAGE: &str = "\
usage: experiment [--quick] [--reps N] [--sizes MB,MB..] [--policies skylark,random,stateless]
                  [--states bundled,single] [--slot-ms MS] [--concurrency K]
                  [--throughput-workflows W] [--slo LEVELS] [--slo-ms MS]
                  [--mode aot|interp] [--out DIR]
  --quick                 a short run: 1 rep, 64 KiB, 20 s slots, concurrency 2, 2 workflows
                          (options after it still apply)
  --reps                  workflows per configuration; default 5
  --sizes                 image sizes in MB, each in (0, 64]; default 0.5,1,2,5
  --policies              default skylark,random,stateless
  --states                default bundled,single
  --slot-ms               slot length; default 60000 (the testbed's minute)
  --concurrency           workflows at once in the throughput phase; default 4
  --throughput-workflows  workflows of the throughput phase; default 24
  --slo                   SLO levels of tests/data/slo-profile.json to sweep, each a full
                          run of the matrix (loose: 5000 ms; binding: 1.2x one satellite
                          hop's migration time for the size; infeasible: 1 ms); the first
                          level's runs make the tables and the headline; default loose
  --slo-ms                one fixed per-step budget instead of the profile's levels
  --mode                  guests AOT-compiled or interpreted; default aot
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
        reps: 5,
        sizes: [0.5, 1.0, 2.0, 5.0]
            .iter()
            .map(|mb| mb_bytes(*mb))
            .collect(),
        policies: ["skylark", "random", "stateless"]
            .map(String::from)
            .to_vec(),
        states: ["bundled", "single"].map(String::from).to_vec(),
        slot_ms: 60_000,
        concurrency: 4,
        throughput_workflows: 24,
        slo: vec!["loose".into()],
        slo_ms: None,
        mode: "aot".into(),
        out: skylark_testkit::root().join(format!("results/{}", stamp.trim())),
        quick: false,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("quick") => {
                o.quick = true;
                o.reps = 1;
                o.sizes = vec![64 * 1024];
                o.slot_ms = 20_000;
                o.concurrency = 2;
                o.throughput_workflows = 2;
            }
            Long("reps") => o.reps = cli::positive(p)?,
            Long("sizes") => {
                o.sizes = cli::list::<f64>(p)?
                    .into_iter()
                    .map(|mb| match mb {
                        mb if mb > 0.0 && mb <= 64.0 => Ok(mb_bytes(mb)),
                        _ => Err(format!("size {mb} is not a number of MB in (0, 64]")),
                    })
                    .collect::<Result<_, _>>()?
            }
            Long("policies") => o.policies = names(p, &["skylark", "random", "stateless"])?,
            Long("states") => o.states = names(p, &["bundled", "single"])?,
            Long("slot-ms") => o.slot_ms = cli::positive(p)?,
            Long("concurrency") => o.concurrency = cli::positive(p)?,
            Long("throughput-workflows") => o.throughput_workflows = cli::positive(p)?,
            Long("slo") => o.slo = cli::list(p)?,
            Long("slo-ms") => o.slo_ms = Some(cli::positive(p)?),
            Long("mode") => {
                o.mode = p.value()?.string()?;
                if o.mode != "aot" && o.mode != "interp" {
                    return Err("--mode is aot or interp".into());
                }
            }
            Long("out") => o.out = PathBuf::from(p.value()?),
            Short('h') | Long("help") => cli::help(USAGE),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(o)
}

fn mb_bytes(mb: f64) -> u64 {
    (mb * 1_048_576.0).round() as u64
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
            .filter_map(|v| v["ms"].as_f64())
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
/// `node`'s own store now; `None` if `tasks` is empty or the store does not answer.
fn present(
    net: &Constellation,
    node: &str,
    chain: &str,
    state: &str,
    tasks: &[&str],
) -> Option<bool> {
    if tasks.is_empty() {
        return None;
    }
    let mut conn = net.redis(node).try_conn()?;
    let mut all = true;
    for task in tasks {
        let key = match state {
            "single" => format!("{NS}:bundle:{chain}.{task}"),
            _ => format!("{NS}:bundle:{chain}"),
        };
        let there: bool = redis::cmd("HEXISTS")
            .arg(key)
            .arg(task)
            .query(&mut conn)
            .ok()?;
        all &= there;
    }
    Some(all)
}

/// Runs one workflow; returns its record, its chain id and the still running processes.
fn run_workflow(
    net: &Constellation,
    mods: &Modules,
    cfg: &Config,
    rep: u32,
    slo_ms: u64,
) -> (WorkflowRecord, String, Vec<Running>) {
    let chain = chain_id(&format!("wf-{}-{}", cfg.policy, cfg.state));
    let sats = net.satellites();
    let i = rep as usize % (sats.len() - 2);
    let cloud = net.cloud();
    let common = |dest: Option<&str>| {
        let mut a = vec![
            "--policy".to_string(),
            cfg.policy.clone(),
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
    let steps = [
        Step {
            function: "preprocess",
            reads: &[],
            module: &mods.preprocess,
            node: sats[i].clone(),
            args: with(
                common(Some(&sats[i + 1])),
                &[
                    "--size",
                    &cfg.size_bytes.to_string(),
                    "--seed",
                    &(rep + 1).to_string(),
                ],
            ),
        },
        Step {
            function: "detect",
            reads: &["preprocess"],
            module: &mods.detect,
            node: sats[i + 1].clone(),
            args: with(common(Some(&sats[i + 2])), &["--task", "detect"]),
        },
        Step {
            function: "detect2",
            reads: &["preprocess"],
            module: &mods.detect,
            node: sats[i + 2].clone(),
            args: with(common(Some(&cloud)), &["--task", "detect2"]),
        },
        Step {
            function: "alarm",
            reads: &["detect", "detect2"],
            module: &mods.alarm,
            node: cloud.clone(),
            args: with(common(None), &["--inputs", "detect,detect2"]),
        },
    ];
    let started = Instant::now();
    let mut records = Vec::new();
    let mut running = Vec::new();
    for step in &steps {
        let local_at_request = present(net, &step.node, &chain, &cfg.state, step.reads);
        let proc = net
            .guest_at(step.module, &step.node)
            .args([&chain])
            .args(&step.args)
            .spawn();
        let Some((line, at)) = proc.next_line(STEP_TIMEOUT) else {
            let run = proc.wait(STEP_TIMEOUT);
            panic!(
                "{} on {} printed no result (exit {:?}):\n{}",
                step.function, step.node, run.status, run.stderr
            );
        };
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{} printed {line:?}, not JSON: {e}", step.function));
        let mut record = step_record(net, step, &v, at, slo_ms);
        record.local_at_request = local_at_request;
        records.push(record);
        running.push(proc);
    }
    let t_w_ms = started.elapsed().as_secs_f64() * 1e3;
    let t_star_ms = physical_bound(net, &steps, &records, cfg.size_bytes);
    let record = WorkflowRecord {
        config: cfg.clone(),
        rep,
        t_w_ms,
        steps: records,
        migration_ms: Vec::new(),
        state_bytes: cfg.size_bytes,
        t_star_ms,
        slo_level: None,
    };
    (record, chain, running)
}

/// T*(W): the steps' execution times plus, for each step that reads the image, its
/// transfer from the previous step's node over that path's bottleneck in the current
/// slot (the image exists only once the producer ends, so nothing overlaps it).
fn physical_bound(
    net: &Constellation,
    steps: &[Step],
    records: &[StepRecord],
    size_bytes: u64,
) -> Option<f64> {
    let schedule = net.schedule();
    let slot = net.slot_now();
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
    }
}

/// Fills each step's placed copies from the chain's propagation events: elected node,
/// hops from the step's node (in the current slot), T(dm) and the step's exec.
fn attach_migrations(net: &Constellation, rec: &mut WorkflowRecord, events: &[Value]) {
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
                    ms: e["ms"].as_f64()?,
                    exec_ms: step.exec_ms.unwrap_or(step.t_f_ms),
                })
            })
            .collect();
    }
}

/// Waits for a workflow's processes (their exit flush) and checks they all succeeded.
fn finish(running: Vec<Running>) {
    for r in running {
        r.wait(STEP_TIMEOUT).assert_success();
    }
}

/// Runs `total` workflows, `concurrency` at a time; returns the wall time in seconds.
fn throughput(net: &Constellation, mods: &Modules, cfg: &Config, total: u32, slo_ms: u64) -> f64 {
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
                let (_, _, running) = run_workflow(net, mods, cfg, rep, slo_ms);
                leftovers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(running);
            });
        }
    });
    finish(leftovers.into_inner().unwrap_or_else(|p| p.into_inner()));
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while net.nodes().iter().any(|n| net.outbox_len(n) > 0) {
        assert!(
            Instant::now() < deadline,
            "the outboxes did not drain within {DRAIN_TIMEOUT:?} of the last workflow"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed().as_secs_f64()
}

fn main() {
    let o = cli::parse_or_exit(USAGE, options);
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mods = Modules::load(&o.mode);
    if let Err(e) = skylark_netemu::constellation::install_interrupt_cleanup() {
        eprintln!(
            "experiment: cannot handle interrupts ({e}); an interrupted run may leave temp files"
        );
    }
    let net = Constellation::start(NetOptions {
        slot_ms: o.slot_ms,
        ..NetOptions::default()
    });
    let events = Events::subscribe(&net);
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
    let mut records: Vec<WorkflowRecord> = Vec::new();
    let total = levels.len() * o.states.len() * o.sizes.len() * o.policies.len() * o.reps as usize;
    for level in &levels {
        for state in &o.states {
            for &size in &o.sizes {
                for rep in 0..o.reps {
                    // Policies take turns within a repetition, in a shuffled order, so drift
                    // and load hit them alike.
                    let mut order = o.policies.clone();
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
                        let (mut rec, chain, running) =
                            run_workflow(&net, &mods, &cfg, rep, slo_ms);
                        finish(running);
                        // Every step's put propagates, except with Stateless (synchronous).
                        let expected = if policy == "stateless" { 0 } else { 4 };
                        rec.migration_ms = events.migrations_wait(&chain, expected);
                        rec.slo_level = Some(level.clone());
                        attach_migrations(&net, &mut rec, &events.propagations(&chain));
                        records.push(rec);
                        eprintln!(
                        "[experiment] {}/{total} {level} {state} {:.2} MB {policy} rep {rep}: T(W) {:.0} ms",
                        records.len(),
                        size as f64 / 1_048_576.0,
                        records.last().map_or(0.0, |r| r.t_w_ms)
                    );
                    }
                }
            }
        }
    }

    let mut tput = Vec::new();
    let tsize = if o.sizes.contains(&mb_bytes(1.0)) {
        mb_bytes(1.0)
    } else {
        o.sizes[0]
    };
    for policy in &o.policies {
        let cfg = Config {
            policy: policy.clone(),
            state: "bundled".into(),
            size_bytes: tsize,
            concurrency: o.concurrency,
        };
        let slo_ms = budget(&levels[0], tsize);
        let wall_s = throughput(&net, &mods, &cfg, o.throughput_workflows, slo_ms);
        eprintln!(
            "[experiment] throughput {policy}: {} workflows, {} at a time, {wall_s:.1} s",
            o.throughput_workflows, o.concurrency
        );
        tput.push(ThroughputRecord {
            config: cfg,
            workflows: o.throughput_workflows,
            wall_s,
        });
    }

    let meta = Meta {
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
        command,
        notes: vec![
            format!(
                "{} workflows of 4 steps ({} repetitions per configuration), guests {}, slot length {} ms, SLO levels {} ({}; tables and headline: {}); run took {:.0} s",
                records.len(),
                o.reps,
                o.mode,
                o.slot_ms,
                levels.join(", "),
                slo::PROFILE_FILE,
                levels[0],
                started.elapsed().as_secs_f64()
            ),
            "links: satellite-satellite 10 ms ± 9 ms, 40 Mbit/s; cloud-satellite 60 ms ± 30 ms, 90 Mbit/s; every physical link one shared resource per direction (flows crossing it share its bandwidth), paths cross their links hop by hop, a new connection pays the path's round trip".into(),
            "paired design: per repetition every policy starts on the same satellite, policies in a shuffled order; throughput wall time ends when the last propagation has drained".into(),
            "T(f): process start until the step printed its result (the next step starts then); T(W): first start to last result; T(dm): put until every copy was acknowledged (propagated events); Stateless writes synchronously, so it has no T(dm)".into(),
        ]
        .into_iter()
        .chain(o.quick.then(|| "quick (smoke) run: small state, one repetition".to_string()))
        .collect(),
    };
    match report::write_report(&o.out, &meta, &records, &tput) {
        Ok(path) => {
            let summaries = report::summarize(&report::primary_level(&records), &tput);
            println!("{}", report::headline(&summaries, tsize));
            eprintln!("[experiment] report: {}", path.display());
        }
        Err(e) => {
            eprintln!("experiment: writing the report: {e}");
            std::process::exit(1);
        }
    }
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
