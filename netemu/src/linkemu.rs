//! Link emulator: a user-space TCP proxy that makes a loopback connection behave like a
//! satellite, edge or cloud link, for kernels without the `netem` qdisc.
//!
//! A [`LinkEmu`] listens on a local port and forwards every connection to one upstream
//! address (a `redis-server` standing for a remote node), delaying the bytes on the way
//! over a [`Route`]: the [`Wire`](crate::wire::Wire)s each direction crosses. A standalone
//! emulator's route is one private wire each way with the emulator's [`LinkSpec`]
//! ([`LinkEmu::set`]); the constellation routes its proxies over wires shared by every
//! path that crosses the same physical link ([`LinkEmu::route`], [`crate::wire`]).
//!
//! * Each direction of each connection is an ordered pipe. A chunk read at time `t`
//!   crosses its wires hop by hop ([`crate::wire`]: queueing behind other flows on each
//!   wire, serialization, latency and a jitter sample uniform in `[-jitter, +jitter]`,
//!   never below zero) and is delivered at `max(previous delivery, arrival)`, so bytes
//!   never overtake each other. Latency is one-way: a request/response round trip costs
//!   about twice [`LinkSpec::latency_ms`].
//! * A bandwidth limit serializes each wire: a chunk of `n` bytes occupies it for
//!   `n / (mbps * 125)` ms, so 1 MB at 8 Mbit/s takes about a second, and flows sharing
//!   a wire share that rate. Reads are cut into pieces of about 5 ms of transmission time
//!   so that delivery stays smooth on slow links. A connection whose last chunk queued
//!   longer than [`QUEUE_LEAD`] behind other chunks on its wires pauses reading until
//!   only that much is left: each flow keeps at most about that much queued on a busy
//!   wire, so flows sharing it alternate (a fair share) and a new flow waits behind a
//!   short queue, not a long one.
//! * Connection set-up pays the route's round trip: the kernel completes the loopback
//!   handshake at once, so the emulator holds a new connection's first client bytes until
//!   one round trip (a delay sample each way) after it accepted the connection. Held bytes
//!   take no wire time until then: they cross (and queue on) the wires when the handshake
//!   ends, so connections opened meanwhile do not wait behind them, even when the link
//!   has turned faster in between.
//! * [`LinkEmu::cut`] takes the link down: existing connections are reset (`SO_LINGER` 0,
//!   so the client sees `ECONNRESET`) and new ones are accepted and reset at once.
//! * [`LinkEmu::blackhole`] silently stops the link: connections stay open but no bytes
//!   are delivered in either direction, and new connections are accepted but not
//!   forwarded. Nothing is lost: like TCP retransmitting into a dead link, the held bytes
//!   (and held connections) go through, in order, one latency after [`LinkEmu::restore`].
//!   Clients normally give up first, through their own timeouts.
//! * [`LinkEmu::set`] changes the link for existing and new connections; bytes already
//!   scheduled keep their delivery time.
//!
//! The emulator runs on its own small tokio runtime, so it works from synchronous and
//! asynchronous tests alike; dropping it closes the listener and every connection.
//! [`LinkEmu::start_in`] runs it on a runtime the caller owns instead, so that many
//! emulators can share a few worker threads; dropping such an emulator stops its tasks
//! (listener and connections close as soon as the runtime polls them). An
//! error on one connection (a peer reset, an unreachable upstream) resets that connection
//! only. Jitter comes from a tiny PRNG seeded per wire, so runs are repeatable.

use crate::wire::{Hops, Route, Wire};
use skylark_testkit::Rng;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Largest chunk read and forwarded at once.
const MAX_CHUNK: usize = 64 * 1024;
/// Smallest chunk when a bandwidth limit makes chunks smaller (one Ethernet payload).
const MIN_CHUNK: usize = 1460;
/// Transmission time of one chunk on a bandwidth-limited link, in milliseconds.
const CHUNK_TIME_MS: f64 = 5.0;
/// Chunks in flight per direction before the reader stops reading (backpressure).
const PIPE_DEPTH: usize = 64;
/// Cap on any single delay, so absurd settings cannot overflow a clock.
const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);
/// How long to wait for the upstream to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (out of file descriptors, say) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Worker threads of the emulator's runtime.
const WORKERS: usize = 2;
/// How long a direction's chunks may queue on its wires before it stops reading (its
/// share of a busy wire's queue).
pub const QUEUE_LEAD: Duration = Duration::from_millis(20);

