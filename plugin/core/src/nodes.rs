//! Where each node's store is: the node-local store, the URL overrides of
//! `SKYLARK_NODE_ADDRS`, the global store (`SKYLARK_GLOBAL_URL`, else the topology's
//! global node), the addresses the topology file gives (over `rediss://` with
//! `SKYLARK_REMOTE_TLS`), and `SKYLARK_NODE_ADDR_TEMPLATE`. Every address comes from the
//! operator: a topology from the `<ns>:topology` key carries the file's addresses, never
//! its own (`topology_watch`). With `SKYLARK_REMOTE_TLS` on, a plain `redis://` store
//! other than the node-local one is refused. Remote stores are opened lazily, with the
//! node-wide credentials or, for the global store, the global ones, and kept for the life
//! of the process.

use crate::config::{redact, Config, Credentials, RedisUrl, Tls, NAME_PLACEHOLDER};
use crate::error::CallError;
use crate::store::{Acknowledge, OpenError, ReplyLimits, Store};
use crate::topology::Schedule;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The stores of all nodes this process talks to.
pub struct Nodes {
    local_name: String,
    local: Arc<Store>,
    overrides: HashMap<String, RedisUrl>,
    remote_port: u16,
    remote_tls: bool,
    addr_template: Option<RedisUrl>,
    global_url: Option<RedisUrl>,
    credentials: Credentials,
    global_credentials: Credentials,
    tls: Tls,
    timeout: std::time::Duration,
    connect_timeout: std::time::Duration,
    /// What writes to the global store wait for (`SKYLARK_GLOBAL_MIN_REPLICAS`).
    acknowledge: Acknowledge,
    /// The most bytes a store's reply may take (`SKYLARK_MAX_REPLY_BYTES`,
    /// `SKYLARK_MAX_BUNDLE_BYTES`).
    reply_limits: ReplyLimits,
    /// By URL and whether the store is opened as the global one.
    opened: Mutex<HashMap<(String, bool), Arc<Store>>>,
    /// The stores handed out, by node name.
    by_name: Mutex<HashMap<String, Arc<Store>>>,
}

