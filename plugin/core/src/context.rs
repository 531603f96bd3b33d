//! What a host call works with: the [`Cluster`] (configuration, stores, topology, events)
//! and, when propagation is on, the [`Engine`]. [`Context::new`] builds one from a
//! [`Config`] value (tests and fuzz targets do); the plugin's own is built from the
//! environment when the plugin creates its module, on a background thread ([`prewarm`]),
//! or on the first host call if that comes first ([`get`]); never at plugin load.

use crate::cluster::Cluster;
use crate::config::Config;
use crate::error::CallError;
use crate::propagation::Engine;
use crate::{log, skylog};
use once_cell::sync::Lazy;
use skylark_abi::Status;
use std::fmt;
use std::sync::Arc;

/// What every host call needs.
pub struct Context {
    pub cluster: Arc<Cluster>,
    /// Background propagation; `None` when it is off.
    pub engine: Option<Engine>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("node", &self.cluster.config.node_name)
            .field("local", &self.cluster.local.name())
            .field("propagation", &self.engine.is_some())
            .finish()
    }
}

impl Context {
    /// The context of `config`; opens no connection and starts nothing. A store URL the
    /// client rejects is `ConfigInvalid`.
    pub fn new(config: Config) -> Result<Context, CallError> {
        let cluster = Cluster::new(config).map_err(|e| {
            CallError::new(Status::ConfigInvalid, format!("SKYLARK_REDIS_URL: {e}"))
        })?;
        let cluster = Arc::new(cluster);
        let p = &cluster.config.propagation;
        let engine = p
            .enabled
            .then(|| Engine::new(Arc::clone(&cluster), p.queue_len));
        Ok(Context { cluster, engine })
    }

    /// Makes this the context of the process for good (it lives until exit, as the
    /// engine's background threads may): sets the log level and starts background
    /// propagation (outbox sweeps, exit flush) if it is on.
    pub fn start(self) -> &'static Context {
        let ctx: &'static Context = Box::leak(Box::new(self));
        let config = &ctx.cluster.config;
        log::set_level(config.log_level);
        skylog!(
            Info,
            "node {} namespace {} local store {} propagation {}",
            config.node_name,
            config.namespace,
            ctx.cluster.local.name(),
            if ctx.engine.is_some() { "on" } else { "off" }
        );
        if let Some(engine) = &ctx.engine {
            engine.start();
        }
        ctx
    }
}

/// The plugin's context, from the process environment, started on first use.
static PROCESS: Lazy<Result<&'static Context, CallError>> = Lazy::new(|| {
    let config =
        Config::from_env().map_err(|e| CallError::new(Status::ConfigInvalid, e.to_string()))?;
    // Before anything can log (as the level applies to what follows).
    log::set_level(config.log_level);
    crate::malloc::keep_large_buffers();
    Ok(Context::new(config)?.start())
});

/// Builds and starts the plugin's context on a thread of its own and opens its
/// connection to the node-local store, so that the guest's first call finds them ready:
/// the plugin calls this when WasmEdge creates a `skylark` module instance, before the
/// guest runs. Returns at once (it only spawns the thread, once per process); a first
/// call that comes before the thread is done waits for what it still needs. An invalid
/// configuration is reported by the calls, as without it.
pub fn prewarm() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("skylark-prewarm".into())
            .spawn(|| {
                if let Ok(ctx) = PROCESS.as_ref() {
                    if let Err(e) = ctx.cluster.local.warm_up() {
                        // The first call connects again and reports it.
                        skylog!(Debug, "prewarm: {e}");
                    }
                }
            });
        if let Err(e) = spawned {
            skylog!(Debug, "prewarm: no thread ({e}); the first call connects");
        }
    });
}

/// The plugin's context, or `ConfigInvalid` with the reason if the environment is
/// invalid. The first successful call also starts background propagation.
pub fn get() -> Result<&'static Context, CallError> {
    PROCESS.as_ref().copied().map_err(|e| {
        skylog!(Error, "invalid configuration: {}", e.message);
        e.clone()
    })
}
