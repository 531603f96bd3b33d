//! Storage-node election: where a put's state should go, given the policy, the live
//! [`Schedule`] and the step's SLO.
//!
//! - [`Policy::Skylark`]: take the topology slot valid when the successor is expected to
//!   start and find the shortest-latency path from the local node to the destination.
//!   On it, by default ([`Rule::Retrieval`], module [`retrieval`]), elect the node that
//!   minimises the consumer's expected retrieval time, within the SLO when the SLO can
//!   be met and regardless of it when it cannot. The research's rule
//!   ([`Rule::Research`], `SKYLARK_ELECTION=research`) walks the path from the
//!   destination back toward the local node instead; the first node whose
//!   `exec_ms + migration_ms <= max_latency_ms`, whose path prefix has at least
//!   `min_bandwidth_mbps` of bottleneck bandwidth, and whose path-prefix links exist in
//!   every slot from now until both the successor has started and the migration has
//!   finished, is elected. If none qualifies the state stays local.
//! - [`Policy::Random`]: a uniformly random node on that path (a baseline).
//! - [`Policy::Stateless`]: the global store only. [`Policy::Local`]: this node only.
//!
//! Migration time is estimated as `2 * path latency + size / bottleneck bandwidth`
//! ([`migration_ms`]), improving on the original's average-bandwidth estimate.

mod retrieval;

use crate::topology::{Path, Schedule};
use skylark_abi::wire::Policy;
use std::fmt::Write as _;

/// Which rule the Skylark policy elects by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rule {
    /// Least expected retrieval time for the consumer ([`retrieval`]); the default.
    #[default]
    Retrieval,
    /// The research's rule: the node nearest the destination within the SLO, else keep
    /// the state local.
    Research,
}

impl Rule {
    /// Both rules, default first.
    pub const ALL: [Rule; 2] = [Rule::Retrieval, Rule::Research];

    /// The name used in configuration (`SKYLARK_ELECTION`).
    pub fn name(self) -> &'static str {
        match self {
            Rule::Retrieval => "retrieval",
            Rule::Research => "research",
        }
    }

    /// Parses a name of [`Rule::name`].
    pub fn parse(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// The SLO default of the original system (`max_latency`, ms).
pub const DEFAULT_MAX_LATENCY_MS: f64 = 5000.0;

/// Most per-node rejections quoted in a "keep local" reason.
const MAX_REASONS: usize = 3;

/// What an election is asked.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub policy: Policy,
    /// The rule of [`Policy::Skylark`].
    pub rule: Rule,
    /// The node running the producer (node id in the schedule).
    pub local: u32,
    /// Where the consumer (or the workflow's end) will run.
    pub destination: u32,
    /// Size of the state to place.
    pub size_bytes: u64,
    /// The producer's execution time so far.
    pub exec_ms: f64,
    /// SLO: latest acceptable `exec_ms + migration_ms`.
    pub max_latency_ms: f64,
    /// SLO: least acceptable bottleneck bandwidth from the local node to the elected node.
    pub min_bandwidth_mbps: f64,
    /// Unix time of the election (ms).
    pub now_ms: u64,
    /// Unix time (ms) at which the successor is expected to start; `>= now_ms` (earlier
    /// values are treated as `now_ms`).
    pub successor_at_ms: u64,
    /// Nodes that stayed unreachable: never elected.
    pub exclude: &'a [u32],
    /// Bytes of the copy to the global store that leaves after the elected node's copy
    /// (0 if none): it delays a consumer that reads from the global store
    /// ([`Rule::Retrieval`] only).
    pub global_copy_bytes: u64,
    /// The nodes this process holds an open connection to, if known: a copy to any other
    /// node first pays its connection, two round trips over the route (TCP, then the
    /// client's handshake), which a fresh function process pays for every copy
    /// ([`Rule::Retrieval`] only; `None`: not counted).
    pub connected: Option<&'a [u32]>,
}

impl Request<'static> {
    /// A request with the model's defaults: the retrieval rule, empty state, no
    /// execution time yet, `max_latency_ms` 5000, no bandwidth floor, successor starting
    /// now, no exclusions, no global copy alongside.
    pub fn new(policy: Policy, local: u32, destination: u32, now_ms: u64) -> Request<'static> {
        Request {
            policy,
            rule: Rule::Retrieval,
            local,
            destination,
            size_bytes: 0,
            exec_ms: 0.0,
            max_latency_ms: DEFAULT_MAX_LATENCY_MS,
            min_bandwidth_mbps: 0.0,
            now_ms,
            successor_at_ms: now_ms,
            exclude: &[],
            global_copy_bytes: 0,
            connected: None,
        }
    }
}

/// Where the state goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// This node of the schedule (never the local node).
    Node(u32),
    /// The local node's store.
    Local,
    /// The global store only.
    Global,
}

/// The outcome of an election.
#[derive(Debug, Clone, PartialEq)]
pub struct Election {
    pub target: Target,
    /// The full shortest path local -> destination used (empty if none was computed).
    pub path: Vec<u32>,
    /// Estimated migration time to the elected node (0 for `Local` and `Global`).
    pub migration_ms: f64,
    /// The topology slot the path was taken from (the successor's slot).
    pub slot: usize,
    /// Short human-readable explanation.
    pub reason: String,
    /// Whether the SLO could be met by some node other than the local one: judged by
    /// [`Rule::Retrieval`] only (`None` otherwise).
    pub slo_feasible: Option<bool>,
    /// The consumer's expected retrieval time (ms) with the elected placement:
    /// [`Rule::Retrieval`] only.
    pub retrieval_ms: Option<f64>,
}

impl Election {
    /// An election that keeps the state local.
    fn local(slot: usize, path: Vec<u32>, reason: String) -> Election {
        Election {
            target: Target::Local,
            path,
            migration_ms: 0.0,
            slot,
            reason,
            slo_feasible: None,
            retrieval_ms: None,
        }
    }
}