/// How one link behaves; every value is one-way and applies to each direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkSpec {
    /// Propagation delay in milliseconds.
    pub latency_ms: f64,
    /// Half-width of the uniform jitter added to the latency, in milliseconds.
    pub jitter_ms: f64,
    /// Bandwidth in Mbit/s, or `None` for no limit.
    pub bandwidth_mbps: Option<f64>,
}

impl LinkSpec {
    /// A link with the given one-way latency, jitter and optional bandwidth limit.
    pub fn new(latency_ms: f64, jitter_ms: f64, bandwidth_mbps: Option<f64>) -> Self {
        LinkSpec {
            latency_ms,
            jitter_ms,
            bandwidth_mbps,
        }
    }

    /// A perfect link: no delay, no limit.
    pub fn ideal() -> Self {
        LinkSpec::new(0.0, 0.0, None)
    }

    /// Checks that delays are finite and non-negative and the bandwidth finite and
    /// positive. [`LinkEmu`] accepts any spec but treats a bad delay as 0 and a bad
    /// bandwidth as unlimited; use this to reject them instead.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("latency_ms", self.latency_ms),
            ("jitter_ms", self.jitter_ms),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{name} must be a finite number >= 0, not {v}"));
            }
        }
        match self.bandwidth_mbps {
            Some(b) if !b.is_finite() || b <= 0.0 => Err(format!(
                "bandwidth_mbps must be a finite number > 0 (or none), not {b}"
            )),
            _ => Ok(()),
        }
    }

    /// The standard deviation of the one-way delay, in milliseconds: the jitter is
    /// uniform in `[-jitter, +jitter]` (netem's default), whose deviation is
    /// `jitter / sqrt(3)`.
    pub fn delay_std_ms(&self) -> f64 {
        self.jitter_ms / f64::sqrt(3.0)
    }

    /// This spec with invalid values replaced as [`LinkSpec::validate`] describes.
    pub(crate) fn sanitized(self) -> Self {
        let delay = |v: f64| if v.is_finite() && v > 0.0 { v } else { 0.0 };
        LinkSpec {
            latency_ms: delay(self.latency_ms),
            jitter_ms: delay(self.jitter_ms),
            bandwidth_mbps: self.bandwidth_mbps.filter(|b| b.is_finite() && *b > 0.0),
        }
    }

    /// The one-way latency as a duration.
    pub(crate) fn latency(&self) -> Duration {
        millis(self.latency_ms)
    }

    /// Latency plus one jitter sample, never below zero.
    pub(crate) fn one_way_delay(&self, rng: &mut Rng) -> Duration {
        let sample = (rng.next_unit() * 2.0 - 1.0) * self.jitter_ms;
        millis(self.latency_ms + sample)
    }

    /// Time `bytes` occupy the link at its bandwidth (zero without a limit).
    pub(crate) fn serialization(&self, bytes: usize) -> Duration {
        match self.bandwidth_mbps {
            // 1 Mbit/s moves 125 bytes per millisecond.
            Some(mbps) => millis(bytes as f64 / (mbps * 125.0)),
            None => Duration::ZERO,
        }
    }

    /// Largest read to forward as one chunk: about [`CHUNK_TIME_MS`] of transmission.
    pub(crate) fn chunk_limit(&self) -> usize {
        match self.bandwidth_mbps {
            Some(mbps) => {
                let bytes = mbps * 125.0 * CHUNK_TIME_MS;
                (bytes as usize).clamp(MIN_CHUNK, MAX_CHUNK)
            }
            None => MAX_CHUNK,
        }
    }
}

impl Default for LinkSpec {
    fn default() -> Self {
        LinkSpec::ideal()
    }
}

impl fmt::Display for LinkSpec {
    /// `latency_ms=.. jitter_ms=.. bandwidth_mbps=..|none`, the control-port syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "latency_ms={} jitter_ms={} bandwidth_mbps=",
            self.latency_ms, self.jitter_ms
        )?;
        match self.bandwidth_mbps {
            Some(b) => write!(f, "{b}"),
            None => f.write_str("none"),
        }
    }
}

/// Milliseconds as a duration: negative or NaN is zero, anything above [`MAX_DELAY`]
/// (infinity included) is [`MAX_DELAY`].
fn millis(ms: f64) -> Duration {
    // Capped before converting: `from_secs_f64` panics on values it cannot represent.
    let secs = if ms > 0.0 { ms / 1000.0 } else { 0.0 };
    Duration::from_secs_f64(secs.min(MAX_DELAY.as_secs_f64()))
}

