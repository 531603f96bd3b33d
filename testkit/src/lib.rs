//! The test kit: what the system tests, the network emulator, the benchmarks and the
//! experiment share, one of each. Finds the wasmedge binary, the built plugin and guest
//! `.wasm` files; starts throw-away `redis-server` processes ([`redis`], [`secure`]);
//! a Redis Cluster and a Sentinel deployment for the global store ([`redis_cluster`]);
//! runs guests under `wasmedge` with a deadline ([`guest`]); a hostile store that
//! answers with huge replies ([`hostile_store`]); free ports ([`net`]),
//! polling with a deadline ([`wait`]), the wall clock ([`clock`]), percentiles
//! ([`stats`]), a seeded RNG ([`rng`]), the plugin's events ([`events`]) and the host
//! tools' command lines ([`cli`]).
//!
//! Build the artifacts first with `scripts/test.sh` (which also runs the tests), or set
//! `WASMEDGE_BIN`, `SKYLARK_PLUGIN_DIR` and `SKYLARK_WASM_DIR` yourself.

pub mod cli;
pub mod clock;
pub mod events;
pub mod guest;
pub mod hostile_store;
pub mod net;
pub mod redis;
pub mod redis_cluster;
pub mod rng;
pub mod secure;
pub mod stats;
pub mod wait;

pub use clock::now_ms;
pub use events::{subscribe, Events};
pub use guest::{aot, aot_of, Guest, GuestRun, Running, RUN_TIMEOUT};
pub use hostile_store::{Flood, HostileStore};
pub use net::free_port;
pub use redis::{Durability, Redis, ServerConfig, NS};
pub use redis_cluster::{RedisCluster, Sentinels};
pub use rng::Rng;
pub use stats::percentile;
pub use wait::eventually;

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ has a parent")
        .to_path_buf()
}

fn env_path(var: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or(default)
}

fn must_exist(p: PathBuf, what: &str) -> PathBuf {
    assert!(
        p.exists(),
        "{what} not found at {}: run scripts/test.sh, which installs WasmEdge and builds the \
         plugin and guests before running the tests",
        p.display()
    );
    p
}

/// The `wasmedge` command.
pub fn wasmedge_bin() -> PathBuf {
    must_exist(
        env_path("WASMEDGE_BIN", root().join(".wasmedge/bin/wasmedge")),
        "wasmedge",
    )
}

/// The directory holding only `libwasmedgePluginSkylark.so`, for `WASMEDGE_PLUGIN_PATH`.
pub fn plugin_dir() -> PathBuf {
    let dir = env_path("SKYLARK_PLUGIN_DIR", root().join("target/plugin"));
    must_exist(
        dir.join("libwasmedgePluginSkylark.so"),
        "the Skylark plugin",
    );
    dir
}

/// A guest module by name (`probe`, `bad-guest`, `preprocess`, ...).
pub fn wasm(name: &str) -> PathBuf {
    let dir = env_path(
        "SKYLARK_WASM_DIR",
        root().join("target/wasm32-wasip1/release"),
    );
    must_exist(dir.join(format!("{name}.wasm")), "guest module")
}

/// A chain id unique to this test process and call site.
pub fn chain_id(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
