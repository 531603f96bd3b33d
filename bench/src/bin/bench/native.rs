//! The native baselines: redis-rs connections configured as the plugin's are (the same
//! connection kind, `TCP_NODELAY` on), the plugin v1's async path, and Debian's
//! `redis-benchmark` as an outside reference for the same commands and sizes.

use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A redis-rs client for `url` with `TCP_NODELAY` set (redis-rs 1.x leaves it off by
/// default; the plugin sets it on every store connection).
pub fn client(url: &str) -> redis::Client {
    use redis::IntoConnectionInfo;
    let info = url
        .into_connection_info()
        .expect("bench redis URL")
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    redis::Client::open(info).expect("redis client")
}

/// A synchronous connection to `url` (what the plugin uses for the guest's own calls).
pub fn connect(url: &str) -> redis::Connection {
    client(url)
        .get_connection()
        .expect("connect to the bench redis")
}

/// Sends `cmds` in one round trip (wrapped in `MULTI`/`EXEC` when `atomic`), packed into
/// `buf`, which is reused from request to request: one copy of each value per request
/// and no allocation, as the plugin sends. (redis-rs's `Cmd::query` allocates the
/// command twice per request, and at 1 MiB the page faults of those fresh buffers cost
/// more than the round trip: the `native Cmd::query` row shows it.)
pub fn send(conn: &mut redis::Connection, buf: &mut Vec<u8>, cmds: &[&redis::Cmd], atomic: bool) {
    use redis::ConnectionLike;
    buf.clear();
    if atomic {
        redis::cmd("MULTI").write_packed_command(buf);
    }
    for c in cmds {
        c.write_packed_command(buf);
    }
    let reply = if atomic {
        redis::cmd("EXEC").write_packed_command(buf);
        // Skip the replies to MULTI and to each queued command; keep EXEC's.
        conn.req_packed_commands(buf, cmds.len() + 1, 1)
            .map(|mut r| r.pop().unwrap_or(redis::Value::Nil))
    } else {
        conn.req_packed_command(buf)
    };
    let reply = reply
        .and_then(redis::Value::extract_error)
        .expect("native request");
    assert!(
        !matches!(reply, redis::Value::Nil),
        "native request got no reply"
    );
}

/// A multiplexed async connection driven by its own one-worker tokio runtime; every
/// request is spawned onto the runtime while the caller blocks on a channel.
pub struct AsyncPath {
    rt: tokio::runtime::Runtime,
    conn: redis::aio::MultiplexedConnection,
}

impl AsyncPath {
    pub fn new(url: &str) -> AsyncPath {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("start the tokio runtime");
        let conn = rt
            .block_on(client(url).get_multiplexed_async_connection())
            .expect("async connection to the bench redis");
        AsyncPath { rt, conn }
    }

    /// Runs `f(conn)` on the runtime with a 2 s deadline and waits for its result.
    pub fn run<T, F>(&self, f: impl FnOnce(redis::aio::MultiplexedConnection) -> F) -> T
    where
        T: Send + 'static,
        F: Future<Output = redis::RedisResult<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = f(self.conn.clone());
        self.rt.spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(2), fut).await;
            let _ = tx.send(r);
        });
        rx.recv()
            .expect("async task ended without an answer")
            .expect("async request timed out")
            .expect("async redis request failed")
    }
}

/// Where `redis-benchmark` connects.
pub enum Endpoint<'a> {
    Tcp(u16),
    Unix(&'a Path),
}

/// `redis-benchmark -c 1 -P 1 -n N -d SIZE -t TEST --csv`: one client, one request at a
/// time, as the guest does. Returns (p50, p99) in nanoseconds. `test` is `set` or `hset`
/// (`HSET myhash element:__rand_int__ <value>`, one field). Its percentiles come from an
/// HDR histogram printed in microseconds.
pub fn redis_benchmark(at: &Endpoint<'_>, test: &str, size: usize, n: usize) -> (u64, u64) {
    let mut cmd = Command::new("redis-benchmark");
    match at {
        Endpoint::Tcp(port) => cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]),
        Endpoint::Unix(path) => cmd.arg("-s").arg(path),
    };
    let out = cmd
        .args(["-c", "1", "-P", "1", "--csv", "-t", test])
        .args(["-n", &n.to_string(), "-d", &size.to_string()])
        .output()
        .unwrap_or_else(|e| {
            panic!("run redis-benchmark ({e}): install redis-tools (scripts/setup-deps.sh)")
        });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "redis-benchmark failed ({:?}): {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_csv(&text, test).unwrap_or_else(|| panic!("unexpected redis-benchmark output: {text}"))
}

/// (p50, p99) in nanoseconds from `redis-benchmark --csv` output for `test`.
fn parse_csv(text: &str, test: &str) -> Option<(u64, u64)> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let unquote = |l: &str| -> Vec<String> {
        l.split(',')
            .map(|f| f.trim().trim_matches('"').to_string())
            .collect()
    };
    let head = unquote(lines.next()?);
    let col = |name: &str| head.iter().position(|h| h == name);
    let (p50, p99) = (col("p50_latency_ms")?, col("p99_latency_ms")?);
    let row = lines
        .map(unquote)
        .find(|r| r.first().is_some_and(|t| t.eq_ignore_ascii_case(test)))?;
    let ns = |i: usize| -> Option<u64> {
        let ms: f64 = row.get(i)?.parse().ok()?;
        Some((ms * 1e6).round() as u64)
    };
    Some((ns(p50)?, ns(p99)?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_redis_benchmark_csv() {
        let text = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                    \"SET\",\"47619.05\",\"0.020\",\"0.016\",\"0.023\",\"0.023\",\"0.031\",\"0.111\"\n";
        assert_eq!(super::parse_csv(text, "set"), Some((23_000, 31_000)));
        assert_eq!(super::parse_csv(text, "hset"), None);
    }
}
