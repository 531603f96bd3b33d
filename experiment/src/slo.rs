//! The per-step SLO of the constellation experiment as a profile by state size
//! (`tests/data/slo-profile.json`, issue 13 point 2) and the violations measured
//! against it.
//!
//! A level is a fixed budget (`fixed_ms`) or a multiple of one satellite hop's migration
//! time for the run's state size (`one_hop_factor`): `factor * (bytes / bandwidth +
//! latency)` of the satellite link the run emulates. `--slo loose,binding,infeasible`
//! runs the sequential matrix once per level, every step's put carrying that budget.
//!
//! * A **migration violation** is a placed copy whose measured exec + T(dm) exceeded the
//!   SLO the election used (exec: the step's time until its put; T(dm): the propagation
//!   event's time from put to copy acknowledged).
//! * A **retrieval violation** is a step whose T(dr) exceeded its SLO.
//!
//! Both are reported per level with the hops of the node each copy was elected to.

use crate::report::{median, size_label, WorkflowRecord};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The profile file, relative to the workspace root.
pub const PROFILE_FILE: &str = "tests/data/slo-profile.json";

/// One SLO level of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// A fixed budget in milliseconds.
    #[serde(default)]
    pub fixed_ms: Option<f64>,
    /// A multiple of one satellite hop's migration time for the state size.
    #[serde(default)]
    pub one_hop_factor: Option<f64>,
}

/// The profile: named levels.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Profile {
    pub levels: BTreeMap<String, Level>,
}

impl Profile {
    /// Reads and checks the profile at `path`.
    pub fn load(path: &Path) -> Result<Profile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the SLO profile {}: {e}", path.display()))?;
        let profile: Profile = serde_json::from_str(&text)
            .map_err(|e| format!("the SLO profile {} is invalid: {e}", path.display()))?;
        for (name, level) in &profile.levels {
            match (level.fixed_ms, level.one_hop_factor) {
                (Some(v), None) | (None, Some(v)) if v.is_finite() && v > 0.0 => {}
                _ => {
                    return Err(format!(
                        "SLO level {name:?}: give exactly one of fixed_ms and one_hop_factor, > 0"
                    ))
                }
            }
        }
        Ok(profile)
    }

    /// The budget of level `name` in whole milliseconds (at least 1) for a state of
    /// `bytes` over a satellite link of `mbps` and `latency_ms`.
    pub fn budget_ms(
        &self,
        name: &str,
        bytes: u64,
        mbps: f64,
        latency_ms: f64,
    ) -> Result<u64, String> {
        let level = self.levels.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.levels.keys().map(String::as_str).collect();
            format!("no SLO level {name:?} (levels: {})", known.join(", "))
        })?;
        let ms = match (level.fixed_ms, level.one_hop_factor) {
            (Some(ms), _) => ms,
            // 1 Mbit/s moves 125 bytes per millisecond.
            (None, Some(f)) => f * (bytes as f64 / (mbps * 125.0) + latency_ms),
            (None, None) => return Err(format!("SLO level {name:?} has no budget")),
        };
        Ok(ms.round().max(1.0) as u64)
    }
}

/// One copy a step's put placed, as its propagation event reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    /// The node the election chose.
    pub elected: String,
    /// Hops from the producer's node to it in the slot of the step.
    pub hops: Option<u32>,
    /// T(dm): put until the copy on the elected node was acknowledged (the whole job's
    /// time where the event has none for it: an older plugin, or the state kept local).
    pub ms: f64,
    /// Put until every copy of the job, the global one included, was acknowledged.
    #[serde(default)]
    pub all_ms: Option<f64>,
    /// The step's time until its put (what the put told the election as exec).
    pub exec_ms: f64,
    /// Whether the election judged the SLO feasible (the retrieval rule's placement
    /// event); `None` for the other rules and in older records.
    #[serde(default)]
    pub judged_feasible: Option<bool>,
}

/// T(dm) of a `propagated` event: put until the copy on the elected node was
/// acknowledged (`copy_ms`, which plugins since 2026-12-07 send); the job's whole time
/// (`ms`: every copy, the global one included, which leaves only after the elected copy)
/// when the event has no time for it (an older plugin, or the state kept on the
/// producer's node, whose only copy is the global one).
pub fn placed_ms(event: &serde_json::Value) -> Option<f64> {
    event["elected"]
        .as_str()
        .and_then(|elected| event["copy_ms"][elected].as_f64())
        .or_else(|| event["ms"].as_f64())
}

/// The violations of one (level, state, size, policy).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Violations {
    pub steps: usize,
    pub retrieval: usize,
    pub reads: usize,
    pub migrations: usize,
    pub migration: usize,
    /// Copies whose election judged the SLO feasible, and of those, the violations.
    pub judged_feasible: usize,
    pub feasible_violations: usize,
    pub hops_elected_mean: Option<f64>,
    pub slo_ms_median: Option<f64>,
}

