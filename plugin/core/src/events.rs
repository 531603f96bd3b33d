//! Placement and propagation events, published on the node-local Redis channel
//! `<ns>/events` as `<unix ts> <event> <json>` lines (the style of Galileo's
//! `galileo/events`), so that operators and experiments can follow state as it moves.

use crate::clock::now_ms;
use crate::keys;
use crate::skylog;
use crate::store::{Request, Store};
use std::sync::Arc;

/// One event line: seconds with millisecond precision, the event name, compact JSON.
pub fn line(at_ms: u64, event: &str, body: &serde_json::Value) -> String {
    format!("{}.{:03} {event} {body}", at_ms / 1000, at_ms % 1000)
}

/// Publishes events on a node-local store's channel (`SKYLARK_EVENTS`).
pub struct Events {
    store: Arc<Store>,
    channel: String,
    enabled: bool,
}

impl Events {
    /// A publisher on `<ns>/events` of `store`; publishes nothing unless `enabled`.
    pub fn new(store: Arc<Store>, namespace: &str, enabled: bool) -> Events {
        Events {
            store,
            channel: keys::events(namespace),
            enabled,
        }
    }

    /// Publishes an event (best effort: a failure is logged, never passed on). Runs on
    /// the plugin runtime.
    pub async fn publish(&self, event: &str, body: serde_json::Value) {
        if !self.enabled {
            return;
        }
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(&self.channel).arg(line(now_ms(), event, &body));
        if let Err(e) = self.store.query_async(&Request::Cmd(cmd)).await {
            skylog!(Debug, "publishing event {event}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        let l = line(
            1_732_363_200_042,
            "placement",
            &serde_json::json!({"chain": "c", "node": "pi5u3"}),
        );
        assert_eq!(
            l,
            r#"1732363200.042 placement {"chain":"c","node":"pi5u3"}"#
        );
    }
}
