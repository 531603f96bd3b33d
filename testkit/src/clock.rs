//! The wall clock as the plugin reads it: Unix time in milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current Unix time in milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The current Unix time in milliseconds with sub-millisecond precision (0.0 if the
/// clock is before 1970), for comparing with times a guest prints.
pub fn now_ms_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}
