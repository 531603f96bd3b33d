//! The emulated network: what it reproduces ([`NetOptions`]), the shared wires (one per
//! direction of every physical link of the schedule), the route each proxy takes over
//! them in a slot, the proxies themselves (one per ordered pair of nodes, on one shared
//! tokio runtime) and the thread that re-routes them at every slot boundary.

use crate::linkemu::{LinkEmu, LinkMode, LinkSpec};
use crate::wire::{Route, Wire};
use skylark_core::topology::{Link, NodeType, Schedule};
use skylark_testkit::{now_ms, Redis};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Slot length written to the topology document when a slot is pinned
/// ([`NetOptions::fixed_slot`]): the pinned slot stays current this long (a day).
pub const PINNED_SLOT_MS: u64 = 24 * 3600 * 1000;

/// How long a pinned slot has already been current when the constellation starts, so
/// that a clock a little behind still sees it.
pub(super) const PINNED_LEAD_MS: u64 = 60_000;

/// Bandwidth the document gives a link that [`NetOptions`] leaves unlimited (the
/// document format needs a number): 100 Gbit/s.
pub const UNLIMITED_MBPS: f64 = 100_000.0;

/// Worker threads of the runtime all proxies share.
pub(super) const PROXY_WORKERS: usize = 2;

/// The network the emulation reproduces.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetOptions {
    /// Slot length in ms: 60 000 is the testbed's real minute; smaller accelerates the
    /// constellation's motion. With `fixed_slot`, slots last at least [`PINNED_SLOT_MS`].
    pub slot_ms: u64,
    /// A link between two satellites (or any link not touching a `Cloud` node).
    pub sat_sat: LinkSpec,
    /// A link touching the cloud node.
    pub cloud_sat: LinkSpec,
    /// Pins slot `n` (for tests): the document's slots last [`PINNED_SLOT_MS`] and its
    /// epoch makes slot `n` current from start on, for about that long.
    pub fixed_slot: Option<usize>,
    /// What the proxies emulate.
    pub links: Links,
}

/// What the proxies between the nodes do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Links {
    /// Each proxy routes over the shared wires of its path in the current slot (see the
    /// module documentation).
    #[default]
    Paths,
    /// Every proxy forwards at once, whatever the document says; a proxy is cut only
    /// where the slot leaves its target unreachable, or by a fault. For tests that
    /// shape or cut the links to a node themselves ([`Constellation::shape_links_to`],
    /// [`Constellation::cut_links_to`]) and want nothing else slowed down.
    Ideal,
}

impl Default for NetOptions {
    /// The testbed as measured: one-minute slots; satellite links 10 ms delay, 9 ms
    /// jitter, 40 Mbit/s; cloud links 60 ms, 30 ms, 90 Mbit/s.
    fn default() -> Self {
        NetOptions {
            slot_ms: 60_000,
            sat_sat: LinkSpec::new(10.0, 9.0, Some(40.0)),
            cloud_sat: LinkSpec::new(60.0, 30.0, Some(90.0)),
            fixed_slot: None,
            links: Links::Paths,
        }
    }
}

impl NetOptions {
    /// The system tests' network: the topology document carries the testbed file's own
    /// characteristics (satellite links 10 ms, 90 Mbit/s; the ground link 40 ms,
    /// 30 Mbit/s; no jitter), slot 0 is pinned, and the proxies forward at once
    /// ([`Links::Ideal`]), so elections follow the document while nothing waits.
    pub fn testbed_pinned() -> NetOptions {
        NetOptions {
            slot_ms: 60_000,
            sat_sat: LinkSpec::new(10.0, 0.0, Some(90.0)),
            cloud_sat: LinkSpec::new(40.0, 0.0, Some(30.0)),
            fixed_slot: Some(0),
            links: Links::Ideal,
        }
    }

    /// Checks the slot length and both link specs.
    pub fn validate(&self) -> Result<(), String> {
        if self.slot_ms == 0 {
            return Err("slot_ms must be > 0".into());
        }
        self.sat_sat
            .validate()
            .map_err(|e| format!("sat_sat: {e}"))?;
        self.cloud_sat
            .validate()
            .map_err(|e| format!("cloud_sat: {e}"))
    }

    /// The characteristics of a link between nodes of kinds `a` and `b`.
    pub fn link_spec(&self, a: NodeType, b: NodeType) -> LinkSpec {
        if a == NodeType::Cloud || b == NodeType::Cloud {
            self.cloud_sat
        } else {
            self.sat_sat
        }
    }

    /// `(slot_ms, epoch_ms)` of the topology document for a constellation starting at
    /// Unix time `now_ms`.
    pub(super) fn timing(&self, now_ms: u64) -> (u64, u64) {
        match self.fixed_slot {
            None => (self.slot_ms, now_ms),
            Some(slot) => {
                let slot_ms = self.slot_ms.max(PINNED_SLOT_MS);
                let back = (slot as u64)
                    .saturating_mul(slot_ms)
                    .saturating_add(PINNED_LEAD_MS);
                (slot_ms, now_ms.saturating_sub(back))
            }
        }
    }
}

