//! `alarm`: last step of the Earth-observation workflow. Fetches the chain's bundle in one
//! round trip, reads the `Detections` that `detect` stored, raises an alarm if there are at
//! least `--min-detections` of them, and stores the decision in field `alarm`.
//!
//! Usage: `alarm <chain_id> [--min-detections N]`; prints one JSON line
//! `{"function":"alarm","chain":..,"alarm":bool,"detections":..,"min_detections":..,
//!   "bundle_fields":..,"source":{"tier":..,"node":..},"get_ms":..,"put_ms":..,"total_ms":..}`.

use eo_common::cli::{self, timed, Args, Spec};
use eo_common::{AlarmDecision, Detections, TASK_ALARM, TASK_DETECT};
use serde_json::{json, Value};
use std::time::Instant;

const SPEC: Spec = Spec {
    name: "alarm",
    usage: "alarm <chain_id> [--min-detections N] [--dest NODE] [--policy P] [--max-latency-ms MS]   (default 1)",
    flags: &["min-detections", "dest", "policy", "max-latency-ms"],
};

fn run(args: &Args) -> Result<Value, String> {
    let start = Instant::now();
    let chain = args.chain();
    skylark_guest::validate_id(chain).map_err(|e| format!("chain id: {e}"))?;
    let min_detections: u32 = args.number("min-detections", 1)?;

    let (bundle, get_ms) = timed(|| skylark_guest::get_bundle(chain));
    let bundle = bundle.map_err(|e| format!("fetching the bundle of chain {chain}: {e}"))?;
    let detections: Detections = bundle
        .load(TASK_DETECT)
        .map_err(|e| format!("reading field {TASK_DETECT:?} of chain {chain}: {e}"))?
        .ok_or_else(|| {
            format!(
                "the bundle of chain {chain} has no field {TASK_DETECT:?} (fields: {:?}); run detect first",
                bundle.tasks().collect::<Vec<_>>()
            )
        })?;

    let decision = AlarmDecision::decide(detections.count, min_detections);
    eprintln!(
        "alarm: {} detection(s), threshold {min_detections}: {}",
        detections.count,
        if decision.alarm { "ALARM" } else { "no alarm" }
    );

    let opts = cli::put_options(args, start)?;
    let (stored, put_ms) =
        timed(|| skylark_guest::put_value_with(chain, TASK_ALARM, &decision, &opts));
    stored.map_err(|e| format!("storing field {TASK_ALARM:?} of chain {chain}: {e}"))?;

    Ok(json!({
        "function": "alarm",
        "chain": chain,
        "alarm": decision.alarm,
        "detections": detections.count,
        "min_detections": min_detections,
        "bundle_fields": bundle.len(),
        "source": bundle.source(),
        "get_ms": get_ms,
        "put_ms": put_ms,
        "total_ms": cli::ms(start.elapsed()),
    }))
}

fn main() {
    cli::main(&SPEC, run)
}
