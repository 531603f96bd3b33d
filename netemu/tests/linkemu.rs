//! The link emulator (`skylark_netemu::linkemu` and the `linkemu` binary) against plain TCP
//! echo servers. Timing assertions are lower bounds (a slow machine only makes them
//! safer), except for a few generous upper bounds that separate "works" from "broken".

use skylark_netemu::linkemu::{LinkEmu, LinkMode, LinkSpec, LinkStats};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Read deadline for operations that should succeed.
const PATIENCE: Duration = Duration::from_secs(10);
/// How soon a cut (or a dropped emulator) must show as a failed read.
const FAST_FAIL: Duration = Duration::from_secs(2);
/// How long a blackholed read must stay silent.
const SILENCE: Duration = Duration::from_millis(300);

/// Starts a threaded echo server on a free loopback port.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo server");
    let addr = listener.local_addr().expect("echo server address");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                if let Ok(mut reader) = stream.try_clone() {
                    let mut writer = stream;
                    let _ = io::copy(&mut reader, &mut writer);
                }
            });
        }
    });
    addr
}

/// An emulator in front of a fresh echo server.
fn emu(spec: LinkSpec) -> LinkEmu {
    LinkEmu::start(echo_server(), spec).expect("start link emulator")
}

/// A client connection through `emu`.
fn connect(emu: &LinkEmu) -> TcpStream {
    let s = TcpStream::connect(emu.addr()).expect("connect through the emulator");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    s
}

/// Sends `msg`, reads its echo, and returns how long that took.
fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
    let started = Instant::now();
    s.write_all(msg).expect("write");
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).expect("read echo");
    assert_eq!(back, msg, "echo differs");
    started.elapsed()
}

/// Sends `payload` from a second thread while reading its echo; returns the echo.
fn transfer(s: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    let mut writer = s.try_clone().expect("clone stream");
    let data = payload.to_vec();
    let sending = thread::spawn(move || writer.write_all(&data));
    let mut back = vec![0u8; payload.len()];
    s.read_exact(&mut back).expect("read echo");
    sending.join().expect("writer thread").expect("write");
    back
}

/// Deterministic pseudo-random bytes.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Asserts that `s` fails (error or end of stream) within [`FAST_FAIL`].
fn assert_dead(s: &mut TcpStream, what: &str) {
    s.set_read_timeout(Some(FAST_FAIL)).expect("read timeout");
    let _ = s.write_all(b"anyone there?");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: read {n} bytes from a dead link"),
        Err(e) if is_timeout(&e) => panic!("{what}: no failure within {FAST_FAIL:?}"),
        Err(_) => {}
    }
    assert!(
        started.elapsed() < FAST_FAIL,
        "{what}: failure took too long"
    );
}

/// Asserts that reading `s` fails with a reset (not a timeout, not an orderly close)
/// within [`FAST_FAIL`].
fn assert_reset(s: &mut TcpStream, what: &str) {
    s.set_read_timeout(Some(FAST_FAIL)).expect("read timeout");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("{what}: expected a connection reset, got {other:?}"),
    }
}

