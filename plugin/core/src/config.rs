//! Plugin configuration, read from the environment of the process that runs WasmEdge
//! (set by the node operator, never by the guest), validated with clear errors.

use crate::log::Level;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use skylark_abi::wire::Policy;
use std::fmt;
use std::time::Duration;

/// Every environment variable the plugin reads, with its default and meaning.
/// README.md documents the same table.
pub const VARIABLES: &[(&str, &str, &str)] = &[
    (
        "SKYLARK_REDIS_URL",
        "redis://127.0.0.1:6379",
        "node-local store: redis://, rediss:// or unix:///path (also redis+unix://)",
    ),
    (
        "SKYLARK_REDIS_USERNAME",
        "(none)",
        "ACL user for every store whose URL names none (needs a password)",
    ),
    (
        "SKYLARK_REDIS_PASSWORD",
        "(none)",
        "password (AUTH) for every store whose URL carries none",
    ),
    (
        "SKYLARK_REDIS_PASSWORD_FILE",
        "(none)",
        "file holding that password (trailing newline ignored); excludes SKYLARK_REDIS_PASSWORD",
    ),
    (
        "SKYLARK_GLOBAL_USERNAME",
        "SKYLARK_REDIS_USERNAME",
        "ACL user for the global store; any SKYLARK_GLOBAL_* credential replaces the node-wide ones there",
    ),
    (
        "SKYLARK_GLOBAL_PASSWORD",
        "SKYLARK_REDIS_PASSWORD",
        "password for the global store",
    ),
    (
        "SKYLARK_GLOBAL_PASSWORD_FILE",
        "SKYLARK_REDIS_PASSWORD_FILE",
        "file holding the global store's password; excludes SKYLARK_GLOBAL_PASSWORD",
    ),
    (
        "SKYLARK_TLS_CA_FILE",
        "system roots",
        "PEM file of the CA certificates that rediss:// servers must chain to",
    ),
    (
        "SKYLARK_TLS_CERT_FILE",
        "(none)",
        "PEM client certificate (chain) for rediss:// stores; needs SKYLARK_TLS_KEY_FILE",
    ),
    (
        "SKYLARK_TLS_KEY_FILE",
        "(none)",
        "PEM private key of SKYLARK_TLS_CERT_FILE",
    ),
    (
        "SKYLARK_NODE_NAME",
        "$HOSTNAME or 'local'",
        "name of this node",
    ),
    (
        "SKYLARK_NAMESPACE",
        "skylark",
        "prefix of every key ([A-Za-z0-9._-], 1-64 bytes)",
    ),
    (
        "SKYLARK_TTL_SECS",
        "86400",
        "expiry of a bundle after its last write; 0 = never",
    ),
    (
        "SKYLARK_MAX_VALUE_BYTES",
        "67108864",
        "largest value one field may hold",
    ),
    (
        "SKYLARK_MAX_FIELDS",
        "1024",
        "most fields in one skylark_put_many call",
    ),
    (
        "SKYLARK_MAX_BUNDLE_BYTES",
        "268435456",
        "largest bundle skylark_get_bundle delivers",
    ),
    (
        "SKYLARK_TIMEOUT_MS",
        "2000",
        "deadline of one store call, connecting included",
    ),
    (
        "SKYLARK_CONNECT_TIMEOUT_MS",
        "1000",
        "deadline of one connection attempt",
    ),
    (
        "SKYLARK_MAX_PENDING",
        "4",
        "oversized get results kept per instance for skylark_take_result",
    ),
    (
        "SKYLARK_LOG",
        "warn",
        "off, error, warn, info, debug or trace (to stderr)",
    ),
    (
        "SKYLARK_PROPAGATION",
        "auto",
        "on, off, or auto (on when SKYLARK_TOPOLOGY_FILE or SKYLARK_GLOBAL_URL is set)",
    ),
    (
        "SKYLARK_TOPOLOGY_FILE",
        "(none)",
        "topology document (Skylark or testbed format); the Redis key <ns>:topology overrides it",
    ),
    (
        "SKYLARK_TOPOLOGY_REFRESH_MS",
        "1000",
        "how often a running plugin checks the file and key for a new topology",
    ),
    (
        "SKYLARK_NODE_ADDRS",
        "(none)",
        "store URL per node, overriding the topology: name=url,name=url",
    ),
    (
        "SKYLARK_REMOTE_PORT",
        "6379",
        "Redis port of nodes the topology knows only by IP",
    ),
    (
        "SKYLARK_REMOTE_TLS",
        "off",
        "on: reach nodes the topology knows only by IP over rediss://",
    ),
    (
        "SKYLARK_GLOBAL_URL",
        "(topology)",
        "global store URL; default: the topology's global (Cloud) node",
    ),
    (
        "SKYLARK_POLICY",
        "skylark",
        "default election policy: skylark, random, stateless or local",
    ),
    (
        "SKYLARK_SLO_MAX_LATENCY_MS",
        "5000",
        "default latency budget of a step",
    ),
    (
        "SKYLARK_SLO_MIN_BANDWIDTH_MBPS",
        "0",
        "default least bottleneck bandwidth to an elected node",
    ),
    (
        "SKYLARK_QUEUE_LEN",
        "256",
        "propagation jobs in flight per process; beyond it jobs wait in the outbox",
    ),
    (
        "SKYLARK_MAX_OUTBOX",
        "100000",
        "propagation jobs the node's outbox may hold; while full, puts fail with Backlogged",
    ),
    (
        "SKYLARK_COPY_MIN_MBPS",
        "5",
        "slowest transfer rate a copy is allowed: a copy of B bytes fails after SKYLARK_TIMEOUT_MS + B at this rate",
    ),
    (
        "SKYLARK_RETRIES",
        "3",
        "failed copies to one node before the job is re-targeted",
    ),
    (
        "SKYLARK_RETRY_BASE_MS",
        "100",
        "first retry delay; doubles per attempt, at most 10 s",
    ),
    (
        "SKYLARK_LINGER_MS",
        "2",
        "a propagation job waits this long so that a burst of puts of one chain becomes one copy",
    ),
    (
        "SKYLARK_LEASE_MS",
        "5000",
        "how long an outbox job stays with the process that owns it before others may claim it",
    ),
    (
        "SKYLARK_SWEEP_MS",
        "2000",
        "how often a running plugin claims due outbox jobs",
    ),
    (
        "SKYLARK_EXIT_FLUSH_MS",
        "5000",
        "at process exit, how long to wait for propagation still in flight",
    ),
    (
        "SKYLARK_INCOMING_WAIT_MS",
        "3000",
        "a copy announces itself on its target; a read there waits this long at most for it (0 = no announcements)",
    ),
    (
        "SKYLARK_READ_CACHE",
        "on",
        "keep a local copy of bundles read from other nodes",
    ),
    (
        "SKYLARK_EVENTS",
        "on",
        "publish placement and propagation events on <ns>/events",
    ),
];

