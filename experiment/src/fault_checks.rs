//! The store checks of the fault run ([`crate::faults`]), made once the outboxes have
//! drained: every bundle of the overwrite workload read from every store, and the expiry
//! of every bundle key. Definitions (RELIABILITY.md, section 2, states them too), per
//! field (chain, task) whose last acknowledged version is `A` (puts of a field are made
//! one after the other by one writer, so versions are ordered):
//!
//! * **lost**: no store holds version `A` or newer;
//! * **not at global**: the global store does not hold version `A` or newer;
//! * **stale**: a store that the field's placement makes responsible for it holds a
//!   version older than `A`: the writer's own node, the global store, the node the
//!   writer's placement record names for the field (`@at:<task>`, where readers are sent),
//!   or the node the chain's latest acknowledged put elected (which must hold the whole
//!   bundle);
//! * **superseded**: any other store holds a version older than `A`: a copy on a node
//!   an earlier put elected that no later put updated or cleaned up (reported, not
//!   covered by the guarantee; see RELIABILITY.md);
//! * **corrupted**: a store holds bytes that are not exactly a version of that field that
//!   some put wrote (torn, foreign, garbage, or a version never put);
//! * **wrongly deleted**: a store that still needs the field does not hold it at all: the
//!   writer's own node (except for `stateless` chains, which live at the global store
//!   only), the node the placement record names for it and the node the chain's latest
//!   acknowledged put elected (the global store's absence counts as *not at global*);
//! * **TTL violation**: a bundle key holding state whose expiry is not what its writer
//!   configured: with `SKYLARK_TTL_SECS=0` none (`PTTL` -1); with `N` seconds, more than 0
//!   and at most `N` s, and no less than `N` s minus the time since the run began (every
//!   write sets the full TTL, so a copy can be no older than the run).
//!
//! A version newer than `A` is fine: a put that failed may have been stored.

use fault_guest::versioned::{decode, stateless_chain, VPut, Verdict};
use skylark_netemu::constellation::Constellation;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

/// The namespace the plugin uses by default.
const NS: &str = "skylark";

/// Bundles read per pipelined round trip.
const CHUNK: usize = 100;

/// Examples kept per kind of problem.
const EXAMPLES_PER_KIND: usize = 6;

/// Slack of the TTL lower bound: the time between a put and the write that set its TTL.
const TTL_SLACK: Duration = Duration::from_secs(5);

/// One put of the overwrite workload and whether it was acknowledged.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The node whose guest made it.
    pub node: String,
    pub put: VPut,
    pub acked: bool,
}

/// What [`verify_stores`] found.
#[derive(Clone, Debug, Default)]
pub struct StoreTally {
    /// Fields with at least one acknowledged put.
    pub fields: u64,
    /// Field copies read (a field on a store).
    pub copies: u64,
    pub lost: u64,
    pub not_at_global: u64,
    /// Stale copies by the role of the store holding them: `origin`, `global`,
    /// `placed`, `elected`.
    pub stale: BTreeMap<&'static str, u64>,
    /// Older versions on stores no placement makes responsible.
    pub superseded: u64,
    pub corrupted: u64,
    pub wrongly_deleted: u64,
    /// Bundle keys whose expiry was checked.
    pub ttl_checked: u64,
    pub ttl_violations: u64,
    /// A few examples of each kind of problem.
    pub examples: Vec<String>,
    /// Examples taken per kind.
    taken: BTreeMap<&'static str, usize>,
}

impl StoreTally {
    /// Stale copies on responsible stores.
    pub fn stale_total(&self) -> u64 {
        self.stale.values().sum()
    }

    /// True if every count that must be 0 is.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.not_at_global == 0
            && self.stale_total() == 0
            && self.corrupted == 0
            && self.wrongly_deleted == 0
            && self.ttl_violations == 0
    }

    /// Keeps `what` as an example of `kind` unless there are enough of that kind.
    fn example(&mut self, kind: &'static str, what: String) {
        let n = self.taken.entry(kind).or_insert(0);
        if *n < EXAMPLES_PER_KIND {
            *n += 1;
            self.examples.push(what);
        }
    }
}

