//! Plugin configuration, read from the environment of the process that runs WasmEdge
//! (set by the node operator, never by the guest), validated with clear errors.
//!
//! [`vars`] is the table of every variable (default, range, meaning) that parsing and
//! README's tables come from; `secret` holds passwords, credentials and URL redaction;
//! `tls` the certificate files; `error` the [`ConfigError`] they all return.

mod error;
pub mod global_url;
mod secret;
mod tls;
pub mod vars;

pub use error::ConfigError;
pub use global_url::{is_distributed, GlobalTarget};
pub use secret::{redact, Credentials, Secret};
pub use tls::{PemFile, Tls};

use crate::election::Rule;
use crate::log::Level;
use skylark_abi::wire::Policy;
use std::fmt;
use std::time::Duration;
use vars::*;

/// Settings of background propagation and fallback reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Propagation {
    pub enabled: bool,
    pub topology_file: Option<String>,
    /// Whether the node-local key `<ns>:topology` is read (never for addresses).
    pub topology_key: bool,
    pub topology_refresh: Duration,
    /// Store URL per node name, overriding the topology.
    pub node_addrs: Vec<(String, RedisUrl)>,
    /// Store URL of other nodes, `{name}` standing for the node's name.
    pub addr_template: Option<RedisUrl>,
    pub remote_port: u16,
    /// Nodes the topology knows only by IP are reached over `rediss://`, and no other
    /// store over plain `redis://`.
    pub remote_tls: bool,
    pub global_url: Option<RedisUrl>,
    /// Replicas that must confirm a write to the global store (`WAIT`) before it counts.
    pub global_min_replicas: u32,
    /// How long that confirmation may take.
    pub global_wait: Duration,
    pub policy: Policy,
    /// The rule of the `skylark` policy.
    pub election: Rule,
    pub max_latency_ms: u64,
    pub min_bandwidth_mbps: f64,
    pub queue_len: usize,
    /// Outbox length at which puts are refused.
    pub max_outbox: u64,
    /// Bytes of the outbox's jobs beyond which puts are refused.
    pub max_outbox_bytes: u64,
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
    /// The bound of a reply to anything but a bundle read (`reply_bound`).
    pub max_reply_bytes: u64,
    /// The namespace's quota on the node-local store (0: none).
    pub namespace_max_bytes: u64,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_pending: usize,
    /// Deadline of a `wait_for` get without `wait_ms` (never above `max_wait`).
    pub wait: Duration,
    /// Longest `wait_ms` granted.
    pub max_wait: Duration,
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

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the configuration through `get` (a variable name to its value, if set).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let var: Lookup<'_> = &var;

        let redis_url = var(REDIS_URL.name).unwrap_or_else(|| REDIS_URL.text_default().into());
        check_redis_url(&redis_url).map_err(|e| {
            ConfigError::value("SKYLARK_REDIS_URL", format!("SKYLARK_REDIS_URL: {e}"))
        })?;
        let redis_url = RedisUrl(redis_url);

        let node_name = var(NODE_NAME.name)
            .or_else(|| var("HOSTNAME"))
            .unwrap_or_else(|| "local".into());
        skylark_abi::ids::validate(node_name.as_bytes()).map_err(|e| {
            ConfigError::value(
                "SKYLARK_NODE_NAME",
                format!("SKYLARK_NODE_NAME {node_name:?} {e}"),
            )
        })?;

        let namespace = var(NAMESPACE.name).unwrap_or_else(|| NAMESPACE.text_default().into());
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

        let ttl_secs = int(var, &TTL_SECS)?;
        let max_value_bytes = int(var, &MAX_VALUE_BYTES)?;
        let max_fields = int(var, &MAX_FIELDS)?;
        let max_bundle_bytes = int(var, &MAX_BUNDLE_BYTES)?;
        let max_reply_bytes = int(var, &MAX_REPLY_BYTES)?;
        let namespace_max_bytes = int(var, &NAMESPACE_MAX_BYTES)?;
        let timeout_ms = int(var, &TIMEOUT_MS)?;
        let connect_timeout_ms = int(var, &CONNECT_TIMEOUT_MS)?;
        let max_pending = int(var, &MAX_PENDING)?;
        let max_wait_ms = int(var, &MAX_WAIT_MS)?;
        let wait_ms = int(var, &WAIT_MS)?.min(max_wait_ms);
        let log_level = match var(LOG.name) {
            None => Level::parse(LOG.text_default()).unwrap_or(Level::Warn),
            Some(v) => Level::parse(&v).ok_or_else(|| {
                ConfigError::value(
                    "SKYLARK_LOG",
                    format!("SKYLARK_LOG {v:?} is not one of off, error, warn, info, debug, trace"),
                )
            })?,
        };

        let node_wide = [&REDIS_USERNAME, &REDIS_PASSWORD, &REDIS_PASSWORD_FILE];
        let credentials = secret::read_credentials(var, node_wide)?.unwrap_or_default();
        let global = [&GLOBAL_USERNAME, &GLOBAL_PASSWORD, &GLOBAL_PASSWORD_FILE];
        let global_credentials =
            secret::read_credentials(var, global)?.unwrap_or_else(|| credentials.clone());
        let tls = tls::read(var)?;
        let propagation = propagation(var)?;

        Ok(Config {
            redis_url,
            node_name,
            namespace,
            ttl: (ttl_secs > 0).then(|| Duration::from_secs(ttl_secs)),
            max_value_bytes: max_value_bytes as u32,
            max_fields: max_fields as u32,
            max_bundle_bytes: max_bundle_bytes as u32,
            max_reply_bytes,
            namespace_max_bytes,
            timeout: Duration::from_millis(timeout_ms),
            connect_timeout: Duration::from_millis(connect_timeout_ms),
            max_pending: max_pending as usize,
            wait: Duration::from_millis(wait_ms),
            max_wait: Duration::from_millis(max_wait_ms),
            log_level,
            credentials,
            global_credentials,
            tls,
            propagation,
        })
    }
}