/// Why the configuration is invalid. Every message names the variable (and file) at
/// fault and never shows a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A variable holds a value it does not accept.
    Value { var: String, message: String },
    /// A file a variable names cannot be read or does not hold what it should.
    File {
        var: String,
        path: String,
        message: String,
    },
    /// Two variables that go together are set inconsistently (both, or one without the
    /// other, or files that do not match).
    Conflict {
        vars: (String, String),
        message: String,
    },
}

impl ConfigError {
    fn value(var: &str, message: String) -> ConfigError {
        ConfigError::Value {
            var: var.to_string(),
            message,
        }
    }

    fn file(var: &str, path: &str, message: String) -> ConfigError {
        ConfigError::File {
            var: var.to_string(),
            path: path.to_string(),
            message,
        }
    }

    fn conflict(a: &str, b: &str, message: String) -> ConfigError {
        ConfigError::Conflict {
            vars: (a.to_string(), b.to_string()),
            message,
        }
    }

    /// The variable at fault (the first of a conflicting pair).
    pub fn var(&self) -> &str {
        match self {
            ConfigError::Value { var, .. } | ConfigError::File { var, .. } => var,
            ConfigError::Conflict { vars, .. } => &vars.0,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Value { message, .. }
            | ConfigError::File { message, .. }
            | ConfigError::Conflict { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Settings of background propagation and fallback reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Propagation {
    pub enabled: bool,
    pub topology_file: Option<String>,
    pub topology_refresh: Duration,
    /// Store URL per node name, overriding the topology.
    pub node_addrs: Vec<(String, RedisUrl)>,
    pub remote_port: u16,
    /// Nodes the topology knows only by IP are reached over `rediss://`.
    pub remote_tls: bool,
    pub global_url: Option<RedisUrl>,
    pub policy: Policy,
    pub max_latency_ms: u64,
    pub min_bandwidth_mbps: f64,
    pub queue_len: usize,
    /// Outbox length at which puts are refused.
    pub max_outbox: u64,
    /// Slowest rate a copy may go at before it times out, in Mbit/s.
    pub copy_min_mbps: f64,
    pub retries: u32,
    pub retry_base: Duration,
    pub linger: Duration,
    pub lease: Duration,
    pub sweep: Duration,
    pub exit_flush: Duration,
    pub incoming_wait: Duration,
    pub read_cache: bool,
    pub events: bool,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub redis_url: RedisUrl,
    pub node_name: String,
    pub namespace: String,
    /// `None` means bundles do not expire.
    pub ttl: Option<Duration>,
    pub max_value_bytes: u32,
    pub max_fields: u32,
    pub max_bundle_bytes: u32,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_pending: usize,
    pub log_level: Level,
    /// Credentials of every store whose URL carries none.
    pub credentials: Credentials,
    /// Credentials of the global store (the node-wide ones unless set apart).
    pub global_credentials: Credentials,
    /// TLS material of every `rediss://` store.
    pub tls: Tls,
    pub propagation: Propagation,
}

/// A Redis URL. Its `Debug` form hides any password; `as_str` gives the URL itself.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL, password included: for connecting only, never for messages.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for RedisUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact(&self.0))
    }
}

impl PartialEq<&str> for RedisUrl {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// A password. Never printed: its `Debug` form is `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for handing to the Redis client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A user name and password for Redis `AUTH`, applied to a store whose URL carries none.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Credentials {
    /// ACL user; `None` authenticates as the `default` user.
    pub username: Option<String>,
    /// `None`: no `AUTH` at all.
    pub password: Option<Secret>,
    /// The variables these came from, for messages (`""` when there are none).
    pub source: String,
}

/// A PEM file read at configuration time. `Debug` shows the path and size, not the
/// contents (the client key is a secret).
#[derive(Clone, PartialEq)]
pub struct PemFile {
    pub path: String,
    pub pem: Vec<u8>,
}

impl fmt::Debug for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PemFile({:?}, {} bytes)", self.path, self.pem.len())
    }
}

/// TLS material for `rediss://` stores (the node-local, remote and global ones alike).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tls {
    /// Roots the servers must chain to; `None`: the system's roots.
    pub ca: Option<PemFile>,
    /// Client certificate chain and its key, for servers that require client certificates.
    pub client: Option<(PemFile, PemFile)>,
}

impl Tls {
    /// Whether anything differs from the defaults (system roots, no client certificate).
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.client.is_some()
    }
}