/// The immutable description of the network, shared with the slot thread.
pub(super) struct Net {
    pub(super) schedule: Schedule,
    pub(super) opts: NetOptions,
    /// The wire from `a` to `b` of every link between `a` and `b` in any slot.
    wires: BTreeMap<(u32, u32), Arc<Wire>>,
}

impl Net {
    /// The network of `schedule` with `opts`: one wire per direction of every link that
    /// exists in some slot (a link that recurs in several slots is the same wires).
    pub(super) fn new(schedule: Schedule, opts: NetOptions) -> Net {
        let mut net = Net {
            schedule,
            opts,
            wires: BTreeMap::new(),
        };
        let mut wires = BTreeMap::new();
        for slot in 0..net.schedule.slots() {
            for link in net.schedule.links(slot) {
                let spec = net.link_spec(link);
                for (from, to) in [(link.a, link.b), (link.b, link.a)] {
                    let seed = (u64::from(from) << 32) | u64::from(to);
                    wires
                        .entry((from, to))
                        .or_insert_with(|| Wire::new(spec, seed));
                }
            }
        }
        net.wires = wires;
        net
    }

    /// The emulated characteristics of one link of the schedule.
    pub(super) fn link_spec(&self, link: &Link) -> LinkSpec {
        let kind = |id: u32| self.schedule.get(id).map_or(NodeType::Sat, |n| n.kind);
        self.opts.link_spec(kind(link.a), kind(link.b))
    }

    /// The route of the `from`->`to` proxy in `slot`: the shared wires of the
    /// shortest-latency path, there and back (none with [`Links::Ideal`]); `None` if
    /// unreachable.
    pub(super) fn route(&self, slot: usize, from: u32, to: u32) -> Option<Route> {
        let path = self.schedule.shortest_path(slot, from, to)?;
        if self.opts.links == Links::Ideal {
            return Some(Route::ideal());
        }
        let wire = |a: u32, b: u32| self.wires.get(&(a, b)).cloned();
        let up = path
            .nodes
            .windows(2)
            .map(|w| wire(w[0], w[1]))
            .collect::<Option<Vec<_>>>()?;
        let down = path
            .nodes
            .windows(2)
            .rev()
            .map(|w| wire(w[1], w[0]))
            .collect::<Option<Vec<_>>>()?;
        Some(Route::new(up, down))
    }

    /// What the `from`->`to` proxy emulates in `slot` as one link: the route's summed
    /// latency, jitter in quadrature and bottleneck bandwidth; `None` if unreachable.
    pub(super) fn path_spec(&self, slot: usize, from: u32, to: u32) -> Option<LinkSpec> {
        self.route(slot, from, to).map(|r| r.up.summary())
    }

    /// Time from Unix time `now` until the next slot boundary.
    pub(super) fn until_next_slot(&self, now: u64) -> Duration {
        let (epoch, slot_ms) = (self.schedule.epoch_ms(), self.schedule.slot_ms());
        let next = if now < epoch {
            epoch
        } else {
            epoch.saturating_add((self.schedule.absolute_slot(now) + 1).saturating_mul(slot_ms))
        };
        Duration::from_millis(next.saturating_sub(now).max(1))
    }
}

/// One proxy per ordered pair of distinct nodes.
pub(super) struct Proxies {
    nodes: usize,
    /// Index `from * nodes + to`; `None` where `from == to`.
    emus: Vec<Option<LinkEmu>>,
    /// Indices of proxies a fault holds down ([`Constellation::fault_link`]): slot changes
    /// re-route them but leave them cut or blackholed until the fault is healed.
    held: Mutex<std::collections::BTreeSet<usize>>,
}

impl Proxies {
    /// Starts the proxies on `runtime`, each forwarding to its target's store, all ideal
    /// until [`Proxies::apply`].
    pub(super) fn start(
        runtime: &tokio::runtime::Handle,
        stores: &[Redis],
    ) -> Result<Proxies, String> {
        let nodes = stores.len();
        let mut emus = Vec::with_capacity(nodes * nodes);
        for from in 0..nodes {
            for (to, store) in stores.iter().enumerate() {
                if from == to {
                    emus.push(None);
                    continue;
                }
                let upstream = SocketAddr::from(([127, 0, 0, 1], store.port));
                let emu = LinkEmu::start_in(runtime, upstream, LinkSpec::ideal())
                    .map_err(|e| format!("cannot start the proxy to {upstream}: {e}"))?;
                emus.push(Some(emu));
            }
        }
        Ok(Proxies {
            nodes,
            emus,
            held: Mutex::new(std::collections::BTreeSet::new()),
        })
    }

