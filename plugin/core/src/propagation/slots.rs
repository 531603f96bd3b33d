//! The queue slots of background propagation: at most `SKYLARK_QUEUE_LEN` jobs (and
//! tracked sweeps) in flight per process. A taken slot is a [`Slot`] guard that gives the
//! slot back when dropped; the exit flush waits until every slot is back.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The slots of one engine.
pub struct Slots {
    inner: Arc<Inner>,
}

struct Inner {
    cap: usize,
    /// Slots taken (may exceed `cap` by [`Slots::force`]).
    taken: Mutex<usize>,
    /// Notified whenever `taken` drops to zero.
    idle: Condvar,
}

/// One taken slot, given back when dropped.
#[must_use = "dropping a slot gives it back at once"]
pub struct Slot {
    inner: Arc<Inner>,
}

impl Inner {
    fn taken(&self) -> MutexGuard<'_, usize> {
        self.taken
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Slots {
    /// `cap` slots (at least one).
    pub fn new(cap: usize) -> Slots {
        Slots {
            inner: Arc::new(Inner {
                cap: cap.max(1),
                taken: Mutex::new(0),
                idle: Condvar::new(),
            }),
        }
    }

    fn slot(&self) -> Slot {
        Slot {
            inner: Arc::clone(&self.inner),
        }
    }

    /// A slot if one is free.
    pub fn try_take(&self) -> Option<Slot> {
        let mut taken = self.inner.taken();
        if *taken >= self.inner.cap {
            return None;
        }
        *taken += 1;
        Some(self.slot())
    }

    /// A slot even beyond the capacity: work already claimed must be tracked.
    pub fn force(&self) -> Slot {
        *self.inner.taken() += 1;
        self.slot()
    }

    /// Free slots right now (a snapshot).
    pub fn free(&self) -> usize {
        self.inner.cap.saturating_sub(*self.inner.taken())
    }

    /// Waits until every slot is back, at most `deadline`; true if they all are.
    pub fn wait_idle(&self, deadline: Duration) -> bool {
        let taken = self.inner.taken();
        let (taken, _) = self
            .inner
            .idle
            .wait_timeout_while(taken, deadline, |n| *n > 0)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *taken == 0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut taken = self.inner.taken();
        *taken = taken.saturating_sub(1);
        if *taken == 0 {
            self.inner.idle.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_slots_and_flush() {
        let s = Slots::new(2);
        let a = s.try_take().expect("a first slot");
        let b = s.try_take().expect("a second slot");
        assert!(s.try_take().is_none(), "the queue holds 2");
        assert!(!s.wait_idle(Duration::from_millis(20)));
        drop((a, b));
        assert!(s.wait_idle(Duration::from_millis(20)));
        let taken: Vec<Slot> = (0..5).filter_map(|_| s.try_take()).collect();
        assert_eq!((taken.len(), s.free()), (2, 0));
        let forced = s.force();
        drop(taken);
        assert_eq!(s.free(), 1, "the forced slot is still out");
        drop(forced);
        assert_eq!(s.free(), 2);
    }

    #[test]
    fn a_slot_is_given_back_on_every_path() {
        let s = Slots::new(1);
        let fail = |slot: Slot| -> Result<(), ()> {
            let _held = slot;
            Err(())
        };
        assert!(fail(s.try_take().expect("a slot")).is_err());
        assert_eq!(s.free(), 1, "an early return gave the slot back");
        let t = std::thread::spawn({
            let slot = s.try_take().expect("a slot");
            move || drop(slot)
        });
        assert!(s.wait_idle(Duration::from_secs(5)));
        t.join().expect("the thread ends");
    }
}