/// Largest value Redis accepts in one string or hash field.
const REDIS_MAX_VALUE: u64 = 512 * 1024 * 1024;

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the configuration through `get` (a variable name to its value, if set).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());

        let redis_url = var("SKYLARK_REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into());
        check_redis_url(&redis_url).map_err(|e| {
            ConfigError::value("SKYLARK_REDIS_URL", format!("SKYLARK_REDIS_URL: {e}"))
        })?;
        let redis_url = RedisUrl(redis_url);

        let node_name = var("SKYLARK_NODE_NAME")
            .or_else(|| var("HOSTNAME"))
            .unwrap_or_else(|| "local".into());
        skylark_abi::ids::validate(node_name.as_bytes()).map_err(|e| {
            ConfigError::value(
                "SKYLARK_NODE_NAME",
                format!("SKYLARK_NODE_NAME {node_name:?} {e}"),
            )
        })?;

        let namespace = var("SKYLARK_NAMESPACE").unwrap_or_else(|| "skylark".into());
        if namespace.len() > 64 {
            return Err(ConfigError::value(
                "SKYLARK_NAMESPACE",
                format!(
                    "SKYLARK_NAMESPACE is {} bytes long (max 64)",
                    namespace.len()
                ),
            ));
        }
        skylark_abi::ids::validate(namespace.as_bytes()).map_err(|e| {
            ConfigError::value(
                "SKYLARK_NAMESPACE",
                format!("SKYLARK_NAMESPACE {namespace:?} {e}"),
            )
        })?;

        let ttl_secs = number(&var, "SKYLARK_TTL_SECS", 86_400, 0, 10 * 365 * 86_400)?;
        let max_value_bytes = number(
            &var,
            "SKYLARK_MAX_VALUE_BYTES",
            64 << 20,
            1,
            REDIS_MAX_VALUE,
        )?;
        let max_fields = number(&var, "SKYLARK_MAX_FIELDS", 1024, 1, 1 << 20)?;
        let max_bundle_bytes = number(
            &var,
            "SKYLARK_MAX_BUNDLE_BYTES",
            256 << 20,
            1,
            u32::MAX as u64,
        )?;
        let timeout_ms = number(&var, "SKYLARK_TIMEOUT_MS", 2000, 1, 3_600_000)?;
        let connect_timeout_ms = number(&var, "SKYLARK_CONNECT_TIMEOUT_MS", 1000, 1, 3_600_000)?;
        let max_pending = number(&var, "SKYLARK_MAX_PENDING", 4, 1, 1024)?;
        let log_level = match var("SKYLARK_LOG") {
            None => Level::Warn,
            Some(v) => Level::parse(&v).ok_or_else(|| {
                ConfigError::value(
                    "SKYLARK_LOG",
                    format!("SKYLARK_LOG {v:?} is not one of off, error, warn, info, debug, trace"),
                )
            })?,
        };

        let credentials = read_credentials(&var, "SKYLARK_REDIS")?.unwrap_or_default();
        let global_credentials =
            read_credentials(&var, "SKYLARK_GLOBAL")?.unwrap_or_else(|| credentials.clone());
        let tls = tls(&var)?;
        let propagation = propagation(&var)?;

        Ok(Config {
            redis_url,
            node_name,
            namespace,
            ttl: (ttl_secs > 0).then(|| Duration::from_secs(ttl_secs)),
            max_value_bytes: max_value_bytes as u32,
            max_fields: max_fields as u32,
            max_bundle_bytes: max_bundle_bytes as u32,
            timeout: Duration::from_millis(timeout_ms),
            connect_timeout: Duration::from_millis(connect_timeout_ms),
            max_pending: max_pending as usize,
            log_level,
            credentials,
            global_credentials,
            tls,
            propagation,
        })
    }
}

fn on_off(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: bool,
) -> Result<bool, ConfigError> {
    match var(name).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) => match v.as_str() {
            "on" | "1" | "true" | "yes" => Ok(true),
            "off" | "0" | "false" | "no" => Ok(false),
            _ => Err(ConfigError::value(
                name,
                format!("{name} {v:?} is not on or off"),
            )),
        },
    }
}

fn propagation(var: &impl Fn(&str) -> Option<String>) -> Result<Propagation, ConfigError> {
    let topology_file = var("SKYLARK_TOPOLOGY_FILE");
    let global_url = var("SKYLARK_GLOBAL_URL");
    if let Some(url) = &global_url {
        check_redis_url(url).map_err(|e| {
            ConfigError::value("SKYLARK_GLOBAL_URL", format!("SKYLARK_GLOBAL_URL: {e}"))
        })?;
    }
    let global_url = global_url.map(RedisUrl);
    let enabled = match var("SKYLARK_PROPAGATION").map(|v| v.trim().to_ascii_lowercase()) {
        None => topology_file.is_some() || global_url.is_some(),
        Some(v) if v == "auto" => topology_file.is_some() || global_url.is_some(),
        Some(_) => on_off(var, "SKYLARK_PROPAGATION", false)?,
    };
    let node_addrs = match var("SKYLARK_NODE_ADDRS") {
        None => Vec::new(),
        Some(v) => parse_node_addrs(&v)?,
    };
    let policy = match var("SKYLARK_POLICY") {
        None => Policy::Skylark,
        Some(v) => Policy::parse(v.trim()).ok_or_else(|| {
            ConfigError::value(
                "SKYLARK_POLICY",
                format!("SKYLARK_POLICY {v:?} is not one of skylark, random, stateless, local"),
            )
        })?,
    };
    let min_bandwidth_mbps = match var("SKYLARK_SLO_MIN_BANDWIDTH_MBPS") {
        None => 0.0,
        Some(v) => match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => x,
            _ => {
                return Err(ConfigError::value(
                    "SKYLARK_SLO_MIN_BANDWIDTH_MBPS",
                    format!("SKYLARK_SLO_MIN_BANDWIDTH_MBPS {v:?} is not a non-negative number"),
                ))
            }
        },
    };
    let copy_min_mbps = match var("SKYLARK_COPY_MIN_MBPS") {
        None => 5.0,
        Some(v) => match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => x,
            _ => {
                return Err(ConfigError::value(
                    "SKYLARK_COPY_MIN_MBPS",
                    format!("SKYLARK_COPY_MIN_MBPS {v:?} is not a positive number"),
                ))
            }
        },
    };
    let ms = |name: &str, default: u64, min: u64, max: u64| -> Result<Duration, ConfigError> {
        number(var, name, default, min, max).map(Duration::from_millis)
    };
    Ok(Propagation {
        enabled,
        topology_file,
        topology_refresh: ms("SKYLARK_TOPOLOGY_REFRESH_MS", 1000, 10, 3_600_000)?,
        node_addrs,
        remote_port: number(var, "SKYLARK_REMOTE_PORT", 6379, 1, 65_535)? as u16,
        remote_tls: on_off(var, "SKYLARK_REMOTE_TLS", false)?,
        global_url,
        policy,
        max_latency_ms: number(var, "SKYLARK_SLO_MAX_LATENCY_MS", 5000, 1, 86_400_000)?,
        min_bandwidth_mbps,
        queue_len: number(var, "SKYLARK_QUEUE_LEN", 256, 1, 1 << 20)? as usize,
        max_outbox: number(var, "SKYLARK_MAX_OUTBOX", 100_000, 1, 1 << 32)?,
        copy_min_mbps,
        retries: number(var, "SKYLARK_RETRIES", 3, 1, 1000)? as u32,
        retry_base: ms("SKYLARK_RETRY_BASE_MS", 100, 1, 60_000)?,
        linger: ms("SKYLARK_LINGER_MS", 2, 0, 10_000)?,
        lease: ms("SKYLARK_LEASE_MS", 5000, 10, 3_600_000)?,
        sweep: ms("SKYLARK_SWEEP_MS", 2000, 10, 3_600_000)?,
        exit_flush: ms("SKYLARK_EXIT_FLUSH_MS", 5000, 0, 3_600_000)?,
        incoming_wait: ms("SKYLARK_INCOMING_WAIT_MS", 3000, 0, 600_000)?,
        read_cache: on_off(var, "SKYLARK_READ_CACHE", true)?,
        events: on_off(var, "SKYLARK_EVENTS", true)?,
    })
}

