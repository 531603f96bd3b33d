//! The check of the compare-and-swap workload of the fault run ([`crate::faults`],
//! [`fault_guest::cas`]), made once the outboxes have drained. Guest processes on one node
//! increment shared counters by CAS loops, each increment with its own idempotency key;
//! a counter's value is the list of the keys applied to it, in order. For every counter,
//! from the increments the guests acknowledged (each with the count and version the
//! counter got) and the counter as the writer's node and the global store hold it:
//!
//! * **lost**: an acknowledged increment whose key is not at the position its
//!   acknowledgement gave it (count `n`: the `n`-th key) in the node's final value: the
//!   update was lost, or history was rewritten under it;
//! * **doubled**: a key that appears more than once in the final value (applied twice);
//! * **invented**: a key in the final value that no process ever tried, or a value that
//!   does not decode;
//! * **version order**: acknowledged increments whose versions do not grow with their
//!   counts;
//! * **global behind / ahead**: the global store holds an older version of the counter
//!   than the node (behind: not propagated), or a newer one or other bytes at the same
//!   version (ahead: the node lost what it had acknowledged, or a copy was corrupted).
//!
//! Increments that were given up (no definite answer) or whose process died may or may
//! not have landed; they are counted (`applied unacknowledged`) when their key is in the
//! value, which then holds the acknowledged ones plus those, each once.

use fault_guest::cas::{Counter, TASK};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// Examples kept per kind of problem.
const EXAMPLES_PER_KIND: usize = 6;

/// One acknowledged increment, as its guest reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inc {
    /// The counter's chain.
    pub chain: String,
    /// The count the counter got (this increment's position, from 1).
    pub count: u64,
    /// The version the node gave the counter.
    pub version: u64,
    pub key: String,
}

/// A counter as one store holds it: its version (`@v:c`) and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub version: u64,
    pub bytes: Vec<u8>,
}

/// What [`check_counter`] found, summed over counters, plus the guests' own tallies.
#[derive(Clone, Debug, Default)]
pub struct CasTally {
    pub processes: u64,
    /// Processes that crashed or did not report their totals.
    pub crashed: u64,
    pub counters: u64,
    /// Increments acknowledged.
    pub acked: u64,
    /// CAS conflicts (`ConditionFailed`) the guests retried after a re-read.
    pub conflicts: u64,
    /// Puts repeated with the same bytes, version and key after an error (unknown outcome).
    pub unknown_retried: u64,
    /// Increments given up without a definite answer.
    pub given_up: u64,
    /// Repeats the node answered from an idempotency key (the plugin's counter).
    pub idempotent_repeats: u64,
    /// Keys in the final values that were never acknowledged (given up, or their
    /// process died) but had landed.
    pub applied_unacked: u64,
    /// The final counts, summed.
    pub final_total: u64,
    pub lost: u64,
    pub doubled: u64,
    pub invented: u64,
    pub version_order: u64,
    pub global_behind: u64,
    pub global_ahead: u64,
    pub examples: Vec<String>,
    taken: BTreeMap<&'static str, usize>,
}

impl CasTally {
    /// True if no update was lost, doubled or invented, versions grew, the global store
    /// holds what the nodes hold, and no cas process crashed.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.doubled == 0
            && self.invented == 0
            && self.version_order == 0
            && self.global_behind == 0
            && self.global_ahead == 0
            && self.crashed == 0
    }

    fn example(&mut self, kind: &'static str, what: String) {
        let n = self.taken.entry(kind).or_insert(0);
        if *n < EXAMPLES_PER_KIND {
            *n += 1;
            self.examples.push(what);
        }
    }
}

