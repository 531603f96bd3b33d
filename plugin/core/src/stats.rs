//! Counters of this process (puts, reads per tier, propagation latency, retries,
//! failures...), kept in atomics on the hot paths and added to the node's Redis hash
//! `<ns>:stats:<node>` with `HINCRBY` by the background sweeper and at exit.

use std::sync::atomic::{AtomicU64, Ordering};

/// One counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    Puts,
    StatelessPuts,
    Gets,
    HitsLocal,
    HitsNeighbour,
    HitsGlobal,
    Misses,
    IncomingWaits,
    IncomingWaitMs,
    /// Gets with `wait_for`, and those of them that answered `TimedOut`.
    WaitFors,
    WaitForTimeouts,
    CacheFills,
    Jobs,
    Coalesced,
    QueueOverflow,
    /// Puts refused because the outbox was at `SKYLARK_MAX_OUTBOX`.
    Backlogged,
    /// Conditional puts refused because their condition did not hold.
    ConditionsFailed,
    /// Idempotent puts answered as repeats (nothing written, no job).
    IdempotentRepeats,
    /// Puts refused because their bundle would be over the bundle limit or their
    /// namespace over its quota.
    LimitRefusals,
    Resumed,
    Propagated,
    Copies,
    Retries,
    Retargets,
    Failures,
    Dropped,
    Cleanups,
    TopologyReloads,
    TopologyErrors,
    PropagationMsSum,
    PropagationLe10Ms,
    PropagationLe100Ms,
    PropagationLe1S,
    PropagationLe10S,
    PropagationGt10S,
    /// Writes to the global store that fewer replicas than `SKYLARK_GLOBAL_MIN_REPLICAS`
    /// confirmed in time (not counted as done).
    GlobalUnacknowledged,
}

const ALL: [Counter; 36] = [
    Counter::Puts,
    Counter::StatelessPuts,
    Counter::Gets,
    Counter::HitsLocal,
    Counter::HitsNeighbour,
    Counter::HitsGlobal,
    Counter::Misses,
    Counter::IncomingWaits,
    Counter::IncomingWaitMs,
    Counter::WaitFors,
    Counter::WaitForTimeouts,
    Counter::CacheFills,
    Counter::Jobs,
    Counter::Coalesced,
    Counter::QueueOverflow,
    Counter::Backlogged,
    Counter::ConditionsFailed,
    Counter::IdempotentRepeats,
    Counter::LimitRefusals,
    Counter::Resumed,
    Counter::Propagated,
    Counter::Copies,
    Counter::Retries,
    Counter::Retargets,
    Counter::Failures,
    Counter::Dropped,
    Counter::Cleanups,
    Counter::TopologyReloads,
    Counter::TopologyErrors,
    Counter::PropagationMsSum,
    Counter::PropagationLe10Ms,
    Counter::PropagationLe100Ms,
    Counter::PropagationLe1S,
    Counter::PropagationLe10S,
    Counter::PropagationGt10S,
    Counter::GlobalUnacknowledged,
];

impl Counter {
    /// The field name in the stats hash.
    pub fn name(self) -> &'static str {
        match self {
            Counter::Puts => "puts",
            Counter::StatelessPuts => "stateless_puts",
            Counter::Gets => "gets",
            Counter::HitsLocal => "hits_local",
            Counter::HitsNeighbour => "hits_neighbour",
            Counter::HitsGlobal => "hits_global",
            Counter::Misses => "misses",
            Counter::IncomingWaits => "incoming_waits",
            Counter::IncomingWaitMs => "incoming_wait_ms_sum",
            Counter::WaitFors => "wait_fors",
            Counter::WaitForTimeouts => "wait_for_timeouts",
            Counter::CacheFills => "cache_fills",
            Counter::Jobs => "jobs",
            Counter::Coalesced => "coalesced",
            Counter::QueueOverflow => "queue_overflow",
            Counter::Backlogged => "backlogged",
            Counter::ConditionsFailed => "conditions_failed",
            Counter::IdempotentRepeats => "idempotent_repeats",
            Counter::LimitRefusals => "limit_refusals",
            Counter::Resumed => "resumed",
            Counter::Propagated => "propagated",
            Counter::Copies => "copies",
            Counter::Retries => "retries",
            Counter::Retargets => "retargets",
            Counter::Failures => "failures",
            Counter::Dropped => "dropped",
            Counter::Cleanups => "cleanups",
            Counter::TopologyReloads => "topology_reloads",
            Counter::TopologyErrors => "topology_errors",
            Counter::PropagationMsSum => "propagation_ms_sum",
            Counter::PropagationLe10Ms => "propagation_le_10ms",
            Counter::PropagationLe100Ms => "propagation_le_100ms",
            Counter::PropagationLe1S => "propagation_le_1s",
            Counter::PropagationLe10S => "propagation_le_10s",
            Counter::PropagationGt10S => "propagation_gt_10s",
            Counter::GlobalUnacknowledged => "global_unacknowledged",
        }
    }
}

