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
//! Nodes are numbered by their position in [`Schedule::nodes`] (the union over all slots).
//! Each slot's adjacency is stored compactly (CSR arrays of `(neighbour, link index)`,
//! sorted by neighbour). Shortest-path trees are cached per `(slot, source)` and grown
//! lazily (Dijkstra stops at the requested target and resumes for farther ones), so
//! repeated storage-node elections from the same node cost O(path length).

use serde::Deserialize;
use serde_json::Value;
use skylark_abi::ids;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// Slot length used when a document gives none (the testbed's one minute).
pub const DEFAULT_SLOT_MS: u64 = 60_000;

/// Most shortest-path trees kept per schedule; the cache is emptied when it is full.
/// A node elects from itself only, so it needs at most one tree per slot.
const TREE_CACHE_CAP: usize = 64;

/// "No node" / "no link" marker in the tree arrays.
const NONE: u32 = u32::MAX;

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

/// An undirected link between nodes `a` and `b` (node ids) during one slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    pub a: u32,
    pub b: u32,
    /// One-way latency, >= 0.
    pub latency_ms: f64,
    /// Latency jitter, >= 0 (informational; election uses `latency_ms`).
    pub jitter_ms: f64,
    /// Bandwidth, > 0.
    pub bandwidth_mbps: f64,
}

impl Link {
    /// The end of the link that is not `node` (`a` if `node` is neither end).
    pub fn other(&self, node: u32) -> u32 {
        if node == self.a {
            self.b
        } else {
            self.a
        }
    }

    /// True if the link joins `x` and `y` (in either direction).
    pub fn joins(&self, x: u32, y: u32) -> bool {
        (self.a == x && self.b == y) || (self.a == y && self.b == x)
    }
}

/// A shortest-latency path within one slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    /// Node ids from the source to the target, both included.
    pub nodes: Vec<u32>,
    /// Index (into [`Schedule::links`] of the slot) of the link between `nodes[i]` and
    /// `nodes[i + 1]`.
    pub links: Vec<u32>,
    /// Sum of the links' latencies.
    pub latency_ms: f64,
    /// Smallest bandwidth of the links (infinite for a zero-hop path).
    pub bottleneck_mbps: f64,
}

impl Path {
    /// Number of links on the path.
    pub fn hops(&self) -> usize {
        self.links.len()
    }
}

/// One slot's graph: its links plus CSR adjacency.
#[derive(Debug, Clone)]
struct SlotGraph {
    links: Vec<Link>,
    /// `adj[offsets[n]..offsets[n + 1]]` are node `n`'s edges, sorted by neighbour id.
    offsets: Vec<u32>,
    adj: Vec<Edge>,
}

/// One direction of a link in the adjacency arrays; the latency is copied in so that
/// Dijkstra reads one array only.
#[derive(Debug, Clone, Copy)]
struct Edge {
    to: u32,
    link: u32,
    latency_ms: f64,
}

impl SlotGraph {
    /// Builds the adjacency of validated links over `n` nodes.
    fn build(n: usize, links: Vec<Link>) -> SlotGraph {
        let mut offsets = vec![0u32; n + 1];
        for l in &links {
            offsets[l.a as usize + 1] += 1;
            offsets[l.b as usize + 1] += 1;
        }
        for i in 0..n {
            offsets[i + 1] += offsets[i];
        }
        let mut fill: Vec<u32> = offsets[..n].to_vec();
        let blank = Edge {
            to: 0,
            link: 0,
            latency_ms: 0.0,
        };
        let mut adj = vec![blank; links.len() * 2];
        for (i, l) in links.iter().enumerate() {
            for (from, to) in [(l.a, l.b), (l.b, l.a)] {
                let at = &mut fill[from as usize];
                // `+ 0.0` turns a -0.0 latency into +0.0 (see `Key`).
                let latency_ms = l.latency_ms + 0.0;
                adj[*at as usize] = Edge {
                    to,
                    link: i as u32,
                    latency_ms,
                };
                *at += 1;
            }
        }
        for w in offsets.windows(2) {
            adj[w[0] as usize..w[1] as usize].sort_unstable_by_key(|e| e.to);
        }
        SlotGraph {
            links,
            offsets,
            adj,
        }
    }

    /// Node `node`'s edges; empty for unknown nodes.
    fn adjacent(&self, node: u32) -> &[Edge] {
        let i = node as usize;
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&lo), Some(&hi)) => &self.adj[lo as usize..hi as usize],
            _ => &[],
        }
    }

    /// The index of the link between `a` and `b`, if any.
    fn find(&self, a: u32, b: u32) -> Option<u32> {
        let adj = self.adjacent(a);
        adj.binary_search_by_key(&b, |e| e.to)
            .ok()
            .map(|i| adj[i].link)
    }
}

/// A min-heap entry of Dijkstra: a tentative latency and its node.
///
/// Latencies are sums of finite link latencies >= +0.0 (starting from +0.0), so they are
/// never NaN or negative, and for such values the order of the IEEE bit patterns is the
/// numeric order (+inf included): the key is compared as an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    bits: u64,
    node: u32,
}

impl Key {
    fn new(latency_ms: f64, node: u32) -> Key {
        Key {
            bits: latency_ms.to_bits(),
            node,
        }
    }
}

impl Ord for Key {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the smallest latency first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.bits, other.node).cmp(&(self.bits, self.node))
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// How a node is reached in a shortest-path tree (one record, so that a relaxation
/// writes one cache line).
#[derive(Debug, Clone, Copy)]
struct Reach {
    /// Latency from the source: final once the node is settled, tentative before;
    /// infinite if not reached (yet).
    dist: f64,
    /// Predecessor on the shortest path, or [`NONE`].
    prev: u32,
    /// Link from the predecessor, or [`NONE`].
    via: u32,
}

