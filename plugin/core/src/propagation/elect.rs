//! Where a job's copy goes: the job and the live topology turned into an
//! [`election::Request`], and the election's result into node names, announced with a
//! `placement` event.

use crate::clock::now_ms;
use crate::cluster::Cluster;
use crate::election::{self, Rng, Target};
use crate::outbox::Job;
use crate::skylog;
use crate::topology::Schedule;
use serde_json::json;
use skylark_abi::wire::Policy;

/// What an election is given: the state's size and the bytes of the global copy that
/// follows the elected node's copy (0 if the global store has it already).
#[derive(Debug, Clone, Copy)]
pub(super) struct Sizes {
    pub state: u64,
    pub global_copy: u64,
}

/// The job's target: the one it already has, else a fresh election for its (first)
/// destination, which is recorded in the job and announced (off the copy's critical path).
pub(super) fn target(
    ctx: &'static Cluster,
    job: &mut Job,
    topo: Option<&Schedule>,
    global: Option<&str>,
    sizes: Sizes,
    rng: &mut Rng,
) -> String {
    if let Some(t) = &job.target {
        return t.clone();
    }
    let dest = job.destination.clone();
    let node = elect_announced(ctx, topo, global, job, dest.as_deref(), sizes, rng);
    job.target = Some(node.clone());
    node
}

/// The nodes of the job's further destinations (a fan-out's other successors): the ones
/// it already has, else one fresh election per destination, each recorded and announced
/// like [`target`]'s. Empty for a job with one destination.
pub(super) fn more_targets(
    ctx: &'static Cluster,
    job: &mut Job,
    topo: Option<&Schedule>,
    global: Option<&str>,
    sizes: Sizes,
    rng: &mut Rng,
) -> Vec<String> {
    if job.more_targets.len() == job.more_destinations.len() {
        return job.more_targets.clone();
    }
    let nodes: Vec<String> = job
        .more_destinations
        .iter()
        .map(|dest| elect_announced(ctx, topo, global, job, Some(dest), sizes, rng))
        .collect();
    job.more_targets = nodes.clone();
    nodes
}

/// Elects the node for destination `dest` (`None`: the global node) and publishes the
/// `placement` event.
fn elect_announced(
    ctx: &'static Cluster,
    topo: Option<&Schedule>,
    global: Option<&str>,
    job: &Job,
    dest: Option<&str>,
    sizes: Sizes,
    rng: &mut Rng,
) -> String {
    let e = elect(ctx, topo, global, job, dest, sizes, rng);
    let rule = (job.policy == Policy::Skylark).then(|| ctx.config.propagation.election.name());
    let body = json!({"chain": job.chain, "tasks": job.tasks, "node": ctx.config.node_name,
           "policy": job.policy.name(), "rule": rule, "elected": e.node, "global": global,
           "destination": dest.or(global),
           "path": e.path, "migration_ms": e.migration_ms, "slot": e.slot,
           "bytes": sizes.state, "reason": e.reason, "job": job.id,
           "exec_ms": e.exec_ms, "max_latency_ms": job.max_latency_ms,
           "slo_feasible": e.slo_feasible, "retrieval_ms": e.retrieval_ms});
    tokio::spawn(ctx.events.publish("placement", body));
    skylog!(Debug, "job {}: elected {} ({})", job.id, e.node, e.reason);
    e.node
}

/// Delay between a put and its job's election that the SLO check ignores.
const QUEUE_NOISE_MS: u64 = 100;

/// The producer's execution time so far and when the successor starts, at `now`: time
/// the job spent waiting since the put counts towards the budget once it is more than
/// scheduling noise (a job resumed from the outbox, retried, or re-targeted). The guest
/// chose `exec_ms` and `successor_in_ms`, so the sums saturate instead of overflowing.
fn times(job: &Job, now: u64) -> (f64, u64) {
    let waited = match now.saturating_sub(job.put_at_ms) {
        w if w > QUEUE_NOISE_MS => w,
        _ => 0,
    };
    let exec_ms = job.exec_ms.saturating_add(waited) as f64;
    let successor_at_ms = job.put_at_ms.saturating_add(job.successor_in_ms).max(now);
    (exec_ms, successor_at_ms)
}

