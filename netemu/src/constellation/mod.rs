//! A faithful one-machine emulation of the research testbed's constellation, for
//! experiments and tests: eight nodes (seven satellites in a chain and the cloud node
//! `pi5u1`, whose ground link moves one satellite along the chain every slot), each with
//! its own `redis-server`, and the network between them emulated link by link.
//!
//! * **Stores.** One `redis-server` per node on a free loopback port, all started at once
//!   (each answers `PING` before [`Constellation::start`] returns). They keep nothing on
//!   disk unless started with another [`Durability`]
//!   ([`Constellation::try_start_with`]); with `appendfsync always`, a store killed
//!   by [`Constellation::kill_store`] (SIGKILL) and brought back by
//!   [`Constellation::restart_store`] (same port, same directory) still holds everything
//!   it acknowledged.
//! * **Shared links.** A process standing for node X reaches node Y's store only
//!   through a dedicated proxy X->Y ([`LinkEmu`]): 56 proxies for 8 nodes, all on one
//!   shared tokio runtime with two worker threads. Every physical link of the schedule is
//!   one shared resource, a [`Wire`](crate::wire::Wire) per direction with the link's
//!   latency, jitter and bandwidth; the X->Y proxy routes its connections over the wires
//!   of the shortest-latency path from X to Y in the current slot (and back over the
//!   reverse wires), so flows of different node pairs that cross one link share its
//!   capacity ([`crate::wire`]), a path runs at its bottleneck and its delay adds up the
//!   links' delays, and a new connection pays the path's round trip before its first
//!   bytes go. [`Constellation::path_spec`] is the path as one link (summed latency,
//!   jitter in quadrature, bottleneck). When Y is unreachable from X the proxy is cut;
//!   the faults ([`Constellation::fault_link`], [`Constellation::cut_links_to`]) act on
//!   a path's proxy, not on the wires other paths share. Link characteristics come from
//!   [`NetOptions`] by link type (a link touching a `Cloud` node is a cloud link, any
//!   other a satellite link); only the *shape* of each slot's graph comes from the testbed
//!   file `tests/data/constellation-topologies.json`.
//! * **Slots.** The topology the plugin reads ([`Constellation::topology_path`]) is a
//!   Skylark document with those characteristics whose `epoch_ms` is the constellation's
//!   start time (slot 0 is current at start), or with [`NetOptions::fixed_slot`] a
//!   document whose slots last [`PINNED_SLOT_MS`] and whose epoch makes the chosen slot
//!   current for about that long. A background thread re-routes every proxy at each slot
//!   boundary, computed from the same epoch and slot length with the wall clock the plugin
//!   uses, so plugin and network agree (to a few milliseconds).
//! * **Plugin configuration.** [`Constellation::env_for`] gives the settings of a process
//!   standing for a node: its own store directly, every other store through its proxy
//!   (`SKYLARK_NODE_ADDRS`), the topology file, propagation on.
//! * **System tests.** [`Constellation::for_system_tests`] documents the testbed file's
//!   own link characteristics, pins slot 0 and lets every proxy forward at once
//!   ([`Links::Ideal`]): elections follow the document while nothing waits, and a test
//!   slows or cuts the paths into a node itself ([`Constellation::shape_links_to`],
//!   [`Constellation::cut_links_to`], [`Constellation::heal_links_to`]); its guests
//!   retry briefly ([`TEST_SETTINGS`]). It also reads what the plugin wrote in a node's
//!   store ([`Constellation::bundle`], [`Constellation::placement`], ...).
//!
//! **Clean-up.** Dropping a [`Constellation`] stops the slot thread, the proxies and the
//! stores and removes its temporary directory (topology file and store directories).
//! The stores also die with the process that started them, however it ends: each
//! `redis-server` is spawned with `prctl(PR_SET_PDEATHSIG, SIGKILL)`, from a thread that
//! lives exactly as long as the constellation (the kernel sends the signal when the
//! *thread* that forked the child ends, so the stores are not spawned from a caller's
//! thread that may end first). A binary that wants SIGINT and SIGTERM to clean up too
//! calls [`install_interrupt_cleanup`] once: on either signal every live constellation's
//! stores are stopped and its directory removed, and the process exits with status
//! 130 (SIGINT) or 143 (SIGTERM). Only SIGKILL leaves the (small) temporary directory.
//!
//! Linux only (`prctl`).