/// Asserts that nothing arrives on `s` for [`SILENCE`] while it stays open.
fn assert_silent(s: &mut TcpStream, what: &str) {
    s.set_read_timeout(Some(SILENCE)).expect("read timeout");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Err(e) if is_timeout(&e) => {}
        other => panic!("{what}: expected a read timeout, got {other:?}"),
    }
    s.set_read_timeout(Some(PATIENCE)).expect("read timeout");
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Waits until the stats satisfy `ok` (counters trail the bytes by a moment).
fn wait_stats(emu: &LinkEmu, ok: impl Fn(&LinkStats) -> bool) -> LinkStats {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = emu.stats();
        if ok(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "stats never matched: {stats:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn forwards_large_payload_intact_and_counts_bytes() {
    let emu = emu(LinkSpec::ideal());
    let payload = random_bytes(4 << 20, 42);
    let mut s = connect(&emu);
    let back = transfer(&mut s, &payload);
    assert!(back == payload, "4 MiB payload corrupted");
    let n = payload.len() as u64;
    let stats = wait_stats(&emu, |s| s.bytes_up == n && s.bytes_down == n);
    assert_eq!((stats.accepted, stats.active, stats.reset), (1, 1, 0));
    drop(s);
    wait_stats(&emu, |s| s.active == 0);
}

#[test]
fn latency_applies_in_each_direction() {
    let emu = emu(LinkSpec::new(30.0, 0.0, None));
    assert_eq!(emu.url(), format!("redis://127.0.0.1:{}", emu.port()));
    let mut s = connect(&emu);
    for i in 0..5u8 {
        let rtt = round_trip(&mut s, &[b'p', i]);
        assert!(
            rtt >= Duration::from_millis(60),
            "round trip {i} took {rtt:?}"
        );
    }
}

#[test]
fn jitter_keeps_bytes_in_order() {
    let emu = emu(LinkSpec::new(5.0, 5.0, None));
    let mut s = connect(&emu);
    let mut writer = s.try_clone().expect("clone stream");
    let sending = thread::spawn(move || {
        for i in 0..300u32 {
            writer.write_all(&i.to_be_bytes())?;
            if i % 10 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
        io::Result::Ok(())
    });
    for i in 0..300u32 {
        let mut word = [0u8; 4];
        s.read_exact(&mut word).expect("read echo");
        assert_eq!(u32::from_be_bytes(word), i, "bytes out of order");
    }
    sending.join().expect("writer thread").expect("write");
}

#[test]
fn half_close_is_forwarded_after_the_bytes() {
    let emu = emu(LinkSpec::new(20.0, 10.0, None));
    let mut s = connect(&emu);
    s.write_all(b"last words").expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    s.read_to_end(&mut back).expect("read to end of stream");
    assert_eq!(back, b"last words");
    wait_stats(&emu, |s| s.active == 0);
}

#[test]
fn bandwidth_limit_slows_transfers() {
    let emu = emu(LinkSpec::new(0.0, 0.0, Some(8.0)));
    let payload = random_bytes(500_000, 7);
    let mut s = connect(&emu);
    let started = Instant::now();
    let back = transfer(&mut s, &payload);
    let took = started.elapsed();
    assert!(back == payload, "payload corrupted");
    // 500 kB at 8 Mbit/s (1 MB/s) is 0.5 s per direction; the directions overlap.
    assert!(took >= Duration::from_millis(450), "took only {took:?}");
    // Bits taken for bytes would make it 4 s.
    assert!(took < Duration::from_millis(3500), "took {took:?}");
}

#[test]
fn set_changes_an_existing_connection() {
    let emu = emu(LinkSpec::ideal());
    let mut s = connect(&emu);
    round_trip(&mut s, b"before");
    emu.set(LinkSpec::new(100.0, 0.0, None));
    assert_eq!(emu.spec(), LinkSpec::new(100.0, 0.0, None));
    let rtt = round_trip(&mut s, b"after");
    assert!(rtt >= Duration::from_millis(200), "round trip took {rtt:?}");
}

#[test]
fn cut_resets_connections_until_restore() {
    let emu = emu(LinkSpec::new(300.0, 0.0, None));
    let mut in_flight = connect(&emu);
    in_flight.write_all(b"request").expect("write");
    thread::sleep(Duration::from_millis(50));
    emu.cut();
    assert_eq!(emu.mode(), LinkMode::Cut);
    assert_reset(&mut in_flight, "in-flight connection");

    let mut fresh = TcpStream::connect(emu.addr()).expect("connect while cut");
    assert_reset(&mut fresh, "connection made while cut");
    let stats = wait_stats(&emu, |s| s.reset >= 2 && s.active == 0);
    assert!(stats.accepted >= 2, "{stats:?}");

    emu.restore();
    emu.set(LinkSpec::ideal());
    let mut after = connect(&emu);
    round_trip(&mut after, b"back again");
}

#[test]
fn blackhole_stalls_then_restore_delivers_held_bytes() {
    let emu = emu(LinkSpec::ideal());
    let mut old = connect(&emu);
    round_trip(&mut old, b"hello");
    wait_stats(&emu, |s| s.bytes_up == 5);

    emu.blackhole();
    old.write_all(b"held").expect("write into the blackhole");
    assert_silent(&mut old, "existing connection");
    let mut fresh = connect(&emu);
    fresh.write_all(b"fresh").expect("write into the blackhole");
    assert_silent(&mut fresh, "connection made while blackholed");
    assert_eq!(emu.stats().bytes_up, 5, "bytes crossed a blackhole");

    emu.restore();
    let mut buf = [0u8; 5];
    old.read_exact(&mut buf[..4])
        .expect("held bytes after restore");
    assert_eq!(&buf[..4], b"held");
    fresh
        .read_exact(&mut buf)
        .expect("held connection after restore");
    assert_eq!(&buf, b"fresh");
}

#[test]
fn cut_after_blackhole_resets_held_connections() {
    let emu = emu(LinkSpec::ideal());
    let mut s = connect(&emu);
    emu.blackhole();
    s.write_all(b"held").expect("write");
    assert_silent(&mut s, "blackholed connection");
    emu.cut();
    assert_dead(&mut s, "blackholed connection after cut");
}

#[test]
fn many_concurrent_connections() {
    let emu = emu(LinkSpec::new(10.0, 5.0, None));
    let clients: Vec<_> = (0..64u64)
        .map(|i| {
            let mut s = connect(&emu);
            thread::spawn(move || {
                for round in 0..3 {
                    let msg = random_bytes(1024, i * 10 + round);
                    let rtt = round_trip(&mut s, &msg);
                    assert!(rtt >= Duration::from_millis(10), "round trip took {rtt:?}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    let stats = wait_stats(&emu, |s| s.bytes_down == 64 * 3 * 1024);
    assert_eq!(stats.accepted, 64);
    assert_eq!(stats.bytes_up, 64 * 3 * 1024);
}

#[test]
fn peer_resets_close_only_that_connection() {
    // An upstream that reads nothing and closes: with unread bytes the close is a reset.
    let rude = TcpListener::bind("127.0.0.1:0").expect("bind");
    let rude_addr = rude.local_addr().expect("address");
    thread::spawn(move || {
        for stream in rude.incoming().flatten() {
            thread::sleep(Duration::from_millis(50));
            drop(stream);
        }
    });
    let emu = LinkEmu::start(rude_addr, LinkSpec::ideal()).expect("start");
    let mut s = connect(&emu);
    s.write_all(b"nobody reads this").expect("write");
    assert_dead(&mut s, "connection to a resetting upstream");

    // A client that leaves unread echo behind when it closes also resets.
    let emu = emu_with_echo_after_client_reset();
    let mut ok = connect(&emu);
    round_trip(&mut ok, b"still fine");
    wait_stats(&emu, |s| s.active == 1);
}

/// An echo emulator that has seen one client close with a reset.
fn emu_with_echo_after_client_reset() -> LinkEmu {
    let emu = emu(LinkSpec::ideal());
    let mut rude = connect(&emu);
    rude.write_all(&random_bytes(100_000, 3)).expect("write");
    thread::sleep(Duration::from_millis(100));
    drop(rude); // unread echo in the receive buffer: the kernel sends a reset
    wait_stats(&emu, |s| s.active == 0);
    emu
}

#[test]
fn drop_closes_connections() {
    let emu = emu(LinkSpec::ideal());
    let mut s = connect(&emu);
    round_trip(&mut s, b"ping");
    drop(emu);
    assert_dead(&mut s, "connection of a dropped emulator");
}

#[tokio::test]
async fn works_inside_an_async_runtime() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let emu = emu(LinkSpec::new(5.0, 0.0, None));
    let mut s = tokio::net::TcpStream::connect(emu.addr())
        .await
        .expect("connect");
    s.write_all(b"async").await.expect("write");
    let mut back = [0u8; 5];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("read echo");
    assert_eq!(&back, b"async");
    drop(emu); // must not panic on a runtime thread
    let mut rest = Vec::new();
    let end = tokio::time::timeout(FAST_FAIL, s.read_to_end(&mut rest)).await;
    assert!(end.is_ok(), "connection still open after drop");
}

#[test]
fn command_interface() {
    let emu = emu(LinkSpec::ideal());
    assert_eq!(
        emu.command("set latency_ms=20 bandwidth_mbps=40")
            .as_deref(),
        Ok("ok")
    );
    assert_eq!(emu.spec(), LinkSpec::new(20.0, 0.0, Some(40.0)));
    assert!(emu.command("set latency_ms=oops").is_err());
    let no_args = emu.command("cut now").expect_err("cut with an argument");
    assert!(no_args.contains("takes no arguments"), "{no_args}");
    let unknown = emu.command("fly now").expect_err("unknown command");
    assert!(unknown.contains("unknown command"), "{unknown}");
    assert_eq!(emu.mode(), LinkMode::Up);
    assert!(emu.command("").is_err());
    assert_eq!(emu.spec(), LinkSpec::new(20.0, 0.0, Some(40.0)));
    let stats = emu.command("stats").expect("stats");
    assert!(
        stats.starts_with("mode=up latency_ms=20 jitter_ms=0 bandwidth_mbps=40 accepted=0"),
        "{stats}"
    );
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first line of `source`, read on a helper thread, within [`PATIENCE`].
fn first_line(source: impl Read + Send + 'static) -> String {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(source).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(PATIENCE).expect("linkemu printed nothing")
}

/// Sends one control command and returns the answer line.
fn control(conn: &mut BufReader<TcpStream>, command: &str) -> String {
    writeln!(conn.get_mut(), "{command}").expect("send command");
    let mut answer = String::new();
    conn.read_line(&mut answer).expect("read answer");
    answer.trim_end().to_string()
}

#[test]
fn cli_control_protocol() {
    let upstream = echo_server();
    let mut child = Command::new(env!("CARGO_BIN_EXE_linkemu"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream.to_string(),
        ])
        .args(["--latency-ms", "0", "--control", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start linkemu");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let _child = Killed(child);

    let ready = first_line(stdout);
    let listen: SocketAddr = ready
        .strip_prefix("listening ")
        .and_then(|rest| rest.trim_end().strip_suffix(&format!(" -> {upstream}")))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected ready line {ready:?}"));
    let control_line = first_line(stderr);
    let control_addr: SocketAddr = control_line
        .trim_end()
        .strip_prefix("control ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected control line {control_line:?}"));
    let mut ctl = BufReader::new(TcpStream::connect(control_addr).expect("connect control"));

    let mut s = TcpStream::connect(listen).expect("connect through linkemu");
    s.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    round_trip(&mut s, b"ping");
    assert_eq!(control(&mut ctl, "set latency_ms=50 jitter_ms=0"), "ok");
    let rtt = round_trip(&mut s, b"slow");
    assert!(rtt >= Duration::from_millis(100), "round trip took {rtt:?}");
    assert!(control(&mut ctl, "set speed=3").starts_with("error: "));
    assert!(control(&mut ctl, "teleport").starts_with("error: "));
    assert_eq!(control(&mut ctl, "set bandwidth_mbps=none"), "ok");
    // Counters trail the bytes by a moment: poll.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = control(&mut ctl, "stats");
        assert!(
            stats.starts_with("mode=up latency_ms=50 jitter_ms=0 bandwidth_mbps=none accepted=1 "),
            "{stats}"
        );
        if stats.ends_with(" bytes_up=8 bytes_down=8") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "byte counts never matched: {stats}"
        );
        thread::sleep(Duration::from_millis(10));
    }

    assert_eq!(control(&mut ctl, "cut"), "ok");
    assert_dead(&mut s, "connection through a cut CLI link");
    assert_eq!(control(&mut ctl, "blackhole"), "ok");
    assert_eq!(control(&mut ctl, "restore"), "ok");
    assert_eq!(control(&mut ctl, "set latency_ms=0"), "ok");
    let mut again = TcpStream::connect(listen).expect("connect after restore");
    again
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    round_trip(&mut again, b"restored");
}

#[test]
fn cli_rejects_bad_arguments() {
    let bad: [&[&str]; 4] = [
        &[],
        &["--listen", "127.0.0.1:0"],
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:1",
            "--latency-ms",
            "-5",
        ],
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:1",
            "--warp",
            "9",
        ],
    ];
    for args in bad {
        let out = Command::new(env!("CARGO_BIN_EXE_linkemu"))
            .args(args)
            .output()
            .expect("run linkemu");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("usage: linkemu"), "{args:?}: {stderr}");
    }
}
