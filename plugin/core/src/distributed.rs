//! What a [`crate::store::Store`] connects to: one Redis server, or, for the global store
//! only, a Redis Cluster or a Sentinel-managed primary (`config::GlobalTarget`). Routing
//! and failover are redis-rs's: its cluster client follows `MOVED`/`ASK` and keeps one
//! connection per node, its Sentinel client names the current primary. This module only
//! builds those clients with the store's credentials, TLS material and timeouts, opens
//! their async connections, and says which replies mean "the topology changed: drop the
//! connection and ask again" ([`is_redirect`]). Connections to one server (a single
//! store, the primary the sentinels name, pub/sub) are opened by [`crate::connect`], with
//! every reply bounded in size; a cluster's node connections are redis-rs's own.

use crate::config::{Credentials, GlobalTarget, Tls};
use crate::connect::{BoundedConn, Opener};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, RedisError, RedisResult,
    TlsCertificates, TlsMode, Value,
};
use std::time::Duration;
use tokio::sync::Mutex as AsyncMutex;

/// The server(s) behind a store.
// One per store, for the life of the process: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Target {
    Single(Client),
    /// The cluster, and a client of its first seed node for pub/sub (`PUBLISH` reaches
    /// the subscribers of every node of a cluster).
    Cluster(ClusterClient, Client),
    /// Locked while asking the sentinels for the primary.
    Sentinel(Box<AsyncMutex<SentinelClient>>),
}

/// An open async connection of a [`Target`]; cheap to clone (shared).
#[derive(Clone)]
pub enum Conn {
    /// A single server, or the primary the sentinels named.
    Single(BoundedConn),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Sends `request` (routed by redis-rs for a cluster).
    pub async fn send(&mut self, request: &crate::store::Request) -> RedisResult<Value> {
        use crate::store::Request;
        match (self, request) {
            (Conn::Single(c), Request::Cmd(cmd)) => cmd.query_async(&mut c.conn).await,
            (Conn::Single(c), Request::Pipe(p)) => p.query_async(&mut c.conn).await,
            (Conn::Cluster(c), Request::Cmd(cmd)) => cmd.query_async(c).await,
            (Conn::Cluster(c), Request::Pipe(p)) => p.query_async(c).await,
        }
    }
}

/// Settings every connection of a store shares.
pub struct Settings<'a> {
    pub credentials: &'a Credentials,
    pub tls: &'a Tls,
    pub connect_timeout: Duration,
}