    /// The `from`->`to` proxy (none for `from == to` or unknown ids).
    pub(super) fn get(&self, from: u32, to: u32) -> Option<&LinkEmu> {
        let (from, to) = (from as usize, to as usize);
        if from >= self.nodes || to >= self.nodes {
            return None;
        }
        self.emus.get(from * self.nodes + to)?.as_ref()
    }

    /// The index of the `from`->`to` proxy in `emus` and `held`.
    pub(super) fn index(&self, from: u32, to: u32) -> usize {
        from as usize * self.nodes + to as usize
    }

    pub(super) fn held(&self) -> MutexGuard<'_, std::collections::BTreeSet<usize>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every proxy take its route in `slot`: re-routed, restored if it was cut,
    /// cut if the target is unreachable; a proxy a fault holds is only re-routed.
    pub(super) fn apply(&self, net: &Net, slot: usize) {
        let n = self.nodes as u32;
        let held = self.held();
        for from in 0..n {
            for to in 0..n {
                self.apply_one(net, slot, from, to, held.contains(&self.index(from, to)));
            }
        }
    }

    /// [`Proxies::apply`] for the `from`->`to` proxy only.
    pub(super) fn apply_one(&self, net: &Net, slot: usize, from: u32, to: u32, held: bool) {
        let Some(emu) = self.get(from, to) else {
            return;
        };
        match net.route(slot, from, to) {
            Some(route) => {
                emu.route(route);
                if !held && emu.mode() != LinkMode::Up {
                    emu.restore();
                }
            }
            None if !held && emu.mode() != LinkMode::Cut => emu.cut(),
            None => {}
        }
    }
}

/// The thread that re-routes the proxies at every slot boundary; stopped on drop.
pub(super) struct SlotThread {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SlotThread {
    /// Starts following the schedule; `emulated` holds the slot already applied.
    pub(super) fn spawn(
        net: Arc<Net>,
        proxies: Arc<Proxies>,
        emulated: Arc<AtomicUsize>,
    ) -> Result<SlotThread, String> {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("constellation-slots".into())
            .spawn(move || follow_slots(&net, &proxies, &emulated, &stopped))
            .map_err(|e| format!("cannot start the slot thread: {e}"))?;
        Ok(SlotThread {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for SlotThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Applies each new slot as it begins, sleeping until the next boundary in between,
/// until `stop` says so (a message or a dropped sender).
fn follow_slots(net: &Net, proxies: &Proxies, emulated: &AtomicUsize, stop: &mpsc::Receiver<()>) {
    loop {
        let now = now_ms();
        let slot = net.schedule.slot_at(now);
        if slot != emulated.load(Ordering::SeqCst) {
            proxies.apply(net, slot);
            emulated.store(slot, Ordering::SeqCst);
        }
        match stop.recv_timeout(net.until_next_slot(now)) {
            Err(RecvTimeoutError::Timeout) => continue,
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The tokio runtime the proxies share; dropped on a helper thread, since tokio forbids
/// dropping a runtime where async code runs (a constellation dropped in an async test).
pub(super) struct ProxyRuntime(Option<tokio::runtime::Runtime>);

impl ProxyRuntime {
    pub(super) fn start() -> Result<ProxyRuntime, String> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(PROXY_WORKERS)
            .thread_name("constellation-net")
            .enable_all()
            .build()
            .map(|rt| ProxyRuntime(Some(rt)))
            .map_err(|e| format!("cannot start the proxies' tokio runtime: {e}"))
    }

    /// The runtime's handle (only `None` while dropping).
    pub(super) fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(|rt| rt.handle())
    }
}

impl Drop for ProxyRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            // Once this returns, every listener and connection is closed.
            let dropper = std::thread::Builder::new()
                .name("constellation-net-stop".into())
                .spawn(move || drop(runtime));
            if let Ok(thread) = dropper {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constellation::testbed_file;

    #[test]
    fn testbed_pinned_documents_the_testbed_files_own_characteristics() {
        let bytes = std::fs::read(testbed_file()).expect("read the testbed file");
        let testbed = Schedule::parse(&bytes).expect("the testbed file parses");
        let opts = NetOptions::testbed_pinned();
        assert_eq!((opts.fixed_slot, opts.links), (Some(0), Links::Ideal));
        for slot in 0..testbed.slots() {
            for l in testbed.links(slot) {
                let spec = opts.link_spec(testbed.node(l.a).kind, testbed.node(l.b).kind);
                assert_eq!(
                    (spec.latency_ms, spec.jitter_ms, spec.bandwidth_mbps),
                    (l.latency_ms, l.jitter_ms, Some(l.bandwidth_mbps)),
                    "slot {slot}: {} - {}",
                    testbed.name(l.a),
                    testbed.name(l.b)
                );
            }
        }
    }
}
