//! The Skylark policy's default rule ([`Rule::Retrieval`](super::Rule::Retrieval)): elect
//! the node on the path to the destination that minimises the consumer's expected
//! retrieval time, i.e. move the state as far toward the consumer as the time until the
//! consumer starts allows (issue 13 point 4).
//!
//! The candidates are the nodes of the shortest path to the destination in the slot in
//! which the successor starts, `local = p0 .. pn = destination`. For `pi`:
//!
//! - **arrival** `a(i)`: the copy leaves now over the current slot's route to `pi`:
//!   `2 * latency + transfer` over the route's slowest link, plus two more round trips
//!   when the process holds no connection to `pi` yet (a fresh function process). It
//!   has its links to itself as far as this node knows: the job's own global copy
//!   leaves only once the elected node's copy has ended (`propagation::copy`, issue 13);
//! - **expected retrieval** `R(i)`, counted from the successor's start `t`:
//!   - `pi` is the destination: `max(0, a(i) - t)` (the consumer waits for the copy it
//!     was announced, or finds it there);
//!   - `pi` is the destination's neighbour on the path: `max(0, a(i) - t)` plus the read
//!     of the whole state over that link (a round trip, two more for the consumer's
//!     connection where connections are counted, plus the transfer), the transfer
//!     counting what is left of the job's global copy where that copy crosses the same
//!     link in the same direction during the read (`size + min(size, left)`: a fair share
//!     until the smaller ends; the global copy leaves now when `pi` is this node, else
//!     when `pi`'s copy has ended). Keeping the state here while the route to the global
//!     store runs along the chain made the consumer's pull share its first link with the
//!     global copy: 4.2 s instead of 2.0 s at 10 MB (BENCHMARKS section 4);
//!   - farther away (the consumer probes only its own store and its neighbours): the
//!     read from the global store, `max(0, g(i) - t)` plus that read (none when the
//!     consumer runs on the global node), where the global copy lands at
//!     `g(i) = a(i) + a(global)` (it leaves when `pi`'s copy has ended; `g = a(i)` when
//!     `pi` is the global node, whose copy is the global copy; `g = 0` when the job
//!     sends no global copy, the global store having the state); unbounded without a
//!     global store.
//!
//! A node is eligible if it is not excluded, reachable now with the bandwidth floor, and
//! its route lasts until the copy is done. Unlike the research's rule, the links need not
//! last until the successor starts: once stored, the state stays on the node whatever
//! the links do, so a slot change between producer and consumer does not rule out the
//! consumer's own node. The SLO is judged **feasible** if some node other than this one
//! has `exec + a(i) <= max_latency`; then only those nodes (and this one) are candidates,
//! so the election never breaks a feasible SLO. When it is infeasible, every eligible
//! node is a candidate: the transfer has to happen anyway, and keeping the state local
//! (the research's rule) makes the consumer pay all of it on its critical path. Ties go
//! to the node nearest the destination.

use super::{num, survival, Election, Request, Target, MAX_REASONS};
use crate::topology::{Path, Schedule};
use std::fmt::Write as _;

/// Expected retrievals closer than this (ms) are ties.
const TIE_MS: f64 = 1e-6;

/// One candidate's numbers.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    /// Path position.
    i: usize,
    /// Estimated arrival of the copy, ms after now.
    arrival: f64,
    /// Expected retrieval by the consumer, ms after its start.
    retrieval: f64,
    /// `exec + arrival <= max_latency`.
    fits: bool,
}

/// Transfer time (ms) of `bytes` at `mbps` (1 Mbit/s moves 125 bytes per ms).
fn transfer_ms(bytes: f64, mbps: f64) -> f64 {
    bytes / (mbps * 125.0)
}

