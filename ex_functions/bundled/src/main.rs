//! `bundled`: measures function state fusion. Simulates `N` functions `f0..f(N-1)` of one
//! workflow, each reading all its predecessors' state and then storing its own, and
//! compares two layouts of that state:
//!
//! - **bundled**: all state in one bundle (chain `<chain_id>`, field `f{i}`); function `i`
//!   reads every predecessor with one `get_bundle` (f0 finds none), then puts its field.
//!   `2N` storage round trips.
//! - **single**: one one-field bundle per function (chain `<chain_id>-f{i}`, field `f{i}`);
//!   function `i` needs `i` separate `get_bundle` calls, then puts its field.
//!   `N(N-1)/2 + N` storage round trips.
//!
//! Every function checks that it saw every predecessor's bytes intact. One `get_bundle` of
//! a chain that does not exist warms the connection up before anything is timed.
//!
//! Usage: `bundled <chain_id> [--functions N] [--size BYTES] [--mode bundled|single|both]
//! [--seed N]`; prints one JSON line (see [`report`]). Use a fresh chain id per run.

use eo_common::cli::{self, round_ms, timed, Args, Spec};
use eo_common::image::XorShift64;
use serde_json::{json, Value};
use skylark_guest::Bundle;
use std::time::Instant;

const SPEC: Spec = Spec {
    name: "bundled",
    usage: "bundled <chain_id> [--functions N] [--size BYTES] [--mode bundled|single|both] [--seed N]\n       (defaults: 5 functions, 65536 bytes each, both modes, seed 1)",
    flags: &["functions", "size", "mode", "seed"],
};

const DEFAULT_FUNCTIONS: usize = 5;
const MAX_FUNCTIONS: usize = 1000;
const DEFAULT_SIZE: usize = 64 * 1024;
const MAX_SIZE: usize = 1 << 30;

/// Which layouts to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bundled,
    Single,
    Both,
}

impl Mode {
    fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "bundled" => Ok(Mode::Bundled),
            "single" => Ok(Mode::Single),
            "both" => Ok(Mode::Both),
            other => Err(format!(
                "--mode {other:?}: expected bundled, single or both"
            )),
        }
    }
}

/// Storage statistics of one layout.
#[derive(Debug, Default)]
struct Stats {
    gets: u64,
    puts: u64,
    /// Summed wall time of the get and put calls, in ms.
    storage_ms: f64,
    /// Storage time per function, in ms.
    per_function_ms: Vec<f64>,
    /// Field bytes delivered by all gets.
    bytes_read: u64,
    /// Wall time of the whole mode, including verification, in ms.
    total_ms: f64,
}

impl Stats {
    fn round_trips(&self) -> u64 {
        self.gets + self.puts
    }

    fn to_json(&self) -> Value {
        json!({
            "round_trips": self.round_trips(),
            "gets": self.gets,
            "puts": self.puts,
            "storage_ms": round_ms(self.storage_ms),
            "per_function_storage_ms": self.per_function_ms.iter().copied().map(round_ms).collect::<Vec<_>>(),
            "bytes_read": self.bytes_read,
            "total_ms": self.total_ms,
            "verified": true,
        })
    }
}

/// The state function `i` produces: `size` deterministic pseudo-random bytes.
fn payload(seed: u64, i: usize, size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size];
    XorShift64::new(seed.wrapping_mul(1_000_003).wrapping_add(i as u64)).fill(&mut out);
    out
}

fn task(i: usize) -> String {
    format!("f{i}")
}

/// Checks that `bundle` holds predecessor `j`'s state, byte for byte.
fn verify(bundle: &Bundle, j: usize, expected: &[u8], reader: usize) -> Result<(), String> {
    let t = task(j);
    match bundle.get(&t) {
        Some(got) if got == expected => Ok(()),
        Some(got) => Err(format!(
            "f{reader}: field {t:?} of chain {} differs from what f{j} stored ({} bytes, expected {}); use a fresh chain id per run",
            bundle.chain(),
            got.len(),
            expected.len()
        )),
        None => Err(format!(
            "f{reader}: field {t:?} missing from chain {} (fields: {:?})",
            bundle.chain(),
            bundle.tasks().collect::<Vec<_>>()
        )),
    }
}

