//! Quiet links between sequential workflows. A step's process that exits while its copies
//! are still on their way (its exit flush ran out) leaves the job in its node's outbox for
//! a later process there; the copy then shares the links with whatever runs next (a
//! 50 MB copy takes 10 s over one satellite link). [`quiesce`] waits, after a workflow's
//! processes exited, until every node's outbox is empty, resuming the left jobs with
//! processes started on their nodes, and records the wait ([`Quiet`]).

use serde::{Deserialize, Serialize};
use skylark_netemu::constellation::Constellation;
use skylark_testkit::Running;
use std::time::{Duration, Instant};

/// How often the outboxes are polled while draining.
const POLL: Duration = Duration::from_millis(10);

/// The wait, after a sequential workflow's processes all exited, until every node's
/// outbox was empty.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quiet {
    /// Jobs in the outboxes when the last process had exited (left by an exit flush
    /// that ran out).
    pub left_at_exit: u64,
    /// Time from then until every outbox was empty, or until the wait gave up.
    pub wait_ms: f64,
    /// Jobs still there when the wait gave up (0: drained).
    pub undrained: u64,
}

/// Jobs in every node's outbox.
pub fn pending(net: &Constellation) -> u64 {
    net.nodes().iter().map(|n| net.outbox_len(n) as u64).sum()
}

/// Polls until every node's outbox is empty or `deadline` passes; returns the jobs still
/// there (0: drained).
pub fn drain(net: &Constellation, deadline: Instant) -> u64 {
    loop {
        let left = pending(net);
        if left == 0 || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(POLL);
    }
}

/// Waits at most `limit` until every node's outbox is empty. Jobs left there wait for a
/// process on their node and none comes while the harness waits, so `resumers` starts
/// processes on the nodes whose outbox is not empty (a serving function's, whose plugin
/// sweeps the outbox); they are killed when the wait ends.
pub fn quiesce(
    net: &Constellation,
    limit: Duration,
    resumers: impl FnOnce(&[String]) -> Vec<Running>,
) -> Quiet {
    let start = Instant::now();
    let counts: Vec<(String, u64)> = net
        .nodes()
        .into_iter()
        .map(|n| {
            let jobs = net.outbox_len(&n) as u64;
            (n, jobs)
        })
        .collect();
    let left_at_exit: u64 = counts.iter().map(|(_, jobs)| jobs).sum();
    let mut undrained = left_at_exit;
    if left_at_exit > 0 {
        let busy: Vec<String> = counts
            .into_iter()
            .filter(|(_, jobs)| *jobs > 0)
            .map(|(n, _)| n)
            .collect();
        let procs = resumers(&busy);
        undrained = drain(net, start + limit);
        for p in procs {
            p.kill();
        }
    }
    Quiet {
        left_at_exit,
        wait_ms: start.elapsed().as_secs_f64() * 1e3,
        undrained,
    }
}

/// The report's note on the waits between sequential workflows: `quiets` and
/// `at_start` (jobs pending when each workflow started) of every sequential workflow.
pub fn note(quiets: &[Quiet], at_start: &[u64]) -> String {
    let left = quiets.iter().filter(|q| q.left_at_exit > 0).count();
    let longest = quiets.iter().map(|q| q.wait_ms).fold(0.0, f64::max);
    let busy_starts = at_start.iter().filter(|&&n| n > 0).count();
    format!(
        "sequential workflows start on quiet links: after a workflow's processes exited the run waits until every outbox is empty (jobs an exit flush left are resumed by a process started on their node); {left} of {} workflows left jobs at exit, the longest wait {:.1} s; {busy_starts} workflows started with jobs still in an outbox",
        quiets.len(),
        longest / 1e3
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_note_counts_leftovers_and_busy_starts() {
        let q = |left, ms| Quiet {
            left_at_exit: left,
            wait_ms: ms,
            undrained: 0,
        };
        let n = note(&[q(0, 0.1), q(2, 2300.0), q(1, 900.0)], &[0, 0, 3]);
        assert!(n.contains("2 of 3 workflows left jobs at exit"), "{n}");
        assert!(n.contains("the longest wait 2.3 s"), "{n}");
        assert!(
            n.contains("1 workflows started with jobs still in an outbox"),
            "{n}"
        );
    }
}
