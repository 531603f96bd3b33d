//! The probe guest: one Skylark operation per invocation, reported as one JSON line.
//!
//! ```text
//! probe put      <chain> <task> <size> <seed>
//! probe put-many <chain> <prefix> <count> <size> <seed>   fields <prefix>0.., seeds seed+i
//! probe get      <chain>
//! probe wait     <chain>                                 get with --wait-for (sky::wait_for_with)
//! probe wait-raw <chain> <cap>                           the same through the raw imports: a
//!                                                        first buffer of <cap> bytes, then
//!                                                        skylark_take_result if too small
//!                                                        (first one byte short with
//!                                                        --short-take); prints the block's
//!                                                        length, checksum and layout
//! probe bench    <put|get> <chain> <size> <fields> <iterations>
//! probe idle     <ms>                                    no Skylark call: sleeps, then exits
//! ```
//! Options, anywhere after the operation: put options `--dest NODE --dests NODE,NODE
//! --policy P --max-latency-ms N --min-bandwidth-mbps F --exec-ms N --successor-in-ms N --cleanup`,
//! get options `--from NODE --policy P --local-only --require T1,T2 --wait-for T1,T2
//! --wait-ms N --layout msgpack|table` (the SDK asks for the table layout unless told),
//! and `--sleep-after-ms N` (print the
//! result, then wait before exiting: lets a test kill the process after its put).
//! ABI version 2: `--v2` makes `put` and `put-many` call `skylark_put_v2` and print the
//! `versions` it returns (also those a failed condition reports); `--if-version N`,
//! `--if-absent` and `--idem KEY` set the conditional and idempotent put options (with or
//! without `--v2`); `--start-at-ms T` waits until unix time T (ms) before the call, so that
//! several processes race (`late` in the JSON: the process started after T). In `bench put
//! --v2`, `--cas` makes every put a compare-and-swap from the version the previous one
//! returned. `--chains N` spreads `bench put`'s puts over N chains `<chain>-0..`, so that
//! their propagation jobs do not merge into one.
//!
//! Failures of the Skylark call are reported in the JSON (`status`, `error`) with exit
//! code 0; only bad command-line arguments exit non-zero.

use probe::{fnv1a, pattern};
use serde_json::{json, Map, Value};
use skylark_guest as sky;
use std::time::Instant;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, name: &str) -> T {
    match args.get(i).map(|s| s.parse::<T>()) {
        Some(Ok(v)) => v,
        _ => {
            eprintln!("probe: argument {i} ({name}) missing or invalid; see the module docs");
            std::process::exit(2);
        }
    }
}

/// Wall-clock time in milliseconds since the Unix epoch (WASI clock).
fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

fn outcome(r: &sky::Result<()>) -> (i32, Value) {
    match r {
        Ok(()) => (0, Value::Null),
        Err(e) => (e.code, Value::String(e.message.clone())),
    }
}

/// A versioned put's outcome and the versions to print: those returned, or those a failed
/// condition reports (null when there are none).
fn versioned(r: sky::Result<Vec<u64>>) -> (sky::Result<()>, Value) {
    match r {
        Ok(v) => (Ok(()), json!(v)),
        Err(e) if e.versions.is_empty() => (Err(e), Value::Null),
        Err(e) => {
            let v = json!(e.versions);
            (Err(e), v)
        }
    }
}

/// With `--start-at-ms T`: waits until unix time T; true if it had passed already.
fn start_barrier(flags: &Flags) -> bool {
    let Some(at) = flags.start_at_ms else {
        return false;
    };
    let now = unix_ms();
    if now >= at {
        return true;
    }
    std::thread::sleep(std::time::Duration::from_secs_f64((at - now) / 1e3));
    false
}

/// Options given as `--name value` (or bare `--flag`) anywhere on the command line.
#[derive(Default)]
struct Flags {
    put: sky::PutOptions,
    get: sky::GetOptions,
    sleep_after_ms: u64,
    v2: bool,
    cas: bool,
    start_at_ms: Option<f64>,
    /// `wait-raw`: offer `skylark_take_result` one byte too few first.
    short_take: bool,
    /// `bench put`: spread the puts over this many chains (`<chain>-<i>`), so that their
    /// propagation jobs do not all merge into one; 0 or 1: the one chain given.
    chains: usize,
}