/// A tiny seeded PRNG (splitmix64) for the Random policy; not for cryptography.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence is determined by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n` (unbiased); 0 if `n == 0`.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift with rejection of the biased low range.
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as usize;
            }
        }
    }
}

/// Estimated time to move `size_bytes` over a path: a round trip of its latency plus the
/// transfer at its bottleneck bandwidth (1 Mbit/s moves 125 bytes per ms).
pub fn migration_ms(path_latency_ms: f64, bottleneck_mbps: f64, size_bytes: u64) -> f64 {
    2.0 * path_latency_ms + size_bytes as f64 / (bottleneck_mbps * 125.0)
}

/// Elects where the state of a put should go; see the module documentation.
pub fn elect(s: &Schedule, req: &Request, rng: &mut Rng) -> Election {
    let successor_at = req.successor_at_ms.max(req.now_ms);
    let slot = s.slot_at(successor_at);
    match req.policy {
        Policy::Stateless => Election {
            target: Target::Global,
            path: Vec::new(),
            migration_ms: 0.0,
            slot,
            reason: "stateless policy: global store only".into(),
            slo_feasible: None,
            retrieval_ms: None,
        },
        Policy::Local => Election::local(slot, Vec::new(), "local policy: keep local".into()),
        Policy::Skylark => match (route(s, req, slot), req.rule) {
            (Ok(path), Rule::Retrieval) => retrieval::elect(s, req, slot, &path),
            (Ok(path), Rule::Research) => research(s, req, slot, &path),
            (Err(kept), _) => kept,
        },
        Policy::Random => match route(s, req, slot) {
            Ok(path) => random(s, req, slot, &path, rng),
            Err(kept) => kept,
        },
    }
}

/// The shortest path local -> destination in `slot`, or the "keep local" election when
/// there is none to walk.
fn route(s: &Schedule, req: &Request, slot: usize) -> Result<Path, Election> {
    let keep = |path, reason| Err(Election::local(slot, path, reason));
    for (what, id) in [("local", req.local), ("destination", req.destination)] {
        if s.get(id).is_none() {
            return keep(
                Vec::new(),
                format!("keep local: unknown {what} node id {id}"),
            );
        }
    }
    if req.local == req.destination {
        return keep(
            vec![req.local],
            "keep local: the destination is the local node".into(),
        );
    }
    match s.shortest_path(slot, req.local, req.destination) {
        Some(path) => Ok(path),
        None => keep(
            Vec::new(),
            format!(
                "keep local: {} is unreachable from {} in slot {slot}",
                s.name(req.destination),
                s.name(req.local)
            ),
        ),
    }
}

/// Latency and bottleneck bandwidth of every prefix of a path.
struct Prefixes {
    /// `latency[i]`: latency from the path's first node to `nodes[i]`.
    latency: Vec<f64>,
    /// `bottleneck[i]`: smallest bandwidth on that prefix (infinite for `i == 0`).
    bottleneck: Vec<f64>,
}

impl Prefixes {
    fn of(s: &Schedule, slot: usize, path: &Path) -> Prefixes {
        let links = s.links(slot);
        let mut latency = Vec::with_capacity(path.nodes.len());
        let mut bottleneck = Vec::with_capacity(path.nodes.len());
        let (mut l, mut b) = (0.0, f64::INFINITY);
        latency.push(l);
        bottleneck.push(b);
        for &li in &path.links {
            let link = &links[li as usize];
            l += link.latency_ms;
            b = f64::min(b, link.bandwidth_mbps);
            latency.push(l);
            bottleneck.push(b);
        }
        Prefixes {
            latency,
            bottleneck,
        }
    }

    /// Migration estimate from the path's first node to `nodes[i]`.
    fn migration(&self, i: usize, size_bytes: u64) -> f64 {
        if i == 0 {
            0.0
        } else {
            migration_ms(self.latency[i], self.bottleneck[i], size_bytes)
        }
    }
}

/// For each path position `i`, how many consecutive slots, starting at `start`, contain
/// every link of the prefix up to `nodes[i]` (capped at the number of slots).
fn survival(s: &Schedule, start: usize, path: &Path) -> Vec<usize> {
    let n = s.slots();
    let mut out = Vec::with_capacity(path.nodes.len());
    let mut min = n;
    out.push(min);
    for w in path.nodes.windows(2) {
        let run = (0..n)
            .take_while(|k| s.link((start + k) % n, w[0], w[1]).is_some())
            .count();
        min = min.min(run);
        out.push(min);
    }
    out
}

/// The Skylark policy with the research's rule on a computed path.
fn research(s: &Schedule, req: &Request, slot: usize, path: &Path) -> Election {
    let walk = Walk {
        s,
        req,
        path,
        prefixes: Prefixes::of(s, slot, path),
        survives: survival(s, s.slot_at(req.now_ms), path),
        successor_at: req.successor_at_ms.max(req.now_ms),
    };
    let (mut rejections, mut more) = (Vec::new(), 0);
    for i in (1..path.nodes.len()).rev() {
        let n = path.nodes[i];
        let m = walk.prefixes.migration(i, req.size_bytes);
        match walk.check(i, m) {
            Ok(why) => {
                let target = if n == req.local {
                    Target::Local
                } else {
                    Target::Node(n)
                };
                return Election {
                    target,
                    path: path.nodes.clone(),
                    migration_ms: m,
                    slot,
                    reason: format!("{}: {why}", s.name(n)),
                    slo_feasible: None,
                    retrieval_ms: None,
                };
            }
            // The rejections nearest the destination say most; keep the reason short.
            Err(why) if rejections.len() < MAX_REASONS => {
                rejections.push(format!("{}: {why}", s.name(n)))
            }
            Err(_) => more += 1,
        }
    }
    let mut reason = format!(
        "keep local: no node on the {}-hop path to {} qualifies",
        path.hops(),
        s.name(req.destination)
    );
    if !rejections.is_empty() {
        let _ = write!(reason, " ({}", rejections.join("; "));
        if more > 0 {
            let _ = write!(reason, "; {more} more");
        }
        reason.push(')');
    }
    Election::local(slot, path.nodes.clone(), reason)
}

