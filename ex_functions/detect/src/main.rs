//! `detect`: second step of the Earth-observation workflow. Fetches the chain's bundle in
//! one round trip, finds the bright regions (4-connected components) of the image that
//! `preprocess` stored, and stores them as a `Detections` value in field `detect`.
//!
//! Usage: `detect <chain_id> [--threshold T] [--task NAME] [--dest NODE] [--policy P]
//! [--max-latency-ms MS] [--successor-in-ms MS] [--state bundled|single]`; `--task` names
//! the field it writes (default `detect`; a workflow may run detect twice under two names,
//! e.g. two detectors of a fan-out whose join starts when the slower one is done, which
//! `--successor-in-ms` tells the election). Prints one JSON line
//! `{"function":"detect","chain":..,"detections":..,"image_bytes":..,"bundle_fields":..,
//!   "source":{"tier":..,"node":..},"get_ms":..,"compute_ms":..,"put_ms":..,"total_ms":..}`.

use eo_common::cli::{self, timed, Args, Spec};
use eo_common::state::{self, Layout};
use eo_common::{image, Detections, TASK_DETECT, TASK_PREPROCESS};
use serde_json::{json, Value};
use std::time::Instant;

const SPEC: Spec = Spec {
    name: "detect",
    usage: "detect <chain_id> [--threshold T] [--task NAME] [--dest NODE] [--policy P] [--max-latency-ms MS]\n       [--successor-in-ms MS] [--state bundled|single]   (T in 0..=255, default 128; NAME default detect)",
    flags: &[
        "threshold",
        "task",
        "dest",
        "policy",
        "max-latency-ms",
        "successor-in-ms",
        "state",
    ],
};

fn run(args: &Args) -> Result<Value, String> {
    let start = Instant::now();
    let chain = args.chain();
    skylark_guest::validate_id(chain).map_err(|e| format!("chain id: {e}"))?;
    let threshold: u8 = args.number("threshold", image::DEFAULT_THRESHOLD)?;
    let task = args.value("task").unwrap_or(TASK_DETECT);
    skylark_guest::validate_id(task).map_err(|e| format!("--task: {e}"))?;
    let layout = Layout::from_args(args)?;

    let read = state::read(
        layout,
        chain,
        &[TASK_PREPROCESS],
        &state::get_options(args)?,
    )?;
    let img = read.field(chain, TASK_PREPROCESS)?;

    let (boxes, compute_ms) =
        timed(|| image::find_regions(img, threshold, image::MIN_REGION_PIXELS));
    let detections = Detections {
        count: u32::try_from(boxes.len()).map_err(|_| "too many regions".to_string())?,
        boxes,
        image_bytes: img.len() as u64,
    };
    eprintln!(
        "{task}: {} region(s) in a {}-byte image from {:?}",
        detections.count,
        img.len(),
        read.sources
    );

    let opts = cli::put_options(args, start)?;
    let put_ms = state::write_value(layout, chain, task, &detections, &opts)?;

    let mut out = json!({
        "function": "detect",
        "task": task,
        "chain": chain,
        "detections": detections.count,
        "image_bytes": detections.image_bytes,
        "threshold": threshold,
        "compute_ms": compute_ms,
        "put_ms": put_ms,
        "total_ms": cli::ms(start.elapsed()),
    });
    cli::merge(&mut out, read.report());
    Ok(out)
}

fn main() {
    cli::main(&SPEC, run)
}