/// Why a node's store cannot be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeError {
    /// Neither the topology nor `SKYLARK_NODE_ADDRS` gives the node an address.
    NoAddress { node: String },
    /// `SKYLARK_REMOTE_TLS` is on and the node's store is plain `redis://` (`url` redacted).
    PlainRefused { node: String, url: String },
    /// The node's store could not be set up from its address.
    Open(OpenError),
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::NoAddress { node } => write!(
                f,
                "node {node} has no store address (SKYLARK_NODE_ADDRS, the topology file or \
                 SKYLARK_NODE_ADDR_TEMPLATE)"
            ),
            NodeError::PlainRefused { node, url } => write!(
                f,
                "node {node}: {url} is not TLS and SKYLARK_REMOTE_TLS is on (use rediss://)"
            ),
            NodeError::Open(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for NodeError {}

impl From<NodeError> for CallError {
    /// Either way the node's store cannot be reached from here: `StoreUnavailable`, as for
    /// a store that does not answer (a copy to it is retried, then re-targeted).
    fn from(e: NodeError) -> CallError {
        CallError::new(skylark_abi::Status::StoreUnavailable, e.to_string())
    }
}

/// The global store and the name it goes by.
#[derive(Clone)]
pub struct Global {
    pub name: String,
    pub store: Arc<Store>,
}

impl Nodes {
    pub fn new(config: &Config, local: Arc<Store>) -> Nodes {
        let p = &config.propagation;
        Nodes {
            local_name: config.node_name.clone(),
            local,
            overrides: p.node_addrs.iter().cloned().collect(),
            remote_port: p.remote_port,
            remote_tls: p.remote_tls,
            addr_template: p.addr_template.clone(),
            global_url: p.global_url.clone(),
            credentials: config.credentials.clone(),
            global_credentials: config.global_credentials.clone(),
            tls: config.tls.clone(),
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
            acknowledge: Acknowledge {
                replicas: p.global_min_replicas,
                within: p.global_wait,
            },
            reply_limits: ReplyLimits::from_config(config),
            opened: Mutex::new(HashMap::new()),
            by_name: Mutex::new(HashMap::new()),
        }
    }

    /// This node's name.
    pub fn local_name(&self) -> &str {
        &self.local_name
    }

    /// The node-local store.
    pub fn local(&self) -> &Arc<Store> {
        &self.local
    }

    /// The store of node `name`: the local store for this node; for the topology's
    /// global node `SKYLARK_GLOBAL_URL` if set; else the override, else the topology's
    /// address (from the file: see `topology_watch`), else the address template. The
    /// topology's global node gets the global credentials.
    pub fn store(&self, topo: Option<&Schedule>, name: &str) -> Result<Arc<Store>, NodeError> {
        if name == self.local_name {
            return Ok(Arc::clone(&self.local));
        }
        let is_global = topo
            .and_then(|t| t.global().map(|g| t.name(g) == name))
            .unwrap_or(false);
        if let (true, Some(url)) = (is_global, &self.global_url) {
            let store = self.open(name, url, true)?;
            self.remember(name, &store);
            return Ok(store);
        }
        let url = match self.overrides.get(name) {
            Some(url) => url.as_str().to_string(),
            None => topo
                .and_then(|t| t.id(name).and_then(|id| self.topology_url(t, id)))
                .or_else(|| {
                    self.addr_template
                        .as_ref()
                        .map(|t| t.replace(NAME_PLACEHOLDER, name))
                })
                .ok_or_else(|| NodeError::NoAddress {
                    node: name.to_string(),
                })?,
        };
        let store = self.open(name, &url, is_global)?;
        self.remember(name, &store);
        Ok(store)
    }

    fn remember(&self, name: &str, store: &Arc<Store>) {
        self.by_name
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(name.to_string(), Arc::clone(store));
    }

    /// The nodes (other than this one) whose stores this process holds a connection to.
    pub fn connected(&self) -> Vec<String> {
        self.by_name
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter(|(_, store)| store.has_connection())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The URL the topology gives node `id`; `rediss://` for a node known only by IP when
    /// `SKYLARK_REMOTE_TLS` is on.
    fn topology_url(&self, t: &Schedule, id: u32) -> Option<String> {
        let url = t.redis_url(id, self.remote_port)?;
        let by_ip = t.get(id).is_some_and(|n| n.redis.is_none());
        if self.remote_tls && by_ip {
            return Some(url.replacen("redis://", "rediss://", 1));
        }
        Some(url)
    }

    /// The global store: `SKYLARK_GLOBAL_URL` if set, else the topology's global node.
    /// `None` when neither exists.
    pub fn global(&self, topo: Option<&Schedule>) -> Option<Global> {
        let topo_name = topo.and_then(|t| t.global().map(|g| t.node(g).name.clone()));
        if let Some(url) = &self.global_url {
            let name = topo_name.unwrap_or_else(|| "global".to_string());
            let store = if name == self.local_name {
                Arc::clone(&self.local)
            } else {
                match self.open(&name, url, true) {
                    Ok(s) => {
                        self.remember(&name, &s);
                        s
                    }
                    Err(e) => {
                        crate::skylog!(Warn, "global store: {e}");
                        return None;
                    }
                }
            };
            return Some(Global { name, store });
        }
        let name = topo_name?;
        let store = match self.store(topo, &name) {
            Ok(s) => s,
            Err(e @ NodeError::PlainRefused { .. }) => {
                crate::skylog!(Warn, "global store: {e}");
                return None;
            }
            Err(e) => {
                crate::skylog!(Debug, "global store: {e}");
                return None;
            }
        };
        Some(Global { name, store })
    }

    /// The store at `url` for node `node`, opened once. Refuses plain TCP when
    /// `SKYLARK_REMOTE_TLS` is on.
    fn open(&self, node: &str, url: &str, global: bool) -> Result<Arc<Store>, NodeError> {
        let plain = ["redis://", "redis+cluster://", "redis+sentinel://"];
        if self.remote_tls && plain.iter().any(|p| url.starts_with(p)) {
            return Err(NodeError::PlainRefused {
                node: node.to_string(),
                url: redact(url),
            });
        }
        let mut opened = self
            .opened
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (url.to_string(), global);
        if let Some(s) = opened.get(&key) {
            return Ok(Arc::clone(s));
        }
        let credentials = if global {
            &self.global_credentials
        } else {
            &self.credentials
        };
        let store = if global {
            Store::global(
                url,
                credentials,
                &self.tls,
                self.timeout,
                self.connect_timeout,
                self.acknowledge,
            )
        } else {
            Store::remote(
                url,
                credentials,
                &self.tls,
                self.timeout,
                self.connect_timeout,
            )
        }
        .map_err(NodeError::Open)?;
        store.set_reply_limits(self.reply_limits);
        opened.insert(key, Arc::clone(&store));
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(env: &[(&str, &str)]) -> Nodes {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = Config::from_lookup(|k| env.get(k).cloned()).unwrap();
        let local = Store::local(&config).unwrap();
        Nodes::new(&config, local)
    }

    fn topology() -> Schedule {
        Schedule::parse(
            br#"{"global": "cloud", "nodes": [
                {"name": "here", "type": "Edge"},
                {"name": "sat", "type": "Sat", "ip": "10.0.0.7"},
                {"name": "named", "type": "Sat", "redis": "redis://10.0.0.8:7000"},
                {"name": "cloud", "type": "Cloud", "ip": "10.0.0.9"}],
              "links": [{"source": "here", "target": "sat", "latency_ms": 5, "bandwidth_mbps": 10}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn remote_tls_applies_to_nodes_known_by_ip_only() {
        let topo = topology();
        let plain = nodes(&[("SKYLARK_NODE_NAME", "here")]);
        let sat = plain.store(Some(&topo), "sat").unwrap();
        assert_eq!(sat.name(), "redis://10.0.0.7:6379");
        assert!(!sat.is_tls());

        let tls = nodes(&[
            ("SKYLARK_NODE_NAME", "here"),
            ("SKYLARK_REMOTE_TLS", "on"),
            ("SKYLARK_REMOTE_PORT", "6380"),
        ]);
        let sat = tls.store(Some(&topo), "sat").unwrap();
        assert_eq!(sat.name(), "rediss://10.0.0.7:6380");
        assert!(sat.is_tls());
        // Any other plain store is refused (issue 16 point 2): an explicit URL, an
        // override, the template, the global URL.
        let named = tls.store(Some(&topo), "named").map(|_| ()).unwrap_err();
        assert_eq!(
            named.to_string(),
            "node named: redis://10.0.0.8:7000 is not TLS and SKYLARK_REMOTE_TLS is on (use rediss://)"
        );
        let more = nodes(&[
            ("SKYLARK_NODE_NAME", "here"),
            ("SKYLARK_REMOTE_TLS", "on"),
            (
                "SKYLARK_NODE_ADDRS",
                "sat=redis://:pw@10.0.0.70:1,named=rediss://10.0.0.8:7000",
            ),
            ("SKYLARK_NODE_ADDR_TEMPLATE", "redis://{name}.example:6379"),
            ("SKYLARK_GLOBAL_URL", "redis://10.0.0.99:6379"),
        ]);
        let e = more.store(Some(&topo), "sat").map(|_| ()).unwrap_err();
        assert!(matches!(e, NodeError::PlainRefused { .. }), "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
        assert!(more.store(Some(&topo), "named").unwrap().is_tls());
        let e = more
            .store(Some(&topo), "elsewhere")
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(e, NodeError::PlainRefused { .. }), "{e}");
        assert!(more.global(Some(&topo)).is_none());
        // A plain cluster or Sentinel deployment as well (issue 18).
        for url in [
            "redis+cluster://10.0.0.99:7000",
            "redis+sentinel://10.0.0.99:26379/m",
        ] {
            let n = nodes(&[
                ("SKYLARK_NODE_NAME", "here"),
                ("SKYLARK_REMOTE_TLS", "on"),
                ("SKYLARK_GLOBAL_URL", url),
            ]);
            assert!(n.global(Some(&topo)).is_none(), "{url}");
            let n = nodes(&[
                ("SKYLARK_NODE_NAME", "here"),
                ("SKYLARK_REMOTE_TLS", "on"),
                ("SKYLARK_GLOBAL_URL", &url.replacen("redis+", "rediss+", 1)),
            ]);
            assert!(n.global(Some(&topo)).unwrap().store.is_tls(), "{url}");
        }
        // A local store over plain TCP is the operator's choice.
        assert!(!more.local().is_tls());
    }

    #[test]
    fn addresses_come_from_overrides_the_topology_then_the_template() {
        let topo = topology();
        let n = nodes(&[
            ("SKYLARK_NODE_NAME", "here"),
            ("SKYLARK_NODE_ADDRS", "sat=redis://127.0.0.1:7001"),
            (
                "SKYLARK_NODE_ADDR_TEMPLATE",
                "rediss://{name}.redis.example:6380",
            ),
        ]);
        assert_eq!(
            n.store(Some(&topo), "sat").unwrap().name(),
            "redis://127.0.0.1:7001"
        );
        assert_eq!(
            n.store(Some(&topo), "named").unwrap().name(),
            "redis://10.0.0.8:7000"
        );
        let other = n.store(Some(&topo), "other-node").unwrap();
        assert_eq!(other.name(), "rediss://other-node.redis.example:6380");
        assert!(other.is_tls());
        let e = nodes(&[("SKYLARK_NODE_NAME", "here")])
            .store(Some(&topo), "other-node")
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(e, NodeError::NoAddress { .. }), "{e}");
    }

    #[test]
    fn the_global_url_is_the_global_node_s_store() {
        // Reached as a node (an elected target) or as the global store: one store, the
        // operator's SKYLARK_GLOBAL_URL, not the topology's address for that node.
        let topo = topology();
        let n = nodes(&[
            ("SKYLARK_NODE_NAME", "here"),
            ("SKYLARK_GLOBAL_URL", "redis://10.0.0.99:6379"),
        ]);
        assert_eq!(
            n.store(Some(&topo), "cloud").unwrap().name(),
            "redis://10.0.0.99:6379"
        );
        let g = n.global(Some(&topo)).unwrap();
        assert_eq!(
            (g.name.as_str(), g.store.name()),
            ("cloud", "redis://10.0.0.99:6379")
        );
    }

    #[test]
    fn the_global_store_gets_its_own_credentials() {
        let topo = topology();
        let n = nodes(&[
            ("SKYLARK_NODE_NAME", "here"),
            ("SKYLARK_REDIS_USERNAME", "edge"),
            ("SKYLARK_REDIS_PASSWORD", "edge-secret"),
            ("SKYLARK_GLOBAL_USERNAME", "tenant"),
            ("SKYLARK_GLOBAL_PASSWORD", "cloud-secret"),
        ]);
        assert_eq!(n.local().user(), Some("edge"));
        assert_eq!(n.store(Some(&topo), "sat").unwrap().user(), Some("edge"));
        // The topology's global node, whether reached as a node or as the global store.
        assert_eq!(
            n.store(Some(&topo), "cloud").unwrap().user(),
            Some("tenant")
        );
        let g = n.global(Some(&topo)).unwrap();
        assert_eq!((g.name.as_str(), g.store.user()), ("cloud", Some("tenant")));

        let n = nodes(&[
            ("SKYLARK_NODE_NAME", "here"),
            ("SKYLARK_GLOBAL_URL", "redis://10.0.0.99:6379"),
            ("SKYLARK_REDIS_USERNAME", "edge"),
            ("SKYLARK_REDIS_PASSWORD", "edge-secret"),
        ]);
        // No global credentials of its own: the node-wide ones.
        let g = n.global(Some(&topo)).unwrap();
        assert_eq!(g.store.name(), "redis://10.0.0.99:6379");
        assert_eq!(g.store.user(), Some("edge"));
    }
}