/// What the Skylark walk knows about the path it walks.
struct Walk<'a> {
    s: &'a Schedule,
    req: &'a Request<'a>,
    path: &'a Path,
    prefixes: Prefixes,
    /// See [`survival`].
    survives: Vec<usize>,
    /// The request's successor start, at least `now_ms`.
    successor_at: u64,
}

impl Walk<'_> {
    /// Whether `path.nodes[i]`, reached with an estimated `migration`, is eligible: not
    /// excluded, within the SLO, and its links last long enough. `Ok` with a summary, or
    /// `Err` with the reason it is not eligible.
    fn check(&self, i: usize, migration: f64) -> Result<String, String> {
        let (s, req) = (self.s, self.req);
        if req.exclude.contains(&self.path.nodes[i]) {
            return Err("excluded (unreachable)".into());
        }
        let (lat, bw) = (self.prefixes.latency[i], self.prefixes.bottleneck[i]);
        let fits = req.exec_ms + migration <= req.max_latency_ms;
        if !fits {
            return Err(format!(
                "exec {} + migration {} > {}",
                num(req.exec_ms),
                num(migration),
                num(req.max_latency_ms)
            ));
        }
        let wide = bw >= req.min_bandwidth_mbps;
        if !wide {
            return Err(format!(
                "bottleneck {} Mbit/s < {}",
                num(bw),
                num(req.min_bandwidth_mbps)
            ));
        }
        let needed = self.slots_needed(migration);
        if self.survives[i] < needed {
            let missing = (s.slot_at(req.now_ms) + self.survives[i]) % s.slots();
            let gap = self.path.nodes[..=i]
                .windows(2)
                .find(|w| s.link(missing, w[0], w[1]).is_none())
                .map_or_else(String::new, |w| {
                    format!(" {} - {}", s.name(w[0]), s.name(w[1]))
                });
            return Err(format!(
                "link{gap} is missing in slot {missing} before the successor starts"
            ));
        }
        Ok(format!(
            "{} hop{}, {} ms, {} Mbit/s, exec {} + migration {} <= {}",
            i,
            if i == 1 { "" } else { "s" },
            num(lat),
            num(bw),
            num(req.exec_ms),
            num(migration),
            num(req.max_latency_ms)
        ))
    }

    /// How many consecutive slots, from the current one, a node's links must exist in:
    /// until the successor has started and a migration of `migration` ms has finished
    /// (at most a whole cycle).
    fn slots_needed(&self, migration: f64) -> usize {
        let (s, now) = (self.s, self.req.now_ms);
        let done_at = now.saturating_add(migration.ceil() as u64);
        let end = s.absolute_slot(self.successor_at.max(done_at));
        let span = end.saturating_sub(s.absolute_slot(now));
        usize::try_from(span.saturating_add(1))
            .unwrap_or(usize::MAX)
            .min(s.slots())
    }
}

/// The Random policy on a computed path: any path node that is not excluded.
fn random(s: &Schedule, req: &Request, slot: usize, path: &Path, rng: &mut Rng) -> Election {
    let candidates: Vec<usize> = (0..path.nodes.len())
        .filter(|&i| !req.exclude.contains(&path.nodes[i]))
        .collect();
    if candidates.is_empty() {
        return Election::local(
            slot,
            path.nodes.clone(),
            "keep local: every node on the path is excluded".into(),
        );
    }
    let i = candidates[rng.below(candidates.len())];
    let n = path.nodes[i];
    let reason = format!(
        "random: {}, hop {i} of the {}-hop path ({} candidates)",
        s.name(n),
        path.hops(),
        candidates.len()
    );
    if n == req.local {
        return Election::local(slot, path.nodes.clone(), reason);
    }
    Election {
        target: Target::Node(n),
        path: path.nodes.clone(),
        migration_ms: Prefixes::of(s, slot, path).migration(i, req.size_bytes),
        slot,
        reason,
        slo_feasible: None,
        retrieval_ms: None,
    }
}

