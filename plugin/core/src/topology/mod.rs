//! The time-varying topology ("schedule") of a constellation: which nodes exist, and which
//! undirected links join them during each time slot.
//!
//! Time is cut into slots of `slot_ms` milliseconds counted from `epoch_ms`; the schedule
//! holds one graph per slot and repeats cyclically, so the graph valid at a Unix time is
//! slot `((unix_ms - epoch_ms) / slot_ms) mod slots` ([`Schedule::slot_at`]). With the
//! defaults (60 s slots, epoch 0) that is the testbed's "minute mod 7".
//!
//! [`Schedule::parse`] reads two JSON formats:
//! - the original testbed format, as is: a top-level array of slots, each an array of links
//!   `{"bandwidth": 90, "latency": 10, "source": {"node_ip", "node_name", "node_type"},
//!   "target": {...}}` (or a top-level array of links: one static slot);
//! - Skylark's own format: an object with `nodes` and `slots` (or `links`), optional
//!   `slot_ms`/`slot_secs`, `epoch_ms` and `global` (see [`Schedule::parse`]).
//!
//! This module holds the model and its validation and digest; `formats` reads the two
//! documents, `graph` holds links, each slot's adjacency, paths and the shortest-path
//! cache.
//!
//! Nodes are numbered by their position in [`Schedule::nodes`] (the union over all slots).
//! Each slot's adjacency is stored compactly (CSR arrays of `(neighbour, link index)`,
//! sorted by neighbour). Shortest-path trees are cached per `(slot, source)` and grown
//! lazily (Dijkstra stops at the requested target and resumes for farther ones), so
//! repeated storage-node elections from the same node cost O(path length).

mod formats;
mod graph;

pub use graph::{Link, Path};

use graph::{Edge, PathCache, SlotGraph, NONE};
use skylark_abi::ids;
use std::collections::HashMap;
use std::fmt;

/// Slot length used when a document gives none (the testbed's one minute).
pub const DEFAULT_SLOT_MS: u64 = 60_000;

/// Why a document or a set of parts is not a valid topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopologyError {
    /// The document is empty or only whitespace.
    Empty,
    /// The document is not JSON (the parser's message).
    NotJson(String),
    /// The document is JSON but neither an array (testbed format) nor an object (Skylark
    /// format); `found` is the JSON type it is.
    NotADocument { found: &'static str },
    /// What the document describes is not a valid topology. `at` names the place ("slot
    /// 1, link 0 (a - b)", "node 2"), or is empty when the topology as a whole is meant.
    Invalid { at: String, reason: String },
}

impl TopologyError {
    /// An invalid topology, at a named place.
    pub(crate) fn at(at: impl Into<String>, reason: impl Into<String>) -> TopologyError {
        TopologyError::Invalid {
            at: at.into(),
            reason: reason.into(),
        }
    }

    /// An invalid topology as a whole.
    pub(crate) fn whole(reason: impl Into<String>) -> TopologyError {
        TopologyError::at("", reason)
    }
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopologyError::Empty => f.write_str("topology document is empty"),
            TopologyError::NotJson(e) => write!(f, "topology document is not valid JSON: {e}"),
            TopologyError::NotADocument { found } => write!(
                f,
                "topology document must be a JSON array (testbed format) or object \
                 (Skylark format), found {found}"
            ),
            TopologyError::Invalid { at, reason } if at.is_empty() => f.write_str(reason),
            TopologyError::Invalid { at, reason } => write!(f, "{at}: {reason}"),
        }
    }
}

impl std::error::Error for TopologyError {}

/// What kind of machine a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeType {
    /// The cloud node; its store is the global store.
    Cloud,
    /// A ground edge node.
    Edge,
    /// A satellite.
    Sat,
}

impl NodeType {
    /// Parses `Cloud`, `Edge` or `Sat`, ignoring ASCII case.
    pub fn parse(s: &str) -> Option<NodeType> {
        [NodeType::Cloud, NodeType::Edge, NodeType::Sat]
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }

    /// The canonical spelling (`Cloud`, `Edge`, `Sat`).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Cloud => "Cloud",
            NodeType::Edge => "Edge",
            NodeType::Sat => "Sat",
        }
    }
}