fn flag_value<T: std::str::FromStr>(name: &str, v: Option<String>) -> T {
    match v.map(|s| s.parse::<T>()) {
        Some(Ok(v)) => v,
        _ => {
            eprintln!("probe: {name} needs a valid value");
            std::process::exit(2);
        }
    }
}

/// Splits the command line into positional arguments and [`Flags`].
fn parse(all: Vec<String>) -> (Vec<String>, Flags) {
    let mut pos = Vec::new();
    let mut f = Flags::default();
    let mut it = all.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dest" => f.put.destination = Some(flag_value(&a, it.next())),
            "--dests" => {
                let list: String = flag_value(&a, it.next());
                f.put.destinations = list.split(',').map(str::to_string).collect();
            }
            "--policy" => {
                let p: String = flag_value(&a, it.next());
                let Some(p) = sky::Policy::parse(&p) else {
                    eprintln!("probe: unknown policy {p:?}");
                    std::process::exit(2);
                };
                f.put.policy = Some(p);
                f.get.policy = Some(p);
            }
            "--max-latency-ms" => f.put.max_latency_ms = Some(flag_value(&a, it.next())),
            "--min-bandwidth-mbps" => f.put.min_bandwidth_mbps = Some(flag_value(&a, it.next())),
            "--exec-ms" => f.put.exec_ms = Some(flag_value(&a, it.next())),
            "--successor-in-ms" => f.put.successor_in_ms = Some(flag_value(&a, it.next())),
            "--cleanup" => f.put.cleanup = true,
            "--from" => f.get.from = Some(flag_value(&a, it.next())),
            "--local-only" => f.get.local_only = true,
            "--short-take" => f.short_take = true,
            "--chains" => f.chains = flag_value(&a, it.next()),
            "--layout" => {
                let l: String = flag_value(&a, it.next());
                let Some(l) = sky::Layout::parse(&l) else {
                    eprintln!("probe: unknown layout {l:?} (msgpack, table)");
                    std::process::exit(2);
                };
                f.get.layout = Some(l);
            }
            "--wait-for" => {
                let list: String = flag_value(&a, it.next());
                f.get.wait_for = list.split(',').map(str::to_string).collect();
            }
            "--wait-ms" => f.get.wait_ms = Some(flag_value(&a, it.next())),
            "--require" => {
                let list: String = flag_value(&a, it.next());
                f.get.require = list.split(',').map(str::to_string).collect();
            }
            "--sleep-after-ms" => f.sleep_after_ms = flag_value(&a, it.next()),
            "--v2" => f.v2 = true,
            "--cas" => f.cas = true,
            "--if-version" => f.put.if_version = Some(flag_value(&a, it.next())),
            "--if-absent" => f.put.if_absent = true,
            "--idem" => f.put.idempotency_key = Some(flag_value(&a, it.next())),
            "--start-at-ms" => f.start_at_ms = Some(flag_value(&a, it.next())),
            s if s.starts_with("--") => {
                eprintln!("probe: unknown option {s}");
                std::process::exit(2);
            }
            _ => pos.push(a),
        }
    }
    (pos, f)
}

