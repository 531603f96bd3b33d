//! What loading the plugin costs a `wasmedge` process: the wall time from spawn to exit
//! (under GNU time, which adds the same fork to every setup) and the peak RSS of a
//! trivial AOT guest (`hello`, which imports nothing from the
//! plugin) with no plugin, with the plugin and propagation off, and with the plugin and
//! propagation on; the setups take turns, run by run.

use skylark_testkit::guest::wasmedge_command;
use skylark_testkit::percentile;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// One setup's runs.
pub struct LoadRow {
    pub setup: &'static str,
    pub runs: usize,
    /// Median and 90th percentile wall time, in nanoseconds.
    pub wall_ns: (u64, u64),
    /// Median peak RSS, in KiB.
    pub rss_kib: u64,
}

/// Runs `cmd` under GNU time (`/usr/bin/time -f %M`), which reports the peak RSS of the
/// process it forks itself: the kernel counts a process's RSS before its `exec` in its
/// peak, so a process forked by this (large) bench would report the bench's size.
/// Returns (wall ns, peak RSS KiB).
fn run(cmd: Command) -> (u64, u64) {
    let rss_file = std::env::temp_dir().join(format!("skylark-load-{}.rss", std::process::id()));
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-f").arg("%M").arg("-o").arg(&rss_file);
    timed.arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let started = Instant::now();
    let status = timed
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!("run /usr/bin/time ({e}): install `time` (scripts/setup-deps.sh)")
        });
    let wall = started.elapsed().as_nanos() as u64;
    assert!(status.success(), "wasmedge exited with {status:?}");
    let rss = std::fs::read_to_string(&rss_file).unwrap_or_default();
    let _ = std::fs::remove_file(&rss_file);
    let rss = rss
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from /usr/bin/time: {rss:?}"));
    (wall, rss)
}

/// Runs `hello` (`module`) `n` times per setup, interleaved. `url` is the node-local
/// store; `on` the plugin settings of the propagation-on setup.
pub fn measure(n: usize, module: &Path, url: &str, on: &[(String, String)]) -> Vec<LoadRow> {
    let setups: [&'static str; 3] = [
        "no plugin",
        "plugin, propagation off",
        "plugin, propagation on",
    ];
    let mut samples: Vec<Vec<(u64, u64)>> = vec![Vec::new(); setups.len()];
    for _ in 0..n {
        for (i, setup) in setups.iter().enumerate() {
            let mut cmd = wasmedge_command(url);
            match i {
                0 => {
                    cmd.env_remove("WASMEDGE_PLUGIN_PATH");
                }
                1 => {
                    cmd.env("SKYLARK_PROPAGATION", "off");
                }
                _ => {
                    cmd.envs(on.iter().map(|(k, v)| (k, v)));
                }
            }
            cmd.arg(module);
            let s = run(cmd);
            assert!(s.0 > 0, "{setup}: no time measured");
            samples[i].push(s);
        }
    }
    setups
        .iter()
        .zip(samples)
        .map(|(setup, s)| {
            let mut wall: Vec<u64> = s.iter().map(|x| x.0).collect();
            let mut rss: Vec<u64> = s.iter().map(|x| x.1).collect();
            wall.sort_unstable();
            rss.sort_unstable();
            LoadRow {
                setup,
                runs: n,
                wall_ns: (
                    percentile(&wall, 50.0).unwrap_or(0),
                    percentile(&wall, 90.0).unwrap_or(0),
                ),
                rss_kib: percentile(&rss, 50.0).unwrap_or(0),
            }
        })
        .collect()
}

/// The rows as a Markdown table, with the differences to the run without the plugin.
pub fn table(rows: &[LoadRow]) -> String {
    let Some(base) = rows.first() else {
        return String::new();
    };
    let mut s = String::from(
        "| `wasmedge hello-aot.wasm` | runs | wall median ms | wall p90 ms | median − no plugin ms | peak RSS median MiB | RSS − no plugin MiB |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:+.1} | {:.1} | {:+.1} |\n",
            r.setup,
            r.runs,
            r.wall_ns.0 as f64 / 1e6,
            r.wall_ns.1 as f64 / 1e6,
            (r.wall_ns.0 as f64 - base.wall_ns.0 as f64) / 1e6,
            r.rss_kib as f64 / 1024.0,
            (r.rss_kib as f64 - base.rss_kib as f64) / 1024.0,
        ));
    }
    s
}
