//! `detect`: second step of the Earth-observation workflow. Fetches the chain's bundle in
//! one round trip, finds the bright regions (4-connected components) of the image that
//! `preprocess` stored, and stores them as a `Detections` value in field `detect`.
//!
//! Usage: `detect <chain_id> [--threshold T]`; prints one JSON line
//! `{"function":"detect","chain":..,"detections":..,"image_bytes":..,"bundle_fields":..,
//!   "source":{"tier":..,"node":..},"get_ms":..,"compute_ms":..,"put_ms":..,"total_ms":..}`.

use eo_common::cli::{self, timed, Args, Spec};
use eo_common::{image, Detections, TASK_DETECT, TASK_PREPROCESS};
use serde_json::{json, Value};
use std::time::Instant;

const SPEC: Spec = Spec {
    name: "detect",
    usage: "detect <chain_id> [--threshold T] [--dest NODE] [--policy P] [--max-latency-ms MS]   (T in 0..=255, default 128)",
    flags: &["threshold", "dest", "policy", "max-latency-ms"],
};

fn run(args: &Args) -> Result<Value, String> {
    let start = Instant::now();
    let chain = args.chain();
    skylark_guest::validate_id(chain).map_err(|e| format!("chain id: {e}"))?;
    let threshold: u8 = args.number("threshold", image::DEFAULT_THRESHOLD)?;

    let (bundle, get_ms) = timed(|| skylark_guest::get_bundle(chain));
    let bundle = bundle.map_err(|e| format!("fetching the bundle of chain {chain}: {e}"))?;
    let img = bundle.get(TASK_PREPROCESS).ok_or_else(|| {
        format!(
            "the bundle of chain {chain} has no field {TASK_PREPROCESS:?} (fields: {:?}); run preprocess first",
            bundle.tasks().collect::<Vec<_>>()
        )
    })?;

    let (boxes, compute_ms) =
        timed(|| image::find_regions(img, threshold, image::MIN_REGION_PIXELS));
    let detections = Detections {
        count: u32::try_from(boxes.len()).map_err(|_| "too many regions".to_string())?,
        boxes,
        image_bytes: img.len() as u64,
    };
    eprintln!(
        "detect: {} region(s) in a {}-byte image from {:?} store of node {:?}",
        detections.count,
        img.len(),
        bundle.source().tier,
        bundle.source().node
    );

    let opts = cli::put_options(args, start)?;
    let (stored, put_ms) =
        timed(|| skylark_guest::put_value_with(chain, TASK_DETECT, &detections, &opts));
    stored.map_err(|e| format!("storing field {TASK_DETECT:?} of chain {chain}: {e}"))?;

    Ok(json!({
        "function": "detect",
        "chain": chain,
        "detections": detections.count,
        "image_bytes": detections.image_bytes,
        "threshold": threshold,
        "bundle_fields": bundle.len(),
        "source": bundle.source(),
        "get_ms": get_ms,
        "compute_ms": compute_ms,
        "put_ms": put_ms,
        "total_ms": cli::ms(start.elapsed()),
    }))
}

fn main() {
    cli::main(&SPEC, run)
}
