//! The Redis key layout, in one place: every key and channel the plugin reads or writes.

use crate::store::HashPairs;
use skylark_abi::ids;

/// The hash holding a chain's bundle (field = task id, value = state).
pub fn bundle(namespace: &str, chain: &str) -> String {
    format!("{namespace}:bundle:{chain}")
}

/// Prefix of the bundle fields that record where puts placed the chain's copies
/// (`@at:<task>` = node). `@` never occurs in a task id, so these cannot collide with
/// state, and a bundle and its placement record travel and expire together: reading
/// both stays one `HGETALL`.
pub const PLACEMENT_PREFIX: &str = "@at:";

/// Prefix of the bundle fields that announce a copy on its way to this store
/// (`@incoming:<job>/<task>,<task>..` = unix ms until which readers may wait for it; the
/// tasks are those the copy brings, see [`incoming_field`]). Written just before the
/// copy, removed by the copy itself.
pub const INCOMING_PREFIX: &str = "@incoming:";

/// Prefix of the bundle fields, on the node a copy leaves from, recording that the copy
/// is on its way (`@sending:<node>:<job>/<task>,<task>..` = unix ms, the same deadline as
/// the announcement the copy's target receives; see [`sending_field`]). Written on the
/// local store as soon as a job has elected its targets, before the round trips that
/// land the announcement on the target, and removed when the copy has ended: a reader on
/// the target that probes this node before its own announcement has landed learns from
/// it that the state is on its way (issue 13: at 10-50 MB the consumer read 31-40 ms
/// after its start, the announcement landed 100-150 ms after the put, and the consumer
/// pulled the bytes its copy was bringing over the same link). [`split`] drops them.
pub const SENDING_PREFIX: &str = "@sending:";

/// Most tasks an announcement names; a copy of more is announced without names (a reader
/// then waits for it whatever it needs).
pub const INCOMING_MAX_TASKS: usize = 32;

/// Prefix of the bundle fields holding each task's version (`@v:<task>` = decimal
/// number; see `fence`).
pub const VERSION_PREFIX: &str = "@v:";

/// Prefix of the bundle fields, on a writer's node, recording which nodes a clean-up
/// emptied of a task (`@swept:<task>` = lines `<node> <version>`; see `fence`). Only the
/// fenced scripts read them; [`split`] drops them like every unknown reserved field.
pub const SWEPT_PREFIX: &str = "@swept:";

/// The bundle field, on a node a job elected, holding the newest put a job that elected
/// it carried (`@claim` = version; see `fence`): clean-ups of older puts leave it alone.
pub const CLAIM_FIELD: &str = "@claim";

/// Prefix of the bundle fields, on the store that accepted an idempotent put, recording
/// it (`@idem:<key>` = the digest of its fields, then a `<task> <version>` line per
/// field; see `fence::guard`). Never state: [`split`] drops them, so they are neither
/// returned nor copied, and they expire with the bundle.
pub const IDEMPOTENCY_PREFIX: &str = "@idem:";

/// A placement record: (task id, node) entries.
pub type Placement = Vec<(String, String)>;

/// The bundle field recording where `task`'s put placed its copy.
pub fn placement_field(task: &str) -> String {
    format!("{PLACEMENT_PREFIX}{task}")
}

/// The bundle field holding `task`'s version.
pub fn version_field(task: &str) -> String {
    format!("{VERSION_PREFIX}{task}")
}

/// The bundle field recording the idempotent put with key `key`.
pub fn idempotency_field(key: &str) -> String {
    format!("{IDEMPOTENCY_PREFIX}{key}")
}

/// The bundle field announcing job `job`'s copy of `tasks`: `@incoming:<job>/<t1>,<t2>..`
/// (neither job ids nor task ids hold `/` or `,`), so that a reader that requires other
/// tasks need not wait for it. Without tasks, or with more than [`INCOMING_MAX_TASKS`],
/// `@incoming:<job>` (what plugins before the names wrote): it may bring anything.
pub fn incoming_field(job: &str, tasks: &[&str]) -> String {
    if tasks.is_empty() || tasks.len() > INCOMING_MAX_TASKS {
        return format!("{INCOMING_PREFIX}{job}");
    }
    format!("{INCOMING_PREFIX}{job}/{}", tasks.join(","))
}

