//! The leases of the outbox jobs a process works on. A job's due time in the outbox is
//! its lease: no other process claims it before. The lease is renewed while this process
//! runs the job (every third of `SKYLARK_LEASE_MS`), so a job whose copies take longer
//! than a lease (a large state on a loaded link) is not claimed and copied again by the
//! next process on the node; and released when this process gives the job up at exit
//! (the exit flush ran out), so the next process on the node claims it at once instead of
//! after the rest of the lease.

use crate::clock::now_ms;
use crate::cluster::Cluster;
use crate::outbox;
use crate::skylog;
use crate::store::Request;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The outbox ids of the jobs this process runs, each with the number of holders.
#[derive(Default)]
pub(super) struct Leases {
    held: Mutex<HashMap<String, usize>>,
    /// Set at exit when the held leases were released: no renewal after that.
    released: AtomicBool,
}

/// A held lease on some jobs: given up (no longer renewed) when dropped.
#[must_use = "dropping the hold gives the jobs' leases up at once"]
pub(super) struct Hold<'a> {
    leases: &'a Leases,
    ids: Vec<String>,
}

impl Leases {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Holds the leases of jobs `ids` (renewed until the hold is dropped).
    pub fn hold(&self, ids: Vec<String>) -> Hold<'_> {
        let mut held = self.held();
        for id in &ids {
            *held.entry(id.clone()).or_insert(0) += 1;
        }
        Hold { leases: self, ids }
    }

    /// The ids held now.
    fn ids(&self) -> Vec<String> {
        self.held().keys().cloned().collect()
    }

    /// Renews the held leases until one lease from now, every third of a lease, for as
    /// long as the process runs (on the runtime).
    pub async fn renew_forever(&self, ctx: &Cluster) {
        let lease = ctx.config.propagation.lease;
        loop {
            tokio::time::sleep(lease / 3).await;
            if self.released.load(Ordering::SeqCst) {
                return;
            }
            let ids = self.ids();
            if ids.is_empty() {
                continue;
            }
            let due = now_ms() + lease.as_millis() as u64;
            let cmd = outbox::renew(&ctx.config.namespace, &ids, due);
            if let Err(e) = ctx.local.query_async(&Request::Cmd(cmd)).await {
                skylog!(Info, "renewing the leases of {} job(s): {e}", ids.len());
            }
        }
    }

    /// Makes the held jobs claimable now (on the calling thread; at exit, when this
    /// process stops working on them); returns how many were held.
    pub fn release_blocking(&self, ctx: &Cluster) -> usize {
        self.released.store(true, Ordering::SeqCst);
        let ids = self.ids();
        if ids.is_empty() {
            return 0;
        }
        let mut pipe = redis::pipe();
        outbox::release(&mut pipe, &ctx.config.namespace, &ids, now_ms());
        if let Err(e) = ctx.local.query(&Request::Pipe(pipe)) {
            skylog!(
                Info,
                "releasing {} job(s) at exit: {e}; they wait for their lease to run out",
                ids.len()
            );
        }
        ids.len()
    }
}

impl Hold<'_> {
    /// Takes over the leases `other` holds (a job merged into this hold's job).
    pub fn absorb(&mut self, mut other: Hold<'_>) {
        self.ids.append(&mut other.ids);
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let mut held = self.leases.held();
        for id in &self.ids {
            if let Some(n) = held.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    held.remove(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_held_until_its_last_holder_drops_it() {
        let leases = Leases::default();
        let a = leases.hold(vec!["j1".into(), "j2".into()]);
        let b = leases.hold(vec!["j2".into()]);
        let mut ids = leases.ids();
        ids.sort();
        assert_eq!(ids, ["j1", "j2"]);
        drop(a);
        assert_eq!(leases.ids(), ["j2"]);
        let mut c = leases.hold(vec!["j3".into()]);
        c.absorb(b);
        let mut ids = leases.ids();
        ids.sort();
        assert_eq!(ids, ["j2", "j3"], "absorbing keeps the leases held");
        drop(c);
        assert!(leases.ids().is_empty());
    }
}