/// All state in one bundle: function `i` makes one get and one put.
fn run_bundled(chain: &str, payloads: &[Vec<u8>]) -> Result<Stats, String> {
    let start = Instant::now();
    let mut stats = Stats::default();
    for (i, own) in payloads.iter().enumerate() {
        let (got, get_ms) = timed(|| skylark_guest::try_get_bundle(chain));
        stats.gets += 1;
        let got = got.map_err(|e| format!("bundled f{i}: get_bundle({chain}): {e}"))?;
        match &got {
            Some(bundle) => {
                stats.bytes_read += bundle.value_bytes() as u64;
                for (j, expected) in payloads.iter().enumerate().take(i) {
                    verify(bundle, j, expected, i)?;
                }
            }
            None if i == 0 => {} // the first function starts the bundle
            None => {
                return Err(format!(
                    "bundled f{i}: chain {chain} has no bundle although f0..f{} stored state",
                    i - 1
                ))
            }
        }
        let (stored, put_ms) = timed(|| skylark_guest::put(chain, &task(i), own));
        stats.puts += 1;
        stored.map_err(|e| format!("bundled f{i}: put({chain}, {}): {e}", task(i)))?;
        stats.storage_ms += get_ms + put_ms;
        stats.per_function_ms.push(get_ms + put_ms);
    }
    stats.total_ms = cli::ms(start.elapsed());
    Ok(stats)
}

/// One bundle per function: function `i` makes `i` gets and one put.
fn run_single(chain: &str, payloads: &[Vec<u8>]) -> Result<Stats, String> {
    let start = Instant::now();
    let mut stats = Stats::default();
    for (i, own) in payloads.iter().enumerate() {
        let mut fn_ms = 0.0;
        for (j, expected) in payloads.iter().enumerate().take(i) {
            let pred_chain = format!("{chain}-f{j}");
            let (got, get_ms) = timed(|| skylark_guest::get_bundle(&pred_chain));
            stats.gets += 1;
            fn_ms += get_ms;
            let bundle = got.map_err(|e| format!("single f{i}: get_bundle({pred_chain}): {e}"))?;
            stats.bytes_read += bundle.value_bytes() as u64;
            verify(&bundle, j, expected, i)?;
        }
        let own_chain = format!("{chain}-f{i}");
        let (stored, put_ms) = timed(|| skylark_guest::put(&own_chain, &task(i), own));
        stats.puts += 1;
        stored.map_err(|e| format!("single f{i}: put({own_chain}, {}): {e}", task(i)))?;
        fn_ms += put_ms;
        stats.storage_ms += fn_ms;
        stats.per_function_ms.push(fn_ms);
    }
    stats.total_ms = cli::ms(start.elapsed());
    Ok(stats)
}

/// The parameters of a run, as reported.
struct Setup<'a> {
    chain: &'a str,
    functions: usize,
    size: usize,
    mode: &'a str,
    warmup_ms: f64,
}

/// `100 * (single - bundled) / single`, rounded to 0.01; `None` without a baseline.
fn saving_pct(bundled: f64, single: f64) -> Option<f64> {
    (single > 0.0).then(|| ((single - bundled) / single * 10_000.0).round() / 100.0)
}

/// The JSON line:
/// `{"function":"bundled","chain":..,"functions":N,"size":BYTES,"mode":..,"warmup_ms":..,
///   "bundled":{STATS}|null,"single":{STATS}|null,
///   "saving_pct":..|null,"round_trip_saving_pct":..|null,"total_ms":..}`
/// with `STATS = {"round_trips","gets","puts","storage_ms","per_function_storage_ms",
/// "bytes_read","total_ms","verified"}`; the savings compare bundled against single and
/// are null unless both modes ran.
fn report(setup: &Setup, bundled: Option<&Stats>, single: Option<&Stats>, total_ms: f64) -> Value {
    let (saving, rt_saving) = match (bundled, single) {
        (Some(b), Some(s)) => (
            saving_pct(b.storage_ms, s.storage_ms),
            saving_pct(b.round_trips() as f64, s.round_trips() as f64),
        ),
        _ => (None, None),
    };
    json!({
        "function": "bundled",
        "chain": setup.chain,
        "functions": setup.functions,
        "size": setup.size,
        "mode": setup.mode,
        "warmup_ms": setup.warmup_ms,
        "bundled": bundled.map(Stats::to_json),
        "single": single.map(Stats::to_json),
        "saving_pct": saving,
        "round_trip_saving_pct": rt_saving,
        "total_ms": total_ms,
    })
}