mod cleanup;
mod document;
mod network;
mod stores;

pub use cleanup::install_interrupt_cleanup;
pub use document::testbed_file;
pub use network::{Links, NetOptions, PINNED_SLOT_MS, UNLIMITED_MBPS};
pub use skylark_testkit::Durability;

use crate::linkemu::{LinkEmu, LinkSpec};
use cleanup::Registration;
use document::{chain_order, skylark_document};
use network::{Net, Proxies, ProxyRuntime, SlotThread};
use skylark_core::topology::Schedule;
use skylark_testkit::redis::Started;
use skylark_testkit::{now_ms, Events, Guest, Redis};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stores::{StoreKeeper, STORE_RESTART_TIMEOUT};

/// The emulated testbed; see the [module documentation](self).
pub struct Constellation {
    net: Arc<Net>,
    topology: PathBuf,
    /// Chain order.
    satellites: Vec<String>,
    /// Index = node id in the schedule.
    stores: Vec<Redis>,
    /// How the stores persist their data.
    durability: Durability,
    /// Index = node id: the store was killed by [`Constellation::kill_store`] and not
    /// restarted yet.
    down: Vec<bool>,
    /// The slot the proxies emulate now.
    emulated: Arc<AtomicUsize>,
    // Stopped in this order by `Drop`: registration, slot thread, proxies, runtime,
    // stores, keeper; the directory goes last.
    registration: Option<Registration>,
    slots: Option<SlotThread>,
    proxies: Option<Arc<Proxies>>,
    runtime: Option<ProxyRuntime>,
    keeper: Option<StoreKeeper>,
    dir: tempfile::TempDir,
    /// Further plugin settings of every guest ([`Constellation::guest_at`]), after (so
    /// overriding) [`Constellation::env_for`]'s.
    pub env: Vec<(String, String)>,
}

/// Plugin settings of [`Constellation::for_system_tests`]: short timeouts, retries and
/// leases so that tests run fast, and informative logs.
pub const TEST_SETTINGS: &[(&str, &str)] = &[
    ("SKYLARK_TIMEOUT_MS", "1000"),
    ("SKYLARK_CONNECT_TIMEOUT_MS", "500"),
    ("SKYLARK_RETRY_BASE_MS", "50"),
    ("SKYLARK_RETRIES", "2"),
    ("SKYLARK_LEASE_MS", "500"),
    ("SKYLARK_EXIT_FLUSH_MS", "15000"),
    ("SKYLARK_LOG", "info"),
];

impl Constellation {
    /// The constellation of the system tests ([`NetOptions::testbed_pinned`]), whose
    /// guests retry briefly ([`TEST_SETTINGS`]) so that tests run fast; panics if it
    /// cannot start.
    pub fn for_system_tests() -> Constellation {
        let mut c = Constellation::start(NetOptions::testbed_pinned());
        c.env = TEST_SETTINGS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        c
    }

    /// Brings the constellation up (see [`Constellation::try_start`]); panics with the
    /// reason if it cannot (a test and benchmark harness).
    pub fn start(opts: NetOptions) -> Constellation {
        Constellation::try_start(opts)
            .unwrap_or_else(|e| panic!("cannot start the emulated constellation: {e}"))
    }

    /// Brings the constellation up: the stores (all answering `PING`, without
    /// persistence), the topology file, the proxies emulating the current slot, and the
    /// slot thread.
    pub fn try_start(opts: NetOptions) -> Result<Constellation, String> {
        Constellation::try_start_with(opts, Durability::Volatile)
    }

