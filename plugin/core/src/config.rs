//! Plugin configuration, read from the environment of the process that runs WasmEdge
//! (set by the node operator, never by the guest), validated with clear errors.

use crate::log::Level;
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
];

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        })
    }
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