fn main() {
    let (args, flags) = parse(std::env::args().skip(1).collect());
    let op: String = arg(&args, 0, "operation");
    let out = match op.as_str() {
        "put" => {
            let (chain, task): (String, String) = (arg(&args, 1, "chain"), arg(&args, 2, "task"));
            let value = pattern(arg(&args, 3, "size"), arg(&args, 4, "seed"));
            let late = start_barrier(&flags);
            let t = Instant::now();
            let (r, versions) = if flags.v2 {
                versioned(sky::put_versioned(&chain, &task, &value, &flags.put).map(|v| vec![v]))
            } else {
                (
                    sky::put_with(&chain, &task, &value, &flags.put),
                    Value::Null,
                )
            };
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let returned_at_ms = unix_ms();
            let (status, error) = outcome(&r);
            json!({"op": "put", "status": status, "error": error, "ms": ms, "fnv": fnv1a(&value),
                   "returned_at_ms": returned_at_ms, "versions": versions, "late": late})
        }
        "put-many" => {
            let (chain, prefix): (String, String) =
                (arg(&args, 1, "chain"), arg(&args, 2, "prefix"));
            let (count, size, seed): (usize, usize, u64) = (
                arg(&args, 3, "count"),
                arg(&args, 4, "size"),
                arg(&args, 5, "seed"),
            );
            let names: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
            let values: Vec<Vec<u8>> = (0..count).map(|i| pattern(size, seed + i as u64)).collect();
            let fields: Vec<(&str, &[u8])> = names
                .iter()
                .zip(&values)
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect();
            let late = start_barrier(&flags);
            let t = Instant::now();
            let (r, versions) = if flags.v2 {
                versioned(sky::put_many_versioned(&chain, &fields, &flags.put))
            } else {
                (sky::put_many_with(&chain, &fields, &flags.put), Value::Null)
            };
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let (status, error) = outcome(&r);
            json!({"op": "put-many", "status": status, "error": error, "ms": ms,
                   "versions": versions, "late": late})
        }
        "get" => {
            let chain: String = arg(&args, 1, "chain");
            let t = Instant::now();
            let r = sky::get_bundle_with(&chain, &flags.get);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            match r {
                Ok(b) => {
                    let mut fields = Map::new();
                    for (task, bytes) in b.iter() {
                        fields.insert(
                            task.to_string(),
                            json!({"len": bytes.len(), "fnv": fnv1a(bytes)}),
                        );
                    }
                    let placement: Map<String, Value> = b
                        .placements()
                        .map(|(t, n)| (t.to_string(), Value::String(n.to_string())))
                        .collect();
                    json!({"op": "get", "status": 0, "error": null, "ms": ms, "chain": b.chain(),
                           "tier": format!("{:?}", b.source().tier).to_lowercase(),
                           "node": b.source().node, "fields": fields, "placement": placement,
                           "versions": versions(&b)})
                }
                Err(e) => json!({"op": "get", "status": e.code, "error": e.message, "ms": ms}),
            }
        }
        "wait" => {
            let chain: String = arg(&args, 1, "chain");
            let t = Instant::now();
            let r = sky::wait_for_with(&chain, &flags.get);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let returned_at_ms = unix_ms();
            match r {
                Ok(w) => {
                    let status = if w.complete {
                        0
                    } else {
                        sky::Status::TimedOut.code()
                    };
                    let mut out = json!({"op": "wait", "status": status, "ms": ms,
                                         "returned_at_ms": returned_at_ms, "bundle": w.bundle.is_some()});
                    if let Some(b) = &w.bundle {
                        out["fields"] = summary(b);
                        out["versions"] = versions(b);
                        out["tier"] = json!(format!("{:?}", b.source().tier).to_lowercase());
                    }
                    out
                }
                Err(e) => json!({"op": "wait", "status": e.code, "error": e.message, "ms": ms}),
            }
        }
        "wait-raw" => wait_raw(&args, &flags),
        "bench" => bench(&args, &flags),
        "idle" => {
            let ms: u64 = arg(&args, 1, "ms");
            std::thread::sleep(std::time::Duration::from_millis(ms));
            json!({"op": "idle", "status": 0})
        }
        other => {
            eprintln!("probe: unknown operation {other:?} (put, put-many, get, bench, idle)");
            std::process::exit(2);
        }
    };
    println!("{out}");
    if flags.sleep_after_ms > 0 {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::thread::sleep(std::time::Duration::from_millis(flags.sleep_after_ms));
    }
}

/// Length and checksum of each field.
fn summary(b: &sky::Bundle) -> Value {
    let mut fields = Map::new();
    for (task, bytes) in b.iter() {
        fields.insert(
            task.to_string(),
            json!({"len": bytes.len(), "fnv": fnv1a(bytes)}),
        );
    }
    Value::Object(fields)
}

/// Each field's version, as the bundle reports it.
fn versions(b: &sky::Bundle) -> Value {
    Value::Object(
        b.tasks()
            .filter_map(|t| b.version(t).map(|v| (t.to_string(), json!(v))))
            .collect(),
    )
}

