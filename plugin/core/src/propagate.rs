//! Background propagation: after a put's node-local write (which recorded a job in the
//! outbox), elect the node where the successor will most likely run and copy the chain's
//! bundle there and to the global store, pipelined, off the guest's thread.
//!
//! Rules:
//! - **Backpressure.** At most `SKYLARK_QUEUE_LEN` jobs are in flight per process. A put
//!   that finds the queue full still records its job in the outbox, due at once, and
//!   returns; the next outbox sweep (of this or any later process on the node) runs it.
//!   Puts never block on propagation and nothing is dropped.
//! - **One chain, one copy at a time.** Jobs of a chain run in order; a job waits
//!   `SKYLARK_LINGER_MS` before it reads the bundle, and jobs of the same chain submitted
//!   meanwhile (or while an earlier one runs) merge into one, which copies the latest
//!   bundle once. An older snapshot never overwrites a newer one.
//! - **Retries.** A failed copy is retried with exponential backoff (`SKYLARK_RETRY_BASE_MS`,
//!   doubling, at most 10 s). After `SKYLARK_RETRIES` failures the elected node is excluded
//!   and the job re-elected (the next candidate, or this node); the global copy is retried
//!   until the bundle's TTL has passed.
//! - **Nothing lost.** Progress is written back to the outbox before every wait; a job is
//!   removed only when all its copies are acknowledged. Jobs of processes that died are
//!   claimed by the sweeps of later processes once their lease has run out. A job that
//!   cannot tell its copies yet (no topology loaded and no global store) waits for them.
//! - **Exit.** At process exit the plugin waits up to `SKYLARK_EXIT_FLUSH_MS` for jobs in
//!   flight (a function's wasmedge process usually exits right after its put). What is
//!   still running then is not stopped: the runtime's threads end with the process, and
//!   their jobs stay in the outbox for a later process. The plugin library is linked never
//!   to be unloaded (`plugin/build.rs`), so WasmEdge's `dlclose` at exit cannot unmap the
//!   code those threads run.

use crate::context::{self, Context};
use crate::election::{self, Rng, Target};
use crate::error::CallError;
use crate::events::{self, now_ms};
use crate::nodes::Global;
use crate::outbox::{self, Claimed, Job};
use crate::stats::{self, Counter};
use crate::store::{self, HashPairs, Request, Store};
use crate::topology::Schedule;
use crate::topology_watch::Change;
use crate::{fence, keys, runtime, skylog};
use serde_json::json;
use skylark_abi::wire::Policy;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The in-flight job counter and its exit flush.
pub struct Engine {
    cap: usize,
    /// Jobs and other tracked background work (sweeps) in flight.
    in_flight: Mutex<usize>,
    idle: Condvar,
    /// Set when jobs may be waiting in the outbox (a put overflowed, or a sweep filled
    /// the queue): a finishing job then sweeps at once instead of waiting for the timer.
    backlog: std::sync::atomic::AtomicBool,
    /// Chains with a job running, and the job waiting to run after it.
    chains: Mutex<HashMap<String, Option<Job>>>,
}

impl Engine {
    pub fn new(cap: usize) -> Engine {
        Engine {
            cap: cap.max(1),
            in_flight: Mutex::new(0),
            idle: Condvar::new(),
            backlog: std::sync::atomic::AtomicBool::new(false),
            chains: Mutex::new(HashMap::new()),
        }
    }

    fn count(&self) -> std::sync::MutexGuard<'_, usize> {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn chains(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Job>>> {
        self.chains
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes one queue slot if there is room.
    pub fn reserve(&self) -> bool {
        self.reserve_up_to(1) == 1
    }

    fn reserve_up_to(&self, n: usize) -> usize {
        let mut c = self.count();
        let got = n.min(self.cap.saturating_sub(*c));
        *c += got;
        got
    }

    /// Free slots right now (a snapshot).
    fn free(&self) -> usize {
        self.cap.saturating_sub(*self.count())
    }

