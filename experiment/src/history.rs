//! The read-history check of the fault run ([`crate::faults`]), on plain values: one
//! node's puts of the overwrite workload (in the order its single writer made them, with
//! how each ended) and the reads its guests made between them, each with what every field
//! held. A read must return, for every field:
//!
//! * a whole value of that very field ([`Verdict::Version`]); anything else (torn,
//!   foreign, garbage) is **corrupted**;
//! * a version some put of that field had started by the time the read ended (`unwritten`
//!   otherwise: a value from nowhere, or from the future);
//! * a version no older than the last one acknowledged before the read began, and the
//!   field at all if such a put exists (**stale** otherwise, `missing` when absent).
//!
//! A version newer than the last acknowledged one is allowed: a put that failed (or was
//! never reported) may have been stored all the same.

use fault_guest::versioned::Verdict;
use std::collections::HashMap;

/// How a put ended, as its guest reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Acked,
    /// Failed, or never reported: it may or may not have been stored.
    NotAcked,
}

/// One put of a node, by its number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutEvent {
    pub id: u64,
    pub chain: String,
    pub task: String,
    pub version: u64,
    pub ended: Ended,
}

/// One read, made right after put `after` (and before put `after + 1`) on the same node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadEvent {
    pub after: u64,
    pub chain: String,
    /// What each field held; `None` if the read failed (an error status, not checked).
    pub fields: Option<Vec<(String, Verdict)>>,
}

/// What [`check`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadTally {
    pub reads: u64,
    /// Reads that returned an error status.
    pub failed: u64,
    /// Fields checked (returned, or expected and absent).
    pub fields: u64,
    /// Torn, foreign or garbage values.
    pub corrupted: u64,
    /// Versions no put had started when the read ended.
    pub unwritten: u64,
    /// Versions older than the last one acknowledged before the read began.
    pub stale: u64,
    /// Fields absent although a put of theirs was acknowledged before the read began.
    pub missing: u64,
    /// A few examples, for the report.
    pub examples: Vec<String>,
}

impl ReadTally {
    /// True if no read broke a rule.
    pub fn clean(&self) -> bool {
        self.corrupted == 0 && self.unwritten == 0 && self.stale == 0 && self.missing == 0
    }

    fn example(&mut self, what: String) {
        if self.examples.len() < 10 {
            self.examples.push(what);
        }
    }

    /// Adds another node's tally.
    pub fn add(&mut self, o: &ReadTally) {
        self.reads += o.reads;
        self.failed += o.failed;
        self.fields += o.fields;
        self.corrupted += o.corrupted;
        self.unwritten += o.unwritten;
        self.stale += o.stale;
        self.missing += o.missing;
        for e in &o.examples {
            self.example(e.clone());
        }
    }
}

/// The state of one field while replaying the history.
#[derive(Clone, Copy, Default)]
struct Field {
    /// Last acknowledged version (0: none).
    acked: u64,
    /// Highest version started (0: none).
    started: u64,
}

