//! What the plugin sends to Redis, listed for the check that the ACLs README.md documents
//! ("Minimal ACL") grant all of it (`testkit/tests/acl.rs`): every Lua script, with the
//! stores it runs on, and the plain commands it sends to stores other than its node-local
//! one. Redis checks the commands a script calls against the caller's ACL only when the
//! script runs, so a command missing from the documented rules shows up as a `NOPERM` at
//! run time, on the one path that calls it; the check finds it at build time instead.

/// The stores a script or command runs on, and so the documented ACL user it runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runs {
    /// Only on the plugin's node-local store (outbox, quota, stats, topology): the node
    /// user.
    NodeLocal,
    /// Also on other nodes' stores and the global store (bundle reads, puts, copies,
    /// arrivals): the node user and the tenant user, who may touch bundles only.
    AnyStore,
}

/// A Lua script the plugin sends (by digest or with its text).
#[derive(Clone, Copy, Debug)]
pub struct LuaScript {
    /// The constant or static that holds it.
    pub name: &'static str,
    /// Its text, as sent with `EVAL`.
    pub body: &'static str,
    pub runs: Runs,
}

/// Every Lua script the plugin sends.
pub fn scripts() -> [LuaScript; 15] {
    use crate::{bundle_read, fence, outbox, propagation::sending};
    let s = |name, body, runs| LuaScript { name, body, runs };
    [
        s("outbox::RECORD", outbox::RECORD, Runs::NodeLocal),
        s("outbox::REMOVE", outbox::REMOVE, Runs::NodeLocal),
        s("outbox::GUARDED_PUT", outbox::GUARDED_PUT, Runs::NodeLocal),
        s(
            "outbox::GUARDED_PUT_QUOTA",
            outbox::GUARDED_PUT_QUOTA,
            Runs::NodeLocal,
        ),
        s(
            "outbox::GUARDED_PUT_INLINE",
            outbox::GUARDED_PUT_INLINE.body(),
            Runs::NodeLocal,
        ),
        s(
            "outbox::GUARDED_PUT_QUOTA_INLINE",
            outbox::GUARDED_PUT_QUOTA_INLINE.body(),
            Runs::NodeLocal,
        ),
        s("outbox::CLAIM", outbox::CLAIM, Runs::NodeLocal),
        s(
            "propagation::sending::RECORD",
            sending::RECORD,
            Runs::NodeLocal,
        ),
        // A quota's usage keys are node-local: a store that is only ever another node's
        // target holds bundles only.
        s(
            "fence::VERSIONS_QUOTA",
            fence::VERSIONS_QUOTA,
            Runs::NodeLocal,
        ),
        s("fence::VERSIONS", fence::VERSIONS, Runs::AnyStore),
        s("fence::UNDO_REFUSED", fence::UNDO_REFUSED, Runs::AnyStore),
        s("fence::COPY", fence::COPY, Runs::AnyStore),
        s("fence::SWEEP", fence::SWEEP, Runs::AnyStore),
        s("bundle_read::READ", bundle_read::READ, Runs::AnyStore),
        s("bundle_read::SIZES", bundle_read::SIZES, Runs::NodeLocal),
    ]
}

/// The plain commands (not called from a script) the plugin sends to a store other than
/// its node-local one: connection checks, scripts, the transaction around a put, the
/// values' `HSET` and a copy's `EXPIRE`, the unguarded read of a bundle, and the arrivals
/// of a get that waits (`HKEYS` after subscribing). In lower case, subcommands after `|`,
/// as ACL rules name them. (On its node-local store the plugin may send anything the node
/// user's rules grant.)
pub const REMOTE_COMMANDS: &[&str] = &[
    "ping",
    "eval",
    "evalsha",
    "multi",
    "exec",
    "hset",
    "expire",
    "hgetall",
    "hkeys",
    "publish",
    "subscribe",
    "unsubscribe",
];

/// What the plugin sends to the global store only, when it is replicated, a Redis Cluster
/// or Sentinel-managed: `WAIT` (`SKYLARK_GLOBAL_MIN_REPLICAS`), the cluster client's slot
/// map, and the Sentinel client's check that it reached the primary. README.md "The
/// global store on Redis Cluster or Sentinel" documents them.
pub const GLOBAL_COMMANDS: &[&str] = &["wait", "cluster|slots", "role"];

/// What the plugin's own blocking connection (`direct`) sends when it connects, as the
/// Redis client's connections do: `AUTH`, which every user may run, and `SELECT`, only for
/// a URL that names a database other than 0 (the documented ACLs use database 0; another
/// needs `+select`).
pub const HANDSHAKE_COMMANDS: &[&str] = &["auth", "select"];
