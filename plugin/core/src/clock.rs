//! Wall-clock time as the plugin uses it: milliseconds since the Unix epoch (job and
//! event timestamps, slot arithmetic, announcement deadlines).

use std::time::{SystemTime, UNIX_EPOCH};

/// The current time in milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