/// Reads `<prefix>_USERNAME`, `<prefix>_PASSWORD` and `<prefix>_PASSWORD_FILE`; `None`
/// when none of them is set. Messages name the variables and files, never the password.
fn read_credentials(
    var: &impl Fn(&str) -> Option<String>,
    prefix: &str,
) -> Result<Option<Credentials>, ConfigError> {
    let (user_var, pass_var, file_var) = (
        format!("{prefix}_USERNAME"),
        format!("{prefix}_PASSWORD"),
        format!("{prefix}_PASSWORD_FILE"),
    );
    let (username, password, file) = (var(&user_var), var(&pass_var), var(&file_var));
    if username.is_none() && password.is_none() && file.is_none() {
        return Ok(None);
    }
    if let Some(u) = &username {
        if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::value(
                &user_var,
                format!("{user_var} {u:?} contains whitespace or control characters"),
            ));
        }
    }
    let (password, from) = match (password, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::conflict(
                &pass_var,
                &file_var,
                format!("{pass_var} and {file_var} are both set: set only one"),
            ))
        }
        (Some(p), None) => (p, pass_var),
        (None, Some(path)) => (read_password(&file_var, &path)?, file_var),
        (None, None) => {
            return Err(ConfigError::conflict(
                &user_var,
                &pass_var,
                format!(
                "{user_var} is set without {pass_var} or {file_var}: an ACL user needs a password"
            ),
            ))
        }
    };
    let source = match &username {
        Some(_) => format!("{user_var}, {from}"),
        None => from,
    };
    Ok(Some(Credentials {
        username,
        password: Some(Secret(password)),
        source,
    }))
}

/// The password in file `path` (named by variable `name`), without its trailing newline.
fn read_password(name: &str, path: &str) -> Result<String, ConfigError> {
    let fail = |what: String| ConfigError::file(name, path, what);
    let bytes =
        std::fs::read(path).map_err(|e| fail(format!("{name} {path:?}: cannot read: {e}")))?;
    let text =
        String::from_utf8(bytes).map_err(|_| fail(format!("{name} {path:?} is not UTF-8 text")))?;
    let password = text.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(fail(format!("{name} {path:?} is empty")));
    }
    if password.contains(['\r', '\n']) {
        return Err(fail(format!(
            "{name} {path:?} holds more than one line (expected the password alone)"
        )));
    }
    Ok(password.to_string())
}

/// Reads and checks `SKYLARK_TLS_CA_FILE`, `SKYLARK_TLS_CERT_FILE` and
/// `SKYLARK_TLS_KEY_FILE`, so that a bad file fails the configuration, not a connection.
fn tls(var: &impl Fn(&str) -> Option<String>) -> Result<Tls, ConfigError> {
    const CA: &str = "SKYLARK_TLS_CA_FILE";
    const CERT: &str = "SKYLARK_TLS_CERT_FILE";
    const KEY: &str = "SKYLARK_TLS_KEY_FILE";
    let ca = match var(CA) {
        None => None,
        Some(path) => {
            let file = read_file(CA, &path)?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(CA, &file)? {
                roots.add(cert).map_err(|e| {
                    ConfigError::file(
                        CA,
                        &path,
                        format!("{CA} {path:?}: not a usable CA certificate: {e}"),
                    )
                })?;
            }
            Some(file)
        }
    };
    let client = match (var(CERT), var(KEY)) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::conflict(
                CERT,
                KEY,
                format!("{CERT} is set without {KEY}"),
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::conflict(
                KEY,
                CERT,
                format!("{KEY} is set without {CERT}"),
            ))
        }
        (Some(cert_path), Some(key_path)) => {
            let cert = read_file(CERT, &cert_path)?;
            let key = read_file(KEY, &key_path)?;
            let chain = certificates(CERT, &cert)?;
            // The parser's message may quote the file; the key file is a secret.
            let der = PrivateKeyDer::from_pem_slice(&key.pem).map_err(|_| {
                ConfigError::file(
                    KEY,
                    &key_path,
                    format!("{KEY} {key_path:?} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)"),
                )
            })?;
            let provider = rustls::crypto::ring::default_provider();
            rustls::sign::CertifiedKey::from_der(chain, der, &provider).map_err(|e| {
                ConfigError::conflict(
                    CERT,
                    KEY,
                    format!(
                        "{CERT} {cert_path:?} and {KEY} {key_path:?} are not a usable pair: {e}"
                    ),
                )
            })?;
            Some((cert, key))
        }
    };
    Ok(Tls { ca, client })
}

