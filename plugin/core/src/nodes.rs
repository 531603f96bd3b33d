//! Where each node's store is: the node-local store, the URL overrides of
//! `SKYLARK_NODE_ADDRS`, the global store, and the addresses the topology gives (over
//! `rediss://` with `SKYLARK_REMOTE_TLS`). Remote stores are opened lazily, with the
//! node-wide credentials or, for the global store, the global ones, and kept for the life
//! of the process.

use crate::config::{Config, Credentials, RedisUrl, Tls};
use crate::error::CallError;
use crate::store::{OpenError, Store};
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
    global_url: Option<RedisUrl>,
    credentials: Credentials,
    global_credentials: Credentials,
    tls: Tls,
    timeout: std::time::Duration,
    connect_timeout: std::time::Duration,
    /// By URL and whether the store is opened as the global one.
    opened: Mutex<HashMap<(String, bool), Arc<Store>>>,
}

/// Why a node's store cannot be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeError {
    /// Neither the topology nor `SKYLARK_NODE_ADDRS` gives the node an address.
    NoAddress { node: String },
    /// The node's store could not be set up from its address.
    Open(OpenError),
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::NoAddress { node } => write!(
                f,
                "node {node} has no store address (topology or SKYLARK_NODE_ADDRS)"
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
            global_url: p.global_url.clone(),
            credentials: config.credentials.clone(),
            global_credentials: config.global_credentials.clone(),
            tls: config.tls.clone(),
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
            opened: Mutex::new(HashMap::new()),
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

    /// The store of node `name`: the local store for this node, else the override, else
    /// the topology's address. The topology's global node gets the global credentials.
    pub fn store(&self, topo: Option<&Schedule>, name: &str) -> Result<Arc<Store>, NodeError> {
        if name == self.local_name {
            return Ok(Arc::clone(&self.local));
        }
        let is_global = topo
            .and_then(|t| t.global().map(|g| t.name(g) == name))
            .unwrap_or(false);
        let url = match self.overrides.get(name) {
            Some(url) => url.as_str().to_string(),
            None => topo
                .and_then(|t| t.id(name).and_then(|id| self.topology_url(t, id)))
                .ok_or_else(|| NodeError::NoAddress {
                    node: name.to_string(),
                })?,
        };
        self.open(&url, is_global)
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
                self.open(url, true).ok()?
            };
            return Some(Global { name, store });
        }
        let name = topo_name?;
        let store = self.store(topo, &name).ok()?;
        Some(Global { name, store })
    }

    fn open(&self, url: &str, global: bool) -> Result<Arc<Store>, NodeError> {
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
        let store = Store::new(
            url,
            credentials,
            &self.tls,
            self.timeout,
            self.connect_timeout,
        )
        .map_err(NodeError::Open)?;
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
        let local = Store::new(
            &config.redis_url,
            &config.credentials,
            &config.tls,
            config.timeout,
            config.connect_timeout,
        )
        .unwrap();
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
        // An explicit URL is taken as it is.
        let named = tls.store(Some(&topo), "named").unwrap();
        assert_eq!(named.name(), "redis://10.0.0.8:7000");
        assert!(!named.is_tls());
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