/// A number for messages: at most one decimal, no trailing `.0`.
fn num(v: f64) -> String {
    let s = format!("{v:.1}");
    match s.strip_suffix(".0") {
        Some(whole) => whole.to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Link, Node, NodeType};

    const CONSTELLATION: &[u8] =
        include_bytes!("../../../tests/data/constellation-topologies.json");
    const SLO: &[u8] = include_bytes!("../../../tests/data/slo-settings.json");
    const MIN: u64 = 60_000;

    fn constellation() -> Schedule {
        Schedule::parse(CONSTELLATION).unwrap()
    }

    /// `(max_latency, min_bandwidth)` of the testbed's SLO file.
    fn slo() -> (f64, f64) {
        let v: serde_json::Value = serde_json::from_slice(SLO).unwrap();
        (
            v["max_latency"].as_f64().unwrap(),
            v["min_bandwidth"].as_f64().unwrap(),
        )
    }

    fn id(s: &Schedule, name: &str) -> u32 {
        s.id(name).unwrap()
    }

    /// A Skylark request under the research's rule from `local` to `dest` at minute
    /// `minute`, successor right away. The tests written for the research's rule use it:
    /// that rule is kept as a named variant and must keep electing as it did.
    fn req<'a>(s: &Schedule, local: &str, dest: &str, minute: u64) -> Request<'a> {
        Request {
            rule: Rule::Research,
            ..req_retrieval(s, local, dest, minute)
        }
    }

    /// The same request under the default rule.
    fn req_retrieval<'a>(s: &Schedule, local: &str, dest: &str, minute: u64) -> Request<'a> {
        Request::new(Policy::Skylark, id(s, local), id(s, dest), minute * MIN + 1)
    }

    fn elect1(s: &Schedule, r: &Request) -> Election {
        elect(s, r, &mut Rng::new(1))
    }

    fn names(s: &Schedule, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|&i| s.node(i).name.clone()).collect()
    }

    fn node(name: &str) -> Node {
        Node {
            name: name.into(),
            kind: NodeType::Sat,
            ip: None,
            redis: None,
        }
    }

    fn link(a: u32, b: u32, latency_ms: f64) -> Link {
        Link {
            a,
            b,
            latency_ms,
            jitter_ms: 0.0,
            bandwidth_mbps: 100.0,
        }
    }

    #[test]
    fn migration_estimate() {
        assert_eq!(migration_ms(10.0, 90.0, 0), 20.0);
        // 1 MB at 80 Mbit/s = 10,000 bytes per ms -> 100 ms, plus the round trip.
        assert_eq!(migration_ms(10.0, 80.0, 1_000_000), 120.0);
        assert_eq!(migration_ms(0.0, f64::INFINITY, 123), 0.0);
    }

    #[test]
    fn skylark_elects_the_destination_when_the_slo_allows() {
        let s = constellation();
        let (max_latency, _) = slo();
        let mut r = req(&s, "pi5u2", "pi5u1", 3);
        r.max_latency_ms = max_latency;
        r.exec_ms = 12.0;
        r.size_bytes = 100_000;
        let e = elect1(&s, &r);
        assert_eq!(e.target, Target::Node(id(&s, "pi5u1")));
        assert_eq!(e.slot, 3);
        // Slot 3: the ground link is at pi4u5.
        assert_eq!(
            names(&s, &e.path),
            ["pi5u2", "pi5u3", "pi5u4", "pi4u5", "pi5u1"]
        );
        // 70 ms path, 30 Mbit/s bottleneck: 140 + 100000 / 3750.
        assert!((e.migration_ms - (140.0 + 100_000.0 / 3750.0)).abs() < 1e-9);
        assert!(
            e.reason
                .starts_with("pi5u1: 4 hops, 70 ms, 30 Mbit/s, exec 12"),
            "{}",
            e.reason
        );
        assert!(e.reason.ends_with("<= 5000"), "{}", e.reason);
    }

    #[test]
    fn skylark_elects_a_nearer_node_when_the_slo_is_tight() {
        let s = constellation();
        let mut r = req(&s, "pi5u2", "pi4p1", 0);
        // 6 hops of 10 ms: the destination needs exec 12 + 120 ms; pi5u4 (2 hops) 12 + 40.
        r.exec_ms = 12.0;
        r.max_latency_ms = 60.0;
        let e = elect1(&s, &r);
        assert_eq!(e.target, Target::Node(id(&s, "pi5u4")));
        assert_eq!(e.path.len(), 7);
        assert_eq!(e.migration_ms, 40.0);
        assert_eq!(
            e.reason,
            "pi5u4: 2 hops, 20 ms, 90 Mbit/s, exec 12 + migration 40 <= 60"
        );
        // A larger state shifts the election one hop closer: 20 + 90000 / 11250 = 28.
        r.size_bytes = 90_000;
        r.max_latency_ms = 40.0;
        let e = elect1(&s, &r);
        assert_eq!(e.target, Target::Node(id(&s, "pi5u3")));
        assert_eq!(e.migration_ms, 28.0);
    }

    #[test]
    fn skylark_keeps_local_when_nothing_fits() {
        let s = constellation();
        let mut r = req(&s, "pi5u2", "pi4p1", 0);
        r.exec_ms = 4990.0;
        let e = elect1(&s, &r);
        assert_eq!(e.target, Target::Local);
        assert_eq!(e.migration_ms, 0.0);
        assert_eq!(e.path.len(), 7, "the path is still reported");
        assert!(e
            .reason
            .starts_with("keep local: no node on the 6-hop path to pi4p1"));
        assert!(e.reason.ends_with("; 3 more)"), "{}", e.reason);
        assert!(
            e.reason.contains("pi4p1: exec 4990 + migration 120 > 5000"),
            "{}",
            e.reason
        );
        // NaN SLO values reject every node.
        r.exec_ms = f64::NAN;
        assert_eq!(elect1(&s, &r).target, Target::Local);
    }

    #[test]
    fn skylark_filters_by_bandwidth() {
        let s = constellation();
        let (max_latency, min_bandwidth) = slo();
        assert_eq!((max_latency, min_bandwidth), (5000.0, 60.0));
        let mut r = req(&s, "pi5u2", "pi5u1", 3);
        r.max_latency_ms = max_latency;
        r.min_bandwidth_mbps = min_bandwidth;
        // The 30 Mbit/s ground link is too thin; pi4u5 (90 Mbit/s) is elected instead.
        let e = elect1(&s, &r);
        assert_eq!(e.target, Target::Node(id(&s, "pi4u5")));
        assert_eq!(e.migration_ms, 60.0);
        r.min_bandwidth_mbps = 91.0;
        let e = elect1(&s, &r);
        assert_eq!(e.target, Target::Local);
        assert!(
            e.reason.contains("pi5u1: bottleneck 30 Mbit/s < 91"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn skylark_uses_the_successors_slot() {
        let s = constellation();
        // Now in minute 3 (ground link at pi4u5), successor in minute 4 (at pi4u6).
        let mut r = req(&s, "pi5u2", "pi5u1", 3);
        r.successor_at_ms = 4 * MIN + 10;
        let e = elect1(&s, &r);
        assert_eq!(e.slot, 4);
        let expect = ["pi5u2", "pi5u3", "pi5u4", "pi4u5", "pi4u6", "pi5u1"];
        assert_eq!(names(&s, &e.path), expect);
        // The ground link pi4u6 - pi5u1 does not exist yet in slot 3: the cloud cannot be
        // reached before the successor starts, but pi4u6 can.
        assert_eq!(e.target, Target::Node(id(&s, "pi4u6")));
    }

    /// Local `l`=0, near node `a`=1, far node `b`=2, destination `d`=3. Slot 0: l-a-d
    /// (fast) and l-b-d (slow); slot 1: only l-b-d (a's links vanish).
    fn vanishing() -> Schedule {
        let nodes = ["l", "a", "b", "d"].map(node).to_vec();
        let fast = vec![
            link(0, 1, 5.0),
            link(1, 3, 5.0),
            link(0, 2, 50.0),
            link(2, 3, 50.0),
        ];
        let slow = vec![link(0, 2, 50.0), link(2, 3, 50.0)];
        Schedule::from_parts(nodes, vec![fast, slow], 1000, 0, None).unwrap()
    }

    #[test]
    fn a_node_whose_link_vanishes_is_not_elected() {
        let s = vanishing();
        let exclude = [3];
        let mut r = Request::new(Policy::Skylark, 0, 3, 100);
        r.rule = Rule::Research;
        r.max_latency_ms = 30.0;
        r.exclude = &exclude;
        // Successor within slot 0: the fast path, a is elected (d is excluded).
        let e = elect1(&s, &r);
        assert_eq!(
            (e.target, e.slot, e.path.clone()),
            (Target::Node(1), 0, vec![0, 1, 3])
        );
        // Successor after the slot change: a is gone; b is too far for the SLO.
        r.successor_at_ms = 1500;
        let e = elect1(&s, &r);
        assert_eq!(
            (e.target, e.slot, e.path.clone()),
            (Target::Local, 1, vec![0, 2, 3])
        );
        // Successor two slots later (slot 0 again): the path is the fast one, but a's link
        // is missing in slot 1 in between.
        r.successor_at_ms = 2500;
        let e = elect1(&s, &r);
        assert_eq!((e.target, e.slot), (Target::Local, 0));
        assert!(
            e.reason.contains("a: link l - a is missing in slot 1"),
            "{}",
            e.reason
        );
        // Successor in slot 0, but a long migration runs into slot 1.
        r.now_ms = 990;
        r.successor_at_ms = 990;
        let e = elect1(&s, &r);
        assert_eq!(e.target, Target::Local, "{}", e.reason);
        r.now_ms = 900;
        r.successor_at_ms = 900;
        assert_eq!(elect1(&s, &r).target, Target::Node(1), "10 ms: done by 910");
    }

    #[test]
    fn links_must_exist_now_not_only_at_the_successor() {
        // Slot 0: l - a only; slot 1: l - a - d. Now in slot 0, successor in slot 1: d is
        // on the path but cannot be reached yet.
        let nodes = ["l", "a", "d"].map(node).to_vec();
        let slots = vec![
            vec![link(0, 1, 5.0)],
            vec![link(0, 1, 5.0), link(1, 2, 5.0)],
        ];
        let s = Schedule::from_parts(nodes, slots, 1000, 0, None).unwrap();
        let mut r = Request::new(Policy::Skylark, 0, 2, 100);
        r.rule = Rule::Research;
        r.successor_at_ms = 1100;
        let e = elect1(&s, &r);
        assert_eq!((e.target, e.path.clone()), (Target::Node(1), vec![0, 1, 2]));
        assert_eq!(
            e.reason,
            "a: 1 hop, 5 ms, 100 Mbit/s, exec 0 + migration 10 <= 5000"
        );
    }

    #[test]
    fn exclude_list_is_respected() {
        let s = constellation();
        let exclude = [id(&s, "pi5u1"), id(&s, "pi4u5")];
        let mut r = req(&s, "pi5u2", "pi5u1", 3);
        r.exclude = &exclude;
        let e = elect1(&s, &r);
        assert_eq!(e.target, Target::Node(id(&s, "pi5u4")));
        let all: Vec<u32> = (0..s.len() as u32).collect();
        r.exclude = &all;
        let e = elect1(&s, &r);
        assert_eq!(e.target, Target::Local);
        assert!(e.reason.contains("pi5u1: excluded"), "{}", e.reason);
        r.policy = Policy::Random;
        for seed in 0..50 {
            assert_eq!(elect(&s, &r, &mut Rng::new(seed)).target, Target::Local);
        }
        r.exclude = &exclude;
        for seed in 0..200 {
            if let Target::Node(n) = elect(&s, &r, &mut Rng::new(seed)).target {
                assert!(!exclude.contains(&n));
            }
        }
    }

    #[test]
    fn random_elects_only_on_path_nodes() {
        let s = constellation();
        let mut r = req(&s, "pi5u2", "pi5u1", 3);
        r.policy = Policy::Random;
        let path = elect1(&s, &r).path;
        assert_eq!(path.len(), 5);
        let mut seen = std::collections::HashSet::new();
        for seed in 0..500 {
            let e = elect(&s, &r, &mut Rng::new(seed));
            assert_eq!(e.path, path);
            let n = match e.target {
                Target::Node(n) => {
                    assert_ne!(n, r.local);
                    assert!(e.migration_ms > 0.0);
                    n
                }
                Target::Local => {
                    assert_eq!(e.migration_ms, 0.0);
                    r.local
                }
                Target::Global => panic!("random never elects the global store"),
            };
            assert!(path.contains(&n), "{n} is off the path");
            seen.insert(n);
        }
        assert_eq!(seen.len(), path.len(), "every path node is picked sometime");
    }

    #[test]
    fn stateless_and_local_policies() {
        let s = constellation();
        let mut r = req(&s, "pi5u2", "pi4p1", 0);
        r.policy = Policy::Stateless;
        let e = elect1(&s, &r);
        assert_eq!((e.target, e.path.len()), (Target::Global, 0));
        assert!(e.reason.contains("stateless"));
        r.policy = Policy::Local;
        assert_eq!(elect1(&s, &r).target, Target::Local);
    }

    #[test]
    fn destination_is_local() {
        let s = constellation();
        for policy in [Policy::Skylark, Policy::Random] {
            let mut r = req(&s, "pi4u6", "pi4u6", 2);
            r.policy = policy;
            let e = elect1(&s, &r);
            assert_eq!(
                (e.target, e.path.clone()),
                (Target::Local, vec![id(&s, "pi4u6")])
            );
            assert!(e.reason.contains("destination is the local node"));
        }
    }

    #[test]
    fn unknown_or_unreachable_nodes_keep_local() {
        let s = constellation();
        let mut r = req(&s, "pi5u2", "pi4p1", 0);
        r.destination = 99;
        let e = elect1(&s, &r);
        assert_eq!(e.target, Target::Local);
        assert!(e.reason.contains("unknown destination node id 99"));
        r.destination = 0;
        r.local = 42;
        assert!(elect1(&s, &r).reason.contains("unknown local node id 42"));
        // A partitioned slot.
        let nodes = ["x", "y"].map(node).to_vec();
        let s = Schedule::from_parts(nodes, vec![vec![]], 1000, 0, None).unwrap();
        let e = elect1(&s, &Request::new(Policy::Skylark, 0, 1, 5));
        assert_eq!(e.target, Target::Local);
        assert_eq!(e.reason, "keep local: y is unreachable from x in slot 0");
    }

    #[test]
    fn repeated_elections_reuse_the_tree() {
        let s = constellation();
        let r = req(&s, "pi5u2", "pi4p1", 0);
        let first = elect1(&s, &r);
        assert_eq!(s.path_cache_len(), 1);
        for _ in 0..10 {
            assert_eq!(elect1(&s, &r), first);
        }
        assert_eq!(s.path_cache_len(), 1);
    }

    #[test]
    fn rng_is_seeded_and_bounded() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            counts[a.below(3)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(a.below(0), 0);
        assert_eq!(a.below(1), 0);
    }

    #[test]
    fn rule_names_round_trip() {
        for r in Rule::ALL {
            assert_eq!(Rule::parse(r.name()), Some(r));
        }
        assert_eq!(Rule::default(), Rule::Retrieval);
        assert_eq!(Rule::parse("Research"), None);
        assert_eq!(Request::new(Policy::Skylark, 0, 1, 0).rule, Rule::Retrieval);
    }

    #[test]
    fn retrieval_elects_the_destination_when_the_slo_allows() {
        let s = constellation();
        let mut r = req_retrieval(&s, "pi5u2", "pi5u1", 3);
        r.exec_ms = 12.0;
        r.size_bytes = 100_000;
        r.global_copy_bytes = 100_000;
        let e = elect1(&s, &r);
        assert_eq!(e.target, Target::Node(id(&s, "pi5u1")), "{}", e.reason);
        assert_eq!(e.slo_feasible, Some(true));
        // 70 ms path, 30 Mbit/s bottleneck; the destination is the global node, so its
        // copy is the global copy (no second copy shares the links): the research's
        // estimate, and the consumer (starting now) waits for all of it.
        let m = 140.0 + 100_000.0 / 3750.0;
        assert!((e.migration_ms - m).abs() < 1e-9, "{}", e.migration_ms);
        assert_eq!(e.retrieval_ms, Some(e.migration_ms));
        assert!(e.reason.starts_with("pi5u1: 4 of 4 hops"), "{}", e.reason);
        assert!(e.reason.contains("SLO feasible"), "{}", e.reason);
    }

    #[test]
    fn retrieval_moves_the_state_toward_the_consumer_when_no_node_fits() {
        // The case of issue 13 point 4: nothing fits the SLO. The research's rule keeps the
        // state local and the consumer, 6 hops away, reads it from the global store; the
        // retrieval rule moves it to the consumer, which waits only for the copy.
        let s = constellation();
        for rule in Rule::ALL {
            let mut r = req_retrieval(&s, "pi5u2", "pi4p1", 0);
            r.rule = rule;
            r.exec_ms = 4990.0;
            r.size_bytes = 1_000_000;
            let e = elect1(&s, &r);
            match rule {
                Rule::Research => assert_eq!(e.target, Target::Local, "{}", e.reason),
                Rule::Retrieval => {
                    assert_eq!(e.target, Target::Node(id(&s, "pi4p1")), "{}", e.reason);
                    assert_eq!(e.slo_feasible, Some(false));
                    assert!(e.reason.contains("SLO infeasible"), "{}", e.reason);
                    // 6 links of 10 ms at 90 Mbit/s: 120 + 1e6 / 11250.
                    assert!((e.migration_ms - (120.0 + 1e6 / 11_250.0)).abs() < 1e-9);
                }
            }
        }
    }

    #[test]
    fn retrieval_keeps_a_feasible_slo() {
        // 1 MB, destination 6 hops away (10 ms, 90 Mbit/s each), exec 12, SLO 142: only
        // pi5u3 (12 + 20 + 88.9) and pi5u4 (12 + 40 + 88.9) fit. Neither is the consumer's
        // neighbour, so both leave the read to the global store; the tie goes to the node
        // nearer the destination. The destination, which would serve the consumer better,
        // breaks the SLO and is not elected.
        let s = constellation();
        let mut r = req_retrieval(&s, "pi5u2", "pi4p1", 0);
        r.size_bytes = 1_000_000;
        r.exec_ms = 12.0;
        r.max_latency_ms = 142.0;
        let e = elect1(&s, &r);
        assert_eq!(e.target, Target::Node(id(&s, "pi5u4")), "{}", e.reason);
        assert_eq!(e.slo_feasible, Some(true));
        assert!(r.exec_ms + e.migration_ms <= r.max_latency_ms);
        // A looser SLO lets the destination in, where the consumer finds the state.
        r.max_latency_ms = 400.0;
        let e = elect1(&s, &r);
        assert_eq!(e.target, Target::Node(id(&s, "pi4p1")), "{}", e.reason);
        assert_eq!(e.retrieval_ms, Some(e.migration_ms));
    }

    #[test]
    fn retrieval_sends_the_global_copy_after_the_elected_one() {
        // l - a - d, and the global node g behind a: the global copy (l -> a -> g) would
        // share the link l -> a with the copy to d, but it leaves only once d's copy has
        // ended, so d's copy has the link to itself.
        let nodes = ["l", "a", "d", "g"].map(node).to_vec();
        let links = vec![link(0, 1, 10.0), link(1, 2, 10.0), link(1, 3, 10.0)];
        let s = Schedule::from_parts(nodes, vec![links], 60_000, 0, Some(3)).unwrap();
        let mut r = Request::new(Policy::Skylark, 0, 2, 100);
        r.size_bytes = 1_000_000;
        // 2 x 20 ms + 1 MB at 100 Mbit/s (80 ms), with or without a global copy.
        assert!((elect1(&s, &r).migration_ms - 120.0).abs() < 1e-9);
        r.global_copy_bytes = 1_000_000;
        let e = elect1(&s, &r);
        assert_eq!(e.target, Target::Node(2));
        assert!((e.migration_ms - 120.0).abs() < 1e-9, "{}", e.migration_ms);
        // So an SLO of 150 ms fits d (120) despite a 1 MB global copy.
        r.max_latency_ms = 150.0;
        assert_eq!(elect1(&s, &r).slo_feasible, Some(true));
    }

    #[test]
    fn a_far_candidates_copy_delays_the_global_copy() {
        // l - a - b - d, the global node g behind l; b and d stay unreachable, so the
        // consumer on d reads from the global store whether the state stays on l or goes
        // to a. A copy to a delays the global copy by a's copy; keeping it local does not.
        let nodes = ["l", "a", "b", "d", "g"].map(node).to_vec();
        let links = vec![
            link(0, 1, 10.0),
            link(1, 2, 10.0),
            link(2, 3, 10.0),
            link(0, 4, 10.0),
        ];
        let s = Schedule::from_parts(nodes, vec![links], 60_000, 0, Some(4)).unwrap();
        let mut r = Request::new(Policy::Skylark, 0, 3, 100);
        r.size_bytes = 1_000_000;
        r.global_copy_bytes = 1_000_000;
        r.exclude = &[2, 3];
        let e = elect1(&s, &r);
        assert_eq!(e.target, Target::Local, "{}", e.reason);
        // The global copy (20 + 80 ms) leaves at once; then the read g -> d: 2 x 40 ms +
        // 80 ms.
        let retrieval = e.retrieval_ms.expect("a retrieval estimate");
        assert!((retrieval - 260.0).abs() < 1e-9, "{retrieval}");
    }

    #[test]
    fn a_pull_from_this_node_shares_its_link_with_the_global_copy() {
        // l - d - g: the global copy (l -> d -> g) crosses l -> d, the link the consumer
        // on d pulls over when the state stays here. The research chain at 10-50 MB in
        // most slots (BENCHMARKS section 4): keeping the state looked like one transfer,
        // and the pull took two.
        let nodes = ["l", "d", "g"].map(node).to_vec();
        let links = vec![link(0, 1, 10.0), link(1, 2, 10.0)];
        let s = Schedule::from_parts(nodes, vec![links], 60_000, 0, Some(2)).unwrap();
        let mut r = Request::new(Policy::Skylark, 0, 1, 100);
        r.size_bytes = 1_000_000;
        r.global_copy_bytes = 1_000_000;
        // d's copy (2 x 10 ms + 80 ms) goes before the global copy: 100 ms; the pull
        // from here would share l -> d with all of the global copy: 2 x 10 + 160 ms.
        let e = elect1(&s, &r);
        assert_eq!(e.target, Target::Node(1), "{}", e.reason);
        assert!(
            (e.retrieval_ms.unwrap() - 100.0).abs() < 1e-9,
            "{}",
            e.reason
        );
        r.exclude = &[1];
        let kept = elect1(&s, &r).retrieval_ms.unwrap();
        assert!((kept - 180.0).abs() < 1e-9, "{kept}");
        // A consumer starting when the global copy (2 x 20 + 80 ms) has ended pulls alone.
        r.successor_at_ms = 100 + 120;
        let kept = elect1(&s, &r).retrieval_ms.unwrap();
        assert!((kept - 100.0).abs() < 1e-9, "{kept}");
        // Half of it left: 20 + (1 MB + 0.5 MB) at 100 Mbit/s.
        r.successor_at_ms = 100 + 60;
        let kept = elect1(&s, &r).retrieval_ms.unwrap();
        assert!((kept - 140.0).abs() < 1e-9, "{kept}");
        // Without a global copy, or one that does not cross l -> d, the pull is alone.
        r.successor_at_ms = 100;
        r.global_copy_bytes = 0;
        assert!((elect1(&s, &r).retrieval_ms.unwrap() - 100.0).abs() < 1e-9);
    }

    #[test]
    fn a_copy_without_a_connection_pays_for_opening_one() {
        // l - a - d: d's copy crosses 2 x 10 ms: 2 x 20 ms + 1 MB at 100 Mbit/s (80 ms).
        let nodes = ["l", "a", "d"].map(node).to_vec();
        let links = vec![link(0, 1, 10.0), link(1, 2, 10.0)];
        let s = Schedule::from_parts(nodes, vec![links], 60_000, 0, None).unwrap();
        let mut r = Request::new(Policy::Skylark, 0, 2, 100);
        r.size_bytes = 1_000_000;
        assert!((elect1(&s, &r).migration_ms - 120.0).abs() < 1e-9);
        // A fresh process holds no connection: TCP and the handshake first, two more
        // round trips (80 ms).
        r.connected = Some(&[]);
        let e = elect1(&s, &r);
        assert!((e.migration_ms - 200.0).abs() < 1e-9, "{}", e.reason);
        // With 20 ms of execution, an SLO of 150 ms fits d with a connection (140 ms),
        // neither d nor a without one (220 and 160 ms).
        r.max_latency_ms = 150.0;
        r.exec_ms = 20.0;
        assert_eq!(elect1(&s, &r).slo_feasible, Some(false));
        r.connected = Some(&[2]);
        let e = elect1(&s, &r);
        assert!((e.migration_ms - 120.0).abs() < 1e-9, "{}", e.reason);
        assert_eq!(e.slo_feasible, Some(true));
    }

    #[test]
    fn retrieval_time_counts_from_the_successors_start() {
        let nodes = ["l", "d"].map(node).to_vec();
        let s = Schedule::from_parts(nodes, vec![vec![link(0, 1, 10.0)]], 60_000, 0, None).unwrap();
        let mut r = Request::new(Policy::Skylark, 0, 1, 100);
        r.size_bytes = 1_000_000;
        // The copy takes 20 + 80 ms; the consumer starting now waits all of it.
        let e = elect1(&s, &r);
        assert_eq!((e.target, e.retrieval_ms), (Target::Node(1), Some(100.0)));
        // Starting 60 ms from now, it waits the remaining 40 ms; after 100 ms, nothing.
        r.successor_at_ms = 160;
        assert_eq!(elect1(&s, &r).retrieval_ms, Some(40.0));
        r.successor_at_ms = 300;
        assert_eq!(elect1(&s, &r).retrieval_ms, Some(0.0));
    }

    #[test]
    fn retrieval_uses_a_node_that_stays_in_range_across_a_slot_change() {
        // The slot-change scenario: the successor starts after the fast route via a has
        // gone. No node fits the 30 ms SLO on the remaining route via b: the research's
        // rule keeps the state local, where the consumer (two hops away, no global store)
        // cannot find it; the retrieval rule moves it to b, the consumer's neighbour, or
        // to d itself when d is not excluded.
        let s = vanishing();
        let exclude = [3];
        let mut r = Request::new(Policy::Skylark, 0, 3, 100);
        r.max_latency_ms = 30.0;
        r.successor_at_ms = 1500;
        r.exclude = &exclude;
        let e = elect1(&s, &r);
        assert_eq!((e.target, e.slot), (Target::Node(2), 1), "{}", e.reason);
        assert_eq!(e.slo_feasible, Some(false));
        r.rule = Rule::Research;
        assert_eq!(elect1(&s, &r).target, Target::Local);
        r.rule = Rule::Retrieval;
        r.exclude = &[];
        assert_eq!(elect1(&s, &r).target, Target::Node(3));
        // Within slot 0 the fast route stands and a fits the SLO: a, as the research's.
        r.successor_at_ms = 100;
        r.exclude = &exclude;
        let e = elect1(&s, &r);
        assert_eq!(e.target, Target::Node(1), "{}", e.reason);
        assert_eq!(e.slo_feasible, Some(true));
        // Successor in slot 0 again (2500): a's link is missing in slot 1 in between,
        // which rules a out for the research's rule, but the copy to a is done within
        // slot 0 and a is d's neighbour again when the consumer reads.
        r.successor_at_ms = 2500;
        let e = elect1(&s, &r);
        assert_eq!(e.target, Target::Node(1), "{}", e.reason);
        r.rule = Rule::Research;
        assert_eq!(elect1(&s, &r).target, Target::Local);
    }

    #[test]
    fn retrieval_copies_to_the_consumer_before_its_route_changes() {
        // Slot 0: l - d directly; slot 1: l - a - d. Now in slot 0, the consumer starts in
        // slot 1 on d. The research's rule needs the successor's path (l - a - d) to exist
        // already and keeps the state local; the retrieval rule copies it to d over
        // today's direct link, done long before the slot changes.
        let nodes = ["l", "a", "d"].map(node).to_vec();
        let slots = vec![
            vec![link(0, 2, 5.0)],
            vec![link(0, 1, 5.0), link(1, 2, 5.0)],
        ];
        let s = Schedule::from_parts(nodes, slots, 1000, 0, None).unwrap();
        let mut r = Request::new(Policy::Skylark, 0, 2, 100);
        r.successor_at_ms = 1500;
        let e = elect1(&s, &r);
        assert_eq!((e.target, e.slot), (Target::Node(2), 1), "{}", e.reason);
        assert_eq!((e.migration_ms, e.retrieval_ms), (10.0, Some(0.0)));
        assert!(e.reason.contains("a: unreachable now"), "{}", e.reason);
        r.rule = Rule::Research;
        assert_eq!(elect1(&s, &r).target, Target::Local);
        // A copy that would still run when the direct link goes is not started.
        r.rule = Rule::Retrieval;
        r.now_ms = 995;
        let e = elect1(&s, &r);
        assert_eq!(e.target, Target::Local, "{}", e.reason);
        assert!(
            e.reason
                .contains("d: its route breaks before a 10 ms copy ends"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn numbers_in_reasons() {
        assert_eq!(num(10.0), "10");
        assert_eq!(num(27.14), "27.1");
        assert_eq!(num(f64::INFINITY), "inf");
    }
}