/// Whether the link carries traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// Bytes flow, delayed by the [`LinkSpec`].
    Up,
    /// Connections are reset.
    Cut,
    /// Connections stay open but nothing is delivered.
    Blackhole,
}

impl fmt::Display for LinkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkMode::Up => "up",
            LinkMode::Cut => "cut",
            LinkMode::Blackhole => "blackhole",
        })
    }
}

/// Counters since the emulator started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Client connections accepted, including those reset because the link was cut.
    pub accepted: u64,
    /// Client connections open now.
    pub active: u64,
    /// Client connections reset because the link was cut.
    pub reset: u64,
    /// Bytes written to the upstream (client to server).
    pub bytes_up: u64,
    /// Bytes written to clients (server to client).
    pub bytes_down: u64,
}

impl fmt::Display for LinkStats {
    /// One line of `key=value` pairs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "accepted={} active={} reset={} bytes_up={} bytes_down={}",
            self.accepted, self.active, self.reset, self.bytes_up, self.bytes_down
        )
    }
}

/// What every connection watches: changes apply at once.
#[derive(Clone)]
struct LinkState {
    /// The wires the connections cross.
    route: Arc<Route>,
    mode: LinkMode,
    /// Bumped by every [`LinkEmu::cut`]; a connection older than the current value dies.
    cut_epoch: u64,
}

/// Live counters behind [`LinkStats`].
#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    active: AtomicU64,
    reset: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// State shared by the handle and the runtime's tasks.
struct Shared {
    upstream: SocketAddr,
    /// The route of [`LinkEmu::set`]: one wire each way, this emulator's own.
    private: Arc<Route>,
    state: watch::Sender<LinkState>,
    counters: Counters,
    /// Set once, when the handle is dropped: every task of this emulator then ends.
    stop: watch::Sender<bool>,
}

/// A running link emulator; see the [module documentation](self).
pub struct LinkEmu {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// The emulator's own runtime; `None` when it runs on a caller's runtime
    /// ([`LinkEmu::start_in`]) and after the drop.
    runtime: Option<tokio::runtime::Runtime>,
}

