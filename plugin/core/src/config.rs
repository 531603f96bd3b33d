//! Plugin configuration, read from the environment of the process that runs WasmEdge
//! (set by the node operator, never by the guest), validated with clear errors.

use crate::log::Level;
use skylark_abi::wire::Policy;
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

/// Settings of background propagation and fallback reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Propagation {
    pub enabled: bool,
    pub topology_file: Option<String>,
    pub topology_refresh: Duration,
    /// Store URL per node name, overriding the topology.
    pub node_addrs: Vec<(String, String)>,
    pub remote_port: u16,
    pub global_url: Option<String>,
    pub policy: Policy,
    pub max_latency_ms: u64,
    pub min_bandwidth_mbps: f64,
    pub queue_len: usize,
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
    pub redis_url: String,
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
    pub propagation: Propagation,
}

/// Largest value Redis accepts in one string or hash field.
const REDIS_MAX_VALUE: u64 = 512 * 1024 * 1024;

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, String> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the configuration through `get` (a variable name to its value, if set).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());

        let redis_url = var("SKYLARK_REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into());
        check_redis_url(&redis_url).map_err(|e| format!("SKYLARK_REDIS_URL: {e}"))?;

        let node_name = var("SKYLARK_NODE_NAME")
            .or_else(|| var("HOSTNAME"))
            .unwrap_or_else(|| "local".into());
        skylark_abi::ids::validate(node_name.as_bytes())
            .map_err(|e| format!("SKYLARK_NODE_NAME {node_name:?} {e}"))?;

        let namespace = var("SKYLARK_NAMESPACE").unwrap_or_else(|| "skylark".into());
        if namespace.len() > 64 {
            return Err(format!(
                "SKYLARK_NAMESPACE is {} bytes long (max 64)",
                namespace.len()
            ));
        }
        skylark_abi::ids::validate(namespace.as_bytes())
            .map_err(|e| format!("SKYLARK_NAMESPACE {namespace:?} {e}"))?;

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
                format!("SKYLARK_LOG {v:?} is not one of off, error, warn, info, debug, trace")
            })?,
        };

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
            propagation,
        })
    }
}

fn on_off(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: bool,
) -> Result<bool, String> {
    match var(name).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) => match v.as_str() {
            "on" | "1" | "true" | "yes" => Ok(true),
            "off" | "0" | "false" | "no" => Ok(false),
            _ => Err(format!("{name} {v:?} is not on or off")),
        },
    }
}

fn propagation(var: &impl Fn(&str) -> Option<String>) -> Result<Propagation, String> {
    let topology_file = var("SKYLARK_TOPOLOGY_FILE");
    let global_url = var("SKYLARK_GLOBAL_URL");
    if let Some(url) = &global_url {
        check_redis_url(url).map_err(|e| format!("SKYLARK_GLOBAL_URL: {e}"))?;
    }
    let enabled = match var("SKYLARK_PROPAGATION").map(|v| v.trim().to_ascii_lowercase()) {
        None => topology_file.is_some() || global_url.is_some(),
        Some(v) if v == "auto" => topology_file.is_some() || global_url.is_some(),
        Some(_) => on_off(var, "SKYLARK_PROPAGATION", false)?,
    };
    let node_addrs = match var("SKYLARK_NODE_ADDRS") {
        None => Vec::new(),
        Some(v) => parse_node_addrs(&v).map_err(|e| format!("SKYLARK_NODE_ADDRS: {e}"))?,
    };
    let policy = match var("SKYLARK_POLICY") {
        None => Policy::Skylark,
        Some(v) => Policy::parse(v.trim()).ok_or_else(|| {
            format!("SKYLARK_POLICY {v:?} is not one of skylark, random, stateless, local")
        })?,
    };
    let min_bandwidth_mbps = match var("SKYLARK_SLO_MIN_BANDWIDTH_MBPS") {
        None => 0.0,
        Some(v) => match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => x,
            _ => {
                return Err(format!(
                    "SKYLARK_SLO_MIN_BANDWIDTH_MBPS {v:?} is not a non-negative number"
                ))
            }
        },
    };
    let ms = |name: &str, default: u64, min: u64, max: u64| -> Result<Duration, String> {
        number(var, name, default, min, max).map(Duration::from_millis)
    };
    Ok(Propagation {
        enabled,
        topology_file,
        topology_refresh: ms("SKYLARK_TOPOLOGY_REFRESH_MS", 1000, 10, 3_600_000)?,
        node_addrs,
        remote_port: number(var, "SKYLARK_REMOTE_PORT", 6379, 1, 65_535)? as u16,
        global_url,
        policy,
        max_latency_ms: number(var, "SKYLARK_SLO_MAX_LATENCY_MS", 5000, 1, 86_400_000)?,
        min_bandwidth_mbps,
        queue_len: number(var, "SKYLARK_QUEUE_LEN", 256, 1, 1 << 20)? as usize,
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

/// Parses `name=url,name=url` (whitespace around items ignored).
pub fn parse_node_addrs(v: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, url) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not name=url"))?;
        let (name, url) = (name.trim(), url.trim());
        skylark_abi::ids::validate(name.as_bytes()).map_err(|e| format!("node {name:?} {e}"))?;
        check_redis_url(url).map_err(|e| format!("node {name}: {e}"))?;
        if out.iter().any(|(n, _)| n == name) {
            return Err(format!("node {name} is listed twice"));
        }
        out.push((name.to_string(), url.to_string()));
    }
    Ok(out)
}

fn number(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, String> {
    let Some(raw) = var(name) else {
        return Ok(default);
    };
    let n: u64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("{name} {raw:?} is not a non-negative integer"))?;
    if n < min || n > max {
        return Err(format!("{name} {n} is outside {min}..={max}"));
    }
    Ok(n)
}

/// Accepts the URL forms the store supports, without connecting.
pub fn check_redis_url(url: &str) -> Result<(), String> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    match scheme {
        "redis" | "rediss" | "unix" | "redis+unix" => {}
        _ => {
            return Err(format!(
                "{:?} must start with redis://, rediss://, unix:// or redis+unix://",
                redact(url)
            ))
        }
    }
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| format!("{:?} is not a valid Redis URL: {e}", redact(url)))
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
        Config::from_lookup(|k| map.get(k).cloned())
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