impl fmt::Display for NodeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One node of the constellation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Unique name (an id: 1-128 bytes of `[A-Za-z0-9._-]`).
    pub name: String,
    pub kind: NodeType,
    /// Address of the node, if known.
    pub ip: Option<String>,
    /// URL of the node's Redis, if given explicitly.
    pub redis: Option<String>,
}

/// FNV-1a, 64 bit: identifies a topology version.
#[derive(Debug, Clone, Copy)]
struct Fnv(pub(super) u64);

impl Fnv {
    pub(super) fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> &mut Fnv {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }
}

/// FNV-1a 64 of a document's bytes: the digest [`Schedule::parse`] gives it, which
/// identifies its version.
pub fn document_digest(bytes: &[u8]) -> u64 {
    Fnv::new().write(bytes).0
}

/// The time-varying topology: nodes, one graph per slot, slot timing and the global node.
/// A clone starts with an empty path cache.
#[derive(Clone)]
pub struct Schedule {
    nodes: Vec<Node>,
    index: HashMap<String, u32>,
    slots: Vec<SlotGraph>,
    slot_ms: u64,
    epoch_ms: u64,
    global: Option<u32>,
    digest: u64,
    paths: PathCache,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("nodes", &self.nodes.len())
            .field("slots", &self.slots.len())
            .field("slot_ms", &self.slot_ms)
            .field("epoch_ms", &self.epoch_ms)
            .field("global", &self.global)
            .field("digest", &format_args!("{:016x}", self.digest))
            .finish()
    }
}

impl Schedule {
    /// Builds a schedule from nodes (id = index) and per-slot links, with the same
    /// validation as [`Schedule::parse`]. The digest hashes the given values.
    pub fn from_parts(
        nodes: Vec<Node>,
        slots: Vec<Vec<Link>>,
        slot_ms: u64,
        epoch_ms: u64,
        global: Option<u32>,
    ) -> Result<Schedule, TopologyError> {
        if nodes.is_empty() {
            return Err(TopologyError::whole("topology has no nodes"));
        }
        if slots.is_empty() {
            return Err(TopologyError::whole("topology has no slots"));
        }
        if slot_ms == 0 {
            return Err(TopologyError::whole("slot length must be > 0 ms"));
        }
        if nodes.len() >= NONE as usize {
            return Err(TopologyError::whole(format!(
                "topology has too many nodes ({})",
                nodes.len()
            )));
        }
        let index = index_nodes(&nodes)?;
        if let Some(g) = global {
            if g as usize >= nodes.len() {
                return Err(TopologyError::whole(format!(
                    "global node id {g} is not a node"
                )));
            }
        }
        for (si, links) in slots.iter().enumerate() {
            validate_slot(&nodes, si, links)?;
        }
        let digest = digest_parts(&nodes, &slots, slot_ms, epoch_ms, global);
        let n = nodes.len();
        Ok(Schedule {
            nodes,
            index,
            slots: slots
                .into_iter()
                .map(|links| SlotGraph::build(n, links))
                .collect(),
            slot_ms,
            epoch_ms,
            global,
            digest,
            paths: PathCache::default(),
        })
    }

    /// The id of the node called `name`.
    pub fn id(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    /// The node with id `id`. Panics if `id >= self.len()`; see [`Schedule::get`].
    pub fn node(&self, id: u32) -> &Node {
        &self.nodes[id as usize]
    }

    /// The node with id `id`, if any.
    pub fn get(&self, id: u32) -> Option<&Node> {
        self.nodes.get(id as usize)
    }

    /// The name of node `id`, or `"?"` for an unknown id (for messages).
    pub fn name(&self, id: u32) -> &str {
        self.get(id).map_or("?", |n| n.name.as_str())
    }

    /// All nodes; a node's id is its index.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if there are no nodes (never for a validated schedule).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Number of slots in one cycle.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Length of one slot.
    pub fn slot_ms(&self) -> u64 {
        self.slot_ms
    }

    /// Unix time (ms) at which slot 0 of the first cycle starts.
    pub fn epoch_ms(&self) -> u64 {
        self.epoch_ms
    }

    /// Slots elapsed since the epoch at `unix_ms` (not wrapped; 0 before the epoch).
    pub fn absolute_slot(&self, unix_ms: u64) -> u64 {
        unix_ms.saturating_sub(self.epoch_ms) / self.slot_ms
    }

    /// The slot valid at `unix_ms`: `((unix_ms - epoch_ms) / slot_ms) mod slots`, slot 0
    /// for times before the epoch.
    pub fn slot_at(&self, unix_ms: u64) -> usize {
        (self.absolute_slot(unix_ms) % self.slots.len() as u64) as usize
    }

    /// The links of slot `slot` (empty for an unknown slot).
    pub fn links(&self, slot: usize) -> &[Link] {
        self.slots.get(slot).map_or(&[], |g| g.links.as_slice())
    }

    /// The direct neighbours of `node` in `slot`, with the joining link, by neighbour id.
    pub fn neighbours(&self, slot: usize, node: u32) -> impl Iterator<Item = (u32, &Link)> + '_ {
        let (adj, links): (&[Edge], &[Link]) = match self.slots.get(slot) {
            Some(g) => (g.adjacent(node), &g.links),
            None => (&[], &[]),
        };
        adj.iter().map(move |e| (e.to, &links[e.link as usize]))
    }