/// Counts the violations among `runs`.
pub fn violations(runs: &[&WorkflowRecord]) -> Violations {
    let mut v = Violations::default();
    let mut hops = Vec::new();
    let mut budgets = Vec::new();
    for step in runs.iter().flat_map(|r| &r.steps) {
        v.steps += 1;
        budgets.push(step.slo_ms);
        if let Some(get) = step.get_ms {
            v.reads += 1;
            v.retrieval += usize::from(get > step.slo_ms);
        }
        for m in &step.migrations {
            let violated = m.exec_ms + m.ms > step.slo_ms;
            v.migrations += 1;
            v.migration += usize::from(violated);
            if m.judged_feasible == Some(true) {
                v.judged_feasible += 1;
                v.feasible_violations += usize::from(violated);
            }
            hops.extend(m.hops.map(f64::from));
        }
    }
    v.hops_elected_mean = (!hops.is_empty()).then(|| hops.iter().sum::<f64>() / hops.len() as f64);
    v.slo_ms_median = median(&budgets);
    v
}

/// The report section: per level, state, size and policy, the SLO, migration and
/// retrieval violations and the mean hops elected.
pub fn markdown(records: &[WorkflowRecord]) -> String {
    let mut keys: Vec<(String, String, u64, String)> = records
        .iter()
        .filter(|r| r.config.concurrency == 1)
        .map(|r| {
            (
                r.slo_level.clone().unwrap_or_default(),
                r.config.state.clone(),
                r.config.size_bytes,
                r.config.policy.clone(),
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    let mut out = String::from(
        "\n## SLO\n\nPer SLO level (`tests/data/slo-profile.json`): migration violations \
         (placed copies whose exec + T(dm) exceeded the step's SLO) and retrieval \
         violations (reads whose T(dr) exceeded it), with the mean hops from the \
         producer to the node each copy was elected to. Judged feasible: of the copies \
         whose election (the retrieval rule) judged the SLO feasible, those that \
         violated it. T(dm) runs until the copy on the elected node was acknowledged (the \
         global copy leaves after it); for state kept on the producer's node, until the \
         global copy was.\n\n\
         | level | state | size | policy | SLO ms | migration violations | judged feasible: violations | retrieval violations | hops elected (mean) |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for (level, state, size, policy) in keys {
        let runs: Vec<&WorkflowRecord> = records
            .iter()
            .filter(|r| {
                r.config.concurrency == 1
                    && r.slo_level.clone().unwrap_or_default() == level
                    && r.config.state == state
                    && r.config.size_bytes == size
                    && r.config.policy == policy
            })
            .collect();
        let v = violations(&runs);
        let _ = writeln!(
            out,
            "| {} | {state} | {} | {policy} | {} | {}/{} | {} | {}/{} | {} |",
            if level.is_empty() { "—" } else { &level },
            size_label(size),
            v.slo_ms_median.map_or("—".into(), |m| format!("{m:.0}")),
            v.migration,
            v.migrations,
            if v.judged_feasible == 0 {
                "—".to_string()
            } else {
                format!("{}/{}", v.feasible_violations, v.judged_feasible)
            },
            v.retrieval,
            v.reads,
            v.hops_elected_mean
                .map_or("—".into(), |h| format!("{h:.2}")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_dm_is_the_elected_copys_time_when_the_event_has_it() {
        let v = serde_json::json!({"elected": "b", "copy_ms": {"b": 120, "g": 300}, "ms": 310});
        assert_eq!(placed_ms(&v), Some(120.0));
        // Kept local (no copy of its own), or an older plugin: the whole job.
        let v = serde_json::json!({"elected": "a", "copy_ms": {"g": 300}, "ms": 310});
        assert_eq!(placed_ms(&v), Some(310.0));
        let v = serde_json::json!({"elected": "b", "ms": 310});
        assert_eq!(placed_ms(&v), Some(310.0));
        assert_eq!(placed_ms(&serde_json::json!({})), None);
    }

    #[test]
    fn the_profile_in_the_tree_loads_and_scales_with_size() {
        let path = skylark_testkit::root().join(PROFILE_FILE);
        let p = Profile::load(&path).expect("the SLO profile loads");
        assert_eq!(p.budget_ms("loose", 1_000_000, 40.0, 10.0), Ok(5000));
        // 1 MB over 40 Mbit/s is 200 ms, plus 10 ms latency, times 1.2.
        assert_eq!(p.budget_ms("binding", 1_000_000, 40.0, 10.0), Ok(252));
        assert_eq!(p.budget_ms("binding", 2_000_000, 40.0, 10.0), Ok(492));
        assert_eq!(p.budget_ms("infeasible", 1_000_000, 40.0, 10.0), Ok(1));
        assert!(p.budget_ms("tight", 1, 40.0, 10.0).is_err());
    }

    #[test]
    fn a_level_needs_exactly_one_positive_budget() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("p.json");
        for bad in [
            r#"{"levels": {"x": {}}}"#,
            r#"{"levels": {"x": {"fixed_ms": 1, "one_hop_factor": 2}}}"#,
            r#"{"levels": {"x": {"fixed_ms": -1}}}"#,
            r#"{"levels": {"x": {"fixed": 1}}}"#,
        ] {
            std::fs::write(&path, bad).expect("write");
            assert!(Profile::load(&path).is_err(), "{bad}");
        }
    }
}
