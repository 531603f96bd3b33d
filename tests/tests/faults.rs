//! Fault injection, the quick versions of `scripts/fault-run.sh` (RELIABILITY.md,
//! section 2), on the emulated constellation with durable node stores (AOF, `appendfsync
//! always`), real wasmedge running the fault guest (AOT) and the real plugin:
//!
//! * a few hundred puts on two nodes while paths are cut, blackholed and restored, a node
//!   is isolated and node `redis-server`s are SIGKILLed and restarted: nothing
//!   acknowledged is lost, nothing is corrupted, every outbox drains and every put
//!   reaches the global store;
//! * `wasmedge` SIGKILLed at random moments of large multi-field puts: no store ever
//!   holds part of a bundle, and later instances finish every job left behind;
//! * a directed case: a job resumed from the outbox (with copies already made) that
//!   absorbs a later put of its chain must still copy that put everywhere;
//! * the harness itself: a node store killed and restarted keeps what it acknowledged
//!   when it runs with an append-only file, and nothing without.

use fault_guest::{Put, Shape};
use skylark_tests::cluster::{eventually, Cluster, NS};
use skylark_tests::constellation::{Constellation, Durability, NetOptions};
use skylark_tests::faults::{self, Bench, KillOptions, PutOptions, FAULT_KINDS};
use std::time::Duration;

#[test]
fn a_killed_store_restarts_with_what_it_acknowledged_only_when_durable() {
    for (durability, kept) in [(Durability::AofAlways, true), (Durability::Volatile, false)] {
        let opts = NetOptions {
            fixed_slot: Some(0),
            ..NetOptions::default()
        };
        let mut c = Constellation::try_start_with(opts, durability)
            .unwrap_or_else(|e| panic!("cannot start the constellation: {e}"));
        let url = c.redis("pi5u3").url.clone();
        let conn = || redis::Client::open(url.as_str()).and_then(|c| c.get_connection());
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query(&mut conn().expect("connect"))
            .expect("SET");
        c.kill_store("pi5u3").expect("kill");
        assert!(!c.store_running("pi5u3"));
        assert!(conn().is_err(), "the store is down");
        c.restart_store("pi5u3").expect("restart");
        assert!(c.store_running("pi5u3"));
        let v: Option<String> = redis::cmd("GET")
            .arg("k")
            .query(&mut conn().expect("connect again"))
            .expect("GET");
        assert_eq!(v.is_some(), kept, "{durability:?}");
    }
}

fn bench(run: &str) -> Bench {
    let module = skylark_tests::aot("fault-guest");
    let mut b = Bench::start(Durability::AofAlways, &module, run)
        .unwrap_or_else(|e| panic!("cannot start the constellation: {e}"));
    b.verbose = true;
    b
}

#[test]
fn puts_under_cut_links_and_killed_stores_are_neither_lost_nor_corrupted() {
    let b = bench("q");
    let opts = PutOptions {
        puts: 300,
        seed: 7,
        duration: Duration::from_secs(10),
        nodes: vec!["pi5u2".into(), "pi4u6".into()],
        batch: 50,
        fault_every: Some(Duration::from_millis(400)),
        drain_timeout: Duration::from_secs(60),
        ..PutOptions::default()
    };
    let t = faults::run_puts(&b, &opts).unwrap_or_else(|e| panic!("fault run failed: {e}"));
    eprintln!("{t}");
    assert_eq!(t.attempted, 300, "{t}");
    assert!(t.acknowledged > 0, "{t}");
    for kind in FAULT_KINDS {
        assert!(t.faults[kind] >= 1, "no {kind} fault injected:\n{t}");
    }
    assert_eq!(t.lost, 0, "{t}");
    assert_eq!(t.corrupted, 0, "{t}");
    assert_eq!(t.outbox_left, 0, "{t}");
    assert_eq!(t.not_at_global, 0, "{t}");
    assert_eq!(t.unreported, 0, "{t}");
    assert!(t.clean(), "{t}");
}

#[test]
fn a_sigkilled_wasmedge_leaves_no_partial_bundle_and_no_stuck_job() {
    let b = bench("k");
    let opts = KillOptions {
        rounds: 6,
        seed: 3,
        size: 512 * 1024,
        drain_timeout: Duration::from_secs(60),
        ..KillOptions::default()
    };
    let t = faults::run_kills(&b, &opts).unwrap_or_else(|e| panic!("kill run failed: {e}"));
    eprintln!("{t}");
    assert!(t.killed >= 1, "{t}");
    assert_eq!(t.partial, 0, "{t}");
    assert_eq!(t.corrupted, 0, "{t}");
    assert_eq!(t.lost, 0, "{t}");
    assert_eq!(t.outbox_left, 0, "{t}");
    assert_eq!(t.not_at_global, 0, "{t}");
    assert!(t.complete >= t.acknowledged, "{t}");
}

/// A run name whose puts 0, 1 and 2 on `node` (tasks t0, t1, t2 of one chain) all use
/// policy `skylark`.
fn skylark_run(node: &str) -> String {
    (0..)
        .map(|i| format!("r{i}"))
        .find(|run| (0..3).all(|id| Put::new(run, node, id, Shape::default()).policy == "skylark"))
        .expect("some run name")
}

