//! Pub/sub messages of a store: the plugin's placement and propagation events.

use serde_json::Value;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Subscribes to pub/sub `channel` of the redis-server at `url`; every message payload
/// arrives on the returned receiver, from a background thread. Returns once subscribed;
/// panics if that fails within 5 s.
pub fn subscribe(url: &str, channel: &str) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (url_owned, channel_owned) = (url.to_string(), channel.to_string());
    std::thread::spawn(move || {
        let (url, channel) = (url_owned, channel_owned);
        let Ok(client) = redis::Client::open(url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let mut ps = conn.as_pubsub();
        if ps.subscribe(&channel).is_err() {
            return;
        }
        let _ = ready_tx.send(());
        while let Ok(msg) = ps.get_message() {
            let Ok(line) = msg.get_payload::<String>() else {
                continue;
            };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("could not subscribe to {channel} at {url}"));
    rx
}

/// Events received from a node's channel (`<ns>/events`).
pub struct Events {
    rx: mpsc::Receiver<String>,
    /// Every event line received so far.
    pub seen: Vec<String>,
}

impl Events {
    /// Subscribes to the event channel of the store at `url`.
    pub fn subscribe(url: &str) -> Events {
        Events {
            rx: subscribe(url, &format!("{}/events", crate::redis::NS)),
            seen: Vec::new(),
        }
    }

    /// Waits until an event named `name` whose JSON satisfies `pred` arrives; returns it.
    pub fn wait_for(
        &mut self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let check = |line: &str| -> Option<Value> {
            let mut parts = line.splitn(3, ' ');
            let (_ts, ev, body) = (parts.next()?, parts.next()?, parts.next()?);
            let v: Value = serde_json::from_str(body).ok()?;
            (ev == name && pred(&v)).then_some(v)
        };
        if let Some(v) = self.seen.iter().find_map(|l| check(l)) {
            return v;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = check(&line);
                    self.seen.push(line);
                    if let Some(v) = hit {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no {name} event matching within {timeout:?}; events seen:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}
