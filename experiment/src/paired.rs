//! The paired comparison of the constellation experiment (issue 13, point 2): within a
//! repetition every policy runs the same workflow from the same start satellite, in a
//! random order, so each policy's T(W) is compared with the baseline's T(W) of the same
//! repetition. Per configuration the report gives the median of those paired reductions
//! with a percentile-bootstrap 95% interval, and the median ratio of T(W) to the
//! workflow's physical bound T*(W) ([`WorkflowRecord::t_star_ms`]).
//!
//! The bootstrap resamples the paired reductions with replacement [`RESAMPLES`] times
//! from a fixed seed (so a report recomputed from `records.json` is identical) and takes
//! the 2.5th and 97.5th percentiles of the resampled medians.

use crate::report::{median, size_label, WorkflowRecord};
use skylark_testkit::Rng;
use std::fmt::Write as _;

/// Bootstrap resamples per interval.
pub const RESAMPLES: usize = 2000;
/// Seed of the bootstrap's resampling.
const SEED: u64 = 13;
/// The policy every other policy is paired with.
const BASELINE: &str = "stateless";

/// A median with its bootstrap 95% interval, over `n` samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub median: f64,
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
}

/// The median of `values` and its percentile-bootstrap 95% interval from `resamples`
/// resamples seeded with `seed`; `None` without finite values.
pub fn bootstrap_median(values: &[f64], resamples: usize, seed: u64) -> Option<Interval> {
    let values: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let point = median(&values)?;
    let mut rng = Rng::new(seed);
    let n = values.len() as u64;
    let mut medians: Vec<f64> = (0..resamples.max(1))
        .filter_map(|_| {
            let sample: Vec<f64> = (0..n)
                .filter_map(|_| values.get(rng.below(n) as usize).copied())
                .collect();
            median(&sample)
        })
        .collect();
    medians.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((medians.len() - 1) as f64 * q).round() as usize;
        medians.get(i).copied()
    };
    Some(Interval {
        median: point,
        lo: at(0.025)?,
        hi: at(0.975)?,
        n: values.len(),
    })
}

/// Whether `r` is a sequential run (concurrency 1) of `policy`, `state` and `size`.
fn is(r: &WorkflowRecord, policy: &str, state: &str, size: u64) -> bool {
    r.config.policy == policy
        && r.config.state == state
        && r.config.size_bytes == size
        && r.config.concurrency == 1
}

/// Per repetition with both runs: the reduction of `policy`'s T(W) against the
/// baseline's T(W) of the same repetition, in percent (negative: slower).
pub fn paired_reductions(
    records: &[WorkflowRecord],
    policy: &str,
    state: &str,
    size: u64,
) -> Vec<f64> {
    records
        .iter()
        .filter(|r| is(r, policy, state, size))
        .filter_map(|r| {
            let base = records
                .iter()
                .find(|b| is(b, BASELINE, state, size) && b.rep == r.rep)?;
            (base.t_w_ms > 0.0).then(|| 100.0 * (1.0 - r.t_w_ms / base.t_w_ms))
        })
        .collect()
}

/// T(W) / T*(W) of every run of `policy`, `state` and `size` that has a bound.
pub fn bound_ratios(records: &[WorkflowRecord], policy: &str, state: &str, size: u64) -> Vec<f64> {
    records
        .iter()
        .filter(|r| is(r, policy, state, size))
        .filter_map(|r| r.t_star_ms.filter(|t| *t > 0.0).map(|t| r.t_w_ms / t))
        .collect()
}

