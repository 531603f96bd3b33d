//! `alarm`: last step of the Earth-observation workflow. Fetches the chain's bundle in one
//! round trip, reads the `Detections` that `detect` stored, raises an alarm if there are at
//! least `--min-detections` of them, and stores the decision in field `alarm`.
//!
//! With `--inputs detect,detect2` it reads several detections (from detect run twice under
//! two task names) and decides on the largest count.
//!
//! Usage: `alarm <chain_id> [--min-detections N] [--inputs TASKS] [--dest NODE]
//! [--policy P] [--max-latency-ms MS] [--state bundled|single] [--wait-inputs-ms MS]`
//! (with `--wait-inputs-ms` the join waits, at most MS, for inputs not yet put: it may
//! start before its predecessors); prints one JSON line
//! `{"function":"alarm","chain":..,"alarm":bool,"detections":..,"min_detections":..,
//!   "bundle_fields":..,"source":{"tier":..,"node":..},"get_ms":..,"put_ms":..,"total_ms":..}`.

use eo_common::cli::{self, Args, Spec};
use eo_common::state::{self, Layout};
use eo_common::{AlarmDecision, Detections, TASK_ALARM, TASK_DETECT};
use serde_json::{json, Value};
use std::time::Instant;

const SPEC: Spec = Spec {
    name: "alarm",
    usage: "alarm <chain_id> [--min-detections N] [--inputs TASKS] [--dest NODE] [--policy P] [--max-latency-ms MS]\n       [--state bundled|single] [--wait-inputs-ms MS]   (N default 1; TASKS comma-separated, default detect)",
    flags: &[
        "min-detections",
        "inputs",
        "dest",
        "policy",
        "max-latency-ms",
        "state",
        "wait-inputs-ms",
    ],
};

fn run(args: &Args) -> Result<Value, String> {
    let start = Instant::now();
    let chain = args.chain();
    skylark_guest::validate_id(chain).map_err(|e| format!("chain id: {e}"))?;
    let min_detections: u32 = args.number("min-detections", 1)?;
    let inputs: Vec<&str> = args
        .value("inputs")
        .unwrap_or(TASK_DETECT)
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if inputs.is_empty() {
        return Err("--inputs names no task".into());
    }
    let layout = Layout::from_args(args)?;

    let read = state::read(layout, chain, &inputs, &state::get_options(args)?)?;
    let mut detections = 0;
    for task in &inputs {
        let bytes = read.field(chain, task)?;
        let d: Detections = skylark_guest::decode_value(bytes)
            .map_err(|e| format!("field {task:?} of chain {chain} is not a Detections: {e}"))?;
        detections = detections.max(d.count);
    }

    let decision = AlarmDecision::decide(detections, min_detections);
    eprintln!(
        "alarm: {detections} detection(s), threshold {min_detections}: {}",
        if decision.alarm { "ALARM" } else { "no alarm" }
    );

    let opts = cli::put_options(args, start)?;
    let put_ms = state::write_value(layout, chain, TASK_ALARM, &decision, &opts)?;

    let mut out = json!({
        "function": "alarm",
        "chain": chain,
        "alarm": decision.alarm,
        "detections": detections,
        "min_detections": min_detections,
        "put_ms": put_ms,
        "total_ms": cli::ms(start.elapsed()),
    });
    cli::merge(&mut out, read.report());
    Ok(out)
}

fn main() {
    cli::main(&SPEC, run)
}
