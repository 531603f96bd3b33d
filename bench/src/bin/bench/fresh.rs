//! The put a function really makes: the first `skylark_put` of a fresh `wasmedge`
//! process, timed inside the guest (`probe put`, its `ms`), one process per sample.

use skylark_testkit::{chain_id, Guest};
use std::path::Path;
use std::time::Duration;

/// Deadline of one fresh process (start, one put, exit flush of its propagation).
const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `n` fresh processes of `module`, each putting one `size`-byte value into a new
/// chain of the store at `url` with the plugin configured by `env`; returns each
/// process's guest-timed first put in nanoseconds. Panics with the guest's output if a
/// run fails.
pub fn first_puts(
    module: &Path,
    url: &str,
    env: &[(String, String)],
    size: usize,
    n: usize,
) -> Vec<u64> {
    (0..n)
        .map(|i| {
            let chain = chain_id("fresh");
            let mut guest = Guest::at(module, url).args([
                "put",
                &chain,
                "t",
                &size.to_string(),
                &i.to_string(),
            ]);
            for (k, v) in env {
                guest = guest.env(k, v);
            }
            let run = guest.run(TIMEOUT);
            run.assert_success();
            let out = run.json();
            assert_eq!(
                out["status"], 0,
                "fresh put failed: {out}\nstderr:\n{}",
                run.stderr
            );
            let ms = out["ms"]
                .as_f64()
                .unwrap_or_else(|| panic!("no ms in {out}"));
            (ms * 1e6).round() as u64
        })
        .collect()
}
