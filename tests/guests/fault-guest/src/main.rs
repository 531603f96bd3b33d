//! The fault-injection guest: numbered puts, each reported on its own stdout line as soon
//! as the host call returns, so that a harness injecting faults (or SIGKILLing this
//! process) knows exactly which puts the plugin acknowledged.
//!
//! ```text
//! fault-guest puts <run> <node> <first> <count> [--tasks-per-chain K] [--max-size B]
//!                  [--interval-us N] [--dests a,b,..]
//! fault-guest big  <run> <node> <first> <count> <fields> <size> [--dests a,b,..]
//! fault-guest ver  <run> <node> <first> <count> [--chains C] [--tasks T]
//!                  [--cleanup-pct P] [--read-pct R] [--interval-us N] [--dests a,b,..]
//! fault-guest cas  <run> <node> <process> <count> [--counters N] [--interval-us N]
//! fault-guest idle <ms>
//! ```
//! * `puts`: puts number `first` .. `first + count` ([`fault_guest::Put`]), one field
//!   each, one every `--interval-us` (on an absolute schedule, catching up when late).
//! * `big`: `skylark_put_many` of `fields` fields of about `size` bytes each per put
//!   ([`fault_guest::BigPut`]).
//! * `ver`: puts number `first` .. `first + count` of the overwrite workload
//!   ([`fault_guest::versioned`]): the node's fields written again and again, each value
//!   carrying its version; after some puts, a read of one of the node's chains.
//! * `cas`: `count` increments of the node's shared counters ([`fault_guest::cas`]) by
//!   compare-and-swap loops through `skylark_put_v2`: put the counter's value plus this
//!   increment's key with `if_version` = the version last seen and the increment's
//!   idempotency key `<process>-<n>`; on `ConditionFailed` take the version the node
//!   reports, read the counter again (local only) and retry; on any other error (a store
//!   timeout or restart: the outcome is unknown) repeat the very same put (same bytes,
//!   version and key), so that a put that landed is acknowledged without a second
//!   increment. An increment still without an answer after [`CAS_GIVE_UP`] is given up.
//! * `idle`: one local read (which starts the plugin's background engine, and with it the
//!   outbox sweeps that finish jobs left by earlier processes), then `ready`, then a sleep
//!   of `ms` milliseconds.
//!
//! `--dests` lists the nodes a put may name as its destination (picked by its number);
//! without it, puts name none (the global node).
//!
//! Output: `p <number> <status> <status name> [<error message>]` per put (status 0 =
//! acknowledged), then `end`; in `big` mode also `s <number>` just before each put's
//! host call. A failed put does not stop the loop. In `ver` mode a read prints
//! `r <number> <chain> <status> <status name> [<task>=<verdict> ...]` (the put it follows,
//! and for each field its version or `torn`, `foreign`, `garbage`; see
//! [`fault_guest::versioned::Verdict`]). In `cas` mode: `c <counter> <count> <version>
//! <key>` per acknowledged increment (the count and version the counter got), `g <counter>
//! <key> <status name>` per increment given up (it may or may not have landed), then
//! `ct <conflicts> <unknown> <given up>` (CAS conflicts retried, puts repeated after an
//! unknown outcome, increments given up) before `end`. Bad arguments exit with code 2.

use fault_guest::cas::{self, Counter};
use fault_guest::versioned::{self, Pool};
use fault_guest::{BigPut, Put, Shape};
use skylark_guest as sky;
use std::time::{Duration, Instant};

fn usage(problem: &str) -> ! {
    eprintln!("fault-guest: {problem}; see the module documentation for the usage");
    std::process::exit(2);
}

fn number<T: std::str::FromStr>(value: Option<&String>, name: &str) -> T {
    match value.map(|v| v.parse::<T>()) {
        Some(Ok(v)) => v,
        _ => usage(&format!("{name} missing or invalid")),
    }
}

/// Command-line options (`--name value`) and positional arguments.
struct Args {
    pos: Vec<String>,
    shape: Shape,
    pool: Pool,
    interval: Duration,
    dests: Vec<String>,
    counters: u64,
}

/// How long a `cas` increment may go without a definite answer before it is given up.
const CAS_GIVE_UP: Duration = Duration::from_secs(60);

/// Pause before repeating a put or read whose outcome was an error.
const CAS_RETRY_PAUSE: Duration = Duration::from_millis(50);

