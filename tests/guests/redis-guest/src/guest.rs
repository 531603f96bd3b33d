//! The guest itself (WASI only): see `main.rs`.

use serde_json::{json, Value};
use std::time::Instant;

/// The key the plugin would write (`skylark:bundle:<chain>`), as a native client would.
fn put(
    con: &mut redis::Connection,
    key: &str,
    fields: &[(String, Vec<u8>)],
) -> redis::RedisResult<()> {
    let mut hset = redis::cmd("HSET");
    hset.arg(key);
    for (name, value) in fields {
        hset.arg(name).arg(value);
    }
    redis::pipe()
        .atomic()
        .add_command(hset)
        .ignore()
        .cmd("EXPIRE")
        .arg(key)
        .arg(86_400)
        .ignore()
        .query(con)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, name: &str) -> T {
    match args.get(i).map(|s| s.parse::<T>()) {
        Some(Ok(v)) => v,
        _ => {
            eprintln!("redis-guest: argument {i} ({name}) missing or invalid; see the module docs");
            std::process::exit(2);
        }
    }
}

fn failed(op: &str, e: impl std::fmt::Display) -> Value {
    json!({"op": op, "status": 1, "error": e.to_string()})
}

pub fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let op: String = arg(&args, 0, "operation");
    let (url, chain, size): (String, String, usize) = (
        arg(&args, 1, "redis-url"),
        arg(&args, 2, "chain"),
        arg(&args, 3, "size"),
    );
    let key = format!("skylark:bundle:{chain}");
    let out = match op.as_str() {
        "put" => {
            let fields = vec![("t".to_string(), probe::pattern(size, 1))];
            let t = Instant::now();
            let r = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut con| put(&mut con, &key, &fields));
            let ms = t.elapsed().as_secs_f64() * 1e3;
            match r {
                Ok(()) => json!({"op": "put", "status": 0, "ms": ms}),
                Err(e) => failed("put", e),
            }
        }
        "bench" => {
            let (n_fields, iterations): (usize, usize) =
                (arg(&args, 4, "fields"), arg(&args, 5, "iterations"));
            let fields: Vec<(String, Vec<u8>)> = (0..n_fields)
                .map(|i| (format!("f{i}"), probe::pattern(size, i as u64)))
                .collect();
            let con = redis::Client::open(url.as_str()).and_then(|c| c.get_connection());
            match con {
                Err(e) => failed("bench", e),
                Ok(mut con) => {
                    let mut samples = Vec::with_capacity(iterations);
                    let mut error = None;
                    for _ in 0..iterations {
                        let t = Instant::now();
                        if let Err(e) = put(&mut con, &key, &fields) {
                            error = Some(e);
                            break;
                        }
                        samples.push(t.elapsed().as_nanos() as u64);
                    }
                    match error {
                        Some(e) => failed("bench", e),
                        None => json!({"op": "bench", "status": 0, "kind": "put", "size": size,
                                       "fields": n_fields, "samples_ns": samples}),
                    }
                }
            }
        }
        other => {
            eprintln!("redis-guest: unknown operation {other:?} (put, bench)");
            std::process::exit(2);
        }
    };
    println!("{out}");
}
