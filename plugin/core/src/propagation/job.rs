//! One propagation job from start to end: attempts (elect, copy, finish) with retries,
//! re-targeting and progress saved to the outbox before every wait; dropping a job that
//! can no longer be done; the clean-up of nodes a `cleanup` put empties.

use super::copy::{self, Snapshot};
use super::elect;
use super::sending::{self, Sending};
use crate::clock::now_ms;
use crate::cluster::Cluster;
use crate::election::Rng;
use crate::error::CallError;
use crate::nodes::Global;
use crate::outbox::{self, Job};
use crate::stats::{self, Counter};
use crate::store::Request;
use crate::topology::Schedule;
use crate::{bundle_read, fence, keys, skylog};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

/// A clean-up of one node: the node, and the tasks (with the versions the job's target
/// holds) it may delete there.
type Sweep = (String, Vec<(Vec<u8>, u64)>);

/// What one attempt at a job came to.
enum Step {
    Done,
    /// Re-elected after excluding a node: try again at once.
    Again,
    Retry(Duration),
    Drop(String),
}

/// Runs a job to completion (or until it must wait for a later process).
pub(super) async fn run(ctx: &'static Cluster, mut job: Job) {
    let p = &ctx.config.propagation;
    let mut failures: HashMap<String, u32> = HashMap::new();
    let mut rng = Rng::new(now_ms() ^ u64::from(std::process::id()).rotate_left(32));
    loop {
        match step(ctx, &mut job, &mut failures, &mut rng).await {
            Step::Done => return,
            Step::Again => continue,
            Step::Drop(reason) => {
                stats::inc(Counter::Dropped);
                skylog!(
                    Warn,
                    "dropping job {} of chain {}: {reason}",
                    job.id,
                    job.chain
                );
                let mut pipe = redis::pipe();
                outbox::remove(&mut pipe, &ctx.config.namespace, job.ids());
                let _ = ctx.local.query_async(&Request::Pipe(pipe)).await;
                ctx.events
                    .publish(
                        "dropped",
                        json!({"chain": job.chain, "job": job.id, "reason": reason}),
                    )
                    .await;
                return;
            }
            Step::Retry(delay) => {
                // Persist progress first: if this process exits while waiting, a later
                // one resumes from here once the lease runs out.
                let due = now_ms() + delay.as_millis() as u64 + p.lease.as_millis() as u64;
                if let Ok(json) = job.to_json() {
                    let mut pipe = redis::pipe();
                    outbox::record(
                        &mut pipe,
                        &ctx.config.namespace,
                        &job.id,
                        &json,
                        due,
                        ctx.config.ttl,
                    );
                    if let Err(e) = ctx.local.query_async(&Request::Pipe(pipe)).await {
                        skylog!(Warn, "saving progress of job {}: {e}", job.id);
                    }
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One attempt at a job: elect its target (once), copy the bundle to the target and the
/// global store (whichever it lacks), and finish, retry or drop it.
async fn step(
    ctx: &'static Cluster,
    job: &mut Job,
    failures: &mut HashMap<String, u32>,
    rng: &mut Rng,
) -> Step {
    let p = &ctx.config.propagation;
    let local = &ctx.config.node_name;
    let topo = ctx.current_topology().await;
    let global = ctx.nodes.global(topo.as_deref());
    let global_name = global.as_ref().map(|g| g.name.clone());
    if let Some(wait) = not_ready(ctx, job, topo.as_deref(), global.is_some()) {
        return wait;
    }
    // The election needs only the bundle's sizes: elect, and record the copies as on
    // their way, before its bytes are read (a 20 MB snapshot takes longer than a fresh
    // consumer takes to probe this node, issue 13).
    let ns = &ctx.config.namespace;
    let most = keys::INCOMING_MAX_TASKS;
    let bundle = match bundle_read::sizes_async(&ctx.local, ns, &job.chain, &job.tasks, most).await
    {
        Ok(sizes) => sizes,
        Err(e) => {
            skylog!(
                Warn,
                "job {}: reading the local bundle's sizes: {e}",
                job.id
            );
            job.attempts += 1;
            return Step::Retry(backoff(p.retry_base, job.attempts));
        }
    };
    if let Err(e) = bundle.check(&ctx.local, &job.chain, ctx.config.max_bundle_bytes) {
        return Step::Drop(format!("not propagated: {}", e.message));
    }
    if bundle.state == 0 {
        return Step::Drop("the bundle is no longer on this node (expired or deleted)".into());
    }
    let sizes = elect::Sizes {
        state: bundle.state,
        global_copy: global_copy_bytes(job, bundle.own, local, global_name.as_deref()),
    };
    let target = elect::target(
        ctx,
        job,
        topo.as_deref(),
        global_name.as_deref(),
        sizes,
        rng,
    );
    let more = elect::more_targets(
        ctx,
        job,
        topo.as_deref(),
        global_name.as_deref(),
        sizes,
        rng,
    );
    let targets = copy_targets(job, &target, &more, local, global_name.as_deref());
    let records = sending::records(
        ctx,
        job,
        &targets,
        global_name.as_deref(),
        topo.as_deref(),
        &bundle,
    );
    let sending = Sending::write(ctx, keys::bundle(ns, &job.chain), &job.id, records).await;
    let step = copy_and_finish(
        ctx,
        job,
        failures,
        topo.as_deref(),
        global.as_ref(),
        &target,
        &more,
        &targets,
        &sending,
    )
    .await;
    sending.clear().await;
    step
}

/// The rest of an attempt once its targets are elected: read the bundle, copy it to
/// `targets`, and finish, retry or drop the job.
#[allow(clippy::too_many_arguments)]
async fn copy_and_finish(
    ctx: &'static Cluster,
    job: &mut Job,
    failures: &mut HashMap<String, u32>,
    topo: Option<&Schedule>,
    global: Option<&Global>,
    target: &String,
    more: &[String],
    targets: &[String],
    sending: &Sending<'_>,
) -> Step {
    let p = &ctx.config.propagation;
    let local = &ctx.config.node_name;
    let global_name = global.map(|g| g.name.clone());
    let snap = match Snapshot::read(&ctx.local, &ctx.config.namespace, &job.chain).await {
        Ok(s) => s,
        Err(e) => {
            skylog!(Warn, "job {}: reading the local bundle: {e}", job.id);
            job.attempts += 1;
            return Step::Retry(backoff(p.retry_base, job.attempts));
        }
    };
    if snap.state.is_empty() {
        return Step::Drop("the bundle is no longer on this node (expired or deleted)".into());
    }
    let swept = swept_nodes(
        job,
        target,
        more,
        &snap.placement,
        global_name.as_deref(),
        local,
    );
    let record = placement_record(job, &snap.placement, &swept, target);
    let round = copy::round(ctx, job, targets, &snap, &record, global, topo, sending).await;
    stats::add(Counter::Copies, round.copied.len() as u64);
    job.done.extend(round.copied.iter().cloned());
    for (name, at) in &round.landed {
        job.landed
            .insert(name.clone(), at.saturating_sub(job.put_at_ms));
    }
    if round.copied.contains(target) {
        job.carried = snap
            .versions
            .iter()
            .filter_map(|(t, v)| Some((String::from_utf8(t.clone()).ok()?, *v)))
            .collect();
    }
    if !round.failed.is_empty() {
        return retry(
            ctx,
            job,
            failures,
            round.failed,
            target,
            more,
            global_name.as_deref(),
        )
        .await;
    }
    if !round.made_all(targets) {
        // A copy task panicked or was cancelled: its copy is not known to exist. Try again
        // later rather than finish the job and drop it from the outbox.
        job.attempts += 1;
        return Step::Retry(backoff(p.retry_base, job.attempts));
    }
    // What the target holds: the versions its copy carried (an earlier round's copy may
    // be older than this round's read), or all of the bundle when it is this node.
    let at_target: keys::Versions = if target == local {
        snap.versions
    } else {
        job.carried
            .iter()
            .map(|(t, v)| (t.clone().into_bytes(), *v))
            .collect()
    };
    if finish(ctx, job, target, &snap.placement, &at_target, swept).await {
        Step::Done
    } else {
        job.attempts += 1;
        Step::Retry(backoff(p.retry_base, job.attempts))
    }
}

/// Why the job cannot go on now, if it cannot: too old (dropped), or the copies it owes
/// are not known yet (retried).
fn not_ready(
    ctx: &Cluster,
    job: &mut Job,
    topo: Option<&Schedule>,
    has_global: bool,
) -> Option<Step> {
    if let Some(ttl) = ctx.config.ttl {
        if now_ms().saturating_sub(job.put_at_ms) > ttl.as_millis() as u64 {
            return Some(Step::Drop("older than the bundle TTL".into()));
        }
    }
    // No global store, and either no topology at all or one that names a global node:
    // the copies this job owes are unknown, not absent (the topology is not loaded yet,
    // e.g. the local store was down when it was due, or the global node's address does
    // not resolve). Going on would finish the job with no copy made and drop it from
    // the outbox; wait instead.
    if !has_global && topo.is_none_or(|t| t.global().is_some()) {
        job.attempts += 1;
        skylog!(
            Info,
            "job {}: no topology or no global store yet; retrying",
            job.id
        );
        let retry_base = ctx.config.propagation.retry_base;
        return Some(Step::Retry(backoff(retry_base, job.attempts)));
    }
    None
}

/// Bytes of the copy to the global store this round sends after the target's copy:
/// the job's own fields (what a global copy carries), 0 if the global store is this node
/// or already has them.
fn global_copy_bytes(job: &Job, own_bytes: u64, local: &str, global: Option<&str>) -> u64 {
    match global {
        Some(g) if g != local && !job.done.iter().any(|d| d == g) => own_bytes,
        _ => 0,
    }
}

/// The nodes this round copies to: the target and the nodes elected for a fan-out's
/// further destinations unless they are this node or the global store, each once (two
/// destinations whose elections coincide share one copy), and the global store unless it
/// is this node; minus those already done.
fn copy_targets(
    job: &Job,
    target: &str,
    more: &[String],
    local: &str,
    global: Option<&str>,
) -> Vec<String> {
    let mut targets: Vec<String> = Vec::new();
    for t in std::iter::once(target).chain(more.iter().map(String::as_str)) {
        if t != local && Some(t) != global && !targets.iter().any(|have| have == t) {
            targets.push(t.to_string());
        }
    }
    if let Some(g) = global {
        if g != local {
            targets.push(g.to_string());
        }
    }
    targets.retain(|t| !job.done.contains(t));
    targets
}

/// The placement the copies carry: earlier puts' entries travel with the copy; this
/// job's tasks point at the node it elected, and so do the tasks whose node a clean-up
/// will empty (the copy to the target carries them: the placement does not name the
/// target for them).
fn placement_record<'a>(
    job: &'a Job,
    placement: &'a [(String, String)],
    swept: &[String],
    target: &'a str,
) -> Vec<(&'a str, &'a str)> {
    placement
        .iter()
        .filter(|(t, _)| !job.tasks.contains(t))
        .map(|(t, n)| {
            let n = if swept.contains(n) {
                target
            } else {
                n.as_str()
            };
            (t.as_str(), n)
        })
        .chain(job.tasks.iter().map(|t| (t.as_str(), target)))
        .collect()
}

/// The delay before retry number `failures`: `base`, doubling, at most 10 s.
fn backoff(base: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(Duration::from_secs(10))
}

/// Counts the failed copies of a round; re-targets the job if one of its elected nodes
/// (the target or a fan-out's further one) failed `SKYLARK_RETRIES` times, else waits the
/// backoff of the worst. Re-targeting the target elects every destination again; one of
/// the further nodes, only the further destinations (the target and what its copy carried
/// stay).
#[allow(clippy::too_many_arguments)]
async fn retry(
    ctx: &Cluster,
    job: &mut Job,
    failures: &mut HashMap<String, u32>,
    failed: Vec<(String, CallError)>,
    target: &str,
    more: &[String],
    global: Option<&str>,
) -> Step {
    let p = &ctx.config.propagation;
    let mut worst = 0;
    for (name, e) in failed {
        let n = failures.entry(name.clone()).or_insert(0);
        *n += 1;
        job.attempts += 1;
        stats::inc(Counter::Retries);
        skylog!(
            Info,
            "job {}: copy to {name} failed (attempt {n}): {e}",
            job.id
        );
        ctx.events
            .publish(
                "retry",
                json!({"chain": job.chain, "job": job.id, "node": name, "attempt": *n,
                   "error": e.message}),
            )
            .await;
        let elected = name == target || more.contains(&name);
        if elected && Some(name.as_str()) != global && *n >= p.retries {
            // An elected node stays unreachable: elect again without it.
            stats::inc(Counter::Retargets);
            stats::inc(Counter::Failures);
            job.exclude.push(name.clone());
            job.more_targets.clear();
            if name == target {
                job.target = None;
                job.carried.clear();
            }
            ctx.events
                .publish(
                    "retarget",
                    json!({"chain": job.chain, "job": job.id, "from": name, "failures": *n}),
                )
                .await;
            return Step::Again;
        }
        worst = worst.max(*n);
    }
    Step::Retry(backoff(p.retry_base, worst))
}

/// Records the job's placement on the writer's node, removes the job from the outbox,
/// announces it and runs the clean-up of the `swept` nodes ([`swept_nodes`], computed by
/// [`step`] for the copies' record). False (nothing cleaned up) if the record could not be
/// written.
async fn finish(
    ctx: &Cluster,
    job: &Job,
    target: &str,
    placement: &[(String, String)],
    at_target: &keys::Versions,
    swept: Vec<String>,
) -> bool {
    let ns = &ctx.config.namespace;
    let version = |task: &str| keys::version(at_target, task.as_bytes());
    // This job's tasks, and those whose node the clean-up below empties, are placed on
    // the target now (its copy carried them, in the versions `at_target`), unless a later
    // put wrote them meanwhile (its own job records them then).
    let placed: Vec<fence::Placed> = job
        .tasks
        .iter()
        .chain(
            placement
                .iter()
                .filter(|(t, n)| !job.tasks.contains(t) && swept.contains(n))
                .map(|(t, _)| t),
        )
        .map(|t| (t.as_str(), version(t), target))
        .collect();
    // The clean-up below empties the swept nodes of every task up to the version the
    // target holds: tombstones recorded with this placement keep another job of the chain
    // that finishes later (its copy to a swept node made before the sweep) from naming
    // such a node again (RELIABILITY.md, finding 13).
    let tombstones: Vec<fence::Placed> = swept
        .iter()
        .flat_map(|node| {
            at_target
                .iter()
                .filter_map(move |(t, v)| Some((std::str::from_utf8(t).ok()?, *v, node.as_str())))
        })
        .collect();
    let mut pipe = redis::pipe();
    pipe.atomic();
    // In a transaction a script goes with its text: a NOSCRIPT would fail the copy alone
    // and remove the job all the same.
    pipe.add_command(crate::script::in_transaction(
        fence::Copy {
            placed: &placed,
            swept: &tombstones,
            ttl: ctx.config.ttl,
            ..Default::default()
        }
        .cmd(&keys::bundle(ns, &job.chain)),
    ));
    outbox::remove(&mut pipe, ns, job.ids());
    // The copy script's reply, alone in the transaction's (the rest is ignored).
    let recorded = ctx
        .local
        .query_async(&Request::Pipe(pipe))
        .await
        .and_then(|reply| {
            match &reply {
                redis::Value::Array(items) if items.len() == 1 => fence::copy_reply(&items[0]),
                _ => None,
            }
            .ok_or_else(|| {
                ctx.local
                    .reply_error("unexpected reply to a placement".into())
            })
        });
    let recorded = match recorded {
        Ok(r) => r,
        Err(e) => {
            // The copies are in place, but neither the record nor the tombstones may be:
            // no clean-up until they are (it would empty nodes the record still names).
            // The job tries again (its copies are done) here, or from the outbox in a
            // later process.
            skylog!(
                Warn,
                "job {}: recording its placement and removing it from the outbox: {e}",
                job.id
            );
            return false;
        }
    };
    let took = now_ms().saturating_sub(job.put_at_ms);
    stats::observe_propagation(took);
    let body = json!({"chain": job.chain, "job": job.id, "tasks": job.tasks,
           "node": ctx.config.node_name, "elected": target, "also": job.more_targets,
           "copies": job.done, "copy_ms": job.landed, "ms": took});
    ctx.events.publish("propagated", body).await;
    // Each swept node is emptied only of the tasks whose tombstone was recorded there.
    let sweeps: Vec<Sweep> = swept
        .into_iter()
        .map(|node| {
            let tasks = recorded
                .swept
                .iter()
                .filter(|(_, n)| *n == node)
                .map(|(t, _)| (t.clone(), keys::version(at_target, t)))
                .collect();
            (node, tasks)
        })
        .collect();
    cleanup(ctx, job, at_target, sweeps).await;
    true
}

/// The nodes a put with the `cleanup` option empties: those the placement record names
/// for other tasks (nodes earlier puts elected), except this job's targets (the target
/// and a fan-out's further ones), the global store and this node. None for a put without
/// the option.
fn swept_nodes(
    job: &Job,
    target: &str,
    more: &[String],
    placement: &[(String, String)],
    global: Option<&str>,
    local: &str,
) -> Vec<String> {
    if !job.cleanup {
        return Vec::new();
    }
    let mut nodes: Vec<String> = placement
        .iter()
        .filter(|(task, _)| !job.tasks.contains(task))
        .map(|(_, node)| node.clone())
        .filter(|n| n != target && !more.contains(n))
        .filter(|n| Some(n.as_str()) != global && n != local)
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

/// Deletes the chain's copies on the swept nodes ([`swept_nodes`]; best effort, they
/// expire anyway): on each, only the tasks [`finish`] recorded a tombstone for (the record
/// no longer names the node for them), and of each, only a copy no newer than the one the
/// job's target holds, so a clean-up delivered late never deletes newer state; and nothing
/// on a node the job of a later put elected (its claim, `fence`).
async fn cleanup(ctx: &Cluster, job: &Job, versions: &keys::Versions, sweeps: Vec<Sweep>) {
    if sweeps.is_empty() {
        return;
    }
    let ns = &ctx.config.namespace;
    let topo = ctx.current_topology().await;
    let newest_put = job.newest_put(versions);
    for (node, tasks) in sweeps {
        if tasks.is_empty() {
            continue;
        }
        let store = match ctx.nodes.store(topo.as_deref(), &node) {
            Ok(s) => s,
            Err(e) => {
                skylog!(Info, "cleanup of {node}: {e}");
                continue;
            }
        };
        let seen: Vec<(&[u8], u64)> = tasks.iter().map(|(t, v)| (t.as_slice(), *v)).collect();
        let del = fence::sweep(&keys::bundle(ns, &job.chain), newest_put, &seen);
        match store.query_async(&Request::Cmd(del)).await {
            Ok(redis::Value::Int(-1)) => {
                skylog!(
                    Info,
                    "cleanup of {node}: a later put's job elected it; left alone"
                )
            }
            Ok(_) => {
                stats::inc(Counter::Cleanups);
                ctx.events
                    .publish(
                        "cleanup",
                        json!({"chain": job.chain, "node": node, "job": job.id}),
                    )
                    .await;
            }
            Err(e) => skylog!(Info, "cleanup of {node}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skylark_abi::wire::Policy;

    fn job() -> Job {
        Job {
            id: "j".into(),
            chain: "c".into(),
            tasks: vec!["t2".into()],
            origin: "me".into(),
            policy: Policy::Skylark,
            destination: None,
            more_destinations: Vec::new(),
            max_latency_ms: 0,
            min_bandwidth_mbps: 0.0,
            exec_ms: 0,
            successor_in_ms: 0,
            put_at_ms: 0,
            cleanup: true,
            target: None,
            more_targets: Vec::new(),
            done: Vec::new(),
            exclude: Vec::new(),
            carried: Default::default(),
            landed: Default::default(),
            attempts: 0,
            merged: Vec::new(),
        }
    }

    #[test]
    fn a_cleanup_sweeps_nodes_of_other_tasks_but_never_its_own_targets() {
        let mut job = job();
        let placement = vec![
            ("t0".to_string(), "n1".to_string()),
            ("t1".to_string(), "n2".to_string()),
            ("t2".to_string(), "n3".to_string()),
            ("t3".to_string(), "g".to_string()),
            ("t4".to_string(), "me".to_string()),
            ("t5".to_string(), "n1".to_string()),
        ];
        // n3 held only this job's own task; n2 is the new target.
        assert_eq!(
            swept_nodes(&job, "n2", &[], &placement, Some("g"), "me"),
            ["n1".to_string()]
        );
        // A fan-out's further target is one of its own targets too.
        let more = ["n1".to_string()];
        assert!(swept_nodes(&job, "n2", &more, &placement, Some("g"), "me").is_empty());
        job.cleanup = false;
        assert!(swept_nodes(&job, "n2", &[], &placement, Some("g"), "me").is_empty());
    }

    #[test]
    fn a_fan_out_copies_once_to_each_distinct_elected_node() {
        let mut job = job();
        let s = |v: &[&str]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        // One destination: the target and the global store, as before fan-outs.
        assert_eq!(
            copy_targets(&job, "n1", &[], "me", Some("g")),
            s(&["n1", "g"])
        );
        // Three destinations, two of whose elections coincide: one copy serves both.
        assert_eq!(
            copy_targets(&job, "n1", &s(&["n2", "n1"]), "me", Some("g")),
            s(&["n1", "n2", "g"])
        );
        // Elected nodes that are this node or the global store need no copy of their own.
        assert_eq!(
            copy_targets(&job, "me", &s(&["g", "n2", "n2"]), "me", Some("g")),
            s(&["n2", "g"])
        );
        // Copies already made are not made again.
        job.done = s(&["n2"]);
        assert_eq!(
            copy_targets(&job, "n1", &s(&["n2"]), "me", Some("g")),
            s(&["n1", "g"])
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_millis(100);
        assert_eq!(backoff(b, 1), Duration::from_millis(100));
        assert_eq!(backoff(b, 2), Duration::from_millis(200));
        assert_eq!(backoff(b, 4), Duration::from_millis(800));
        assert_eq!(backoff(b, 40), Duration::from_secs(10));
    }
}