/// The report section: per state, size and policy, the paired reduction against the
/// baseline (median, 95% interval, pairs) and the median T(W)/T*(W).
pub fn markdown(records: &[WorkflowRecord]) -> String {
    let mut keys: Vec<(String, u64, String)> = records
        .iter()
        .filter(|r| r.config.concurrency == 1)
        .map(|r| {
            (
                r.config.state.clone(),
                r.config.size_bytes,
                r.config.policy.clone(),
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    let mut out = String::from(
        "\n## Paired comparison\n\nPer repetition, T(W) against Stateless's T(W) of the \
         same repetition (same start satellite, policies in random order): median \
         reduction and its bootstrap 95% interval. T(W)/T*(W): median ratio to the \
         physical bound (execution times plus, per hand-off, the state's transfer over \
         the path's bottleneck).\n\n\
         | state | size | policy | pairs | reduction median | 95% interval | T(W)/T*(W) median |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for (state, size, policy) in keys {
        let reduction = (policy != BASELINE)
            .then(|| {
                bootstrap_median(
                    &paired_reductions(records, &policy, &state, size),
                    RESAMPLES,
                    SEED,
                )
            })
            .flatten();
        let ratio = median(&bound_ratios(records, &policy, &state, size));
        let (pairs, med, interval) = match reduction {
            Some(i) => (
                i.n.to_string(),
                format!("{:.1}%", i.median),
                format!("[{:.1}%, {:.1}%]", i.lo, i.hi),
            ),
            None => ("—".into(), "—".into(), "—".into()),
        };
        let ratio = ratio.map_or_else(|| "—".to_string(), |r| format!("{r:.2}"));
        let _ = writeln!(
            out,
            "| {state} | {} | {policy} | {pairs} | {med} | {interval} | {ratio} |",
            size_label(size)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Config;

    fn record(policy: &str, rep: u32, t_w_ms: f64, t_star_ms: Option<f64>) -> WorkflowRecord {
        WorkflowRecord {
            config: Config {
                policy: policy.into(),
                state: "bundled".into(),
                size_bytes: 1_000_000,
                concurrency: 1,
            },
            rep,
            t_w_ms,
            steps: Vec::new(),
            migration_ms: Vec::new(),
            state_bytes: 1_000_000,
            t_star_ms,
            slo_level: None,
            outbox_at_start: None,
            quiet: None,
        }
    }

    #[test]
    fn constant_values_have_a_point_interval() {
        let i = bootstrap_median(&[5.0; 20], 500, 1).expect("an interval");
        assert_eq!((i.median, i.lo, i.hi, i.n), (5.0, 5.0, 5.0, 20));
        assert_eq!(bootstrap_median(&[f64::NAN], 500, 1), None);
    }

    #[test]
    fn the_interval_brackets_the_median_and_narrows_with_more_samples() {
        let spread: Vec<f64> = (0..20).map(|i| 60.0 + i as f64).collect();
        let i = bootstrap_median(&spread, 2000, 7).expect("an interval");
        assert!(i.lo <= i.median && i.median <= i.hi, "{i:?}");
        assert!(i.lo > 60.0 && i.hi < 79.0, "{i:?}");
        let more: Vec<f64> = (0..200).map(|i| 60.0 + (i % 20) as f64).collect();
        let j = bootstrap_median(&more, 2000, 7).expect("an interval");
        assert!(j.hi - j.lo < i.hi - i.lo, "{i:?} vs {j:?}");
    }

    #[test]
    fn reductions_pair_by_repetition_and_skip_unpaired_runs() {
        let records = vec![
            record("stateless", 0, 2000.0, None),
            record("skylark", 0, 500.0, Some(400.0)),
            record("stateless", 1, 1000.0, None),
            record("skylark", 1, 800.0, Some(400.0)),
            record("skylark", 2, 100.0, None),
        ];
        let r = paired_reductions(&records, "skylark", "bundled", 1_000_000);
        assert_eq!(r.len(), 2);
        assert!(
            (r[0] - 75.0).abs() < 1e-9 && (r[1] - 20.0).abs() < 1e-9,
            "{r:?}"
        );
        let b = bound_ratios(&records, "skylark", "bundled", 1_000_000);
        assert_eq!(b, vec![1.25, 2.0]);
        let md = markdown(&records);
        assert!(
            md.contains("| bundled | 1 MB | skylark | 2 | 47.5% |"),
            "{md}"
        );
    }
}
