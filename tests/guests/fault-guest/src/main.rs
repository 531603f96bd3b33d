//! The fault-injection guest: numbered puts, each reported on its own stdout line as soon
//! as the host call returns, so that a harness injecting faults (or SIGKILLing this
//! process) knows exactly which puts the plugin acknowledged.
//!
//! ```text
//! fault-guest puts <run> <node> <first> <count> [--tasks-per-chain K] [--max-size B]
//!                  [--interval-us N] [--dests a,b,..]
//! fault-guest big  <run> <node> <first> <count> <fields> <size> [--dests a,b,..]
//! fault-guest idle <ms>
//! ```
//! * `puts`: puts number `first` .. `first + count` ([`fault_guest::Put`]), one field
//!   each, one every `--interval-us` (on an absolute schedule, catching up when late).
//! * `big`: `skylark_put_many` of `fields` fields of about `size` bytes each per put
//!   ([`fault_guest::BigPut`]).
//! * `idle`: one local read (which starts the plugin's background engine, and with it the
//!   outbox sweeps that finish jobs left by earlier processes), then `ready`, then a sleep
//!   of `ms` milliseconds.
//!
//! `--dests` lists the nodes a put may name as its destination (picked by its number);
//! without it, puts name none (the global node).
//!
//! Output: `p <number> <status> <status name> [<error message>]` per put (status 0 =
//! acknowledged), then `end`; in `big` mode also `s <number>` just before each put's
//! host call. A failed put does not stop the loop. Bad arguments exit with code 2.

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
    interval: Duration,
    dests: Vec<String>,
}

fn parse(all: Vec<String>) -> Args {
    let mut args = Args {
        pos: Vec::new(),
        shape: Shape::default(),
        interval: Duration::ZERO,
        dests: Vec::new(),
    };
    let mut it = all.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--tasks-per-chain" => args.shape.tasks_per_chain = number(it.next().as_ref(), &a),
            "--max-size" => args.shape.max_size = number(it.next().as_ref(), &a),
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
        other => usage(&format!("unknown mode {other:?} (puts, big, idle)")),
    }
    println!("end");
}