impl Reach {
    const UNREACHED: Reach = Reach {
        dist: f64::INFINITY,
        prev: NONE,
        via: NONE,
    };
}

/// A shortest-path tree from one source in one slot, grown lazily: Dijkstra stops once
/// the requested target is settled and can be resumed later for farther targets.
#[derive(Debug, Clone)]
struct Tree {
    source: u32,
    /// How each node is reached, by node id.
    reach: Vec<Reach>,
    /// True once a node's `dist`, `prev` and `via` are final.
    settled: Vec<bool>,
    /// Dijkstra's queue; empty once the whole component of the source is settled.
    frontier: BinaryHeap<Key>,
}

impl Tree {
    /// A tree of `n` nodes holding only the source.
    fn new(n: usize, source: u32) -> Tree {
        let mut tree = Tree {
            source,
            reach: vec![Reach::UNREACHED; n],
            settled: vec![false; n],
            frontier: BinaryHeap::new(),
        };
        tree.reach[source as usize].dist = 0.0;
        tree.frontier.push(Key::new(0.0, source));
        tree
    }

    /// True if the path to `to` is final (settled, or known to be unreachable); with
    /// `None`, true if the whole tree is.
    fn knows(&self, to: Option<u32>) -> bool {
        self.frontier.is_empty() || to.is_some_and(|to| self.settled[to as usize])
    }

    /// Runs Dijkstra over `g` until `to` is settled (`None`: all nodes) or no node is left.
    fn grow_until(&mut self, g: &SlotGraph, to: Option<u32>) {
        while let Some(Key { bits, node: u }) = self.frontier.pop() {
            if self.settled[u as usize] {
                continue; // stale entry
            }
            self.settled[u as usize] = true;
            let d = f64::from_bits(bits);
            for e in g.adjacent(u) {
                let v = e.to as usize;
                let nd = d + e.latency_ms;
                if nd < self.reach[v].dist {
                    self.reach[v] = Reach {
                        dist: nd,
                        prev: u,
                        via: e.link,
                    };
                    self.frontier.push(Key::new(nd, e.to));
                }
            }
            if Some(u) == to {
                return;
            }
        }
    }
}

/// FNV-1a, 64 bit: identifies a topology version.
#[derive(Debug, Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) -> &mut Fnv {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }
}

