//! Redis access. A [`Store`] is one Redis server (the node-local store, a remote node's,
//! or the global store) reached two ways:
//! - [`Store::query`] on the calling thread over a blocking connection: the guest's own
//!   reads and writes, with no thread hand-off on the hot path;
//! - [`Store::query_async`] over a multiplexed connection on the plugin runtime: background
//!   propagation and parallel remote reads.
//!
//! Scripts go by digest (`EVALSHA`, [`crate::script`]): a request that meets a script cache
//! without the script (`NOSCRIPT`: flushed, or a restarted server) is sent once more with
//! the script's text, and an ACL user refused `EVALSHA` (`NOPERM`) gets the text from then
//! on. Only a single command is sent again this way, never a transaction.
//!
//! Both reconnect once when a cached connection turns out to be broken, and both bound
//! every request by the store's deadline: the async path in total (a `tokio` timeout); the
//! blocking path per socket read and write only, so it serves only a nearby node-local
//! store (a Unix socket or loopback). Every other store's `query` runs on the plugin
//! runtime with one total deadline, so a store or an on-path delay that trickles its reply
//! cannot hold the guest's thread beyond `SKYLARK_TIMEOUT_MS` (issue 16 point 4). Both authenticate with the store's credentials
//! and, for `rediss://`, use the configured TLS roots and client certificate.
//!
//! Every reply read over a runtime connection is bounded in size ([`Store::reply_bound`],
//! [`crate::reply_bound`]): a bundle read ([`BundleRead`], [`Store::query_bundle`]) by what
//! its script may return for `SKYLARK_MAX_BUNDLE_BYTES`, anything else by
//! `SKYLARK_MAX_REPLY_BYTES`. A larger reply
//! fails the request with `StoreError` and drops the connection (issue 16 point 4). The
//! blocking path of a nearby node-local store over plain TCP or a Unix socket is
//! [`crate::direct`]'s, bounded the same way (a bundle read's reply over its bound fails
//! with `BundleTooLarge`); over TLS it is redis-rs's own and not bounded.
//!
//! The global store may instead be a Redis Cluster or a Sentinel-managed primary
//! ([`crate::distributed`]): reached on the runtime only, with the same deadlines, and,
//! with `SKYLARK_GLOBAL_MIN_REPLICAS`, writes ([`Store::write_async_within`]) count only
//! once `WAIT` confirms them on that many replicas.

use crate::config::{redact, Credentials, GlobalTarget, Tls};
use crate::connect::Opener;
use crate::direct::{Direct, Link};
use crate::distributed::{is_redirect, Conn, Settings, Target};
use crate::error::CallError;
use crate::resp::{Arg, Packer, Piece};
use crate::script::{self, Script};
use redis::io::tcp::TcpSettings;
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, ConnectionAddr, ConnectionInfo, ConnectionLike,
    ErrorKind, IntoConnectionInfo, RedisError, TlsCertificates, Value,
};
use skylark_abi::Status;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex as AsyncMutex;

/// The fields of a hash as raw (name, value) pairs.
pub type HashPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A request: a single command or a pipeline (atomic or not).
#[derive(Clone)]
pub enum Request {
    Cmd(redis::Cmd),
    Pipe(redis::Pipeline),
}

/// A request whose reply may be a whole bundle: the bundle read's script
/// ([`crate::bundle_read::request`]), sent with [`Store::query_bundle`] or
/// [`Store::query_bundle_async`], which bound its reply by the bundle limit
/// ([`ReplyLimits::bundle`]). The tag is the type, not the command's text: any other
/// script is bounded by the other limit, whatever it calls.
#[derive(Clone)]
pub struct BundleRead(Request);

impl BundleRead {
    /// Tags `cmd` as a read of a whole bundle.
    pub(crate) fn new(cmd: redis::Cmd) -> BundleRead {
        BundleRead(Request::Cmd(cmd))
    }

    /// The request itself.
    pub fn request(&self) -> &Request {
        &self.0
    }
}

/// Tries of a request to a cluster or Sentinel store that met a redirect
/// ([`crate::distributed::is_redirect`]), after the first, and the first pause between
/// them (doubling: 20 + 40 + 80 + 160 ms at most).
const REDIRECT_RETRIES: u32 = 4;
const REDIRECT_BACKOFF: Duration = Duration::from_millis(20);

/// The largest send buffer [`Store::query_transaction`] keeps for the next request (a put of a
/// rare huge value does not pin its size for the life of the process).
const KEEP_SEND_BUFFER: usize = 8 << 20;

/// The calling-thread connection (opened on first use) and the send buffer of
/// [`Store::query_transaction`].
#[derive(Default)]
struct Blocking {
    conn: Option<Link>,
    buf: Vec<u8>,
    /// `conn` has the warm-up's `PING` in flight: its reply is read before the next
    /// request's (`Store::on_connection`).
    pong_pending: bool,
}

/// How many replicas must confirm a write (`WAIT`), and within what time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Acknowledge {
    /// 0: no `WAIT`.
    pub replicas: u32,
    pub within: Duration,
}

/// The most bytes a reply may take ([`Store::reply_bound`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLimits {
    /// A reply that may hold a whole bundle (`HGETALL`, `HKEYS`, a [`BundleRead`]).
    pub bundle: u64,
    /// Any other reply.
    pub other: u64,
}

impl ReplyLimits {
    /// The limits `config` sets ([`ReplyLimits::new`]).
    pub fn from_config(config: &crate::config::Config) -> ReplyLimits {
        ReplyLimits::new(config.max_bundle_bytes, config.max_reply_bytes)
    }

    /// The limits for bundles of at most `max_bundle_bytes` of state and other replies of
    /// at most `other` bytes. A bundle's reply may hold the state and the reserved fields
    /// the bundle read's script lets through ([`crate::bundle_read`]), three times over
    /// for the RESP framing of many small fields (a field of a 1-byte name and an empty
    /// value takes 13 bytes on the wire), plus 1 MiB.
    pub fn new(max_bundle_bytes: u32, other: u64) -> ReplyLimits {
        let content = u64::from(max_bundle_bytes)
            .saturating_add(crate::bundle_read::reserved_limit(max_bundle_bytes));
        ReplyLimits {
            bundle: content.saturating_mul(3).saturating_add(1 << 20),
            other,
        }
    }
}

impl Default for ReplyLimits {
    /// The limits of the default configuration.
    fn default() -> Self {
        use crate::config::vars::{Kind, Var, MAX_BUNDLE_BYTES, MAX_REPLY_BYTES};
        let int = |v: &Var| match v.kind {
            Kind::Int { default, .. } => default,
            _ => 0,
        };
        let max = u32::try_from(int(&MAX_BUNDLE_BYTES)).unwrap_or(u32::MAX);
        ReplyLimits::new(max, int(&MAX_REPLY_BYTES))
    }
}

/// One Redis server, or (the global store only) a cluster or Sentinel deployment.
pub struct Store {
    target: Target,
    /// The ACL user (`None`: the default user).
    user: Option<String>,
    acknowledge: Acknowledge,
    shown: String,
    /// Where the credentials come from, for messages about refused access.
    auth: String,
    tls: bool,
    conn_cfg: AsyncConnectionConfig,
    opener: Opener,
    /// [`ReplyLimits`]: bundle, other.
    limits: [AtomicU64; 2],
    blocking: std::sync::Mutex<Blocking>,
    shared: AsyncMutex<Option<Conn>>,
    timeout: Duration,
    connect_timeout: Duration,
    /// `query` goes through the runtime, with one deadline for the whole request.
    total_deadline: bool,
    /// Scripts may go by digest: cleared when the ACL user is refused `EVALSHA`.
    by_sha: AtomicBool,
    /// This store, for handing it to the runtime.
    me: std::sync::Weak<Store>,
}

