//! Placement and propagation events, published on the node-local Redis channel
//! `<ns>/events` as `<unix ts> <event> <json>` lines (the style of Galileo's
//! `galileo/events`), so that operators and experiments can follow state as it moves.

use crate::context::Context;
use crate::keys;
use crate::skylog;
use crate::store::Request;
use std::time::{SystemTime, UNIX_EPOCH};

/// The current time in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One event line: seconds with millisecond precision, the event name, compact JSON.
pub fn line(at_ms: u64, event: &str, body: &serde_json::Value) -> String {
    format!("{}.{:03} {event} {body}", at_ms / 1000, at_ms % 1000)
}

/// Publishes an event on the node-local store (best effort: a failure is logged, never
/// passed on). Runs on the plugin runtime.
pub async fn publish(ctx: &Context, event: &str, body: serde_json::Value) {
    if !ctx.config.propagation.events {
        return;
    }
    let mut cmd = redis::cmd("PUBLISH");
    cmd.arg(keys::events(&ctx.config.namespace))
        .arg(line(now_ms(), event, &body));
    if let Err(e) = ctx.local.query_async(&Request::Cmd(cmd)).await {
        skylog!(Debug, "publishing event {event}: {e}");
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