impl LinkEmu {
    /// Starts an emulator on a free loopback port, forwarding to `upstream`.
    pub fn start(upstream: SocketAddr, spec: LinkSpec) -> io::Result<LinkEmu> {
        LinkEmu::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), upstream, spec)
    }

    /// Starts an emulator listening on `listen` (port 0 picks a free one), forwarding to
    /// `upstream`. The listener is bound when this returns.
    pub fn start_on(
        listen: SocketAddr,
        upstream: SocketAddr,
        spec: LinkSpec,
    ) -> io::Result<LinkEmu> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .thread_name("linkemu")
            .enable_all()
            .build()
            .map_err(|e| context(e, "linkemu: cannot start its tokio runtime"))?;
        let mut emu = LinkEmu::launch(runtime.handle(), listen, upstream, spec)?;
        emu.runtime = Some(runtime);
        Ok(emu)
    }

    /// Starts an emulator on a free loopback port, forwarding to `upstream`, whose tasks
    /// run on the caller's runtime `handle` (which needs its I/O and time drivers enabled)
    /// instead of a runtime of its own: many emulators can share a few worker threads.
    ///
    /// The listener is bound when this returns. Dropping the emulator stops its listener
    /// and connections as soon as the runtime next polls them; dropping (or shutting
    /// down) the runtime itself closes everything at once. The runtime must outlive the
    /// emulator for the emulator to forward anything.
    pub fn start_in(
        handle: &tokio::runtime::Handle,
        upstream: SocketAddr,
        spec: LinkSpec,
    ) -> io::Result<LinkEmu> {
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        LinkEmu::launch(handle, listen, upstream, spec)
    }

    /// Binds `listen` and spawns the accept loop on `handle`; the result owns no runtime.
    fn launch(
        handle: &tokio::runtime::Handle,
        listen: SocketAddr,
        upstream: SocketAddr,
        spec: LinkSpec,
    ) -> io::Result<LinkEmu> {
        let std_listener = std::net::TcpListener::bind(listen)
            .map_err(|e| context(e, &format!("linkemu: cannot listen on {listen}")))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let listener = {
            let _in_runtime = handle.enter();
            TcpListener::from_std(std_listener)
                .map_err(|e| context(e, &format!("linkemu: cannot register {addr}")))?
        };
        // Seeds from the port: emulators started one after another jitter differently.
        let seed = 0x5EED_11AB_0000_0000 ^ (u64::from(addr.port()) << 1);
        let private = Arc::new(Route::new(
            vec![Wire::new(spec, seed)],
            vec![Wire::new(spec, seed | 1)],
        ));
        let (state, _) = watch::channel(LinkState {
            route: Arc::clone(&private),
            mode: LinkMode::Up,
            cut_epoch: 0,
        });
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            upstream,
            private,
            state,
            counters: Counters::default(),
            stop,
        });
        handle.spawn(until_stopped(
            accept_loop(listener, Arc::clone(&shared)),
            shared.stop.subscribe(),
        ));
        Ok(LinkEmu {
            shared,
            addr,
            runtime: None,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `redis://<addr>`, for `SKYLARK_REDIS_URL`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// The upstream every connection is forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// The current link behaviour (sanitized, see [`LinkSpec::validate`]): the route's
    /// client-to-server hops as one link ([`Hops::summary`]).
    pub fn spec(&self) -> LinkSpec {
        self.shared.state.borrow().route.up.summary()
    }

    /// Whether the link is up, cut or blackholed.
    pub fn mode(&self) -> LinkMode {
        self.shared.state.borrow().mode
    }

    /// Makes the link this emulator's own wire each way with `spec`, for existing and new
    /// connections (leaving any shared route of [`LinkEmu::route`]). Bytes read from now
    /// on use the new values; bytes already scheduled keep their time, so order is
    /// preserved.
    pub fn set(&self, spec: LinkSpec) {
        for wire in self
            .shared
            .private
            .up
            .wires()
            .iter()
            .chain(self.shared.private.down.wires())
        {
            wire.set(spec);
        }
        let private = Arc::clone(&self.shared.private);
        self.shared.state.send_modify(|s| s.route = private);
    }

    /// Routes existing and new connections over `route`, whose wires other emulators may
    /// share: their flows then share the wires' bandwidth.
    pub fn route(&self, route: Route) {
        let route = Arc::new(route);
        self.shared.state.send_modify(|s| s.route = route);
    }

    /// Takes the link down: resets every connection and resets new ones as soon as they
    /// are accepted, until [`LinkEmu::restore`] or [`LinkEmu::blackhole`].
    pub fn cut(&self) {
        self.shared.state.send_modify(|s| {
            s.mode = LinkMode::Cut;
            s.cut_epoch += 1;
        });
    }

    /// Silently stops the link: nothing is delivered, connections stay open and new ones
    /// are accepted but held. After [`LinkEmu::restore`] held bytes and connections go
    /// through; after [`LinkEmu::cut`] they are reset.
    pub fn blackhole(&self) {
        self.shared
            .state
            .send_modify(|s| s.mode = LinkMode::Blackhole);
    }

    /// Brings the link back up. Connections reset by a cut stay dead; connections held by
    /// a blackhole resume, their held bytes delivered one latency later.
    pub fn restore(&self) {
        self.shared.state.send_modify(|s| s.mode = LinkMode::Up);
    }

    /// Counters since start.
    pub fn stats(&self) -> LinkStats {
        let c = &self.shared.counters;
        LinkStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            active: c.active.load(Ordering::Relaxed),
            reset: c.reset.load(Ordering::Relaxed),
            bytes_up: c.bytes_up.load(Ordering::Relaxed),
            bytes_down: c.bytes_down.load(Ordering::Relaxed),
        }
    }

    /// Runs one control command, as the `linkemu` CLI's control port does:
    /// `cut`, `blackhole`, `restore`, `stats`, or
    /// `set latency_ms=10 jitter_ms=2 bandwidth_mbps=40` (any subset; `bandwidth_mbps=none`
    /// removes the limit). Returns the answer line: `ok`, or for `stats` the mode, spec
    /// and counters as `key=value` pairs. A bad command changes nothing.
    pub fn command(&self, line: &str) -> Result<String, String> {
        let mut words = line.split_whitespace();
        let name = words.next().ok_or("empty command")?;
        let args: Vec<&str> = words.collect();
        if ["cut", "blackhole", "restore", "stats"].contains(&name) && !args.is_empty() {
            return Err(format!("{name} takes no arguments"));
        }
        match name {
            "cut" => self.cut(),
            "blackhole" => self.blackhole(),
            "restore" => self.restore(),
            "set" => self.apply(&args)?,
            "stats" => {
                return Ok(format!(
                    "mode={} {} {}",
                    self.mode(),
                    self.spec(),
                    self.stats()
                ))
            }
            other => {
                return Err(format!(
                    "unknown command {other:?} (expected cut, blackhole, restore, set or stats)"
                ))
            }
        }
        Ok("ok".to_string())
    }

    /// Applies `key=value` settings to the current spec at once, or none of them.
    fn apply(&self, settings: &[&str]) -> Result<(), String> {
        let spec = apply_settings(self.spec(), settings)?;
        self.set(spec);
        Ok(())
    }
}

