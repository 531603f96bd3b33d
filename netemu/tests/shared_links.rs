//! The shared-link model of the emulator, measured through real sockets: flows on one
//! physical link share its bandwidth (also between different node pairs of the
//! constellation), a multi-hop route runs at its bottleneck, the one-way delay has the
//! specified mean and deviation, and a new connection pays one round trip.
//!
//! Rates are in Mbit/s of 10^6 bits. Tolerances are the issue's: ±3 Mbit/s on a half
//! share, 10% on the mean delay and 20% on its deviation over 1,000 samples.

use skylark_netemu::constellation::{Constellation, NetOptions};
use skylark_netemu::linkemu::{LinkEmu, LinkSpec};
use skylark_netemu::wire::{Route, Wire};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Read deadline for operations that should succeed.
const PATIENCE: Duration = Duration::from_secs(20);

/// A server that reads each connection to its end and then answers one byte.
fn sink_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let addr = listener.local_addr().expect("sink address");
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            thread::spawn(move || {
                if io::copy(&mut stream, &mut io::sink()).is_ok() {
                    let _ = stream.write_all(b"k");
                }
            });
        }
    });
    addr
}

/// A server that echoes every byte it reads.
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

/// A server that reports the arrival time of every byte it reads on `arrivals`.
fn timing_server(arrivals: mpsc::Sender<Instant>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind timing server");
    let addr = listener.local_addr().expect("timing server address");
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let arrivals = arrivals.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    let now = Instant::now();
                    for _ in 0..n {
                        let _ = arrivals.send(now);
                    }
                }
            });
        }
    });
    addr
}

/// A connection to `addr` with no Nagle delay and a read deadline.
fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    s
}

/// Sends `bytes` to a sink through `addr`, waits for its answer; returns Mbit/s.
fn sink_rate(s: &mut TcpStream, bytes: usize) -> f64 {
    let payload = vec![0x5a_u8; bytes];
    let started = Instant::now();
    s.write_all(&payload).expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).expect("sink answer");
    mbps(bytes, started.elapsed())
}

/// `bytes` over `took` in Mbit/s.
fn mbps(bytes: usize, took: Duration) -> f64 {
    bytes as f64 * 8.0 / took.as_secs_f64() / 1e6
}

/// The wires of a chain of links with `specs`, as a route from its first node to its
/// last and back.
fn chain_route(specs: &[LinkSpec]) -> Route {
    let there = specs
        .iter()
        .enumerate()
        .map(|(i, s)| Wire::new(*s, 2 * i as u64))
        .collect();
    let back = specs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, s)| Wire::new(*s, 2 * i as u64 + 1))
        .collect();
    Route::new(there, back)
}

#[test]
fn two_flows_over_one_satellite_link_each_get_half_of_it() {
    // The testbed's satellite links: 10 ms, 9 ms jitter, 40 Mbit/s; slot 0 pinned.
    let c = Constellation::start(NetOptions {
        fixed_slot: Some(0),
        ..NetOptions::default()
    });
    let sats = c.satellites();
    let (a, b, target) = (&sats[0], &sats[1], &sats[2]);
    assert_eq!(c.hops(0, a, target), Some(2), "{a} -> {target}");
    assert_eq!(c.hops(0, b, target), Some(1), "{b} -> {target}");
    let link = c
        .options()
        .sat_sat
        .bandwidth_mbps
        .expect("a satellite bandwidth");
    assert_eq!(link, 40.0);

    // Two different node pairs whose paths share the link b - target.
    const BYTES: usize = 5_000_000;
    let start = Arc::new(Barrier::new(2));
    let flows: Vec<_> = [(a, "flow-a"), (b, "flow-b")]
        .into_iter()
        .map(|(from, key)| {
            let port = c.proxy(from, target).port();
            let start = Arc::clone(&start);
            thread::spawn(move || {
                let client =
                    redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("redis client");
                let mut conn = client.get_connection().expect("connect through the proxy");
                let _: String = redis::cmd("PING").query(&mut conn).expect("PING");
                let value = vec![7u8; BYTES];
                start.wait();
                let started = Instant::now();
                let _: () = redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .query(&mut conn)
                    .expect("SET");
                mbps(BYTES, started.elapsed())
            })
        })
        .collect();
    let rates: Vec<f64> = flows
        .into_iter()
        .map(|f| f.join().expect("flow thread"))
        .collect();
    for rate in &rates {
        assert!(
            (rate - link / 2.0).abs() <= 3.0,
            "each flow should get 20 ± 3 Mbit/s of the shared 40 Mbit/s link: {rates:?}"
        );
    }
}

#[test]
fn two_connections_through_one_emulator_share_its_bandwidth() {
    let emu = LinkEmu::start(sink_server(), LinkSpec::new(5.0, 0.0, Some(40.0)))
        .expect("start link emulator");
    const BYTES: usize = 4_000_000;
    let start = Arc::new(Barrier::new(2));
    let flows: Vec<_> = (0..2)
        .map(|_| {
            let mut s = connect(emu.addr());
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                sink_rate(&mut s, BYTES)
            })
        })
        .collect();
    let rates: Vec<f64> = flows.into_iter().map(|f| f.join().expect("flow")).collect();
    assert!(
        rates.iter().all(|r| (r - 20.0).abs() <= 3.0),
        "each of two flows on 40 Mbit/s should get 20 ± 3 Mbit/s: {rates:?}"
    );
}

