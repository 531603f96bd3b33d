//! `bench`: measures the guest-visible latency of `skylark_put` / `skylark_put_many` and
//! `skylark_get_bundle` (probe guest, interpreter and AOT; propagation off, and the
//! default put with propagation on; loopback TCP and a Unix socket) next to native
//! redis-rs commands and `redis-benchmark` on the same throw-away redis-server, plus the
//! first put of a fresh `wasmedge` process, and prints Markdown tables.
//!
//! ```text
//! cargo run --release -p skylark-bench --bin bench -- [--iterations 5000,2000,300] [--warmup-pct 10]
//!     [--rounds 3] [--fresh 20] [--sizes 1,64,1024] [--no-interp] [--load 40]
//!     [--versions N [--only-versions]] [--only-gets]
//! ```
//! `--iterations` gives the measured iterations for 1 KiB, 64 KiB and 1 MiB values; each
//! measurement runs `warmup-pct` percent more iterations first and discards them; every
//! group of rows is measured `rounds` times, interleaved, and reports the median of the
//! rounds' medians, their spread and the p99 of all samples. `--fresh` is the number of
//! fresh processes per round and mode for the first-put rows; `--load` the runs per setup
//! of the plugin's load cost (`load.rs`); `--versions` the iterations of the rows of ABI
//! version 2's put (`versions.rs`; 0, the default: none), `--only-versions` measures those
//! rows alone; `--only-gets` the read rows alone. Use `scripts/bench.sh`,
//! which builds everything first.
//!
//! Modes: `native` is a synchronous redis-rs connection with `TCP_NODELAY`, as the plugin
//! connects, each request packed into a reused buffer and sent in one round trip (as the
//! plugin sends); `native Cmd::query` is redis-rs's plain `Cmd::query` on it (two fresh
//! buffers per request); `native async` is a redis-rs multiplexed connection on a one-worker tokio
//! runtime, with the calling thread waiting on a channel for each answer (the plugin v1's
//! I/O path, without wasm); `redis-benchmark` is Debian's tool, one client, one request
//! at a time; `interp` and `aot` are the probe guest under `wasmedge`, interpreted or
//! AOT-compiled, propagation off; `aot default` is the default put: propagation on, with
//! a topology and a global store configured; `unix` rows reach the same server over its
//! Unix socket; `aot guest redis_wasi` is a Redis client inside the guest instead of the
//! plugin (`guest_client.rs`). Reads: `aot` gets the bundle in the table layout (the
//! SDK's default), `aot msgpack` asks for MessagePack, and `aot v1 guest` is the probe
//! built at the ABI version 1 commit (`tests/data/v1/probe.wasm`, its SDK as it was).
//! `aot, new chain per put` writes each put to a chain of its own (`--chains`) and
//! `native, new key per request` its transaction to a new key: the store then allocates
//! every value anew, as for the first put of a fresh process (a new workflow instance's
//! chain), where the other rows overwrite one key (at 1 MiB a new key cost the store
//! ten times the overwrite here). The first-put rows add the native floor: a new native connection's first
//! `MULTI{HSET,EXPIRE}/EXEC` after its `PING`, at once and after 5 and 20 ms idle
//! (`fresh::NATIVE_IDLE`): a store that has been idle costs every client's first request.

mod fresh;
mod guest_client;
mod load;
mod native;
mod versions;

