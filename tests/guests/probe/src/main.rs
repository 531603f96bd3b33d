//! The probe guest: one Skylark operation per invocation, reported as one JSON line.
//!
//! ```text
//! probe put      <chain> <task> <size> <seed>
//! probe put-many <chain> <prefix> <count> <size> <seed>   fields <prefix>0.., seeds seed+i
//! probe get      <chain>
//! probe bench    <put|get> <chain> <size> <fields> <iterations>
//! ```
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

fn outcome(r: &sky::Result<()>) -> (i32, Value) {
    match r {
        Ok(()) => (0, Value::Null),
        Err(e) => (e.code, Value::String(e.message.clone())),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let op: String = arg(&args, 0, "operation");
    let out = match op.as_str() {
        "put" => {
            let (chain, task): (String, String) = (arg(&args, 1, "chain"), arg(&args, 2, "task"));
            let value = pattern(arg(&args, 3, "size"), arg(&args, 4, "seed"));
            let t = Instant::now();
            let r = sky::put(&chain, &task, &value);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let (status, error) = outcome(&r);
            json!({"op": "put", "status": status, "error": error, "ms": ms, "fnv": fnv1a(&value)})
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
            let t = Instant::now();
            let r = sky::put_many(&chain, &fields);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let (status, error) = outcome(&r);
            json!({"op": "put-many", "status": status, "error": error, "ms": ms})
        }
        "get" => {
            let chain: String = arg(&args, 1, "chain");
            let t = Instant::now();
            let r = sky::get_bundle(&chain);
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
                    json!({"op": "get", "status": 0, "error": null, "ms": ms, "chain": b.chain(),
                           "tier": format!("{:?}", b.source().tier).to_lowercase(),
                           "node": b.source().node, "fields": fields})
                }
                Err(e) => json!({"op": "get", "status": e.code, "error": e.message, "ms": ms}),
            }
        }
        "bench" => bench(&args),
        other => {
            eprintln!("probe: unknown operation {other:?} (put, put-many, get, bench)");
            std::process::exit(2);
        }
    };
    println!("{out}");
}

/// Times `iterations` guest-visible calls; reports every sample in nanoseconds.
fn bench(args: &[String]) -> Value {
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
    let put = || {
        if fields == 1 {
            sky::put(&chain, pairs[0].0, pairs[0].1)
        } else {
            sky::put_many(&chain, &pairs)
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
            _ => sky::get_bundle(&chain).map(|b| assert_eq!(b.len(), fields)),
        };
        samples.push(t.elapsed().as_nanos() as u64);
        if let Err(e) = r {
            return json!({"op": "bench", "status": e.code, "error": e.message});
        }
    }
    json!({"op": "bench", "status": 0, "kind": kind, "size": size, "fields": fields, "samples_ns": samples})
}
