//! The forms of `SKYLARK_GLOBAL_URL`: one Redis server (any URL [`super::check_redis_url`]
//! accepts), a Redis Cluster (`redis+cluster://[user:pass@]host:port,host:port`) or a
//! Sentinel-managed primary (`redis+sentinel://[user:pass@]host:port,host:port/<master>`),
//! each over TLS with the `rediss+` schemes. Only the global store may be distributed:
//! node-local and other nodes' stores stay single servers.
//!
//! A cluster URL lists seed nodes (redis-rs discovers the rest); a Sentinel URL lists the
//! sentinels and names the monitored primary. The URL's user and password (else the
//! global credentials) authenticate to the data nodes; sentinels are reached without
//! credentials.

use super::{redact, InvalidUrl};

/// Where the global store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobalTarget {
    /// One server: the URL as given.
    Single(String),
    /// A Redis Cluster: one `redis://` (or `rediss://`) URL per seed node, each carrying
    /// the URL's credentials and database.
    Cluster { nodes: Vec<String> },
    /// A Sentinel deployment: the sentinels as `(host, port)`, the primary's name, whether
    /// TLS is used, and a `redis://` URL (first sentinel's address) carrying the
    /// credentials and database for the data nodes.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master: String,
        tls: bool,
        data: String,
    },
}

/// The schemes of distributed global stores.
const DISTRIBUTED: [&str; 4] = [
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
];

/// Whether `url` is a cluster or Sentinel URL (only `SKYLARK_GLOBAL_URL` takes those).
pub fn is_distributed(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(s, _)| DISTRIBUTED.contains(&s.to_ascii_lowercase().as_str()))
}

/// Parses `SKYLARK_GLOBAL_URL`, without connecting.
pub fn parse(url: &str) -> Result<GlobalTarget, InvalidUrl> {
    if !is_distributed(url) {
        super::check_redis_url(url).map_err(|e| {
            InvalidUrl(format!(
                "{e} (or, for the global store, redis+cluster://, rediss+cluster://, \
                 redis+sentinel:// or rediss+sentinel://)"
            ))
        })?;
        return Ok(GlobalTarget::Single(url.to_string()));
    }
    let fail = |what: &str| InvalidUrl(format!("{:?}: {what}", redact(url)));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| fail("no scheme"))?;
    let scheme = scheme.to_ascii_lowercase();
    let tls = scheme.starts_with("rediss+");
    let base = if tls { "rediss" } else { "redis" };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    let hosts: Vec<&str> = hosts.split(',').map(str::trim).collect();
    if hosts.iter().any(|h| h.is_empty()) {
        return Err(fail("an empty host in the list of nodes"));
    }
    let mut addrs = Vec::with_capacity(hosts.len());
    for h in &hosts {
        let (host, port) = h
            .rsplit_once(':')
            .ok_or_else(|| fail(&format!("node {h:?} has no port (host:port)")))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| fail(&format!("node {h:?} has no valid port")))?;
        if host.is_empty() {
            return Err(fail(&format!("node {h:?} has no host")));
        }
        addrs.push((host.to_string(), port));
    }
    let node_url = |host: &str, port: u16, path: &str| {
        let url = format!("{base}://{userinfo}{host}:{port}{path}");
        redis::Client::open(url.as_str()).map(|_| url).map_err(|e| {
            fail(&format!(
                "node {host}:{port} is not a valid Redis address: {e}"
            ))
        })
    };
    if scheme.ends_with("+cluster") {
        let nodes = addrs
            .iter()
            .map(|(h, p)| node_url(h, *p, path))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(GlobalTarget::Cluster { nodes });
    }
    // Sentinel: the path is `/<master name>[/<db>]`, then any query.
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, format!("?{q}")),
        None => (path, String::new()),
    };
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let master = parts.next().unwrap_or("");
    if master.is_empty() {
        return Err(fail(
            "names no primary: redis+sentinel://host:port,host:port/<master name>",
        ));
    }
    let db = parts.next().map(|d| format!("/{d}")).unwrap_or_default();
    let (h, p) = &addrs[0];
    let data = node_url(h, *p, &format!("{db}{query}"))?;
    Ok(GlobalTarget::Sentinel {
        sentinels: addrs,
        master: master.to_string(),
        tls,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_lists_its_seed_nodes() {
        let t = parse("redis+cluster://:pw@10.0.0.1:7000, 10.0.0.2:7001").unwrap();
        assert_eq!(
            t,
            GlobalTarget::Cluster {
                nodes: vec![
                    "redis://:pw@10.0.0.1:7000".into(),
                    "redis://:pw@10.0.0.2:7001".into()
                ]
            }
        );
        let t = parse("rediss+cluster://cache.example:6380").unwrap();
        assert_eq!(
            t,
            GlobalTarget::Cluster {
                nodes: vec!["rediss://cache.example:6380".into()]
            }
        );
    }

    #[test]
    fn a_sentinel_url_names_its_primary() {
        let t = parse("redis+sentinel://alice:pw@s1:26379,s2:26380/mymaster/2").unwrap();
        assert_eq!(
            t,
            GlobalTarget::Sentinel {
                sentinels: vec![("s1".into(), 26379), ("s2".into(), 26380)],
                master: "mymaster".into(),
                tls: false,
                data: "redis://alice:pw@s1:26379/2".into(),
            }
        );
        let GlobalTarget::Sentinel { tls, .. } = parse("rediss+sentinel://s1:1/m").unwrap() else {
            panic!("not a sentinel target");
        };
        assert!(tls);
    }

    #[test]
    fn single_urls_stay_single() {
        assert_eq!(
            parse("redis://10.0.0.9:6379").unwrap(),
            GlobalTarget::Single("redis://10.0.0.9:6379".into())
        );
    }

    #[test]
    fn bad_distributed_urls_are_refused_without_their_password() {
        for url in [
            "redis+cluster://:secret@h1:7000,,h2:7001",
            "redis+cluster://:secret@h1",
            "redis+cluster://:secret@h1:0",
            "redis+cluster://:secret@:7000",
            "redis+sentinel://:secret@s1:26379",
            "redis+sentinel://:secret@s1:26379/",
            "redis+shards://:secret@h1:7000",
        ] {
            let e = parse(url).unwrap_err().to_string();
            assert!(!e.contains("secret"), "{url}: {e}");
        }
    }
}