use native::{AsyncPath, Endpoint};
use skylark_testkit::{chain_id, cli, percentile, wasm, wasmedge_bin, Guest, Redis, ServerConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SIZES: [(usize, &str); 3] = [(1024, "1 KiB"), (64 * 1024, "64 KiB"), (1 << 20, "1 MiB")];
const FIELDS: [usize; 2] = [1, 10];
/// The mode of the warm put rows whose every put writes a new chain (a new key in the
/// store), and of their native counterpart.
const NEW_CHAIN: &str = "aot, new chain per put";
const NEW_KEY: &str = "native, new key per request";
/// The mode of the guest-side Redis client rows (`guest_client.rs`).
const GUEST_CLIENT: &str = "aot guest redis_wasi";
/// The plugin's default `SKYLARK_TTL_SECS`, used by the native MULTI/EXEC baseline too.
const TTL_SECS: u64 = 86_400;
/// Deadline of one guest run (1 MiB × 10 fields in the interpreter is the slowest).
const GUEST_TIMEOUT: Duration = Duration::from_secs(600);

struct Options {
    iterations: [usize; 3],
    warmup_pct: usize,
    rounds: usize,
    fresh: usize,
    sizes: Vec<usize>,
    interp: bool,
    load: usize,
    versions: usize,
    only_versions: bool,
    only_gets: bool,
}

const USAGE: &str = "\
usage: bench [--iterations N1K,N64K,N1M] [--warmup-pct P] [--rounds R] [--fresh N]
             [--sizes 1,64,1024] [--no-interp] [--load N]
  --iterations  measured iterations for 1 KiB, 64 KiB and 1 MiB values; default 5000,2000,300
  --warmup-pct  iterations run first and discarded, in percent of the measured; default 10
  --rounds      times every group of rows is measured, interleaved (the median of the
                rounds' medians, their spread and the p99 of all samples are reported); default 3
  --fresh       fresh wasmedge processes per round and mode for the first-put rows
                (0: none); default 20
  --sizes       value sizes to measure, in KiB, among 1, 64 and 1024; default all
  --no-interp   leave out the interpreter rows (the slowest)
  --load        runs per setup of the plugin load cost (a trivial guest with and without
                the plugin; 0: none); default 40
  --versions    iterations of the ABI version 2 put rows (put, put_v2, CAS put, idempotent
                repeat; 1 KiB, AOT; 0: none); default 0
  --only-versions  measure only the ABI version 2 put rows
  --only-gets   measure only the read rows (HGETALL and skylark_get_bundle)";

fn options(p: &mut lexopt::Parser) -> Result<Options, lexopt::Error> {
    use lexopt::prelude::*;
    let mut o = Options {
        iterations: [5000, 2000, 300],
        warmup_pct: 10,
        rounds: 3,
        fresh: 20,
        sizes: vec![0, 1, 2],
        interp: true,
        load: 40,
        versions: 0,
        only_versions: false,
        only_gets: false,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("iterations") => {
                let n: Vec<usize> = cli::list(p)?;
                if n.len() != 3 || n.contains(&0) {
                    return Err("--iterations takes three numbers greater than zero".into());
                }
                o.iterations = [n[0], n[1], n[2]];
            }
            Long("warmup-pct") => o.warmup_pct = p.value()?.parse()?,
            Long("rounds") => o.rounds = cli::positive(p)?,
            Long("fresh") => o.fresh = p.value()?.parse()?,
            Long("sizes") => {
                let kib: Vec<usize> = cli::list(p)?;
                let mut sizes = Vec::new();
                for k in kib {
                    let Some(i) = SIZES.iter().position(|(s, _)| *s == k * 1024) else {
                        return Err(format!("--sizes: {k} is not one of 1, 64, 1024").into());
                    };
                    sizes.push(i);
                }
                sizes.sort_unstable();
                sizes.dedup();
                o.sizes = sizes;
            }
            Long("no-interp") => o.interp = false,
            Long("load") => o.load = p.value()?.parse()?,
            Long("versions") => o.versions = p.value()?.parse()?,
            Long("only-versions") => o.only_versions = true,
            Long("only-gets") => o.only_gets = true,
            Short('h') | Long("help") => cli::help(USAGE),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(o)
}

/// Guest-side or native operation measured in one row.
#[derive(Clone, Copy, PartialEq)]
enum Op {
    Set,
    Hset,
    MultiHsetExpire,
    Hgetall,
    GuestPut,
    GuestGet,
}

impl Op {
    fn label(self, fields: usize) -> &'static str {
        match self {
            Op::Set => "SET",
            Op::Hset => "HSET",
            Op::MultiHsetExpire => "MULTI{HSET,EXPIRE}/EXEC",
            Op::Hgetall => "HGETALL",
            Op::GuestPut if fields == 1 => "skylark_put",
            Op::GuestPut => "skylark_put_many",
            Op::GuestGet => "skylark_get_bundle",
        }
    }
}

struct Row {
    op: Op,
    mode: &'static str,
    fields: usize,
    size: &'static str,
    iterations: usize,
    median_ns: u64,
    /// The smallest and largest of the rounds' medians.
    spread_ns: (u64, u64),
    p99_ns: u64,
    /// Median / median of the plain native command (SET for 1 field, HSET for 10, HGETALL).
    vs_plain: f64,
    /// Median / median of native MULTI{HSET,EXPIRE}/EXEC (writes only).
    vs_multi: Option<f64>,
}

fn stats(mut samples: Vec<u64>) -> (u64, u64) {
    samples.sort_unstable();
    let at = |p| percentile(&samples, p).unwrap_or(0);
    (at(50.0), at(99.0))
}

/// Runs `f` `warmup + n` times; returns the last `n` durations in nanoseconds.
fn time_native(warmup: usize, n: usize, mut f: impl FnMut()) -> Vec<u64> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let t = Instant::now();
        f();
        let ns = t.elapsed().as_nanos() as u64;
        if i >= warmup {
            samples.push(ns);
        }
    }
    samples
}

