//! `linkemu`: a user-space link emulator in front of a TCP server (a `redis-server`
//! standing for a remote node), for kernels without the `netem` qdisc.
//!
//! ```text
//! linkemu --listen 127.0.0.1:7001 --upstream 127.0.0.1:6379 \
//!     [--latency-ms 60] [--jitter-ms 30] [--bandwidth-mbps 90|none] [--control 127.0.0.1:7101]
//! ```
//! Runs until killed. When ready it prints `listening <addr> -> <upstream>` on stdout
//! (and, with `--control`, `control <addr>` on stderr just before). Latency, jitter and
//! bandwidth are one-way and apply to each direction; see `skylark_netemu::linkemu`.
//!
//! The control port takes one command per line and answers each with one line:
//! `cut`, `blackhole`, `restore`, `set latency_ms=10 jitter_ms=2 bandwidth_mbps=40` (any
//! subset; `bandwidth_mbps=none` removes the limit) answer `ok`; `stats` answers
//! `mode=.. latency_ms=.. jitter_ms=.. bandwidth_mbps=.. accepted=.. active=.. reset=..
//! bytes_up=.. bytes_down=..`; a bad command answers `error: <why>`.
//!
//! Exit codes: 2 for bad arguments, 1 if the ports cannot be bound.

use skylark_netemu::linkemu::{LinkEmu, LinkSpec};
use skylark_testkit::cli;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str = "\
usage: linkemu --listen ADDR --upstream ADDR [--latency-ms MS] [--jitter-ms MS]
               [--bandwidth-mbps MBPS|none] [--control ADDR]

  --listen ADDR          where clients connect (port 0 picks a free one)
  --upstream ADDR        the server every connection is forwarded to
  --latency-ms MS        one-way latency per direction (default 0)
  --jitter-ms MS         uniform jitter of the one-way latency, +/- MS (default 0)
  --bandwidth-mbps MBPS  bandwidth per direction in Mbit/s (default none: unlimited)
  --control ADDR         control port: line commands cut, blackhole, restore, stats,
                         set latency_ms=.. jitter_ms=.. bandwidth_mbps=..|none";

/// Longest control line accepted.
const MAX_LINE: u64 = 4096;

/// Parsed command line.
struct Args {
    listen: SocketAddr,
    upstream: SocketAddr,
    spec: LinkSpec,
    control: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let args = cli::parse_or_exit(USAGE, parse_args);
    match run(args) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("linkemu: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The arguments (`--help` prints the usage and exits).
fn parse_args(p: &mut lexopt::Parser) -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let (mut listen, mut upstream, mut control) = (None, None, None);
    let mut spec = LinkSpec::ideal();
    while let Some(arg) = p.next()? {
        match arg {
            Long("listen") => listen = Some(p.value()?.parse()?),
            Long("upstream") => upstream = Some(p.value()?.parse()?),
            Long("control") => control = Some(p.value()?.parse()?),
            Long("latency-ms") => spec.latency_ms = p.value()?.parse()?,
            Long("jitter-ms") => spec.jitter_ms = p.value()?.parse()?,
            Long("bandwidth-mbps") => {
                let v = p.value()?.string()?;
                spec.bandwidth_mbps = match v.as_str() {
                    "none" => None,
                    n => Some(
                        n.parse()
                            .map_err(|_| format!("--bandwidth-mbps {n:?} is not a number"))?,
                    ),
                };
            }
            Short('h') | Long("help") => cli::help(USAGE),
            _ => return Err(arg.unexpected()),
        }
    }
    spec.validate()?;
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        upstream: upstream.ok_or("--upstream is required")?,
        spec,
        control,
    })
}

/// Starts the emulator and serves the control port, if any, forever.
fn run(args: Args) -> io::Result<std::convert::Infallible> {
    let emu = Arc::new(LinkEmu::start_on(args.listen, args.upstream, args.spec)?);
    let control = match args.control {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            eprintln!("control {}", listener.local_addr()?);
            Some(listener)
        }
        None => None,
    };
    let mut out = io::stdout();
    writeln!(out, "listening {} -> {}", emu.addr(), emu.upstream())?;
    out.flush()?;
    match control {
        Some(listener) => serve_control(&listener, &emu),
        None => loop {
            std::thread::park();
        },
    }
}

/// Accepts control connections forever, one thread each.
fn serve_control(listener: &TcpListener, emu: &Arc<LinkEmu>) -> ! {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                let emu = Arc::clone(emu);
                std::thread::spawn(move || {
                    if let Err(e) = control_session(stream, &emu) {
                        eprintln!("linkemu: control connection {peer}: {e}");
                    }
                });
            }
            Err(e) => {
                eprintln!("linkemu: control accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// Answers the commands of one control connection until it closes.
fn control_session(stream: TcpStream, emu: &LinkEmu) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    let mut line = Vec::new();
    loop {
        line.clear();
        if (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') && line.len() as u64 >= MAX_LINE {
            writeln!(out, "error: line longer than {MAX_LINE} bytes")?;
            return Ok(());
        }
        let command = String::from_utf8_lossy(&line);
        if command.trim().is_empty() {
            continue;
        }
        let answer = emu
            .command(&command)
            .unwrap_or_else(|e| format!("error: {e}"));
        writeln!(out, "{answer}")?;
    }
}