impl Target {
    /// The target of a cluster or Sentinel `target`; `info` turns a node URL into
    /// connection settings with the store's credentials (see `store::connection_info`).
    /// Returns the target, whether it is reached over TLS, the ACL user and where the
    /// credentials come from.
    pub fn distributed(
        target: &GlobalTarget,
        settings: &Settings<'_>,
        info: impl Fn(&str) -> RedisResult<(ConnectionInfo, String)>,
    ) -> RedisResult<(Target, bool, Option<String>, String)> {
        let certificates =
            || TlsCertificates {
                client_tls: settings.tls.client.as_ref().map(|(cert, key)| {
                    redis::ClientTlsConfig {
                        client_cert: cert.pem.clone(),
                        client_key: key.pem.clone(),
                    }
                }),
                root_cert: settings.tls.ca.as_ref().map(|ca| ca.pem.clone()),
            };
        let tcp = || TcpSettings::default().set_nodelay(true);
        match target {
            GlobalTarget::Single(_) => Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not a cluster or Sentinel URL",
            ))),
            GlobalTarget::Cluster { nodes } => {
                let mut infos = Vec::with_capacity(nodes.len());
                let mut auth = String::new();
                for n in nodes {
                    let (i, a) = info(n)?;
                    infos.push(i);
                    auth = a;
                }
                let tls = infos
                    .first()
                    .is_some_and(|i| matches!(i.addr(), ConnectionAddr::TcpTls { .. }));
                let user = infos
                    .first()
                    .and_then(|i| i.redis_settings().username().map(str::to_string));
                let seed = match infos.first() {
                    Some(i) if tls && settings.tls.is_set() => {
                        Client::build_with_tls(i.clone(), certificates())?
                    }
                    Some(i) => Client::open(i.clone())?,
                    None => {
                        return Err(RedisError::from((
                            redis::ErrorKind::InvalidClientConfig,
                            "a cluster URL without nodes",
                        )))
                    }
                };
                let mut b = ClusterClientBuilder::new(infos)
                    .connection_timeout(settings.connect_timeout)
                    .tcp_settings(tcp());
                if tls && settings.tls.is_set() {
                    b = b.certs(certificates());
                }
                Ok((Target::Cluster(b.build()?, seed), tls, user, auth))
            }
            GlobalTarget::Sentinel {
                sentinels,
                master,
                tls,
                data,
            } => {
                let (data, auth) = info(data)?;
                let redis = data.redis_settings();
                let user = redis.username().map(str::to_string);
                let addrs = sentinels.iter().map(|(host, port)| {
                    if *tls {
                        ConnectionAddr::TcpTls {
                            host: host.clone(),
                            port: *port,
                            insecure: false,
                            tls_params: None,
                        }
                    } else {
                        ConnectionAddr::Tcp(host.clone(), *port)
                    }
                });
                let mut b = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?
                    .set_client_to_redis_db(redis.db())
                    .set_client_to_redis_tcp_settings(tcp())
                    .set_client_to_sentinel_tcp_settings(tcp());
                if let Some(u) = redis.username() {
                    b = b.set_client_to_redis_username(u);
                }
                if let Some(p) = redis.password() {
                    b = b.set_client_to_redis_password(p);
                }
                if *tls {
                    b = b
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                    if settings.tls.is_set() {
                        b = b
                            .set_client_to_redis_certificates(certificates())
                            .set_client_to_sentinel_certificates(certificates());
                    }
                }
                let client = b.build()?;
                Ok((
                    Target::Sentinel(Box::new(AsyncMutex::new(client))),
                    *tls,
                    user,
                    auth,
                ))
            }
        }
    }

    /// Opens an async connection: to the server, to the cluster (redis-rs reads the slot
    /// map from the seed nodes), or to the primary the sentinels name now. A server's
    /// replies are bounded by `base` bytes unless a request admits more.
    pub async fn connect(
        &self,
        opener: &Opener,
        cfg: &AsyncConnectionConfig,
        base: u64,
    ) -> RedisResult<Conn> {
        match self {
            Target::Single(c) => Ok(Conn::Single(
                opener
                    .multiplexed(c.get_connection_info(), cfg, base)
                    .await?,
            )),
            Target::Cluster(c, _) => Ok(Conn::Cluster(c.get_async_connection().await?)),
            Target::Sentinel(s) => {
                let primary = s.lock().await.async_get_client().await?;
                Ok(Conn::Single(
                    opener
                        .multiplexed(primary.get_connection_info(), cfg, base)
                        .await?,
                ))
            }
        }
    }

    /// A pub/sub connection, every message bounded by `base` bytes: to the server, to the
    /// cluster's first seed node, or to the primary the sentinels name now.
    pub async fn pubsub(&self, opener: &Opener, base: u64) -> RedisResult<redis::aio::PubSub> {
        match self {
            Target::Single(c) | Target::Cluster(_, c) => {
                opener.pubsub(c.get_connection_info(), base).await
            }
            Target::Sentinel(s) => {
                let primary = s.lock().await.async_get_client().await?;
                opener.pubsub(primary.get_connection_info(), base).await
            }
        }
    }

    /// Whether this is a cluster or a Sentinel deployment.
    pub fn is_distributed(&self) -> bool {
        !matches!(self, Target::Single(_))
    }
}

/// A reply saying the key's owner changed (a cluster resharded or failed over, a Sentinel
/// primary was demoted): `MOVED`/`ASK` that redis-rs passed on (it follows them itself
/// where it can; inside a transaction aborted while a failover settles it may not),
/// `TRYAGAIN`, `CLUSTERDOWN`, `READONLY`, `MASTERDOWN`. The store drops its connection, so
/// that the next request reads the slot map or asks the sentinels again, and retries the
/// request (`store::REDIRECT_RETRIES`).
pub fn is_redirect(e: &RedisError) -> bool {
    const CODES: [&str; 6] = [
        "MOVED",
        "ASK",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "READONLY",
        "MASTERDOWN",
    ];
    if e.code().is_some_and(|c| CODES.contains(&c)) {
        return true;
    }
    // A pipeline's errors are carried in its text.
    let text = e.to_string();
    CODES.iter().any(|c| {
        text.split(|ch: char| !ch.is_ascii_alphabetic())
            .any(|w| w == *c)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_are_recognised_in_codes_and_pipeline_text() {
        let moved = RedisError::from((
            redis::ErrorKind::Io,
            "An error was signalled by the server",
            "MOVED 1234 127.0.0.1:7001".to_string(),
        ));
        assert!(is_redirect(&moved));
        let plain = RedisError::from((redis::ErrorKind::Io, "connection reset"));
        assert!(!is_redirect(&plain));
        // Words that merely contain a code do not count.
        let other = RedisError::from((redis::ErrorKind::Io, "ASKED to REMOVED things"));
        assert!(!is_redirect(&other));
    }
}
