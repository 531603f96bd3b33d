//! The outbox leases of propagation jobs (issue 13, the throughput phase's undrained
//! outboxes), on the emulated constellation (`Constellation::for_system_tests`, slot 0:
//! pi5u2 - pi5u3 neighbours, the global store pi5u1 behind pi5u2), with real wasmedge
//! running the probe guest and the real plugin:
//! - a job whose copies take longer than a lease stays with the process running it: the
//!   plugin renews its lease, so the next process on the node does not claim it and send
//!   the same bytes again over the same loaded link;
//! - a job a process gives up at exit (its exit flush ran out) is claimable at once: the
//!   next process on the node resumes it, not only one that comes after the lease ran out.

use skylark_netemu::constellation::Constellation;
use skylark_netemu::linkemu::LinkSpec;
use skylark_testkit::{chain_id, eventually, RUN_TIMEOUT};
use std::time::{Duration, Instant};

/// Another plugin instance on `node`: a local-only get of a chain nobody wrote (its
/// first outbox sweep claims whatever is due; its exit flush waits for what it claimed).
fn other_process(c: &Constellation, node: &str, env: &[(&str, &str)]) {
    let mut guest = c
        .guest("probe", node)
        .args(["get", &chain_id("other"), "--local-only"]);
    for (k, v) in env {
        guest = guest.env(k, v);
    }
    let run = guest.run(RUN_TIMEOUT);
    run.assert_success();
    assert_eq!(run.json()["status"], 1, "{}", run.stdout);
}

#[test]
fn a_job_running_longer_than_its_lease_is_not_claimed_by_another_process() {
    let c = Constellation::for_system_tests();
    // pi5u3 behind a slow link: the 1 MB copy takes about 4 s, well over the 1.5 s lease
    // (the lease is renewed every 0.5 s, so a loaded machine has 1 s of slack). The
    // copy's deadline allows 1 Mbit/s (9 s): at the default 5 Mbit/s (2.6 s, then 5.2 s
    // behind the first attempt's bytes) it is cut off and the job re-targeted to pi5u2,
    // and no copy outlasts the lease.
    let lease = ("SKYLARK_LEASE_MS", "1500");
    c.shape_links_to("pi5u3", LinkSpec::new(20.0, 0.0, Some(2.0)));
    let chain = chain_id("long");
    let producer = c
        .guest("probe", "pi5u2")
        .args(["put", &chain, "pre", "1000000", "7", "--dest", "pi5u3"])
        .env(lease.0, lease.1)
        .env("SKYLARK_COPY_MIN_MBPS", "1")
        .spawn();
    eventually(
        "the put is stored with its outbox job",
        Duration::from_secs(30),
        || !c.bundle("pi5u2", &chain).is_empty() && c.outbox_len("pi5u2") == 1,
    );
    // Processes on pi5u2 while the copy is on its way, the first well after the lease
    // taken at the put has run out.
    std::thread::sleep(Duration::from_millis(2000));
    let until = Instant::now() + Duration::from_millis(1500);
    let mut others = 0;
    while Instant::now() < until && c.outbox_len("pi5u2") == 1 {
        other_process(&c, "pi5u2", &[lease]);
        others += 1;
    }
    producer.wait(RUN_TIMEOUT).assert_success();
    assert!(
        others >= 1,
        "no other process ran while the copy was on its way"
    );
    assert_eq!(
        c.stats("pi5u2").get("resumed"),
        None,
        "another process claimed the job while the producer still copied it ({others} ran)"
    );
    assert_eq!(
        c.stats("pi5u2").get("retries"),
        None,
        "the copy was made in one attempt"
    );
    assert_eq!(c.outbox_len("pi5u2"), 0, "the producer finished its job");
    assert_eq!(c.placement("pi5u3", &chain)["pre"], "pi5u3");
}

#[test]
fn a_job_given_up_at_exit_is_claimed_at_once_by_the_next_process() {
    let c = Constellation::for_system_tests();
    // A lease far longer than the test: only a released job can be claimed in time.
    let lease = ("SKYLARK_LEASE_MS", "60000");
    c.cut_links_to("pi5u1");
    let chain = chain_id("given-up");
    let run = c
        .guest("probe", "pi5u2")
        .args(["put", &chain, "pre", "1000", "7", "--dest", "pi5u3"])
        .env(lease.0, lease.1)
        .env("SKYLARK_EXIT_FLUSH_MS", "300")
        .run(RUN_TIMEOUT);
    run.assert_success();
    assert_eq!(run.json()["status"], 0, "{}", run.stdout);
    assert_eq!(
        c.outbox_len("pi5u2"),
        1,
        "the global copy could not be made"
    );
    assert!(c.bundle("pi5u1", &chain).is_empty());
    c.heal_links_to("pi5u1");

    // The very next process on pi5u2 claims the job and finishes it before it exits.
    other_process(&c, "pi5u2", &[lease]);
    assert_eq!(
        c.outbox_len("pi5u2"),
        0,
        "the job given up at exit waited for its lease to run out"
    );
    assert!(!c.bundle("pi5u1", &chain).is_empty(), "the global copy");
    assert!(c.stats("pi5u2").get("resumed") >= Some(&1));
}