#[test]
fn a_flow_over_three_hops_gets_the_bottleneck() {
    let fast = LinkSpec::new(2.0, 0.0, Some(80.0));
    let slow = LinkSpec::new(2.0, 0.0, Some(20.0));
    let emu = LinkEmu::start(sink_server(), LinkSpec::ideal()).expect("start link emulator");
    emu.route(chain_route(&[fast, slow, fast]));
    assert_eq!(emu.spec(), LinkSpec::new(6.0, 0.0, Some(20.0)));
    let mut s = connect(emu.addr());
    let rate = sink_rate(&mut s, 2_500_000);
    assert!(
        (rate - 20.0).abs() <= 3.0,
        "a flow over 80, 20 and 80 Mbit/s links should get 20 ± 3 Mbit/s: {rate:.1}"
    );
}

#[test]
fn one_way_delay_has_the_specified_mean_and_deviation() {
    // Two hops of 25 ms ± 15 ms: mean 50 ms, deviation sqrt(2) * 15 / sqrt(3) ms. Long
    // enough that the timer's millisecond rounding and a busy machine's scheduling stay
    // well inside the tolerance. Five connections over the same wires, 200 samples each.
    let hop = LinkSpec::new(25.0, 15.0, None);
    let route = chain_route(&[hop, hop]);
    let want_mean = 2.0 * hop.latency_ms;
    let want_std = f64::sqrt(2.0) * hop.delay_std_ms();
    let flows: Vec<_> = (0..5)
        .map(|_| {
            let (arrivals_tx, arrivals) = mpsc::channel();
            let emu = LinkEmu::start(timing_server(arrivals_tx), LinkSpec::ideal())
                .expect("start link emulator");
            emu.route(route.clone());
            thread::spawn(move || {
                let mut s = connect(emu.addr());
                // The first byte also pays the handshake: not a sample.
                s.write_all(b"w").expect("write");
                arrivals.recv_timeout(PATIENCE).expect("warm-up byte");
                (0..200)
                    .map(|_| {
                        let sent = Instant::now();
                        s.write_all(b"x").expect("write");
                        let arrived = arrivals.recv_timeout(PATIENCE).expect("byte arrives");
                        arrived.duration_since(sent).as_secs_f64() * 1000.0
                    })
                    .collect::<Vec<f64>>()
            })
        })
        .collect();
    let samples: Vec<f64> = flows
        .into_iter()
        .flat_map(|f| f.join().expect("sampling thread"))
        .collect();
    assert_eq!(samples.len(), 1000);
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let std = f64::sqrt(samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0));
    assert!(
        (mean - want_mean).abs() <= 0.1 * want_mean,
        "mean one-way delay {mean:.2} ms, want {want_mean} ms ± 10%"
    );
    assert!(
        (std - want_std).abs() <= 0.2 * want_std,
        "one-way delay deviation {std:.2} ms, want {want_std:.2} ms ± 20%"
    );
    eprintln!("one-way delay over 1000 samples: mean {mean:.2} ms, deviation {std:.2} ms");
}

#[test]
fn a_connect_costs_one_round_trip() {
    let spec = LinkSpec::new(25.0, 0.0, None);
    let rtt = Duration::from_millis(50);
    let emu = LinkEmu::start(echo_server(), spec).expect("start link emulator");
    let echo = |s: &mut TcpStream| {
        s.write_all(b"ping").expect("write");
        let mut back = [0u8; 4];
        s.read_exact(&mut back).expect("echo");
    };
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    // A fresh connection: connect, then one request and its answer.
    let fresh = median(
        (0..5)
            .map(|_| {
                let started = Instant::now();
                let mut s = connect(emu.addr());
                echo(&mut s);
                started.elapsed()
            })
            .collect(),
    );
    // The same request on an established connection.
    let mut s = connect(emu.addr());
    echo(&mut s);
    let warm = median(
        (0..5)
            .map(|_| {
                let started = Instant::now();
                echo(&mut s);
                started.elapsed()
            })
            .collect(),
    );
    let setup = fresh.saturating_sub(warm);
    assert!(
        setup >= rtt - Duration::from_millis(3) && setup <= rtt + Duration::from_millis(25),
        "a connect should cost one round trip ({rtt:?}): fresh {fresh:?}, warm {warm:?}"
    );
}

#[test]
fn a_held_handshake_does_not_hold_up_the_next_connection() {
    // A slow link: the first connection's handshake holds its bytes for 2 s. Then the
    // link turns fast, as at a slot boundary, and a second connection opens.
    let slow = LinkSpec::new(1000.0, 0.0, None);
    let fast = LinkSpec::new(5.0, 0.0, None);
    let emu = LinkEmu::start(echo_server(), slow).expect("start link emulator");
    let opened = Instant::now();
    let mut first = connect(emu.addr());
    first.write_all(b"held ").expect("write");
    // Let the emulator read (and schedule) the held bytes before the link changes.
    thread::sleep(Duration::from_millis(100));
    emu.set(fast);
    first.write_all(b"bytes").expect("write");

    // The second connection pays the fast link's handshake and round trip, not the wait
    // for the first connection's handshake.
    let started = Instant::now();
    let mut second = connect(emu.addr());
    second.write_all(b"ping").expect("write");
    let mut back = [0u8; 4];
    second
        .read_exact(&mut back)
        .expect("echo on the second connection");
    let took = started.elapsed();
    assert_eq!(&back, b"ping");
    let budget = Duration::from_millis(4 * 5 + 200);
    assert!(
        took <= budget,
        "a connection on the fast link took {took:?} (budget {budget:?}): it waited behind \
         the first connection's held handshake"
    );

    // The first connection's bytes still come in order, after its own handshake.
    let mut echoed = [0u8; 10];
    first
        .read_exact(&mut echoed)
        .expect("echo on the first connection");
    let took = opened.elapsed();
    assert_eq!(&echoed, b"held bytes");
    assert!(
        took >= Duration::from_millis(2000),
        "the first connection's bytes came back after {took:?}, before its 2 s handshake"
    );
}