impl fmt::Display for CasTally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cas increments       {} acknowledged on {} counters ({} processes, {} crashed); final counts sum to {} ({} applied unacknowledged)",
            self.acked, self.counters, self.processes, self.crashed, self.final_total, self.applied_unacked
        )?;
        writeln!(
            f,
            "  retried            {} CAS conflicts, {} unknown outcomes ({} answered from the idempotency key), {} given up",
            self.conflicts, self.unknown_retried, self.idempotent_repeats, self.given_up
        )?;
        writeln!(
            f,
            "  lost {}, doubled {}, invented {}, version order {}, global behind {}, global ahead {}",
            self.lost,
            self.doubled,
            self.invented,
            self.version_order,
            self.global_behind,
            self.global_ahead
        )?;
        for e in &self.examples {
            writeln!(f, "  ! {e}")?;
        }
        Ok(())
    }
}

/// Checks one counter (see the [module documentation](self)): `acked` are its
/// acknowledged increments, `tried` every key any process may have applied, `node` and
/// `global` the counter as the writer's node and the global store hold it (`None`:
/// absent).
pub fn check_counter(
    chain: &str,
    acked: &[Inc],
    tried: &HashSet<String>,
    node: Option<&Held>,
    global: Option<&Held>,
    t: &mut CasTally,
) {
    t.counters += 1;
    t.acked += acked.len() as u64;
    let final_value = match node {
        None => Some(Counter::default()),
        Some(h) => Counter::decode(&h.bytes),
    };
    let Some(final_value) = final_value else {
        t.invented += 1;
        t.lost += acked.len() as u64;
        t.example(
            "invented",
            format!("{chain}: the node's value does not decode"),
        );
        return;
    };
    t.final_total += final_value.count();
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for k in &final_value.keys {
        *seen.entry(k.as_str()).or_insert(0) += 1;
    }
    for (k, n) in &seen {
        if *n > 1 {
            t.doubled += n - 1;
            t.example("doubled", format!("{chain}: key {k} applied {n} times"));
        }
        if !tried.contains(*k) {
            t.invented += 1;
            t.example("invented", format!("{chain}: key {k} was never tried"));
        }
    }
    let acked_keys: HashSet<&str> = acked.iter().map(|i| i.key.as_str()).collect();
    t.applied_unacked += seen
        .keys()
        .filter(|k| !acked_keys.contains(*k) && tried.contains(**k))
        .count() as u64;
    for inc in acked {
        let at = usize::try_from(inc.count.wrapping_sub(1)).unwrap_or(usize::MAX);
        if final_value.keys.get(at).map(String::as_str) != Some(inc.key.as_str()) {
            t.lost += 1;
            let found = final_value.keys.iter().position(|k| *k == inc.key);
            t.example(
                "lost",
                format!(
                    "{chain}: increment {} acknowledged as count {} (version {}); the final value (count {}) has it {}",
                    inc.key,
                    inc.count,
                    inc.version,
                    final_value.count(),
                    found.map_or("nowhere".to_string(), |p| format!("at {}", p + 1))
                ),
            );
        }
    }
    let mut ordered: Vec<&Inc> = acked.iter().collect();
    ordered.sort_by_key(|i| (i.count, i.version));
    for w in ordered.windows(2) {
        if w[1].version <= w[0].version {
            t.version_order += 1;
            t.example(
                "version order",
                format!(
                    "{chain}: count {} got version {}, count {} version {}",
                    w[0].count, w[0].version, w[1].count, w[1].version
                ),
            );
        }
    }
    let node_version = node.map_or(0, |h| h.version);
    let global_version = global.map_or(0, |h| h.version);
    if global_version < node_version {
        t.global_behind += 1;
        t.example(
            "global",
            format!(
                "{chain}: the global store holds version {global_version}, the node {node_version}"
            ),
        );
    } else if global_version > node_version || global.map(|h| &h.bytes) != node.map(|h| &h.bytes) {
        t.global_ahead += 1;
        t.example(
            "global",
            format!(
                "{chain}: the global store holds version {global_version} ({} bytes), the node {node_version} ({} bytes)",
                global.map_or(0, |h| h.bytes.len()),
                node.map_or(0, |h| h.bytes.len())
            ),
        );
    }
}