impl fmt::Display for StoreTally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by: Vec<String> = self.stale.iter().map(|(k, v)| format!("{k} {v}")).collect();
        writeln!(
            f,
            "fields checked       {} ({} copies on the stores)",
            self.fields, self.copies
        )?;
        writeln!(f, "lost                 {}", self.lost)?;
        writeln!(f, "not at global store  {}", self.not_at_global)?;
        writeln!(
            f,
            "stale copies         {} ({})",
            self.stale_total(),
            by.join(", ")
        )?;
        writeln!(f, "superseded copies    {}", self.superseded)?;
        writeln!(f, "corrupted            {}", self.corrupted)?;
        writeln!(f, "wrongly deleted      {}", self.wrongly_deleted)?;
        writeln!(
            f,
            "TTL violations       {} (of {} bundle keys)",
            self.ttl_violations, self.ttl_checked
        )?;
        for e in &self.examples {
            writeln!(f, "  ! {e}")?;
        }
        Ok(())
    }
}

/// A direct connection to `node`'s store.
fn connect(net: &Constellation, node: &str) -> Result<redis::Connection, String> {
    let url = net.redis(node).url.clone();
    redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .map_err(|e| format!("connecting to the store of {node} ({url}): {e}"))
}

/// A bundle as every store holds it: node -> (state fields, placement record).
type Held = BTreeMap<String, (HashMap<String, Vec<u8>>, HashMap<String, String>)>;

/// The plugin's version of each field (`@v:<task>`) as every store holds it, for the
/// examples of a failure: node -> task -> version.
type Stamps = BTreeMap<String, HashMap<String, String>>;

/// The bundles of `chains` on every store, in the order of `chains`.
fn read_bundles(net: &Constellation, chains: &[&str]) -> Result<Vec<(Held, Stamps)>, String> {
    let mut out: Vec<(Held, Stamps)> = chains.iter().map(|_| Default::default()).collect();
    for node in net.nodes() {
        let mut conn = connect(net, &node)?;
        let mut pipe = redis::pipe();
        for chain in chains {
            pipe.cmd("HGETALL").arg(format!("{NS}:bundle:{chain}"));
        }
        let hashes: Vec<HashMap<String, Vec<u8>>> = pipe
            .query(&mut conn)
            .map_err(|e| format!("reading bundles on {node}: {e}"))?;
        for ((slot, stamped), fields) in out.iter_mut().zip(hashes) {
            let mut state = HashMap::new();
            let mut placed = HashMap::new();
            let mut stamps = HashMap::new();
            for (k, v) in fields {
                if let Some(task) = k.strip_prefix("@at:") {
                    placed.insert(task.to_string(), String::from_utf8_lossy(&v).into_owned());
                } else if let Some(task) = k.strip_prefix("@v:") {
                    stamps.insert(task.to_string(), String::from_utf8_lossy(&v).into_owned());
                } else if !k.starts_with('@') {
                    state.insert(k, v);
                }
            }
            if !state.is_empty() || !placed.is_empty() {
                slot.insert(node.clone(), (state, placed));
                stamped.insert(node.clone(), stamps);
            }
        }
    }
    Ok(out)
}

/// One field's history: the last acknowledged version and every version put.
#[derive(Default)]
struct FieldHistory {
    acked: u64,
    versions: Vec<u64>,
}

/// One chain's history: its writer, its fields, and the number and task of its last
/// acknowledged put.
struct ChainHistory<'a> {
    origin: &'a str,
    fields: BTreeMap<&'a str, FieldHistory>,
    last: Option<(u64, &'a str)>,
}