fn read_file(name: &str, path: &str) -> Result<PemFile, ConfigError> {
    let pem = std::fs::read(path)
        .map_err(|e| ConfigError::file(name, path, format!("{name} {path:?}: cannot read: {e}")))?;
    Ok(PemFile {
        path: path.to_string(),
        pem,
    })
}

/// The certificates of a PEM file; at least one.
fn certificates(name: &str, file: &PemFile) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let fail = |what: String| ConfigError::file(name, &file.path, what);
    let certs = CertificateDer::pem_slice_iter(&file.pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("{name} {:?}: not PEM certificates: {e}", file.path)))?;
    if certs.is_empty() {
        return Err(fail(format!(
            "{name} {:?} holds no PEM certificate",
            file.path
        )));
    }
    Ok(certs)
}

/// Parses `name=url,name=url` (whitespace around items ignored).
pub fn parse_node_addrs(v: &str) -> Result<Vec<(String, RedisUrl)>, ConfigError> {
    let fail = |what: String| {
        ConfigError::value("SKYLARK_NODE_ADDRS", format!("SKYLARK_NODE_ADDRS: {what}"))
    };
    let mut out: Vec<(String, RedisUrl)> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, url) = item
            .split_once('=')
            .ok_or_else(|| fail(format!("{item:?} is not name=url")))?;
        let (name, url) = (name.trim(), url.trim());
        skylark_abi::ids::validate(name.as_bytes())
            .map_err(|e| fail(format!("node {name:?} {e}")))?;
        check_redis_url(url).map_err(|e| fail(format!("node {name}: {e}")))?;
        if out.iter().any(|(n, _)| n == name) {
            return Err(fail(format!("node {name} is listed twice")));
        }
        out.push((name.to_string(), RedisUrl(url.to_string())));
    }
    Ok(out)
}

fn number(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(raw) = var(name) else {
        return Ok(default);
    };
    let n: u64 = raw.trim().parse().map_err(|_| {
        ConfigError::value(
            name,
            format!("{name} {raw:?} is not a non-negative integer"),
        )
    })?;
    if n < min || n > max {
        return Err(ConfigError::value(
            name,
            format!("{name} {n} is outside {min}..={max}"),
        ));
    }
    Ok(n)
}

/// A URL that is not one of the Redis URL forms the store supports; the message shows it
/// with any password redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidUrl(String);

impl fmt::Display for InvalidUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidUrl {}

/// Accepts the URL forms the store supports, without connecting.
pub fn check_redis_url(url: &str) -> Result<(), InvalidUrl> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    match scheme {
        "redis" | "rediss" | "unix" | "redis+unix" => {}
        _ => {
            return Err(InvalidUrl(format!(
                "{:?} must start with redis://, rediss://, unix:// or redis+unix://",
                redact(url)
            )))
        }
    }
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| InvalidUrl(format!("{:?} is not a valid Redis URL: {e}", redact(url))))
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        let redacted_path = redact_query_password(path);
        return format!("{scheme}://{authority}{redacted_path}");
    };
    let user = userinfo.split_once(':').map(|(u, _)| u).unwrap_or(userinfo);
    let redacted_path = redact_query_password(path);
    if userinfo.contains(':') {
        format!("{scheme}://{user}:***@{host}{redacted_path}")
    } else {
        format!("{scheme}://{userinfo}@{host}{redacted_path}")
    }
}

