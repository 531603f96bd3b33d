//! The emulated testbed constellation (`skylark_netemu::constellation`) with real
//! `redis-server` processes; no wasmedge needed. Timing assertions are lower bounds, except
//! for generous upper bounds that separate "works" from "broken".

use skylark_core::topology::Schedule;
use skylark_netemu::constellation::{Constellation, NetOptions, PINNED_SLOT_MS};
use skylark_netemu::linkemu::{LinkMode, LinkSpec};
use skylark_testkit::now_ms;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const NODES: [&str; 8] = [
    "pi5u2", "pi5u3", "pi5u4", "pi4u5", "pi4u6", "pi4u8", "pi4p1", "pi5u1",
];
const CHAIN: [&str; 7] = [
    "pi5u2", "pi5u3", "pi5u4", "pi4u5", "pi4u6", "pi4u8", "pi4p1",
];

/// The testbed's characteristics without jitter, so that delays have a clean lower bound.
fn no_jitter() -> NetOptions {
    NetOptions {
        sat_sat: LinkSpec::new(10.0, 0.0, Some(40.0)),
        cloud_sat: LinkSpec::new(60.0, 0.0, Some(90.0)),
        ..NetOptions::default()
    }
}

/// A connection to `port` through which PING works.
fn redis_conn(port: u16) -> redis::Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    let _: String = redis::cmd("PING").query(&mut conn).unwrap();
    conn
}

/// The time one PING takes on `conn`.
fn ping_rtt(conn: &mut redis::Connection) -> Duration {
    let started = Instant::now();
    let pong: String = redis::cmd("PING").query(conn).unwrap();
    assert_eq!(pong, "PONG");
    started.elapsed()
}

/// True once nothing listens on loopback `port`.
fn refuses(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_err()
}

/// Polls `cond` every 2 ms until it holds; panics with `what` after `timeout`.
fn eventually(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    skylark_testkit::wait::eventually_every(what, timeout, Duration::from_millis(2), cond)
}

fn spec(latency_ms: f64, jitter_ms: f64, bandwidth_mbps: f64) -> LinkSpec {
    LinkSpec::new(latency_ms, jitter_ms, Some(bandwidth_mbps))
}

