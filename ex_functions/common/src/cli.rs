//! Command-line parsing and the run harness of the example functions.
//!
//! Every function takes one positional chain id and a few `--flag value` (or
//! `--flag=value`) options, prints exactly one JSON line on stdout on success, writes human
//! text only to stderr, and exits non-zero on any error (2 for usage errors, 1 otherwise).

use serde_json::Value;
use std::fmt::Display;
use std::io::Write;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// What a function accepts, for parsing and usage messages.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The function's name, used as the prefix of stderr messages.
    pub name: &'static str,
    /// The usage line, e.g. `"detect <chain_id> [--threshold T]"`.
    pub usage: &'static str,
    /// The accepted flags without their leading `--`; each takes one value.
    pub flags: &'static [&'static str],
}

/// Why parsing stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// `-h` or `--help` was given.
    Help,
    /// The arguments are wrong; the message says how.
    Usage(String),
}

/// Parsed arguments: the chain id and the flags given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    chain: String,
    flags: Vec<(String, String)>,
}

/// Parses `args` (without the program name) against the accepted `flags`.
///
/// Exactly one positional argument (the chain id) is required; `--` ends the options, so a
/// chain id starting with `-` can be given as `-- -id`.
pub fn parse<I>(flags: &[&str], args: I) -> Result<Args, CliError>
where
    I: IntoIterator<Item = String>,
{
    let mut chain = None;
    let mut given: Vec<(String, String)> = Vec::new();
    let mut args = args.into_iter();
    let mut options_done = false;
    while let Some(arg) = args.next() {
        if !options_done && (arg == "-h" || arg == "--help") {
            return Err(CliError::Help);
        }
        if !options_done && arg == "--" {
            options_done = true;
            continue;
        }
        if let (false, Some(flag)) = (options_done, arg.strip_prefix("--")) {
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => {
                    let v = args
                        .next()
                        .ok_or_else(|| CliError::Usage(format!("--{flag} needs a value")))?;
                    (flag.to_string(), v)
                }
            };
            if !flags.contains(&name.as_str()) {
                return Err(CliError::Usage(format!("unknown option --{name}")));
            }
            if given.iter().any(|(n, _)| *n == name) {
                return Err(CliError::Usage(format!("--{name} given twice")));
            }
            given.push((name, value));
            continue;
        }
        if chain.is_some() {
            return Err(CliError::Usage(format!("unexpected argument {arg:?}")));
        }
        chain = Some(arg);
    }
    let chain = chain.ok_or_else(|| CliError::Usage("missing <chain_id>".into()))?;
    Ok(Args {
        chain,
        flags: given,
    })
}

impl Args {
    /// The chain id (unchecked; the SDK validates it).
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// The raw value of `--name`, if given.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `--name` parsed as `T`, or `default` if not given.
    pub fn number<T>(&self, name: &str, default: T) -> Result<T, String>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.value(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| format!("--{name} {v:?}: {e} (expected a {})", short_type::<T>())),
        }
    }

    /// Like [`Args::number`], and checks `min <= value <= max`.
    pub fn number_in<T>(&self, name: &str, default: T, min: T, max: T) -> Result<T, String>
    where
        T: FromStr + PartialOrd + Display + Copy,
        T::Err: Display,
    {
        let v = self.number(name, default)?;
        if v < min || v > max {
            return Err(format!("--{name} {v} is outside {min}..={max}"));
        }
        Ok(v)
    }
}

fn short_type<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Milliseconds, rounded to the microsecond, as reported in the JSON output.
pub fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// Rounds a millisecond value (e.g. a sum of [`ms`] values) to the microsecond, so that
/// float noise does not show up in the JSON output.
pub fn round_ms(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// Runs `f` and returns its result with the elapsed wall time in milliseconds (see [`ms`]).
pub fn timed<R>(f: impl FnOnce() -> R) -> (R, f64) {
    let start = Instant::now();
    let r = f();
    (r, ms(start.elapsed()))
}

/// The process entry point of a function: parses `std::env::args`, runs `run`, prints its
/// JSON value as one line on stdout and exits 0, or reports the error on stderr and exits
/// non-zero. `--serve [PORT]` instead serves `run` over HTTP ([`crate::serve`], configured
/// by the `SERVE_*` environment variables).
pub fn main(spec: &Spec, run: impl Fn(&Args) -> Result<Value, String>) -> ! {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("--serve") {
        let port = match argv.len() {
            1 | 2 => crate::serve::port(argv.get(1).map(String::as_str)),
            _ => Err("--serve takes at most one argument, the port".to_string()),
        };
        let setup = port.and_then(|p| crate::serve::Config::from_env().map(|c| (c, p)));
        let msg = match setup {
            Ok((config, port)) => crate::serve::serve(spec, &config, &run, port),
            Err(e) => {
                eprintln!("{}: {e}\nusage: {} --serve [PORT]", spec.name, spec.name);
                std::process::exit(2);
            }
        };
        eprintln!("{}: error: {msg}", spec.name);
        std::process::exit(1);
    }
    let args = match parse(spec.flags, argv) {
        Ok(a) => a,
        Err(CliError::Help) => {
            eprintln!("usage: {}", spec.usage);
            std::process::exit(0);
        }
        Err(CliError::Usage(msg)) => {
            eprintln!("{}: {msg}\nusage: {}", spec.name, spec.usage);
            std::process::exit(2);
        }
    };
    match run(&args) {
        Ok(value) => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = writeln!(out, "{value}").and_then(|()| out.flush()) {
                eprintln!("{}: error: writing the result to stdout: {e}", spec.name);
                std::process::exit(1);
            }
            std::process::exit(0);
        }
        Err(msg) => {
            eprintln!("{}: error: {msg}", spec.name);
            std::process::exit(1);
        }
    }
}