    /// Notes that jobs wait in the outbox (a put found the queue full).
    pub fn note_backlog(&self) {
        self.backlog
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn take_backlog(&self) -> bool {
        self.backlog
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes `n` slots even beyond the capacity (work already claimed must be tracked).
    pub fn force_reserve(&self, n: usize) {
        *self.count() += n;
    }

    /// Gives back a slot taken with [`Engine::reserve`] for a job that was not submitted.
    pub fn release_slot(&self) {
        self.release(1);
    }

    fn release(&self, n: usize) {
        let mut c = self.count();
        *c = c.saturating_sub(n);
        if *c == 0 {
            self.idle.notify_all();
        }
    }

    /// Waits until no job is in flight, at most `deadline`; true if all finished.
    pub fn flush(&self, deadline: Duration) -> bool {
        let c = self.count();
        let (c, _) = self
            .idle
            .wait_timeout_while(c, deadline, |n| *n > 0)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *c == 0
    }

    /// Starts the outbox sweeper and registers the exit flush. Called once per process.
    pub fn start(&self, ctx: &'static Context) {
        let Ok(rt) = runtime::handle() else {
            skylog!(
                Error,
                "no runtime: propagation will only happen in later processes"
            );
            return;
        };
        register_exit_flush();
        // Connect to the global store (every job's target) while the guest still runs.
        rt.spawn(async move {
            let topo = topology(ctx).await;
            let ping = Request::Cmd(redis::cmd("PING"));
            let local = ctx.local.query_async(&ping);
            match ctx.nodes.global(topo.as_deref()) {
                Some(g) => {
                    let (_, _) = tokio::join!(local, g.store.query_async(&ping));
                }
                None => {
                    let _ = local.await;
                }
            }
        });
        // The first sweep counts as work in flight, so that a short-lived process that
        // claims an orphaned job also finishes it before exiting.
        self.force_reserve(1);
        rt.spawn(async move {
            // The first sweep may use the slot it holds.
            let mut held = 1;
            loop {
                sweep(ctx, held).await;
                flush_stats(ctx).await;
                if let Some(engine) = &ctx.engine {
                    engine.release(std::mem::take(&mut held));
                }
                tokio::time::sleep(ctx.config.propagation.sweep).await;
            }
        });
    }

    /// Runs `job` in the background; the caller holds a slot from [`Engine::reserve`].
    ///
    /// Jobs of one chain run one after the other, so that an older snapshot of a bundle
    /// never lands after a newer one. A job submitted while another of its chain runs
    /// waits; further jobs of that chain merge into the waiting one (giving their slot
    /// back), so a burst of puts costs one copy of the latest bundle.
    pub fn submit(&self, ctx: &'static Context, job: Job) {
        let chain = job.chain.clone();
        {
            let mut chains = self.chains();
            if let Some(waiting) = chains.get_mut(&chain) {
                match waiting {
                    Some(w) => {
                        w.absorb(job);
                        drop(chains);
                        stats::inc(Counter::Coalesced);
                        self.release(1);
                    }
                    None => *waiting = Some(job),
                }
                return;
            }
            chains.insert(chain.clone(), None);
        }
        let rt = match runtime::handle() {
            Ok(rt) => rt,
            Err(e) => {
                self.chains().remove(&chain);
                skylog!(
                    Error,
                    "cannot run the job of chain {chain}: {e}; it stays in the outbox"
                );
                self.release(1);
                return;
            }
        };
        rt.spawn(async move {
            let Some(engine) = &ctx.engine else { return };
            let mut next = Some(job);
            while let Some(job) = next {
                // Let a burst of puts of this chain gather into one copy.
                let linger = ctx.config.propagation.linger;
                if !linger.is_zero() {
                    tokio::time::sleep(linger).await;
                }
                let mut job = job;
                // Jobs that arrived while lingering wait in the chain's slot: fold them
                // in and give their queue slot back.
                let waiting = engine.chains().get_mut(&chain).and_then(Option::take);
                if let Some(waiting) = waiting {
                    job.absorb(waiting);
                    stats::inc(Counter::Coalesced);
                    engine.release(1);
                }
                run(ctx, job).await;
                // Still holding this job's slot: the sweep may hand it on, so the exit
                // flush keeps waiting while a backlog drains.
                if engine.take_backlog() {
                    sweep(ctx, 1).await;
                }
                engine.release(1);
                let mut chains = engine.chains();
                next = chains.get_mut(&chain).and_then(Option::take);
                if next.is_none() {
                    chains.remove(&chain);
                }
            }
        });
    }
}

extern "C" {
    fn atexit(cb: extern "C" fn()) -> std::os::raw::c_int;
}

fn register_exit_flush() {
    // SAFETY: `at_exit` is a plain function that never unwinds (it catches panics).
    let rc = unsafe { atexit(at_exit) };
    if rc != 0 {
        skylog!(
            Warn,
            "atexit failed: jobs in flight at exit wait for a later process"
        );
    }
}

extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(|| {
        let Ok(ctx) = context::get() else { return };
        if let Some(engine) = &ctx.engine {
            let deadline = ctx.config.propagation.exit_flush;
            let started = Instant::now();
            if !engine.flush(deadline) {
                skylog!(
                    Warn,
                    "exit: propagation still in flight after {} ms; the outbox keeps it for a later process",
                    started.elapsed().as_millis()
                );
            }
        }
        flush_stats_blocking(ctx);
    });
}

/// Adds this process's counters to the node's stats hash (on the calling thread).
pub fn flush_stats_blocking(ctx: &Context) {
    let taken = stats::take();
    if taken.is_empty() {
        return;
    }
    let key = keys::stats(&ctx.config.namespace, &ctx.config.node_name);
    if let Err(e) = ctx
        .local
        .query(&Request::Pipe(stats::pipeline(&key, &taken)))
    {
        skylog!(Debug, "writing stats: {e}");
        stats::restore(&taken);
    }
}

async fn flush_stats(ctx: &Context) {
    let taken = stats::take();
    if taken.is_empty() {
        return;
    }
    let key = keys::stats(&ctx.config.namespace, &ctx.config.node_name);
    let req = Request::Pipe(stats::pipeline(&key, &taken));
    if let Err(e) = ctx.local.query_async(&req).await {
        skylog!(Debug, "writing stats: {e}");
        stats::restore(&taken);
    }
}

/// Claims due outbox jobs (as many as the queue has room for, plus `held` slots the
/// caller holds and is about to give back) and runs them.
async fn sweep(ctx: &'static Context, held: usize) {
    let Some(engine) = &ctx.engine else { return };
    let p = &ctx.config.propagation;
    // Claim no more than there is room for now; puts racing with the claim may push the
    // count past the capacity by a little, which is harmless.
    let slots = engine.free() + held;
    if slots == 0 {
        engine.note_backlog();
        return;
    }
    let now = now_ms();
    let lease_until = now + p.lease.as_millis() as u64;
    let claimed = outbox::claim(&ctx.local, &ctx.config.namespace, now, lease_until, slots).await;
    let claimed = match claimed {
        Ok(c) => c,
        Err(e) => {
            skylog!(Warn, "sweeping the outbox: {e}");
            return;
        }
    };
    if claimed.len() == slots {
        // There may be more.
        engine.note_backlog();
    }
    engine.force_reserve(claimed.len());
    for c in claimed {
        match c {
            Claimed::Job(job) => {
                stats::inc(Counter::Resumed);
                skylog!(Info, "resuming job {} of chain {}", job.id, job.chain);
                engine.submit(ctx, *job);
            }
            Claimed::Invalid { id, reason } => {
                skylog!(
                    Warn,
                    "outbox job {id} is unreadable ({reason}); removing it"
                );
                stats::inc(Counter::Dropped);
                let mut pipe = redis::pipe();
                outbox::remove(&mut pipe, &ctx.config.namespace, &id);
                let _ = ctx.local.query_async(&Request::Pipe(pipe)).await;
                events::publish(ctx, "job_invalid", json!({"job": id, "reason": reason})).await;
                engine.release(1);
            }
        }
    }
}

/// What one attempt at a job came to.
enum Step {
    Done,
    /// Re-elected after excluding a node: try again at once.
    Again,
    Retry(Duration),
    Drop(String),
}

/// Runs a job to completion (or until it must wait for a later process).
async fn run(ctx: &'static Context, mut job: Job) {
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
                for id in job.ids() {
                    outbox::remove(&mut pipe, &ctx.config.namespace, id);
                }
                let _ = ctx.local.query_async(&Request::Pipe(pipe)).await;
                events::publish(
                    ctx,
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
                    outbox::record(&mut pipe, &ctx.config.namespace, &job.id, &json, due);
                    if let Err(e) = ctx.local.query_async(&Request::Pipe(pipe)).await {
                        skylog!(Warn, "saving progress of job {}: {e}", job.id);
                    }
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The chain's bundle hash as held by `store`: state and placement fields, raw.
async fn read_bundle(store: &Store, ns: &str, chain: &str) -> Result<HashPairs, CallError> {
    let mut cmd = redis::cmd("HGETALL");
    cmd.arg(keys::bundle(ns, chain));
    let reply = store.query_async(&Request::Cmd(cmd)).await?;
    store::hash_pairs(reply).map_err(|m| store.reply_error(m))
}

async fn announce(ctx: &Context, changes: Vec<Change>) {
    for c in changes {
        match c {
            Change::Loaded {
                origin,
                digest,
                nodes,
                slots,
            } => {
                events::publish(
                    ctx,
                    "topology",
                    json!({"origin": format!("{origin:?}").to_lowercase(),
                           "version": format!("{digest:016x}"), "nodes": nodes, "slots": slots}),
                )
                .await
            }
            Change::Invalid { origin, error } => {
                events::publish(
                    ctx,
                    "topology_invalid",
                    json!({"origin": format!("{origin:?}").to_lowercase(), "error": error}),
                )
                .await
            }
        }
    }
}

/// The live topology (reloaded if due), announcing changes.
pub async fn topology(ctx: &Context) -> Option<Arc<Schedule>> {
    let (topo, changes) = ctx.topology.current(&ctx.local).await;
    announce(ctx, changes).await;
    topo
}

/// The state fields a copy to `target` must carry: this job's own, plus, except on the
/// global store (every put sends its own state there), those whose placement record does
/// not already name `target`.
fn delta(
    state: &HashPairs,
    placement: &[(String, String)],
    own: &[String],
    target: &str,
    is_global: bool,
) -> HashPairs {
    state
        .iter()
        .filter(|(field, _)| {
            let Ok(task) = std::str::from_utf8(field) else {
                return true;
            };
            if own.iter().any(|t| t == task) {
                return true;
            }
            !is_global && !placement.iter().any(|(t, n)| t == task && n == target)
        })
        .cloned()
        .collect()
}

/// The request announcing a copy: `HSET <bundle> @incoming:<job> <until ms>` and, with a
/// bundle TTL, `EXPIRE <bundle> <ttl> NX`, so that a bundle the announcement creates
/// expires like any other if its copy never comes. With no TTL (TTL 0) nothing may expire,
/// so no `EXPIRE` at all: an announcement that gave an existing bundle an expiry made the
/// copies of a "never expire" deployment vanish. (A marker whose copy never comes then
/// stays; readers ignore it once its time has passed.)
fn incoming_marker(
    ns: &str,
    chain: &str,
    field: &str,
    until_ms: u64,
    ttl: Option<Duration>,
) -> Request {
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("HSET")
        .arg(keys::bundle(ns, chain))
        .arg(field)
        .arg(until_ms)
        .ignore();
    if let Some(ttl) = ttl {
        pipe.cmd("EXPIRE")
            .arg(keys::bundle(ns, chain))
            .arg(ttl.as_secs().max(1))
            .arg("NX")
            .ignore();
    }
    Request::Pipe(pipe)
}

/// How long a copy of `bytes` may take: the store deadline plus the transfer time at the
/// slowest acceptable rate (`SKYLARK_COPY_MIN_MBPS`; 1 Mbit/s = 125 bytes/ms).
pub fn copy_deadline(timeout: Duration, bytes: usize, min_mbps: f64) -> Duration {
    let transfer_ms = bytes as f64 / (min_mbps.max(f64::MIN_POSITIVE) * 125.0);
    timeout + Duration::from_millis(transfer_ms.min(86_400_000.0).ceil() as u64)
}

/// Sends the announcement (if any) and the copy back to back on one connection: the small
/// announcement lands first, then the copy (within `deadline`), which removes it.
async fn send_copy(
    store: &Store,
    marker: Option<Request>,
    copy: &Request,
    deadline: Duration,
) -> Result<(), CallError> {
    match marker {
        Some(m) => {
            let (announced, copied) = tokio::join!(
                store.query_async(&m),
                store.query_async_within(copy, deadline)
            );
            if let Err(e) = announced {
                skylog!(Debug, "announcing a copy to {}: {e}", store.name());
            }
            copied.map(|_| ())
        }
        None => store.query_async_within(copy, deadline).await.map(|_| ()),
    }
}

/// The global store, for a host call on the guest's thread (policy `stateless`);
/// `StoreUnavailable` if there is none.
pub fn require_global(ctx: &'static Context) -> Result<Global, CallError> {
    runtime::run(ctx.config.timeout, async move {
        let topo = topology(ctx).await;
        Ok(ctx.nodes.global(topo.as_deref()))
    })?
    .ok_or_else(|| {
        CallError::new(
            skylark_abi::Status::StoreUnavailable,
            "policy stateless needs a global store (a topology with a Cloud node, or SKYLARK_GLOBAL_URL)",
        )
    })
}

/// Delay between a put and its job's election that the SLO check ignores.
const QUEUE_NOISE_MS: u64 = 100;

/// The outcome of an election, by node name.
struct Elected {
    /// The node that should hold the copy (this node's name to keep it local).
    node: String,
    reason: String,
    path: Vec<String>,
    migration_ms: f64,
    slot: Option<usize>,
}

fn elect(
    ctx: &Context,
    topo: Option<&Schedule>,
    global: Option<&str>,
    job: &Job,
    size: u64,
    rng: &mut Rng,
) -> Elected {
    let local = ctx.config.node_name.clone();
    let keep = |reason: &str| Elected {
        node: local.clone(),
        reason: reason.to_string(),
        path: Vec::new(),
        migration_ms: 0.0,
        slot: None,
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
    let Some(dest_name) = job.destination.as_deref().or(global) else {
        return keep("no destination and no global node");
    };
    let Some(dest_id) = t.id(dest_name) else {
        return keep(&format!("destination {dest_name} is not in the topology"));
    };
    let exclude: Vec<u32> = job.exclude.iter().filter_map(|n| t.id(n)).collect();
    let now = now_ms();
    // Time the job spent waiting since the put counts towards the budget once it is more
    // than scheduling noise (a job resumed from the outbox, retried, or re-targeted).
    let waited = match now.saturating_sub(job.put_at_ms) {
        w if w > QUEUE_NOISE_MS => w,
        _ => 0,
    };
    let req = election::Request {
        policy: job.policy,
        local: local_id,
        destination: dest_id,
        size_bytes: size,
        exec_ms: (job.exec_ms + waited) as f64,
        max_latency_ms: job.max_latency_ms as f64,
        min_bandwidth_mbps: job.min_bandwidth_mbps,
        now_ms: now,
        successor_at_ms: (job.put_at_ms + job.successor_in_ms).max(now),
        exclude: &exclude,
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
    }
}

fn backoff(base: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(Duration::from_secs(10))
}

async fn step(
    ctx: &'static Context,
    job: &mut Job,
    failures: &mut HashMap<String, u32>,
    rng: &mut Rng,
) -> Step {
    let p = &ctx.config.propagation;
    let ns = &ctx.config.namespace;
    let local = &ctx.config.node_name;
    let topo = topology(ctx).await;
    let global = ctx.nodes.global(topo.as_deref());
    let global_name = global.as_ref().map(|g| g.name.clone());

    if let Some(ttl) = ctx.config.ttl {
        if now_ms().saturating_sub(job.put_at_ms) > ttl.as_millis() as u64 {
            return Step::Drop("older than the bundle TTL".into());
        }
    }
    // No global store, and either no topology at all or one that names a global node:
    // the copies this job owes are unknown, not absent (the topology is not loaded yet,
    // e.g. the local store was down when it was due, or the global node's address does
    // not resolve). Going on would finish the job with no copy made and drop it from
    // the outbox; wait instead.
    if global.is_none() && topo.as_deref().is_none_or(|t| t.global().is_some()) {
        job.attempts += 1;
        skylog!(
            Info,
            "job {}: no topology or no global store yet; retrying",
            job.id
        );
        return Step::Retry(backoff(p.retry_base, job.attempts));
    }
    let pairs = match read_bundle(&ctx.local, ns, &job.chain).await {
        Ok(r) => r,
        Err(e) => {
            skylog!(Warn, "job {}: reading the local bundle: {e}", job.id);
            job.attempts += 1;
            return Step::Retry(backoff(p.retry_base, job.attempts));
        }
    };
    let size: u64 = pairs.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
    let keys::Split {
        state,
        placement,
        mut versions,
        ..
    } = keys::split(pairs);
    // A field written before versions existed counts as version 0.
    for (field, _) in &state {
        versions.entry(field.clone()).or_insert(0);
    }
    let version = |task: &[u8]| versions.get(task).copied().unwrap_or(0);
    if state.is_empty() {
        return Step::Drop("the bundle is no longer on this node (expired or deleted)".into());
    }

    let target = match &job.target {
        Some(t) => t.clone(),
        None => {
            let e = elect(ctx, topo.as_deref(), global_name.as_deref(), job, size, rng);
            let body = json!({"chain": job.chain, "tasks": job.tasks, "node": local,
                   "policy": job.policy.name(), "elected": e.node, "global": global_name,
                   "path": e.path, "migration_ms": e.migration_ms, "slot": e.slot,
                   "bytes": size, "reason": e.reason, "job": job.id});
            // Off the copy's critical path.
            tokio::spawn(events::publish(ctx, "placement", body));
            skylog!(Debug, "job {}: elected {} ({})", job.id, e.node, e.reason);
            job.target = Some(e.node.clone());
            e.node
        }
    };

    let mut targets: Vec<String> = Vec::new();
    if &target != local && Some(&target) != global_name.as_ref() {
        targets.push(target.clone());
    }
    if let Some(g) = &global_name {
        if g != local {
            targets.push(g.clone());
        }
    }
    targets.retain(|t| !job.done.contains(t));

    // Earlier puts' placement entries travel with the copy; this job's tasks point at
    // the node it elected, and so do the tasks whose node a clean-up will empty (the copy
    // to the target carries them: the placement does not name the target for them).
    let swept = swept_nodes(job, &target, &placement, global_name.as_deref(), local);
    let record: Vec<(&str, &str)> = placement
        .iter()
        .filter(|(t, _)| !job.tasks.contains(t))
        .map(|(t, n)| {
            let n = if swept.contains(n) { &target } else { n };
            (t.as_str(), n.as_str())
        })
        .chain(job.tasks.iter().map(|t| (t.as_str(), target.as_str())))
        .collect();
    let wait = p.incoming_wait;
    let mut copies = tokio::task::JoinSet::new();
    for name in &targets {
        let is_global = Some(name) == global_name.as_ref();
        let fields = delta(&state, &placement, &job.tasks, name, is_global);
        let bytes: usize = fields.iter().map(|(f, v)| f.len() + v.len()).sum();
        let deadline = copy_deadline(ctx.config.timeout, bytes, p.copy_min_mbps);
        let stamped: Vec<fence::Stamped> = fields
            .iter()
            .map(|(f, v)| (f.as_slice(), version(f), v.as_slice()))
            .collect();
        let placed: Vec<fence::Placed> = record
            .iter()
            .map(|(t, n)| (*t, version(t.as_bytes()), *n))
            .collect();
        let announced = (!wait.is_zero()).then(|| keys::incoming_field(&job.id));
        let copy = fence::copy(
            &keys::bundle(ns, &job.chain),
            &stamped,
            &placed,
            ctx.config.ttl,
            announced.as_deref(),
        );
        let marker = announced.map(|field| {
            incoming_marker(
                ns,
                &job.chain,
                &field,
                now_ms() + wait.as_millis() as u64,
                ctx.config.ttl,
            )
        });
        let store = match &global {
            Some(g) if is_global => Ok(Arc::clone(&g.store)),
            _ => ctx.nodes.store(topo.as_deref(), name),
        };
        let req = Request::Cmd(copy);
        let name = name.clone();
        copies.spawn(async move {
            let r = match store {
                Ok(s) => send_copy(&s, marker, &req, deadline).await,
                Err(m) => Err(CallError::new(skylark_abi::Status::StoreUnavailable, m)),
            };
            (name, r)
        });
    }
    let round = join_copies(&mut copies, &job.id).await;
    stats::add(Counter::Copies, round.copied.len() as u64);
    job.done.extend(round.copied.iter().cloned());
    if round.copied.contains(&target) {
        job.carried = versions
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
            &target,
            global_name.as_deref(),
        )
        .await;
    }
    if !round.made_all(&targets) {
        // A copy task panicked or was cancelled: its copy is not known to exist. Try again
        // later rather than finish the job and drop it from the outbox.
        job.attempts += 1;
        return Step::Retry(backoff(p.retry_base, job.attempts));
    }
    // What the target holds: the versions its copy carried (an earlier round's copy may
    // be older than this round's read), or all of the bundle when it is this node.
    let at_target: keys::Versions = if &target == local {
        versions
    } else {
        job.carried
            .iter()
            .map(|(t, v)| (t.clone().into_bytes(), *v))
            .collect()
    };
    finish(ctx, job, &target, &placement, &at_target, swept).await;
    Step::Done
}

/// What one round of copies achieved.
#[derive(Debug, Default)]
struct Round {
    /// Targets whose copy this round made.
    copied: Vec<String>,
    /// Targets whose copy failed, with the error.
    failed: Vec<(String, CallError)>,
    /// Copy tasks that ended without a result (panicked or cancelled).
    lost: usize,
}

impl Round {
    /// Whether this round made a copy on every one of its `targets`: counted from this
    /// round's own results, never from the job's earlier successes.
    fn made_all(&self, targets: &[String]) -> bool {
        self.failed.is_empty() && self.lost == 0 && targets.iter().all(|t| self.copied.contains(t))
    }
}

/// Waits for every copy task of a round and sorts their outcomes.
async fn join_copies(
    copies: &mut tokio::task::JoinSet<(String, Result<(), CallError>)>,
    job_id: &str,
) -> Round {
    let mut round = Round::default();
    while let Some(joined) = copies.join_next().await {
        match joined {
            Ok((name, Ok(()))) => round.copied.push(name),
            Ok((name, Err(e))) => round.failed.push((name, e)),
            Err(e) => {
                skylog!(Error, "job {job_id}: copy task ended without a result: {e}");
                round.lost += 1;
            }
        }
    }
    round
}

async fn retry(
    ctx: &Context,
    job: &mut Job,
    failures: &mut HashMap<String, u32>,
    failed: Vec<(String, CallError)>,
    target: &str,
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
        events::publish(
            ctx,
            "retry",
            json!({"chain": job.chain, "job": job.id, "node": name, "attempt": *n,
                   "error": e.message}),
        )
        .await;
        if name == target && Some(name.as_str()) != global && *n >= p.retries {
            // The elected node stays unreachable: elect again without it.
            stats::inc(Counter::Retargets);
            stats::inc(Counter::Failures);
            job.exclude.push(name.clone());
            job.target = None;
            job.carried.clear();
            events::publish(
                ctx,
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
/// [`step`] for the copies' record).
async fn finish(
    ctx: &Context,
    job: &Job,
    target: &str,
    placement: &[(String, String)],
    at_target: &keys::Versions,
    swept: Vec<String>,
) {
    let ns = &ctx.config.namespace;
    let took = now_ms().saturating_sub(job.put_at_ms);
    stats::observe_propagation(took);
    let version = |task: &str| at_target.get(task.as_bytes()).copied().unwrap_or(0);
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
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.add_command(fence::copy(
        &keys::bundle(ns, &job.chain),
        &[],
        &placed,
        ctx.config.ttl,
        None,
    ))
    .ignore();
    for id in job.ids() {
        outbox::remove(&mut pipe, ns, id);
    }
    if let Err(e) = ctx.local.query_async(&Request::Pipe(pipe)).await {
        // The copies are in place; the job will run again (harmlessly) from the outbox.
        skylog!(Warn, "job {}: removing it from the outbox: {e}", job.id);
    }
    events::publish(
        ctx,
        "propagated",
        json!({"chain": job.chain, "job": job.id, "tasks": job.tasks, "node": ctx.config.node_name,
               "elected": target, "copies": job.done, "ms": took}),
    )
    .await;
    cleanup(ctx, job, at_target, swept).await;
}

/// The nodes a put with the `cleanup` option empties: those the placement record names
/// for other tasks (nodes earlier puts elected), except this job's target, the global
/// store and this node. None for a put without the option.
fn swept_nodes(
    job: &Job,
    target: &str,
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
        .filter(|n| n != target && Some(n.as_str()) != global && n != local)
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

/// Deletes the chain's copies on the `swept` nodes ([`swept_nodes`]; best effort, they
/// expire anyway): of each task, only a copy no newer than the one the job's target holds
/// (`versions`), so a clean-up delivered late never deletes newer state. The placement
/// record no longer names these nodes: [`finish`] moved their tasks to the target.
async fn cleanup(ctx: &Context, job: &Job, versions: &keys::Versions, swept: Vec<String>) {
    if swept.is_empty() {
        return;
    }
    let ns = &ctx.config.namespace;
    let topo = topology(ctx).await;
    let seen: Vec<(&[u8], u64)> = versions.iter().map(|(t, v)| (t.as_slice(), *v)).collect();
    for node in swept {
        let store = match ctx.nodes.store(topo.as_deref(), &node) {
            Ok(s) => s,
            Err(e) => {
                skylog!(Info, "cleanup of {node}: {e}");
                continue;
            }
        };
        let del = fence::sweep(&keys::bundle(ns, &job.chain), &seen);
        match store.query_async(&Request::Cmd(del)).await {
            Ok(_) => {
                stats::inc(Counter::Cleanups);
                events::publish(
                    ctx,
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

    #[test]
    fn a_cleanup_sweeps_nodes_of_other_tasks_but_never_its_own_targets() {
        let mut job = Job {
            id: "j".into(),
            chain: "c".into(),
            tasks: vec!["t2".into()],
            origin: "me".into(),
            policy: Policy::Skylark,
            destination: None,
            max_latency_ms: 0,
            min_bandwidth_mbps: 0.0,
            exec_ms: 0,
            successor_in_ms: 0,
            put_at_ms: 0,
            cleanup: true,
            target: None,
            done: Vec::new(),
            exclude: Vec::new(),
            carried: Default::default(),
            attempts: 0,
            merged: Vec::new(),
        };
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
            swept_nodes(&job, "n2", &placement, Some("g"), "me"),
            ["n1".to_string()]
        );
        job.cleanup = false;
        assert!(swept_nodes(&job, "n2", &placement, Some("g"), "me").is_empty());
    }

    fn dies() -> (String, Result<(), CallError>) {
        panic!("a copy task that panics (expected in this test)")
    }

    #[test]
    fn a_round_counts_only_its_own_copies() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a test runtime");
        rt.block_on(async {
            // An earlier round copied to the global store ("cloud"), so the job's all-time
            // successes number 1; this round's only target, the elected node, has its copy
            // task panic, then cancelled. Neither round made its copy.
            let earlier_done = ["cloud".to_string()];
            let targets = vec!["sat-b".to_string()];
            let mut copies = tokio::task::JoinSet::new();
            copies.spawn(async { dies() });
            let round = join_copies(&mut copies, "j1").await;
            assert_eq!((round.copied.len(), round.lost), (0, 1));
            assert!(earlier_done.len() >= targets.len());
            assert!(!round.made_all(&targets), "a panicked copy counted as made");

            let mut copies = tokio::task::JoinSet::new();
            copies
                .spawn(async { std::future::pending::<(String, Result<(), CallError>)>().await })
                .abort();
            let round = join_copies(&mut copies, "j1").await;
            assert_eq!(round.lost, 1);
            assert!(
                !round.made_all(&targets),
                "a cancelled copy counted as made"
            );

            // A failed copy is not made either; a successful one is.
            let mut copies = tokio::task::JoinSet::new();
            copies.spawn(async {
                (
                    "sat-b".to_string(),
                    Err(CallError::new(
                        skylark_abi::Status::StoreUnavailable,
                        "down",
                    )),
                )
            });
            assert!(!join_copies(&mut copies, "j1").await.made_all(&targets));
            let mut copies = tokio::task::JoinSet::new();
            copies.spawn(async { ("sat-b".to_string(), Ok(())) });
            assert!(join_copies(&mut copies, "j1").await.made_all(&targets));
        });
    }

    /// Each command of a request as its RESP bytes (lossy text).
    fn packed(r: &Request) -> Vec<String> {
        let text = |c: &redis::Cmd| String::from_utf8_lossy(&c.get_packed_command()).into_owned();
        match r {
            Request::Pipe(p) => p.cmd_iter().map(text).collect(),
            Request::Cmd(c) => vec![text(c)],
        }
    }

    #[test]
    fn writes_give_every_copy_the_configured_ttl_or_none() {
        let key = "ns:bundle:c";
        let mut pipe = redis::pipe();
        store::write_hash(&mut pipe, key, [("t", b"v".as_slice())], None);
        let cmds = packed(&Request::Pipe(pipe));
        assert!(!cmds.iter().any(|c| c.contains("EXPIRE")), "{cmds:?}");

        let mut pipe = redis::pipe();
        store::write_hash(
            &mut pipe,
            key,
            [("t", b"v".as_slice())],
            Some(Duration::from_secs(90)),
        );
        let cmds = packed(&Request::Pipe(pipe));
        assert!(
            cmds.iter()
                .any(|c| c.contains("EXPIRE") && c.contains("\r\n90\r\n")),
            "{cmds:?}"
        );

        // The announcement of a copy: an expiry only with a TTL, and only NX.
        let m = packed(&incoming_marker("ns", "c", "@incoming:j", 1, None));
        assert!(!m.iter().any(|c| c.contains("EXPIRE")), "{m:?}");
        let m = packed(&incoming_marker(
            "ns",
            "c",
            "@incoming:j",
            1,
            Some(Duration::from_secs(90)),
        ));
        assert!(
            m.iter()
                .any(|c| c.contains("EXPIRE") && c.contains("\r\n90\r\n") && c.contains("NX")),
            "{m:?}"
        );
    }

    #[test]
    fn copy_deadlines_grow_with_size() {
        let t = Duration::from_millis(2000);
        assert_eq!(copy_deadline(t, 0, 5.0), t);
        // 10 MB at 5 Mbit/s (625 bytes/ms): 16 s more.
        assert_eq!(
            copy_deadline(t, 10_000_000, 5.0),
            Duration::from_millis(18_000)
        );
        assert_eq!(copy_deadline(t, 1, 5.0), Duration::from_millis(2001));
        // Absurd inputs stay finite.
        assert!(copy_deadline(t, usize::MAX, 0.0) <= t + Duration::from_secs(86_400));
    }

    #[test]
    fn queue_slots_and_flush() {
        let e = Engine::new(2);
        assert!(e.reserve());
        assert!(e.reserve());
        assert!(!e.reserve(), "the queue holds 2");
        assert!(!e.flush(Duration::from_millis(20)));
        e.release(2);
        assert!(e.flush(Duration::from_millis(20)));
        assert_eq!(e.reserve_up_to(5), 2);
        assert_eq!(e.free(), 0);
        e.force_reserve(1);
        e.release(3);
        assert_eq!(e.free(), 2);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_millis(100);
        assert_eq!(backoff(b, 1), Duration::from_millis(100));
        assert_eq!(backoff(b, 2), Duration::from_millis(200));
        assert_eq!(backoff(b, 4), Duration::from_millis(800));
        assert_eq!(backoff(b, 40), Duration::from_secs(10));
    }

    #[test]
    fn copies_carry_only_what_the_target_lacks() {
        let state = vec![
            (b"pre".to_vec(), b"image".to_vec()),
            (b"det".to_vec(), b"boxes".to_vec()),
        ];
        let placement = vec![("pre".to_string(), "n2".to_string())];
        let own = vec!["det".to_string()];
        let names = |v: HashPairs| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        // n2 already holds pre (placed there): only det goes.
        assert_eq!(
            names(delta(&state, &placement, &own, "n2", false)),
            [b"det".to_vec()]
        );
        // n3 holds nothing of this chain: everything goes.
        assert_eq!(delta(&state, &placement, &own, "n3", false).len(), 2);
        // The global store got pre from pre's own put.
        assert_eq!(
            names(delta(&state, &placement, &own, "g", true)),
            [b"det".to_vec()]
        );
    }
}