/// Checks `reads` against `puts`, all of one node (`node` names it in examples); see the
/// [module documentation](self). Order within the slices does not matter.
pub fn check(node: &str, puts: &[PutEvent], reads: &[ReadEvent]) -> ReadTally {
    let mut puts: Vec<&PutEvent> = puts.iter().collect();
    puts.sort_by_key(|p| p.id);
    let mut reads: Vec<&ReadEvent> = reads.iter().collect();
    reads.sort_by_key(|r| r.after);
    let mut fields: HashMap<(&str, &str), Field> = HashMap::new();
    let mut next = puts.iter().peekable();
    let mut t = ReadTally::default();
    for r in reads {
        while let Some(p) = next.next_if(|p| p.id <= r.after) {
            let f = fields.entry((&p.chain, &p.task)).or_default();
            f.started = f.started.max(p.version);
            if p.ended == Ended::Acked {
                f.acked = f.acked.max(p.version);
            }
        }
        t.reads += 1;
        let Some(got) = &r.fields else {
            t.failed += 1;
            continue;
        };
        let what =
            |task: &str| format!("read of {}/{task} after put {} on {node}", r.chain, r.after);
        for (task, verdict) in got {
            t.fields += 1;
            let f = fields
                .get(&(r.chain.as_str(), task.as_str()))
                .copied()
                .unwrap_or_default();
            match verdict {
                Verdict::Version(v) if *v > f.started || *v == 0 => {
                    t.unwritten += 1;
                    t.example(format!(
                        "{}: version {v}, but only {} had been started",
                        what(task),
                        f.started
                    ));
                }
                Verdict::Version(v) if *v < f.acked => {
                    t.stale += 1;
                    t.example(format!(
                        "{}: version {v}, but {} was acknowledged before",
                        what(task),
                        f.acked
                    ));
                }
                Verdict::Version(_) => {}
                other => {
                    t.corrupted += 1;
                    t.example(format!("{}: {other:?}", what(task)));
                }
            }
        }
        // Fields acknowledged before the read that it did not return.
        let mut absent: Vec<(&str, u64)> = fields
            .iter()
            .filter(|((chain, task), f)| {
                *chain == r.chain && f.acked > 0 && !got.iter().any(|(t, _)| t == task)
            })
            .map(|((_, task), f)| (*task, f.acked))
            .collect();
        absent.sort();
        for (task, acked) in absent {
            t.fields += 1;
            t.missing += 1;
            t.example(format!(
                "{}: absent, but version {acked} was acknowledged before",
                what(task)
            ));
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(id: u64, task: &str, version: u64, ended: Ended) -> PutEvent {
        PutEvent {
            id,
            chain: "c".into(),
            task: task.into(),
            version,
            ended,
        }
    }

    fn read(after: u64, fields: &[(&str, Verdict)]) -> ReadEvent {
        ReadEvent {
            after,
            chain: "c".into(),
            fields: Some(
                fields
                    .iter()
                    .map(|(t, v)| (t.to_string(), v.clone()))
                    .collect(),
            ),
        }
    }

    use Ended::{Acked, NotAcked};
    use Verdict::Version;

    fn history() -> Vec<PutEvent> {
        vec![
            put(0, "t0", 1, Acked),
            put(1, "t1", 1, Acked),
            put(2, "t0", 2, NotAcked),
            put(3, "t0", 3, Acked),
        ]
    }

    #[test]
    fn a_history_that_keeps_the_rules_is_clean() {
        let reads = [
            read(0, &[("t0", Version(1))]),
            read(1, &[("t0", Version(1)), ("t1", Version(1))]),
            // The failed put 2 may have been stored.
            read(2, &[("t0", Version(2)), ("t1", Version(1))]),
            read(2, &[("t0", Version(1)), ("t1", Version(1))]),
            read(3, &[("t0", Version(3)), ("t1", Version(1))]),
            ReadEvent {
                after: 3,
                chain: "c".into(),
                fields: None,
            },
        ];
        let t = check("n", &history(), &reads);
        assert!(t.clean(), "{t:?}");
        assert_eq!((t.reads, t.failed, t.fields), (6, 1, 9));
    }

    #[test]
    fn an_older_version_than_one_acknowledged_before_is_stale() {
        let t = check(
            "n",
            &history(),
            &[read(3, &[("t0", Version(2)), ("t1", Version(1))])],
        );
        assert_eq!(t.stale, 1, "{t:?}");
        assert!(
            t.examples[0].contains("version 2, but 3 was acknowledged"),
            "{t:?}"
        );
        // Version 1 after the acknowledged version 3, too.
        let t = check(
            "n",
            &history(),
            &[read(3, &[("t0", Version(1)), ("t1", Version(1))])],
        );
        assert_eq!((t.stale, t.corrupted, t.missing), (1, 0, 0));
    }

    #[test]
    fn an_acknowledged_field_that_is_absent_is_missing() {
        let t = check("n", &history(), &[read(1, &[("t1", Version(1))])]);
        assert_eq!(t.missing, 1, "{t:?}");
        // Before any put of t1 was acknowledged, its absence is fine.
        let t = check("n", &history(), &[read(0, &[("t0", Version(1))])]);
        assert!(t.clean(), "{t:?}");
        // Absent after only a failed put: fine.
        let h = [put(0, "t0", 1, NotAcked)];
        assert!(check("n", &h, &[read(0, &[])]).clean());
    }

    #[test]
    fn versions_not_yet_started_are_unwritten() {
        let t = check("n", &history(), &[read(0, &[("t0", Version(2))])]);
        assert_eq!(t.unwritten, 1, "{t:?}");
        let t = check(
            "n",
            &history(),
            &[read(1, &[("t0", Version(1)), ("t2", Version(1))])],
        );
        assert_eq!(t.unwritten, 1, "a field never put: {t:?}");
        let t = check("n", &history(), &[read(0, &[("t0", Version(0))])]);
        assert_eq!(t.unwritten, 1);
    }

    #[test]
    fn torn_foreign_and_garbage_values_are_corrupted() {
        let reads = [
            read(3, &[("t0", Verdict::Torn), ("t1", Version(1))]),
            read(
                3,
                &[
                    ("t0", Verdict::Foreign("c/t1/1".into())),
                    ("t1", Version(1)),
                ],
            ),
            read(3, &[("t0", Version(3)), ("t1", Verdict::Garbage)]),
        ];
        let t = check("n", &history(), &reads);
        assert_eq!(t.corrupted, 3, "{t:?}");
        assert_eq!((t.stale, t.missing, t.unwritten), (0, 0, 0));
    }

    #[test]
    fn order_of_the_input_does_not_matter() {
        let mut puts = history();
        puts.reverse();
        let reads = [
            read(3, &[("t0", Version(2)), ("t1", Version(1))]),
            read(0, &[("t0", Version(1))]),
        ];
        let t = check("n", &puts, &reads);
        assert_eq!((t.reads, t.stale), (2, 1), "{t:?}");
    }
}