/// Checks every field of `attempts` on every store; see the [module documentation](self).
pub fn verify_stores(net: &Constellation, attempts: &[Attempt]) -> Result<StoreTally, String> {
    let global = net.cloud();
    let mut chains: BTreeMap<&str, ChainHistory> = BTreeMap::new();
    for a in attempts {
        let entry = chains
            .entry(a.put.chain.as_str())
            .or_insert_with(|| ChainHistory {
                origin: a.node.as_str(),
                fields: BTreeMap::new(),
                last: None,
            });
        let h = entry.fields.entry(a.put.task.as_str()).or_default();
        h.versions.push(a.put.version);
        if a.acked {
            h.acked = h.acked.max(a.put.version);
            if entry.last.is_none_or(|(id, _)| id < a.put.id) {
                entry.last = Some((a.put.id, a.put.task.as_str()));
            }
        }
    }
    let mut t = StoreTally::default();
    let names: Vec<&str> = chains.keys().copied().collect();
    for chunk in names.chunks(CHUNK) {
        let held = read_bundles(net, chunk)?;
        for (chain, (held, stamps)) in chunk.iter().zip(held) {
            let ChainHistory {
                origin,
                fields,
                last,
            } = &chains[chain];
            let stateless = stateless_chain(chain);
            // The node the latest acknowledged put elected, by the writer's record.
            let elected = last.and_then(|(_, task)| {
                held.get(*origin)
                    .and_then(|(_, placed)| placed.get(task))
                    .filter(|n| n.as_str() != *origin && **n != global)
                    .cloned()
            });
            for (task, h) in fields {
                if h.acked > 0 {
                    t.fields += 1;
                }
                // Where the writer's placement record sends readers of this field.
                let placed_at = held
                    .get(*origin)
                    .and_then(|(_, placed)| placed.get(*task))
                    .filter(|n| n.as_str() != *origin && **n != global)
                    .cloned();
                let mut newest_anywhere = 0;
                for (node, (state, _)) in &held {
                    let Some(bytes) = state.get(*task) else {
                        continue;
                    };
                    t.copies += 1;
                    let role = if node == origin {
                        "origin"
                    } else if *node == global {
                        "global"
                    } else if placed_at.as_deref() == Some(node.as_str()) {
                        "placed"
                    } else if elected.as_deref() == Some(node.as_str()) {
                        "elected"
                    } else {
                        "other"
                    };
                    match decode(chain, task, bytes) {
                        Verdict::Version(v) if h.versions.contains(&v) => {
                            newest_anywhere = newest_anywhere.max(v);
                            if v < h.acked && role == "other" {
                                t.superseded += 1;
                                t.example("superseded", format!(
                                    "superseded {chain}/{task} on {node}: version {v}, last acknowledged {}",
                                    h.acked
                                ));
                            } else if v < h.acked {
                                *t.stale.entry(role).or_insert(0) += 1;
                                let stamp = |n: &str| {
                                    stamps
                                        .get(n)
                                        .and_then(|s| s.get(*task))
                                        .map_or("none", String::as_str)
                                        .to_string()
                                };
                                t.example("stale", format!(
                                    "stale {chain}/{task} on {node} ({role}): version {v}, last acknowledged {} (plugin versions: {} there, {} on {origin})",
                                    h.acked,
                                    stamp(node),
                                    stamp(origin)
                                ));
                            }
                        }
                        other => {
                            t.corrupted += 1;
                            t.example(
                                "corrupted",
                                format!(
                                "corrupted {chain}/{task} on {node} ({role}): {other:?} ({} bytes)",
                                bytes.len()
                            ),
                            );
                        }
                    }
                }
                if h.acked == 0 {
                    continue;
                }
                if newest_anywhere < h.acked {
                    t.lost += 1;
                    t.example("lost", format!(
                        "lost {chain}/{task}: version {} acknowledged, newest on any store {newest_anywhere}",
                        h.acked
                    ));
                }
                let version_on = |node: &str| {
                    held.get(node)
                        .and_then(|(state, _)| state.get(*task))
                        .map(|b| match decode(chain, task, b) {
                            Verdict::Version(v) => v,
                            _ => 0,
                        })
                };
                if version_on(&global).unwrap_or(0) < h.acked {
                    t.not_at_global += 1;
                    t.example("not_at_global", format!(
                        "not at the global store {chain}/{task}: version {} acknowledged, global has {:?}",
                        h.acked,
                        version_on(&global)
                    ));
                }
                let mut needed: Vec<(&str, &str)> = Vec::new();
                if !stateless {
                    needed.push((origin, "origin"));
                }
                if let Some(p) = &placed_at {
                    needed.push((p.as_str(), "placed"));
                }
                if let Some(e) = elected.as_ref().filter(|e| Some(*e) != placed_at.as_ref()) {
                    needed.push((e.as_str(), "elected"));
                }
                for (node, role) in needed {
                    if version_on(node).is_none() {
                        t.wrongly_deleted += 1;
                        let there = held.get(node).map(|(state, placed)| {
                            let mut s: Vec<&String> = state.keys().collect();
                            s.sort();
                            let mut p: Vec<String> =
                                placed.iter().map(|(t, n)| format!("{t}@{n}")).collect();
                            p.sort();
                            format!("state {s:?}, placement {p:?}")
                        });
                        t.example("wrongly_deleted", format!(
                            "wrongly deleted {chain}/{task} from {node} ({role}): version {} acknowledged; {node} holds {}",
                            h.acked,
                            there.unwrap_or_else(|| "no bundle".into())
                        ));
                    }
                }
            }
        }
    }
    Ok(t)
}