impl Drop for LinkEmu {
    fn drop(&mut self) {
        // Ends the accept loop and every connection task, wherever they run.
        self.shared.stop.send_replace(true);
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime waits for its workers, which tokio forbids on a thread
            // that drives async code; a helper thread makes this safe from async tests.
            // Once it returns, the listener and every connection are closed.
            let dropper = std::thread::Builder::new()
                .name("linkemu-stop".into())
                .spawn(move || drop(runtime));
            if let Ok(handle) = dropper {
                let _ = handle.join();
            }
        }
    }
}

/// `base` with the `key=value` settings of a `set` command applied, validated.
fn apply_settings(base: LinkSpec, settings: &[&str]) -> Result<LinkSpec, String> {
    if settings.is_empty() {
        return Err("set needs key=value settings: latency_ms, jitter_ms, bandwidth_mbps".into());
    }
    let mut spec = base;
    for setting in settings {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("{setting:?} is not key=value"))?;
        match key {
            "latency_ms" => spec.latency_ms = parse_number(key, value)?,
            "jitter_ms" => spec.jitter_ms = parse_number(key, value)?,
            "bandwidth_mbps" if value == "none" => spec.bandwidth_mbps = None,
            "bandwidth_mbps" => spec.bandwidth_mbps = Some(parse_number(key, value)?),
            _ => {
                return Err(format!(
                    "unknown setting {key:?} (expected latency_ms, jitter_ms or bandwidth_mbps)"
                ))
            }
        }
    }
    spec.validate()?;
    Ok(spec)
}

/// Parses the number of setting `key`.
fn parse_number(key: &str, value: &str) -> Result<f64, String> {
    value
        .parse()
        .map_err(|_| format!("{key}={value:?} is not a number"))
}

/// `e` with `what` in front of its message, keeping its kind.
fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The error for a connection whose emulator is shutting down.
fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "linkemu is shutting down")
}

/// Runs `task` until it ends or the emulator is stopped (or gone); dropping the task
/// closes its sockets.
async fn until_stopped(task: impl Future<Output = ()>, mut stop: watch::Receiver<bool>) {
    tokio::select! {
        _ = task => {}
        // An error means the handle and its sender are gone: stop as well.
        _ = stop.wait_for(|stopped| *stopped) => {}
    }
}

/// Accepts clients forever, one task per connection.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(until_stopped(
                    serve(client, Arc::clone(&shared)),
                    shared.stop.subscribe(),
                ));
            }
            // Out of descriptors or an aborted handshake: keep listening.
            Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
        }
    }
}

/// Counts a connection as active while alive.
struct ActiveGuard<'a>(&'a AtomicU64);