/// How a guest row runs: which module, against which URL of the bench store, with which
/// plugin settings.
struct Setup {
    mode: &'static str,
    module: PathBuf,
    url: String,
    env: Vec<(String, String)>,
    /// Probe options after the `bench` arguments.
    args: Vec<String>,
    /// Every put to a chain of its own (`--chains` over all iterations), as every
    /// workflow instance writes a new bundle: the store allocates each value anew
    /// instead of overwriting one.
    new_chain_per_put: bool,
}

/// One probe `bench` run; returns the measured samples after the warm-up, or panics with
/// the guest's output if anything about the run is off.
fn time_guest(
    setup: &Setup,
    redis: &Redis,
    kind: &str,
    size: usize,
    fields: usize,
    warmup: usize,
    n: usize,
) -> Vec<u64> {
    let chain = chain_id("bench");
    let mut guest = Guest::at(&setup.module, &setup.url).args([
        "bench",
        kind,
        &chain,
        &size.to_string(),
        &fields.to_string(),
        &(warmup + n).to_string(),
    ]);
    guest = guest.args(&setup.args);
    if setup.new_chain_per_put {
        guest = guest.args(["--chains".to_string(), (warmup + n).to_string()]);
    }
    for (k, v) in &setup.env {
        guest = guest.env(k, v);
    }
    let run = guest.run(GUEST_TIMEOUT);
    run.assert_success();
    let out = run.json();
    let context = || {
        format!(
            "{} ({}) bench {kind} size={size} fields={fields}: {out}\nstderr:\n{}",
            setup.module.display(),
            setup.mode,
            run.stderr
        )
    };
    assert_eq!(out["status"], 0, "guest call failed: {}", context());
    assert!(
        out["kind"] == kind && out["size"] == size && out["fields"] == fields,
        "guest measured something else: {}",
        context()
    );
    let samples: Vec<u64> = out["samples_ns"]
        .as_array()
        .unwrap_or_else(|| panic!("no samples_ns array: {}", context()))
        .iter()
        .map(|v| {
            v.as_u64()
                .unwrap_or_else(|| panic!("bad sample {v}: {}", context()))
        })
        .collect();
    assert_eq!(
        samples.len(),
        warmup + n,
        "wrong sample count: {}",
        context()
    );
    let mut keys = vec![format!("skylark:bundle:{chain}")];
    if setup.new_chain_per_put {
        keys.extend((0..warmup + n).map(|i| format!("skylark:bundle:{chain}-{i}")));
    }
    unlink(redis, &keys);
    samples[warmup..].to_vec()
}

/// Removes `keys` from `redis` (in batches).
fn unlink(redis: &Redis, keys: &[String]) {
    let mut conn = redis.conn();
    for batch in keys.chunks(1000) {
        redis::cmd("UNLINK")
            .arg(batch)
            .query::<()>(&mut conn)
            .expect("UNLINK the measured keys");
    }
}

