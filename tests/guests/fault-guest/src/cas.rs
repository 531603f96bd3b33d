//! The compare-and-swap workload (`cas` mode), defined once for the guest and for the host
//! that checks it: several guest processes on one node increment a few shared counters
//! (chains [`chain_name`], one field [`TASK`]) by CAS loops, each increment carrying an
//! idempotency key unique to it (`<process>-<n>`, [`key`]).
//!
//! A counter's value ([`Counter`], [`Counter::encode`]) is its count and the list of the
//! keys of every increment applied to it, in order: `<count>:<key>,<key>,...`. So the
//! final value tells a lost update (an acknowledged key missing, or not where its
//! acknowledgement put it) from a double apply (a key twice), and the count must equal the
//! length of the list.

use crate::{hash, mix};

/// The task id of every counter's one field.
pub const TASK: &str = "c";

/// Counter number `i` of `node` in run `run`.
pub fn chain_name(run: &str, node: &str, i: u64) -> String {
    format!("cas-{run}-{node}-{i}")
}

/// The idempotency key of increment `n` of process `process`.
pub fn key(process: &str, n: u64) -> String {
    format!("{process}-{n}")
}

/// The counter (of `counters`) increment `n` of process `process` adds to.
pub fn counter_of(process: &str, n: u64, counters: u64) -> u64 {
    mix(hash(&[process, "cas"]) ^ mix(n)) % counters.max(1)
}

/// A counter's value: the keys of the increments applied, in order (the count is their
/// number).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub keys: Vec<String>,
}

impl Counter {
    pub fn count(&self) -> u64 {
        self.keys.len() as u64
    }

    /// This counter with one more increment, `key`.
    pub fn incremented(&self, key: &str) -> Counter {
        let mut keys = self.keys.clone();
        keys.push(key.to_string());
        Counter { keys }
    }

    /// The stored bytes: `<count>:<key>,<key>,...`.
    pub fn encode(&self) -> Vec<u8> {
        format!("{}:{}", self.count(), self.keys.join(",")).into_bytes()
    }

    /// Parses [`Counter::encode`]'s bytes; `None` if they are not of that form or the
    /// count differs from the number of keys.
    pub fn decode(bytes: &[u8]) -> Option<Counter> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (count, list) = text.split_once(':')?;
        let count: u64 = count.parse().ok()?;
        let keys: Vec<String> = if list.is_empty() {
            Vec::new()
        } else {
            list.split(',').map(String::from).collect()
        };
        if keys.iter().any(|k| k.is_empty()) || keys.len() as u64 != count {
            return None;
        }
        Some(Counter { keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_round_trip_and_reject_a_wrong_count() {
        let c = Counter::default().incremented("p.1-0").incremented("p.2-4");
        assert_eq!(c.count(), 2);
        assert_eq!(c.encode(), b"2:p.1-0,p.2-4");
        assert_eq!(Counter::decode(&c.encode()), Some(c));
        assert_eq!(Counter::decode(b"0:"), Some(Counter::default()));
        assert_eq!(Counter::decode(b"3:a,b"), None);
        assert_eq!(Counter::decode(b"2:a,"), None);
        assert_eq!(Counter::decode(b"garbage"), None);
    }

    #[test]
    fn increments_spread_over_the_counters() {
        let used: std::collections::BTreeSet<u64> =
            (0..100).map(|n| counter_of("pi5u2.0.1", n, 3)).collect();
        assert_eq!(used.len(), 3);
        assert_eq!(key("pi5u2.0.1", 7), "pi5u2.0.1-7");
    }
}