fn propagation(var: Lookup<'_>) -> Result<Propagation, ConfigError> {
    let topology_file = var(TOPOLOGY_FILE.name);
    let global_url = var(GLOBAL_URL.name);
    if let Some(url) = &global_url {
        global_url::parse(url).map_err(|e| {
            ConfigError::value("SKYLARK_GLOBAL_URL", format!("SKYLARK_GLOBAL_URL: {e}"))
        })?;
    }
    let global_url = global_url.map(RedisUrl);
    let mode = var(PROPAGATION.name).unwrap_or_else(|| PROPAGATION.text_default().into());
    let enabled = match mode.trim().to_ascii_lowercase().as_str() {
        "auto" => topology_file.is_some() || global_url.is_some(),
        other => vars::parse_switch(PROPAGATION.name, other)?,
    };
    let node_addrs = match var(NODE_ADDRS.name) {
        None => Vec::new(),
        Some(v) => parse_node_addrs(&v)?,
    };
    let addr_template = match var(NODE_ADDR_TEMPLATE.name) {
        None => None,
        Some(t) => Some(check_addr_template(&t)?),
    };
    let policy = match var(POLICY.name) {
        None => Policy::parse(POLICY.text_default()).unwrap_or(Policy::Skylark),
        Some(v) => Policy::parse(v.trim()).ok_or_else(|| {
            ConfigError::value(
                "SKYLARK_POLICY",
                format!("SKYLARK_POLICY {v:?} is not one of skylark, random, stateless, local"),
            )
        })?,
    };
    let election = match var(ELECTION.name) {
        None => Rule::default(),
        Some(v) => Rule::parse(v.trim()).ok_or_else(|| {
            ConfigError::value(
                "SKYLARK_ELECTION",
                format!("SKYLARK_ELECTION {v:?} is not one of retrieval, research"),
            )
        })?,
    };
    let ms = |v: &Var| int(var, v).map(Duration::from_millis);
    Ok(Propagation {
        enabled,
        topology_file,
        topology_key: switch(var, &TOPOLOGY_KEY)?,
        topology_refresh: ms(&TOPOLOGY_REFRESH_MS)?,
        node_addrs,
        addr_template,
        remote_port: int(var, &REMOTE_PORT)? as u16,
        remote_tls: switch(var, &REMOTE_TLS)?,
        global_url,
        global_min_replicas: int(var, &GLOBAL_MIN_REPLICAS)? as u32,
        global_wait: ms(&GLOBAL_WAIT_MS)?,
        policy,
        election,
        max_latency_ms: int(var, &SLO_MAX_LATENCY_MS)?,
        min_bandwidth_mbps: rate(var, &SLO_MIN_BANDWIDTH_MBPS)?,
        queue_len: int(var, &QUEUE_LEN)? as usize,
        max_outbox: int(var, &MAX_OUTBOX)?,
        max_outbox_bytes: int(var, &MAX_OUTBOX_BYTES)?,
        copy_min_mbps: rate(var, &COPY_MIN_MBPS)?,
        retries: int(var, &RETRIES)? as u32,
        retry_base: ms(&RETRY_BASE_MS)?,
        linger: ms(&LINGER_MS)?,
        lease: ms(&LEASE_MS)?,
        sweep: ms(&SWEEP_MS)?,
        exit_flush: ms(&EXIT_FLUSH_MS)?,
        incoming_wait: ms(&INCOMING_WAIT_MS)?,
        read_cache: switch(var, &READ_CACHE)?,
        events: switch(var, &EVENTS)?,
    })
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

/// The placeholder of `SKYLARK_NODE_ADDR_TEMPLATE`.
pub const NAME_PLACEHOLDER: &str = "{name}";

/// Checks `SKYLARK_NODE_ADDR_TEMPLATE`: it must contain `{name}` and be a Redis URL
/// whatever (valid) node name replaces it.
fn check_addr_template(t: &str) -> Result<RedisUrl, ConfigError> {
    let name = NODE_ADDR_TEMPLATE.name;
    if !t.contains(NAME_PLACEHOLDER) {
        return Err(ConfigError::value(
            name,
            format!("{name} {:?} does not contain {{name}}", redact(t)),
        ));
    }
    for sample in ["n", "pi5u1", "node-1.a_b"] {
        check_redis_url(&t.replace(NAME_PLACEHOLDER, sample))
            .map_err(|e| ConfigError::value(name, format!("{name}: {e}")))?;
    }
    Ok(RedisUrl(t.to_string()))
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
    if is_distributed(url) {
        return Err(InvalidUrl(format!(
            "{:?}: a Redis Cluster or Sentinel URL is accepted only for the global store \
             (SKYLARK_GLOBAL_URL); node-local and other nodes' stores are single servers",
            redact(url)
        )));
    }
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

/// Shared by the tests of this module and its children.
#[cfg(test)]
mod fixtures {
    use super::*;
    use std::collections::HashMap;

    pub fn cfg(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned()).map_err(|e| e.to_string())
    }

    /// A file in a fresh temporary directory, removed on drop.
    pub struct TempFile(std::path::PathBuf);

    impl TempFile {
        pub fn new(name: &str, contents: &[u8]) -> TempFile {
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

        pub fn path(&self) -> &str {
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
    pub const CERT: &str = "-----BEGIN CERTIFICATE-----
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
    pub const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgoMQex9uXOHMYd3tY
/SPV0RJDWTefJ15OOK2N4cw9YV6hRANCAARwJRSpzyN5OYlODHUEywaabIz9PGzQ
C90IG/ztklSS5Ipsmh3fbnCcpx5hab9c30BvexcmhzoXEMfGkqKqLGZ7
-----END PRIVATE KEY-----";
    pub const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgwsdl9XgHxPBmNyon
AcOg8POJ7lWOrMuSEfWI4tbCrFehRANCAATM3/QyOcUGuGIu1XHzE6BAZrfvIhWl
w24ba73CcYT1FOX1uEs4A4UN48pXU31a4mZjO08OPWxNd+El+dyUPr12
-----END PRIVATE KEY-----";
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

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
    fn wait_default_and_cap() {
        let c = cfg(&[]).unwrap();
        assert_eq!(
            (c.wait, c.max_wait),
            (Duration::from_secs(10), Duration::from_secs(60))
        );
        let c = cfg(&[("SKYLARK_WAIT_MS", "700"), ("SKYLARK_MAX_WAIT_MS", "900")]).unwrap();
        assert_eq!(
            (c.wait, c.max_wait),
            (Duration::from_millis(700), Duration::from_millis(900))
        );
        // A default above the cap is cut to the cap.
        let c = cfg(&[("SKYLARK_WAIT_MS", "5000"), ("SKYLARK_MAX_WAIT_MS", "900")]).unwrap();
        assert_eq!(c.wait, Duration::from_millis(900));
        assert!(cfg(&[("SKYLARK_MAX_WAIT_MS", "-1")]).is_err());
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
        assert_eq!(c.propagation.election, Rule::Retrieval);
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
            ("SKYLARK_ELECTION", " research"),
        ])
        .unwrap();
        let p = c.propagation;
        assert!(!p.enabled);
        assert_eq!(p.policy, Policy::Random);
        assert_eq!(p.election, Rule::Research);
        assert_eq!(p.node_addrs.len(), 2);
        assert_eq!(p.node_addrs[1].1, "unix:///tmp/r.sock");
        assert_eq!(p.min_bandwidth_mbps, 60.0);
        assert_eq!(p.lease, Duration::from_millis(300));
        assert!(!p.read_cache);
        assert!(p.topology_key, "the key is read unless turned off");
        let p = cfg(&[
            ("SKYLARK_TOPOLOGY_KEY", "off"),
            (
                "SKYLARK_NODE_ADDR_TEMPLATE",
                "rediss://{name}.redis.example:6380",
            ),
        ])
        .unwrap()
        .propagation;
        assert!(!p.topology_key);
        assert_eq!(
            p.addr_template.as_deref(),
            Some("rediss://{name}.redis.example:6380")
        );
    }

    #[test]
    fn rejects_bad_propagation_settings() {
        let cases: &[(&str, &str)] = &[
            ("SKYLARK_PROPAGATION", "maybe"),
            ("SKYLARK_POLICY", "fastest"),
            ("SKYLARK_ELECTION", "nearest"),
            ("SKYLARK_NODE_ADDRS", "pi5u1"),
            ("SKYLARK_NODE_ADDRS", "pi5u1=http://x"),
            ("SKYLARK_NODE_ADDRS", "a=redis://h:1,a=redis://h:2"),
            ("SKYLARK_GLOBAL_URL", "10.0.0.1:6379"),
            ("SKYLARK_GLOBAL_URL", "redis+sentinel://s1:26379"),
            ("SKYLARK_GLOBAL_MIN_REPLICAS", "-1"),
            ("SKYLARK_GLOBAL_WAIT_MS", "0"),
            ("SKYLARK_REDIS_URL", "redis+cluster://127.0.0.1:7000"),
            ("SKYLARK_NODE_ADDRS", "a=redis+sentinel://s1:26379/m"),
            ("SKYLARK_SLO_MIN_BANDWIDTH_MBPS", "-3"),
            ("SKYLARK_REMOTE_PORT", "70000"),
            ("SKYLARK_TOPOLOGY_KEY", "sometimes"),
            ("SKYLARK_NODE_ADDR_TEMPLATE", "redis://fixed-host:6379"),
            ("SKYLARK_NODE_ADDR_TEMPLATE", "http://{name}:6379"),
            ("SKYLARK_EVENTS", "loud"),
        ];
        for (k, v) in cases {
            let err = cfg(&[(k, v)]).unwrap_err();
            assert!(err.contains(k), "{k}={v}: {err}");
        }
    }

    #[test]
    fn the_global_store_may_be_a_cluster_or_sentinel() {
        let c = cfg(&[
            (
                "SKYLARK_GLOBAL_URL",
                "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
            ),
            ("SKYLARK_GLOBAL_MIN_REPLICAS", "1"),
            ("SKYLARK_GLOBAL_WAIT_MS", "250"),
        ])
        .unwrap();
        assert!(c.propagation.enabled);
        assert_eq!(c.propagation.global_min_replicas, 1);
        assert_eq!(c.propagation.global_wait, Duration::from_millis(250));
        assert!(cfg(&[("SKYLARK_GLOBAL_URL", "rediss+sentinel://s1:26379/m")]).is_ok());
        let d = cfg(&[]).unwrap().propagation;
        assert_eq!(d.global_min_replicas, 0, "no WAIT unless asked for");
        // Elsewhere a clear refusal naming the variable.
        for var in ["SKYLARK_REDIS_URL", "SKYLARK_NODE_ADDRS"] {
            let v = if var == "SKYLARK_NODE_ADDRS" {
                "n=redis+cluster://127.0.0.1:7000"
            } else {
                "redis+cluster://127.0.0.1:7000"
            };
            let e = cfg(&[(var, v)]).unwrap_err();
            assert!(
                e.contains(var) && e.contains("only for the global store"),
                "{e}"
            );
        }
    }

    #[test]
    fn no_credentials_and_no_tls_by_default() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.credentials, Credentials::default());
        assert_eq!(c.global_credentials, Credentials::default());
        assert_eq!(c.tls, Tls::default());
        assert!(!c.propagation.remote_tls);
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
                    VARS.iter().any(|v| v.name == name),
                    "{name} is read but not in VARS"
                );
            }
        }
    }
}