    /// The link between `a` and `b` in `slot`, if any.
    pub fn link(&self, slot: usize, a: u32, b: u32) -> Option<&Link> {
        let g = self.slots.get(slot)?;
        g.find(a, b).map(|li| &g.links[li as usize])
    }

    /// The global (cloud) node, if any.
    pub fn global(&self) -> Option<u32> {
        self.global
    }

    /// Stable hash identifying this topology version (FNV-1a 64 of the parsed bytes).
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Replaces every node's addresses (`ip`, `redis`) with those `from` gives the node
    /// of the same name, or none: a topology from the `<ns>:topology` key takes its store
    /// addresses from the operator's file, never from the key (issue 16 point 2). True if
    /// this topology had an address of its own that `from` does not give.
    pub fn take_addresses(&mut self, from: Option<&Schedule>) -> bool {
        let mut dropped = false;
        for node in &mut self.nodes {
            let theirs = from.and_then(|f| f.id(&node.name).map(|id| f.node(id)));
            let (ip, redis) = theirs.map_or((None, None), |n| (n.ip.clone(), n.redis.clone()));
            dropped |= (node.ip.is_some() && node.ip != ip)
                || (node.redis.is_some() && node.redis != redis);
            node.ip = ip;
            node.redis = redis;
        }
        dropped
    }

    /// The Redis URL of node `id`: its explicit `redis`, else `redis://<ip>:<default_port>`
    /// (IPv6 addresses bracketed), else `None`.
    pub fn redis_url(&self, id: u32, default_port: u16) -> Option<String> {
        let node = self.get(id)?;
        if let Some(url) = &node.redis {
            return Some(url.clone());
        }
        let ip = node.ip.as_deref()?;
        if ip.contains(':') && !ip.starts_with('[') {
            Some(format!("redis://[{ip}]:{default_port}"))
        } else {
            Some(format!("redis://{ip}:{default_port}"))
        }
    }

    /// The shortest-latency path from `from` to `to` in `slot`, or `None` if either node
    /// or the slot is unknown or `to` is unreachable.
    ///
    /// The shortest-path tree of `(slot, from)` is cached and grown only as far as the
    /// targets asked for so far, so repeated calls cost O(path length).
    pub fn shortest_path(&self, slot: usize, from: u32, to: u32) -> Option<Path> {
        self.paths
            .shortest_path(&self.slots, self.nodes.len(), slot, from, to)
    }

    /// Number of shortest-path trees currently cached.
    pub fn path_cache_len(&self) -> usize {
        self.paths.len()
    }

    /// Drops all cached shortest-path trees.
    pub fn clear_path_cache(&self) {
        self.paths.clear();
    }

    /// Computes and caches the complete shortest-path tree of `from` in `slot` (e.g. for
    /// the local node when a new topology arrives), so that later elections from `from`
    /// cost O(path length) whatever their destination. False if `slot` or `from` is
    /// unknown.
    pub fn precompute(&self, slot: usize, from: u32) -> bool {
        self.paths
            .tree(&self.slots, self.nodes.len(), slot, from, None)
            .is_some()
    }
}