/// A store that could not be set up (a URL the client rejects, unusable TLS material);
/// no connection was tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenError {
    /// The URL, password redacted.
    pub url: String,
    pub reason: String,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.url, self.reason)
    }
}

impl std::error::Error for OpenError {}

impl Store {
    /// The node-local store `config` names (`SKYLARK_REDIS_URL` with its credentials,
    /// TLS settings and timeouts); does not connect.
    pub fn local(config: &crate::config::Config) -> Result<Arc<Store>, OpenError> {
        let store = Store::new(
            &config.redis_url,
            &config.credentials,
            &config.tls,
            config.timeout,
            config.connect_timeout,
        )?;
        store.set_reply_limits(ReplyLimits::from_config(config));
        Ok(store)
    }

    /// A store for `url`; does not connect. `credentials` apply unless the URL carries
    /// its own; `tls` applies to a `rediss://` URL. Guest-thread calls use the blocking
    /// connection if the store is nearby (a Unix socket or loopback), else the runtime.
    pub fn new(
        url: &str,
        credentials: &Credentials,
        tls: &Tls,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Arc<Store>, OpenError> {
        Store::build(url, credentials, tls, timeout, connect_timeout, false)
    }

    /// Like [`Store::remote`] for the global store: `url` may also be a cluster or
    /// Sentinel URL (`config::GlobalTarget`), and writes through
    /// [`Store::write_async_within`] wait for `acknowledge`.
    pub fn global(
        url: &str,
        credentials: &Credentials,
        tls: &Tls,
        timeout: Duration,
        connect_timeout: Duration,
        acknowledge: Acknowledge,
    ) -> Result<Arc<Store>, OpenError> {
        let open_error = |reason: String| OpenError {
            url: redact(url),
            reason,
        };
        let target =
            crate::config::global_url::parse(url).map_err(|e| open_error(e.to_string()))?;
        if let GlobalTarget::Single(_) = target {
            return Store::build_with(
                url,
                credentials,
                tls,
                timeout,
                connect_timeout,
                true,
                acknowledge,
            );
        }
        let settings = Settings {
            credentials,
            tls,
            connect_timeout: connect_timeout.min(timeout),
        };
        let (target, is_tls, user, auth) =
            Target::distributed(&target, &settings, |u| connection_info(u, credentials))
                .map_err(|e| open_error(e.to_string()))?;
        Ok(Store::assemble(
            target,
            url,
            tls,
            user,
            auth,
            is_tls,
            timeout,
            connect_timeout,
            true,
            acknowledge,
        ))
    }

    /// Like [`Store::new`] for another node's store or the global store: guest-thread
    /// calls always go through the runtime, with one total deadline.
    pub fn remote(
        url: &str,
        credentials: &Credentials,
        tls: &Tls,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Arc<Store>, OpenError> {
        Store::build(url, credentials, tls, timeout, connect_timeout, true)
    }

    fn build(
        url: &str,
        credentials: &Credentials,
        tls: &Tls,
        timeout: Duration,
        connect_timeout: Duration,
        remote: bool,
    ) -> Result<Arc<Store>, OpenError> {
        let none = Acknowledge::default();
        Store::build_with(
            url,
            credentials,
            tls,
            timeout,
            connect_timeout,
            remote,
            none,
        )
    }

    fn build_with(
        url: &str,
        credentials: &Credentials,
        tls: &Tls,
        timeout: Duration,
        connect_timeout: Duration,
        remote: bool,
        acknowledge: Acknowledge,
    ) -> Result<Arc<Store>, OpenError> {
        if crate::config::is_distributed(url) {
            return Err(OpenError {
                url: redact(url),
                reason: "a Redis Cluster or Sentinel URL is accepted only for the global store \
                         (SKYLARK_GLOBAL_URL)"
                    .into(),
            });
        }
        let (client, auth) = client(url, credentials, tls).map_err(|e| OpenError {
            url: redact(url),
            reason: e.to_string(),
        })?;
        let addr = client.get_connection_info().addr();
        let is_tls = matches!(addr, ConnectionAddr::TcpTls { .. });
        let nearby = match addr {
            ConnectionAddr::Unix(_) => true,
            ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => {
                matches!(host.as_str(), "localhost" | "::1" | "[::1]")
                    || host
                        .parse::<std::net::Ipv4Addr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            _ => false,
        };
        let user = client
            .get_connection_info()
            .redis_settings()
            .username()
            .map(str::to_string);
        Ok(Store::assemble(
            Target::Single(client),
            url,
            tls,
            user,
            auth,
            is_tls,
            timeout,
            connect_timeout,
            remote || !nearby,
            acknowledge,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        target: Target,
        url: &str,
        tls_material: &Tls,
        user: Option<String>,
        auth: String,
        tls: bool,
        timeout: Duration,
        connect_timeout: Duration,
        total_deadline: bool,
        acknowledge: Acknowledge,
    ) -> Arc<Store> {
        let connect_timeout = connect_timeout.min(timeout);
        let conn_cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            // Each request has its own deadline (query_async, query_async_within); a
            // connection-wide response timeout would cut long copies short.
            .set_response_timeout(None);
        // A cluster or Sentinel deployment is reached on the runtime only.
        let total_deadline = total_deadline || target.is_distributed();
        let limits = ReplyLimits::default();
        Arc::new_cyclic(|me| Store {
            target,
            user,
            acknowledge,
            shown: redact(url),
            auth,
            tls,
            conn_cfg,
            opener: Opener::new(tls_material),
            limits: [AtomicU64::new(limits.bundle), AtomicU64::new(limits.other)],
            blocking: std::sync::Mutex::new(Blocking::default()),
            shared: AsyncMutex::new(None),
            timeout,
            connect_timeout,
            total_deadline,
            by_sha: AtomicBool::new(true),
            me: me.clone(),
        })
    }

    /// Sets the most bytes a reply may take, for connections opened from now on and
    /// requests sent from now on.
    pub fn set_reply_limits(&self, limits: ReplyLimits) {
        self.limits[0].store(limits.bundle, Ordering::Relaxed);
        self.limits[1].store(limits.other, Ordering::Relaxed);
    }

    /// The most bytes a reply may take.
    pub fn reply_limits(&self) -> ReplyLimits {
        ReplyLimits {
            bundle: self.limits[0].load(Ordering::Relaxed),
            other: self.limits[1].load(Ordering::Relaxed),
        }
    }

    /// The most bytes the reply to `request` may take: for each command, the bundle limit
    /// if it returns a whole hash (`HGETALL`, `HKEYS`), else the other limit; a
    /// pipeline's reply (or a transaction's `EXEC` array) the sum over its commands. A
    /// [`BundleRead`] gets the bundle limit through [`Store::query_bundle`].
    pub fn reply_bound(&self, request: &Request) -> u64 {
        let limits = self.reply_limits();
        let one = |c: &redis::Cmd| {
            if may_return_bundle(c) {
                limits.bundle
            } else {
                limits.other
            }
        };
        match request {
            Request::Cmd(c) => one(c),
            Request::Pipe(p) => p.cmd_iter().map(one).fold(0, u64::saturating_add),
        }
    }

    /// The store's URL with secrets redacted.
    pub fn name(&self) -> &str {
        &self.shown
    }

    /// The ACL user this store authenticates as (`None`: the default user). Not a secret.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The replicas a write must reach ([`Store::write_async_within`]).
    pub fn acknowledge(&self) -> Acknowledge {
        self.acknowledge
    }

    /// Whether the store is reached over TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The deadline of one request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether guest-thread calls have one total deadline (see the module docs).
    pub fn has_total_deadline(&self) -> bool {
        self.total_deadline
    }

    /// Sends `request` from the calling thread and waits for the reply: for a nearby store
    /// over the blocking connection (the store's deadline for connecting and for each
    /// read and write), for any other on the runtime within the store's deadline in total.
    pub fn query(&self, request: &Request) -> Result<Value, CallError> {
        self.query_bounded(request, self.reply_bound(request))
    }

    /// [`Store::query`] of a bundle read, its reply bounded by the bundle limit on the
    /// runtime.
    pub fn query_bundle(&self, read: &BundleRead) -> Result<Value, CallError> {
        self.query_bounded(read.request(), self.bundle_bound(read))
    }

    /// The most bytes the reply to the bundle read `read` may take: the bundle limit.
    pub fn bundle_bound(&self, _read: &BundleRead) -> u64 {
        self.reply_limits().bundle
    }

    /// [`Store::query`] with the reply bounded by `bound` bytes on the runtime.
    fn query_bounded(&self, request: &Request, bound: u64) -> Result<Value, CallError> {
        if self.total_deadline {
            if let Some(me) = self.me.upgrade() {
                let request = request.clone();
                // query_async_bounded enforces the deadline (with the store's name in its
                // message); the margin only guards against a stalled runtime.
                let margin = self.timeout + Duration::from_millis(250);
                return crate::runtime::run(margin, async move {
                    me.query_async_bounded(&request, me.timeout, bound).await
                });
            }
        }
        self.query_blocking(request, bound)
    }

    fn query_blocking(&self, request: &Request, bound: u64) -> Result<Value, CallError> {
        let bodies = self.bodies_first(request);
        let request = bodies.as_ref().unwrap_or(request);
        let send = |conn: &mut Link, request: &Request| match request {
            Request::Cmd(c) => c.query::<Value>(conn),
            Request::Pipe(p) => p.query::<Value>(conn),
        };
        let mut blocking = self.blocking();
        let Blocking {
            conn, pong_pending, ..
        } = &mut *blocking;
        self.on_connection(conn, pong_pending, bound, |conn| {
            match send(conn, request) {
                Err(e) if script::needs_body(&e) => match script::with_bodies(request) {
                    Some(with_text) => {
                        self.script_refused(&e);
                        send(conn, &with_text)
                    }
                    None => Err(e),
                },
                reply => reply,
            }
        })
    }

    /// Whether scripts may go by digest to this store (its ACL user was not refused
    /// `EVALSHA`).
    pub fn scripts_by_sha(&self) -> bool {
        self.by_sha.load(Ordering::Relaxed)
    }

    /// `request` with its script's text, if scripts may not go by digest here.
    fn bodies_first(&self, request: &Request) -> Option<Request> {
        if self.scripts_by_sha() {
            return None;
        }
        script::with_bodies(request)
    }

    /// Notes a refused script by digest ([`script::needs_body`]): a refused `EVALSHA`
    /// sends the scripts' text from now on; a flushed cache is refilled by that text.
    fn script_refused(&self, e: &RedisError) {
        if script::is_evalsha_denied(e) && self.by_sha.swap(false, Ordering::Relaxed) {
            crate::skylog!(
                Info,
                "{}: the ACL user may not run EVALSHA; sending scripts as EVAL (grant +evalsha)",
                self.shown
            );
        }
    }

    /// Runs `script` as one command (`EVALSHA`) with `args` (the key count, the keys,
    /// the arguments) on the calling thread, like [`Store::query_transaction`] (packed
    /// into the kept send buffer; large values written from where they are). A cache
    /// without the script or a user refused `EVALSHA` gets the script's text in a second
    /// request: the script runs once, or not at all.
    pub fn query_script(&self, script: &Script, args: &[Arg<'_>]) -> Result<Value, CallError> {
        let mut blocking = self.blocking();
        let Blocking {
            conn,
            buf,
            pong_pending,
        } = &mut *blocking;
        let mut by_sha = self.scripts_by_sha();
        let result =
            self.on_connection(conn, pong_pending, self.reply_limits().other, |conn| loop {
                let head: [Arg<'_>; 2] = if by_sha {
                    ["EVALSHA".into(), script.sha().into()]
                } else {
                    ["EVAL".into(), script.body().into()]
                };
                let mut packer = Packer::new(buf);
                packer.command_parts(&[&head, args]);
                let (pieces, packed) = packer.finish();
                for piece in &pieces {
                    conn.send_packed_command(match piece {
                        Piece::Buffered(span) => &packed[span.clone()],
                        Piece::Borrowed(value) => value,
                    })?;
                }
                match conn.recv_response()?.extract_error() {
                    Err(e) if by_sha && script::needs_body(&e) => {
                        self.script_refused(&e);
                        by_sha = false;
                    }
                    reply => return reply,
                }
            });
        if buf.capacity() > KEEP_SEND_BUFFER {
            *buf = Vec::new();
        }
        result
    }

    /// Runs the commands `cmds` as one transaction (`MULTI` ... `EXEC`, one round trip)
    /// on the calling thread, like [`Store::query`], and returns their replies (an error
    /// reply of any of them is an error). The request is packed straight from the
    /// borrowed arguments into a send buffer kept with the connection (no allocation
    /// once it has grown); values of `resp::BORROW_FROM` bytes or more are written from
    /// where they are, without a copy.
    pub fn query_transaction(&self, cmds: &[&[Arg<'_>]]) -> Result<Vec<Value>, CallError> {
        let mut blocking = self.blocking();
        let Blocking {
            conn,
            buf,
            pong_pending,
        } = &mut *blocking;
        let mut packer = Packer::new(buf);
        packer.command(&["MULTI".into()]);
        for c in cmds {
            packer.command(c);
        }
        packer.command(&["EXEC".into()]);
        let (pieces, packed) = packer.finish();
        let result = self.on_connection(conn, pong_pending, self.reply_limits().other, |conn| {
            for piece in &pieces {
                conn.send_packed_command(match piece {
                    Piece::Buffered(span) => &packed[span.clone()],
                    Piece::Borrowed(value) => value,
                })?;
            }
            // MULTI's reply and one per queued command, then EXEC's. A command refused
            // when queued fails the request. The first I/O error (a timeout) ends it:
            // redis-rs's req_packed_commands would wait for every remaining reply.
            let mut refused = None;
            for _ in 0..=cmds.len() {
                if let Value::ServerError(e) = conn.recv_response()? {
                    refused.get_or_insert(e);
                }
            }
            let exec = conn.recv_response()?;
            match refused {
                Some(e) => Value::ServerError(e).extract_error(),
                None => exec.extract_error(),
            }
        });
        if buf.capacity() > KEEP_SEND_BUFFER {
            *buf = Vec::new();
        }
        match result? {
            Value::Array(replies) if replies.len() == cmds.len() => Ok(replies),
            other => Err(self.reply_error(format!(
                "unexpected reply {other:?} to a transaction of {} commands",
                cmds.len()
            ))),
        }
    }

    /// Like [`Store::query_transaction`] for a write that may have to reach replicas: on
    /// a store reached through the runtime (a remote or the global store, a cluster or
    /// Sentinel deployment) or with replicas to wait for, the commands go out as an atomic
    /// pipeline through [`Store::write`] (one total deadline, `WAIT` after `EXEC` in the
    /// same pipeline); else over the calling thread's connection.
    pub fn write_transaction(&self, cmds: &[&[Arg<'_>]]) -> Result<Vec<Value>, CallError> {
        if !self.total_deadline && self.acknowledge.replicas == 0 {
            return self.query_transaction(cmds);
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for c in cmds {
            pipe.add_command(crate::resp::cmd(c));
        }
        match self.write(&Request::Pipe(pipe))? {
            Value::Array(replies) if replies.len() == cmds.len() => Ok(replies),
            other => Err(self.reply_error(format!(
                "unexpected reply {other:?} to a transaction of {} commands",
                cmds.len()
            ))),
        }
    }

    /// Runs `exchange` on the calling thread's connection with its lock held throughout,
    /// so that requests that belong together (a `WATCH` and the transaction it guards)
    /// meet no other request on that connection; connecting, and reconnecting once on a
    /// broken connection (`exchange` then runs again from its start), as [`Store::query`]
    /// does. `None` for a store without the blocking path (a total deadline): use
    /// [`Store::query`] there.
    pub fn exchange_blocking(
        &self,
        exchange: impl FnMut(&mut Link) -> redis::RedisResult<Value>,
    ) -> Option<Result<Value, CallError>> {
        if self.total_deadline {
            return None;
        }
        let mut blocking = self.blocking();
        let Blocking {
            conn, pong_pending, ..
        } = &mut *blocking;
        let bound = self.reply_limits().bundle;
        Some(self.on_connection(conn, pong_pending, bound, exchange))
    }

    /// Whether the calling thread's connection is [`Direct`] (plain TCP or a Unix socket).
    fn is_direct(&self) -> bool {
        matches!(&self.target, Target::Single(c) if crate::direct::supports(c.get_connection_info()))
    }

    /// `HGETALL key` on the calling thread's connection, its reply bounded by `bound`
    /// bytes, where that connection is [`Direct`] (a nearby store over plain TCP or a Unix
    /// socket, no total deadline): `None` elsewhere. A reply over the bound fails with
    /// `StoreError` (`reply larger than N bytes`) before its bytes are read, and ends the
    /// connection.
    pub fn hgetall_direct(&self, key: &str, bound: u64) -> Option<Result<Value, CallError>> {
        if self.total_deadline || !self.is_direct() {
            return None;
        }
        let mut blocking = self.blocking();
        let Blocking {
            conn, pong_pending, ..
        } = &mut *blocking;
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(key);
        Some(self.on_connection(conn, pong_pending, bound, |conn| cmd.query(conn)))
    }

    /// The calling-thread connection and its send buffer. A poisoned lock only means
    /// another call panicked mid-request; the slot is still valid, and a half-used
    /// connection is dropped by [`Store::on_connection`].
    fn blocking(&self) -> std::sync::MutexGuard<'_, Blocking> {
        self.blocking
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `send` on the connection in `slot`, connecting first if there is none and
    /// once more if the connection turns out to be broken. If `pong_pending`, the
    /// warm-up's `PING` ([`Store::warm_up`]) is answered first, as part of the request
    /// (within its deadline, its failure the request's).
    fn on_connection(
        &self,
        slot: &mut Option<Link>,
        pong_pending: &mut bool,
        bound: u64,
        mut send: impl FnMut(&mut Link) -> redis::RedisResult<Value>,
    ) -> Result<Value, CallError> {
        let mut reconnected = false;
        loop {
            let conn = match slot {
                Some(conn) => conn,
                None => slot.insert(
                    self.connect_blocking()
                        .map_err(|e| e.context(&self.shown))?,
                ),
            };
            conn.set_bound(self.reply_limits().other);
            let warmed = if std::mem::take(pong_pending) {
                conn.recv_response().map(drop)
            } else {
                Ok(())
            };
            conn.set_bound(bound);
            match warmed.and_then(|()| send(conn)) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if let Some(limit) = conn.exceeded() {
                        // Closed mid-reply; not tried again (the reply would be as large).
                        *slot = None;
                        return Err(CallError::new(
                            Status::StoreError,
                            format!(
                                "{}: reply larger than {limit} bytes, the most this request \
                                 may return (SKYLARK_MAX_REPLY_BYTES; for a bundle read, from \
                                 SKYLARK_MAX_BUNDLE_BYTES): connection dropped",
                                self.shown
                            ),
                        ));
                    }
                    let broken = is_broken(&e);
                    if broken || e.is_timeout() || !conn.is_open() {
                        // A late reply would be read as the answer to the next request.
                        *slot = None;
                    }
                    if broken && !reconnected {
                        reconnected = true;
                        continue;
                    }
                    return Err(self.classify(e).context(&self.shown));
                }
            }
        }
    }

    /// Opens the calling-thread connection if it is not open (what [`Store::query`] would
    /// do first) and sends one `PING` on it without waiting for the reply, so that the
    /// first request finds the connection open and the server's side of it awake. The
    /// lock is held while connecting (a request that comes meanwhile waits for this
    /// connection instead of opening its own), not for the reply: the first request
    /// reads it before its own (`Store::on_connection`).
    pub fn warm_up(&self) -> Result<(), CallError> {
        let mut blocking = self.blocking();
        if blocking.conn.is_some() {
            return Ok(());
        }
        let mut conn = self
            .connect_blocking()
            .map_err(|e| e.context(&self.shown))?;
        conn.send_packed_command(b"*1\r\n$4\r\nPING\r\n")
            .map_err(|e| self.classify(e).context(&self.shown))?;
        blocking.conn = Some(conn);
        blocking.pong_pending = true;
        Ok(())
    }

    fn connect_blocking(&self) -> Result<Link, CallError> {
        let Target::Single(client) = &self.target else {
            return Err(CallError::new(
                Status::StoreError,
                "a cluster or Sentinel store is reached on the plugin runtime only",
            ));
        };
        if let Some(direct) = Direct::connect(
            client.get_connection_info(),
            self.connect_timeout,
            self.timeout,
        ) {
            return direct.map(Link::Direct).map_err(|e| self.connect_error(e));
        }
        let conn = client
            .get_connection_with_timeout(self.connect_timeout)
            .map_err(|e| self.connect_error(e))?;
        for r in [
            conn.set_read_timeout(Some(self.timeout)),
            conn.set_write_timeout(Some(self.timeout)),
        ] {
            r.map_err(|e| self.connect_error(e))?;
        }
        if self.tls {
            // The TLS handshake runs on the first exchange, and without CLIENT SETINFO
            // (or AUTH) connecting exchanges nothing: a PING completes it here, so that a
            // refused certificate is reported as a failure to connect.
            let mut conn = conn;
            redis::cmd("PING")
                .query::<Value>(&mut conn)
                .map_err(|e| self.connect_error(e))?;
            return Ok(Link::Redis(conn));
        }
        Ok(Link::Redis(conn))
    }

    /// Whether the store holds a runtime connection (or one is being used or opened
    /// right now): a request need not open one first.
    pub fn has_connection(&self) -> bool {
        self.shared.try_lock().map_or(true, |c| c.is_some())
    }

    /// Sends `request` over the shared multiplexed connection; must run on the plugin
    /// runtime. Bounded by the store's deadline.
    pub async fn query_async(&self, request: &Request) -> Result<Value, CallError> {
        self.query_async_within(request, self.timeout).await
    }

    /// [`Store::query_async`] of a bundle read, its reply bounded by the bundle limit.
    pub async fn query_bundle_async(&self, read: &BundleRead) -> Result<Value, CallError> {
        let bound = self.bundle_bound(read);
        self.query_async_bounded(read.request(), self.timeout, bound)
            .await
    }

    /// Like [`Store::query_async`] with a deadline of its own (a large copy over a slow
    /// link needs longer than a small request).
    pub async fn query_async_within(
        &self,
        request: &Request,
        deadline: Duration,
    ) -> Result<Value, CallError> {
        let bound = self.reply_bound(request);
        self.query_async_bounded(request, deadline, bound).await
    }

    /// [`Store::query_async_within`] with the reply bounded by `bound` bytes.
    async fn query_async_bounded(
        &self,
        request: &Request,
        deadline: Duration,
        bound: u64,
    ) -> Result<Value, CallError> {
        match tokio::time::timeout(deadline, self.query_async_inner(request, bound)).await {
            Ok(r) => r.map_err(|e| e.context(&self.shown)),
            Err(_) => {
                self.forget().await;
                Err(CallError::new(
                    Status::StoreTimeout,
                    format!(
                        "{}: no answer within {} ms ({})",
                        self.shown,
                        deadline.as_millis(),
                        if deadline == self.timeout {
                            "SKYLARK_TIMEOUT_MS"
                        } else {
                            "SKYLARK_TIMEOUT_MS plus the copy's size at SKYLARK_COPY_MIN_MBPS"
                        }
                    ),
                ))
            }
        }
    }

    /// Like [`Store::query_async_within`] for a write that must reach the store's
    /// replicas ([`Store::acknowledge`]; without any, the same): the request goes out in
    /// one pipeline with `WAIT <replicas> <ms>` right after it, so both travel on one
    /// connection to one server (for a cluster, the primary holding the write's slot: the
    /// pipeline is routed by its key), and the write counts only if `WAIT` reports at
    /// least that many replicas. The deadline grows by the `WAIT` time. A transaction
    /// (atomic pipeline) is sent as `MULTI` ... `EXEC` inside that pipeline; its reply is
    /// `EXEC`'s array (every command's reply: `ignore` does not apply).
    pub async fn write_async_within(
        &self,
        request: &Request,
        deadline: Duration,
    ) -> Result<Value, CallError> {
        let ack = self.acknowledge;
        if ack.replicas == 0 {
            return self.query_async_within(request, deadline).await;
        }
        // A script goes with its text here: a NOSCRIPT inside the pipeline with WAIT
        // would need the pipeline taken apart (such writes carry the values anyway).
        let with_text = script::with_bodies(request);
        let (pipe, reply_at) = with_wait(with_text.as_ref().unwrap_or(request), ack);
        let reply = self
            .query_async_within(&Request::Pipe(pipe), deadline + ack.within)
            .await
            .map_err(|mut e| {
                if e.status == Status::StoreTimeout {
                    e.message
                        .push_str(", with SKYLARK_GLOBAL_WAIT_MS for the write's WAIT");
                }
                e
            })?;
        let mut replies = match reply {
            Value::Array(items) if items.len() > reply_at => items,
            other => {
                return Err(self.reply_error(format!(
                    "unexpected reply {other:?} to a write and its WAIT"
                )))
            }
        };
        let confirmed = match replies.last() {
            Some(Value::Int(n)) => *n,
            other => return Err(self.reply_error(format!("unexpected reply {other:?} to WAIT"))),
        };
        if confirmed < i64::from(ack.replicas) {
            crate::stats::inc(crate::stats::Counter::GlobalUnacknowledged);
            return Err(CallError::new(
                Status::StoreUnavailable,
                format!(
                    "{}: the write reached {confirmed} of the {} replicas \
                     SKYLARK_GLOBAL_MIN_REPLICAS asks for within {} ms \
                     (SKYLARK_GLOBAL_WAIT_MS); not counted as done",
                    self.shown,
                    ack.replicas,
                    ack.within.as_millis()
                ),
            ));
        }
        Ok(replies.swap_remove(reply_at))
    }

    /// [`Store::write_async_within`] from the calling thread, within the store's deadline
    /// (plus the `WAIT` time).
    pub fn write(&self, request: &Request) -> Result<Value, CallError> {
        if self.acknowledge.replicas == 0 {
            return self.query(request);
        }
        let Some(me) = self.me.upgrade() else {
            return Err(CallError::new(Status::Internal, "store dropped"));
        };
        let request = request.clone();
        let deadline = self.timeout;
        let margin = deadline + self.acknowledge.within + Duration::from_millis(250);
        crate::runtime::run(margin, async move {
            me.write_async_within(&request, deadline).await
        })
    }

    async fn query_async_inner(&self, request: &Request, bound: u64) -> Result<Value, CallError> {
        let mut reconnected = false;
        let mut redirects = 0;
        let mut with_text = self.bodies_first(request);
        loop {
            let mut conn = self.connection().await?;
            let admitted = match &conn {
                Conn::Single(c) => Some(c.admit(bound)),
                Conn::Cluster(_) => None,
            };
            let sent = conn.send(with_text.as_ref().unwrap_or(request)).await;
            drop(admitted);
            match sent {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if let Conn::Single(c) = &conn {
                        if let Some(too_large) = c.exceeded() {
                            // The rest of the reply is still on its way: the connection
                            // cannot be used again.
                            self.forget().await;
                            return Err(CallError::new(
                                Status::StoreError,
                                format!(
                                    "{too_large}, the most this request may return \
                                     (SKYLARK_MAX_REPLY_BYTES; for a bundle read, from \
                                     SKYLARK_MAX_BUNDLE_BYTES): connection dropped"
                                ),
                            ));
                        }
                    }
                    if with_text.is_none() && script::needs_body(&e) {
                        if let Some(r) = script::with_bodies(request) {
                            self.script_refused(&e);
                            with_text = Some(r);
                            continue;
                        }
                    }
                    // A moved key or a demoted primary (a cluster or Sentinel store): the
                    // next connection asks again (slot map, sentinels). While a failover
                    // or a slot migration settles that can take a few tries: up to
                    // REDIRECT_RETRIES, backing off, within the request's deadline.
                    let redirect = self.target.is_distributed() && is_redirect(&e);
                    let broken = is_broken(&e);
                    if broken || redirect {
                        self.forget().await;
                    }
                    if redirect && redirects < REDIRECT_RETRIES {
                        tokio::time::sleep(REDIRECT_BACKOFF * (1 << redirects)).await;
                        redirects += 1;
                        continue;
                    }
                    if broken && !reconnected {
                        reconnected = true;
                        continue;
                    }
                    let mut err = self.classify(e);
                    if redirect {
                        // The data is elsewhere for now: as for a store that is down.
                        err.status = Status::StoreUnavailable;
                    }
                    return Err(err);
                }
            }
        }
    }

    async fn connection(&self) -> Result<Conn, CallError> {
        let mut slot = self.shared.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let base = self.reply_limits().other;
        let connect = self.target.connect(&self.opener, &self.conn_cfg, base);
        let c = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(c) => c.map_err(|e| self.connect_error(e))?,
            Err(_) => {
                return Err(CallError::new(
                    Status::StoreTimeout,
                    format!(
                        "connecting: no answer within {} ms (SKYLARK_CONNECT_TIMEOUT_MS)",
                        self.connect_timeout.as_millis()
                    ),
                ))
            }
        };
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Drops the cached multiplexed connection so that the next request reconnects.
    async fn forget(&self) {
        *self.shared.lock().await = None;
    }

    fn connect_error(&self, e: RedisError) -> CallError {
        let refused = access_refused(&e);
        let mut err = self.classify(e);
        // A store that answered but refused the credentials is no less reachable.
        if err.status == Status::StoreError && !refused {
            err.status = Status::StoreUnavailable;
        }
        err.message = format!("connecting: {}", err.message);
        err
    }

    fn classify(&self, e: RedisError) -> CallError {
        if access_refused(&e) {
            return CallError::new(
                Status::StoreError,
                format!("access refused: {e} (credentials: {})", self.auth),
            );
        }
        let status = if e.is_timeout() {
            Status::StoreTimeout
        } else if e.is_connection_refusal() || is_broken(&e) {
            Status::StoreUnavailable
        } else {
            Status::StoreError
        };
        let mut message = e.to_string();
        let lower = message.to_ascii_lowercase();
        if self.tls && (lower.contains("certificate") || lower.contains("alert")) {
            message.push_str(
                " (TLS: check SKYLARK_TLS_CA_FILE, SKYLARK_TLS_CERT_FILE, SKYLARK_TLS_KEY_FILE)",
            );
        }
        CallError::new(status, message)
    }

    /// A dedicated pub/sub connection to this store (for `arrivals`), with the store's
    /// credentials and TLS, within the connect deadline. Runs on the plugin runtime.
    /// On a cluster, one connection to its first seed node (a `PUBLISH` reaches every
    /// node's subscribers); on Sentinel, to the primary the sentinels name.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, CallError> {
        let base = self.reply_limits().other;
        let pubsub = self.target.pubsub(&self.opener, base);
        match tokio::time::timeout(self.connect_timeout, pubsub).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => Err(self.connect_error(e).context(&self.shown)),
            Err(_) => Err(CallError::new(
                Status::StoreTimeout,
                format!(
                    "{}: connecting for pub/sub: no answer within {} ms \
                     (SKYLARK_CONNECT_TIMEOUT_MS)",
                    self.shown,
                    self.connect_timeout.as_millis()
                ),
            )),
        }
    }

    /// A client error on a request to this store, classified, with the store's name.
    pub fn error(&self, e: RedisError) -> CallError {
        self.classify(e).context(&self.shown)
    }

    /// Every field of the hash `key` (`HGETALL`) on the calling thread. An absent key
    /// yields an empty list.
    pub fn get_all(&self, key: &str) -> Result<HashPairs, CallError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(key);
        let value = self.query(&Request::Cmd(cmd))?;
        hash_pairs(value).map_err(|m| self.reply_error(m))
    }

    /// An error about a reply this store sent that the plugin cannot use.
    pub fn reply_error(&self, message: String) -> CallError {
        CallError::new(Status::StoreError, format!("{}: {message}", self.shown))
    }
}

/// `request` followed by `WAIT`, as one plain pipeline, and the index of the request's
/// reply in the pipeline's reply.
fn with_wait(request: &Request, ack: Acknowledge) -> (redis::Pipeline, usize) {
    let mut pipe = redis::pipe();
    let reply_at = match request {
        Request::Cmd(c) => {
            pipe.add_command(c.clone());
            0
        }
        Request::Pipe(p) if p.is_transaction() => {
            pipe.cmd("MULTI");
            let mut n = 0;
            for c in p.cmd_iter() {
                pipe.add_command(c.clone());
                n += 1;
            }
            pipe.cmd("EXEC");
            // MULTI's reply and one QUEUED per command, then EXEC's.
            n + 1
        }
        Request::Pipe(p) => {
            for c in p.cmd_iter() {
                pipe.add_command(c.clone());
            }
            // The replies as an array of their own are not kept: the first one.
            0
        }
    };
    pipe.cmd("WAIT")
        .arg(ack.replicas)
        .arg(ack.within.as_millis().max(1) as u64);
    (pipe, reply_at)
}

/// Whether the reply to `c` is a whole hash, which may be a bundle: `HGETALL`, `HKEYS`.
/// Scripts are not recognised here; the bundle read is tagged ([`BundleRead`]).
fn may_return_bundle(c: &redis::Cmd) -> bool {
    let mut args = c.args_iter();
    let Some(redis::Arg::Simple(name)) = args.next() else {
        return false;
    };
    name.eq_ignore_ascii_case(b"HGETALL") || name.eq_ignore_ascii_case(b"HKEYS")
}

fn is_broken(e: &RedisError) -> bool {
    e.is_connection_dropped() || e.is_io_error()
}

/// A wrong or missing password (`AUTH` failed, `NOAUTH`, `WRONGPASS`) or a command the
/// ACL user may not run (`NOPERM`; inside a Lua script Redis 7.0 says "The user executing
/// the script can't run this command"). Replies of a pipeline carry their code only in
/// the text.
fn access_refused(e: &RedisError) -> bool {
    const CODES: [&str; 4] = [
        "NOAUTH",
        "WRONGPASS",
        "NOPERM",
        "user executing the script can't run",
    ];
    if e.kind() == ErrorKind::AuthenticationFailed || e.code().is_some_and(|c| CODES.contains(&c)) {
        return true;
    }
    let text = e.to_string();
    CODES.iter().any(|c| text.contains(c))
}

/// A client for `url`: `credentials` apply unless the URL has a password of its own (a
/// URL with only a user name takes the configured password), `tls` applies to
/// `rediss://`. Also says where the credentials come from, for messages (never the
/// password itself).
fn client(url: &str, credentials: &Credentials, tls: &Tls) -> Result<(Client, String), RedisError> {
    let (info, auth) = connection_info(url, credentials)?;
    let client = if tls.is_set() && matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
        let certificates = TlsCertificates {
            client_tls: tls.client.as_ref().map(|(cert, key)| ClientTlsConfig {
                client_cert: cert.pem.clone(),
                client_key: key.pem.clone(),
            }),
            root_cert: tls.ca.as_ref().map(|ca| ca.pem.clone()),
        };
        Client::build_with_tls(info, certificates)?
    } else {
        Client::open(info)?
    };
    Ok((client, auth))
}

/// The connection settings of `url` with `credentials` applied as [`client`] describes,
/// and where the credentials come from.
fn connection_info(
    url: &str,
    credentials: &Credentials,
) -> Result<(ConnectionInfo, String), RedisError> {
    let info = url.into_connection_info()?;
    let settings = info.redis_settings().clone();
    let configured = || match credentials.source.as_str() {
        "" => "none configured".to_string(),
        source => source.to_string(),
    };
    let (settings, auth) = match (settings.username(), &credentials.password) {
        _ if settings.password().is_some() => (settings, "from the URL".to_string()),
        (Some(_), Some(password)) => {
            let auth = format!("user from the URL, password of {}", credentials.source);
            (settings.set_password(password.expose()), auth)
        }
        (Some(_), None) => (settings, "user from the URL, no password".to_string()),
        (None, Some(password)) => {
            let settings = match &credentials.username {
                Some(user) => settings.set_username(user),
                None => settings,
            };
            (settings.set_password(password.expose()), configured())
        }
        (None, None) => (settings, configured()),
    };
    // No `CLIENT SETINFO` after connecting: it costs a round trip on every new
    // connection (the first call of every process) and tells the server only the client
    // library's name. `TCP_NODELAY`: a request is written whole and waits for its reply,
    // so Nagle's algorithm can only hold back a request's last segment (redis-rs leaves
    // it on by default).
    let info = info
        .set_redis_settings(settings.set_skip_set_lib_name())
        .set_tcp_settings(TcpSettings::default().set_nodelay(true));
    Ok((info, auth))
}

/// Appends `HSET key f1 v1 ...` and, with a TTL, `EXPIRE key ttl` to `pipe` (both ignored
/// in the reply). Nothing is appended for an empty field list.
pub fn write_hash<'a, F: AsRef<[u8]> + ?Sized + 'a>(
    pipe: &mut redis::Pipeline,
    key: &str,
    fields: impl IntoIterator<Item = (&'a F, &'a [u8])>,
    ttl: Option<Duration>,
) {
    let mut hset = redis::cmd("HSET");
    hset.arg(key);
    let mut any = false;
    for (field, value) in fields {
        hset.arg(field.as_ref()).arg(value);
        any = true;
    }
    if !any {
        return;
    }
    pipe.add_command(hset).ignore();
    set_ttl(pipe, key, ttl);
}

/// Appends `EXPIRE key ttl` (ignored in the reply) when there is a TTL. With none (TTL 0)
/// nothing is sent: no write of the plugin ever gives a bundle an expiry then (see
/// `propagation::copy::incoming_marker`), and the documented minimal ACLs need no `PERSIST`.
pub fn set_ttl(pipe: &mut redis::Pipeline, key: &str, ttl: Option<Duration>) {
    if let Some(ttl) = ttl {
        pipe.cmd("EXPIRE")
            .arg(key)
            .arg(ttl.as_secs().max(1))
            .ignore();
    }
}

/// Decodes an `HGETALL` reply (RESP2 flat array or RESP3 map) into field/value pairs.
pub fn hash_pairs(value: Value) -> Result<HashPairs, String> {
    fn bytes(v: Value) -> Result<Vec<u8>, String> {
        match v {
            Value::BulkString(b) => Ok(b),
            Value::SimpleString(s) => Ok(s.into_bytes()),
            other => Err(format!("unexpected element in HGETALL reply: {other:?}")),
        }
    }
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| Ok((bytes(k)?, bytes(v)?)))
            .collect(),
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(format!(
                    "HGETALL reply has an odd number ({}) of elements",
                    items.len()
                ));
            }
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((bytes(k)?, bytes(v)?));
            }
            Ok(out)
        }
        other => Err(format!("unexpected HGETALL reply: {other:?}")),
    }
}

