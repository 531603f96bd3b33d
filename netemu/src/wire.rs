//! Shared links: one [`Wire`] per direction of a physical link, and the [`Route`] a
//! connection takes over them.
//!
//! A wire is a FIFO transmitter with the [`LinkSpec`] of its link. Every flow whose route
//! crosses it reserves transmission time on the same timeline, so two flows on one
//! 40 Mbit/s wire each get about 20 Mbit/s, whichever node pairs they connect. A chunk
//! reserves every wire of its route, hop by hop, for the same window, as small packets
//! pipeline through a multi-hop path (cut-through): it starts when it is read (a new
//! connection's first bytes: when its handshake ends, see [`crate::linkemu`]) and every
//! wire on its route is free, occupies each wire for its own serialization time, and
//! arrives after the slowest wire's serialization plus every wire's latency and jitter
//! sample. A multi-hop flow therefore runs at its bottleneck, its delay is the sum of its
//! links' delays, and flows that meet on any one wire queue behind each other there.
//! Reservations across wires are atomic (one process-wide lock, held for microseconds).
//!
//! Jitter is netem's default: uniform in `[-jitter, +jitter]` around the latency, so the
//! delay's standard deviation is `jitter / sqrt(3)` per wire ([`LinkSpec::delay_std_ms`]);
//! each wire draws from its own small seeded PRNG, so runs are repeatable.

use crate::linkemu::LinkSpec;
use skylark_testkit::Rng;
use std::sync::{Arc, Mutex, MutexGuard};

/// Held while a chunk reserves its wires, so that a reservation over several wires sees
/// and updates them all at once (per-wire locks alone could interleave, or deadlock if
/// taken in different orders).
static RESERVING: Mutex<()> = Mutex::new(());
use std::time::Duration;
use tokio::time::Instant;

/// One direction of a physical link, shared by every flow routed over it.
pub struct Wire {
    state: Mutex<WireState>,
}

/// The wire's characteristics and timeline.
struct WireState {
    spec: LinkSpec,
    /// When the wire finishes transmitting everything reserved so far.
    free_at: Instant,
    rng: Rng,
}

