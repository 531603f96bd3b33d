//! A hostile store: a TCP server that models an attacker posing as a store (another
//! node's Redis, the global store, or whoever answers in their place), not Redis. It
//! answers every request with one huge reply, streamed as fast as the client reads it: no
//! real redis-server can be made to answer the plugin's commands (a copy's script, a
//! bundle read) that way. It counts what it managed to send and how many connections it
//! was given, so a test can tell whether the client read the reply or dropped it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The shape of the huge reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// One bulk string of the whole size (its length is announced first).
    Bulk,
    /// An array of 64 KiB bulk strings adding up to the size.
    Elements,
}

const CHUNK: usize = 64 * 1024;

/// A running hostile store on loopback; stops when dropped.
pub struct HostileStore {
    pub port: u16,
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
    sent: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl HostileStore {
    /// Starts a store that answers each request with a `reply_bytes` reply shaped as
    /// `flood`.
    pub fn start(flood: Flood, reply_bytes: u64) -> HostileStore {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the hostile store");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("local address").port();
        let sent = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, c, st) = (
            Arc::clone(&sent),
            Arc::clone(&connections),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        c.fetch_add(1, Ordering::Relaxed);
                        let (s, st) = (Arc::clone(&s), Arc::clone(&st));
                        std::thread::spawn(move || serve(conn, flood, reply_bytes, &s, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HostileStore {
            port,
            url: format!("redis://127.0.0.1:{port}"),
            sent,
            connections,
            stop,
        }
    }

    /// Bytes written to clients so far (what their sockets accepted).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for HostileStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers every read of a request with the flood until the client goes away.
fn serve(mut conn: TcpStream, flood: Flood, bytes: u64, sent: &AtomicU64, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let payload = vec![b'x'; CHUNK];
    let mut request = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut request) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return,
        }
        let mut write = |b: &[u8]| -> bool {
            if stop.load(Ordering::Relaxed) || conn.write_all(b).is_err() {
                return false;
            }
            sent.fetch_add(b.len() as u64, Ordering::Relaxed);
            true
        };
        let ok = match flood {
            Flood::Bulk => {
                let mut left = bytes;
                let mut ok = write(format!("${bytes}\r\n").as_bytes());
                while ok && left > 0 {
                    let n = left.min(CHUNK as u64) as usize;
                    ok = write(&payload[..n]);
                    left -= n as u64;
                }
                ok && write(b"\r\n")
            }
            Flood::Elements => {
                let count = bytes / CHUNK as u64;
                let header = format!("${CHUNK}\r\n");
                let mut ok = write(format!("*{count}\r\n").as_bytes());
                for _ in 0..count {
                    ok = ok && write(header.as_bytes()) && write(&payload) && write(b"\r\n");
                    if !ok {
                        break;
                    }
                }
                ok
            }
        };
        if !ok {
            return;
        }
    }
}