fn run(args: &Args) -> Result<Value, String> {
    let start = Instant::now();
    let chain = args.chain();
    let functions = args.number_in("functions", DEFAULT_FUNCTIONS, 1, MAX_FUNCTIONS)?;
    let size = args.number_in("size", DEFAULT_SIZE, 0, MAX_SIZE)?;
    let seed: u64 = args.number("seed", 1)?;
    let mode_name = args.value("mode").unwrap_or("both");
    let mode = Mode::parse(mode_name)?;

    skylark_guest::validate_id(chain).map_err(|e| format!("chain id: {e}"))?;
    if mode != Mode::Bundled {
        let longest = format!("{chain}-f{}", functions - 1);
        skylark_guest::validate_id(&longest)
            .map_err(|e| format!("single mode needs chain ids like {longest:?}: {e}"))?;
    }

    let payloads: Vec<Vec<u8>> = (0..functions).map(|i| payload(seed, i, size)).collect();

    // Warm-up: establish the host's store connection before anything is timed.
    let warm_chain = format!("{}-warmup", &chain[..chain.len().min(100)]);
    let (warm, warmup_ms) = timed(|| skylark_guest::try_get_bundle(&warm_chain));
    warm.map_err(|e| format!("warm-up get_bundle({warm_chain}): {e}"))?;

    let bundled = match mode {
        Mode::Bundled | Mode::Both => Some(run_bundled(chain, &payloads)?),
        Mode::Single => None,
    };
    let single = match mode {
        Mode::Single | Mode::Both => Some(run_single(chain, &payloads)?),
        Mode::Bundled => None,
    };
    for (name, stats) in [("bundled", &bundled), ("single", &single)] {
        if let Some(s) = stats {
            eprintln!(
                "bundled: {name:>7}: {} round trips, {:.3} ms storage time, {} bytes read",
                s.round_trips(),
                s.storage_ms,
                s.bytes_read
            );
        }
    }
    let setup = Setup {
        chain,
        functions,
        size,
        mode: mode_name,
        warmup_ms,
    };
    Ok(report(
        &setup,
        bundled.as_ref(),
        single.as_ref(),
        cli::ms(start.elapsed()),
    ))
}

fn main() {
    cli::main(&SPEC, run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn savings() {
        assert_eq!(saving_pct(80.0, 100.0), Some(20.0));
        assert_eq!(saving_pct(1.0, 3.0), Some(66.67));
        assert_eq!(saving_pct(1.0, 0.0), None);
    }

    #[test]
    fn payloads_differ_per_function_and_repeat_per_seed() {
        assert_eq!(payload(1, 2, 100), payload(1, 2, 100));
        assert_ne!(payload(1, 2, 100), payload(1, 3, 100));
        assert_eq!(payload(1, 0, 0).len(), 0);
    }

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("both"), Ok(Mode::Both));
        assert!(Mode::parse("fused").is_err());
    }

    #[test]
    fn verification_spots_damage() {
        use skylark_guest::abi::wire::{encode_bundle, Source};
        let enc = encode_bundle("c", &Source::default(), [("f0", &b"abc"[..])]).unwrap();
        let b = Bundle::decode(&enc).unwrap();
        assert!(verify(&b, 0, b"abc", 1).is_ok());
        assert!(verify(&b, 0, b"abd", 1).unwrap_err().contains("differs"));
        assert!(verify(&b, 1, b"abc", 2).unwrap_err().contains("missing"));
    }
}
