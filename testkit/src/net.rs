//! Loopback ports for throw-away servers.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};

/// Lowest port handed out: below it live well-known and registered services.
const LOWEST: u16 = 10_000;

/// A loopback TCP port that was free a moment ago (another process may take it before
/// the caller binds it: callers retry on a failed start).
///
/// Chosen below the kernel's ephemeral range (`ip_local_port_range`) when there is room:
/// a port from that range, freed while its server is down (a store SIGKILLed and
/// restarted on the same port), can be taken as the source port of some outgoing
/// connection, and the restarted server then cannot listen (RELIABILITY.md, finding 12).
pub fn free_port() -> u16 {
    let (low, _) = ephemeral_range().unwrap_or((32_768, 60_999));
    if low > LOWEST + 1_000 {
        let span = u64::from(low - LOWEST);
        for _ in 0..200 {
            let port = LOWEST + (random() % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// The kernel's ephemeral port range, if it can be read.
fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|w| w.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

/// A random number (fresh hasher keys, a counter): enough to spread ports.
fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_below_the_ephemeral_range() {
        let Some((low, _)) = ephemeral_range().filter(|(low, _)| *low > LOWEST + 1_000) else {
            eprintln!("no room below the ephemeral range here: nothing to check");
            return;
        };
        for _ in 0..50 {
            let p = free_port();
            assert!((LOWEST..low).contains(&p), "port {p}, ephemeral from {low}");
        }
    }
}