/// The outcome of an election, by node name.
struct Elected {
    /// The node that should hold the copy (this node's name to keep it local).
    node: String,
    reason: String,
    path: Vec<String>,
    migration_ms: f64,
    slot: Option<usize>,
    /// The execution time the election counted against the SLO.
    exec_ms: Option<f64>,
    slo_feasible: Option<bool>,
    retrieval_ms: Option<f64>,
}

/// Elects the node that should hold the job's copy for destination `dest` (`None`: the
/// global node).
fn elect(
    ctx: &Cluster,
    topo: Option<&Schedule>,
    global: Option<&str>,
    job: &Job,
    dest: Option<&str>,
    sizes: Sizes,
    rng: &mut Rng,
) -> Elected {
    let local = ctx.config.node_name.clone();
    let keep = |reason: &str| Elected {
        node: local.clone(),
        reason: reason.to_string(),
        path: Vec::new(),
        migration_ms: 0.0,
        slot: None,
        exec_ms: None,
        slo_feasible: None,
        retrieval_ms: None,
    };
    match job.policy {
        Policy::Local => return keep("policy local"),
        Policy::Stateless => {
            return match global {
                Some(g) => Elected {
                    node: g.to_string(),
                    ..keep("policy stateless: the global store")
                },
                None => keep("policy stateless but no global store"),
            }
        }
        Policy::Skylark | Policy::Random => {}
    }
    let Some(t) = topo else {
        return keep("no topology");
    };
    let Some(local_id) = t.id(&local) else {
        return keep("this node is not in the topology");
    };
    let Some(dest_name) = dest.or(global) else {
        return keep("no destination and no global node");
    };
    let Some(dest_id) = t.id(dest_name) else {
        return keep(&format!("destination {dest_name} is not in the topology"));
    };
    let exclude: Vec<u32> = job.exclude.iter().filter_map(|n| t.id(n)).collect();
    let connected: Vec<u32> = ctx
        .nodes
        .connected()
        .iter()
        .filter_map(|n| t.id(n))
        .collect();
    let now = now_ms();
    let (exec_ms, successor_at_ms) = times(job, now);
    let req = election::Request {
        policy: job.policy,
        rule: ctx.config.propagation.election,
        local: local_id,
        destination: dest_id,
        size_bytes: sizes.state,
        exec_ms,
        max_latency_ms: job.max_latency_ms as f64,
        min_bandwidth_mbps: job.min_bandwidth_mbps,
        now_ms: now,
        successor_at_ms,
        exclude: &exclude,
        global_copy_bytes: sizes.global_copy,
        connected: Some(&connected),
    };
    let e = election::elect(t, &req, rng);
    let node = match e.target {
        Target::Node(n) => t.node(n).name.clone(),
        Target::Local => local.clone(),
        Target::Global => global.map(str::to_string).unwrap_or_else(|| local.clone()),
    };
    Elected {
        node,
        reason: e.reason,
        path: e.path.iter().map(|&n| t.node(n).name.clone()).collect(),
        migration_ms: e.migration_ms,
        slot: Some(e.slot),
        exec_ms: Some(req.exec_ms),
        slo_feasible: e.slo_feasible,
        retrieval_ms: e.retrieval_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_times_saturate() {
        let job: Job = serde_json::from_str(
            r#"{"id":"j","chain":"c","tasks":["t"],"origin":"n","policy":"skylark",
                "max_latency_ms":1,"min_bandwidth_mbps":0,"exec_ms":18446744073709551615,
                "successor_in_ms":18446744073709551615,"put_at_ms":1000}"#,
        )
        .expect("a job");
        let (exec, at) = times(&job, 5000);
        assert_eq!(at, u64::MAX);
        assert_eq!(exec, u64::MAX as f64);
        let (exec, at) = times(&job, 1050);
        assert_eq!((exec, at), (u64::MAX as f64, u64::MAX));
    }
}