impl<'a> ActiveGuard<'a> {
    fn new(active: &'a AtomicU64) -> Self {
        active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(active)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a relayed connection ended.
enum Outcome {
    /// Both directions reached end of stream.
    Closed,
    /// An error on either side: reset both.
    Failed,
    /// The link was cut: reset both.
    Cut,
}

/// Serves one client connection from accept to close.
async fn serve(mut client: TcpStream, shared: Arc<Shared>) {
    let counters = &shared.counters;
    let _active = ActiveGuard::new(&counters.active);
    let accepted = Instant::now();
    let rx = shared.state.subscribe();
    let (mode, epoch, handshake) = {
        let s = rx.borrow();
        (s.mode, s.cut_epoch, s.route.handshake())
    };
    if mode == LinkMode::Cut {
        counters.reset.fetch_add(1, Ordering::Relaxed);
        return abort(client);
    }
    let _ = client.set_nodelay(true);
    let connected = tokio::select! {
        _ = cut_signal(rx.clone(), epoch) => None,
        upstream = connect_when_up(rx.clone(), shared.upstream) => Some(upstream),
    };
    let mut upstream = match connected {
        None => {
            counters.reset.fetch_add(1, Ordering::Relaxed);
            return abort(client);
        }
        // The upstream is unreachable: the client sees a reset, as from a closed port.
        Some(Err(_)) => return abort(client),
        Some(Ok(upstream)) => upstream,
    };
    let outcome = tokio::select! {
        _ = cut_signal(rx.clone(), epoch) => Outcome::Cut,
        r = relay(&mut client, &mut upstream, &shared, accepted + handshake) => match r {
            Ok(()) => Outcome::Closed,
            Err(_) => Outcome::Failed,
        },
    };
    match outcome {
        Outcome::Closed => {}
        Outcome::Cut | Outcome::Failed => {
            if matches!(outcome, Outcome::Cut) {
                counters.reset.fetch_add(1, Ordering::Relaxed);
            }
            abort(client);
            abort(upstream);
        }
    }
}

/// Closes `stream` with a reset (`SO_LINGER` 0) instead of an orderly shutdown.
fn abort(stream: TcpStream) {
    // If the option cannot be set the close is an orderly one: still a failure to see.
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Resolves when the link is cut after `epoch`; never if the emulator goes away.
async fn cut_signal(mut rx: watch::Receiver<LinkState>, epoch: u64) {
    if rx.wait_for(|s| s.cut_epoch != epoch).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Connects to `upstream` once the link is not blackholed.
async fn connect_when_up(
    mut rx: watch::Receiver<LinkState>,
    upstream: SocketAddr,
) -> io::Result<TcpStream> {
    rx.wait_for(|s| s.mode != LinkMode::Blackhole)
        .await
        .map_err(|_| stopped())?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("linkemu: connecting to {upstream} timed out"),
            )
        })?
        .map_err(|e| context(e, &format!("linkemu: cannot connect to {upstream}")))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Forwards both directions until both end, or either fails; the client's first bytes
/// leave no earlier than `handshaken`.
async fn relay(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    shared: &Shared,
    handshaken: Instant,
) -> io::Result<()> {
    let (client_in, client_out) = client.split();
    let (upstream_in, upstream_out) = upstream.split();
    let counters = &shared.counters;
    let up = pipe(
        client_in,
        upstream_out,
        shared.state.subscribe(),
        &counters.bytes_up,
        Flow::new(Dir::Up, handshaken),
    );
    let down = pipe(
        upstream_in,
        client_out,
        shared.state.subscribe(),
        &counters.bytes_down,
        Flow::new(Dir::Down, Instant::now()),
    );
    tokio::try_join!(up, down).map(|_| ())
}

/// A direction of a connection.
#[derive(Clone, Copy)]
enum Dir {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

impl Dir {
    /// The hops of `route` this direction crosses.
    fn hops(self, route: &Route) -> &Hops {
        match self {
            Dir::Up => &route.up,
            Dir::Down => &route.down,
        }
    }
}

/// A chunk of one direction, with its delivery time.
struct Chunk {
    at: Instant,
    /// `None` marks the end of the stream (delivered as a write shutdown).
    data: Option<Vec<u8>>,
}

/// One direction: reads from `from`, delays, writes to `to`, counting bytes written.
async fn pipe<R, W>(
    from: R,
    to: W,
    rx: watch::Receiver<LinkState>,
    forwarded: &AtomicU64,
    flow: Flow,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, chunks) = mpsc::channel(PIPE_DEPTH);
    tokio::try_join!(
        read_side(from, tx, rx.clone(), flow),
        write_side(to, chunks, rx, forwarded)
    )
    .map(|_| ())
}

/// Reads chunks and schedules them until end of stream.
async fn read_side<R: AsyncRead + Unpin>(
    mut from: R,
    tx: mpsc::Sender<Chunk>,
    rx: watch::Receiver<LinkState>,
    mut flow: Flow,
) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        let route = Arc::clone(&rx.borrow().route);
        let limit = flow.dir.hops(&route).chunk_limit();
        let n = from.read(&mut buf[..limit]).await?;
        // Bytes read during the handshake take no wire time before it ends: reserving the
        // wires from that later start would make them look busy to every other flow.
        if let Some(handshaken) = flow.held(Instant::now()) {
            tokio::time::sleep_until(handshaken).await;
        }
        let route = Arc::clone(&rx.borrow().route);
        let (at, resume) = flow.next(&route, n, Instant::now());
        let data = (n > 0).then(|| buf[..n].to_vec());
        let end = data.is_none();
        if tx.send(Chunk { at, data }).await.is_err() || end {
            // The writer stopped (and reports why), or the stream ended.
            return Ok(());
        }
        if let Some(resume) = resume {
            tokio::time::sleep_until(resume).await;
        }
    }
}

