//! The hand-off timing of the constellation experiment (issue 13: why is the state not
//! in the consumer's store when its read is issued?): per policy and size, when each
//! reading step issued its read and when its state appeared in its own node's store,
//! both in ms after the step's process was started.
//!
//! The read is issued when the guest starts (its first call reads), so its time is the
//! step's T(f) minus the guest's own total time (process start-up, loading the module).
//! The arrival is seen by polling the step's own store from just before its process is
//! started; a state already there counts as arrived at 0.

use crate::report::{median, size_label, StepRecord, WorkflowRecord};
use std::fmt::Write as _;

/// The numbers of one policy and size.
#[derive(Debug, Clone, PartialEq)]
pub struct Handoff {
    pub policy: String,
    pub size_bytes: u64,
    /// Reading steps with both times known.
    pub steps: usize,
    /// Median time the read was issued.
    pub read_at_ms: Option<f64>,
    /// Median time the state arrived, over the steps whose state arrived at all.
    pub arrived_at_ms: Option<f64>,
    /// Steps whose state never appeared in their own store before they ended.
    pub never: usize,
    /// Steps whose state was there when the read was issued.
    pub before_read: usize,
    /// Median of arrival minus read, over the steps whose state arrived after the read.
    pub late_by_ms: Option<f64>,
    /// Steps that failed and were invoked again (their state was nowhere yet).
    pub retried: usize,
}

/// Whether a reading step's state was in its own store when the read was issued
/// (`None` unless both times are known or the state never arrived).
pub fn local_at_read(s: &StepRecord) -> Option<bool> {
    let read = s.read_at_ms?;
    Some(s.arrived_at_ms.is_some_and(|a| a <= read))
}

/// [`Handoff`] per policy and size of the records at concurrency 1, in record order.
pub fn summarize(records: &[WorkflowRecord]) -> Vec<Handoff> {
    let mut keys: Vec<(String, u64)> = Vec::new();
    for r in records.iter().filter(|r| r.config.concurrency == 1) {
        let k = (r.config.policy.clone(), r.config.size_bytes);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(policy, size_bytes)| {
            let steps: Vec<&StepRecord> = records
                .iter()
                .filter(|r| r.config.concurrency == 1)
                .filter(|r| r.config.policy == policy && r.config.size_bytes == size_bytes)
                .flat_map(|r| &r.steps)
                .filter(|s| s.read_at_ms.is_some())
                .collect();
            let read: Vec<f64> = steps.iter().filter_map(|s| s.read_at_ms).collect();
            let arrived: Vec<f64> = steps.iter().filter_map(|s| s.arrived_at_ms).collect();
            let late: Vec<f64> = steps
                .iter()
                .filter_map(|s| Some(s.arrived_at_ms? - s.read_at_ms?))
                .filter(|d| *d > 0.0)
                .collect();
            Handoff {
                policy,
                size_bytes,
                steps: steps.len(),
                read_at_ms: median(&read),
                arrived_at_ms: median(&arrived),
                never: steps.iter().filter(|s| s.arrived_at_ms.is_none()).count(),
                before_read: steps
                    .iter()
                    .filter(|s| local_at_read(s) == Some(true))
                    .count(),
                late_by_ms: median(&late),
                retried: steps.iter().filter(|s| s.attempts > 1).count(),
            }
        })
        .collect()
}

/// The report's hand-off section.
pub fn markdown(records: &[WorkflowRecord]) -> String {
    let rows = summarize(records);
    let mut out = String::from(
        "\n## Hand-off timing\n\nReading steps (`detect`, `detect2`, `alarm`) at concurrency 1: \
         when each issued its read and when its state appeared in its own node's store, \
         in ms after its process was started (medians). The read is issued as the guest \
         starts; the state can only be there if its copy, which leaves the producer when \
         the producer's put returns, arrived before. Never: the state was not in the \
         step's store before the step ended (it read a neighbour or the global store). \
         Retried: steps that failed because their state was nowhere yet (left on a node \
         beyond their neighbours, the global copy still on its way) and were invoked \
         again; the times are those of the successful attempt, counted from the first.\n\n\
         | policy | size | steps | read issued at | state arrived at | there before the read | arrived after the read, by | never | retried |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let ms = |v: Option<f64>| v.map_or_else(|| "—".to_string(), |v| format!("{v:.0}"));
    for h in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {}/{} | {} | {} | {} |",
            h.policy,
            size_label(h.size_bytes),
            h.steps,
            ms(h.read_at_ms),
            ms(h.arrived_at_ms),
            h.before_read,
            h.steps,
            ms(h.late_by_ms),
            h.never,
            h.retried
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Config, StepRecord, WorkflowRecord};

    fn step(read: Option<f64>, arrived: Option<f64>) -> StepRecord {
        StepRecord {
            function: "detect".into(),
            node: "s".into(),
            t_f_ms: 100.0,
            get_ms: Some(1.0),
            gets: 1,
            local_gets: 1,
            hops: vec![0],
            put_ms: 0.0,
            compute_ms: 0.0,
            slo_ms: 5000.0,
            local_at_request: None,
            own_store_answered: None,
            exec_ms: None,
            migrations: Vec::new(),
            read_at_ms: read,
            arrived_at_ms: arrived,
            attempts: 1,
        }
    }

    #[test]
    fn a_state_is_local_at_the_read_only_if_it_arrived_first() {
        assert_eq!(local_at_read(&step(Some(40.0), Some(0.0))), Some(true));
        assert_eq!(local_at_read(&step(Some(40.0), Some(40.0))), Some(true));
        assert_eq!(local_at_read(&step(Some(40.0), Some(41.0))), Some(false));
        assert_eq!(local_at_read(&step(Some(40.0), None)), Some(false));
        assert_eq!(local_at_read(&step(None, Some(0.0))), None);
    }

    #[test]
    fn summary_counts_early_late_and_never() {
        let config = Config {
            policy: "skylark".into(),
            state: "bundled".into(),
            size_bytes: 1_000_000,
            concurrency: 1,
        };
        let rec = WorkflowRecord {
            config,
            rep: 0,
            t_w_ms: 1.0,
            steps: vec![
                step(Some(40.0), Some(10.0)),
                step(Some(40.0), Some(240.0)),
                step(Some(50.0), Some(150.0)),
                step(Some(60.0), None),
                step(None, None),
            ],
            migration_ms: Vec::new(),
            state_bytes: 1_000_000,
            t_star_ms: None,
            slo_level: None,
            outbox_at_start: None,
            quiet: None,
        };
        let h = summarize(&[rec]);
        assert_eq!(h.len(), 1);
        let h = &h[0];
        assert_eq!((h.steps, h.before_read, h.never), (4, 1, 1));
        assert_eq!(h.read_at_ms, Some(45.0));
        assert_eq!(h.arrived_at_ms, Some(150.0));
        assert_eq!(h.late_by_ms, Some(150.0));
        assert!(markdown(&[]).contains("## Hand-off timing"));
    }
}
