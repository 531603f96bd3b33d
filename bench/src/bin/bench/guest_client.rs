//! The baseline a WasmEdge user would pick instead of the plugin: `tests/guests/redis-guest`,
//! a Redis client inside the guest (`redis_wasi` over WasmEdge's sockets) doing
//! `MULTI{HSET,EXPIRE}/EXEC`, AOT-compiled, run without the plugin: warm puts on one
//! connection, and the first put of a fresh process (connecting included, as a guest
//! that holds no connection must).

use skylark_testkit::{chain_id, Guest};
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(600);

fn run(module: &Path, url: &str, args: &[String]) -> serde_json::Value {
    let run = Guest::at(module, url)
        .env_remove("WASMEDGE_PLUGIN_PATH")
        .args(args)
        .run(TIMEOUT);
    run.assert_success();
    let out = run.json();
    assert_eq!(
        out["status"], 0,
        "redis-guest {args:?} failed: {out}\nstderr:\n{}",
        run.stderr
    );
    out
}

/// `warmup + n` warm puts; returns the last `n` in nanoseconds.
pub fn warm(
    module: &Path,
    url: &str,
    size: usize,
    fields: usize,
    warmup: usize,
    n: usize,
) -> Vec<u64> {
    let args = [
        "bench".to_string(),
        url.to_string(),
        chain_id("redis-guest"),
        size.to_string(),
        fields.to_string(),
        (warmup + n).to_string(),
    ];
    let out = run(module, url, &args);
    let samples: Vec<u64> = out["samples_ns"]
        .as_array()
        .unwrap_or_else(|| panic!("no samples_ns in {out}"))
        .iter()
        .map(|v| v.as_u64().unwrap_or_else(|| panic!("bad sample {v}")))
        .collect();
    assert_eq!(samples.len(), warmup + n, "wrong sample count: {out}");
    samples[warmup..].to_vec()
}

/// `n` fresh processes, one put each; returns each one's time in nanoseconds.
pub fn first_puts(module: &Path, url: &str, size: usize, n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| {
            let args = [
                "put".to_string(),
                url.to_string(),
                chain_id("redis-guest"),
                size.to_string(),
            ];
            let out = run(module, url, &args);
            let ms = out["ms"]
                .as_f64()
                .unwrap_or_else(|| panic!("no ms in {out}"));
            (ms * 1e6).round() as u64
        })
        .collect()
}