fn command_output(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Date, machine, wasmedge and redis-server versions.
fn header() -> String {
    let date = command_output(Path::new("date"), &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let wasmedge = command_output(&wasmedge_bin(), &["--version"]);
    let wasmedge = wasmedge
        .lines()
        .next()
        .and_then(|l| l.rsplit_once("version "))
        .map_or("unknown", |(_, v)| v.trim());
    let redis = command_output(Path::new("redis-server"), &["--version"]);
    let redis = redis
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or("unknown");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?");
    format!(
        "{}, nproc {nproc}, CPU {cpu}, load {load} at start, wasmedge {wasmedge}, redis-server {redis}",
        date.trim()
    )
}

fn fmt_us(ns: u64) -> String {
    let us = ns as f64 / 1e3;
    if us < 100.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| op | mode | fields | size | iterations | median µs | rounds' medians µs | p99 µs | median ÷ native plain | median ÷ native MULTI |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let multi = r.vs_multi.map_or("—".to_string(), |x| format!("{x:.2}×"));
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {}–{} | {} | {:.2}× | {} |\n",
            r.op.label(r.fields),
            r.mode,
            r.fields,
            r.size,
            r.iterations,
            fmt_us(r.median_ns),
            fmt_us(r.spread_ns.0),
            fmt_us(r.spread_ns.1),
            fmt_us(r.p99_ns),
            r.vs_plain,
            multi
        ));
    }
    s
}

/// The first put of fresh processes next to the warm put of the same mode and size.
struct FreshRow {
    op: &'static str,
    mode: &'static str,
    size: &'static str,
    processes: usize,
    median_ns: u64,
    spread_ns: (u64, u64),
    p99_ns: u64,
    warm_ns: Option<u64>,
    /// The warm median of the same work on a new key each time ([`NEW_CHAIN`],
    /// [`NEW_KEY`]).
    warm_new_ns: Option<u64>,
}

fn fresh_table(rows: &[FreshRow]) -> String {
    let mut s = String::from(
        "| op | mode | size | processes | median µs | rounds' medians µs | p99 µs | warm median µs | fresh ÷ warm | warm median, new key each time µs | fresh ÷ warm, new key |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let vs = |fresh: u64, warm: Option<u64>| match warm {
        Some(w) => (fmt_us(w), format!("{:.2}×", fresh as f64 / w as f64)),
        None => ("—".into(), "—".into()),
    };
    for r in rows {
        let (warm, ratio) = vs(r.median_ns, r.warm_ns);
        let (warm_new, ratio_new) = vs(r.median_ns, r.warm_new_ns);
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {}–{} | {} | {warm} | {ratio} | {warm_new} | {ratio_new} |\n",
            r.op,
            r.mode,
            r.size,
            r.processes,
            fmt_us(r.median_ns),
            fmt_us(r.spread_ns.0),
            fmt_us(r.spread_ns.1),
            fmt_us(r.p99_ns),
        ));
    }
    s
}