/// The Skylark policy with the retrieval rule on a computed `path` (taken from the
/// successor's `slot`).
pub(super) fn elect(s: &Schedule, req: &Request, slot: usize, path: &Path) -> Election {
    let Some(&last) = path.links.last().map(|&li| &s.links(slot)[li as usize]) else {
        return Election::local(slot, path.nodes.clone(), "keep local: empty path".into());
    };
    let now_slot = s.slot_at(req.now_ms);
    let successor_at = req.successor_at_ms.max(req.now_ms);
    let t = (successor_at - req.now_ms) as f64;
    let size = req.size_bytes as f64;
    // The job's own global copy leaves once the elected node's copy has ended.
    let global = s.global();
    let global_route = global
        .filter(|&g| g != req.local && req.global_copy_bytes > 0)
        .and_then(|g| s.shortest_path(now_slot, req.local, g));
    let copy = Copy { s, req, now_slot };
    // The global copy's own time on the way (0 if none is sent).
    let to_global = match (global, global_route.as_ref()) {
        (Some(g), Some(r)) => {
            2.0 * r.latency_ms
                + setup_ms(req, g, r.latency_ms)
                + transfer_ms(req.global_copy_bytes as f64, r.bottleneck_mbps)
        }
        _ => 0.0,
    };
    // The consumer's read from the global store, if it has to go there, from the
    // successor's start: none if it runs on the global node (the global copy lands in
    // its own store), else over the path from the global node. None without a global
    // store or a path from it.
    let read_global = global.and_then(|g| {
        if g == req.destination {
            return Some(0.0);
        }
        let to_dest = s.shortest_path(slot, g, req.destination)?;
        Some(
            2.0 * to_dest.latency_ms
                + consumer_setup_ms(req, to_dest.latency_ms)
                + transfer_ms(size, to_dest.bottleneck_mbps),
        )
    });
    let n = path.links.len();
    let estimate = |i: usize, arrival: f64| -> Estimate {
        let wait = (arrival - t).max(0.0);
        let retrieval = match n - i {
            0 => wait,
            1 => {
                // The consumer pulls over the last link from `pi` once the copy is there
                // and it has started; where the job's global copy crosses that link in
                // the same direction meanwhile, the two share it (a fair share until the
                // smaller ends). The global copy leaves now when nothing is elected,
                // else when the elected copy has ended.
                let pull_at = arrival.max(t);
                let global_left = if req.global_copy_bytes == 0 || Some(path.nodes[i]) == global {
                    0.0
                } else {
                    global_route
                        .as_ref()
                        .filter(|r| {
                            r.nodes
                                .windows(2)
                                .any(|w| w[0] == path.nodes[i] && w[1] == path.nodes[n])
                        })
                        .map_or(0.0, |_| {
                            let leaves = if i == 0 { 0.0 } else { arrival };
                            let left = (leaves + to_global - pull_at) / to_global.max(TIE_MS);
                            req.global_copy_bytes as f64 * left.clamp(0.0, 1.0)
                        })
                };
                wait + 2.0 * last.latency_ms
                    + consumer_setup_ms(req, last.latency_ms)
                    + transfer_ms(size + size.min(global_left), last.bandwidth_mbps)
            }
            _ => read_global.map_or(f64::INFINITY, |read| {
                // The global copy lands when it has followed this candidate's copy (it
                // is that copy when the candidate is the global node); with no global
                // copy to send, the global store has the state already.
                let landed = if req.global_copy_bytes == 0 {
                    0.0
                } else if Some(path.nodes[i]) == global {
                    arrival
                } else {
                    arrival + to_global
                };
                (landed - t).max(0.0) + read
            }),
        };
        Estimate {
            i,
            arrival,
            retrieval,
            fits: req.exec_ms + arrival <= req.max_latency_ms,
        }
    };
    let mut eligible = vec![estimate(0, 0.0)];
    let mut rejected = Vec::new();
    for i in 1..=n {
        match copy.arrival(path.nodes[i]) {
            Ok(arrival) => eligible.push(estimate(i, arrival)),
            Err(why) => rejected.push(format!("{}: {why}", s.name(path.nodes[i]))),
        }
    }
    let feasible = eligible.iter().any(|e| e.i > 0 && e.fits);
    let best = eligible
        .iter()
        .filter(|e| !feasible || e.i == 0 || e.fits)
        .fold(None::<Estimate>, |best, e| match best {
            Some(b) if b.retrieval < e.retrieval - TIE_MS => Some(b),
            _ => Some(*e),
        })
        .unwrap_or(eligible[0]);
    let node = path.nodes[best.i];
    let slo = if feasible {
        format!(
            "SLO feasible: exec {} + migration {} <= {}",
            num(req.exec_ms),
            num(best.arrival),
            num(req.max_latency_ms)
        )
    } else {
        format!(
            "SLO infeasible: no node within exec {} + migration <= {}",
            num(req.exec_ms),
            num(req.max_latency_ms)
        )
    };
    let mut reason = format!(
        "{}: {} of {} hops, expected retrieval {} ms (copy in {} ms, successor in {} ms); {slo}",
        s.name(node),
        best.i,
        n,
        num(best.retrieval),
        num(best.arrival),
        num(t),
    );
    if !rejected.is_empty() {
        let shown = rejected.len().min(MAX_REASONS);
        let _ = write!(reason, "; not eligible: {}", rejected[..shown].join("; "));
        if rejected.len() > shown {
            let _ = write!(reason, "; {} more", rejected.len() - shown);
        }
    }
    Election {
        target: if best.i == 0 {
            Target::Local
        } else {
            Target::Node(node)
        },
        path: path.nodes.clone(),
        migration_ms: best.arrival,
        slot,
        reason,
        slo_feasible: Some(feasible),
        retrieval_ms: Some(best.retrieval),
    }
}

