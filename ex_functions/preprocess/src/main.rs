//! `preprocess`: first step of the Earth-observation workflow. Synthesises a deterministic
//! grayscale "satellite image", preprocesses it (3x3 box blur + contrast stretch) and stores
//! the result as field `preprocess` of the chain's bundle.
//!
//! Usage: `preprocess <chain_id> [--size BYTES] [--seed N] [--dest NODE | --dests NODE,NODE]
//! [--policy P] [--max-latency-ms MS] [--successor-in-ms MS] [--state bundled|single]`;
//! `--dests` names the nodes of several successors (a fan-out, put option `destinations`:
//! the state is placed for each of them). Prints one JSON line
//! `{"function":"preprocess","chain":..,"bytes":..,"seed":..,"compute_ms":..,"put_ms":..,"total_ms":..}`.

use eo_common::cli::{self, timed, Args, Spec};
use eo_common::state::{self, Layout};
use eo_common::{image, TASK_PREPROCESS};
use serde_json::{json, Value};
use std::time::Instant;

const SPEC: Spec = Spec {
    name: "preprocess",
    usage: "preprocess <chain_id> [--size BYTES] [--seed N] [--dest NODE | --dests NODE,NODE] [--policy P]\n       [--max-latency-ms MS] [--successor-in-ms MS] [--state bundled|single]   (default size 1048576, seed 1)",
    flags: &[
        "size",
        "seed",
        "dest",
        "dests",
        "policy",
        "max-latency-ms",
        "successor-in-ms",
        "state",
    ],
};

const DEFAULT_SIZE: usize = 1 << 20;
/// Upper bound on the image size; the host enforces its own value limit too.
const MAX_SIZE: usize = 1 << 30;

fn run(args: &Args) -> Result<Value, String> {
    let start = Instant::now();
    let chain = args.chain();
    skylark_guest::validate_id(chain).map_err(|e| format!("chain id: {e}"))?;
    let size = args.number_in("size", DEFAULT_SIZE, 1, MAX_SIZE)?;
    let seed: u64 = args.number("seed", 1)?;

    let (processed, compute_ms) = timed(|| image::preprocess(&image::synthesize(size, seed)));
    eprintln!(
        "preprocess: {size}-byte image (seed {seed}) processed in {compute_ms} ms; storing it for chain {chain}"
    );

    let layout = Layout::from_args(args)?;
    let opts = cli::put_options(args, start)?;
    let put_ms = state::write(layout, chain, TASK_PREPROCESS, &processed, &opts)?;

    Ok(json!({
        "function": "preprocess",
        "chain": chain,
        "bytes": processed.len(),
        "seed": seed,
        "compute_ms": compute_ms,
        "put_ms": put_ms,
        "total_ms": cli::ms(start.elapsed()),
    }))
}

fn main() {
    cli::main(&SPEC, run)
}