/// Delivers chunks at their time, holding them while the link is blackholed.
async fn write_side<W: AsyncWrite + Unpin>(
    mut to: W,
    mut chunks: mpsc::Receiver<Chunk>,
    mut rx: watch::Receiver<LinkState>,
    forwarded: &AtomicU64,
) -> io::Result<()> {
    let mut not_before = Instant::now();
    while let Some(chunk) = chunks.recv().await {
        let mut at = chunk.at.max(not_before);
        loop {
            tokio::time::sleep_until(at).await;
            if rx.borrow().mode != LinkMode::Blackhole {
                break;
            }
            rx.wait_for(|s| s.mode != LinkMode::Blackhole)
                .await
                .map_err(|_| stopped())?;
            // Held bytes still have to cross the link once it is back.
            at = Instant::now() + rx.borrow().route.up.summary().latency();
        }
        not_before = at;
        match chunk.data {
            Some(data) => write_counted(&mut to, &data, forwarded).await?,
            None => return to.shutdown().await,
        }
    }
    Ok(())
}

/// Writes all of `data`, adding each written piece to `counter`.
async fn write_counted<W: AsyncWrite + Unpin>(
    to: &mut W,
    mut data: &[u8],
    counter: &AtomicU64,
) -> io::Result<()> {
    while !data.is_empty() {
        let n = to.write(data).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
        data = &data[n..];
    }
    Ok(())
}

/// Delivery times of one direction of one connection, in order.
struct Flow {
    dir: Dir,
    /// Nothing leaves before this (the end of the handshake, for the client's bytes).
    not_before: Instant,
    /// Delivery time of the previous chunk.
    last: Instant,
}

impl Flow {
    fn new(dir: Dir, not_before: Instant) -> Self {
        Flow {
            dir,
            not_before,
            last: not_before,
        }
    }

    /// Until when bytes read at `now` are held for the handshake, if they are: send them
    /// ([`Flow::next`]) only then.
    fn held(&self, now: Instant) -> Option<Instant> {
        (now < self.not_before).then_some(self.not_before)
    }