fn parse(all: Vec<String>) -> Args {
    let mut args = Args {
        pos: Vec::new(),
        shape: Shape::default(),
        pool: Pool::default(),
        interval: Duration::ZERO,
        dests: Vec::new(),
        counters: 3,
    };
    let mut it = all.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--tasks-per-chain" => args.shape.tasks_per_chain = number(it.next().as_ref(), &a),
            "--max-size" => args.shape.max_size = number(it.next().as_ref(), &a),
            "--chains" => args.pool.chains = number(it.next().as_ref(), &a),
            "--tasks" => args.pool.tasks = number(it.next().as_ref(), &a),
            "--cleanup-pct" => args.pool.cleanup_pct = number(it.next().as_ref(), &a),
            "--read-pct" => args.pool.read_pct = number(it.next().as_ref(), &a),
            "--counters" => args.counters = number(it.next().as_ref(), &a),
            "--interval-us" => {
                args.interval = Duration::from_micros(number(it.next().as_ref(), &a))
            }
            "--dests" => {
                let list: String = number(it.next().as_ref(), &a);
                args.dests = list
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
            }
            s if s.starts_with("--") => usage(&format!("unknown option {s}")),
            _ => args.pos.push(a),
        }
    }
    args
}

/// Put options naming the destination picked by `pick` (none without `--dests`).
fn options(args: &Args, pick: u64, policy: Option<sky::Policy>) -> sky::PutOptions {
    let n = args.dests.len() as u64;
    sky::PutOptions {
        destination: (n > 0).then(|| args.dests[(pick % n) as usize].clone()),
        policy,
        ..Default::default()
    }
}

/// Prints one put's outcome.
fn report(id: u64, result: &sky::Result<()>) {
    match result {
        Ok(()) => println!("p {id} 0 Ok"),
        Err(e) => println!(
            "p {id} {} {} {}",
            e.code,
            e.status_name(),
            e.message.replace('\n', " ")
        ),
    }
}

/// Reads `chain` (as its puts do: only the global store for a `stateless` chain) and
/// prints what each field held.
fn read_chain(after: u64, chain: &str) {
    let opts = sky::GetOptions {
        policy: versioned::stateless_chain(chain).then_some(sky::Policy::Stateless),
        ..Default::default()
    };
    match sky::try_get_bundle_with(chain, &opts) {
        Ok(found) => {
            let mut line = format!("r {after} {chain} 0 Ok");
            for (task, bytes) in found.iter().flat_map(|b| b.iter()) {
                let verdict = versioned::decode(chain, task, bytes);
                line.push_str(&format!(" {task}={}", verdict.word()));
            }
            println!("{line}");
        }
        Err(e) => println!("r {after} {chain} {} {}", e.code, e.status_name()),
    }
}

/// Reads counter `chain` from the node's own store, retrying errors until `deadline`:
/// `None` if it could not be read (or does not decode).
fn read_counter(chain: &str, deadline: Instant) -> Option<Counter> {
    let opts = sky::GetOptions {
        local_only: true,
        ..Default::default()
    };
    loop {
        match sky::try_get_bundle_with(chain, &opts) {
            Ok(None) => return Some(Counter::default()),
            Ok(Some(b)) => return Counter::decode(b.get(cas::TASK).unwrap_or_default()),
            Err(_) if Instant::now() < deadline => std::thread::sleep(CAS_RETRY_PAUSE),
            Err(_) => return None,
        }
    }
}

/// The `cas` mode: `count` increments by process `process`; see the module documentation.
fn cas_run(args: &Args, run: &str, node: &str, process: &str, count: u64) {
    let chains: Vec<String> = (0..args.counters.max(1))
        .map(|i| cas::chain_name(run, node, i))
        .collect();
    // The version and value last seen of each counter (0 and empty: none seen yet; a
    // counter that exists answers the first put with ConditionFailed and its version).
    let mut seen: Vec<(u64, Counter)> = vec![(0, Counter::default()); chains.len()];
    let (mut conflicts, mut unknown, mut given_up) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    for n in 0..count {
        let due = start + args.interval * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let c = cas::counter_of(process, n, args.counters) as usize;
        let key = cas::key(process, n);
        let deadline = Instant::now() + CAS_GIVE_UP;
        // The put, fixed until the node answers it definitely.
        let (mut version, mut value) = (seen[c].0, seen[c].1.incremented(&key));
        loop {
            let opts = sky::PutOptions {
                if_version: Some(version),
                idempotency_key: Some(key.clone()),
                ..Default::default()
            };
            match sky::put_versioned(&chains[c], cas::TASK, &value.encode(), &opts) {
                Ok(v) => {
                    println!("c {c} {} {v} {key}", value.count());
                    seen[c] = (v, value);
                    break;
                }
                Err(e) if e.is(sky::Status::ConditionFailed) => {
                    // Nothing was written (not even by an earlier attempt of this put:
                    // its key would have answered Ok). Read the counter as it is now,
                    // after learning its version, so the value is no older than it.
                    conflicts += 1;
                    version = e.versions.first().copied().unwrap_or(0);
                    match read_counter(&chains[c], deadline) {
                        Some(now) if Instant::now() < deadline => value = now.incremented(&key),
                        _ => {
                            given_up += 1;
                            println!("g {c} {key} unreadable");
                            break;
                        }
                    }
                }
                Err(_) if Instant::now() < deadline => {
                    // Outcome unknown (or nothing written): the same put again.
                    unknown += 1;
                    std::thread::sleep(CAS_RETRY_PAUSE);
                }
                Err(e) => {
                    given_up += 1;
                    println!("g {c} {key} {}", e.status_name());
                    break;
                }
            }
        }
    }
    println!("ct {conflicts} {unknown} {given_up}");
}

