//! The live topology: loaded from `SKYLARK_TOPOLOGY_FILE` and from the node-local key
//! `<ns>:topology` (which overrides the file, so an operator can change the topology while
//! functions run, unless `SKYLARK_TOPOLOGY_KEY=off`), re-checked at most every
//! `SKYLARK_TOPOLOGY_REFRESH_MS`, re-parsed only when the bytes changed. An invalid
//! document is reported and the last good topology stays in force.
//!
//! The key is data in a Redis that more parties can write than the operator's file, so it
//! never decides where state and credentials go: a topology from the key takes every
//! store address from the file (by node name) and none from the key, and may not name
//! another global node than the file (issue 16 point 2).
//!
//! A topology that arrives gets the local node's shortest-path trees computed at once, so
//! that no job's election runs on a cold cache.

use crate::error::CallError;
use crate::store::{Request, Store};
use crate::topology::{self, Schedule, TopologyError};
use crate::{skylog, stats};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Mutex;

/// Where the topology in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    #[default]
    None,
    File,
    Key,
}

#[derive(Default)]
struct State {
    current: Option<Arc<Schedule>>,
    origin: Origin,
    checked: Option<Instant>,
    /// (mtime, length) of the file when last read.
    file_seen: Option<(SystemTime, u64)>,
    /// The file could not be read last time (reported once).
    file_failed: bool,
    /// The last good topology from the file: the addresses a key's topology takes.
    file: Option<Arc<Schedule>>,
    /// Digest of the key's bytes when last read (valid or not).
    key_seen: Option<u64>,
}

/// Watches the file and the key.
pub struct TopologyWatch {
    file: Option<PathBuf>,
    /// The key, `None` when `SKYLARK_TOPOLOGY_KEY` is off.
    key: Option<String>,
    refresh: Duration,
    /// This node's name: the source of every election's paths.
    local: String,
    state: Mutex<State>,
}

/// A reload outcome worth telling the world about.
pub enum Change {
    Loaded {
        origin: Origin,
        digest: u64,
        nodes: usize,
        slots: usize,
    },
    Invalid {
        origin: Origin,
        error: String,
    },
}

impl TopologyWatch {
    pub fn new(
        file: Option<String>,
        key: Option<String>,
        refresh: Duration,
        local: String,
    ) -> TopologyWatch {
        TopologyWatch {
            file: file.map(PathBuf::from),
            key,
            refresh,
            local,
            state: Mutex::new(State::default()),
        }
    }

    /// The topology in force, reloaded first if the refresh interval has passed. Also
    /// returns what changed, if anything, for events.
    pub async fn current(&self, local: &Store) -> (Option<Arc<Schedule>>, Vec<Change>) {
        let mut st = self.state.lock().await;
        let mut changes = Vec::new();
        let due = st.checked.is_none_or(|t| t.elapsed() >= self.refresh);
        if due {
            st.checked = Some(Instant::now());
            self.reload(&mut st, local, &mut changes).await;
        }
        (st.current.clone(), changes)
    }

    async fn reload(&self, st: &mut State, local: &Store, changes: &mut Vec<Change>) {
        let file_changed = self.reload_file(st, changes);
        if let Some(key) = &self.key {
            let mut get = redis::cmd("GET");
            get.arg(key);
            let key_bytes = match local.query_async(&Request::Cmd(get)).await {
                Ok(redis::Value::BulkString(b)) => Some(b),
                Ok(_) => None,
                Err(e) => {
                    // Keep what we have; try again at the next refresh.
                    skylog!(Warn, "reading topology key {key}: {e}");
                    if st.current.is_none() {
                        self.use_file(st, changes);
                    }
                    return;
                }
            };
            if let Some(bytes) = key_bytes {
                let digest = topology::document_digest(&bytes);
                // A new file may bring new addresses (or another global node) for the key's
                // topology, so the key is taken again.
                let again = file_changed && st.origin == Origin::Key;
                if st.key_seen != Some(digest) || again {
                    st.key_seen = Some(digest);
                    match from_key(&bytes, st.file.as_deref()) {
                        Ok(s) => loaded(st, Origin::Key, s, changes, &self.local),
                        Err(e) => report(changes, Origin::Key, e.to_string()),
                    }
                }
                // An invalid key keeps the topology in force (a changed file replaces the
                // file's); with none yet, the file is the last good one.
                if st.origin == Origin::Key || (st.current.is_some() && !file_changed) {
                    return;
                }
            } else {
                st.key_seen = None;
                if st.origin == Origin::Key && st.file.is_none() {
                    // The operator deleted the key and there is no file: keep the last good
                    // topology (state must keep moving) but say so.
                    skylog!(
                        Warn,
                        "topology key {key} removed; keeping the last topology"
                    );
                    return;
                }
            }
        }
        if st.origin != Origin::File || file_changed {
            self.use_file(st, changes);
        }
    }