/// The replies of a non-atomic pipeline (an array with one element per command that was
/// not ignored), or of an atomic one (the `EXEC` array).
pub fn replies(value: Value, expected: usize) -> Result<Vec<Value>, String> {
    match value {
        Value::Array(items) if items.len() == expected => Ok(items),
        other => Err(format!(
            "expected {expected} pipeline replies, got {other:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn decodes_resp2_and_resp3_hashes() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let flat = Value::Array(vec![b("a"), b("1"), b("b"), b("2")]);
        assert_eq!(
            hash_pairs(flat).unwrap(),
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec())
            ]
        );
        let map = Value::Map(vec![(b("a"), b("1"))]);
        assert_eq!(hash_pairs(map).unwrap().len(), 1);
        assert!(hash_pairs(Value::Array(vec![])).unwrap().is_empty());
        assert!(hash_pairs(Value::Array(vec![b("a")])).is_err());
        assert!(hash_pairs(Value::Int(3)).is_err());
    }

    #[test]
    fn only_a_nearby_node_local_store_uses_the_blocking_path() {
        let open = |url: &str, remote: bool| {
            let (c, t, d) = (
                Credentials::default(),
                Tls::default(),
                Duration::from_secs(1),
            );
            let s = if remote {
                Store::remote(url, &c, &t, d, d)
            } else {
                Store::new(url, &c, &t, d, d)
            };
            s.unwrap().has_total_deadline()
        };
        assert!(!open("redis://127.0.0.1:6379", false));
        assert!(!open("redis://localhost:6379", false));
        assert!(!open("unix:///run/skylark/redis.sock", false));
        assert!(open("redis://10.0.0.7:6379", false));
        assert!(open("rediss://cache.example:6380", false));
        assert!(open("redis://127.0.0.1:6379", true), "another node's store");
    }

    #[test]
    fn a_remote_store_query_has_one_total_deadline() {
        // Port 1 on loopback through the runtime path: refused, not hung.
        let store = Store::remote(
            "redis://127.0.0.1:1",
            &Credentials::default(),
            &Tls::default(),
            Duration::from_millis(500),
            Duration::from_millis(200),
        )
        .unwrap();
        let err = store.query(&Request::Cmd(redis::cmd("PING"))).unwrap_err();
        assert_eq!(err.status, Status::StoreUnavailable, "{err}");
        assert!(err.message.contains("127.0.0.1:1"), "{err}");
    }

    /// A server on loopback that answers every read of a request with `reply`; its URL.
    fn answering(reply: Vec<u8>) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let reply = reply.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {
                        if conn.write_all(&reply).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        url
    }

    fn remote(url: &str) -> Arc<Store> {
        let d = Duration::from_secs(2);
        Store::remote(url, &Credentials::default(), &Tls::default(), d, d).unwrap()
    }

    #[test]
    fn a_reply_over_its_bound_fails_the_request_and_drops_the_connection() {
        let mut huge = b"$10000000\r\n".to_vec();
        huge.extend(vec![b'x'; 1 << 20]);
        let url = answering(huge);
        let store = remote(&url);
        store.set_reply_limits(ReplyLimits {
            bundle: 1 << 20,
            other: 64 << 10,
        });
        for _ in 0..2 {
            let err = store.query(&Request::Cmd(redis::cmd("PING"))).unwrap_err();
            assert_eq!(err.status, Status::StoreError, "{err}");
            assert!(
                err.message.contains("reply larger than 65536 bytes"),
                "{err}"
            );
            assert!(err.message.starts_with(&url), "{err}");
        }
    }

    #[test]
    fn replies_within_their_bound_pass() {
        let store = remote(&answering(b"+PONG\r\n".to_vec()));
        store.set_reply_limits(ReplyLimits {
            bundle: 64,
            other: 7,
        });
        for _ in 0..3 {
            let v = store.query(&Request::Cmd(redis::cmd("PING"))).unwrap();
            assert_eq!(v, Value::SimpleString("PONG".into()));
        }
    }

    #[test]
    fn bundle_reads_may_return_more_than_other_requests() {
        let store = remote("redis://127.0.0.1:1");
        assert_eq!(store.reply_limits(), ReplyLimits::default());
        assert_eq!(ReplyLimits::default().other, 64 << 20);
        // 1 MiB of state and 3 MiB of reserved fields, three times over, plus 1 MiB.
        assert_eq!(ReplyLimits::new(1 << 20, 5).bundle, 13 << 20);
        store.set_reply_limits(ReplyLimits {
            bundle: 1000,
            other: 10,
        });
        let cmd = |args: &[&str]| {
            let mut c = redis::cmd(args[0]);
            for a in &args[1..] {
                c.arg(*a);
            }
            c
        };
        let bound = |c: redis::Cmd| store.reply_bound(&Request::Cmd(c));
        // The bundle read is known by its type: the bundle limit, by digest or by text
        // (the NOSCRIPT retry keeps the bound of the request it retries).
        let read = crate::bundle_read::request("ns", "c", 5, 0);
        assert_eq!(store.bundle_bound(&read), 1000);
        // Untagged, the same script is any other request: neither its digest nor a text
        // that calls HGETALL earns the bundle limit.
        assert_eq!(store.reply_bound(read.request()), 10);
        let text = script::with_bodies(read.request()).expect("the script's text");
        assert_eq!(store.reply_bound(&text), 10);
        assert_eq!(bound(cmd(&["HGETALL", "k"])), 1000);
        assert_eq!(bound(cmd(&["hkeys", "k"])), 1000);
        assert_eq!(bound(cmd(&["PING"])), 10);
        assert_eq!(
            bound(cmd(&[
                "EVAL",
                "return redis.call('HGET', KEYS[1], 'a')",
                "1",
                "k"
            ])),
            10
        );
        let mut pipe = redis::pipe();
        pipe.add_command(cmd(&["PING"]))
            .add_command(cmd(&["HGETALL", "k"]));
        assert_eq!(store.reply_bound(&Request::Pipe(pipe)), 1010);
    }

    #[test]
    fn unreachable_store_fails_fast_with_unavailable() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let store = Store::new(
            "redis://127.0.0.1:1",
            &Credentials::default(),
            &Tls::default(),
            Duration::from_secs(2),
            Duration::from_secs(1),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let e = store.get_all("k").unwrap_err();
        assert_eq!(e.status, Status::StoreUnavailable, "{e}");
        assert!(e.message.contains("redis://127.0.0.1:1"), "{}", e.message);
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn unreachable_store_fails_on_the_runtime_too() {
        let store = Store::new(
            "redis://127.0.0.1:1",
            &Credentials::default(),
            &Tls::default(),
            Duration::from_secs(2),
            Duration::from_secs(1),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt
            .block_on(store.query_async(&Request::Cmd(redis::cmd("PING"))))
            .unwrap_err();
        assert_eq!(e.status, Status::StoreUnavailable, "{e}");
    }

    #[test]
    fn credentials_of_the_url_win() {
        let configured = Credentials {
            username: Some("skylark".into()),
            password: Some(Secret::new("configured-pw")),
            source: "SKYLARK_REDIS_USERNAME, SKYLARK_REDIS_PASSWORD".into(),
        };
        let tls = Tls::default();
        let settings = |url: &str, c: &Credentials| {
            let (client, auth) = client(url, c, &tls).unwrap();
            let s = client.get_connection_info().redis_settings();
            let user = s.username().map(str::to_string);
            let password = s.password().map(str::to_string);
            (user, password, auth)
        };
        let (user, password, auth) = settings("redis://h:1", &configured);
        assert_eq!(user.as_deref(), Some("skylark"));
        assert_eq!(password.as_deref(), Some("configured-pw"));
        assert_eq!(auth, configured.source);

        let (user, password, auth) = settings("redis://:url-pw@h:1", &configured);
        assert_eq!((user, password.as_deref()), (None, Some("url-pw")));
        assert_eq!(auth, "from the URL");

        let (user, password, _) = settings("redis://alice@h:1", &configured);
        assert_eq!(user.as_deref(), Some("alice"));
        assert_eq!(password.as_deref(), Some("configured-pw"));

        let (user, password, _) = settings("unix:///tmp/r.sock?user=bob&pass=sock-pw", &configured);
        assert_eq!(
            (user.as_deref(), password.as_deref()),
            (Some("bob"), Some("sock-pw"))
        );

        let (user, password, auth) = settings("redis://h:1", &Credentials::default());
        assert_eq!((user, password), (None, None));
        assert_eq!(auth, "none configured");
        // Messages name the source, never the password.
        assert!(!auth.contains("pw"));
    }

    #[test]
    fn connections_skip_setinfo_and_nagle() {
        let (client, _) = client("redis://h:1", &Credentials::default(), &Tls::default()).unwrap();
        let info = client.get_connection_info();
        assert!(info.tcp_settings().nodelay());
        assert!(info.redis_settings().skip_set_lib_name());
    }

    #[test]
    fn tls_material_applies_to_rediss_only() {
        let tls = Tls {
            ca: Some(crate::config::PemFile {
                path: "/ca.pem".into(),
                pem: b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".to_vec(),
            }),
            client: None,
        };
        let plain = Store::new(
            "redis://h:1",
            &Credentials::default(),
            &tls,
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(!plain.is_tls());
        // The same material is used, and refused, for rediss://.
        let refused = Store::new(
            "rediss://h:1",
            &Credentials::default(),
            &tls,
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert!(refused.is_err());
        let secure = Store::new(
            "rediss://h:1",
            &Credentials::default(),
            &Tls::default(),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(secure.is_tls());
    }

    #[test]
    fn a_write_to_acknowledge_is_followed_by_wait_in_one_pipeline() {
        let ack = Acknowledge {
            replicas: 2,
            within: Duration::from_millis(300),
        };
        let names = |p: &redis::Pipeline| -> Vec<String> {
            p.cmd_iter()
                .map(|c| match c.args_iter().next() {
                    Some(redis::Arg::Simple(a)) => String::from_utf8_lossy(a).into_owned(),
                    _ => String::new(),
                })
                .collect()
        };
        let mut eval = redis::cmd("EVAL");
        eval.arg("return 1").arg(1).arg("k");
        let (pipe, at) = with_wait(&Request::Cmd(eval), ack);
        assert!(!pipe.is_transaction());
        assert_eq!((names(&pipe), at), (vec!["EVAL".into(), "WAIT".into()], 0));
        let wait = pipe.cmd_iter().last().unwrap().get_packed_command();
        assert!(String::from_utf8_lossy(&wait).ends_with("$1\r\n2\r\n$3\r\n300\r\n"));

        // A transaction keeps its MULTI ... EXEC inside the plain pipeline; its reply is
        // EXEC's, after MULTI's and two QUEUED.
        let mut tx = redis::pipe();
        tx.atomic().cmd("HSET").arg("k").arg("f").arg("v").ignore();
        tx.cmd("EXPIRE").arg("k").arg(5).ignore();
        let (pipe, at) = with_wait(&Request::Pipe(tx), ack);
        assert!(!pipe.is_transaction());
        assert_eq!(
            names(&pipe),
            ["MULTI", "HSET", "EXPIRE", "EXEC", "WAIT"].map(String::from)
        );
        assert_eq!(at, 3);
    }

    #[test]
    fn only_the_global_store_may_be_a_cluster_or_sentinel() {
        let (c, t, d) = (
            Credentials::default(),
            Tls::default(),
            Duration::from_millis(300),
        );
        for url in [
            "redis+cluster://127.0.0.1:1,127.0.0.1:2",
            "redis+sentinel://127.0.0.1:1/m",
        ] {
            let e = Store::new(url, &c, &t, d, d).map(|_| ()).unwrap_err();
            assert!(e.reason.contains("only for the global store"), "{e}");
            assert!(Store::remote(url, &c, &t, d, d).is_err(), "{url}");
            let ack = Acknowledge::default();
            let g = Store::global(url, &c, &t, d, d, ack).unwrap();
            assert!(g.has_total_deadline(), "{url}: runtime only");
            assert!(!g.is_tls());
            // Nothing listens: refused within the deadline, as a store that is down.
            let err = g.query(&Request::Cmd(redis::cmd("PING"))).unwrap_err();
            assert!(
                matches!(err.status, Status::StoreUnavailable | Status::StoreTimeout),
                "{url}: {err}"
            );
            // The blocking path is for a nearby node-local store only.
            let e = g.query_transaction(&[&["PING".into()]]).unwrap_err();
            assert!(e.message.contains("runtime only"), "{e}");
        }
        let g = Store::global(
            "redis+cluster://alice:pw@127.0.0.1:1",
            &c,
            &t,
            d,
            d,
            Acknowledge::default(),
        )
        .unwrap();
        assert_eq!(g.user(), Some("alice"));
        assert!(!g.name().contains("pw"), "{}", g.name());
    }

    #[test]
    fn writes_without_replicas_to_wait_for_are_plain_queries() {
        // No acknowledgement configured: no WAIT, the store's ordinary error.
        let store = Store::remote(
            "redis://127.0.0.1:1",
            &Credentials::default(),
            &Tls::default(),
            Duration::from_millis(500),
            Duration::from_millis(200),
        )
        .unwrap();
        assert_eq!(store.acknowledge(), Acknowledge::default());
        let err = store.write(&Request::Cmd(redis::cmd("PING"))).unwrap_err();
        assert_eq!(err.status, Status::StoreUnavailable, "{err}");
    }

    #[test]
    fn empty_field_lists_add_nothing() {
        let mut pipe = redis::pipe();
        write_hash::<str>(
            &mut pipe,
            "k",
            std::iter::empty(),
            Some(Duration::from_secs(5)),
        );
        assert_eq!(pipe.cmd_iter().count(), 0);
        write_hash(
            &mut pipe,
            "k",
            [("a", &b"1"[..])],
            Some(Duration::from_secs(5)),
        );
        assert_eq!(pipe.cmd_iter().count(), 2);
    }
}
