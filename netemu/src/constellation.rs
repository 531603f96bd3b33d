//! A faithful one-machine emulation of the research testbed's constellation, for
//! experiments and tests: eight nodes (seven satellites in a chain and the cloud node
//! `pi5u1`, whose ground link moves one satellite along the chain every slot), each with
//! its own `redis-server`, and the network between them emulated per path.
//!
//! * **Stores.** One `redis-server` per node on a free loopback port, all started at once
//!   (each answers `PING` before [`Constellation::start`] returns). They keep nothing on
//!   disk unless started with another [`Durability`]
//!   ([`Constellation::try_start_with`]); with `appendfsync always`, a store killed
//!   by [`Constellation::kill_store`] (SIGKILL) and brought back by
//!   [`Constellation::restart_store`] (same port, same directory) still holds everything
//!   it acknowledged.
//! * **Per-path links.** A process standing for node X reaches node Y's store only
//!   through a dedicated proxy X->Y ([`LinkEmu`]): 56 proxies for 8 nodes, all on one
//!   shared tokio runtime with two worker threads. The X->Y proxy emulates the whole
//!   multi-hop path from X to Y in the current slot: its latency is the sum of the path's
//!   link latencies, its jitter the root of the sum of the squared link jitters
//!   (independent per-link jitter adds in quadrature), its bandwidth the path's bottleneck.
//!   When Y is unreachable from X the proxy is cut. Link characteristics come from
//!   [`NetOptions`] by link type (a link touching a `Cloud` node is a cloud link, any
//!   other a satellite link); only the *shape* of each slot's graph comes from the testbed
//!   file `tests/data/constellation-topologies.json`.
//! * **Slots.** The topology the plugin reads ([`Constellation::topology_path`]) is a
//!   Skylark document with those characteristics whose `epoch_ms` is the constellation's
//!   start time (slot 0 is current at start), or with [`NetOptions::fixed_slot`] a
//!   document whose slots last [`PINNED_SLOT_MS`] and whose epoch makes the chosen slot
//!   current for about that long. A background thread re-specs every proxy at each slot
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

use crate::linkemu::{LinkEmu, LinkMode, LinkSpec};
use serde_json::{json, Value};
use skylark_core::topology::{Link, NodeType, Schedule};
use skylark_testkit::redis::{ServerConfig, Started};
pub use skylark_testkit::Durability;
use skylark_testkit::{now_ms, Events, Guest, Redis};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Slot length written to the topology document when a slot is pinned
/// ([`NetOptions::fixed_slot`]): the pinned slot stays current this long (a day).
pub const PINNED_SLOT_MS: u64 = 24 * 3600 * 1000;

/// How long a pinned slot has already been current when the constellation starts, so
/// that a clock a little behind still sees it.
const PINNED_LEAD_MS: u64 = 60_000;

/// Bandwidth the document gives a link that [`NetOptions`] leaves unlimited (the
/// document format needs a number): 100 Gbit/s.
pub const UNLIMITED_MBPS: f64 = 100_000.0;

/// Worker threads of the runtime all proxies share.
const PROXY_WORKERS: usize = 2;

/// `redis-server` starts tried per node (a start fails when another process takes the
/// free port first).
const STORE_ATTEMPTS: usize = 5;