/// The time-varying topology: nodes, one graph per slot, slot timing and the global node.
pub struct Schedule {
    nodes: Vec<Node>,
    index: HashMap<String, u32>,
    slots: Vec<SlotGraph>,
    slot_ms: u64,
    epoch_ms: u64,
    global: Option<u32>,
    digest: u64,
    trees: Mutex<HashMap<(usize, u32), Arc<Tree>>>,
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

impl Clone for Schedule {
    /// Clones the topology; the clone starts with an empty path cache.
    fn clone(&self) -> Schedule {
        Schedule {
            nodes: self.nodes.clone(),
            index: self.index.clone(),
            slots: self.slots.clone(),
            slot_ms: self.slot_ms,
            epoch_ms: self.epoch_ms,
            global: self.global,
            digest: self.digest,
            trees: Mutex::new(HashMap::new()),
        }
    }
}

impl Schedule {
    /// Parses a topology document, detecting its format: a JSON array is the testbed
    /// format, a JSON object Skylark's own format.
    ///
    /// Testbed format: slots of links `{"bandwidth", "latency", "source": {"node_name",
    /// "node_type", "node_ip"}, "target": {...}}` (optional `"jitter"`), 60 s slots from
    /// epoch 0; or a plain array of such links (one static slot).
    ///
    /// Skylark format:
    /// ```json
    /// { "slot_ms": 60000, "epoch_ms": 0, "global": "pi5u1",
    ///   "nodes": [ {"name": "pi5u1", "type": "Cloud", "ip": "10.0.0.243",
    ///               "redis": "redis://10.0.0.243:6379"} ],
    ///   "slots": [ [ {"source": "pi5u2", "target": "pi5u3", "latency_ms": 10,
    ///                 "jitter_ms": 9, "bandwidth_mbps": 90} ] ] }
    /// ```
    /// `slot_secs` may replace `slot_ms`, `links` (one static slot) may replace `slots`;
    /// `ip`, `redis`, `jitter_ms`, `global` and `epoch_ms` are optional; unknown keys are
    /// ignored. The global node is `global`, else the first `Cloud` node, else none.
    ///
    /// The digest is FNV-1a 64 of `bytes`. Errors name the offending slot, link or node.
    pub fn parse(bytes: &[u8]) -> Result<Schedule, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err("topology document is empty".into());
        }
        let doc: Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("topology document is not valid JSON: {e}"))?;
        let mut schedule = match &doc {
            Value::Array(items) => parse_testbed(items)?,
            Value::Object(_) => parse_skylark(&doc)?,
            other => {
                return Err(format!(
                    "topology document must be a JSON array (testbed format) or object \
                     (Skylark format), found {}",
                    json_kind(other)
                ))
            }
        };
        schedule.digest = Fnv::new().write(bytes).0;
        Ok(schedule)
    }

    /// Builds a schedule from nodes (id = index) and per-slot links, with the same
    /// validation as [`Schedule::parse`]. The digest hashes the given values.
    pub fn from_parts(
        nodes: Vec<Node>,
        slots: Vec<Vec<Link>>,
        slot_ms: u64,
        epoch_ms: u64,
        global: Option<u32>,
    ) -> Result<Schedule, String> {
        if nodes.is_empty() {
            return Err("topology has no nodes".into());
        }
        if slots.is_empty() {
            return Err("topology has no slots".into());
        }
        if slot_ms == 0 {
            return Err("slot length must be > 0 ms".into());
        }
        if nodes.len() >= NONE as usize {
            return Err(format!("topology has too many nodes ({})", nodes.len()));
        }
        let index = index_nodes(&nodes)?;
        if let Some(g) = global {
            if g as usize >= nodes.len() {
                return Err(format!("global node id {g} is not a node"));
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
            trees: Mutex::new(HashMap::new()),
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
        if to as usize >= self.nodes.len() {
            return None;
        }
        let tree = self.tree(slot, from, Some(to))?;
        let g = &self.slots[slot];
        if !tree.reach[to as usize].dist.is_finite() {
            return None;
        }
        let mut nodes = vec![to];
        let mut links = Vec::new();
        let mut at = to;
        while at != tree.source {
            let r = tree.reach[at as usize];
            links.push(r.via);
            at = r.prev;
            nodes.push(at);
        }
        nodes.reverse();
        links.reverse();
        let bottleneck_mbps = links
            .iter()
            .map(|&li| g.links[li as usize].bandwidth_mbps)
            .fold(f64::INFINITY, f64::min);
        Some(Path {
            nodes,
            links,
            latency_ms: tree.reach[to as usize].dist,
            bottleneck_mbps,
        })
    }

    /// Number of shortest-path trees currently cached.
    pub fn path_cache_len(&self) -> usize {
        self.cache().len()
    }

    /// Drops all cached shortest-path trees.
    pub fn clear_path_cache(&self) {
        self.cache().clear();
    }

    /// The cache, even if a panicking thread poisoned its lock (entries are immutable).
    fn cache(&self) -> MutexGuard<'_, HashMap<(usize, u32), Arc<Tree>>> {
        self.trees.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Computes and caches the complete shortest-path tree of `from` in `slot` (e.g. for
    /// the local node when a new topology arrives), so that later elections from `from`
    /// cost O(path length) whatever their destination. False if `slot` or `from` is
    /// unknown.
    pub fn precompute(&self, slot: usize, from: u32) -> bool {
        self.tree(slot, from, None).is_some()
    }

    /// The cached shortest-path tree of `from` in `slot`, grown (on a copy, outside the
    /// lock) until it knows the path to `to` (`None`: to every node).
    fn tree(&self, slot: usize, from: u32, to: Option<u32>) -> Option<Arc<Tree>> {
        let g = self.slots.get(slot)?;
        if from as usize >= self.nodes.len() {
            return None;
        }
        let cached = self.cache().get(&(slot, from)).cloned();
        let mut tree = match cached {
            Some(t) if t.knows(to) => return Some(t),
            Some(t) => Tree::clone(&t),
            None => Tree::new(self.nodes.len(), from),
        };
        tree.grow_until(g, to);
        let tree = Arc::new(tree);
        let mut cache = self.cache();
        if cache.len() >= TREE_CACHE_CAP {
            cache.clear();
        }
        // A concurrent election may have grown the same tree; either result is correct.
        cache.insert((slot, from), Arc::clone(&tree));
        Some(tree)
    }
}

/// Maps node names to ids, rejecting invalid and duplicate names.
fn index_nodes(nodes: &[Node]) -> Result<HashMap<String, u32>, String> {
    let mut index = HashMap::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        ids::validate(node.name.as_bytes())
            .map_err(|e| format!("node {i}: name {:?} {e}", node.name))?;
        if let Some(url) = &node.redis {
            crate::config::check_redis_url(url)
                .map_err(|e| format!("node {i} ({}): redis {e}", node.name))?;
        }
        if let Some(first) = index.insert(node.name.clone(), i as u32) {
            return Err(format!(
                "node {i}: name {:?} is already used by node {first}",
                node.name
            ));
        }
    }
    Ok(index)
}

/// Checks the links of slot `si`: known distinct endpoints, sane numbers, no duplicates.
fn validate_slot(nodes: &[Node], si: usize, links: &[Link]) -> Result<(), String> {
    let mut seen: HashMap<(u32, u32), usize> = HashMap::with_capacity(links.len());
    for (li, l) in links.iter().enumerate() {
        let name = |id: u32| nodes.get(id as usize).map(|n| n.name.as_str());
        let (Some(a), Some(b)) = (name(l.a), name(l.b)) else {
            return Err(format!(
                "slot {si}, link {li}: node id {} is not a node (there are {})",
                if name(l.a).is_none() { l.a } else { l.b },
                nodes.len()
            ));
        };
        let at = format!("slot {si}, link {li} ({a} - {b})");
        if l.a == l.b {
            return Err(format!("{at}: a link must join two different nodes"));
        }
        if !(l.latency_ms.is_finite() && l.latency_ms >= 0.0) {
            return Err(format!(
                "{at}: latency {} ms must be finite and >= 0",
                l.latency_ms
            ));
        }
        if !(l.jitter_ms.is_finite() && l.jitter_ms >= 0.0) {
            return Err(format!(
                "{at}: jitter {} ms must be finite and >= 0",
                l.jitter_ms
            ));
        }
        if !(l.bandwidth_mbps.is_finite() && l.bandwidth_mbps > 0.0) {
            return Err(format!(
                "{at}: bandwidth {} Mbit/s must be finite and > 0",
                l.bandwidth_mbps
            ));
        }
        if let Some(first) = seen.insert((l.a.min(l.b), l.a.max(l.b)), li) {
            return Err(format!("{at}: duplicates link {first} of the slot"));
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

/// The JSON type of `v`, for messages.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Collects nodes by name while reading a document; a name seen again must agree.
#[derive(Default)]
struct NodeSet {
    nodes: Vec<Node>,
    index: HashMap<String, u32>,
}

impl NodeSet {
    /// Adds `node` or merges it into the node of the same name, returning its id.
    /// Conflicting types, IPs or Redis URLs are an error (`at` says where).
    fn add(&mut self, node: Node, at: &str) -> Result<u32, String> {
        let Some(&id) = self.index.get(&node.name) else {
            let id = self.nodes.len() as u32;
            self.index.insert(node.name.clone(), id);
            self.nodes.push(node);
            return Ok(id);
        };
        let known = &mut self.nodes[id as usize];
        if known.kind != node.kind {
            return Err(format!(
                "{at}: node {:?} has type {} here but {} before",
                node.name, node.kind, known.kind
            ));
        }
        merge_field(&mut known.ip, node.ip, "ip", &node.name, at)?;
        merge_field(&mut known.redis, node.redis, "redis", &node.name, at)?;
        Ok(id)
    }
}

/// Fills `known` from `new`, or fails if both are set and differ.
fn merge_field(
    known: &mut Option<String>,
    new: Option<String>,
    what: &str,
    name: &str,
    at: &str,
) -> Result<(), String> {
    match (known.as_deref(), new) {
        (Some(k), Some(n)) if k != n => Err(format!(
            "{at}: node {name:?} has {what} {n:?} here but {k:?} before"
        )),
        (None, Some(n)) => {
            *known = Some(n);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Parses a node type, naming the node and place on error.
fn node_type(kind: &str, name: &str, at: &str) -> Result<NodeType, String> {
    NodeType::parse(kind).ok_or_else(|| {
        format!("{at}: node {name:?} has unknown type {kind:?} (expected Cloud, Edge or Sat)")
    })
}

/// One end of a testbed link.
#[derive(Deserialize)]
struct TestbedEnd {
    node_name: String,
    node_type: String,
    #[serde(default)]
    node_ip: Option<String>,
}

/// A link in the testbed format.
#[derive(Deserialize)]
struct TestbedLink {
    source: TestbedEnd,
    target: TestbedEnd,
    latency: f64,
    bandwidth: f64,
    #[serde(default)]
    jitter: f64,
}

/// Parses the testbed format: an array of slots (arrays of links) or of links.
fn parse_testbed(items: &[Value]) -> Result<Schedule, String> {
    let slots: Vec<&[Value]> = match items.first() {
        None => return Err("topology document has no slots (empty array)".into()),
        Some(Value::Object(_)) => vec![items],
        Some(_) => items
            .iter()
            .enumerate()
            .map(|(si, v)| match v {
                Value::Array(links) => Ok(links.as_slice()),
                other => Err(format!(
                    "slot {si}: expected an array of links, found {}",
                    json_kind(other)
                )),
            })
            .collect::<Result<_, _>>()?,
    };
    let mut nodes = NodeSet::default();
    let mut graphs = Vec::with_capacity(slots.len());
    for (si, raw) in slots.iter().enumerate() {
        let mut links = Vec::with_capacity(raw.len());
        for (li, v) in raw.iter().enumerate() {
            let at = format!("slot {si}, link {li}");
            let l = TestbedLink::deserialize(v).map_err(|e| format!("{at}: {e}"))?;
            let mut end = |e: TestbedEnd| -> Result<u32, String> {
                let kind = node_type(&e.node_type, &e.node_name, &at)?;
                let node = Node {
                    name: e.node_name,
                    kind,
                    ip: e.node_ip,
                    redis: None,
                };
                nodes.add(node, &at)
            };
            let a = end(l.source)?;
            let b = end(l.target)?;
            links.push(Link {
                a,
                b,
                latency_ms: l.latency,
                jitter_ms: l.jitter,
                bandwidth_mbps: l.bandwidth,
            });
        }
        graphs.push(links);
    }
    let global = nodes.nodes.iter().position(|n| n.kind == NodeType::Cloud);
    Schedule::from_parts(
        nodes.nodes,
        graphs,
        DEFAULT_SLOT_MS,
        0,
        global.map(|g| g as u32),
    )
}

/// Skylark's own document format (see [`Schedule::parse`]).
#[derive(Deserialize)]
struct SkylarkDoc {
    slot_ms: Option<u64>,
    slot_secs: Option<f64>,
    epoch_ms: Option<u64>,
    global: Option<String>,
    #[serde(default)]
    nodes: Vec<Value>,
    slots: Option<Vec<Value>>,
    links: Option<Vec<Value>>,
}

/// A node in the Skylark format.
#[derive(Deserialize)]
struct SkylarkNode {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    ip: Option<String>,
    redis: Option<String>,
}

/// A link in the Skylark format.
#[derive(Deserialize)]
struct SkylarkLink {
    source: String,
    target: String,
    latency_ms: f64,
    #[serde(default)]
    jitter_ms: f64,
    bandwidth_mbps: f64,
}

/// Parses Skylark's own format.
fn parse_skylark(doc: &Value) -> Result<Schedule, String> {
    let doc = SkylarkDoc::deserialize(doc).map_err(|e| format!("topology document: {e}"))?;
    let slot_ms = slot_length(doc.slot_ms, doc.slot_secs)?;
    let mut nodes = NodeSet::default();
    for (i, v) in doc.nodes.iter().enumerate() {
        let at = format!("node {i}");
        let n = SkylarkNode::deserialize(v).map_err(|e| format!("{at}: {e}"))?;
        let kind = node_type(&n.kind, &n.name, &at)?;
        let node = Node {
            name: n.name,
            kind,
            ip: n.ip,
            redis: n.redis,
        };
        nodes.add(node, &at)?;
    }
    let raw_slots: Vec<Value> = match (doc.slots, doc.links) {
        (Some(_), Some(_)) => return Err("topology document has both `slots` and `links`".into()),
        (Some(slots), None) => slots,
        (None, Some(links)) => vec![Value::Array(links)],
        (None, None) => return Err("topology document has no `slots` (or `links`)".into()),
    };
    let mut graphs = Vec::with_capacity(raw_slots.len());
    for (si, raw) in raw_slots.iter().enumerate() {
        let Value::Array(raw) = raw else {
            return Err(format!(
                "slot {si}: expected an array of links, found {}",
                json_kind(raw)
            ));
        };
        graphs.push(skylark_links(&nodes, si, raw)?);
    }
    let global = match doc.global {
        Some(name) => Some(
            nodes
                .index
                .get(&name)
                .copied()
                .ok_or_else(|| format!("global node {name:?} is not among the nodes"))?,
        ),
        None => nodes
            .nodes
            .iter()
            .position(|n| n.kind == NodeType::Cloud)
            .map(|g| g as u32),
    };
    Schedule::from_parts(
        nodes.nodes,
        graphs,
        slot_ms,
        doc.epoch_ms.unwrap_or(0),
        global,
    )
}

/// Reads the links of slot `si`, resolving node names.
fn skylark_links(nodes: &NodeSet, si: usize, raw: &[Value]) -> Result<Vec<Link>, String> {
    let mut links = Vec::with_capacity(raw.len());
    for (li, v) in raw.iter().enumerate() {
        let at = format!("slot {si}, link {li}");
        let l = SkylarkLink::deserialize(v).map_err(|e| format!("{at}: {e}"))?;
        let id = |name: &str| {
            nodes
                .index
                .get(name)
                .copied()
                .ok_or_else(|| format!("{at}: unknown node {name:?} (not in `nodes`)"))
        };
        links.push(Link {
            a: id(&l.source)?,
            b: id(&l.target)?,
            latency_ms: l.latency_ms,
            jitter_ms: l.jitter_ms,
            bandwidth_mbps: l.bandwidth_mbps,
        });
    }
    Ok(links)
}

/// The slot length from `slot_ms` or `slot_secs` (default one minute).
fn slot_length(slot_ms: Option<u64>, slot_secs: Option<f64>) -> Result<u64, String> {
    match (slot_ms, slot_secs) {
        (Some(_), Some(_)) => Err("give either `slot_ms` or `slot_secs`, not both".into()),
        (Some(0), None) => Err("slot_ms must be > 0".into()),
        (Some(ms), None) => Ok(ms),
        (None, Some(secs)) => {
            let ms = (secs * 1000.0).round();
            if secs.is_finite() && ms >= 1.0 && ms < u64::MAX as f64 {
                Ok(ms as u64)
            } else {
                Err(format!(
                    "slot_secs {secs} must be a finite number of at least 0.001"
                ))
            }
        }
        (None, None) => Ok(DEFAULT_SLOT_MS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSTELLATION: &[u8] =
        include_bytes!("../../../tests/data/constellation-topologies.json");

    fn constellation() -> Schedule {
        Schedule::parse(CONSTELLATION).unwrap()
    }

    fn node(name: &str, kind: NodeType) -> Node {
        Node {
            name: name.into(),
            kind,
            ip: None,
            redis: None,
        }
    }

    fn link(a: u32, b: u32, latency_ms: f64, bandwidth_mbps: f64) -> Link {
        Link {
            a,
            b,
            latency_ms,
            jitter_ms: 0.0,
            bandwidth_mbps,
        }
    }

    fn three_nodes() -> Vec<Node> {
        vec![
            node("a", NodeType::Sat),
            node("b", NodeType::Sat),
            node("c", NodeType::Cloud),
        ]
    }

    fn err(doc: &str) -> String {
        Schedule::parse(doc.as_bytes()).unwrap_err()
    }

    fn parts_err(links: Vec<Link>) -> String {
        Schedule::from_parts(three_nodes(), vec![links], 1000, 0, None).unwrap_err()
    }

    #[test]
    fn parses_the_constellation() {
        let s = constellation();
        assert_eq!(s.len(), 8);
        assert_eq!(s.slots(), 7);
        assert_eq!(s.slot_ms(), 60_000);
        assert_eq!(s.epoch_ms(), 0);
        let g = s.global().unwrap();
        assert_eq!(s.node(g).name, "pi5u1");
        assert_eq!(s.node(g).kind, NodeType::Cloud);
        assert_eq!(s.node(g).ip.as_deref(), Some("10.0.0.243"));
        for slot in 0..7 {
            assert_eq!(s.links(slot).len(), 7, "slot {slot}");
        }
        let sats = s.nodes().iter().filter(|n| n.kind == NodeType::Sat);
        assert_eq!(sats.count(), 7);
        assert_eq!(s.digest(), Fnv::new().write(CONSTELLATION).0);
    }

    #[test]
    fn ground_link_moves_along_the_chain() {
        let s = constellation();
        let cloud = s.id("pi5u1").unwrap();
        let ground = |slot| {
            let mut n: Vec<_> = s.neighbours(slot, cloud).collect();
            assert_eq!(n.len(), 1, "slot {slot}");
            let (sat, l) = n.pop().unwrap();
            assert_eq!((l.latency_ms, l.bandwidth_mbps), (40.0, 30.0));
            s.node(sat).name.clone()
        };
        let order = [
            "pi5u2", "pi5u3", "pi5u4", "pi4u5", "pi4u6", "pi4u8", "pi4p1",
        ];
        for (slot, sat) in order.iter().enumerate() {
            assert_eq!(ground(slot), *sat);
        }
        // Slot 3 joins the cloud to pi4u5, both ways round.
        let pi4u5 = s.id("pi4u5").unwrap();
        assert!(s.link(3, cloud, pi4u5).is_some());
        assert!(s.link(3, pi4u5, cloud).is_some());
        assert!(s.link(2, cloud, pi4u5).is_none());
        let sat_link = s.link(3, s.id("pi5u2").unwrap(), s.id("pi5u3").unwrap());
        assert_eq!(sat_link.unwrap().latency_ms, 10.0);
    }

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
    fn testbed_array_of_links_is_one_slot() {
        let doc = r#"[{"bandwidth": 90, "latency": 10, "jitter": 9,
            "source": {"node_ip": "10.0.0.1", "node_name": "x", "node_type": "sat"},
            "target": {"node_name": "y", "node_type": "EDGE"}}]"#;
        let s = Schedule::parse(doc.as_bytes()).unwrap();
        assert_eq!((s.len(), s.slots()), (2, 1));
        assert_eq!(s.node(1).kind, NodeType::Edge);
        assert_eq!(s.global(), None);
        assert_eq!(s.link(0, 0, 1).unwrap().jitter_ms, 9.0);
        assert_eq!(s.slot_at(123_456_789), 0);
    }

    const SKYLARK: &str = r#"{
        "slot_secs": 30, "epoch_ms": 1000, "global": "e1", "comment": "ignored",
        "nodes": [
            {"name": "c1", "type": "Cloud", "ip": "10.0.0.243"},
            {"name": "e1", "type": "Edge", "redis": "redis://edge:7000", "extra": 1},
            {"name": "s1", "type": "Sat", "ip": "fd00::1"},
            {"name": "s2", "type": "Sat"}
        ],
        "slots": [
            [ {"source": "s1", "target": "s2", "latency_ms": 10, "jitter_ms": 9, "bandwidth_mbps": 90},
              {"source": "s1", "target": "c1", "latency_ms": 40, "bandwidth_mbps": 30} ],
            []
        ] }"#;

    #[test]
    fn parses_the_skylark_format() {
        let s = Schedule::parse(SKYLARK.as_bytes()).unwrap();
        assert_eq!(
            (s.len(), s.slots(), s.slot_ms(), s.epoch_ms()),
            (4, 2, 30_000, 1000)
        );
        assert_eq!(s.global(), s.id("e1"));
        let (s1, s2, c1) = (
            s.id("s1").unwrap(),
            s.id("s2").unwrap(),
            s.id("c1").unwrap(),
        );
        let l = s.link(0, s2, s1).unwrap();
        assert_eq!(
            (l.latency_ms, l.jitter_ms, l.bandwidth_mbps),
            (10.0, 9.0, 90.0)
        );
        assert_eq!(s.link(0, c1, s1).unwrap().jitter_ms, 0.0);
        assert_eq!(s.neighbours(0, s1).count(), 2);
        assert_eq!(s.neighbours(1, s1).count(), 0, "a fully partitioned slot");
        assert_eq!(s.neighbours(9, s1).count(), 0, "unknown slot");
        assert_eq!(s.slot_at(1000 + 30_000), 1);
        // Redis URLs: explicit, from the IP (v4 and v6), or none.
        assert_eq!(s.redis_url(c1, 6379).unwrap(), "redis://10.0.0.243:6379");
        assert_eq!(
            s.redis_url(s.id("e1").unwrap(), 6379).unwrap(),
            "redis://edge:7000"
        );
        assert_eq!(s.redis_url(s1, 6380).unwrap(), "redis://[fd00::1]:6380");
        assert_eq!(s.redis_url(s2, 6379), None);
        assert_eq!(s.redis_url(99, 6379), None);
        assert_eq!(s.id("nope"), None);
    }

    #[test]
    fn skylark_defaults_and_static_links() {
        let doc = r#"{"nodes": [{"name": "a", "type": "Sat"}, {"name": "b", "type": "Cloud"}],
            "links": [{"source": "a", "target": "b", "latency_ms": 1, "bandwidth_mbps": 2}]}"#;
        let s = Schedule::parse(doc.as_bytes()).unwrap();
        assert_eq!(
            (s.slots(), s.slot_ms(), s.epoch_ms()),
            (1, DEFAULT_SLOT_MS, 0)
        );
        assert_eq!(s.global(), s.id("b"), "first Cloud node");
        let doc = r#"{"slot_ms": 5, "nodes": [{"name": "a", "type": "Sat"}], "slots": [[]]}"#;
        let s = Schedule::parse(doc.as_bytes()).unwrap();
        assert_eq!((s.slot_ms(), s.global()), (5, None));
    }

    #[test]
    fn digest_identifies_the_version() {
        let a = Schedule::parse(SKYLARK.as_bytes()).unwrap();
        let b = Schedule::parse(SKYLARK.replace("\"ignored\"", "\"x\"").as_bytes()).unwrap();
        assert_eq!(
            a.digest(),
            Schedule::parse(SKYLARK.as_bytes()).unwrap().digest()
        );
        assert_ne!(a.digest(), b.digest());
        let p1 = Schedule::from_parts(three_nodes(), vec![vec![]], 1, 0, None).unwrap();
        let p2 = Schedule::from_parts(three_nodes(), vec![vec![]], 2, 0, None).unwrap();
        assert_ne!(p1.digest(), p2.digest());
    }

    #[test]
    fn document_errors() {
        assert!(err("").contains("empty"));
        assert!(err(" \n").contains("empty"));
        assert!(err("{").contains("not valid JSON"));
        assert!(err("42").contains("found a number"));
        assert!(err("[]").contains("no slots"));
        assert!(err("[[]]").contains("no nodes"));
        assert!(err("[[], 3]").contains("slot 1: expected an array of links"));
        assert!(err(r#"{"nodes": [{"name": "a", "type": "Sat"}]}"#).contains("no `slots`"));
        assert!(err(r#"{"nodes": [], "slots": [[]]}"#).contains("no nodes"));
        assert!(
            err(r#"{"nodes": [{"name": "a", "type": "Sat"}], "slots": []}"#).contains("no slots")
        );
        assert!(
            err(r#"{"slot_ms": 0, "nodes": [{"name": "a", "type": "Sat"}], "slots": [[]]}"#)
                .contains("slot_ms must be > 0")
        );
        assert!(
            err(r#"{"slot_secs": 0, "nodes": [{"name": "a", "type": "Sat"}], "slots": [[]]}"#)
                .contains("slot_secs 0")
        );
        assert!(
            err(r#"{"slot_ms": 1, "slot_secs": 1, "nodes": [], "slots": [[]]}"#).contains("either")
        );
        assert!(
            err(r#"{"nodes": [{"name": "a", "type": "Sat"}], "slots": [[]], "links": []}"#)
                .contains("both")
        );
        let e = err(r#"{"global": "zz", "nodes": [{"name": "a", "type": "Sat"}], "slots": [[]]}"#);
        assert!(e.contains("global node \"zz\""), "{e}");
        let e = err(r#"{"nodes": [{"name": "a", "type": "Moon"}], "slots": [[]]}"#);
        assert!(
            e.contains("node 0") && e.contains("unknown type \"Moon\""),
            "{e}"
        );
        let e = err(r#"{"nodes": [{"name": "a"}], "slots": [[]]}"#);
        assert!(e.contains("node 0") && e.contains("type"), "{e}");
    }

    #[test]
    fn link_errors_name_slot_and_link() {
        let nodes = r#""nodes": [{"name": "a", "type": "Sat"}, {"name": "b", "type": "Sat"}]"#;
        let with = |link: &str| err(&format!(r#"{{{nodes}, "slots": [[], [{link}]]}}"#));
        let e = with(r#"{"source": "a", "target": "zz", "latency_ms": 1, "bandwidth_mbps": 1}"#);
        assert!(
            e.contains("slot 1, link 0") && e.contains("unknown node \"zz\""),
            "{e}"
        );
        let e = with(r#"{"source": "a", "target": "b", "latency_ms": -1, "bandwidth_mbps": 1}"#);
        assert!(
            e.contains("slot 1, link 0 (a - b)") && e.contains("latency -1"),
            "{e}"
        );
        let e = with(r#"{"source": "a", "target": "b", "latency_ms": 1, "bandwidth_mbps": 0}"#);
        assert!(
            e.contains("slot 1, link 0 (a - b)") && e.contains("bandwidth 0"),
            "{e}"
        );
        let e = with(
            r#"{"source": "a", "target": "b", "latency_ms": 1, "jitter_ms": -2, "bandwidth_mbps": 1}"#,
        );
        assert!(e.contains("jitter -2"), "{e}");
        let e = with(r#"{"source": "a", "target": "a", "latency_ms": 1, "bandwidth_mbps": 1}"#);
        assert!(e.contains("two different nodes"), "{e}");
        let e = with(r#"{"source": "a", "target": "b", "bandwidth_mbps": 1}"#);
        assert!(
            e.contains("slot 1, link 0") && e.contains("latency_ms"),
            "{e}"
        );
        let l = r#"{"source": "a", "target": "b", "latency_ms": 1, "bandwidth_mbps": 1}"#;
        let r = r#"{"source": "b", "target": "a", "latency_ms": 2, "bandwidth_mbps": 1}"#;
        let e = with(&format!("{l}, {r}"));
        assert!(
            e.contains("slot 1, link 1 (b - a)") && e.contains("duplicates link 0"),
            "{e}"
        );
    }

    #[test]
    fn node_errors() {
        // Conflicting duplicates, in both formats.
        let e = err(
            r#"{"nodes": [{"name": "a", "type": "Sat"}, {"name": "a", "type": "Edge"}],
            "slots": [[]]}"#,
        );
        assert!(
            e.contains("node 1") && e.contains("type Edge here but Sat"),
            "{e}"
        );
        let e = err(r#"{"nodes": [{"name": "a", "type": "Sat", "ip": "1.1.1.1"},
            {"name": "a", "type": "sat", "ip": "2.2.2.2"}], "slots": [[]]}"#);
        assert!(e.contains("ip \"2.2.2.2\" here but \"1.1.1.1\""), "{e}");
        let ok = r#"{"nodes": [{"name": "a", "type": "Sat"}, {"name": "a", "type": "SAT",
            "ip": "1.1.1.1"}], "slots": [[]]}"#;
        let s = Schedule::parse(ok.as_bytes()).unwrap();
        assert_eq!((s.len(), s.node(0).ip.as_deref()), (1, Some("1.1.1.1")));
        let e = err(r#"[[{"bandwidth": 1, "latency": 1,
            "source": {"node_name": "x", "node_type": "Sat", "node_ip": "1"},
            "target": {"node_name": "y", "node_type": "Sat"}}],
            [{"bandwidth": 1, "latency": 1,
            "source": {"node_name": "x", "node_type": "Cloud"},
            "target": {"node_name": "y", "node_type": "Sat"}}]]"#);
        assert!(
            e.contains("slot 1, link 0") && e.contains("type Cloud here but Sat"),
            "{e}"
        );
        // Names must be ids.
        let e = err(r#"{"nodes": [{"name": "a b", "type": "Sat"}], "slots": [[]]}"#);
        assert!(e.contains("node 0: name \"a b\" has byte 0x20"), "{e}");
        let e = err(r#"{"nodes": [{"name": "", "type": "Sat"}], "slots": [[]]}"#);
        assert!(e.contains("is empty"), "{e}");
        let long = "n".repeat(129);
        let e = err(&format!(
            r#"{{"nodes": [{{"name": "{long}", "type": "Sat"}}], "slots": [[]]}}"#
        ));
        assert!(e.contains("129 bytes"), "{e}");
        // Store addresses must be Redis URLs.
        let e = err(
            r#"{"nodes": [{"name": "a", "type": "Sat", "redis": "http://a:1"}],
            "slots": [[]]}"#,
        );
        assert!(e.contains("node 0 (a): redis"), "{e}");
        let ok = r#"{"nodes": [{"name": "a", "type": "Sat", "redis": "unix:///run/r.sock"}],
            "slots": [[]]}"#;
        assert!(Schedule::parse(ok.as_bytes()).is_ok());
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
        let e = Schedule::from_parts(nodes(), vec![], 1, 0, None).unwrap_err();
        assert!(e.contains("no slots"));
        let e = Schedule::from_parts(vec![], vec![vec![]], 1, 0, None).unwrap_err();
        assert!(e.contains("no nodes"));
        let e = Schedule::from_parts(nodes(), vec![vec![]], 0, 0, None).unwrap_err();
        assert!(e.contains("must be > 0"));
        let e = Schedule::from_parts(nodes(), vec![vec![]], 1, 0, Some(3)).unwrap_err();
        assert!(e.contains("global node id 3"));
        let mut twice = nodes();
        twice[2].name = "a".into();
        let e = Schedule::from_parts(twice, vec![vec![]], 1, 0, None).unwrap_err();
        assert!(
            e.contains("node 2: name \"a\" is already used by node 0"),
            "{e}"
        );
    }

    #[test]
    fn shortest_paths_and_cache() {
        // a -1- b -1- c, plus a direct a - c of latency 5 and higher bandwidth.
        let links = vec![
            link(0, 1, 1.0, 10.0),
            link(1, 2, 1.0, 20.0),
            link(0, 2, 5.0, 99.0),
        ];
        let s = Schedule::from_parts(three_nodes(), vec![links, vec![]], 1000, 0, None).unwrap();
        let p = s.shortest_path(0, 0, 2).unwrap();
        assert_eq!(p.nodes, vec![0, 1, 2]);
        assert_eq!(p.links, vec![0, 1]);
        assert_eq!((p.latency_ms, p.bottleneck_mbps, p.hops()), (2.0, 10.0, 2));
        let back = s.shortest_path(0, 2, 0).unwrap();
        assert_eq!(back.nodes, vec![2, 1, 0]);
        let zero = s.shortest_path(0, 1, 1).unwrap();
        assert_eq!((zero.nodes, zero.latency_ms), (vec![1], 0.0));
        assert!(zero.bottleneck_mbps.is_infinite());
        assert_eq!(s.shortest_path(1, 0, 2), None, "partitioned slot");
        assert_eq!(s.shortest_path(2, 0, 2), None, "unknown slot");
        assert_eq!(s.shortest_path(0, 0, 7), None, "unknown target");
        assert_eq!(s.shortest_path(0, 7, 0), None, "unknown source");
        assert_eq!(s.path_cache_len(), 4, "(0,0), (0,2), (0,1), (1,0)");
        let clone = s.clone();
        assert_eq!(clone.path_cache_len(), 0);
        assert_eq!(clone.digest(), s.digest());
        s.clear_path_cache();
        assert_eq!(s.path_cache_len(), 0);
        assert_eq!(s.shortest_path(0, 0, 2).unwrap().nodes, vec![0, 1, 2]);
        s.clear_path_cache();
        assert!(s.precompute(0, 1));
        assert!(!s.precompute(0, 9) && !s.precompute(5, 1));
        assert_eq!(s.path_cache_len(), 1);
        assert!(s.cache().get(&(0, 1)).unwrap().frontier.is_empty());
        assert_eq!(s.shortest_path(0, 1, 0).unwrap().nodes, vec![1, 0]);
    }

    #[test]
    fn lazily_grown_trees_match_all_pairs_shortest_paths() {
        // A random graph of 30 nodes and 60 links, some of them parallel paths.
        let n = 30u32;
        let mut x = 0x1234_5678_u64;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut links: Vec<Link> = Vec::new();
        while links.len() < 60 {
            let (a, b) = (next(n.into()) as u32, next(n.into()) as u32);
            if a != b && !links.iter().any(|l| l.joins(a, b)) {
                links.push(link(a, b, next(20) as f64, 1.0 + next(9) as f64));
            }
        }
        // Floyd-Warshall reference.
        let m = n as usize;
        let mut d = vec![vec![f64::INFINITY; m]; m];
        for (i, row) in d.iter_mut().enumerate() {
            row[i] = 0.0;
        }
        for l in &links {
            let (a, b) = (l.a as usize, l.b as usize);
            d[a][b] = d[a][b].min(l.latency_ms);
            d[b][a] = d[a][b];
        }
        for k in 0..m {
            for i in 0..m {
                for j in 0..m {
                    d[i][j] = d[i][j].min(d[i][k] + d[k][j]);
                }
            }
        }
        let nodes = (0..n)
            .map(|i| node(&format!("n{i}"), NodeType::Sat))
            .collect();
        let s = Schedule::from_parts(nodes, vec![links], 1000, 0, None).unwrap();
        for from in 0..n {
            // Targets in a scrambled order, so trees are resumed many times.
            for k in 0..n {
                let to = (k * 7 + from) % n;
                let Some(p) = s.shortest_path(0, from, to) else {
                    assert!(d[from as usize][to as usize].is_infinite());
                    continue;
                };
                assert_eq!(
                    p.latency_ms, d[from as usize][to as usize],
                    "{from} -> {to}"
                );
                assert_eq!((p.nodes[0], *p.nodes.last().unwrap()), (from, to));
                let mut sum = 0.0;
                for (i, &li) in p.links.iter().enumerate() {
                    let l = s.links(0)[li as usize];
                    assert!(l.joins(p.nodes[i], p.nodes[i + 1]));
                    sum += l.latency_ms;
                }
                assert_eq!(sum, p.latency_ms);
            }
        }
    }

    #[test]
    fn cache_is_bounded() {
        let n = TREE_CACHE_CAP + 10;
        let nodes = (0..n)
            .map(|i| node(&format!("n{i}"), NodeType::Sat))
            .collect();
        let links = (1..n as u32).map(|i| link(i - 1, i, 1.0, 1.0)).collect();
        let s = Schedule::from_parts(nodes, vec![links], 1000, 0, None).unwrap();
        for from in 0..n as u32 {
            assert!(s.shortest_path(0, from, 0).is_some());
            assert!(s.path_cache_len() <= TREE_CACHE_CAP);
        }
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