    /// [`Constellation::try_start`] with stores that persist their data as `durability`
    /// says (needed to restart a store without losing what it acknowledged).
    pub fn try_start_with(
        opts: NetOptions,
        durability: Durability,
    ) -> Result<Constellation, String> {
        opts.validate()
            .map_err(|e| format!("invalid network options: {e}"))?;
        let file = testbed_file();
        let testbed = std::fs::read(&file)
            .map_err(|e| e.to_string())
            .and_then(|bytes| Schedule::parse(&bytes).map_err(|e| e.to_string()))
            .map_err(|e| format!("testbed topology {}: {e}", file.display()))?;
        if let Some(slot) = opts.fixed_slot.filter(|s| *s >= testbed.slots()) {
            return Err(format!(
                "fixed_slot {slot} does not exist: the testbed has {} slots",
                testbed.slots()
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("skylark-constellation-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let (keeper, stores) = StoreKeeper::start(testbed.len(), dir.path(), durability)?;
        let registration = Registration::new(&stores, dir.path());

        let (slot_ms, epoch_ms) = opts.timing(now_ms());
        let urls: Vec<&str> = stores.iter().map(|s| s.url.as_str()).collect();
        let doc = skylark_document(&testbed, &opts, &urls, slot_ms, epoch_ms)?.to_string();
        let topology = dir.path().join("topology.json");
        std::fs::write(&topology, &doc)
            .map_err(|e| format!("cannot write {}: {e}", topology.display()))?;
        let schedule = Schedule::parse(doc.as_bytes())
            .map_err(|e| format!("the generated topology document is invalid: {e}"))?;
        let satellites = chain_order(&schedule);
        let net = Arc::new(Net::new(schedule, opts));

        let runtime = ProxyRuntime::start()?;
        let handle = runtime
            .handle()
            .ok_or("the proxies' runtime is gone")?
            .clone();
        let proxies = Arc::new(Proxies::start(&handle, &stores)?);
        let slot = net.schedule.slot_at(now_ms());
        proxies.apply(&net, slot);
        let emulated = Arc::new(AtomicUsize::new(slot));
        let slots = SlotThread::spawn(
            Arc::clone(&net),
            Arc::clone(&proxies),
            Arc::clone(&emulated),
        )?;
        Ok(Constellation {
            net,
            topology,
            satellites,
            down: vec![false; stores.len()],
            stores,
            durability,
            emulated,
            registration: Some(registration),
            slots: Some(slots),
            proxies: Some(proxies),
            runtime: Some(runtime),
            keeper: Some(keeper),
            dir,
            env: Vec::new(),
        })
    }

    /// The id of node `node`; panics naming the known nodes if there is none.
    fn id(&self, node: &str) -> u32 {
        self.net.schedule.id(node).unwrap_or_else(|| {
            panic!(
                "no node {node:?} in the constellation (nodes: {})",
                self.nodes().join(", ")
            )
        })
    }

    /// Node names in the testbed's order of first appearance.
    pub fn nodes(&self) -> Vec<String> {
        self.net
            .schedule
            .nodes()
            .iter()
            .map(|n| n.name.clone())
            .collect()
    }

    /// The satellites in chain order (`pi5u2` ... `pi4p1`).
    pub fn satellites(&self) -> Vec<String> {
        self.satellites.clone()
    }

    /// The cloud node, whose store is the global store (`pi5u1`).
    pub fn cloud(&self) -> String {
        let global = self.net.schedule.global();
        global.map_or_else(String::new, |id| self.net.schedule.name(id).to_string())
    }

    /// The store of `node` (direct, not through a proxy).
    pub fn redis(&self, node: &str) -> &Redis {
        &self.stores[self.id(node) as usize]
    }

    /// How the stores persist their data.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Whether `node`'s store runs (it does unless [`Constellation::kill_store`] stopped
    /// it and [`Constellation::restart_store`] has not brought it back yet).
    pub fn store_running(&self, node: &str) -> bool {
        !self.down[self.id(node) as usize]
    }

    /// Kills `node`'s `redis-server` with SIGKILL (no shutdown, no final write) and
    /// reaps it; its port and directory stay reserved for
    /// [`Constellation::restart_store`]. Does nothing if it is down already.
    pub fn kill_store(&mut self, node: &str) -> Result<(), String> {
        let i = self.id(node) as usize;
        if self.down[i] {
            return Ok(());
        }
        let store = &mut self.stores[i];
        let mut kill = move || {
            store
                .kill()
                .map(|()| ((), None))
                .map_err(|e| format!("cannot kill the store of {node}: {e}"))
        };
        match &self.registration {
            Some(registration) => registration.change_store(i, kill)?,
            None => kill()?.0,
        }
        self.down[i] = true;
        Ok(())
    }

    /// Starts `node`'s store again after [`Constellation::kill_store`], on the same port
    /// and directory (so it reloads its append-only file, if [`Durability`] keeps one),
    /// from the keeper thread; returns once it answers `PING` (after loading its data).
    /// Does nothing if it runs.
    pub fn restart_store(&mut self, node: &str) -> Result<(), String> {
        let i = self.id(node) as usize;
        if !self.down[i] {
            return Ok(());
        }
        let (dir, config, port) = (
            self.stores[i].dir().to_path_buf(),
            self.stores[i].config().clone(),
            self.stores[i].port,
        );
        let keeper = self.keeper.as_ref().ok_or("the store thread is gone")?;
        let launch = || {
            let child = keeper.run(move || config.launch(&dir))??;
            let pid = child.id();
            Ok((child, Some(pid)))
        };
        let child = match &self.registration {
            Some(registration) => registration.change_store(i, launch)?,
            None => launch()?.0,
        };
        let store = &mut self.stores[i];
        store.replace_child(child);
        self.down[i] = false;
        match store.wait_started(Instant::now() + STORE_RESTART_TIMEOUT, Redis::ping) {
            Started::Ready => Ok(()),
            Started::Exited(status) => {
                self.down[i] = true;
                Err(format!(
                    "the restarted store of {node} exited at once ({status}): port {port} taken?"
                ))
            }
            Started::Late => Err(format!(
                "the restarted store of {node} did not answer PING within {STORE_RESTART_TIMEOUT:?}"
            )),
        }
    }

    /// The Skylark topology file the plugin reads (`SKYLARK_TOPOLOGY_FILE`).
    pub fn topology_path(&self) -> PathBuf {
        self.topology.clone()
    }

    /// The temporary directory holding the topology file and the stores' directories;
    /// removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The topology file's document, parsed.
    pub fn schedule(&self) -> &Schedule {
        &self.net.schedule
    }

    /// The link characteristics in use.
    pub fn options(&self) -> &NetOptions {
        &self.net.opts
    }

    /// The slot in force now, by the wall clock (as the plugin computes it).
    pub fn slot_now(&self) -> usize {
        self.net.schedule.slot_at(now_ms())
    }

    /// The slot the proxies emulate now; differs from [`Constellation::slot_now`] only
    /// for the few milliseconds after a boundary.
    pub fn emulated_slot(&self) -> usize {
        self.emulated.load(Ordering::SeqCst)
    }

    /// Time until the next slot boundary.
    pub fn until_next_slot(&self) -> Duration {
        self.net.until_next_slot(now_ms())
    }

    /// Hop count of the shortest-latency path from `from` to `to` in `slot`; `None` if
    /// either node is unknown or `to` is unreachable.
    pub fn hops(&self, slot: usize, from: &str, to: &str) -> Option<u32> {
        let schedule = &self.net.schedule;
        let path = schedule.shortest_path(slot, schedule.id(from)?, schedule.id(to)?)?;
        u32::try_from(path.hops()).ok()
    }

    /// What the `from`->`to` proxy emulates in `slot` (see the module documentation);
    /// `None` if either node is unknown or `to` is unreachable. Zero hops (`from == to`)
    /// is an ideal link.
    pub fn path_spec(&self, slot: usize, from: &str, to: &str) -> Option<LinkSpec> {
        let schedule = &self.net.schedule;
        self.net
            .path_spec(slot, schedule.id(from)?, schedule.id(to)?)
    }

    /// The proxy through which a process standing for `from` reaches `to`'s store;
    /// panics for unknown nodes or `from == to`.
    pub fn proxy(&self, from: &str, to: &str) -> &LinkEmu {
        let (a, b) = (self.id(from), self.id(to));
        self.proxies
            .as_ref()
            .and_then(|p| p.get(a, b))
            .unwrap_or_else(|| panic!("no proxy {from} -> {to}: a node reaches itself directly"))
    }

    fn running_proxies(&self) -> &Proxies {
        self.proxies
            .as_ref()
            .expect("proxies run while the constellation lives")
    }

    /// Injects a fault on the `from`->`to` path: cut (connections reset) or blackholed
    /// (bytes held), until [`Constellation::heal_link`]; slot changes meanwhile leave it
    /// down. Panics for unknown nodes or `from == to`.
    pub fn fault_link(&self, from: &str, to: &str, blackhole: bool) {
        let (a, b) = (self.id(from), self.id(to));
        let proxies = self.running_proxies();
        let mut held = proxies.held();
        held.insert(proxies.index(a, b));
        let emu = self.proxy(from, to);
        if blackhole {
            emu.blackhole()
        } else {
            emu.cut()
        }
    }

    /// Ends a fault of [`Constellation::fault_link`]: the path becomes what the current
    /// slot makes it (up with its characteristics, or cut if unreachable in this slot).
    pub fn heal_link(&self, from: &str, to: &str) {
        let (a, b) = (self.id(from), self.id(to));
        let proxies = self.running_proxies();
        let mut held = proxies.held();
        held.remove(&proxies.index(a, b));
        // The wall clock's slot: if a boundary is passing, the slot thread applies the
        // same one a moment later.
        let slot = self.net.schedule.slot_at(now_ms());
        proxies.apply_one(&self.net, slot, a, b, false);
    }

    /// Plugin configuration of a process standing for `node`: its own store directly
    /// (`SKYLARK_REDIS_URL`), every other node's through the `node`->other proxy
    /// (`SKYLARK_NODE_ADDRS`), the topology file, propagation on, log level `warn`.
    pub fn env_for(&self, node: &str) -> Vec<(String, String)> {
        let me = self.id(node);
        let addrs: Vec<String> = self
            .nodes()
            .iter()
            .filter(|other| self.id(other) != me)
            .map(|other| format!("{other}={}", self.proxy(node, other).url()))
            .collect();
        [
            ("SKYLARK_REDIS_URL", self.redis(node).url.clone()),
            ("SKYLARK_NODE_NAME", node.to_string()),
            (
                "SKYLARK_TOPOLOGY_FILE",
                self.topology.to_string_lossy().into_owned(),
            ),
            ("SKYLARK_PROPAGATION", "on".to_string()),
            ("SKYLARK_NODE_ADDRS", addrs.join(",")),
            ("SKYLARK_LOG", "warn".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// `wasmedge <module>` with the plugin, configured by [`Constellation::env_for`]
    /// `node` (needs the built WasmEdge setup, see the crate documentation).
    pub fn guest_at(&self, module: &Path, node: &str) -> Guest {
        let mut guest = Guest::at(module, &self.redis(node).url);
        for (k, v) in self.env_for(node).iter().chain(&self.env) {
            guest = guest.env(k, v);
        }
        guest
    }

    /// [`Constellation::guest_at`] for the built guest module `name` (`probe`, ...).
    pub fn guest(&self, name: &str, node: &str) -> Guest {
        self.guest_at(&skylark_testkit::wasm(name), node)
    }

    /// Every proxy through which another node reaches `node`'s store.
    fn links_to<'a>(&'a self, node: &'a str) -> impl Iterator<Item = String> + 'a {
        self.nodes().into_iter().filter(move |other| other != node)
    }

    /// Gives every path into `node`'s store (each `other`->`node` proxy) the
    /// characteristics `spec`, as one private link per proxy (shared with no other path),
    /// until a slot boundary re-routes them (never, with a pinned
    /// slot) or [`Constellation::heal_links_to`].
    pub fn shape_links_to(&self, node: &str, spec: LinkSpec) {
        for other in self.links_to(node) {
            self.proxy(&other, node).set(spec);
        }
    }

    /// Cuts every path into `node`'s store ([`Constellation::fault_link`] from every other
    /// node): no other node reaches it until [`Constellation::heal_links_to`].
    pub fn cut_links_to(&self, node: &str) {
        for other in self.links_to(node) {
            self.fault_link(&other, node, false);
        }
    }

    /// Ends the faults and shaping of every path into `node`'s store: each becomes what
    /// the current slot makes it ([`Constellation::heal_link`]).
    pub fn heal_links_to(&self, node: &str) {
        for other in self.links_to(node) {
            self.heal_link(&other, node);
        }
    }

    /// The topology document with every node's store (direct URLs), in which slot `slot`
    /// is current for `slot_ms / 2` more milliseconds, for a test that installs another
    /// topology (the `<ns>:topology` key).
    pub fn document(&self, slot: usize, slot_ms: u64) -> String {
        let schedule = &self.net.schedule;
        let n = schedule.slots().max(1) as u64;
        let epoch = now_ms().saturating_sub((slot as u64 % n) * slot_ms + slot_ms / 2);
        let urls: Vec<&str> = self.stores.iter().map(|s| s.url.as_str()).collect();
        skylark_document(schedule, &self.net.opts, &urls, slot_ms, epoch)
            .map(|doc| doc.to_string())
            .unwrap_or_else(|e| panic!("the constellation's own document: {e}"))
    }

    /// The state fields of `chain`'s bundle on `node` (empty if absent), read directly.
    pub fn bundle(&self, node: &str, chain: &str) -> BTreeMap<String, Vec<u8>> {
        self.redis(node).bundle(chain)
    }

    /// The placement record (task id to node) held with `chain`'s bundle on `node`.
    pub fn placement(&self, node: &str, chain: &str) -> BTreeMap<String, String> {
        self.redis(node).placement(chain)
    }

    /// Names of the nodes holding a bundle of `chain`.
    pub fn holders(&self, chain: &str) -> Vec<String> {
        self.nodes()
            .into_iter()
            .filter(|n| !self.bundle(n, chain).is_empty())
            .collect()
    }

    /// Number of jobs in `node`'s outbox.
    pub fn outbox_len(&self, node: &str) -> usize {
        self.redis(node).outbox_len()
    }

    /// The counters of `node` (`<ns>:stats:<node>`).
    pub fn stats(&self, node: &str) -> BTreeMap<String, u64> {
        self.redis(node).stats(node)
    }

    /// Subscribes to `node`'s event channel.
    pub fn events(&self, node: &str) -> Events {
        Events::subscribe(&self.redis(node).url)
    }
}

impl Drop for Constellation {
    fn drop(&mut self) {
        // The interrupt handler must not touch stores that are being stopped here.
        drop(self.registration.take());
        drop(self.slots.take());
        // The proxies stop, then their runtime closes every listener and connection.
        drop(self.proxies.take());
        drop(self.runtime.take());
        // SIGKILL and reap each store, then end the thread they were spawned from.
        self.stores.clear();
        drop(self.keeper.take());
        // `dir` (topology file, store directories) is removed after this.
    }
}
