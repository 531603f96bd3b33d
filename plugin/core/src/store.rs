//! Redis access: one lazily connected, multiplexed connection per store, a bundle per
//! chain as one hash (`<namespace>:bundle:<chain>`), one round trip per operation.

use crate::config::redact;
use crate::error::CallError;
use crate::runtime;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Value};
use skylark_abi::Status;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// The fields of a hash as raw (name, value) pairs.
pub type HashPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The Redis key of a chain's bundle.
pub fn bundle_key(namespace: &str, chain: &str) -> String {
    format!("{namespace}:bundle:{chain}")
}

/// One Redis server (the node-local store here; remote nodes later).
pub struct Store {
    client: Client,
    shown: String,
    conn_cfg: AsyncConnectionConfig,
    conn: Mutex<Option<MultiplexedConnection>>,
    timeout: Duration,
}

/// A request: a single command or an atomic pipeline.
enum Request {
    Cmd(redis::Cmd),
    Pipe(redis::Pipeline),
}

impl Store {
    /// A store for `url`; does not connect.
    pub fn new(
        url: &str,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Arc<Store>, String> {
        let client = Client::open(url).map_err(|e| format!("{}: {e}", redact(url)))?;
        let conn_cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout.min(timeout)))
            .set_response_timeout(Some(timeout));
        Ok(Arc::new(Store {
            client,
            shown: redact(url),
            conn_cfg,
            conn: Mutex::new(None),
            timeout,
        }))
    }

    /// The store's URL with secrets redacted.
    pub fn name(&self) -> &str {
        &self.shown
    }

    /// Writes `fields` into the hash `key` and refreshes its TTL: one `MULTI`/`EXEC` round trip.
    pub fn put_fields(
        self: &Arc<Self>,
        key: &str,
        fields: &[(&str, &[u8])],
        ttl: Option<Duration>,
    ) -> Result<(), CallError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let hset = pipe.cmd("HSET").arg(key);
        for (field, value) in fields {
            hset.arg(*field).arg(*value);
        }
        hset.ignore();
        if let Some(ttl) = ttl {
            pipe.cmd("EXPIRE")
                .arg(key)
                .arg(ttl.as_secs().max(1))
                .ignore();
        }
        self.send(Request::Pipe(pipe)).map(|_| ())
    }

    /// Every field of the hash `key` (`HGETALL`), in the order Redis returns them. An
    /// absent key yields an empty list.
    pub fn get_all(self: &Arc<Self>, key: &str) -> Result<HashPairs, CallError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(key);
        let value = self.send(Request::Cmd(cmd))?;
        hash_pairs(value)
            .map_err(|m| CallError::new(Status::StoreError, format!("{}: {m}", self.shown)))
    }

    /// Sends one request with the store's deadline; reconnects once if the cached
    /// connection turns out to be broken.
    fn send(self: &Arc<Self>, request: Request) -> Result<Value, CallError> {
        let store = Arc::clone(self);
        runtime::run(self.timeout, async move {
            let mut reconnected = false;
            loop {
                let mut conn = store.connection().await?;
                let result = match &request {
                    Request::Cmd(c) => c.query_async::<Value>(&mut conn).await,
                    Request::Pipe(p) => p.query_async::<Value>(&mut conn).await,
                };
                match result {
                    Ok(v) => return Ok(v),
                    Err(e) if !reconnected && (e.is_connection_dropped() || e.is_io_error()) => {
                        store.forget().await;
                        reconnected = true;
                    }
                    Err(e) => {
                        if e.is_connection_dropped() || e.is_io_error() {
                            store.forget().await;
                        }
                        return Err(store.classify(e));
                    }
                }
            }
        })
        .map_err(|e| e.context(&self.shown))
    }

    async fn connection(&self) -> Result<MultiplexedConnection, CallError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&self.conn_cfg)
            .await
            .map_err(|e| {
                let mut err = self.classify(e);
                if err.status == Status::StoreError {
                    err.status = Status::StoreUnavailable;
                }
                err.message = format!("connecting: {}", err.message);
                err
            })?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Drops the cached connection so that the next request reconnects.
    async fn forget(&self) {
        *self.conn.lock().await = None;
    }

    fn classify(&self, e: RedisError) -> CallError {
        let status = if e.is_timeout() {
            Status::StoreTimeout
        } else if e.is_connection_refusal() || e.is_io_error() || e.is_connection_dropped() {
            Status::StoreUnavailable
        } else {
            Status::StoreError
        };
        CallError::new(status, e.to_string())
    }
}

/// Decodes an `HGETALL` reply (RESP2 flat array or RESP3 map) into field/value pairs.
fn hash_pairs(value: Value) -> Result<HashPairs, String> {
    fn bytes(v: Value) -> Result<Vec<u8>, String> {
        match v {
            Value::BulkString(b) => Ok(b),
            Value::SimpleString(s) => Ok(s.into_bytes()),
            other => Err(format!("unexpected element in HGETALL reply: {other:?}")),
        }
    }
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| Ok((bytes(k)?, bytes(v)?)))
            .collect(),
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(format!(
                    "HGETALL reply has an odd number ({}) of elements",
                    items.len()
                ));
            }
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((bytes(k)?, bytes(v)?));
            }
            Ok(out)
        }
        other => Err(format!("unexpected HGETALL reply: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout() {
        assert_eq!(bundle_key("skylark", "c-1"), "skylark:bundle:c-1");
    }

    #[test]
    fn decodes_resp2_and_resp3_hashes() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let flat = Value::Array(vec![b("a"), b("1"), b("b"), b("2")]);
        assert_eq!(
            hash_pairs(flat).unwrap(),
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec())
            ]
        );
        let map = Value::Map(vec![(b("a"), b("1"))]);
        assert_eq!(hash_pairs(map).unwrap().len(), 1);
        assert!(hash_pairs(Value::Array(vec![])).unwrap().is_empty());
        assert!(hash_pairs(Value::Array(vec![b("a")])).is_err());
        assert!(hash_pairs(Value::Int(3)).is_err());
    }

    #[test]
    fn unreachable_store_fails_fast_with_unavailable() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let store = Store::new(
            "redis://127.0.0.1:1",
            Duration::from_secs(2),
            Duration::from_secs(1),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let e = store.get_all("k").unwrap_err();
        assert_eq!(e.status, Status::StoreUnavailable, "{e}");
        assert!(e.message.contains("redis://127.0.0.1:1"), "{}", e.message);
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
