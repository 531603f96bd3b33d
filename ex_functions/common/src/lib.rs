//! Shared pieces of the Skylark example functions (`preprocess`, `detect`, `alarm`,
//! `bundled`): the task names and state types of the Earth-observation workflow
//! `preprocess -> detect -> alarm`, the synthetic image model ([`image`]), a tiny
//! command-line and JSON-reporting harness ([`cli`]) and its HTTP mode ([`serve`]).
//!
//! Nothing here calls the host; the functions themselves use `skylark-guest` for that.

pub mod cli;
pub mod image;
pub mod serve;
pub mod state;

use serde::{Deserialize, Serialize};

/// Task id under which `preprocess` stores the processed image (raw grayscale bytes).
pub const TASK_PREPROCESS: &str = "preprocess";
/// Task id under which `detect` stores its [`Detections`].
pub const TASK_DETECT: &str = "detect";
/// Task id under which `alarm` stores its [`AlarmDecision`].
pub const TASK_ALARM: &str = "alarm";

/// Output of `detect`: the bright regions found in the preprocessed image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detections {
    /// Number of regions (`boxes.len()`).
    pub count: u32,
    /// Bounding boxes `(x_min, y_min, x_max, y_max)`, inclusive pixel coordinates, in the
    /// order their first pixel appears in a row-major scan.
    pub boxes: Vec<(u32, u32, u32, u32)>,
    /// Size of the image the regions were found in, in bytes (= pixels).
    pub image_bytes: u64,
}

/// Output of `alarm`: whether the detections warrant raising an alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmDecision {
    /// True if `detections >= min_detections`.
    pub alarm: bool,
    /// Number of detections the decision was based on.
    pub detections: u32,
    /// The threshold applied.
    pub min_detections: u32,
}

impl AlarmDecision {
    /// Decides on an alarm for `detections` regions with threshold `min_detections`.
    pub fn decide(detections: u32, min_detections: u32) -> Self {
        AlarmDecision {
            alarm: detections >= min_detections,
            detections,
            min_detections,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_threshold() {
        assert!(AlarmDecision::decide(1, 1).alarm);
        assert!(AlarmDecision::decide(5, 1).alarm);
        assert!(!AlarmDecision::decide(0, 1).alarm);
        assert!(AlarmDecision::decide(0, 0).alarm);
        assert!(!AlarmDecision::decide(2, 3).alarm);
    }
}