/// The counter field and its version in a bundle hash read with `HGETALL`; `None` if the
/// bundle holds no counter.
pub fn held(fields: &HashMap<String, Vec<u8>>) -> Option<Held> {
    let bytes = fields.get(TASK)?.clone();
    let version = fields
        .get(&format!("@v:{TASK}"))
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0);
    Some(Held { version, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(keys: &[&str]) -> Vec<u8> {
        keys.iter()
            .fold(Counter::default(), |c, k| c.incremented(k))
            .encode()
    }

    fn inc(count: u64, version: u64, key: &str) -> Inc {
        Inc {
            chain: "cas-r-n-0".into(),
            count,
            version,
            key: key.into(),
        }
    }

    fn tried() -> HashSet<String> {
        ["a-0", "a-1", "b-0", "b-1"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn check(acked: &[Inc], node: &[u8], global: &[u8]) -> CasTally {
        let mut t = CasTally::default();
        let n = Held {
            version: 30,
            bytes: node.to_vec(),
        };
        let g = Held {
            version: 30,
            bytes: global.to_vec(),
        };
        check_counter("cas-r-n-0", acked, &tried(), Some(&n), Some(&g), &mut t);
        t
    }

    #[test]
    fn a_clean_history_passes_with_an_unacknowledged_increment_that_landed() {
        let acked = [inc(1, 10, "a-0"), inc(2, 20, "b-0"), inc(4, 30, "a-1")];
        let v = counter(&["a-0", "b-0", "b-1", "a-1"]);
        let t = check(&acked, &v, &v);
        assert!(t.clean(), "{t}");
        assert_eq!((t.acked, t.applied_unacked, t.final_total), (3, 1, 4));
    }

    #[test]
    fn a_lost_update_is_counted() {
        // b-0 was acknowledged as count 2, but a-1 overwrote it (a CAS on stale state).
        let acked = [inc(1, 10, "a-0"), inc(2, 20, "b-0"), inc(2, 30, "a-1")];
        let v = counter(&["a-0", "a-1"]);
        let t = check(&acked, &v, &v);
        assert_eq!(t.lost, 1, "{t}");
        assert_eq!(t.doubled, 0, "{t}");
        assert!(!t.clean());
    }

    #[test]
    fn a_double_apply_is_counted() {
        // a-0's retry after an unknown outcome was applied as a second increment.
        let acked = [inc(1, 10, "a-0"), inc(3, 30, "b-0")];
        let v = counter(&["a-0", "a-0", "b-0"]);
        let t = check(&acked, &v, &v);
        assert_eq!(t.doubled, 1, "{t}");
        assert_eq!(t.lost, 0, "{t}");
        assert!(!t.clean());
    }

    #[test]
    fn versions_out_of_order_invented_keys_and_a_global_mismatch_are_counted() {
        let acked = [inc(1, 20, "a-0"), inc(2, 10, "b-0")];
        let v = counter(&["a-0", "b-0", "z-9"]);
        let older = counter(&["a-0", "b-0"]);
        let t = check(&acked, &v, &older);
        assert_eq!(t.version_order, 1, "{t}");
        assert_eq!(t.invented, 1, "{t}");
        assert_eq!(t.global_ahead, 1, "same version, other bytes: {t}");
        let mut t = CasTally::default();
        let n = Held {
            version: 30,
            bytes: v.clone(),
        };
        check_counter("c", &[], &tried(), Some(&n), None, &mut t);
        assert_eq!(t.global_behind, 1, "{t}");
        let mut t = CasTally::default();
        let bad = Held {
            version: 30,
            bytes: b"3:a-0".to_vec(),
        };
        check_counter("c", &acked, &tried(), Some(&bad), Some(&bad), &mut t);
        assert_eq!((t.invented, t.lost), (1, 2), "{t}");
    }
}