/// How long all stores together may take to answer `PING`.
const STORE_START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a restarted store may take to load its data and answer `PING`.
const STORE_RESTART_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// Each proxy emulates its path in the current slot (see the module documentation).
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
    fn timing(&self, now_ms: u64) -> (u64, u64) {
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

/// The testbed's topology file (`tests/data/constellation-topologies.json`).
pub fn testbed_file() -> PathBuf {
    skylark_testkit::root().join("tests/data/constellation-topologies.json")
}

/// The immutable description of the network, shared with the slot thread.
struct Net {
    schedule: Schedule,
    opts: NetOptions,
}

impl Net {
    /// The emulated characteristics of one link of the schedule.
    fn link_spec(&self, link: &Link) -> LinkSpec {
        let kind = |id: u32| self.schedule.get(id).map_or(NodeType::Sat, |n| n.kind);
        self.opts.link_spec(kind(link.a), kind(link.b))
    }

    /// What the `from`->`to` proxy emulates in `slot`: the shortest-latency path's summed
    /// latency, jitter in quadrature and bottleneck bandwidth; `None` if unreachable.
    fn path_spec(&self, slot: usize, from: u32, to: u32) -> Option<LinkSpec> {
        let path = self.schedule.shortest_path(slot, from, to)?;
        if self.opts.links == Links::Ideal {
            return Some(LinkSpec::ideal());
        }
        let links = self.schedule.links(slot);
        let mut spec = LinkSpec::ideal();
        let mut variance = 0.0;
        for &index in &path.links {
            let link = self.link_spec(links.get(index as usize)?);
            spec.latency_ms += link.latency_ms;
            variance += link.jitter_ms * link.jitter_ms;
            spec.bandwidth_mbps = match (spec.bandwidth_mbps, link.bandwidth_mbps) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        spec.jitter_ms = f64::sqrt(variance);
        Some(spec)
    }

    /// Time from Unix time `now` until the next slot boundary.
    fn until_next_slot(&self, now: u64) -> Duration {
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
struct Proxies {
    nodes: usize,
    /// Index `from * nodes + to`; `None` where `from == to`.
    emus: Vec<Option<LinkEmu>>,
    /// Indices of proxies a fault holds down ([`Constellation::fault_link`]): slot changes
    /// re-spec them but leave them cut or blackholed until the fault is healed.
    held: Mutex<std::collections::BTreeSet<usize>>,
}

impl Proxies {
    /// Starts the proxies on `runtime`, each forwarding to its target's store, all ideal
    /// until [`Proxies::apply`].
    fn start(runtime: &tokio::runtime::Handle, stores: &[Redis]) -> Result<Proxies, String> {
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
    fn get(&self, from: u32, to: u32) -> Option<&LinkEmu> {
        let (from, to) = (from as usize, to as usize);
        if from >= self.nodes || to >= self.nodes {
            return None;
        }
        self.emus.get(from * self.nodes + to)?.as_ref()
    }

    /// The index of the `from`->`to` proxy in `emus` and `held`.
    fn index(&self, from: u32, to: u32) -> usize {
        from as usize * self.nodes + to as usize
    }

    fn held(&self) -> MutexGuard<'_, std::collections::BTreeSet<usize>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every proxy emulate its path in `slot`: re-specced, restored if it was cut,
    /// cut if the target is unreachable; a proxy a fault holds is only re-specced.
    fn apply(&self, net: &Net, slot: usize) {
        let n = self.nodes as u32;
        let held = self.held();
        for from in 0..n {
            for to in 0..n {
                self.apply_one(net, slot, from, to, held.contains(&self.index(from, to)));
            }
        }
    }

    /// [`Proxies::apply`] for the `from`->`to` proxy only.
    fn apply_one(&self, net: &Net, slot: usize, from: u32, to: u32, held: bool) {
        let Some(emu) = self.get(from, to) else {
            return;
        };
        match net.path_spec(slot, from, to) {
            Some(spec) => {
                emu.set(spec);
                if !held && emu.mode() != LinkMode::Up {
                    emu.restore();
                }
            }
            None if !held && emu.mode() != LinkMode::Cut => emu.cut(),
            None => {}
        }
    }
}

/// The thread that re-specs the proxies at every slot boundary; stopped on drop.
struct SlotThread {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SlotThread {
    /// Starts following the schedule; `emulated` holds the slot already applied.
    fn spawn(
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

/// Work for the keeper thread.
type KeeperJob = Box<dyn FnOnce() + Send>;

/// The thread the stores are spawned from. Their parent-death signal is tied to it, so
/// it stays alive (running only the jobs it is given, such as restarting a store) until
/// dropped, after the stores are stopped.
struct StoreKeeper {
    jobs: Option<mpsc::Sender<KeeperJob>>,
    thread: Option<JoinHandle<()>>,
}

impl StoreKeeper {
    /// Starts `count` stores, with their directories under `root`, from a new keeper
    /// thread; returns when all answer `PING`.
    fn start(
        count: usize,
        root: &Path,
        durability: Durability,
    ) -> Result<(StoreKeeper, Vec<Redis>), String> {
        let (jobs, queue) = mpsc::channel::<KeeperJob>();
        let thread = std::thread::Builder::new()
            .name("constellation-stores".into())
            .spawn(move || {
                // Until the constellation goes: the stores die with this thread.
                while let Ok(job) = queue.recv() {
                    job();
                }
            })
            .map_err(|e| format!("cannot start the store thread: {e}"))?;
        let keeper = StoreKeeper {
            jobs: Some(jobs),
            thread: Some(thread),
        };
        let root = root.to_path_buf();
        let stores = keeper.run(move || start_stores(count, &root, durability))??;
        Ok((keeper, stores))
    }

    /// Runs `job` on the keeper thread and returns its result.
    fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let (done, result) = mpsc::channel();
        let job: KeeperJob = Box::new(move || {
            let _ = done.send(job());
        });
        self.jobs
            .as_ref()
            .ok_or("the store thread is stopping")?
            .send(job)
            .map_err(|_| "the store thread is gone".to_string())?;
        result
            .recv()
            .map_err(|_| "the store thread died while running a job".to_string())
    }
}

impl Drop for StoreKeeper {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Spawns `count` stores at once and waits until every one answers `PING`, replacing
/// any that exits (its port was taken) up to [`STORE_ATTEMPTS`] times.
fn start_stores(count: usize, root: &Path, durability: Durability) -> Result<Vec<Redis>, String> {
    let spawn = || Redis::spawn_on_free_port(|port| store_config(port, durability), Some(root));
    let mut stores = (0..count).map(|_| spawn()).collect::<Result<Vec<_>, _>>()?;
    let deadline = Instant::now() + STORE_START_TIMEOUT;
    for store in &mut stores {
        let mut attempts = 1;
        loop {
            match store.wait_started(deadline, Redis::ping) {
                Started::Ready => break,
                Started::Exited(_) if attempts < STORE_ATTEMPTS => {
                    attempts += 1;
                    *store = spawn()?;
                }
                Started::Exited(_) => {
                    return Err(format!(
                        "redis-server exited at once {STORE_ATTEMPTS} times (ports taken?)"
                    ))
                }
                Started::Late => {
                    return Err(format!(
                        "redis-server did not answer PING within {STORE_START_TIMEOUT:?}: {}",
                        store.url
                    ))
                }
            }
        }
    }
    Ok(stores)
}

/// A node store on `port`: killed (SIGKILL) when the thread that launches it ends.
fn store_config(port: u16, durability: Durability) -> ServerConfig {
    ServerConfig {
        port,
        durability,
        die_with_thread: true,
        ..ServerConfig::default()
    }
}

/// The tokio runtime the proxies share; dropped on a helper thread, since tokio forbids
/// dropping a runtime where async code runs (a constellation dropped in an async test).
struct ProxyRuntime(Option<tokio::runtime::Runtime>);

impl ProxyRuntime {
    fn start() -> Result<ProxyRuntime, String> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(PROXY_WORKERS)
            .thread_name("constellation-net")
            .enable_all()
            .build()
            .map(|rt| ProxyRuntime(Some(rt)))
            .map_err(|e| format!("cannot start the proxies' tokio runtime: {e}"))
    }

    /// The runtime's handle (only `None` while dropping).
    fn handle(&self) -> Option<&tokio::runtime::Handle> {
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
            .and_then(|bytes| Schedule::parse(&bytes))
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
        let net = Arc::new(Net { schedule, opts });

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
    /// characteristics `spec`, until a slot boundary re-specs them (never, with a pinned
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

/// The testbed's graphs as a Skylark document: the nodes with their stores' URLs, each
/// slot's links with the characteristics of [`NetOptions`], the given timing, and the
/// testbed's cloud node as the global node. No IP addresses are written: the plugin must
/// never reach for the real testbed's.
fn skylark_document(
    testbed: &Schedule,
    opts: &NetOptions,
    urls: &[&str],
    slot_ms: u64,
    epoch_ms: u64,
) -> Result<Value, String> {
    let global = testbed
        .global()
        .ok_or("the testbed topology has no Cloud node")?;
    let nodes: Vec<Value> = testbed
        .nodes()
        .iter()
        .zip(urls)
        .map(|(n, url)| json!({"name": n.name, "type": n.kind.as_str(), "redis": url}))
        .collect();
    let kind = |id: u32| testbed.node(id).kind;
    let slots: Vec<Value> = (0..testbed.slots())
        .map(|slot| {
            let links = testbed.links(slot).iter().map(|l| {
                let spec = opts.link_spec(kind(l.a), kind(l.b));
                json!({
                    "source": testbed.name(l.a),
                    "target": testbed.name(l.b),
                    "latency_ms": spec.latency_ms,
                    "jitter_ms": spec.jitter_ms,
                    "bandwidth_mbps": spec.bandwidth_mbps.unwrap_or(UNLIMITED_MBPS),
                })
            });
            Value::Array(links.collect())
        })
        .collect();
    Ok(json!({
        "slot_ms": slot_ms,
        "epoch_ms": epoch_ms,
        "global": testbed.name(global),
        "nodes": nodes,
        "slots": slots,
    }))
}

/// The `Sat` nodes in chain order: slot 0's satellite-to-satellite links walked from the
/// end that appears first; the order of appearance if those links do not form one chain.
fn chain_order(schedule: &Schedule) -> Vec<String> {
    let is_sat = |id: u32| schedule.get(id).is_some_and(|n| n.kind == NodeType::Sat);
    let sats: Vec<u32> = (0..schedule.len() as u32)
        .filter(|&id| is_sat(id))
        .collect();
    let next = |id: u32| -> Vec<u32> {
        schedule
            .neighbours(0, id)
            .map(|(other, _)| other)
            .filter(|&other| is_sat(other))
            .collect()
    };
    let by_appearance = || {
        sats.iter()
            .map(|&id| schedule.name(id).to_string())
            .collect()
    };
    let Some(&start) = sats.iter().find(|&&id| next(id).len() == 1) else {
        return by_appearance();
    };
    let mut chain = vec![start];
    let mut last = start;
    while let Some(after) = next(last).into_iter().find(|id| !chain.contains(id)) {
        chain.push(after);
        last = after;
    }
    if chain.len() != sats.len() {
        return by_appearance();
    }
    chain
        .into_iter()
        .map(|id| schedule.name(id).to_string())
        .collect()
}

/// A live constellation's stores and directory, for the interrupt handler.
struct Registered {
    id: u64,
    /// `None` for a store that is down.
    pids: Vec<Option<u32>>,
    dir: PathBuf,
}

/// Every live constellation, as the interrupt handler sees it.
static REGISTRY: Mutex<Vec<Registered>> = Mutex::new(Vec::new());

/// Numbers registrations.
static NEXT_REGISTRATION: AtomicU64 = AtomicU64::new(0);

/// The registry, even if a thread panicked while holding it.
fn registry() -> MutexGuard<'static, Vec<Registered>> {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A constellation's entry in the registry, removed on drop.
struct Registration(u64);

impl Registration {
    fn new(stores: &[Redis], dir: &Path) -> Registration {
        let id = NEXT_REGISTRATION.fetch_add(1, Ordering::Relaxed);
        registry().push(Registered {
            id,
            pids: stores.iter().map(|s| Some(s.pid())).collect(),
            dir: dir.to_path_buf(),
        });
        Registration(id)
    }

    /// Runs `change` (which stops or starts store `index`) while holding the registry,
    /// so that the interrupt handler never signals a process already reaped, then records
    /// the process the store runs as now (`None`: down).
    fn change_store<T>(
        &self,
        index: usize,
        change: impl FnOnce() -> Result<(T, Option<u32>), String>,
    ) -> Result<T, String> {
        let mut registry = registry();
        let (value, pid) = change()?;
        let entry = registry.iter_mut().find(|r| r.id == self.0);
        if let Some(slot) = entry.and_then(|r| r.pids.get_mut(index)) {
            *slot = pid;
        }
        Ok(value)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Blocks while the interrupt handler cleans up (and the process then exits), so
        // a store is never reaped twice.
        registry().retain(|r| r.id != self.0);
    }
}

/// Write end of the pipe the signal handler reports to (-1 before installation).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

/// Whether [`install_interrupt_cleanup`] succeeded already.
static INSTALLED: Mutex<bool> = Mutex::new(false);

/// Makes SIGINT and SIGTERM stop every live constellation's stores, remove its
/// temporary directory and then exit the process with status 130 (SIGINT) or 143
/// (SIGTERM). For binaries; call once (later calls do nothing). It replaces any handler
/// of those signals. The handler only writes the signal number to a pipe; a thread
/// reading that pipe does the work (`exit` skips destructors, so proxies and threads just
/// end with the process).
pub fn install_interrupt_cleanup() -> io::Result<()> {
    let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    if *installed {
        return Ok(());
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(context(io::Error::last_os_error(), "cannot create a pipe"));
    }
    // SAFETY: both descriptors are fresh and owned here.
    let (reader, writer) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // A handler never blocks on a full pipe: further signals are dropped instead.
    // SAFETY: plain fcntl on an open descriptor.
    if unsafe { libc::fcntl(fds[1], libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
        return Err(context(
            io::Error::last_os_error(),
            "cannot configure the pipe",
        ));
    }
    std::thread::Builder::new()
        .name("constellation-signals".into())
        .spawn(move || on_interrupt(reader))
        .map_err(|e| context(e, "cannot start the signal thread"))?;
    // The write end lives for the rest of the process.
    SIGNAL_PIPE.store(
        std::os::fd::IntoRawFd::into_raw_fd(writer),
        Ordering::SeqCst,
    );
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler is async-signal-safe.
        let result = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = report_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if result != 0 {
            return Err(context(
                io::Error::last_os_error(),
                &format!("cannot handle signal {signal}"),
            ));
        }
    }
    *installed = true;
    Ok(())
}

/// The signal handler: writes the signal number to the pipe (async-signal-safe).
extern "C" fn report_signal(signal: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    let byte = signal as u8;
    // SAFETY: write(2) on an open descriptor from a one-byte buffer; errno is restored
    // so that the interrupted code does not see the handler's.
    unsafe {
        let errno = *libc::__errno_location();
        libc::write(fd, (&byte as *const u8).cast(), 1);
        *libc::__errno_location() = errno;
    }
}

/// The signal thread: waits for a signal, cleans up every registered constellation and
/// exits with `128 + signal`, holding the registry so no drop races the clean-up.
fn on_interrupt(mut pipe: File) {
    let mut byte = [0u8; 1];
    if pipe.read_exact(&mut byte).is_err() {
        return;
    }
    let signal = i32::from(byte[0]);
    let registry = registry();
    for entry in registry.iter() {
        for &pid in entry.pids.iter().flatten() {
            // SAFETY: the pid is an unreaped child (its `Registration` is still there).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        for &pid in entry.pids.iter().flatten() {
            // SAFETY: as above; a null status pointer is allowed.
            unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) };
        }
        let _ = std::fs::remove_dir_all(&entry.dir);
    }
    eprintln!(
        "constellation: signal {signal}: stopped {} constellation(s)",
        registry.len()
    );
    std::process::exit(128 + signal);
}

/// `e` with `what` in front of its message, keeping its kind.
fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
