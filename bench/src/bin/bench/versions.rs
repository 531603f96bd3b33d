//! The rows of ABI version 2's put (`--versions N`): the plain `skylark_put`, the same put
//! through `skylark_put_v2` (which returns the version), a compare-and-swap put
//! (`if_version` = the version the previous put returned) and the repeat of an
//! idempotent put (answered from its record: nothing written, no job), one 1 KiB field,
//! probe guest AOT-compiled, propagation off and the default put (propagation on); every
//! row measured `rounds` times, interleaved, in one run.

use crate::{fmt_us, stats, Setup};
use skylark_testkit::{chain_id, Guest, Redis};
use std::time::Duration;

/// The value size of the rows.
const SIZE: usize = 1024;

/// The variants measured: label and the probe's extra arguments.
const VARIANTS: [(&str, &[&str]); 4] = [
    ("skylark_put", &[]),
    ("skylark_put_v2", &["--v2"]),
    ("skylark_put_v2 if_version (CAS)", &["--v2", "--cas"]),
    (
        "skylark_put_v2 idempotent repeat",
        &["--v2", "--idem", "bench-key"],
    ),
];

/// One probe `bench put` run with `extra` arguments; the samples after the warm-up.
fn run(setup: &Setup, redis: &Redis, extra: &[&str], warmup: usize, n: usize) -> Vec<u64> {
    let chain = chain_id("bench-v2");
    let mut guest = Guest::at(&setup.module, &setup.url)
        .args(["bench", "put", &chain, &SIZE.to_string(), "1"])
        .args([(warmup + n).to_string()])
        .args(extra);
    for (k, v) in &setup.env {
        guest = guest.env(k, v);
    }
    let run = guest.run(Duration::from_secs(600));
    run.assert_success();
    let out = run.json();
    assert_eq!(
        out["status"], 0,
        "{} {extra:?}: {out}\nstderr:\n{}",
        setup.mode, run.stderr
    );
    let samples: Vec<u64> = out["samples_ns"]
        .as_array()
        .unwrap_or_else(|| panic!("no samples in {out}"))
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    assert_eq!(samples.len(), warmup + n, "{out}");
    redis::cmd("DEL")
        .arg(format!("skylark:bundle:{chain}"))
        .query::<()>(&mut redis.conn())
        .expect("DEL the guest's bundle");
    samples[warmup..].to_vec()
}

/// Measures every variant on every setup, `rounds` times interleaved; a Markdown table.
pub fn table(setups: &[&Setup], redis: &Redis, n: usize, warmup: usize, rounds: usize) -> String {
    // (setup, variant) -> per-round medians and all samples.
    let mut medians = vec![vec![Vec::new(); VARIANTS.len()]; setups.len()];
    let mut all = vec![vec![Vec::new(); VARIANTS.len()]; setups.len()];
    for round in 0..rounds {
        eprintln!("[bench] versions round {}/{rounds}", round + 1);
        for (si, setup) in setups.iter().enumerate() {
            for (vi, (_, extra)) in VARIANTS.iter().enumerate() {
                let s = run(setup, redis, extra, warmup, n);
                medians[si][vi].push(stats(s.clone()).0);
                all[si][vi].extend(s);
            }
        }
    }
    let mut out = String::from(
        "| op | mode | size | iterations | median µs | rounds' medians µs | p99 µs | median ÷ skylark_put |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (si, setup) in setups.iter().enumerate() {
        let mut plain = None;
        for (vi, (label, _)) in VARIANTS.iter().enumerate() {
            let mut m = medians[si][vi].clone();
            m.sort_unstable();
            let median = m[m.len() / 2];
            let p99 = stats(std::mem::take(&mut all[si][vi])).1;
            let base = *plain.get_or_insert(median);
            out.push_str(&format!(
                "| {label} | {} | 1 KiB | {n} | {} | {}–{} | {} | {:.2}× |\n",
                setup.mode,
                fmt_us(median),
                fmt_us(m[0]),
                fmt_us(m[m.len() - 1]),
                fmt_us(p99),
                median as f64 / base as f64
            ));
        }
    }
    out
}
