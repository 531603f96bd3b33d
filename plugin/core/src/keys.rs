//! The Redis key layout, in one place: every key and channel the plugin reads or writes.

use crate::store::HashPairs;

/// The hash holding a chain's bundle (field = task id, value = state).
pub fn bundle(namespace: &str, chain: &str) -> String {
    format!("{namespace}:bundle:{chain}")
}

/// Prefix of the bundle fields that record where puts placed the chain's copies
/// (`@at:<task>` = node). `@` never occurs in a task id, so these cannot collide with
/// state, and a bundle and its placement record travel and expire together: reading
/// both stays one `HGETALL`.
pub const PLACEMENT_PREFIX: &str = "@at:";

/// A placement record: (task id, node) entries.
pub type Placement = Vec<(String, String)>;

/// The bundle field recording where `task`'s put placed its copy.
pub fn placement_field(task: &str) -> String {
    format!("{PLACEMENT_PREFIX}{task}")
}

/// The (field, value) pairs of a bundle hash split into task state and placement record
/// (task id, node). Placement entries with a non-UTF-8 node are dropped.
pub fn split_placement(pairs: HashPairs) -> (HashPairs, Placement) {
    let mut fields = Vec::with_capacity(pairs.len());
    let mut placement = Vec::new();
    for (k, v) in pairs {
        match k.strip_prefix(PLACEMENT_PREFIX.as_bytes()) {
            Some(task) => {
                if let (Ok(t), Ok(n)) = (std::str::from_utf8(task), String::from_utf8(v)) {
                    placement.push((t.to_string(), n));
                }
            }
            None => fields.push((k, v)),
        }
    }
    (fields, placement)
}

/// The sorted set of propagation jobs (member = job id, score = unix ms when the job is
/// due for anyone to claim).
pub fn outbox(namespace: &str) -> String {
    format!("{namespace}:outbox")
}

/// The hash of propagation jobs (field = job id, value = the job as JSON).
pub fn outbox_jobs(namespace: &str) -> String {
    format!("{namespace}:outbox:jobs")
}

/// The string an operator may set to a topology document, overriding the file.
pub fn topology(namespace: &str) -> String {
    format!("{namespace}:topology")
}

/// The hash of this node's counters.
pub fn stats(namespace: &str, node: &str) -> String {
    format!("{namespace}:stats:{node}")
}

/// The pub/sub channel of placement and propagation events.
pub fn events(namespace: &str) -> String {
    format!("{namespace}/events")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(bundle("skylark", "c-1"), "skylark:bundle:c-1");
        assert_eq!(placement_field("pre"), "@at:pre");
        let (f, p) = split_placement(vec![
            (b"pre".to_vec(), b"x".to_vec()),
            (b"@at:pre".to_vec(), b"pi5u3".to_vec()),
            (b"@at:bad".to_vec(), vec![0xff]),
        ]);
        assert_eq!(f, vec![(b"pre".to_vec(), b"x".to_vec())]);
        assert_eq!(p, vec![("pre".to_string(), "pi5u3".to_string())]);
        assert_eq!(outbox("ns"), "ns:outbox");
        assert_eq!(outbox_jobs("ns"), "ns:outbox:jobs");
        assert_eq!(topology("ns"), "ns:topology");
        assert_eq!(stats("ns", "pi5u2"), "ns:stats:pi5u2");
        assert_eq!(events("skylark"), "skylark/events");
    }
}