fn redact_query_password(path: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _))
                if k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password") =>
            {
                format!("{k}=***")
            }
            _ => kv.to_string(),
        })
        .collect();
    format!("{base}?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned()).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(c.node_name, "local");
        assert_eq!(c.namespace, "skylark");
        assert_eq!(c.ttl, Some(Duration::from_secs(86_400)));
        assert_eq!(c.max_value_bytes, 64 << 20);
        assert_eq!(c.timeout, Duration::from_millis(2000));
        assert_eq!(c.log_level, Level::Warn);
    }

    #[test]
    fn reads_every_variable() {
        let c = cfg(&[
            ("SKYLARK_REDIS_URL", "unix:///run/redis/redis.sock"),
            ("SKYLARK_NODE_NAME", "pi5u2"),
            ("SKYLARK_NAMESPACE", "tenant-a"),
            ("SKYLARK_TTL_SECS", "0"),
            ("SKYLARK_MAX_VALUE_BYTES", "1024"),
            ("SKYLARK_MAX_FIELDS", "8"),
            ("SKYLARK_MAX_BUNDLE_BYTES", "4096"),
            ("SKYLARK_TIMEOUT_MS", "250"),
            ("SKYLARK_CONNECT_TIMEOUT_MS", "100"),
            ("SKYLARK_MAX_PENDING", "2"),
            ("SKYLARK_LOG", "debug"),
        ])
        .unwrap();
        assert_eq!(c.node_name, "pi5u2");
        assert_eq!(c.namespace, "tenant-a");
        assert_eq!(c.ttl, None);
        assert_eq!(
            (c.max_value_bytes, c.max_fields, c.max_bundle_bytes),
            (1024, 8, 4096)
        );
        assert_eq!(c.timeout, Duration::from_millis(250));
        assert_eq!(c.connect_timeout, Duration::from_millis(100));
        assert_eq!(c.max_pending, 2);
        assert_eq!(c.log_level, Level::Debug);
    }

    #[test]
    fn hostname_is_the_fallback_node_name() {
        assert_eq!(cfg(&[("HOSTNAME", "edge-1")]).unwrap().node_name, "edge-1");
    }

    #[test]
    fn accepts_every_url_form() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://:secret@10.0.0.1:6380/2",
            "rediss://cache.example:6380",
            "unix:///tmp/redis.sock",
            "redis+unix:///tmp/redis.sock",
        ] {
            assert!(check_redis_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn rejects_bad_values_with_the_variable_name() {
        let cases: &[(&str, &str, &str)] = &[
            ("SKYLARK_REDIS_URL", "http://x", "SKYLARK_REDIS_URL"),
            ("SKYLARK_REDIS_URL", "127.0.0.1:6379", "SKYLARK_REDIS_URL"),
            ("SKYLARK_NAMESPACE", "a:b", "SKYLARK_NAMESPACE"),
            ("SKYLARK_NODE_NAME", "node 1", "SKYLARK_NODE_NAME"),
            ("SKYLARK_TTL_SECS", "-1", "SKYLARK_TTL_SECS"),
            ("SKYLARK_MAX_VALUE_BYTES", "0", "SKYLARK_MAX_VALUE_BYTES"),
            (
                "SKYLARK_MAX_VALUE_BYTES",
                "1000000000",
                "SKYLARK_MAX_VALUE_BYTES",
            ),
            ("SKYLARK_TIMEOUT_MS", "soon", "SKYLARK_TIMEOUT_MS"),
            ("SKYLARK_LOG", "loud", "SKYLARK_LOG"),
        ];
        for (k, v, expect) in cases {
            let err = cfg(&[(k, v)]).unwrap_err();
            assert!(err.contains(expect), "{k}={v}: {err}");
        }
    }

    #[test]
    fn errors_say_which_variable_and_what_kind() {
        let lookup = |pairs: &'static [(&'static str, &'static str)]| {
            Config::from_lookup(move |k| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            })
            .unwrap_err()
        };
        let e = lookup(&[("SKYLARK_TTL_SECS", "-1")]);
        assert!(matches!(e, ConfigError::Value { .. }), "{e:?}");
        assert_eq!(e.var(), "SKYLARK_TTL_SECS");
        let e = lookup(&[("SKYLARK_TLS_CA_FILE", "/nonexistent/ca.pem")]);
        assert!(
            matches!(&e, ConfigError::File { path, .. } if path == "/nonexistent/ca.pem"),
            "{e:?}"
        );
        let e = lookup(&[("SKYLARK_TLS_KEY_FILE", "/k")]);
        assert!(matches!(e, ConfigError::Conflict { .. }), "{e:?}");
        assert_eq!(e.var(), "SKYLARK_TLS_KEY_FILE");
    }

    #[test]
    fn propagation_settings() {
        let c = cfg(&[]).unwrap();
        assert!(!c.propagation.enabled);
        assert_eq!(c.propagation.policy, Policy::Skylark);
        assert_eq!(c.propagation.max_latency_ms, 5000);
        let c = cfg(&[("SKYLARK_TOPOLOGY_FILE", "/etc/skylark/topo.json")]).unwrap();
        assert!(c.propagation.enabled);
        let c = cfg(&[
            ("SKYLARK_GLOBAL_URL", "redis://10.0.0.243:6379"),
            ("SKYLARK_PROPAGATION", "off"),
            ("SKYLARK_POLICY", "random"),
            (
                "SKYLARK_NODE_ADDRS",
                "pi5u1=redis://127.0.0.1:7001, pi5u2=unix:///tmp/r.sock",
            ),
            ("SKYLARK_SLO_MIN_BANDWIDTH_MBPS", "60"),
            ("SKYLARK_LEASE_MS", "300"),
            ("SKYLARK_READ_CACHE", "off"),
        ])
        .unwrap();
        let p = c.propagation;
        assert!(!p.enabled);
        assert_eq!(p.policy, Policy::Random);
        assert_eq!(p.node_addrs.len(), 2);
        assert_eq!(p.node_addrs[1].1, "unix:///tmp/r.sock");
        assert_eq!(p.min_bandwidth_mbps, 60.0);
        assert_eq!(p.lease, Duration::from_millis(300));
        assert!(!p.read_cache);
    }

    #[test]
    fn rejects_bad_propagation_settings() {
        let cases: &[(&str, &str)] = &[
            ("SKYLARK_PROPAGATION", "maybe"),
            ("SKYLARK_POLICY", "fastest"),
            ("SKYLARK_NODE_ADDRS", "pi5u1"),
            ("SKYLARK_NODE_ADDRS", "pi5u1=http://x"),
            ("SKYLARK_NODE_ADDRS", "a=redis://h:1,a=redis://h:2"),
            ("SKYLARK_GLOBAL_URL", "10.0.0.1:6379"),
            ("SKYLARK_SLO_MIN_BANDWIDTH_MBPS", "-3"),
            ("SKYLARK_REMOTE_PORT", "70000"),
            ("SKYLARK_EVENTS", "loud"),
        ];
        for (k, v) in cases {
            let err = cfg(&[(k, v)]).unwrap_err();
            assert!(err.contains(k), "{k}={v}: {err}");
        }
    }

    #[test]
    fn readme_documents_every_variable() {
        let readme = include_str!("../../../README.md");
        for (name, _, _) in VARIABLES {
            assert!(
                readme.contains(&format!("`{name}`")),
                "README.md does not document {name}"
            );
        }
    }

    /// A file in a fresh temporary directory, removed on drop.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &[u8]) -> TempFile {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "skylark-config-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(name);
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    // A self-signed P-256 certificate (valid until 2126) and its key, and an unrelated
    // key: test material only.
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBhjCCASugAwIBAgIUS9k6LEt66g8SADUauiDDOJUkVmkwCgYIKoZIzj0EAwIw
FzEVMBMGA1UEAwwMc2t5bGFyay10ZXN0MCAXDTI2MTEyMzEzMDQ1MFoYDzIxMjYx
MDMwMTMwNDUwWjAXMRUwEwYDVQQDDAxza3lsYXJrLXRlc3QwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAARwJRSpzyN5OYlODHUEywaabIz9PGzQC90IG/ztklSS5Ips
mh3fbnCcpx5hab9c30BvexcmhzoXEMfGkqKqLGZ7o1MwUTAdBgNVHQ4EFgQUiQSM
6QMHz839ZQXeQwTWHrV1AbYwHwYDVR0jBBgwFoAUiQSM6QMHz839ZQXeQwTWHrV1
AbYwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBGAiEAkO+87Fw/uUHW
iUlOBNLu2RYbsBxjJ5Nz4XZcr5uEOkcCIQCMKbEC4g3vlpFOaY1ZmXwZhYnI7FUt
WCGFiwnA7HN7sA==
-----END CERTIFICATE-----";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgoMQex9uXOHMYd3tY
/SPV0RJDWTefJ15OOK2N4cw9YV6hRANCAARwJRSpzyN5OYlODHUEywaabIz9PGzQ
C90IG/ztklSS5Ipsmh3fbnCcpx5hab9c30BvexcmhzoXEMfGkqKqLGZ7
-----END PRIVATE KEY-----";
    const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgwsdl9XgHxPBmNyon