/// `wait-raw <chain> <cap>`: `skylark_get_bundle` with a buffer of `cap` bytes, then, if
/// it answers `BufferTooSmall`, `skylark_take_result` with a buffer of the reported length;
/// reports both statuses.
fn wait_raw(args: &[String], flags: &Flags) -> Value {
    let chain: String = arg(args, 1, "chain");
    let cap: usize = arg(args, 2, "cap");
    let opts = sky::abi::wire::encode_options(&flags.get).unwrap_or_default();
    let mut buf = vec![0u8; cap];
    let mut result = [0u32; 2];
    let addr = |p: *const u8| p as usize as i32;
    // SAFETY: every pointer/length pair describes a live buffer of this function that
    // outlives the call; the host writes at most `cap` bytes to `buf` and 8 to `result`.
    let first = unsafe {
        sky::raw::skylark_get_bundle(
            addr(chain.as_ptr()),
            chain.len() as i32,
            addr(opts.as_ptr()),
            opts.len() as i32,
            addr(buf.as_mut_ptr()),
            cap as i32,
            addr(result.as_mut_ptr().cast()),
        )
    };
    let (len, handle) = (result[0] as usize, result[1]);
    let mut out = json!({"op": "wait-raw", "get_status": first, "len": len, "handle": handle});
    let bytes = if first == sky::Status::BufferTooSmall.code() {
        let mut full = vec![0u8; len];
        let mut taken = [0u32; 2];
        if flags.short_take && len > 0 {
            // SAFETY: as above, with a buffer of `len` bytes of which `len - 1` are offered.
            let short = unsafe {
                sky::raw::skylark_take_result(
                    handle as i32,
                    addr(full.as_mut_ptr()),
                    len as i32 - 1,
                    addr(taken.as_mut_ptr().cast()),
                )
            };
            out["short_take_status"] = json!(short);
            out["short_take_len"] = json!(taken[0]);
            out["short_take_handle"] = json!(taken[1]);
        }
        // SAFETY: as above, with a buffer of `len` bytes.
        let second = unsafe {
            sky::raw::skylark_take_result(
                handle as i32,
                addr(full.as_mut_ptr()),
                len as i32,
                addr(taken.as_mut_ptr().cast()),
            )
        };
        out["take_status"] = json!(second);
        full.truncate(taken[0] as usize);
        full
    } else {
        buf.truncate(len.min(cap));
        buf
    };
    out["table"] = json!(sky::abi::table::is_table(&bytes));
    out["block_len"] = json!(bytes.len());
    out["block_fnv"] = json!(fnv1a(&bytes));
    if let Ok(b) = sky::Bundle::decode(&bytes) {
        out["fields"] = summary(&b);
        out["versions"] = versions(&b);
        out["chain"] = json!(b.chain());
        out["tier"] = json!(format!("{:?}", b.source().tier).to_lowercase());
        out["node"] = json!(b.source().node);
    }
    out
}

/// Times `iterations` guest-visible calls; reports every sample in nanoseconds.
fn bench(args: &[String], flags: &Flags) -> Value {
    let kind: String = arg(args, 1, "put|get");
    let chain: String = arg(args, 2, "chain");
    let (size, fields, iterations): (usize, usize, usize) = (
        arg(args, 3, "size"),
        arg(args, 4, "fields"),
        arg(args, 5, "iterations"),
    );
    let names: Vec<String> = (0..fields).map(|i| format!("f{i}")).collect();
    let values: Vec<Vec<u8>> = (0..fields).map(|i| pattern(size, i as u64)).collect();
    let pairs: Vec<(&str, &[u8])> = names
        .iter()
        .zip(&values)
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let last = std::cell::Cell::new(0u64);
    let chains: Vec<String> = match flags.chains {
        0 | 1 => vec![chain.clone()],
        n => (0..n).map(|i| format!("{chain}-{i}")).collect(),
    };
    let turn = std::cell::Cell::new(0usize);
    let put = || {
        let chain = &chains[turn.get() % chains.len()];
        turn.set(turn.get() + 1);
        if flags.v2 && flags.cas {
            let opts = sky::PutOptions {
                if_version: Some(last.get()),
                ..flags.put.clone()
            };
            sky::put_many_versioned(chain, &pairs, &opts).map(|v| last.set(v[0]))
        } else if flags.v2 {
            sky::put_many_versioned(chain, &pairs, &flags.put).map(drop)
        } else if fields == 1 {
            sky::put_with(chain, pairs[0].0, pairs[0].1, &flags.put)
        } else {
            sky::put_many_with(chain, &pairs, &flags.put)
        }
    };
    if let Err(e) = put() {
        return json!({"op": "bench", "status": e.code, "error": e.message});
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        let r = match kind.as_str() {
            "put" => put(),
            _ => sky::get_bundle_with(&chain, &flags.get).map(|b| assert_eq!(b.len(), fields)),
        };
        samples.push(t.elapsed().as_nanos() as u64);
        if let Err(e) = r {
            return json!({"op": "bench", "status": e.code, "error": e.message});
        }
    }
    json!({"op": "bench", "status": 0, "kind": kind, "size": size, "fields": fields, "samples_ns": samples})
}