    /// Puts the file's last good topology in force, if there is one.
    fn use_file(&self, st: &mut State, changes: &mut Vec<Change>) {
        if let Some(f) = st.file.clone() {
            if !(st.origin == Origin::File
                && st.current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &f)))
            {
                loaded(st, Origin::File, f, changes, &self.local);
            }
        }
    }

    /// Re-reads the file if it changed; true if it gave a new valid topology.
    fn reload_file(&self, st: &mut State, changes: &mut Vec<Change>) -> bool {
        let Some(path) = &self.file else {
            return false;
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) => {
                if !st.file_failed {
                    report(changes, Origin::File, format!("{}: {e}", path.display()));
                    st.file_failed = true;
                }
                st.file_seen = None;
                return false;
            }
        };
        let seen = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        if st.file_seen == Some(seen) {
            return false;
        }
        st.file_seen = Some(seen);
        let parsed = std::fs::read(path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|bytes| Schedule::parse(&bytes).map_err(|e| e.to_string()));
        match parsed {
            Ok(s) => {
                st.file_failed = false;
                st.file = Some(Arc::new(s));
                true
            }
            Err(e) => {
                st.file_failed = true;
                report(changes, Origin::File, e);
                false
            }
        }
    }
}

/// The topology a key's document describes, with the store addresses of `file` (by node
/// name) instead of its own. Refused if it names another global node than `file`.
fn from_key(bytes: &[u8], file: Option<&Schedule>) -> Result<Arc<Schedule>, TopologyError> {
    let mut s = Schedule::parse(bytes)?;
    let global = |t: &Schedule| t.global().map(|g| t.name(g).to_string());
    if let (Some(mine), Some(theirs)) = (global(&s), file.and_then(global)) {
        if mine != theirs {
            return Err(TopologyError::whole(format!(
                "the key names {mine} the global node, the topology file {theirs}: \
                 only the file may choose the global store"
            )));
        }
    }
    if s.take_addresses(file) {
        skylog!(
            Info,
            "topology key: store addresses in it are ignored (they come from \
             SKYLARK_NODE_ADDRS, the topology file or SKYLARK_NODE_ADDR_TEMPLATE)"
        );
    }
    Ok(Arc::new(s))
}

/// Most slots whose trees are computed ahead (from the current one on): well within the
/// topology's tree cache, so precomputing never evicts what it computed.
const PRECOMPUTE_SLOTS: usize = 32;

/// Computes `local`'s complete shortest-path tree in the current slot and the ones after
/// it (at most [`PRECOMPUTE_SLOTS`]): every election starts at the local node. Returns
/// how many trees were computed (0 when `local` is not in the topology).
fn precompute(s: &Schedule, local: &str, now_ms: u64) -> usize {
    let Some(id) = s.id(local) else {
        return 0;
    };
    let slots = s.slots();
    let first = s.slot_at(now_ms);
    (0..slots.min(PRECOMPUTE_SLOTS))
        .filter(|k| s.precompute((first + k) % slots, id))
        .count()
}

fn loaded(
    st: &mut State,
    origin: Origin,
    s: Arc<Schedule>,
    changes: &mut Vec<Change>,
    local: &str,
) {
    precompute(&s, local, crate::clock::now_ms());
    stats::inc(stats::Counter::TopologyReloads);
    skylog!(
        Info,
        "topology {:016x} from {origin:?}: {} nodes, {} slots",
        s.digest(),
        s.len(),
        s.slots()
    );
    changes.push(Change::Loaded {
        origin,
        digest: s.digest(),
        nodes: s.len(),
        slots: s.slots(),
    });
    st.current = Some(s);
    st.origin = origin;
}

fn report(changes: &mut Vec<Change>, origin: Origin, error: String) {
    stats::inc(stats::Counter::TopologyErrors);
    skylog!(
        Warn,
        "invalid topology from {origin:?} (the last good one stays in force): {error}"
    );
    changes.push(Change::Invalid { origin, error });
}

/// A topology error as a call error (for host calls that need a topology).
pub fn missing() -> CallError {
    CallError::new(
        skylark_abi::Status::ConfigInvalid,
        "no valid topology (SKYLARK_TOPOLOGY_FILE or the <ns>:topology key)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(slots: usize) -> Vec<u8> {
        let slot = r#"[{"source": "a", "target": "b", "latency_ms": 1, "bandwidth_mbps": 10},
                       {"source": "b", "target": "c", "latency_ms": 1, "bandwidth_mbps": 10}]"#;
        let slots = vec![slot; slots].join(",");
        format!(
            r#"{{"nodes": [{{"name": "a", "type": "Edge"}}, {{"name": "b", "type": "Edge"}},
                          {{"name": "c", "type": "Cloud"}}], "slots": [{slots}]}}"#
        )
        .into_bytes()
    }

    #[test]
    fn a_loaded_topology_has_the_local_trees_computed() {
        let mut st = State::default();
        let mut changes = Vec::new();
        let s = Arc::new(Schedule::parse(&topology(3)).expect("a topology"));
        loaded(&mut st, Origin::File, s, &mut changes, "b");
        let s = st.current.expect("loaded");
        // One complete tree per slot, from the local node: no election starts cold.
        assert_eq!(s.path_cache_len(), 3);
        assert_eq!(precompute(&s, "b", 0), 3);
        assert_eq!(s.path_cache_len(), 3);
    }

    #[test]
    fn precomputing_stays_within_the_cache_and_skips_unknown_nodes() {
        let s = Schedule::parse(&topology(100)).unwrap();
        assert_eq!(precompute(&s, "nobody", 0), 0);
        assert_eq!(s.path_cache_len(), 0);
        assert_eq!(precompute(&s, "a", 0), PRECOMPUTE_SLOTS);
        assert_eq!(s.path_cache_len(), PRECOMPUTE_SLOTS);
    }
}
