//! The experiment's quiet links between sequential workflows
//! ([`skylark_experiment::quiet`]) on the real constellation: issue 13's full run started
//! each workflow while the previous ones' copies were still in the outboxes (a step's
//! process exits when its exit flush runs out and leaves the job for a later process on
//! its node), so 10-50 MB copies shared the links with later workflows and a synchronous
//! 1 MB write timed out ten times.

use skylark_experiment::quiet::{pending, quiesce};
use skylark_netemu::constellation::Constellation;
use skylark_testkit::{chain_id, free_port, RUN_TIMEOUT};
use std::time::Duration;

#[test]
fn quiesce_resumes_the_jobs_an_exit_left_and_waits_until_they_are_done() {
    let c = Constellation::for_system_tests();
    let chain = chain_id("quiet");
    // Both copies (to pi4u5 and the global store on pi5u1) are held on their links and
    // the process exits at once (exit flush 0): the job stays in pi5u2's outbox.
    for to in ["pi4u5", "pi5u1"] {
        c.fault_link("pi5u2", to, true);
    }
    let run = c
        .guest("probe", "pi5u2")
        .env("SKYLARK_EXIT_FLUSH_MS", "0")
        .args(["put", &chain, "pre", "100000", "7", "--dest", "pi4u5"])
        .run(RUN_TIMEOUT);
    run.assert_success();
    assert_eq!(run.json()["status"], 0, "{}", run.stderr);
    assert!(
        pending(&c) > 0,
        "the exit left no job: the test would prove nothing (holders {:?})\n{}",
        c.holders(&chain),
        run.stderr
    );
    for to in ["pi4u5", "pi5u1"] {
        c.heal_link("pi5u2", to);
    }

    let mut resumed_on = Vec::new();
    let q = quiesce(&c, Duration::from_secs(60), |nodes| {
        resumed_on = nodes.to_vec();
        nodes
            .iter()
            .map(|n| {
                c.guest("alarm", n)
                    .args(["--serve", &free_port().to_string()])
                    .spawn()
            })
            .collect()
    });
    assert_eq!(resumed_on, ["pi5u2"], "{q:?}");
    assert!(q.left_at_exit > 0, "{q:?}");
    assert_eq!(q.undrained, 0, "{q:?}");
    assert_eq!(pending(&c), 0, "quiesce returned with jobs pending");
    let mut holders = c.holders(&chain);
    holders.sort();
    assert_eq!(holders, ["pi4u5", "pi5u1", "pi5u2"], "the copies were made");
}

#[test]
fn quiesce_returns_at_once_when_nothing_is_pending() {
    let c = Constellation::for_system_tests();
    let q = quiesce(&c, Duration::from_secs(60), |_| {
        panic!("no resumer is needed when every outbox is empty")
    });
    assert_eq!((q.left_at_exit, q.undrained), (0, 0));
}