/// The writer node of a chain of the fault run (`<kind>-<run>-<node>-<n>`).
fn owner(chain: &str) -> Option<&str> {
    chain.split('-').nth(2)
}

/// Checks the expiry of every bundle key holding state on every store whose chain belongs
/// to run `run` (`v-<run>-...`, `k-<run>-...` and the counters `cas-<run>-...`); `ttl_of(node)` is the TTL in seconds
/// the chain's writer node runs with (0: none), `run_age` how long ago the run began.
pub fn check_ttls(
    net: &Constellation,
    run: &str,
    ttl_of: &dyn Fn(&str) -> u64,
    run_age: Duration,
    t: &mut StoreTally,
) -> Result<(), String> {
    for node in net.nodes() {
        let mut conn = connect(net, &node)?;
        let mut keys: Vec<String> = Vec::new();
        for kind in ["v", "k", "cas"] {
            let pattern = format!("{NS}:bundle:{kind}-{run}-*");
            let iter: redis::Iter<String> = redis::cmd("SCAN")
                .cursor_arg(0)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .clone()
                .iter(&mut conn)
                .map_err(|e| format!("scanning {node}: {e}"))?;
            for key in iter {
                keys.push(key.map_err(|e| format!("scanning {node}: {e}"))?);
            }
        }
        for chunk in keys.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("PTTL").arg(key).cmd("HKEYS").arg(key);
            }
            let replies: Vec<redis::Value> = pipe
                .query(&mut conn)
                .map_err(|e| format!("reading expiries on {node}: {e}"))?;
            for (key, pair) in chunk.iter().zip(replies.chunks(2)) {
                let pttl: i64 = redis::from_redis_value(pair[0].clone()).unwrap_or(-2);
                let names: Vec<String> =
                    redis::from_redis_value(pair[1].clone()).unwrap_or_default();
                if pttl == -2 || names.iter().all(|n| n.starts_with('@')) {
                    continue; // gone meanwhile, or only an announcement
                }
                let chain = key.trim_start_matches(&format!("{NS}:bundle:"));
                let Some(writer) = owner(chain) else {
                    continue;
                };
                t.ttl_checked += 1;
                let ttl_ms = ttl_of(writer) as i64 * 1000;
                let ok = if ttl_ms == 0 {
                    pttl == -1
                } else {
                    let floor = ttl_ms - (run_age + TTL_SLACK).as_millis() as i64;
                    pttl > 0 && pttl <= ttl_ms && pttl >= floor
                };
                if !ok {
                    t.ttl_violations += 1;
                    t.example("ttl", format!(
                        "TTL of {chain} on {node}: PTTL {pttl} ms, its writer {writer} runs with SKYLARK_TTL_SECS={}",
                        ttl_of(writer)
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_name_their_writer() {
        assert_eq!(owner("v-s1-pi5u2-3"), Some("pi5u2"));
        assert_eq!(owner("k-s1-pi4u6-12"), Some("pi4u6"));
        assert_eq!(owner("cas-s1-pi4u6-2"), Some("pi4u6"));
        assert_eq!(owner("other"), None);
    }
}
