//! This node's view of the cluster: its configuration, the node-local store, the other
//! nodes' stores, the live topology, the event publisher and the arrival listeners.
//! Built from a [`Config`] value; shared by the host calls and the propagation engine.

use crate::arrivals::Listeners;
use crate::config::Config;
use crate::error::CallError;
use crate::events::Events;
use crate::nodes::{Global, Nodes};
use crate::store::{OpenError, Store};
use crate::topology::Schedule;
use crate::topology_watch::{Change, TopologyWatch};
use crate::{keys, runtime};
use serde_json::json;
use std::sync::Arc;

/// What the host calls and the engine share.
pub struct Cluster {
    pub config: Config,
    pub local: Arc<Store>,
    pub nodes: Nodes,
    pub topology: TopologyWatch,
    pub events: Events,
    /// The pub/sub listeners of arrival signals, one per store (`arrivals`).
    pub arrivals: Listeners,
    /// What the node-local store checks a put against: the bundle limit and the
    /// namespace's quota (`fence::limits`).
    pub limits: crate::fence::Limits,
}

impl Cluster {
    /// The cluster `config` describes; opens no connection (stores connect lazily).
    pub fn new(config: Config) -> Result<Cluster, OpenError> {
        let local = Store::local(&config)?;
        let p = &config.propagation;
        let nodes = Nodes::new(&config, Arc::clone(&local));
        let topology = TopologyWatch::new(
            p.topology_file.clone(),
            p.topology_key.then(|| keys::topology(&config.namespace)),
            p.topology_refresh,
            config.node_name.clone(),
        );
        let events = Events::new(Arc::clone(&local), &config.namespace, p.events);
        let limits = crate::fence::Limits::local(
            config.max_bundle_bytes,
            &config.namespace,
            config.namespace_max_bytes,
        );
        Ok(Cluster {
            limits,
            config,
            local,
            nodes,
            topology,
            events,
            arrivals: Listeners::default(),
        })
    }

    /// The live topology (reloaded if due), announcing changes as events.
    pub async fn current_topology(&self) -> Option<Arc<Schedule>> {
        let (topo, changes) = self.topology.current(&self.local).await;
        self.announce(changes).await;
        topo
    }

    /// Publishes topology changes as `topology` and `topology_invalid` events.
    async fn announce(&self, changes: Vec<Change>) {
        for c in changes {
            match c {
                Change::Loaded {
                    origin,
                    digest,
                    nodes,
                    slots,
                } => {
                    self.events
                        .publish(
                            "topology",
                            json!({"origin": format!("{origin:?}").to_lowercase(),
                           "version": format!("{digest:016x}"), "nodes": nodes, "slots": slots}),
                        )
                        .await
                }
                Change::Invalid { origin, error } => {
                    self.events
                        .publish(
                            "topology_invalid",
                            json!({"origin": format!("{origin:?}").to_lowercase(), "error": error}),
                        )
                        .await
                }
            }
        }
    }

    /// The global store, for a host call on the guest's thread (policy `stateless`);
    /// `StoreUnavailable` if there is none.
    pub fn require_global(&'static self) -> Result<Global, CallError> {
        runtime::run(self.config.timeout, async move {
            let topo = self.current_topology().await;
            Ok(self.nodes.global(topo.as_deref()))
        })?
        .ok_or_else(|| {
            CallError::new(
                skylark_abi::Status::StoreUnavailable,
                "policy stateless needs a global store (a topology with a Cloud node, or SKYLARK_GLOBAL_URL)",
            )
        })
    }
}
