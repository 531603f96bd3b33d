//! The live topology: loaded from `SKYLARK_TOPOLOGY_FILE` and from the node-local key
//! `<ns>:topology` (which overrides the file, so an operator can change the topology while
//! functions run), re-checked at most every `SKYLARK_TOPOLOGY_REFRESH_MS`, re-parsed only
//! when the bytes changed. An invalid document is reported and the last good topology
//! stays in force. A topology that arrives gets the local node's shortest-path trees
//! computed at once, in the background, so that no job's election runs on a cold cache.

use crate::error::CallError;
use crate::store::{Request, Store};
use crate::topology::{self, Schedule};
use crate::{skylog, stats};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Mutex;

/// Where the topology in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    None,
    File,
    Key,
}

struct State {
    current: Option<Arc<Schedule>>,
    origin: Origin,
    checked: Option<Instant>,
    /// (mtime, length) of the file when last read.
    file_seen: Option<(SystemTime, u64)>,
    /// Digest of the key's bytes when last read (valid or not).
    key_seen: Option<u64>,
}

/// Watches the file and the key.
pub struct TopologyWatch {
    file: Option<PathBuf>,
    key: String,
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
        key: String,
        refresh: Duration,
        local: String,
    ) -> TopologyWatch {
        TopologyWatch {
            file: file.map(PathBuf::from),
            key,
            refresh,
            local,
            state: Mutex::new(State {
                current: None,
                origin: Origin::None,
                checked: None,
                file_seen: None,
                key_seen: None,
            }),
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
        let mut get = redis::cmd("GET");
        get.arg(&self.key);
        let key_bytes = match local.query_async(&Request::Cmd(get)).await {
            Ok(redis::Value::BulkString(b)) => Some(b),
            Ok(_) => None,
            Err(e) => {
                // Keep what we have; try again at the next refresh.
                skylog!(Warn, "reading topology key {}: {e}", self.key);
                return;
            }
        };
        if let Some(bytes) = key_bytes {
            let digest = topology::document_digest(&bytes);
            if st.key_seen != Some(digest) {
                st.key_seen = Some(digest);
                adopt(st, Origin::Key, &bytes, changes, &self.local);
            }
            // An invalid key keeps the topology in force; with none yet, the file is
            // the last good one.
            if st.origin == Origin::Key || st.current.is_some() {
                return;
            }
        } else {
            st.key_seen = None;
        }
        let Some(path) = &self.file else {
            if st.origin == Origin::Key {
                // The operator deleted the key and there is no file: keep the last good
                // topology (state must keep moving) but say so.
                skylog!(
                    Warn,
                    "topology key {} removed; keeping the last topology",
                    self.key
                );
            }
            return;
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) => {
                if st.origin != Origin::File || st.file_seen.is_some() {
                    report(changes, Origin::File, format!("{}: {e}", path.display()));
                    st.file_seen = None;
                }
                return;
            }
        };
        let seen = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        if st.file_seen == Some(seen) && st.origin == Origin::File {
            return;
        }
        st.file_seen = Some(seen);
        match std::fs::read(path) {
            Ok(bytes) => adopt(st, Origin::File, &bytes, changes, &self.local),
            Err(e) => report(changes, Origin::File, format!("{}: {e}", path.display())),
        }
    }
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

fn adopt(st: &mut State, origin: Origin, bytes: &[u8], changes: &mut Vec<Change>, local: &str) {
    match Schedule::parse(bytes) {
        Ok(s) => {
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
            st.current = Some(Arc::new(s));
            st.origin = origin;
        }
        Err(e) => report(changes, origin, e.to_string()),
    }
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

    fn state() -> State {
        State {
            current: None,
            origin: Origin::None,
            checked: None,
            file_seen: None,
            key_seen: None,
        }
    }

    #[test]
    fn an_adopted_topology_has_the_local_trees_computed() {
        let mut st = state();
        let mut changes = Vec::new();
        adopt(&mut st, Origin::File, &topology(3), &mut changes, "b");
        let s = st.current.expect("adopted");
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
