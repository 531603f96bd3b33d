//! Loopback ports for throw-away servers.

use std::net::TcpListener;

/// A loopback TCP port that was free a moment ago (another process may take it before
/// the caller binds it: callers retry on a failed start).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}