#[test]
fn pinned_slot_paths_match_the_testbed_and_proxies_delay_accordingly() {
    let c = Constellation::start(NetOptions {
        fixed_slot: Some(0),
        ..no_jitter()
    });
    assert_eq!(c.nodes(), NODES);
    assert_eq!(c.satellites(), CHAIN);
    assert_eq!(c.cloud(), "pi5u1");
    assert_eq!((c.slot_now(), c.emulated_slot()), (0, 0));
    assert!(c.until_next_slot() > Duration::from_millis(PINNED_SLOT_MS / 2));

    // Slot 0: the cloud is linked to pi5u2, at one end of the chain.
    assert_eq!(c.hops(0, "pi5u2", "pi5u3"), Some(1));
    assert_eq!(
        c.path_spec(0, "pi5u2", "pi5u3"),
        Some(spec(10.0, 0.0, 40.0))
    );
    assert_eq!(c.hops(0, "pi5u2", "pi5u1"), Some(1));
    assert_eq!(
        c.path_spec(0, "pi5u2", "pi5u1"),
        Some(spec(60.0, 0.0, 90.0))
    );
    assert_eq!(c.hops(0, "pi4p1", "pi5u1"), Some(7));
    assert_eq!(
        c.path_spec(0, "pi4p1", "pi5u1"),
        Some(spec(6.0 * 10.0 + 60.0, 0.0, 40.0))
    );
    assert_eq!(c.hops(0, "pi5u1", "pi4p1"), Some(7));
    // Slot 3: the cloud is linked to pi4u5, mid-chain.
    assert_eq!(c.hops(3, "pi4p1", "pi5u1"), Some(4));
    assert_eq!(c.hops(3, "pi5u2", "pi5u1"), Some(4));
    assert_eq!(c.hops(0, "pi5u2", "nowhere"), None);
    assert_eq!(c.path_spec(0, "nowhere", "pi5u2"), None);
    assert_eq!(c.hops(0, "pi4u5", "pi4u5"), Some(0));
    assert_eq!(c.path_spec(0, "pi4u5", "pi4u5"), Some(LinkSpec::ideal()));

    // Every proxy emulates its path of the current slot and reaches the right store.
    for from in NODES {
        for to in NODES.iter().filter(|to| **to != from) {
            let proxy = c.proxy(from, to);
            assert_eq!(Some(proxy.spec()), c.path_spec(0, from, to), "{from}->{to}");
            assert_eq!(proxy.upstream().port(), c.redis(to).port);
        }
    }
    let _: () = redis::cmd("SET")
        .arg("who")
        .arg("the cloud")
        .query(&mut c.redis("pi5u1").conn())
        .unwrap();

    // A round trip costs at least twice the path's one-way latency.
    let mut far = redis_conn(c.proxy("pi4p1", "pi5u1").port());
    let rtt = ping_rtt(&mut far);
    assert!(
        rtt >= Duration::from_millis(240),
        "pi4p1->pi5u1 PING {rtt:?}"
    );
    assert!(rtt < Duration::from_secs(2), "pi4p1->pi5u1 PING {rtt:?}");
    let who: String = redis::cmd("GET").arg("who").query(&mut far).unwrap();
    assert_eq!(who, "the cloud");
    let mut near = redis_conn(c.proxy("pi5u2", "pi5u3").port());
    let rtt = ping_rtt(&mut near);
    assert!(
        rtt >= Duration::from_millis(20),
        "pi5u2->pi5u3 PING {rtt:?}"
    );
    // The own store is direct.
    let rtt = ping_rtt(&mut c.redis("pi4p1").conn());
    assert!(rtt < Duration::from_millis(20), "direct PING {rtt:?}");
}