/// Maps node names to ids, rejecting invalid and duplicate names.
fn index_nodes(nodes: &[Node]) -> Result<HashMap<String, u32>, TopologyError> {
    let mut index = HashMap::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        ids::validate(node.name.as_bytes()).map_err(|e| {
            TopologyError::at(format!("node {i}"), format!("name {:?} {e}", node.name))
        })?;
        if let Some(url) = &node.redis {
            crate::config::check_redis_url(url).map_err(|e| {
                TopologyError::at(format!("node {i} ({})", node.name), format!("redis {e}"))
            })?;
        }
        if let Some(first) = index.insert(node.name.clone(), i as u32) {
            return Err(TopologyError::at(
                format!("node {i}"),
                format!("name {:?} is already used by node {first}", node.name),
            ));
        }
    }
    Ok(index)
}

/// Checks the links of slot `si`: known distinct endpoints, sane numbers, no duplicates.
fn validate_slot(nodes: &[Node], si: usize, links: &[Link]) -> Result<(), TopologyError> {
    let mut seen: HashMap<(u32, u32), usize> = HashMap::with_capacity(links.len());
    for (li, l) in links.iter().enumerate() {
        let name = |id: u32| nodes.get(id as usize).map(|n| n.name.as_str());
        let (Some(a), Some(b)) = (name(l.a), name(l.b)) else {
            return Err(TopologyError::at(
                format!("slot {si}, link {li}"),
                format!(
                    "node id {} is not a node (there are {})",
                    if name(l.a).is_none() { l.a } else { l.b },
                    nodes.len()
                ),
            ));
        };
        let at = format!("slot {si}, link {li} ({a} - {b})");
        if l.a == l.b {
            return Err(TopologyError::at(
                at,
                "a link must join two different nodes",
            ));
        }
        if !(l.latency_ms.is_finite() && l.latency_ms >= 0.0) {
            return Err(TopologyError::at(
                at,
                format!("latency {} ms must be finite and >= 0", l.latency_ms),
            ));
        }
        if !(l.jitter_ms.is_finite() && l.jitter_ms >= 0.0) {
            return Err(TopologyError::at(
                at,
                format!("jitter {} ms must be finite and >= 0", l.jitter_ms),
            ));
        }
        if !(l.bandwidth_mbps.is_finite() && l.bandwidth_mbps > 0.0) {
            return Err(TopologyError::at(
                at,
                format!(
                    "bandwidth {} Mbit/s must be finite and > 0",
                    l.bandwidth_mbps
                ),
            ));
        }
        if let Some(first) = seen.insert((l.a.min(l.b), l.a.max(l.b)), li) {
            return Err(TopologyError::at(
                at,
                format!("duplicates link {first} of the slot"),
            ));
        }
    }
    Ok(())
}

/// Digest of a schedule built from values rather than bytes.
fn digest_parts(
    nodes: &[Node],
    slots: &[Vec<Link>],
    slot_ms: u64,
    epoch_ms: u64,
    global: Option<u32>,
) -> u64 {
    let mut h = Fnv::new();
    h.write(&slot_ms.to_le_bytes())
        .write(&epoch_ms.to_le_bytes());
    h.write(&global.map_or(u64::MAX, u64::from).to_le_bytes());
    for n in nodes {
        h.write(n.name.as_bytes())
            .write(&[0])
            .write(n.kind.as_str().as_bytes());
        for field in [&n.ip, &n.redis] {
            h.write(&[1])
                .write(field.as_deref().unwrap_or("").as_bytes());
        }
    }
    for links in slots {
        h.write(b"slot");
        for l in links {
            h.write(&l.a.to_le_bytes()).write(&l.b.to_le_bytes());
            for v in [l.latency_ms, l.jitter_ms, l.bandwidth_mbps] {
                h.write(&v.to_bits().to_le_bytes());
            }
        }
    }
    h.0
}

/// Shared by the tests of this module and its children.
#[cfg(test)]
mod fixtures {
    use super::*;

    pub const CONSTELLATION: &[u8] =
        include_bytes!("../../../../tests/data/constellation-topologies.json");

    pub fn constellation() -> Schedule {
        Schedule::parse(CONSTELLATION).unwrap()
    }

    pub fn node(name: &str, kind: NodeType) -> Node {
        Node {
            name: name.into(),
            kind,
            ip: None,
            redis: None,
        }
    }

    pub fn link(a: u32, b: u32, latency_ms: f64, bandwidth_mbps: f64) -> Link {
        Link {
            a,
            b,
            latency_ms,
            jitter_ms: 0.0,
            bandwidth_mbps,
        }
    }