fn main() {
    let args = parse(std::env::args().skip(1).collect());
    let op = args.pos.first().cloned().unwrap_or_default();
    match op.as_str() {
        "puts" => {
            let (Some(run), Some(node)) = (args.pos.get(1), args.pos.get(2)) else {
                usage("run or node missing")
            };
            let first: u64 = number(args.pos.get(3), "first");
            let count: u64 = number(args.pos.get(4), "count");
            let start = Instant::now();
            for (i, id) in (first..first + count).enumerate() {
                let due = start + args.interval * i as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let put = Put::new(run, node, id, args.shape);
                let opts = options(&args, put.dest, sky::Policy::parse(put.policy));
                report(
                    id,
                    &sky::put_with(&put.chain, &put.task, &put.value(), &opts),
                );
            }
        }
        "big" => {
            let (Some(run), Some(node)) = (args.pos.get(1), args.pos.get(2)) else {
                usage("run or node missing")
            };
            let first: u64 = number(args.pos.get(3), "first");
            let count: u64 = number(args.pos.get(4), "count");
            let fields: usize = number(args.pos.get(5), "fields");
            let size: usize = number(args.pos.get(6), "size");
            for id in first..first + count {
                let big = BigPut::new(run, node, id, fields, size);
                let values = big.values();
                let pairs: Vec<(&str, &[u8])> = big
                    .fields
                    .iter()
                    .zip(&values)
                    .map(|((task, _), v)| (task.as_str(), v.as_slice()))
                    .collect();
                let opts = options(&args, fault_guest::mix(id), None);
                // The host call starts now: a kill from here to the report is mid-put.
                println!("s {id}");
                report(id, &sky::put_many_with(&big.chain, &pairs, &opts));
            }
        }
        "ver" => {
            let (Some(run), Some(node)) = (args.pos.get(1), args.pos.get(2)) else {
                usage("run or node missing")
            };
            let first: u64 = number(args.pos.get(3), "first");
            let count: u64 = number(args.pos.get(4), "count");
            let puts = args.pool.puts(run, node, first + count);
            let start = Instant::now();
            for (i, put) in puts.iter().skip(first as usize).enumerate() {
                let due = start + args.interval * i as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let mut opts = options(&args, put.dest, sky::Policy::parse(put.policy));
                opts.cleanup = put.cleanup;
                report(
                    put.id,
                    &sky::put_with(&put.chain, &put.task, &put.value(), &opts),
                );
                if let Some(c) = args.pool.read_after(run, node, put.id) {
                    read_chain(put.id, &versioned::chain_name(run, node, c));
                }
            }
        }
        "cas" => {
            let (Some(run), Some(node), Some(process)) =
                (args.pos.get(1), args.pos.get(2), args.pos.get(3))
            else {
                usage("run, node or process missing")
            };
            let count: u64 = number(args.pos.get(4), "count");
            cas_run(&args, run, node, process, count);
        }
        "idle" => {
            let ms: u64 = number(args.pos.get(1), "ms");
            let opts = sky::GetOptions {
                local_only: true,
                ..Default::default()
            };
            if let Err(e) = sky::try_get_bundle_with("fault-guest-idle", &opts) {
                eprintln!("fault-guest: the first call failed: {e}");
            }
            println!("ready");
            std::thread::sleep(Duration::from_millis(ms));
        }
        other => usage(&format!(
            "unknown mode {other:?} (puts, big, ver, cas, idle)"
        )),
    }
    println!("end");
}