static COUNTS: [AtomicU64; ALL.len()] = [const { AtomicU64::new(0) }; ALL.len()];

/// Adds `n` to a counter.
pub fn add(c: Counter, n: u64) {
    COUNTS[c as usize].fetch_add(n, Ordering::Relaxed);
}

/// Increments a counter.
pub fn inc(c: Counter) {
    add(c, 1);
}

/// Records one propagation's latency (put until the elected copy was acknowledged):
/// `propagated`, the sum, and one histogram bucket.
pub fn observe_propagation(ms: u64) {
    inc(Counter::Propagated);
    add(Counter::PropagationMsSum, ms);
    inc(match ms {
        0..=10 => Counter::PropagationLe10Ms,
        11..=100 => Counter::PropagationLe100Ms,
        101..=1000 => Counter::PropagationLe1S,
        1001..=10_000 => Counter::PropagationLe10S,
        _ => Counter::PropagationGt10S,
    });
}

/// Takes every non-zero counter, resetting it to zero.
pub fn take() -> Vec<(Counter, u64)> {
    ALL.iter()
        .filter_map(|&c| {
            let v = COUNTS[c as usize].swap(0, Ordering::Relaxed);
            (v > 0).then_some((c, v))
        })
        .collect()
}

/// Gives back counters that could not be written, so nothing is lost.
pub fn restore(taken: &[(Counter, u64)]) {
    for &(c, v) in taken {
        add(c, v);
    }
}

/// How long a node's counters outlive their last update (30 days): every key the plugin
/// writes expires once unused (issue 16 point 3).
pub const STATS_TTL_SECS: u64 = 30 * 86_400;

/// A pipeline of `HINCRBY key name delta` for `taken`, then `EXPIRE key`
/// [`STATS_TTL_SECS`] (replies ignored).
pub fn pipeline(key: &str, taken: &[(Counter, u64)]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for (c, v) in taken {
        pipe.cmd("HINCRBY").arg(key).arg(c.name()).arg(*v).ignore();
    }
    if !taken.is_empty() {
        pipe.cmd("EXPIRE").arg(key).arg(STATS_TTL_SECS).ignore();
    }
    pipe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indexes_match() {
        for (i, c) in ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        let mut names: Vec<_> = ALL.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
    }

    #[test]
    fn take_restore_and_histogram() {
        // Other tests in this process may count too; only compare deltas of the buckets.
        observe_propagation(5);
        observe_propagation(50);
        observe_propagation(50_000);
        let taken = take();
        let get = |c| taken.iter().find(|(k, _)| *k == c).map(|(_, v)| *v);
        assert!(get(Counter::PropagationLe10Ms) >= Some(1));
        assert!(get(Counter::PropagationLe100Ms) >= Some(1));
        assert!(get(Counter::PropagationGt10S) >= Some(1));
        assert!(get(Counter::PropagationMsSum) >= Some(50_055));
        restore(&taken);
        assert!(take().len() >= taken.len());
        let pipe = pipeline("k", &taken);
        assert_eq!(pipe.cmd_iter().count(), taken.len() + 1);
        let last = pipe.cmd_iter().last().map(|c| c.get_packed_command());
        assert!(
            last.is_some_and(|p| String::from_utf8_lossy(&p).contains("EXPIRE")),
            "the counters expire"
        );
    }
}
