//! A slot's graph in compact (CSR) form and the shortest-path trees over it: Dijkstra
//! grown lazily per `(slot, source)` and cached, so repeated elections from one node cost
//! O(path length).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

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
    /// Index (into [`Schedule::links`](super::Schedule::links) of the slot) of the link
    /// between `nodes[i]` and `nodes[i + 1]`.
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

/// Most shortest-path trees kept per schedule; the cache is emptied when it is full.
/// A node elects from itself only, so it needs at most one tree per slot.
pub(super) const TREE_CACHE_CAP: usize = 64;

/// "No node" / "no link" marker in the tree arrays.
pub(super) const NONE: u32 = u32::MAX;

/// One slot's graph: its links plus CSR adjacency.
#[derive(Debug, Clone)]
pub(super) struct SlotGraph {
    pub(super) links: Vec<Link>,
    /// `adj[offsets[n]..offsets[n + 1]]` are node `n`'s edges, sorted by neighbour id.
    offsets: Vec<u32>,
    adj: Vec<Edge>,
}

/// One direction of a link in the adjacency arrays; the latency is copied in so that
/// Dijkstra reads one array only.
#[derive(Debug, Clone, Copy)]
pub(super) struct Edge {
    pub(super) to: u32,
    pub(super) link: u32,
    latency_ms: f64,
}

impl SlotGraph {
    /// Builds the adjacency of validated links over `n` nodes.
    pub(super) fn build(n: usize, links: Vec<Link>) -> SlotGraph {
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
    pub(super) fn adjacent(&self, node: u32) -> &[Edge] {
        let i = node as usize;
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&lo), Some(&hi)) => &self.adj[lo as usize..hi as usize],
            _ => &[],
        }
    }

    /// The index of the link between `a` and `b`, if any.
    pub(super) fn find(&self, a: u32, b: u32) -> Option<u32> {
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
pub(super) struct Tree {
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

/// The cached shortest-path trees of one schedule, by `(slot, source)`. A clone starts
/// empty.
#[derive(Debug, Default)]
pub(super) struct PathCache {
    trees: Mutex<HashMap<(usize, u32), Arc<Tree>>>,
}

impl Clone for PathCache {
    fn clone(&self) -> PathCache {
        PathCache::default()
    }
}

impl PathCache {
    /// The cache, even if a panicking thread poisoned its lock (entries are immutable).
    fn lock(&self) -> MutexGuard<'_, HashMap<(usize, u32), Arc<Tree>>> {
        self.trees.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of trees cached.
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Drops all cached trees.
    pub(super) fn clear(&self) {
        self.lock().clear();
    }

    /// True if the tree of `(slot, from)` is cached and complete.
    #[cfg(test)]
    pub(super) fn is_complete(&self, slot: usize, from: u32) -> bool {
        self.lock()
            .get(&(slot, from))
            .is_some_and(|t| t.frontier.is_empty())
    }

    /// The shortest-latency path from `from` to `to` over slot `slot` of `slots` (graphs
    /// of `n` nodes), or `None` if either node or the slot is unknown or `to` is
    /// unreachable.
    pub(super) fn shortest_path(
        &self,
        slots: &[SlotGraph],
        n: usize,
        slot: usize,
        from: u32,
        to: u32,
    ) -> Option<Path> {
        if to as usize >= n {
            return None;
        }
        let tree = self.tree(slots, n, slot, from, Some(to))?;
        let g = &slots[slot];
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

    /// The cached shortest-path tree of `from` in `slot`, grown (on a copy, outside the
    /// lock) until it knows the path to `to` (`None`: to every node).
    pub(super) fn tree(
        &self,
        slots: &[SlotGraph],
        n: usize,
        slot: usize,
        from: u32,
        to: Option<u32>,
    ) -> Option<Arc<Tree>> {
        let g = slots.get(slot)?;
        if from as usize >= n {
            return None;
        }
        let cached = self.lock().get(&(slot, from)).cloned();
        let mut tree = match cached {
            Some(t) if t.knows(to) => return Some(t),
            Some(t) => Tree::clone(&t),
            None => Tree::new(n, from),
        };
        tree.grow_until(g, to);
        let tree = Arc::new(tree);
        let mut cache = self.lock();
        if cache.len() >= TREE_CACHE_CAP {
            cache.clear();
        }
        // A concurrent election may have grown the same tree; either result is correct.
        cache.insert((slot, from), Arc::clone(&tree));
        Some(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use super::TREE_CACHE_CAP;

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
        assert!(s.paths.is_complete(0, 1));
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
}