/// Adds the keys of object `extra` to object `out` (for composing report lines).
pub fn merge(out: &mut Value, extra: Value) {
    if let (Value::Object(o), Value::Object(e)) = (out, extra) {
        o.extend(e);
    }
}

/// Flags every workflow step accepts to steer where its state goes: `--dest NODE`
/// (where the next step runs), `--policy skylark|random|stateless|local` and
/// `--max-latency-ms MS` (the step's SLO).
pub const PLACEMENT_FLAGS: [&str; 3] = ["dest", "policy", "max-latency-ms"];

/// The put options of a step from its [`PLACEMENT_FLAGS`] (and `--successor-in-ms MS`,
/// when the step accepts it: when the next step is expected to start), with the
/// execution time so far (since `start`) for the SLO-aware election.
pub fn put_options(args: &Args, start: Instant) -> Result<skylark_guest::PutOptions, String> {
    let policy = match args.value("policy") {
        None => None,
        Some(p) => Some(skylark_guest::Policy::parse(p).ok_or_else(|| {
            format!("--policy {p:?} is not one of skylark, random, stateless, local")
        })?),
    };
    let max_latency_ms = match args.value("max-latency-ms") {
        None => None,
        Some(_) => Some(args.number::<u64>("max-latency-ms", 0)?),
    };
    let successor_in_ms = match args.value("successor-in-ms") {
        None => None,
        Some(_) => Some(args.number::<u64>("successor-in-ms", 0)?),
    };
    Ok(skylark_guest::PutOptions {
        destination: args.value("dest").map(str::to_string),
        destinations: args
            .value("dests")
            .map(|l| l.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        policy,
        max_latency_ms,
        exec_ms: Some(start.elapsed().as_millis() as u64),
        successor_in_ms,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Args, CliError> {
        parse(&["size", "seed"], args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn chain_and_flags() {
        let a = p(&["c1", "--size", "1024", "--seed=7"]).unwrap();
        assert_eq!(a.chain(), "c1");
        assert_eq!(a.number::<usize>("size", 5), Ok(1024));
        assert_eq!(a.number::<u64>("seed", 0), Ok(7));
        let a = p(&["--size", "3", "c2"]).unwrap();
        assert_eq!(a.chain(), "c2");
        assert_eq!(a.number::<u64>("seed", 42), Ok(42));
        assert_eq!(a.value("seed"), None);
        let a = p(&["--", "-dash-id"]).unwrap();
        assert_eq!(a.chain(), "-dash-id");
    }

    #[test]
    fn usage_errors() {
        assert_eq!(p(&["--help"]).unwrap_err(), CliError::Help);
        assert_eq!(p(&["c", "-h"]).unwrap_err(), CliError::Help);
        let usage = |args: &[&str]| match p(args) {
            Err(CliError::Usage(m)) => m,
            other => panic!("{args:?}: {other:?}"),
        };
        assert_eq!(usage(&[]), "missing <chain_id>");
        assert_eq!(usage(&["c", "d"]), "unexpected argument \"d\"");
        assert_eq!(usage(&["c", "--size"]), "--size needs a value");
        assert_eq!(usage(&["c", "--colour", "red"]), "unknown option --colour");
        assert_eq!(
            usage(&["c", "--seed", "1", "--seed=2"]),
            "--seed given twice"
        );
    }

    #[test]
    fn number_errors_name_the_flag() {
        let a = p(&["c", "--size", "big", "--seed", "300"]).unwrap();
        let e = a.number::<usize>("size", 1).unwrap_err();
        assert!(e.starts_with("--size \"big\": "), "{e}");
        assert!(e.ends_with("(expected a usize)"), "{e}");
        assert_eq!(
            a.number_in::<u64>("seed", 1, 0, 255).unwrap_err(),
            "--seed 300 is outside 0..=255"
        );
        assert_eq!(a.number_in::<u64>("seed", 1, 0, 1000), Ok(300));
    }

    #[test]
    fn milliseconds() {
        assert_eq!(ms(Duration::from_micros(1500)), 1.5);
        assert_eq!(ms(Duration::from_nanos(999)), 0.0);
        assert_eq!(round_ms(0.449 + 0.2 + 1e-12), 0.649);
        let (v, t) = timed(|| 3);
        assert_eq!(v, 3);
        assert!(t >= 0.0);
    }
}
