//! The propagation engine of a process: its queue slots, the chains with a job running
//! (and the job waiting behind each), the outbox sweeper, and job submission.

use super::exit;
use super::job;
use super::lease::{Hold, Leases};
use super::slots::{Slot, Slots};
use crate::clock::now_ms;
use crate::cluster::Cluster;
use crate::outbox::{self, Claimed, Job};
use crate::stats::{self, Counter};
use crate::store::Request;
use crate::{runtime, skylog};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A job waiting behind the running one of its chain, with the slot and leases it holds.
type Waiting = Option<(Job, Slot, Hold<'static>)>;

/// Background propagation of one process.
pub struct Engine {
    /// The stores, topology and event publisher the jobs work with.
    cluster: Arc<Cluster>,
    /// Jobs and other tracked background work (sweeps) in flight.
    slots: Slots,
    /// The outbox leases of the jobs submitted here and not done yet.
    leases: Leases,
    /// Set when jobs may be waiting in the outbox (a put overflowed, or a sweep filled
    /// the queue): a finishing job then sweeps at once instead of waiting for the timer.
    backlog: AtomicBool,
    /// Chains with a job running, and the job waiting to run after it.
    chains: Mutex<HashMap<String, Waiting>>,
}

impl Engine {
    /// An engine of `cap` queue slots working on `cluster`; nothing runs before
    /// [`Engine::start`].
    pub fn new(cluster: Arc<Cluster>, cap: usize) -> Engine {
        Engine {
            cluster,
            slots: Slots::new(cap),
            leases: Leases::default(),
            backlog: AtomicBool::new(false),
            chains: Mutex::new(HashMap::new()),
        }
    }

    /// The stores, topology and event publisher this engine works with.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn chains(&self) -> MutexGuard<'_, HashMap<String, Waiting>> {
        self.chains
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A queue slot for a job, if there is room.
    pub fn reserve(&self) -> Option<Slot> {
        self.slots.try_take()
    }

    /// Notes that jobs wait in the outbox (a put found the queue full).
    pub fn note_backlog(&self) {
        self.backlog.store(true, Ordering::Relaxed);
    }

    fn take_backlog(&self) -> bool {
        self.backlog.swap(false, Ordering::Relaxed)
    }

    /// Waits until no job is in flight, at most `deadline`; true if all finished.
    pub fn flush(&self, deadline: Duration) -> bool {
        self.slots.wait_idle(deadline)
    }

    /// Starts the outbox sweeper and registers the exit flush. Called once per process.
    pub fn start(&'static self) {
        let ctx = self.cluster();
        let Ok(rt) = runtime::handle() else {
            skylog!(
                Error,
                "no runtime: propagation will only happen in later processes"
            );
            return;
        };
        exit::register(&self.slots, &self.leases, ctx);
        rt.spawn(self.leases.renew_forever(ctx));
        // Connect to the global store (every job's target) while the guest still runs.
        rt.spawn(async move {
            let topo = ctx.current_topology().await;
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
        let mut held = Some(self.slots.force());
        rt.spawn(async move {
            loop {
                // The first sweep may use the slot it holds.
                sweep(self, usize::from(held.is_some())).await;
                exit::flush_stats(ctx).await;
                drop(held.take());
                tokio::time::sleep(ctx.config.propagation.sweep).await;
            }
        });
    }

    /// Runs `job` in the background, holding `slot` (from [`Engine::reserve`]) while it
    /// runs.
    ///
    /// Jobs of one chain run one after the other, so that an older snapshot of a bundle
    /// never lands after a newer one. A job submitted while another of its chain runs
    /// waits; further jobs of that chain merge into the waiting one (giving their slot
    /// back), so a burst of puts costs one copy of the latest bundle.
    pub fn submit(&'static self, job: Job, slot: Slot) {
        let chain = job.chain.clone();
        // Its lease is renewed from now on, while it waits behind its chain too.
        let hold = self.leases.hold(job.ids().map(str::to_string).collect());
        {
            let mut chains = self.chains();
            if let Some(waiting) = chains.get_mut(&chain) {
                match waiting {
                    Some((w, _, h)) => {
                        w.absorb(job);
                        h.absorb(hold);
                        drop(chains);
                        stats::inc(Counter::Coalesced);
                        drop(slot);
                    }
                    None => *waiting = Some((job, slot, hold)),
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
                return;
            }
        };
        let engine = self;
        let ctx = self.cluster();
        rt.spawn(async move {
            let mut next = Some((job, slot, hold));
            while let Some((mut job, slot, mut hold)) = next {
                // Let a burst of puts of this chain gather into one copy.
                let linger = ctx.config.propagation.linger;
                if !linger.is_zero() {
                    tokio::time::sleep(linger).await;
                }
                // Jobs that arrived while lingering wait in the chain's slot: fold them
                // in and give their queue slot back.
                let waiting = engine.chains().get_mut(&chain).and_then(Option::take);
                if let Some((waiting, its_slot, its_hold)) = waiting {
                    job.absorb(waiting);
                    hold.absorb(its_hold);
                    stats::inc(Counter::Coalesced);
                    drop(its_slot);
                }
                job::run(ctx, job).await;
                drop(hold);
                // Still holding this job's slot: the sweep may hand it on, so the exit
                // flush keeps waiting while a backlog drains.
                if engine.take_backlog() {
                    sweep(engine, 1).await;
                }
                drop(slot);
                let mut chains = engine.chains();
                next = chains.get_mut(&chain).and_then(Option::take);
                if next.is_none() {
                    chains.remove(&chain);
                }
            }
        });
    }
}

/// Claims due outbox jobs (as many as the queue has room for, plus `held` slots the
/// caller holds and is about to give back) and runs them.
async fn sweep(engine: &'static Engine, held: usize) {
    let ctx = engine.cluster();
    let p = &ctx.config.propagation;
    // Claim no more than there is room for now; puts racing with the claim may push the
    // count past the capacity by a little, which is harmless.
    let room = engine.slots.free() + held;
    if room == 0 {
        engine.note_backlog();
        return;
    }
    let now = now_ms();
    let lease_until = now + p.lease.as_millis() as u64;
    let claimed = outbox::claim(&ctx.local, &ctx.config.namespace, now, lease_until, room).await;
    let claimed = match claimed {
        Ok(c) => c,
        Err(e) => {
            skylog!(Warn, "sweeping the outbox: {e}");
            return;
        }
    };
    if claimed.len() == room {
        // There may be more.
        engine.note_backlog();
    }
    // Claimed work is tracked even beyond the capacity.
    let slots: Vec<Slot> = claimed.iter().map(|_| engine.slots.force()).collect();
    for (c, slot) in claimed.into_iter().zip(slots) {
        match c {
            Claimed::Job(job) => {
                stats::inc(Counter::Resumed);
                skylog!(Info, "resuming job {} of chain {}", job.id, job.chain);
                engine.submit(*job, slot);
            }
            Claimed::Invalid { id, reason } => {
                skylog!(
                    Warn,
                    "outbox job {id} is unreadable ({reason}); removing it"
                );
                stats::inc(Counter::Dropped);
                let mut pipe = redis::pipe();
                outbox::remove(&mut pipe, &ctx.config.namespace, [id.as_str()]);
                let _ = ctx.local.query_async(&Request::Pipe(pipe)).await;
                ctx.events
                    .publish("job_invalid", json!({"job": id, "reason": reason}))
                    .await;
                drop(slot);
            }
        }
    }
}