/// The tasks an announcement field names (see [`incoming_field`]); `None` when it names
/// none, so that its copy may bring any task.
pub fn announced_tasks(field: &[u8]) -> Option<impl Iterator<Item = &[u8]>> {
    let rest = field.strip_prefix(INCOMING_PREFIX.as_bytes())?;
    let at = rest.iter().position(|b| *b == b'/')?;
    Some(rest[at + 1..].split(|b| *b == b','))
}

/// Whether the copy an announcement field stands for may bring one of `tasks`: it names
/// one of them, or names none.
pub fn may_bring(field: &[u8], tasks: &[&str]) -> bool {
    match announced_tasks(field) {
        None => true,
        Some(mut named) => named.any(|n| tasks.iter().any(|t| t.as_bytes() == n)),
    }
}

/// The field recording, on the sending node, that the copy announced on `node` with the
/// announcement field `incoming` (from [`incoming_field`]) is on its way.
pub fn sending_field(node: &str, incoming: &str) -> String {
    let announced = incoming.strip_prefix(INCOMING_PREFIX).unwrap_or(incoming);
    format!("{SENDING_PREFIX}{node}:{announced}")
}

/// The announcement field a sending record (see [`sending_field`]) stands for if it
/// records a copy on its way to `node`; `None` for another node's (node names hold no
/// `:`) or any other field.
pub fn sent_to(field: &[u8], node: &str) -> Option<Vec<u8>> {
    let rest = field
        .strip_prefix(SENDING_PREFIX.as_bytes())?
        .strip_prefix(node.as_bytes())?
        .strip_prefix(b":")?;
    let mut announced = INCOMING_PREFIX.as_bytes().to_vec();
    announced.extend_from_slice(rest);
    Some(announced)
}

/// A bundle hash as read, split by field kind.
#[derive(Debug, Default, PartialEq)]
pub struct Split {
    /// Task state: (task id, value).
    pub state: HashPairs,
    /// The placement record.
    pub placement: Placement,
    /// Copies announced as incoming: (field name, unix ms to wait until at most).
    pub incoming: Vec<(Vec<u8>, u64)>,
    /// Versions of the state fields (a field written before versions existed has none).
    pub versions: Versions,
    /// State fields and placement entries dropped because a task or node name is not an
    /// id (only another node's data can hold them: the plugin writes ids only).
    pub dropped: usize,
}

/// Versions by task id.
pub type Versions = std::collections::HashMap<Vec<u8>, u64>;

/// The version of `task` in `versions`: 0 for a field written before versions existed
/// (or not held), which any versioned copy replaces.
pub fn version(versions: &Versions, task: &[u8]) -> u64 {
    versions.get(task).copied().unwrap_or(0)
}

/// Splits the (field, value) pairs of a bundle hash. A bundle read from another node is
/// untrusted input (issue 16 point 5), so only ids are taken as names: a state field whose
/// name is not a task id (`skylark_abi::ids`: 1-128 bytes of `[A-Za-z0-9._-]`) and a
/// placement entry whose task or node is not an id are dropped (and counted), before
/// anything is cached, copied or trusted. Versions that are not numbers and unknown
/// reserved (`@`) fields are dropped too.
pub fn split(pairs: HashPairs) -> Split {
    let mut out = Split {
        state: Vec::with_capacity(pairs.len()),
        ..Split::default()
    };
    let id = |b: &[u8]| ids::validate(b).is_ok();
    for (k, v) in pairs {
        if let Some(task) = k.strip_prefix(PLACEMENT_PREFIX.as_bytes()) {
            if id(task) && id(&v) {
                // Ids are ASCII, so both are UTF-8.
                let (t, n) = (String::from_utf8_lossy(task), String::from_utf8_lossy(&v));
                out.placement.push((t.into_owned(), n.into_owned()));
            } else {
                out.dropped += 1;
            }
        } else if let Some(task) = k.strip_prefix(VERSION_PREFIX.as_bytes()) {
            if let Some(v) = std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()) {
                out.versions.insert(task.to_vec(), v);
            }
        } else if k.starts_with(INCOMING_PREFIX.as_bytes()) {
            let until = incoming_until(&v);
            out.incoming.push((k, until));
        } else if k.starts_with(IDEMPOTENCY_PREFIX.as_bytes()) {
            // The record of an idempotent put: kept on the store that accepted it only.
        } else if !k.starts_with(b"@") {
            if id(&k) {
                out.state.push((k, v));
            } else {
                out.dropped += 1;
            }
        }
    }
    out
}

