//! Opening a store's async connections (multiplexed and pub/sub) on the plugin runtime
//! with the socket in our hands, so that every byte a store sends passes through
//! [`reply_bound::Bounded`] before the Redis client parses it. redis-rs opens its own
//! sockets with no way to wrap them, but builds a connection on any stream it is given
//! (`MultiplexedConnection::new_with_config`, `PubSub::new`): this module opens that stream
//! (TCP with `TCP_NODELAY`, TLS with the store's roots and client certificate, or a Unix
//! socket) as redis-rs would, and hands it over wrapped.

use crate::config::Tls;
use crate::reply_bound::{Admitted, Bounded, Budget, ReplyTooLarge};
use redis::aio::{MultiplexedConnection, PubSub};
use redis::{AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, RedisError, RedisResult};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io;
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream a connection runs on.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// How a store's connections are opened: its TLS material (the client configuration is
/// built on the first TLS connection) and the bound of replies no request admitted a
/// larger bound for.
pub struct Opener {
    tls: Tls,
    rustls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

/// A multiplexed connection whose replies are bounded; cheap to clone (shared).
#[derive(Clone)]
pub struct BoundedConn {
    pub conn: MultiplexedConnection,
    budget: Arc<Budget>,
    _driver: Arc<Driver>,
}

impl BoundedConn {
    /// Admits a request whose reply may be `bound` bytes while the guard lives.
    pub fn admit(&self, bound: u64) -> Admitted {
        self.budget.admit(bound)
    }

    /// The bound a reply passed on this connection (which is then closed), if one did.
    pub fn exceeded(&self) -> Option<ReplyTooLarge> {
        self.budget.exceeded()
    }
}

/// The task that reads and writes a connection's socket; stopped when the last clone of
/// the connection is dropped.
struct Driver(tokio::task::JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Opener {
    pub fn new(tls: &Tls) -> Opener {
        Opener {
            tls: tls.clone(),
            rustls: OnceLock::new(),
        }
    }

    /// A multiplexed connection to the server `info` names, its replies bounded by
    /// `base` bytes unless a request admits more. Must run on the plugin runtime; the
    /// caller bounds the time it takes.
    pub async fn multiplexed(
        &self,
        info: &ConnectionInfo,
        cfg: &AsyncConnectionConfig,
        base: u64,
    ) -> RedisResult<BoundedConn> {
        let budget = Budget::new(base);
        let stream = Bounded::new(self.stream(info.addr()).await?, Arc::clone(&budget));
        let (conn, driver) =
            MultiplexedConnection::new_with_config(info.redis_settings(), stream, cfg.clone())
                .await?;
        Ok(BoundedConn {
            conn,
            budget,
            _driver: Arc::new(Driver(tokio::spawn(driver))),
        })
    }

    /// A pub/sub connection to the server `info` names, every message bounded by `base`
    /// bytes. Must run on the plugin runtime.
    pub async fn pubsub(&self, info: &ConnectionInfo, base: u64) -> RedisResult<PubSub> {
        let stream = Bounded::new(self.stream(info.addr()).await?, Budget::new(base));
        PubSub::new(info.redis_settings(), stream).await
    }

    async fn stream(&self, addr: &ConnectionAddr) -> RedisResult<Box<dyn Stream>> {
        match addr {
            ConnectionAddr::Tcp(host, port) => Ok(Box::new(tcp(host, *port).await?)),
            ConnectionAddr::TcpTls { insecure: true, .. } => Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "TLS without certificate verification (#insecure) is not supported",
            ))),
            ConnectionAddr::TcpTls { host, port, .. } => {
                let config = self
                    .rustls
                    .get_or_init(|| client_config(&self.tls).map(Arc::new))
                    .clone()
                    .map_err(|e| {
                        RedisError::from((redis::ErrorKind::InvalidClientConfig, "TLS", e))
                    })?;
                let name = ServerName::try_from(host.as_str())
                    .map_err(|e| {
                        RedisError::from((
                            redis::ErrorKind::InvalidClientConfig,
                            "TLS server name",
                            e.to_string(),
                        ))
                    })?
                    .to_owned();
                let socket = tcp(host, *port).await?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, socket)
                    .await?;
                Ok(Box::new(tls))
            }
            ConnectionAddr::Unix(path) => {
                Ok(Box::new(tokio::net::UnixStream::connect(path).await?))
            }
            other => Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "unsupported address",
                format!("{other:?}"),
            ))),
        }
    }
}

/// A TCP connection to the first address of `host` that accepts one, with `TCP_NODELAY`
/// (see `store::connection_info`).
async fn tcp(host: &str, port: u16) -> io::Result<tokio::net::TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host}:{port}: no address"),
        )
    }))
}

/// The rustls client configuration of `tls`: its CA as the only roots (else the system's
/// roots), its client certificate if any.
fn client_config(tls: &Tls) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca {
        Some(ca) => {
            for cert in CertificateDer::pem_slice_iter(&ca.pem) {
                let cert = cert.map_err(|e| format!("{}: {e}", ca.path))?;
                roots.add(cert).map_err(|e| format!("{}: {e}", ca.path))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A system certificate rustls cannot use is skipped, as redis-rs does.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                let why = native
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_string(), |e| e.to_string());
                return Err(format!("no system root certificates: {why}"));
            }
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    match &tls.client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(&cert.pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", cert.path))?;
            let key = PrivateKeyDer::from_pem_slice(&key.pem)
                .map_err(|e| format!("{}: {e}", key.path))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}
