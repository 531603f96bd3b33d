//! Where each node's store is: the node-local store, the URL overrides of
//! `SKYLARK_NODE_ADDRS`, the global store, and the addresses the topology gives. Remote
//! stores are opened lazily and kept for the life of the process.

use crate::config::Config;
use crate::store::Store;
use crate::topology::Schedule;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The stores of all nodes this process talks to.
pub struct Nodes {
    local_name: String,
    local: Arc<Store>,
    overrides: HashMap<String, String>,
    remote_port: u16,
    global_url: Option<String>,
    timeout: std::time::Duration,
    connect_timeout: std::time::Duration,
    opened: Mutex<HashMap<String, Arc<Store>>>,
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
            global_url: p.global_url.clone(),
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
    /// the topology's address.
    pub fn store(&self, topo: Option<&Schedule>, name: &str) -> Result<Arc<Store>, String> {
        if name == self.local_name {
            return Ok(Arc::clone(&self.local));
        }
        let url = match self.overrides.get(name) {
            Some(url) => url.clone(),
            None => topo
                .and_then(|t| t.id(name).and_then(|id| t.redis_url(id, self.remote_port)))
                .ok_or_else(|| {
                    format!("node {name} has no store address (topology or SKYLARK_NODE_ADDRS)")
                })?,
        };
        self.open(&url)
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
                self.open(url).ok()?
            };
            return Some(Global { name, store });
        }
        let name = topo_name?;
        let store = self.store(topo, &name).ok()?;
        Some(Global { name, store })
    }

    fn open(&self, url: &str) -> Result<Arc<Store>, String> {
        let mut opened = self
            .opened
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(s) = opened.get(url) {
            return Ok(Arc::clone(s));
        }
        let store = Store::new(url, self.timeout, self.connect_timeout)?;
        opened.insert(url.to_string(), Arc::clone(&store));
        Ok(store)
    }
}