/// The unix ms an announcement (`@incoming:<job>`) lets readers wait until (0 if not a
/// number: already expired).
pub fn incoming_until(v: &[u8]) -> u64 {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The copies announced as incoming in a bundle hash, as [`split`] finds them, without
/// taking the hash apart.
pub fn incoming(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, u64)> {
    pairs
        .iter()
        .filter(|(k, _)| k.starts_with(INCOMING_PREFIX.as_bytes()))
        .map(|(k, v)| (k.clone(), incoming_until(v)))
        .collect()
}

/// Whether a bundle hash holds a field for every task in `tasks` (linear in fields plus
/// tasks).
pub fn holds(pairs: &[(Vec<u8>, Vec<u8>)], tasks: &[String]) -> bool {
    if tasks.is_empty() {
        return true;
    }
    let held: std::collections::HashSet<&[u8]> = pairs.iter().map(|(k, _)| k.as_slice()).collect();
    tasks.iter().all(|t| held.contains(t.as_bytes()))
}

/// [`split`] without the incoming announcements.
pub fn split_placement(pairs: HashPairs) -> (HashPairs, Placement) {
    let s = split(pairs);
    (s.state, s.placement)
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

/// The hash whose field `n` counts the bytes of the outbox's jobs
/// (`SKYLARK_MAX_OUTBOX_BYTES`): a hash, so that the commands that keep it (`HINCRBY`,
/// `HGET`, `HSET`) are those the documented ACL already grants.
pub fn outbox_bytes(namespace: &str) -> String {
    format!("{namespace}:outbox:bytes")
}

/// The hash of the namespace's bytes on a store, per bundle key at its last put and in
/// total (`@total`), that its quota is checked against (`fence::limits`).
pub fn usage(namespace: &str) -> String {
    format!("{namespace}:usage")
}

/// The sorted set of the bundles [`usage`] counts (score = unix ms when to look whether
/// the bundle is still there).
pub fn usage_expiry(namespace: &str) -> String {
    format!("{namespace}:usage:expiry")
}

/// The string an operator may set to a topology document, overriding the file.
pub fn topology(namespace: &str) -> String {
    format!("{namespace}:topology")
}

/// The hash of this node's counters.
pub fn stats(namespace: &str, node: &str) -> String {
    format!("{namespace}:stats:{node}")
}

/// The pub/sub channel on which writes of `chain`'s state announce the task ids they
/// wrote (`arrivals`). The arrival scripts derive it from [`bundle`]'s key.
pub fn arrivals(namespace: &str, chain: &str) -> String {
    format!("{namespace}/arrivals:{chain}")
}

/// The pub/sub channel of placement and propagation events.
pub fn events(namespace: &str) -> String {
    format!("{namespace}/events")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sending_record_names_its_target_and_the_tasks_its_copy_brings() {
        let incoming = incoming_field("j:1", &["pre", "det"]);
        let sending = sending_field("pi5u4", &incoming);
        assert_eq!(sending, "@sending:pi5u4:j:1/pre,det");
        let announced = sent_to(sending.as_bytes(), "pi5u4").expect("sent to pi5u4");
        assert_eq!(announced, incoming.as_bytes());
        assert!(may_bring(&announced, &["det"]));
        assert!(!may_bring(&announced, &["alarm"]));
        // Another node's record, a node whose name the target's extends, other fields.
        assert_eq!(sent_to(sending.as_bytes(), "pi5u"), None);
        assert_eq!(sent_to(sending.as_bytes(), "pi5u44"), None);
        assert_eq!(sent_to(incoming.as_bytes(), "pi5u4"), None);
        // Split drops the records: they are neither state nor copied.
        let split = split(vec![(sending.into_bytes(), b"1".to_vec())]);
        assert_eq!(split, Split::default());
    }

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
        // Another node's data: names that are not ids are dropped (issue 16 point 5).
        let s = split(vec![
            (b"ok".to_vec(), b"1".to_vec()),
            (b"bad\xff".to_vec(), b"2".to_vec()),
            (b"a:b".to_vec(), b"3".to_vec()),
            (vec![b'n'; 129], b"4".to_vec()),
            (b"@at:ok".to_vec(), b"node one".to_vec()),
            (b"@at:a b".to_vec(), b"pi5u1".to_vec()),
            (b"@at:".to_vec(), b"pi5u1".to_vec()),
            (b"@at:det".to_vec(), b"pi5u1".to_vec()),
        ]);
        assert_eq!(s.state, vec![(b"ok".to_vec(), b"1".to_vec())]);
        assert_eq!(s.placement, vec![("det".to_string(), "pi5u1".to_string())]);
        assert_eq!(s.dropped, 6);
        let pairs = vec![
            (b"det".to_vec(), b"y".to_vec()),
            (incoming_field("j1", &[]).into_bytes(), b"1700".to_vec()),
            (b"@future:x".to_vec(), b"?".to_vec()),
            (version_field("det").into_bytes(), b"17".to_vec()),
            (b"@v:pre".to_vec(), b"x".to_vec()),
            (
                idempotency_field("inv-1").into_bytes(),
                b"d\ndet 17".to_vec(),
            ),
        ];
        assert_eq!(incoming(&pairs), vec![(b"@incoming:j1".to_vec(), 1700)]);
        assert!(holds(&pairs, &["det".to_string()]));
        assert!(holds(&pairs, &[]));
        assert!(!holds(&pairs, &["det".to_string(), "pre".to_string()]));
        let s = split(pairs);
        assert_eq!(s.state.len(), 1);
        assert_eq!(idempotency_field("inv-1"), "@idem:inv-1");
        assert_eq!(s.versions.len(), 1);
        assert_eq!(s.versions.get(b"det".as_slice()), Some(&17));
        assert_eq!(s.incoming, vec![(b"@incoming:j1".to_vec(), 1700)]);
        assert_eq!(outbox("ns"), "ns:outbox");
        assert_eq!(outbox_jobs("ns"), "ns:outbox:jobs");
        assert_eq!(topology("ns"), "ns:topology");
        assert_eq!(stats("ns", "pi5u2"), "ns:stats:pi5u2");
        assert_eq!(events("skylark"), "skylark/events");
        assert_eq!(arrivals("skylark", "c-1"), "skylark/arrivals:c-1");
    }

    #[test]
    fn announcements_name_the_tasks_their_copy_brings() {
        let named = incoming_field("18c-2a-0-5", &["pre", "det.2"]);
        assert_eq!(named, "@incoming:18c-2a-0-5/pre,det.2");
        assert!(may_bring(named.as_bytes(), &["det.2"]));
        assert!(may_bring(named.as_bytes(), &["alarm", "pre"]));
        assert!(!may_bring(named.as_bytes(), &["det"]));
        assert!(!may_bring(named.as_bytes(), &[]));
        // An older plugin's announcement (no names), or one of too many tasks: anything.
        let unnamed = incoming_field("j", &[]);
        assert_eq!(unnamed, "@incoming:j");
        assert!(may_bring(unnamed.as_bytes(), &["det"]));
        let many: Vec<String> = (0..=INCOMING_MAX_TASKS).map(|i| format!("t{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(incoming_field("j", &many), "@incoming:j");
        assert!(announced_tasks(b"@at:x/y").is_none());
        // Both kinds are announcements to `split` and `incoming`.
        let pairs = vec![
            (named.clone().into_bytes(), b"1700".to_vec()),
            (unnamed.clone().into_bytes(), b"1800".to_vec()),
        ];
        assert_eq!(incoming(&pairs).len(), 2);
        assert_eq!(split(pairs).incoming.len(), 2);
    }
}