    pub fn three_nodes() -> Vec<Node> {
        vec![
            node("a", NodeType::Sat),
            node("b", NodeType::Sat),
            node("c", NodeType::Cloud),
        ]
    }

    pub fn err(doc: &str) -> String {
        Schedule::parse(doc.as_bytes()).unwrap_err().to_string()
    }

    pub fn parts_err(links: Vec<Link>) -> String {
        Schedule::from_parts(three_nodes(), vec![links], 1000, 0, None)
            .unwrap_err()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn minute_mod_seven() {
        let s = constellation();
        assert_eq!(s.slot_at(0), 0);
        assert_eq!(s.slot_at(59_999), 0);
        assert_eq!(s.slot_at(3 * 60_000), 3);
        assert_eq!(s.slot_at(10 * 60_000 + 5), 3);
        assert_eq!(s.slot_at(7 * 60_000), 0);
        // 2024-06-01T12:36:56Z is minute 28,620,756 since the epoch; mod 7 = 3.
        let t = 1_717_245_416_000;
        assert_eq!(s.slot_at(t), ((t / 60_000) % 7) as usize);
        assert_eq!(s.slot_at(t), 3);
    }

    #[test]
    fn slot_at_before_the_epoch_is_slot_zero() {
        let s = Schedule::from_parts(
            three_nodes(),
            vec![vec![], vec![], vec![]],
            1000,
            10_000,
            None,
        )
        .unwrap();
        assert_eq!(s.slot_at(0), 0);
        assert_eq!(s.slot_at(9_999), 0);
        assert_eq!(s.slot_at(11_000), 1);
        assert_eq!(s.slot_at(13_500), 0);
        assert_eq!(s.absolute_slot(13_500), 3);
    }

    #[test]
    fn from_parts_validates() {
        assert!(parts_err(vec![link(0, 3, 1.0, 1.0)]).contains("node id 3 is not a node"));
        assert!(parts_err(vec![link(1, 1, 1.0, 1.0)]).contains("two different"));
        assert!(parts_err(vec![link(0, 1, f64::NAN, 1.0)]).contains("latency NaN"));
        assert!(parts_err(vec![link(0, 1, f64::INFINITY, 1.0)]).contains("latency inf"));
        assert!(parts_err(vec![link(0, 1, 1.0, f64::INFINITY)]).contains("bandwidth inf"));
        assert!(parts_err(vec![link(0, 1, 1.0, -5.0)]).contains("bandwidth -5"));
        let mut jittery = link(0, 1, 1.0, 1.0);
        jittery.jitter_ms = f64::NAN;
        assert!(parts_err(vec![jittery]).contains("jitter NaN"));
        let dup = parts_err(vec![
            link(0, 1, 1.0, 1.0),
            link(2, 0, 1.0, 1.0),
            link(1, 0, 1.0, 1.0),
        ]);
        assert!(
            dup.contains("slot 0, link 2 (b - a): duplicates link 0"),
            "{dup}"
        );
        let nodes = three_nodes;
        let e = Schedule::from_parts(nodes(), vec![], 1, 0, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no slots"));
        let e = Schedule::from_parts(vec![], vec![vec![]], 1, 0, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no nodes"));
        let e = Schedule::from_parts(nodes(), vec![vec![]], 0, 0, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be > 0"));
        let e = Schedule::from_parts(nodes(), vec![vec![]], 1, 0, Some(3))
            .unwrap_err()
            .to_string();
        assert!(e.contains("global node id 3"));
        let mut twice = nodes();
        twice[2].name = "a".into();
        let e = Schedule::from_parts(twice, vec![vec![]], 1, 0, None).unwrap_err();
        assert!(
            matches!(&e, TopologyError::Invalid { at, .. } if at == "node 2"),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("node 2: name \"a\" is already used by node 0"),
            "{e}"
        );
    }

    #[test]
    fn node_type_parsing() {
        assert_eq!(NodeType::parse("cloud"), Some(NodeType::Cloud));
        assert_eq!(NodeType::parse("eDgE"), Some(NodeType::Edge));
        assert_eq!(NodeType::parse("SAT"), Some(NodeType::Sat));
        assert_eq!(NodeType::parse("satellite"), None);
        assert_eq!(NodeType::Sat.to_string(), "Sat");
    }
}