/// A topology of this node (`test-node`, the bench store) and a cloud node (the global
/// store), one link: what the default put's propagation elects over and copies to.
fn topology(local: &str, global: &str) -> String {
    format!(
        r#"{{"nodes": [{{"name": "test-node", "type": "Edge", "redis": "{local}"}},
                       {{"name": "cloud", "type": "Cloud", "redis": "{global}"}}],
            "links": [{{"source": "test-node", "target": "cloud", "latency_ms": 1, "bandwidth_mbps": 1000}}]}}"#
    )
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn main() {
    let opts = cli::parse_or_exit(USAGE, options);
    let started = Instant::now();
    let header = header();
    // One server, reached over loopback TCP and over its Unix socket.
    let sock = std::env::temp_dir().join(format!("skylark-bench-{}.sock", std::process::id()));
    let redis = Redis::start_on_free_port(
        |port| ServerConfig {
            unix_socket: Some(sock.clone()),
            ..ServerConfig::tcp(port)
        },
        None,
        Redis::ping,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let unix_url = format!("unix://{}", sock.display());
    let global = Redis::start();
    let topo_file = std::env::temp_dir().join(format!(
        "skylark-bench-{}-topology.json",
        std::process::id()
    ));
    std::fs::write(&topo_file, topology(&redis.url, &global.url)).expect("write the topology");
    let topo_path = topo_file.display().to_string();

    let aot = skylark_testkit::aot("probe");
    let redis_guest = skylark_testkit::aot("redis-guest");
    let off = env(&[("SKYLARK_PROPAGATION", "off")]);
    let default_put = env(&[
        ("SKYLARK_PROPAGATION", "on"),
        ("SKYLARK_TOPOLOGY_FILE", &topo_path),
    ]);
    let mut setups = Vec::new();
    if opts.interp {
        setups.push(Setup {
            mode: "interp",
            module: wasm("probe"),
            url: redis.url.clone(),
            env: off.clone(),
            args: Vec::new(),
            new_chain_per_put: false,
        });
    }
    setups.push(Setup {
        mode: "aot",
        module: aot.clone(),
        url: redis.url.clone(),
        env: off.clone(),
        args: Vec::new(),
        new_chain_per_put: false,
    });
    setups.push(Setup {
        mode: "aot default",
        module: aot.clone(),
        url: redis.url.clone(),
        env: default_put.clone(),
        args: Vec::new(),
        new_chain_per_put: false,
    });
    setups.push(Setup {
        mode: NEW_CHAIN,
        module: aot.clone(),
        url: redis.url.clone(),
        env: off.clone(),
        args: Vec::new(),
        new_chain_per_put: true,
    });
    setups.push(Setup {
        mode: "aot unix",
        module: aot.clone(),
        url: unix_url.clone(),
        env: off.clone(),
        args: Vec::new(),
        new_chain_per_put: false,
    });
    // The read rows also run the probe asking for the MessagePack layout (the encoding
    // of ABI version 1) and the probe built at the version-1 commit (its SDK as it was):
    // old and new read paths interleaved in one run (issue 14 point 4).
    let v1_probe = skylark_testkit::aot_of(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/v1/probe.wasm"),
        "probe-v1",
    );
    let get_setups = [
        Setup {
            mode: "aot msgpack",
            module: aot.clone(),
            url: redis.url.clone(),
            env: off.clone(),
            args: vec!["--layout".into(), "msgpack".into()],
            new_chain_per_put: false,
        },
        Setup {
            mode: "aot v1 guest",
            module: v1_probe,
            url: redis.url.clone(),
            env: off.clone(),
            args: Vec::new(),
            new_chain_per_put: false,
        },
    ];
    let fresh_setups: Vec<&Setup> = setups
        .iter()
        .filter(|s| s.mode == "aot" || s.mode == "aot default")
        .collect();
    let versions_table = (opts.versions > 0).then(|| {
        let warmup = (opts.versions * opts.warmup_pct).div_ceil(100);
        eprintln!(
            "[bench] ABI version 2 puts: {} iterations + {warmup} warm-up",
            opts.versions
        );
        versions::table(&fresh_setups, &redis, opts.versions, warmup, opts.rounds)
    });
    if opts.only_versions {
        println!(
            "{header}; warm-up {}% discarded; {} interleaved rounds per row\n",
            opts.warmup_pct, opts.rounds
        );
        match &versions_table {
            Some(t) => println!("{t}"),
            None => eprintln!("[bench] --only-versions without --versions N: nothing measured"),
        }
        return;
    }

    let mut conn = native::connect(&redis.url);
    let mut unix_conn = native::connect(&unix_url);
    let async_path = AsyncPath::new(&redis.url);
    let mut rows = Vec::new();
    let mut fresh_rows = Vec::new();

    for &si in &opts.sizes {
        let (size, size_label) = SIZES[si];
        let n = opts.iterations[si];
        let warmup = (n * opts.warmup_pct).div_ceil(100);
        for &fields in &FIELDS {
            eprintln!(
                "[bench] {size_label} × {fields} field(s): {n} iterations + {warmup} warm-up"
            );
            let names: Vec<String> = (0..fields).map(|i| format!("f{i}")).collect();
            let values: Vec<Vec<u8>> = (0..fields)
                .map(|i| probe::pattern(size, i as u64))
                .collect();
            let key = format!("skylark:bundle:native-{size}-{fields}");
            let hset = |c: &mut redis::Cmd| {
                c.arg(&key);
                for (n, v) in names.iter().zip(&values) {
                    c.arg(n).arg(v);
                }
            };
            let set_key = format!("{key}-set");
            let mut set_cmd = redis::cmd("SET");
            set_cmd.arg(&set_key).arg(&values[0]);
            let mut hset_cmd = redis::cmd("HSET");
            hset(&mut hset_cmd);
            let mut expire_cmd = redis::cmd("EXPIRE");
            expire_cmd.arg(&key).arg(TTL_SECS);
            let multi = || {
                let mut c = redis::cmd("HSET");
                hset(&mut c);
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .add_command(c)
                    .ignore()
                    .cmd("EXPIRE")
                    .arg(&key)
                    .arg(TTL_SECS)
                    .ignore();
                pipe
            };
            let mut buf = Vec::new();

            // Writes: native commands, then the guest in every mode; the whole sequence
            // `rounds` times, so that a slow spell of this shared machine hits every mode.
            let mut measured = Measured::default();
            let mut fresh_measured = Measured::default();
            if opts.only_gets {
                native::send(&mut conn, &mut buf, &[&hset_cmd], false);
            }
            let write_rounds = if opts.only_gets { 0 } else { opts.rounds };
            for _ in 0..write_rounds {
                if fields == 1 {
                    let s = time_native(warmup, n, || {
                        native::send(&mut conn, &mut buf, &[&set_cmd], false);
                    });
                    measured.push((Op::Set, "native", s));
                    let s = time_native(warmup, n, || {
                        redis::cmd("SET")
                            .arg(&set_key)
                            .arg(&values[0])
                            .query::<()>(&mut conn)
                            .expect("native SET");
                    });
                    measured.push((Op::Set, "native Cmd::query", s));
                }
                let s = time_native(warmup, n, || {
                    native::send(&mut conn, &mut buf, &[&hset_cmd], false);
                });
                measured.push((Op::Hset, "native", s));
                let s = time_native(warmup, n, || {
                    native::send(&mut conn, &mut buf, &[&hset_cmd, &expire_cmd], true);
                });
                measured.push((Op::MultiHsetExpire, "native", s));
                let s = time_native(warmup, n, || {
                    let pipe = multi();
                    async_path
                        .run(|mut conn| async move { pipe.query_async::<()>(&mut conn).await });
                });
                measured.push((Op::MultiHsetExpire, "native async", s));
                if fields == 1 {
                    let s = time_native(warmup, n, || {
                        native::send(&mut unix_conn, &mut buf, &[&hset_cmd, &expire_cmd], true);
                    });
                    measured.push((Op::MultiHsetExpire, "native unix", s));
                    let mut i = 0usize;
                    let s = time_native(warmup, n, || {
                        let new_key = format!("{key}-new-{i}");
                        i += 1;
                        let mut h = redis::cmd("HSET");
                        h.arg(&new_key).arg(&names[0]).arg(&values[0]);
                        let mut e = redis::cmd("EXPIRE");
                        e.arg(&new_key).arg(TTL_SECS);
                        native::send(&mut conn, &mut buf, &[&h, &e], true);
                    });
                    measured.push((Op::MultiHsetExpire, NEW_KEY, s));
                    let new_keys: Vec<String> = (0..i).map(|j| format!("{key}-new-{j}")).collect();
                    unlink(&redis, &new_keys);
                    for (test, op) in [("set", Op::Set), ("hset", Op::Hset)] {
                        let tcp = native::redis_benchmark(
                            &Endpoint::Tcp(redis.port),
                            test,
                            size,
                            warmup + n,
                        );
                        measured.push_external(op, "redis-benchmark", tcp);
                        let unix =
                            native::redis_benchmark(&Endpoint::Unix(&sock), test, size, warmup + n);
                        measured.push_external(op, "redis-benchmark unix", unix);
                    }
                }
                for setup in &setups {
                    if fields > 1 && (setup.mode == "aot unix" || setup.new_chain_per_put) {
                        continue;
                    }
                    let s = time_guest(setup, &redis, "put", size, fields, warmup, n);
                    measured.push((Op::GuestPut, setup.mode, s));
                }
                let s = guest_client::warm(&redis_guest, &redis.url, size, fields, warmup, n);
                measured.push((Op::MultiHsetExpire, GUEST_CLIENT, s));
                if fields == 1 && opts.fresh > 0 {
                    for setup in &fresh_setups {
                        let s = fresh::first_puts(
                            &setup.module,
                            &setup.url,
                            &setup.env,
                            size,
                            opts.fresh,
                        );
                        fresh_measured.push((Op::GuestPut, setup.mode, s));
                    }
                    let s = guest_client::first_puts(&redis_guest, &redis.url, size, opts.fresh);
                    fresh_measured.push((Op::MultiHsetExpire, GUEST_CLIENT, s));
                    for (mode, idle) in fresh::NATIVE_IDLE {
                        let s = fresh::native_first_requests(
                            &redis.url,
                            &[&hset_cmd, &expire_cmd],
                            opts.fresh,
                            idle,
                        );
                        fresh_measured.push((Op::MultiHsetExpire, mode, s));
                    }
                }
            }
            let plain = if fields == 1 { Op::Set } else { Op::Hset };
            let first = rows.len();
            if !opts.only_gets {
                push_group(&mut rows, measured, plain, true, fields, size_label, n);
            }
            for (op, mode, rounds, _) in fresh_measured.0 {
                let (median_ns, spread_ns, p99_ns) = round_stats(rounds);
                // The native first requests compare with the warm native row.
                let native_fresh = fresh::NATIVE_IDLE.iter().any(|(m, _)| *m == mode);
                let warm_mode = if native_fresh { "native" } else { mode };
                let warm_of = |op: Op, mode: &str| {
                    rows[first..]
                        .iter()
                        .find(|r| r.op == op && r.mode == mode)
                        .map(|r| r.median_ns)
                };
                let warm_ns = warm_of(op, warm_mode);
                // A fresh process writes a new chain: the warm put of a new chain each time.
                let warm_new_ns = match op {
                    Op::GuestPut => warm_of(op, NEW_CHAIN),
                    _ if native_fresh => warm_of(op, NEW_KEY),
                    _ => None,
                };
                fresh_rows.push(FreshRow {
                    op: if op == Op::GuestPut {
                        "first skylark_put of a process"
                    } else if native_fresh {
                        "first MULTI{HSET,EXPIRE}/EXEC of a new connection, after its PING"
                    } else {
                        "first MULTI{HSET,EXPIRE}/EXEC of a process, connecting included"
                    },
                    mode,
                    size: size_label,
                    processes: opts.fresh * opts.rounds,
                    median_ns,
                    spread_ns,
                    p99_ns,
                    warm_ns,
                    warm_new_ns,
                });
            }

            // Reads: HGETALL of the hash written above, then the guest in both modes.
            let mut measured = Measured::default();
            for _ in 0..opts.rounds {
                let s = time_native(warmup, n, || {
                    let pairs: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
                        .arg(&key)
                        .query(&mut conn)
                        .expect("native HGETALL");
                    assert_eq!(
                        pairs.len(),
                        fields,
                        "HGETALL returned the wrong field count"
                    );
                });
                measured.push((Op::Hgetall, "native", s));
                let s = time_native(warmup, n, || {
                    let mut c = redis::cmd("HGETALL");
                    c.arg(&key);
                    let pairs: Vec<(Vec<u8>, Vec<u8>)> =
                        async_path.run(|mut conn| async move { c.query_async(&mut conn).await });
                    assert_eq!(
                        pairs.len(),
                        fields,
                        "HGETALL returned the wrong field count"
                    );
                });
                measured.push((Op::Hgetall, "native async", s));
                for setup in setups
                    .iter()
                    .filter(|s| s.mode == "interp" || s.mode == "aot")
                {
                    let s = time_guest(setup, &redis, "get", size, fields, warmup, n);
                    measured.push((Op::GuestGet, setup.mode, s));
                }
                for setup in &get_setups {
                    let s = time_guest(setup, &redis, "get", size, fields, warmup, n);
                    measured.push((Op::GuestGet, setup.mode, s));
                }
            }
            push_group(
                &mut rows,
                measured,
                Op::Hgetall,
                false,
                fields,
                size_label,
                n,
            );

            for store in [&redis, &global] {
                redis::cmd("FLUSHDB")
                    .query::<()>(&mut store.conn())
                    .expect("FLUSHDB between groups");
            }
        }
    }
    let load_rows = (opts.load > 0 && !opts.only_gets).then(|| {
        eprintln!("[bench] plugin load cost: {} runs per setup", opts.load);
        load::measure(
            opts.load,
            &skylark_testkit::aot("hello"),
            &redis.url,
            &default_put,
        )
    });
    let _ = std::fs::remove_file(&topo_file);

    eprintln!("[bench] done in {:.0} s", started.elapsed().as_secs_f64());
    println!(
        "{header}; warm-up {}% discarded; {} interleaved rounds per row\n",
        opts.warmup_pct, opts.rounds
    );
    print!("{}", table(&rows));
    if !fresh_rows.is_empty() {
        println!();
        print!("{}", fresh_table(&fresh_rows));
    }
    if let Some(rows) = load_rows {
        println!();
        print!("{}", load::table(&rows));
    }
    if let Some(t) = versions_table {
        println!();
        print!("{t}");
    }
}

/// Samples of one group: per (operation, mode), one entry per round: the samples, or an
/// outside tool's own (median, p99).
#[derive(Default)]
struct Measured(Vec<Entry>);

/// One (operation, mode) of a group: its rounds' samples, or an outside tool's own
/// (median, p99) per round.
type Entry = (Op, &'static str, Vec<Vec<u64>>, Vec<(u64, u64)>);

/// A row's statistics: operation, mode, median, (smallest, largest) round median, p99.
type RowStats = (Op, &'static str, u64, (u64, u64), u64);

impl Measured {
    fn entry(&mut self, op: Op, mode: &'static str) -> &mut Entry {
        let i = match self.0.iter().position(|m| m.0 == op && m.1 == mode) {
            Some(i) => i,
            None => {
                self.0.push((op, mode, Vec::new(), Vec::new()));
                self.0.len() - 1
            }
        };
        &mut self.0[i]
    }

    fn push(&mut self, (op, mode, samples): (Op, &'static str, Vec<u64>)) {
        self.entry(op, mode).2.push(samples);
    }

    fn push_external(&mut self, op: Op, mode: &'static str, median_p99: (u64, u64)) {
        self.entry(op, mode).3.push(median_p99);
    }
}

/// The median of the rounds' medians, the smallest and largest of them, and the p99 of
/// all rounds' samples together.
fn round_stats(rounds: Vec<Vec<u64>>) -> (u64, (u64, u64), u64) {
    let medians: Vec<u64> = rounds.iter().map(|r| stats(r.clone()).0).collect();
    let pooled: Vec<u64> = rounds.into_iter().flatten().collect();
    let (median, spread) = median_spread(medians);
    (median, spread, stats(pooled).1)
}

fn median_spread(mut medians: Vec<u64>) -> (u64, (u64, u64)) {
    medians.sort_unstable();
    let spread = (
        medians.first().copied().unwrap_or(0),
        medians.last().copied().unwrap_or(0),
    );
    (percentile(&medians, 50.0).unwrap_or(0), spread)
}

/// Turns one group's samples into rows with ratios against the group's native baselines.
fn push_group(
    rows: &mut Vec<Row>,
    measured: Measured,
    plain: Op,
    write: bool,
    fields: usize,
    size: &'static str,
    iterations: usize,
) {
    let stats: Vec<RowStats> = measured
        .0
        .into_iter()
        .map(|(op, mode, rounds, external)| {
            if rounds.is_empty() {
                // An outside tool's rounds: the median of its medians, the largest p99.
                let (median, spread) = median_spread(external.iter().map(|e| e.0).collect());
                let p99 = external.iter().map(|e| e.1).max().unwrap_or(0);
                (op, mode, median, spread, p99)
            } else {
                let (median, spread, p99) = round_stats(rounds);
                (op, mode, median, spread, p99)
            }
        })
        .collect();
    let median_of = |op: Op| {
        stats
            .iter()
            .find(|s| s.0 == op && s.1 == "native")
            .map(|s| s.2 as f64)
            .expect("baseline measured in this group")
    };
    let plain_median = median_of(plain);
    let multi_median = write.then(|| median_of(Op::MultiHsetExpire));
    for (op, mode, median_ns, spread_ns, p99_ns) in stats.iter().copied() {
        rows.push(Row {
            op,
            mode,
            fields,
            size,
            iterations,
            median_ns,
            spread_ns,
            p99_ns,
            vs_plain: median_ns as f64 / plain_median,
            vs_multi: multi_median.map(|m| median_ns as f64 / m),
        });
    }
}