#[test]
fn a_resumed_job_that_absorbs_a_later_put_still_copies_it_to_the_global_store() {
    let module = skylark_tests::aot("fault-guest");
    let mut c = Cluster::constellation();
    // Copies to pi5u3 keep failing (never re-targeted) while the link is cut; leases are
    // long enough that the next process does not claim the first job at once.
    c.env = vec![
        ("SKYLARK_RETRIES".into(), "1000".into()),
        ("SKYLARK_LEASE_MS".into(), "3000".into()),
        ("SKYLARK_SWEEP_MS".into(), "100".into()),
    ];
    let node = "pi5u2";
    let run = skylark_run(node);
    let chain = Put::new(&run, node, 0, Shape::default()).chain;
    c.node("pi5u3").link.cut();

    // Process 1 puts t0 and exits after 0.5 s: the global copy is made, the copy to pi5u3
    // is not; the job stays in the outbox with that progress.
    let p1 = c
        .guest_at(&module, node)
        .env("SKYLARK_EXIT_FLUSH_MS", "500")
        .args(["puts", &run, node, "0", "1", "--dests", "pi5u3"])
        .run(Duration::from_secs(60));
    p1.assert_success();
    assert!(p1.stdout.contains("p 0 0 Ok"), "{}", p1.stdout);
    assert!(
        c.bundle("pi5u1", &chain).contains_key("t0"),
        "t0 at the global store"
    );
    assert_eq!(c.outbox_len(node), 1, "t0's job waits for pi5u3");

    // Process 2 puts t1 at once (its job starts and retries pi5u3), claims t0's job once
    // its lease is over (it waits behind t1's), and puts t2 six seconds later: t2's job
    // merges into the waiting resumed one.
    let p2 = c
        .guest_at(&module, node)
        .env("SKYLARK_EXIT_FLUSH_MS", "30000")
        .args(["puts", &run, node, "1", "2", "--dests", "pi5u3"])
        .args(["--interval-us", "6000000"])
        .spawn();
    let mut seen = String::new();
    while !seen.contains("p 2 ") {
        match p2.next_line(Duration::from_secs(30)) {
            Some((line, _)) => {
                seen.push_str(&line);
                seen.push('\n');
            }
            None => panic!("process 2 stopped early: {seen}"),
        }
    }
    assert!(seen.contains("p 2 0 Ok"), "{seen}");
    c.node("pi5u3").link.restore();
    let run2 = p2.wait(Duration::from_secs(90));
    run2.assert_success();
    eventually("every job is done", Duration::from_secs(30), || {
        c.outbox_len(node) == 0
    });
    // The case arose: process 2 resumed the first job and merged a put into it.
    assert!(
        run2.stderr.contains(&format!("of chain {chain}")),
        "process 2 resumed no job of {chain}:\n{}",
        run2.stderr
    );
    assert!(c.stats(node).get("coalesced") >= Some(&1));
    let global = c.bundle("pi5u1", &chain);
    for task in ["t0", "t1", "t2"] {
        let want = Put::new(&run, node, task[1..].parse().unwrap(), Shape::default()).value();
        assert!(
            global.get(task) == Some(&want),
            "{task} of {chain} is not at the global store with its bytes (it has {:?}); \
             process 2's log:\n{}",
            global.keys().collect::<Vec<_>>(),
            run2.stderr
        );
    }
}

#[test]
fn a_job_waits_for_a_topology_it_could_not_load_instead_of_finishing_without_copies() {
    let c = Cluster::constellation();
    // The topology file appears only after the put (as when the local store, which may
    // hold the topology key, is down when the topology is first due).
    let late = c.topology_path().with_file_name("late-topology.json");
    let chain = skylark_tests::chain_id("late-topology");
    let running = c
        .guest("probe", "pi5u2")
        .env("SKYLARK_TOPOLOGY_FILE", &late.to_string_lossy())
        .env("SKYLARK_TOPOLOGY_REFRESH_MS", "100")
        .args(["put", &chain, "pre", "1000", "7", "--dest", "pi5u3"])
        .spawn();
    let (line, _) = running
        .next_line(Duration::from_secs(60))
        .expect("the put's report");
    assert!(line.contains("\"status\":0"), "{line}");
    // The job has tried (and saved its progress in the outbox) without a topology.
    eventually(
        "the job waits in the outbox",
        Duration::from_secs(20),
        || {
            let jobs: Vec<String> = redis::cmd("HVALS")
                .arg(format!("{NS}:outbox:jobs"))
                .query(&mut c.node("pi5u2").redis.conn())
                .expect("HVALS");
            jobs.iter().any(|j| {
                serde_json::from_str::<serde_json::Value>(j)
                    .is_ok_and(|v| v["chain"] == chain.as_str() && v["attempts"].as_u64() > Some(0))
            })
        },
    );
    std::fs::copy(c.topology_path(), &late).expect("install the topology");
    let run = running.wait(Duration::from_secs(60));
    run.assert_success();
    assert_eq!(c.outbox_len("pi5u2"), 0, "{}", run.stderr);
    assert!(
        c.bundle("pi5u1", &chain).contains_key("pre"),
        "the put reached the global store once the topology was known:\n{}",
        run.stderr
    );
    assert!(c.bundle("pi5u3", &chain).contains_key("pre"));
}
