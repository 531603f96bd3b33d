//! The process-wide plugin context (configuration and node-local store), built on the
//! first host call rather than at plugin load.

use crate::config::Config;
use crate::error::CallError;
use crate::store::Store;
use crate::{log, skylog};
use once_cell::sync::Lazy;
use skylark_abi::Status;
use std::sync::Arc;

/// What every host call needs.
pub struct Context {
    pub config: Config,
    pub local: Arc<Store>,
}

static CONTEXT: Lazy<Result<Context, String>> = Lazy::new(|| {
    let config = Config::from_env()?;
    log::set_level(config.log_level);
    let local = Store::new(&config.redis_url, config.timeout, config.connect_timeout)
        .map_err(|e| format!("SKYLARK_REDIS_URL: {e}"))?;
    skylog!(
        Info,
        "node {} namespace {} local store {}",
        config.node_name,
        config.namespace,
        local.name()
    );
    Ok(Context { config, local })
});

/// The context, or `ConfigInvalid` with the reason if the environment is invalid.
pub fn get() -> Result<&'static Context, CallError> {
    CONTEXT.as_ref().map_err(|e| {
        skylog!(Error, "invalid configuration: {e}");
        CallError::new(Status::ConfigInvalid, e.clone())
    })
}