impl Wire {
    /// A wire with `spec` (sanitized like [`LinkSpec::validate`] describes) whose jitter
    /// comes from a PRNG seeded with `seed`.
    pub fn new(spec: LinkSpec, seed: u64) -> Arc<Wire> {
        Arc::new(Wire {
            state: Mutex::new(WireState {
                spec: spec.sanitized(),
                free_at: Instant::now(),
                rng: Rng::new(seed),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, WireState> {
        // The state stays consistent across a panic elsewhere: every update is one store.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The wire's characteristics.
    pub fn spec(&self) -> LinkSpec {
        self.lock().spec
    }

    /// Changes the characteristics; time already reserved stays reserved.
    pub fn set(&self, spec: LinkSpec) {
        self.lock().spec = spec.sanitized();
    }

    /// When the wire has sent everything reserved so far.
    fn free_at(&self) -> Instant {
        self.lock().free_at
    }

    /// Reserves the wire for `bytes` from `start` (not before it is free): returns their
    /// serialization time and one sample of the wire's delay.
    fn reserve(&self, bytes: usize, start: Instant) -> (Duration, Duration) {
        let mut guard = self.lock();
        let s = &mut *guard;
        let busy = s.spec.serialization(bytes);
        s.free_at = s.free_at.max(start) + busy;
        (busy, s.spec.one_way_delay(&mut s.rng))
    }

    /// One sample of the wire's propagation delay (latency and jitter, no bandwidth).
    fn delay_sample(&self) -> Duration {
        let mut guard = self.lock();
        let s = &mut *guard;
        s.spec.one_way_delay(&mut s.rng)
    }
}

/// The wires one direction of a connection crosses, in order; empty is a perfect link.
#[derive(Clone, Default)]
pub struct Hops(Vec<Arc<Wire>>);

/// How long a chunk queues behind other chunks on its wires, and when it reaches the end
/// of its hops.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sent {
    pub(crate) queued: Duration,
    pub(crate) arrival: Instant,
}

impl Hops {
    /// Hops over `wires`, in the order a byte crosses them.
    pub fn new(wires: Vec<Arc<Wire>>) -> Hops {
        Hops(wires)
    }

    /// The wires, in order.
    pub fn wires(&self) -> &[Arc<Wire>] {
        &self.0
    }

    /// What the hops amount to as one link: summed latency, jitter in quadrature
    /// (independent per-wire jitter), bottleneck bandwidth; ideal for no hops.
    pub fn summary(&self) -> LinkSpec {
        if let [one] = self.0.as_slice() {
            return one.spec();
        }
        let mut spec = LinkSpec::ideal();
        let mut variance = 0.0;
        for wire in &self.0 {
            let link = wire.spec();
            spec.latency_ms += link.latency_ms;
            variance += link.jitter_ms * link.jitter_ms;
            spec.bandwidth_mbps = match (spec.bandwidth_mbps, link.bandwidth_mbps) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        spec.jitter_ms = f64::sqrt(variance);
        spec
    }

    /// Sends `bytes` that enter the first wire at `at` across every hop.
    pub(crate) fn send(&self, bytes: usize, at: Instant) -> Sent {
        let _reserving = RESERVING.lock().unwrap_or_else(|p| p.into_inner());
        let start = self.0.iter().map(|w| w.free_at()).fold(at, Instant::max);
        let mut slowest = Duration::ZERO;
        let mut delay = Duration::ZERO;
        for wire in &self.0 {
            let (busy, sample) = wire.reserve(bytes, start);
            slowest = slowest.max(busy);
            delay += sample;
        }
        Sent {
            queued: start - at,
            arrival: start + slowest + delay,
        }
    }

    /// One sample of the hops' one-way propagation delay.
    pub(crate) fn delay_sample(&self) -> Duration {
        self.0.iter().map(|w| w.delay_sample()).sum()
    }

    /// Largest read to forward as one chunk: the smallest chunk any wire wants.
    pub(crate) fn chunk_limit(&self) -> usize {
        self.0
            .iter()
            .map(|w| w.spec().chunk_limit())
            .min()
            .unwrap_or_else(|| LinkSpec::ideal().chunk_limit())
    }
}

/// Both directions of a connection: client to server and back.
#[derive(Clone, Default)]
pub struct Route {
    /// The wires from the client's node to the server's node.
    pub up: Hops,
    /// The wires from the server's node back to the client's node.
    pub down: Hops,
}

impl Route {
    /// A perfect route: no wires either way.
    pub fn ideal() -> Route {
        Route::default()
    }

    /// A route over `up` (wires in order from the client) and back over `down` (in order
    /// from the server).
    pub fn new(up: Vec<Arc<Wire>>, down: Vec<Arc<Wire>>) -> Route {
        Route {
            up: Hops::new(up),
            down: Hops::new(down),
        }
    }

    /// One sample of the round trip a TCP handshake pays: SYN there, SYN-ACK back.
    pub(crate) fn handshake(&self) -> Duration {
        self.up.delay_sample() + self.down.delay_sample()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_on_one_wire_queue_behind_each_other() {
        // 8 Mbit/s moves 1000 bytes per millisecond.
        let wire = Wire::new(LinkSpec::new(5.0, 0.0, Some(8.0)), 1);
        let hops = Hops::new(vec![Arc::clone(&wire)]);
        let now = Instant::now();
        let a = hops.send(10_000, now);
        let b = hops.send(10_000, now);
        assert_eq!(a.queued, Duration::ZERO);
        assert_eq!(b.queued, Duration::from_millis(10));
        assert_eq!(b.arrival, now + Duration::from_millis(25));
    }

    #[test]
    fn hops_pipeline_at_the_bottleneck_and_sum_delays() {
        let fast = LinkSpec::new(2.0, 0.0, Some(80.0));
        let slow = LinkSpec::new(3.0, 0.0, Some(8.0));
        let hops = Hops::new(vec![Wire::new(fast, 1), Wire::new(slow, 2)]);
        let now = Instant::now();
        // 10 kB: 10 ms on the slow wire (1 ms on the fast one, in the same window), then
        // 2 + 3 ms latency; the next chunk waits for the slow wire.
        let sent = hops.send(10_000, now);
        assert_eq!(sent.arrival, now + Duration::from_millis(15));
        let next = hops.send(10_000, now);
        assert_eq!(next.queued, Duration::from_millis(10));
        let s = hops.summary();
        assert_eq!((s.latency_ms, s.bandwidth_mbps), (5.0, Some(8.0)));
        assert_eq!(Hops::default().summary(), LinkSpec::ideal());
        assert_eq!(hops.chunk_limit(), slow.chunk_limit());
    }
}