/// The copy to a candidate node: it leaves now, over the current slot's route, ahead of
/// the job's global copy.
struct Copy<'a> {
    s: &'a Schedule,
    req: &'a Request<'a>,
    now_slot: usize,
}

impl Copy<'_> {
    /// The estimated arrival (ms from now) of the copy at `node`, or why `node` is not
    /// eligible: excluded, unreachable now, below the bandwidth floor, or its route
    /// breaks before the copy is done.
    fn arrival(&self, node: u32) -> Result<f64, String> {
        let (s, req) = (self.s, self.req);
        if req.exclude.contains(&node) {
            return Err("excluded (unreachable)".into());
        }
        let Some(route) = s.shortest_path(self.now_slot, req.local, node) else {
            return Err("unreachable now".into());
        };
        if route.bottleneck_mbps < req.min_bandwidth_mbps {
            return Err(format!(
                "bottleneck {} Mbit/s < {}",
                num(route.bottleneck_mbps),
                num(req.min_bandwidth_mbps)
            ));
        }
        let arrival = 2.0 * route.latency_ms
            + setup_ms(req, node, route.latency_ms)
            + transfer_ms(req.size_bytes as f64, route.bottleneck_mbps);
        // The route's links must last until the copy is done (not until the successor
        // starts: once stored, the state stays on the node whatever the links do).
        let survives = survival(s, self.now_slot, &route);
        if survives.last().copied().unwrap_or(0) < slots_needed(s, req.now_ms, arrival) {
            return Err(format!(
                "its route breaks before a {} ms copy ends",
                num(arrival)
            ));
        }
        Ok(arrival)
    }
}

/// The connection a copy to `node` (one-way latency `latency_ms` over its route) opens
/// first, if the process holds none to it: two round trips (TCP, then the client's
/// handshake). The binding SLO level showed copies judged feasible from the bare
/// transfer violating it, each fresh process paying this (BENCHMARKS section 4).
fn setup_ms(req: &Request, node: u32, latency_ms: f64) -> f64 {
    match req.connected {
        Some(connected) if !connected.contains(&node) => SETUP_ROUND_TRIPS * 2.0 * latency_ms,
        _ => 0.0,
    }
}

/// The connection the consumer opens for a read from another node (one-way latency
/// `latency_ms`): counted like a copy's whenever connections are (a consumer is a fresh
/// function process as often as the producer is).
fn consumer_setup_ms(req: &Request, latency_ms: f64) -> f64 {
    match req.connected {
        Some(_) => SETUP_ROUND_TRIPS * 2.0 * latency_ms,
        None => 0.0,
    }
}

/// Round trips of a new connection before its first request.
const SETUP_ROUND_TRIPS: f64 = 2.0;

/// How many consecutive slots, from the current one, a route's links must exist in for
/// a copy taking `arrival` ms from `now_ms` (at most a whole cycle).
fn slots_needed(s: &Schedule, now_ms: u64, arrival: f64) -> usize {
    let done_at = now_ms.saturating_add(arrival.ceil() as u64);
    let span = s
        .absolute_slot(done_at)
        .saturating_sub(s.absolute_slot(now_ms));
    usize::try_from(span.saturating_add(1))
        .unwrap_or(usize::MAX)
        .min(s.slots())
}
