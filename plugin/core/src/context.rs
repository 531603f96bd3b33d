//! The process-wide plugin context (configuration, stores, topology, propagation), built
//! on the first host call rather than at plugin load.

use crate::config::Config;
use crate::error::CallError;
use crate::keys;
use crate::nodes::Nodes;
use crate::propagation::Engine;
use crate::store::Store;
use crate::topology_watch::TopologyWatch;
use crate::{log, skylog};
use once_cell::sync::{Lazy, OnceCell};
use skylark_abi::Status;
use std::sync::Arc;

/// What every host call needs.
pub struct Context {
    pub config: Config,
    pub local: Arc<Store>,
    pub nodes: Nodes,
    pub topology: TopologyWatch,
    /// Background propagation; `None` when it is off.
    pub engine: Option<Engine>,
}

static CONTEXT: Lazy<Result<Context, String>> = Lazy::new(|| {
    let config = Config::from_env().map_err(|e| e.to_string())?;
    log::set_level(config.log_level);
    let local = Store::new(
        &config.redis_url,
        &config.credentials,
        &config.tls,
        config.timeout,
        config.connect_timeout,
    )
    .map_err(|e| format!("SKYLARK_REDIS_URL: {e}"))?;
    let p = &config.propagation;
    skylog!(
        Info,
        "node {} namespace {} local store {} propagation {}",
        config.node_name,
        config.namespace,
        local.name(),
        if p.enabled { "on" } else { "off" }
    );
    let nodes = Nodes::new(&config, Arc::clone(&local));
    let topology = TopologyWatch::new(
        p.topology_file.clone(),
        keys::topology(&config.namespace),
        p.topology_refresh,
    );
    let engine = p.enabled.then(|| Engine::new(p.queue_len));
    Ok(Context {
        config,
        local,
        nodes,
        topology,
        engine,
    })
});

static STARTED: OnceCell<()> = OnceCell::new();

/// The context, or `ConfigInvalid` with the reason if the environment is invalid. The
/// first successful call also starts background propagation (outbox sweeps, exit flush).
pub fn get() -> Result<&'static Context, CallError> {
    let ctx = CONTEXT.as_ref().map_err(|e| {
        skylog!(Error, "invalid configuration: {e}");
        CallError::new(Status::ConfigInvalid, e.clone())
    })?;
    STARTED.get_or_init(|| {
        if let Some(engine) = &ctx.engine {
            engine.start(ctx);
        }
    });
    Ok(ctx)
}