    /// The delivery time of `bytes` sent at `now` over `route`, and when to read on if
    /// they queued longer than [`QUEUE_LEAD`].
    ///
    /// The wires are reserved from `now`, never from a later time: a reservation in the
    /// future would make them look busy until then to every flow that shares them. The
    /// delivery is still no earlier than the end of the handshake (`last` starts there),
    /// but the caller waits for that end first ([`Flow::held`]) so that held bytes take
    /// their share of the wires when they really cross them.
    fn next(&mut self, route: &Route, bytes: usize, now: Instant) -> (Instant, Option<Instant>) {
        let sent = self.dir.hops(route).send(bytes, now);
        self.last = self.last.max(sent.arrival);
        let resume = sent
            .queued
            .checked_sub(QUEUE_LEAD)
            .filter(|d| !d.is_zero())
            .map(|d| now + d);
        (self.last, resume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range_and_delay_never_negative() {
        let mut rng = Rng::new(1);
        let spec = LinkSpec::new(10.0, 4.0, None);
        for _ in 0..10_000 {
            let d = spec.one_way_delay(&mut rng).as_secs_f64() * 1000.0;
            assert!((6.0..=14.0).contains(&d), "{d}");
        }
        let wide = LinkSpec::new(1.0, 50.0, None);
        assert!((0..1000).all(|_| wide.one_way_delay(&mut rng) <= millis(51.0)));
    }

    #[test]
    fn flow_preserves_order_and_accumulates_serialization() {
        let now = Instant::now();
        let mut flow = Flow::new(Dir::Up, now);
        let spec = LinkSpec::new(5.0, 5.0, Some(8.0));
        let route = Route::new(vec![Wire::new(spec, 7)], vec![]);
        let mut prev = now;
        for _ in 0..100 {
            let (at, _) = flow.next(&route, 1000, now);
            assert!(at >= prev);
            prev = at;
        }
        // 100 kB at 8 Mbit/s (1000 bytes per ms) is 100 ms of transmission.
        assert!(prev >= now + Duration::from_millis(100));
    }

    #[test]
    fn bytes_held_for_a_handshake_leave_the_wire_free_for_other_flows() {
        let route = Route::new(vec![Wire::new(LinkSpec::new(3.0, 0.0, None), 3)], vec![]);
        let now = Instant::now();
        let handshaken = now + Duration::from_secs(6);
        let mut held = Flow::new(Dir::Up, handshaken);
        assert_eq!(held.held(now), Some(handshaken));
        assert_eq!(held.held(handshaken), None);
        // Even sent early, held bytes arrive after the handshake and do not reserve the
        // wire until its end: a new flow on the same wire is not queued behind them.
        let (at, _) = held.next(&route, 100, now);
        assert!(at >= handshaken, "{at:?} before {handshaken:?}");
        let mut other = Flow::new(Dir::Up, now);
        let (at, resume) = other.next(&route, 100, now);
        assert_eq!(at, now + Duration::from_millis(3));
        assert_eq!(resume, None);
    }

    #[test]
    fn settings_parse_and_validate() {
        let base = LinkSpec::new(60.0, 30.0, Some(90.0));
        let s = apply_settings(base, &["latency_ms=10", "bandwidth_mbps=none"]);
        assert_eq!(s, Ok(LinkSpec::new(10.0, 30.0, None)));
        assert!(apply_settings(base, &[]).is_err());
        assert!(apply_settings(base, &["latency_ms=-1"]).is_err());
        assert!(apply_settings(base, &["latency_ms"]).is_err());
        assert!(apply_settings(base, &["speed=3"]).is_err());
        assert!(apply_settings(base, &["bandwidth_mbps=0"]).is_err());
        assert!(apply_settings(base, &["jitter_ms=NaN"]).is_err());
    }

    /// A threaded echo server on a free loopback port.
    fn echo_server() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = stream.try_clone().unwrap();
                    let mut writer = stream;
                    let _ = std::io::copy(&mut reader, &mut writer);
                });
            }
        });
        addr
    }

    /// Sends `msg` through `addr` on a fresh connection, returns the round-trip time.
    fn echo_rtt(addr: SocketAddr, msg: &[u8]) -> io::Result<Duration> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let started = std::time::Instant::now();
        s.write_all(msg)?;
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back)?;
        assert_eq!(back, msg);
        Ok(started.elapsed())
    }

    #[test]
    fn emulators_share_a_callers_runtime_and_stop_on_drop() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let upstream = echo_server();
        let slow = LinkSpec::new(20.0, 0.0, None);
        let a = LinkEmu::start_in(runtime.handle(), upstream, slow).unwrap();
        let b = LinkEmu::start_in(runtime.handle(), upstream, LinkSpec::ideal()).unwrap();
        assert!(a.runtime.is_none() && a.port() != b.port());
        assert!(echo_rtt(a.addr(), b"ping").unwrap() >= Duration::from_millis(40));
        echo_rtt(b.addr(), b"pong").unwrap();
        // A connection held open through `a` dies with it; `b` keeps working.
        let mut held = std::net::TcpStream::connect(a.addr()).unwrap();
        held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let addr = a.addr();
        drop(a);
        let mut buf = [0u8; 1];
        let n = std::io::Read::read(&mut held, &mut buf);
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while echo_rtt(addr, b"x").is_ok() {
            assert!(std::time::Instant::now() < deadline, "listener still open");
            std::thread::sleep(Duration::from_millis(10));
        }
        echo_rtt(b.addr(), b"still up").unwrap();
        assert_eq!(b.stats().accepted, 2);
    }

    #[test]
    fn sanitize_replaces_bad_values() {
        let s = LinkSpec::new(f64::NAN, -3.0, Some(0.0)).sanitized();
        assert_eq!(s, LinkSpec::ideal());
        assert_eq!(millis(f64::NAN), Duration::ZERO);
        assert_eq!(millis(f64::INFINITY), MAX_DELAY);
        assert_eq!(millis(1e30), MAX_DELAY);
        let absurd = LinkSpec::new(1e300, 1e300, Some(1e-300));
        let mut flow = Flow::new(Dir::Down, Instant::now());
        let route = Route::new(vec![], vec![Wire::new(absurd, 1)]);
        flow.next(&route, MAX_CHUNK, Instant::now());
        assert_eq!(absurd.chunk_limit(), MIN_CHUNK);
    }
}