#[test]
fn proxies_follow_the_slot_schedule() {
    let slot_ms = 1500;
    let c = Constellation::start(NetOptions {
        slot_ms,
        ..no_jitter()
    });
    let schedule = c.schedule();
    assert_eq!(schedule.slot_ms(), slot_ms);
    for _ in 0..2 {
        // A moment inside slot `current`, not too close to its end.
        let (current, boundary) = loop {
            let now = now_ms();
            let current = c.emulated_slot();
            let absolute = schedule.absolute_slot(now);
            let boundary = schedule.epoch_ms() + (absolute + 1) * slot_ms;
            if absolute % 7 == current as u64 && boundary > now + 300 {
                break (current, boundary);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let next = (current + 1) % 7;
        // The cloud's ground link moves one satellite along the chain: pi5u2's path to the
        // cloud changes at every boundary.
        assert_ne!(
            c.path_spec(current, "pi5u2", "pi5u1"),
            c.path_spec(next, "pi5u2", "pi5u1")
        );
        let all_match = |slot: usize| {
            NODES.iter().all(|from| {
                NODES
                    .iter()
                    .filter(|to| *to != from)
                    .all(|to| Some(c.proxy(from, to).spec()) == c.path_spec(slot, from, to))
            })
        };
        assert!(all_match(current), "proxies emulate slot {current}");
        eventually(
            &format!("every proxy emulates slot {next}"),
            Duration::from_millis(slot_ms + 2000),
            || all_match(next),
        );
        let seen = now_ms();
        assert!(seen >= boundary, "changed {} ms early", boundary - seen);
        eprintln!(
            "slot {next} emulated {} ms after its boundary",
            seen - boundary
        );
        assert!(
            seen < boundary + 300,
            "changed {} ms after the boundary",
            seen - boundary
        );
        // The plugin's view of the document agrees.
        assert_eq!(schedule.slot_at(seen), next);
        assert_eq!(c.emulated_slot(), next);
    }
}

#[test]
fn env_and_topology_file_describe_the_testbed() {
    let started = now_ms();
    let c = Constellation::start(NetOptions::default());
    let env: BTreeMap<String, String> = c.env_for("pi4u5").into_iter().collect();
    assert_eq!(env["SKYLARK_REDIS_URL"], c.redis("pi4u5").url);
    assert_eq!(env["SKYLARK_NODE_NAME"], "pi4u5");
    assert_eq!(env["SKYLARK_PROPAGATION"], "on");
    assert_eq!(env["SKYLARK_LOG"], "warn");
    assert_eq!(
        PathBuf::from(&env["SKYLARK_TOPOLOGY_FILE"]),
        c.topology_path()
    );
    let addrs: BTreeMap<&str, &str> = env["SKYLARK_NODE_ADDRS"]
        .split(',')
        .map(|pair| pair.split_once('=').unwrap())
        .collect();
    let others: Vec<&str> = NODES.iter().copied().filter(|n| *n != "pi4u5").collect();
    assert_eq!(addrs.keys().copied().collect::<Vec<_>>().len(), 7);
    for other in others {
        let url = format!("redis://127.0.0.1:{}", c.proxy("pi4u5", other).port());
        assert_eq!(addrs[other], url, "{other}");
    }

    let doc = std::fs::read(c.topology_path()).unwrap();
    let s = Schedule::parse(&doc).unwrap();
    assert_eq!((s.len(), s.slots(), s.slot_ms()), (8, 7, 60_000));
    assert_eq!(s.global().map(|g| s.name(g)), Some("pi5u1"));
    assert_eq!(s.digest(), c.schedule().digest());
    assert!(s.epoch_ms() >= started && s.epoch_ms() <= now_ms());
    let raw: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    for node in raw["nodes"].as_array().unwrap() {
        let name = node["name"].as_str().unwrap();
        assert_eq!(node["redis"], c.redis(name).url.as_str(), "{name}");
        assert!(node.get("ip").is_none(), "no testbed address for {name}");
    }
    // The measured characteristics, by link type; jitter adds in quadrature along a path.
    let cloud = s.id("pi5u1").unwrap();
    let ground = s.link(0, s.id("pi5u2").unwrap(), cloud).unwrap();
    assert_eq!(
        (ground.latency_ms, ground.jitter_ms, ground.bandwidth_mbps),
        (60.0, 30.0, 90.0)
    );
    let isl = s
        .link(0, s.id("pi4u8").unwrap(), s.id("pi4p1").unwrap())
        .unwrap();
    assert_eq!(
        (isl.latency_ms, isl.jitter_ms, isl.bandwidth_mbps),
        (10.0, 9.0, 40.0)
    );
    let far = c.path_spec(0, "pi4p1", "pi5u1").unwrap();
    assert_eq!(far.latency_ms, 120.0);
    assert!((far.jitter_ms - f64::sqrt(6.0 * 81.0 + 900.0)).abs() < 1e-9);
    assert_eq!(far.bandwidth_mbps, Some(40.0));
}

#[test]
fn drop_stops_stores_and_proxies_and_removes_files() {
    let c = Constellation::start(NetOptions::default());
    let stores: Vec<u16> = NODES.iter().map(|n| c.redis(n).port).collect();
    let proxies: Vec<u16> = vec![
        c.proxy("pi5u2", "pi5u1").port(),
        c.proxy("pi5u1", "pi4p1").port(),
    ];
    let dir = c.dir().to_path_buf();
    assert!(c.topology_path().starts_with(&dir) && c.topology_path().exists());
    assert!(stores.iter().all(|p| !refuses(*p)));
    drop(c);
    for port in stores.iter().chain(&proxies) {
        assert!(refuses(*port), "port {port} still open after drop");
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// A running `constellation-hold` and what it printed before `ready`.
struct Hold {
    child: Child,
    dir: PathBuf,
    ports: Vec<u16>,
}

impl Hold {
    /// Starts `constellation-hold --slot-ms 1000` and reads its report.
    fn start() -> Hold {
        let mut child = Command::new(env!("CARGO_BIN_EXE_constellation-hold"))
            .args(["--slot-ms", "1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let (mut dir, mut ports) = (None, Vec::new());
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("constellation-hold said ready");
            let words: Vec<&str> = line.split(' ').collect();
            match words[..] {
                ["dir", path] => dir = Some(PathBuf::from(path)),
                ["node", _, _, url] => {
                    let port = url.rsplit(':').next().unwrap().parse().unwrap();
                    ports.push(port);
                }
                ["ready"] => break,
                _ => {}
            }
        }
        assert_eq!(ports.len(), 8);
        let dir = dir.expect("constellation-hold printed its directory");
        assert!(dir.join("topology.json").exists());
        assert!(ports.iter().all(|p| !refuses(*p)));
        Hold { child, dir, ports }
    }

    /// Sends `signal` and waits for the process to end.
    fn signal(mut self, signal: i32) -> (ExitStatus, Hold) {
        // SAFETY: a plain kill(2) of our own child.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, signal) },
            0
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self);
            }
            assert!(Instant::now() < deadline, "still running after {signal}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn interrupts_stop_the_stores_and_remove_the_files() {
    use std::os::unix::process::ExitStatusExt;
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let (status, hold) = Hold::start().signal(signal);
        assert_eq!(
            status.code(),
            Some(code),
            "{status:?} after signal {signal}"
        );
        assert_eq!(status.signal(), None);
        // The handler kills and reaps the stores before exiting; a port can still take a
        // moment to refuse, so poll with a deadline rather than look once.
        eventually(
            &format!("every store is gone after signal {signal}"),
            Duration::from_secs(10),
            || hold.ports.iter().all(|p| refuses(*p)),
        );
        assert!(!hold.dir.exists(), "{} left behind", hold.dir.display());
    }
}

#[test]
fn stores_die_with_a_killed_process() {
    let (status, hold) = Hold::start().signal(libc::SIGKILL);
    assert!(!status.success());
    // The kernel kills the stores (parent-death signal); that is asynchronous.
    eventually(
        "every store of a SIGKILLed constellation-hold is gone",
        Duration::from_secs(10),
        || hold.ports.iter().all(|p| refuses(*p)),
    );
    // Only SIGKILL leaves the directory behind.
    std::fs::remove_dir_all(&hold.dir).unwrap();
}

#[test]
fn a_faulted_path_stays_down_across_slot_changes_until_healed() {
    let slot_ms = 1000;
    let c = Constellation::start(NetOptions {
        slot_ms,
        ..no_jitter()
    });
    // pi5u2's path to the cloud exists in every slot (it only changes its shape).
    let (from, to) = ("pi5u2", "pi5u1");
    c.fault_link(from, to, true);
    assert_eq!(c.proxy(from, to).mode(), LinkMode::Blackhole);
    let first = c.emulated_slot();
    eventually(
        "the next slot is emulated",
        Duration::from_millis(slot_ms + 2000),
        || c.emulated_slot() != first,
    );
    let slot = c.emulated_slot();
    assert_eq!(
        c.proxy(from, to).mode(),
        LinkMode::Blackhole,
        "the slot change left the fault in place"
    );
    assert_eq!(
        Some(c.proxy(from, to).spec()),
        c.path_spec(slot, from, to),
        "but re-specced the path"
    );
    c.heal_link(from, to);
    assert_eq!(c.proxy(from, to).mode(), LinkMode::Up);
    // A healed path becomes what the current slot makes it: cut where the slot has no
    // path (a slot boundary passing meanwhile makes the round inconclusive: again).
    for (a, b) in NODES
        .iter()
        .flat_map(|a| NODES.iter().map(move |b| (*a, *b)))
        .filter(|(a, b)| a != b)
    {
        loop {
            let slot = c.slot_now();
            c.fault_link(a, b, true);
            c.heal_link(a, b);
            let mode = c.proxy(a, b).mode();
            if c.slot_now() != slot {
                continue;
            }
            let want = match c.path_spec(slot, a, b) {
                Some(_) => LinkMode::Up,
                None => LinkMode::Cut,
            };
            assert_eq!(mode, want, "{a}->{b} in slot {slot}");
            break;
        }
    }
}
