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

/// The native floor of a first request, for the first-put rows: the modes of
/// [`native_first_requests`] and how long each leaves its new connection idle between
/// its `PING` and the timed request.
pub const NATIVE_IDLE: [(&str, Duration); 3] = [
    ("native, new connection", Duration::ZERO),
    (
        "native, new connection, idle 5 ms",
        Duration::from_millis(5),
    ),
    (
        "native, new connection, idle 20 ms",
        Duration::from_millis(20),
    ),
];

/// Opens `n` new native connections to `url` (as the plugin's: `TCP_NODELAY`, one `PING`
/// answered, as the plugin's start-up does before the guest runs), leaves each idle for
/// `idle`, and times its first `MULTI{HSET,EXPIRE}/EXEC` of `cmds`; returns the times in
/// nanoseconds. A fresh `wasmedge` process's first put meets the same new connection and
/// a store that has been idle while the instance started: this is what any client pays
/// for it on this machine.
pub fn native_first_requests(
    url: &str,
    cmds: &[&redis::Cmd],
    n: usize,
    idle: Duration,
) -> Vec<u64> {
    let mut buf = Vec::new();
    (0..n)
        .map(|_| {
            let mut conn = crate::native::connect(url);
            let _: String = redis::cmd("PING").query(&mut conn).expect("native PING");
            std::thread::sleep(idle);
            let t = std::time::Instant::now();
            crate::native::send(&mut conn, &mut buf, cmds, true);
            t.elapsed().as_nanos() as u64
        })
        .collect()
}