AcOg8POJ7lWOrMuSEfWI4tbCrFehRANCAATM3/QyOcUGuGIu1XHzE6BAZrfvIhWl
w24ba73CcYT1FOX1uEs4A4UN48pXU31a4mZjO08OPWxNd+El+dyUPr12
-----END PRIVATE KEY-----";

    #[test]
    fn no_credentials_and_no_tls_by_default() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.credentials, Credentials::default());
        assert_eq!(c.global_credentials, Credentials::default());
        assert_eq!(c.tls, Tls::default());
        assert!(!c.propagation.remote_tls);
    }

    #[test]
    fn reads_credentials_from_variables_and_files() {
        let c = cfg(&[("SKYLARK_REDIS_PASSWORD", "s3cret")]).unwrap();
        assert_eq!(c.credentials.username, None);
        assert_eq!(c.credentials.password, Some(Secret::new("s3cret")));
        assert_eq!(c.credentials.source, "SKYLARK_REDIS_PASSWORD");
        // The global store falls back to the node-wide credentials.
        assert_eq!(c.global_credentials, c.credentials);

        let file = TempFile::new("pw", b"from-file\n");
        let c = cfg(&[
            ("SKYLARK_REDIS_USERNAME", "skylark"),
            ("SKYLARK_REDIS_PASSWORD_FILE", file.path()),
            ("SKYLARK_GLOBAL_USERNAME", "tenant"),
            ("SKYLARK_GLOBAL_PASSWORD", "cloud"),
        ])
        .unwrap();
        assert_eq!(c.credentials.username.as_deref(), Some("skylark"));
        assert_eq!(c.credentials.password, Some(Secret::new("from-file")));
        assert_eq!(
            c.credentials.source,
            "SKYLARK_REDIS_USERNAME, SKYLARK_REDIS_PASSWORD_FILE"
        );
        assert_eq!(c.global_credentials.username.as_deref(), Some("tenant"));
        assert_eq!(c.global_credentials.password, Some(Secret::new("cloud")));

        // CRLF is trimmed too; inner spaces are part of the password.
        let file = TempFile::new("pw", b"with space\r\n");
        let c = cfg(&[("SKYLARK_GLOBAL_PASSWORD_FILE", file.path())]).unwrap();
        assert_eq!(
            c.global_credentials.password,
            Some(Secret::new("with space"))
        );
        assert_eq!(c.credentials, Credentials::default());
    }

    #[test]
    fn rejects_bad_credentials_without_showing_them() {
        let empty = TempFile::new("pw", b"\n");
        let lines = TempFile::new("pw", b"pw-one\npw-two\n");
        let binary = TempFile::new("pw", b"\xff\xfe");
        let missing = "/nonexistent/skylark/password";
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (
                vec![
                    ("SKYLARK_REDIS_PASSWORD", "pw-env"),
                    ("SKYLARK_REDIS_PASSWORD_FILE", empty.path()),
                ],
                "SKYLARK_REDIS_PASSWORD and SKYLARK_REDIS_PASSWORD_FILE are both set",
            ),
            (
                vec![("SKYLARK_REDIS_USERNAME", "skylark")],
                "SKYLARK_REDIS_USERNAME is set without",
            ),
            (
                vec![
                    ("SKYLARK_REDIS_USERNAME", "sky lark"),
                    ("SKYLARK_REDIS_PASSWORD", "pw-env"),
                ],
                "SKYLARK_REDIS_USERNAME",
            ),
            (
                vec![("SKYLARK_REDIS_PASSWORD_FILE", missing)],
                "SKYLARK_REDIS_PASSWORD_FILE \"/nonexistent/skylark/password\": cannot read",
            ),
            (
                vec![("SKYLARK_REDIS_PASSWORD_FILE", empty.path())],
                "is empty",
            ),
            (
                vec![("SKYLARK_GLOBAL_PASSWORD_FILE", lines.path())],
                "SKYLARK_GLOBAL_PASSWORD_FILE",
            ),
            (
                vec![("SKYLARK_REDIS_PASSWORD_FILE", binary.path())],
                "not UTF-8",
            ),
            (
                vec![("SKYLARK_GLOBAL_USERNAME", "tenant")],
                "SKYLARK_GLOBAL_USERNAME is set without",
            ),
        ];
        for (env, expect) in cases {
            let err = cfg(&env).unwrap_err();
            assert!(err.contains(expect), "{env:?}: {err}");
            assert!(!err.contains("pw-"), "{env:?}: secret in {err}");
        }
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let c = cfg(&[
            ("SKYLARK_REDIS_URL", "redis://user:url-secret@10.0.0.1:6379"),
            ("SKYLARK_GLOBAL_URL", "rediss://:global-secret@cloud:6380"),
            (
                "SKYLARK_NODE_ADDRS",
                "n1=redis://:node-secret@10.0.0.2:6379",
            ),
            ("SKYLARK_REDIS_PASSWORD", "env-secret"),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        for secret in ["url-secret", "global-secret", "node-secret", "env-secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("redis://user:***@10.0.0.1:6379"), "{shown}");
        // The URL itself is intact for connecting.
        assert_eq!(
            c.redis_url.as_str(),
            "redis://user:url-secret@10.0.0.1:6379"
        );
    }

    #[test]
    fn reads_tls_files() {
        let ca = TempFile::new("ca.pem", CERT.as_bytes());
        let cert = TempFile::new("client.pem", CERT.as_bytes());
        let key = TempFile::new("client.key", KEY.as_bytes());
        let c = cfg(&[
            ("SKYLARK_TLS_CA_FILE", ca.path()),
            ("SKYLARK_TLS_CERT_FILE", cert.path()),
            ("SKYLARK_TLS_KEY_FILE", key.path()),
            ("SKYLARK_REMOTE_TLS", "on"),
        ])
        .unwrap();
        assert_eq!(
            c.tls.ca.as_ref().map(|f| f.pem.as_slice()),
            Some(CERT.as_bytes())
        );
        let (cert_file, key_file) = c.tls.client.as_ref().unwrap();
        assert_eq!(cert_file.path, cert.path());
        assert_eq!(key_file.pem, KEY.as_bytes());
        assert!(c.propagation.remote_tls);
        // The key never shows in Debug output.
        assert!(!format!("{c:?}").contains("PRIVATE KEY"));
        // A CA alone (server authentication only) is fine too.
        let c = cfg(&[("SKYLARK_TLS_CA_FILE", ca.path())]).unwrap();
        assert!(c.tls.is_set() && c.tls.client.is_none());
    }

    #[test]
    fn rejects_bad_tls_files_naming_variable_and_file() {
        let cert = TempFile::new("client.pem", CERT.as_bytes());
        let key = TempFile::new("client.key", KEY.as_bytes());
        let other = TempFile::new("other.key", OTHER_KEY.as_bytes());
        let garbage = TempFile::new("garbage.pem", b"not a certificate\n");
        // (environment, expected in the message, also expected in the message)
        type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![("SKYLARK_TLS_CA_FILE", "/nonexistent/ca.pem")],
                "SKYLARK_TLS_CA_FILE",
                "/nonexistent/ca.pem",
            ),
            (
                vec![("SKYLARK_TLS_CA_FILE", garbage.path())],
                "SKYLARK_TLS_CA_FILE",
                garbage.path(),
            ),
            (
                vec![("SKYLARK_TLS_CA_FILE", key.path())],
                "SKYLARK_TLS_CA_FILE",
                "no PEM certificate",
            ),
            (
                vec![("SKYLARK_TLS_CERT_FILE", cert.path())],
                "SKYLARK_TLS_CERT_FILE is set without SKYLARK_TLS_KEY_FILE",
                "",
            ),
            (
                vec![("SKYLARK_TLS_KEY_FILE", key.path())],
                "SKYLARK_TLS_KEY_FILE is set without SKYLARK_TLS_CERT_FILE",
                "",
            ),
            (
                vec![
                    ("SKYLARK_TLS_CERT_FILE", cert.path()),
                    ("SKYLARK_TLS_KEY_FILE", cert.path()),
                ],
                "SKYLARK_TLS_KEY_FILE",
                "no PEM private key",
            ),
            (
                vec![
                    ("SKYLARK_TLS_CERT_FILE", key.path()),
                    ("SKYLARK_TLS_KEY_FILE", key.path()),
                ],
                "SKYLARK_TLS_CERT_FILE",
                "no PEM certificate",
            ),
            (
                vec![
                    ("SKYLARK_TLS_CERT_FILE", cert.path()),
                    ("SKYLARK_TLS_KEY_FILE", other.path()),
                ],
                "not a usable pair",
                other.path(),
            ),
            (
                vec![("SKYLARK_REMOTE_TLS", "maybe")],
                "SKYLARK_REMOTE_TLS",
                "",
            ),
        ];
        for (env, expect, also) in cases {
            let err = cfg(&env).unwrap_err();
            assert!(err.contains(expect) && err.contains(also), "{env:?}: {err}");
            assert!(!err.contains("BEGIN"), "{env:?}: file contents in {err}");
        }
    }

    #[test]
    fn every_variable_read_is_listed() {
        let asked = std::sync::Mutex::new(Vec::<String>::new());
        Config::from_lookup(|k| {
            asked.lock().unwrap().push(k.to_string());
            None
        })
        .unwrap();
        for name in asked.into_inner().unwrap() {
            if name.starts_with("SKYLARK_") {
                assert!(
                    VARIABLES.iter().any(|(v, _, _)| *v == name),
                    "{name} is read but not in VARIABLES"
                );
            }
        }
    }

    #[test]
    fn readme_table_lists_only_known_variables() {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("## Configuration")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .unwrap();
        for line in section.lines() {
            let Some(rest) = line.strip_prefix("| `") else {
                continue;
            };
            let name = rest.split('`').next().unwrap();
            assert!(
                VARIABLES.iter().any(|(v, _, _)| *v == name),
                "README documents {name}, which VARIABLES does not list"
            );
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact("redis://:secret@host"), "redis://:***@host");
        assert_eq!(
            redact("redis+unix:///s.sock?pass=secret&db=1"),
            "redis+unix:///s.sock?pass=***&db=1"
        );
        assert_eq!(redact("redis://host:1"), "redis://host:1");
    }
}
