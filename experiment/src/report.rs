//! The reporting half of the constellation experiment: from the records of many workflow
//! runs, the published evaluation's metrics per configuration (see "What the evaluation
//! measured" in the Skylark model), a Markdown report and a PNG plot.
//!
//! The runner (`src/bin/experiment.rs`) fills [`WorkflowRecord`]s and
//! [`ThroughputRecord`]s and calls [`write_report`], which writes into one directory:
//!
//! * `records.json`: `{"meta": Meta, "workflows": [WorkflowRecord], "throughput":
//!   [ThroughputRecord]}`, pretty-printed, so a report can be recomputed later;
//! * `latency.png`: [`plot`];
//! * `report.md`: [`markdown`], the [`headline`] at the size nearest 1 MB, and a link to
//!   the plot.
//!
//! Statistics: medians are the usual median (mean of the two middle values for an even
//! count); p95 is the nearest-rank percentile (the `ceil(0.95 n)`-th smallest value).
//! Non-finite samples (NaN, infinities) are ignored. A statistic over no samples is
//! `None` and printed as "—".
//!
//! The plot's text is drawn with plotters' `ab_glyph` backend from a TrueType file read
//! at runtime ([`FONT_PATH`], Debian package [`FONT_PACKAGE`]), so no fontconfig or system
//! font discovery is involved.

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};
use skylark_testkit::stats::{self, finite_sorted};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The font the plot's text is drawn with.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// The Debian package that provides [`FONT_PATH`].
pub const FONT_PACKAGE: &str = "fonts-dejavu-core";

/// Headline target: T(W) reduction of skylark against stateless, percent.
pub const TARGET_REDUCTION_PCT: f64 = 66.0;
/// Headline target: skylark's local state availability, percent.
pub const TARGET_AVAILABILITY_PCT: f64 = 90.0;
/// Headline target: skylark's SLO violations, percent (none at all).
pub const TARGET_SLO_VIOLATIONS_PCT: f64 = 0.0;
/// Headline target: throughput gain of skylark against stateless, percent.
pub const TARGET_THROUGHPUT_GAIN_PCT: f64 = 50.0;

/// The placement policies in report order.
const POLICIES: [&str; 4] = ["skylark", "research", "random", "stateless"];
/// The state layouts in report order.
const STATES: [&str; 2] = ["bundled", "single"];
/// The policy the other policies are compared with.
const BASELINE: &str = "stateless";
/// The policy the headline targets are checked for.
const CANDIDATE: &str = "skylark";
/// The state layout of the headline and the plot.
const HEADLINE_STATE: &str = "bundled";
/// Shown for a value that was not measured.
const MISSING: &str = "—";

/// One experiment configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Config {
    /// Placement policy: "skylark", "research" (the Skylark policy with the research's
    /// election rule), "random" or "stateless".
    pub policy: String,
    /// State layout: "bundled" or "single".
    pub state: String,
    /// State size per workflow, bytes.
    pub size_bytes: u64,
    /// Workflows running at the same time.
    pub concurrency: u32,
}

/// One function invocation of a workflow run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// "preprocess", "detect", "detect2", "alarm".
    pub function: String,
    /// The node it ran on.
    pub node: String,
    /// Function latency T(f): process start until its result line.
    pub t_f_ms: f64,
    /// Retrieval time T(dr) (sum of its gets); `None` for the first step.
    pub get_ms: Option<f64>,
    /// Number of bundle/key reads it made.
    pub gets: u32,
    /// Of which served by its node-local store.
    pub local_gets: u32,
    /// Data proximity: hops from the node that served each read to this node (0 = local).
    pub hops: Vec<u32>,
    /// Time spent in its puts.
    pub put_ms: f64,
    /// Time spent computing.
    pub compute_ms: f64,
    /// The step's latency budget.
    pub slo_ms: f64,
    /// Whether every field the step reads was already in its own node's store when it
    /// issued its read ([`crate::handoff`]; in records before the hand-off timing: when
    /// its process was started): local availability at request time. `None` for a step
    /// that reads nothing, and in older records.
    #[serde(default)]
    pub local_at_request: Option<bool>,
    /// Whether every read was answered by the step's own node's store (whatever the
    /// tier); with `local_at_request` false, the state arrived while the read waited.
    #[serde(default)]
    pub own_store_answered: Option<bool>,
    /// The step's time until its put, as the guest measured it (what the put told the
    /// election as exec).
    #[serde(default)]
    pub exec_ms: Option<f64>,
    /// The copies the step's put placed ([`crate::slo`]).
    #[serde(default)]
    pub migrations: Vec<crate::slo::Migration>,
    /// When the step issued its read, ms after its process was started
    /// ([`crate::handoff`]); `None` for a step that reads nothing, and in older records.
    #[serde(default)]
    pub read_at_ms: Option<f64>,
    /// When the state it reads was first seen in its own node's store, ms after its
    /// process was started (0: already there); `None` if never before the step ended.
    #[serde(default)]
    pub arrived_at_ms: Option<f64>,
    /// Invocations it took (a failed one is retried; its time counts in T(f)); 0 in
    /// older records.
    #[serde(default)]
    pub attempts: u32,
}

/// One workflow run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    pub config: Config,
    /// Repetition number within the configuration.
    pub rep: u32,
    /// Workflow latency T(W): first start to last result.
    pub t_w_ms: f64,
    pub steps: Vec<StepRecord>,
    /// Migration time T(dm): put return until the copy was stored, per propagation.
    pub migration_ms: Vec<f64>,
    /// Data size D(f).
    pub state_bytes: u64,
    /// The physical bound T*(W): the steps' execution times plus, per hand-off, the
    /// state's transfer over the path's bottleneck ([`crate::paired`]); absent in
    /// records from before it was measured.
    #[serde(default)]
    pub t_star_ms: Option<f64>,
    /// The SLO level of the profile the run used ([`crate::slo`]); absent in older
    /// records.
    #[serde(default)]
    pub slo_level: Option<String>,
    /// Propagation jobs in every node's outbox when the workflow's first step started
    /// (a sequential run waits for them to drain first, [`crate::quiet`]); absent in the
    /// throughput phase and older records.
    #[serde(default)]
    pub outbox_at_start: Option<u64>,
    /// How the outboxes drained after the workflow's processes exited; absent in the
    /// throughput phase and older records.
    #[serde(default)]
    pub quiet: Option<crate::quiet::Quiet>,
}

/// A throughput measurement: `workflows` completed in `wall_s` seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThroughputRecord {
    pub config: Config,
    pub workflows: u32,
    pub wall_s: f64,
    /// Propagation jobs still in the outboxes when the drain wait ran out (the wall time
    /// ends there); 0 when everything drained, and in older records.
    #[serde(default)]
    pub undrained: u64,
}

/// Where and how the experiment ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub date: String,
    pub machine: String,
    pub command: String,
    pub notes: Vec<String>,
}

/// The metrics of one configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub config: Config,
    /// Workflow runs recorded (0 for a configuration with only a throughput record).
    pub n: usize,
    /// Median T(W), ms.
    pub t_w_median_ms: Option<f64>,
    /// Nearest-rank 95th percentile of T(W), ms.
    pub t_w_p95_ms: Option<f64>,
    /// Median T(f) per function, ms, functions in first-seen order.
    pub t_f_median_ms: Vec<(String, f64)>,
    /// Median retrieval time T(dr) over the steps that read state, ms.
    pub t_dr_median_ms: Option<f64>,
    /// Median migration time T(dm) over all propagations, ms.
    pub t_dm_median_ms: Option<f64>,
    /// Mean data proximity over all reads, hops.
    pub hops_mean: Option<f64>,
    /// Local availability: reading steps whose state was in their own node's store when
    /// they issued their read, percent ([`StepRecord::local_at_request`]); for older records
    /// without it, reads answered at the local tier, percent of all reads.
    pub local_availability_pct: Option<f64>,
    /// Reading steps whose state was not there when invoked but was answered by their
    /// own node's store: it arrived while the read waited, percent of reading steps.
    #[serde(default)]
    pub arrived_while_waiting_pct: Option<f64>,
    /// Median T(dr) of the steps whose state arrived while they waited, ms.
    #[serde(default)]
    pub arrived_wait_median_ms: Option<f64>,
    /// Steps whose T(f) exceeded their SLO, percent of all steps.
    pub slo_violations_pct: Option<f64>,
    /// Workflows per second from the throughput records of exactly this configuration.
    pub throughput_wf_s: Option<f64>,
}

// ---------------------------------------------------------------------------------------
// Statistics

/// Median of the finite values (mean of the two middle ones for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let v = finite_sorted(values.iter().copied());
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Nearest-rank `p`-th percentile (0 < p <= 100) of the finite values: the
/// `ceil(p/100 * n)`-th smallest.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    stats::percentile(&finite_sorted(values.iter().copied()), p)
}

/// `part` as a percentage of `whole`; `None` when `whole` is 0.
fn pct(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

/// Percent by which `value` is below `baseline` (negative when above).
fn reduction_pct(value: f64, baseline: f64) -> Option<f64> {
    (baseline > 0.0 && value.is_finite()).then(|| (baseline - value) * 100.0 / baseline)
}

/// Percent by which `value` is above `baseline` (negative when below).
fn gain_pct(value: f64, baseline: f64) -> Option<f64> {
    reduction_pct(value, baseline).map(|r| -r)
}

// ---------------------------------------------------------------------------------------
// Summaries

/// Position of `name` in `order`; unknown names after the known ones.
fn rank(order: &[&str], name: &str) -> usize {
    order.iter().position(|o| *o == name).unwrap_or(order.len())
}

/// Sort key of a configuration: state, size, policy, concurrency (unknown states and
/// policies after the known ones, by name).
fn order_key(c: &Config) -> (usize, &str, u64, usize, &str, u32) {
    (
        rank(&STATES, &c.state),
        &c.state,
        c.size_bytes,
        rank(&POLICIES, &c.policy),
        &c.policy,
        c.concurrency,
    )
}

/// Workflows per second over all throughput records of exactly `config`.
fn throughput_of(config: &Config, throughput: &[ThroughputRecord]) -> Option<f64> {
    let (wf, secs) = throughput
        .iter()
        .filter(|t| t.config == *config && t.wall_s.is_finite() && t.wall_s > 0.0)
        .fold((0u64, 0.0), |(wf, s), t| {
            (wf + u64::from(t.workflows), s + t.wall_s)
        });
    (secs > 0.0).then(|| wf as f64 / secs)
}

/// Median T(f) per function, functions in first-seen order.
fn function_medians(runs: &[&WorkflowRecord]) -> Vec<(String, f64)> {
    let mut samples: Vec<(String, Vec<f64>)> = Vec::new();
    for step in runs.iter().flat_map(|r| &r.steps) {
        match samples.iter_mut().find(|(f, _)| *f == step.function) {
            Some((_, v)) => v.push(step.t_f_ms),
            None => samples.push((step.function.clone(), vec![step.t_f_ms])),
        }
    }
    samples
        .into_iter()
        .filter_map(|(f, v)| median(&v).map(|m| (f, m)))
        .collect()
}

/// The metrics of one configuration from its runs and throughput.
fn summarize_config(config: &Config, runs: &[&WorkflowRecord], tp: Option<f64>) -> Summary {
    let t_w: Vec<f64> = runs.iter().map(|r| r.t_w_ms).collect();
    let steps: Vec<&StepRecord> = runs.iter().flat_map(|r| &r.steps).collect();
    let get_ms: Vec<f64> = steps.iter().filter_map(|s| s.get_ms).collect();
    let migration: Vec<f64> = runs.iter().flat_map(|r| r.migration_ms.clone()).collect();
    let hops: Vec<u32> = steps.iter().flat_map(|s| s.hops.iter().copied()).collect();
    let gets: u64 = steps.iter().map(|s| u64::from(s.gets)).sum();
    let local: u64 = steps.iter().map(|s| u64::from(s.local_gets)).sum();
    let violations = steps.iter().filter(|s| s.t_f_ms > s.slo_ms).count();
    let judged: Vec<&&StepRecord> = steps
        .iter()
        .filter(|s| s.local_at_request.is_some())
        .collect();
    let at_request = judged
        .iter()
        .filter(|s| s.local_at_request == Some(true))
        .count();
    let arrived: Vec<&&&StepRecord> = judged
        .iter()
        .filter(|s| s.local_at_request == Some(false) && s.own_store_answered == Some(true))
        .collect();
    let arrived_wait: Vec<f64> = arrived.iter().filter_map(|s| s.get_ms).collect();
    let local_availability_pct = if judged.is_empty() {
        pct(local, gets)
    } else {
        pct(at_request as u64, judged.len() as u64)
    };
    Summary {
        config: config.clone(),
        n: runs.len(),
        t_w_median_ms: median(&t_w),
        t_w_p95_ms: percentile(&t_w, 95.0),
        t_f_median_ms: function_medians(runs),
        t_dr_median_ms: median(&get_ms),
        t_dm_median_ms: median(&migration),
        hops_mean: (!hops.is_empty())
            .then(|| hops.iter().map(|&h| f64::from(h)).sum::<f64>() / hops.len() as f64),
        local_availability_pct,
        arrived_while_waiting_pct: pct(arrived.len() as u64, judged.len() as u64),
        arrived_wait_median_ms: median(&arrived_wait),
        slo_violations_pct: pct(violations as u64, steps.len() as u64),
        throughput_wf_s: tp,
    }
}

/// The runs of the first SLO level in `records` (the level the tables, the paired
/// comparison and the headline describe; the SLO section covers every level).
pub fn primary_level(records: &[WorkflowRecord]) -> Vec<WorkflowRecord> {
    let level = records.first().map(|r| r.slo_level.clone());
    records
        .iter()
        .filter(|r| Some(r.slo_level.clone()) == level)
        .cloned()
        .collect()
}

/// One [`Summary`] per distinct configuration among the workflow and throughput
/// records, ordered by state (bundled, single), size, policy (skylark, random,
/// stateless) and concurrency. A configuration with only throughput records gets a
/// summary with `n == 0` and no latency metrics.
pub fn summarize(records: &[WorkflowRecord], throughput: &[ThroughputRecord]) -> Vec<Summary> {
    let mut configs: Vec<&Config> = Vec::new();
    for c in records
        .iter()
        .map(|r| &r.config)
        .chain(throughput.iter().map(|t| &t.config))
    {
        if !configs.contains(&c) {
            configs.push(c);
        }
    }
    configs.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
    configs
        .into_iter()
        .map(|c| {
            let runs: Vec<&WorkflowRecord> = records.iter().filter(|r| r.config == *c).collect();
            summarize_config(c, &runs, throughput_of(c, throughput))
        })
        .collect()
}

/// The summary of the baseline policy with the same state, size and concurrency.
fn baseline_of<'a>(summaries: &'a [Summary], c: &Config) -> Option<&'a Summary> {
    summaries.iter().find(|s| {
        s.config.policy == BASELINE
            && s.config.state == c.state
            && s.config.size_bytes == c.size_bytes
            && s.config.concurrency == c.concurrency
    })
}

/// Percent reduction of `s`'s median T(W) relative to the stateless summary of the same
/// state, size and concurrency; `None` for stateless itself or without that summary.
pub fn reduction_vs_stateless(summaries: &[Summary], s: &Summary) -> Option<f64> {
    if s.config.policy == BASELINE {
        return None;
    }
    let base = baseline_of(summaries, &s.config)?.t_w_median_ms?;
    reduction_pct(s.t_w_median_ms?, base)
}

// ---------------------------------------------------------------------------------------
// Formatting

/// A size in bytes as "0.5 MB", "1 MB", "1 MiB", "64 kB", ...
pub fn size_label(bytes: u64) -> String {
    const MB: u64 = 1_000_000;
    const MIB: u64 = 1 << 20;
    if bytes >= MB / 2 && bytes.checked_rem(MB / 10) == Some(0) {
        format!("{} MB", bytes as f64 / MB as f64)
    } else if bytes >= MIB / 2 && bytes.checked_rem(MIB / 2) == Some(0) {
        format!("{} MiB", bytes as f64 / MIB as f64)
    } else if bytes >= MB {
        format!("{:.2} MB", bytes as f64 / MB as f64)
    } else if bytes >= 1000 {
        format!("{:.1} kB", bytes as f64 / 1000.0)
    } else {
        format!("{bytes} B")
    }
}

/// Milliseconds with precision to match their magnitude.
fn fmt_ms(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// An optional value through `f`, or "—".
fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| MISSING.to_string(), f)
}

/// A percentage with one decimal.
fn fmt_pct(v: f64) -> String {
    format!("{v:.1}%")
}

/// Short name of a workflow function for the compact T(f) column.
fn short_function(name: &str) -> &str {
    match name {
        "preprocess" => "pre",
        "detect" => "det",
        "detect2" => "det2",
        _ => name,
    }
}

/// "pre 12 / det 8 / det2 9 / alarm 5".
fn compact_functions(t_f: &[(String, f64)]) -> String {
    if t_f.is_empty() {
        return MISSING.to_string();
    }
    t_f.iter()
        .map(|(f, ms)| format!("{} {}", short_function(f), fmt_ms(*ms)))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Text safe inside a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// A Markdown table row.
fn row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

/// A Markdown table header and its separator line.
fn header(columns: &[&str]) -> String {
    let cols: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    let sep: Vec<String> = columns.iter().map(|_| "---".to_string()).collect();
    row(&cols) + &row(&sep)
}

// ---------------------------------------------------------------------------------------
// Markdown report

/// The (state, concurrency) groups among `summaries`, in report order.
fn groups(summaries: &[Summary]) -> Vec<(String, u32)> {
    let mut g: Vec<(String, u32)> = Vec::new();
    for s in summaries {
        let key = (s.config.state.clone(), s.config.concurrency);
        if !g.contains(&key) {
            g.push(key);
        }
    }
    g.sort_by(|a, b| (rank(&STATES, &a.0), &a.0, a.1).cmp(&(rank(&STATES, &b.0), &b.0, b.1)));
    g
}

/// "12.5% (210 ms)": the arrived-while-waiting share and its median wait.
fn arrived_cell(s: &Summary) -> String {
    match (s.arrived_while_waiting_pct, s.arrived_wait_median_ms) {
        (Some(p), Some(w)) => format!("{} ({} ms)", fmt_pct(p), fmt_ms(w)),
        (Some(p), None) => fmt_pct(p),
        _ => MISSING.to_string(),
    }
}

/// The report's table row for one summary.
fn summary_row(summaries: &[Summary], s: &Summary) -> String {
    row(&[
        size_label(s.config.size_bytes),
        cell(&s.config.policy),
        s.n.to_string(),
        opt(s.t_w_median_ms, fmt_ms),
        opt(s.t_w_p95_ms, fmt_ms),
        cell(&compact_functions(&s.t_f_median_ms)),
        opt(s.t_dr_median_ms, fmt_ms),
        opt(s.t_dm_median_ms, fmt_ms),
        opt(s.hops_mean, |v| format!("{v:.2}")),
        opt(s.local_availability_pct, fmt_pct),
        arrived_cell(s),
        opt(s.slo_violations_pct, fmt_pct),
        opt(s.throughput_wf_s, |v| format!("{v:.2}")),
        opt(reduction_vs_stateless(summaries, s), fmt_pct),
    ])
}

/// The full report: title, run metadata, then one table per (state, concurrency)
/// group with one row per (size, policy).
pub fn markdown(meta: &Meta, summaries: &[Summary]) -> String {
    let mut out = String::from("# Skylark constellation experiment\n\n");
    let _ = writeln!(out, "- Date: {}", meta.date);
    let _ = writeln!(out, "- Machine: {}", meta.machine);
    let _ = writeln!(out, "- Command: `{}`", meta.command.replace('`', "'"));
    if !meta.notes.is_empty() {
        out.push_str("- Notes:\n");
        for n in &meta.notes {
            let _ = writeln!(out, "  - {n}");
        }
    }
    out.push_str(
        "\nT(W): workflow latency, first start to last result. T(f): median function \
         latency (process start to result line) per function. T(dr): median retrieval \
         time of a step's reads. T(dm): median migration time, put return until the copy \
         was stored. Hops: mean distance from the serving node over all reads. Local \
         availability: reading steps whose state was in their own node's store when \
         they issued their read. Arrived while waiting: reading steps whose state was not \
         there yet but was answered by their own node's store (it arrived during the \
         read), with the median wait. SLO violations: \
         steps over their latency budget. T(W) vs stateless: reduction of the median \
         against the stateless row of the same size (negative: slower). Times in ms; \
         p95 is nearest-rank.\n",
    );
    if summaries.is_empty() {
        out.push_str("\nNo records.\n");
    }
    for (state, concurrency) in groups(summaries) {
        let _ = writeln!(
            out,
            "\n## State: {}, concurrency {concurrency}\n",
            cell(&state)
        );
        out.push_str(&header(&[
            "size",
            "policy",
            "n",
            "T(W) median ms",
            "T(W) p95 ms",
            "T(f) median ms",
            "T(dr) median ms",
            "T(dm) median ms",
            "hops (mean)",
            "local availability",
            "arrived while waiting (median wait)",
            "SLO violations",
            "wf/s",
            "T(W) vs stateless",
        ]));
        summaries
            .iter()
            .filter(|s| s.config.state == state && s.config.concurrency == concurrency)
            .for_each(|s| out.push_str(&summary_row(summaries, s)));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Headline

/// The summary of `policy` at `size_bytes`, headline state and `concurrency`.
fn find<'a>(
    summaries: &'a [Summary],
    policy: &str,
    size_bytes: u64,
    concurrency: u32,
) -> Option<&'a Summary> {
    summaries.iter().find(|s| {
        s.config.policy == policy
            && s.config.state == HEADLINE_STATE
            && s.config.size_bytes == size_bytes
            && s.config.concurrency == concurrency
    })
}

/// The concurrency the headline's latency columns come from: 1 if measured, else the
/// lowest with workflow runs.
fn latency_concurrency(at_size: &[&Summary]) -> Option<u32> {
    let c = at_size
        .iter()
        .filter(|s| s.n > 0)
        .map(|s| s.config.concurrency);
    c.clone().find(|&c| c == 1).or_else(|| c.min())
}

/// The size the headline's throughput columns come from: `size_bytes` if any throughput
/// was measured there, else the size with throughput nearest to it (by ratio), else
/// `size_bytes` (the columns then show nothing measured).
fn throughput_size(summaries: &[Summary], size_bytes: u64) -> u64 {
    let distance = |b: u64| (b.max(1) as f64 / size_bytes.max(1) as f64).ln().abs();
    summaries
        .iter()
        .filter(|s| s.config.state == HEADLINE_STATE && s.config.concurrency > 1)
        .filter(|s| s.throughput_wf_s.is_some())
        .map(|s| s.config.size_bytes)
        .min_by(|a, b| distance(*a).total_cmp(&distance(*b)))
        .unwrap_or(size_bytes)
}

/// The concurrency (> 1) the headline's throughput columns come from: the highest at
/// which both skylark and stateless have throughput, else the highest with any.
fn throughput_concurrency(at_size: &[&Summary]) -> Option<u32> {
    let with_tp = |policy: &str| -> Vec<u32> {
        at_size
            .iter()
            .filter(|s| s.config.concurrency > 1 && s.throughput_wf_s.is_some())
            .filter(|s| s.config.policy == policy)
            .map(|s| s.config.concurrency)
            .collect()
    };
    let base = with_tp(BASELINE);
    let both = with_tp(CANDIDATE)
        .into_iter()
        .filter(|c| base.contains(c))
        .max();
    both.or_else(|| {
        at_size
            .iter()
            .filter(|s| s.config.concurrency > 1 && s.throughput_wf_s.is_some())
            .map(|s| s.config.concurrency)
            .max()
    })
}

/// One headline target line: "- name: measured — met" (or "NOT met").
fn target_line(name: &str, measured: Option<f64>, met: impl Fn(f64) -> bool) -> String {
    match measured {
        Some(v) => format!(
            "- {name}: {} — {}\n",
            fmt_pct(v),
            if met(v) { "met" } else { "NOT met" }
        ),
        None => format!("- {name}: not measured — NOT met\n"),
    }
}

/// The short table for BENCHMARKS.md at one size (bundled state): per policy T(W)
/// median, reduction vs stateless, local availability, SLO violations (all at
/// concurrency 1, or the lowest measured), throughput and its gain vs stateless (at the
/// highest concurrency > 1 measured for both); then the target check list for skylark.
pub fn headline(summaries: &[Summary], size_bytes: u64) -> String {
    let size = size_label(size_bytes);
    let at_size: Vec<&Summary> = summaries
        .iter()
        .filter(|s| s.config.state == HEADLINE_STATE && s.config.size_bytes == size_bytes)
        .collect();
    let c_lat = latency_concurrency(&at_size);
    // Throughput may have been measured at another size than the latency columns' (the
    // presets run it at one size only): then the nearest size that has it.
    let tp_size = throughput_size(summaries, size_bytes);
    let at_tp_size: Vec<&Summary> = summaries
        .iter()
        .filter(|s| s.config.state == HEADLINE_STATE && s.config.size_bytes == tp_size)
        .collect();
    let c_tp = throughput_concurrency(&at_tp_size);
    let mut policies: Vec<&str> = at_size.iter().map(|s| s.config.policy.as_str()).collect();
    policies.sort_by_key(|p| (rank(&POLICIES, p), *p));
    policies.dedup();

    let lat = |p: &str| c_lat.and_then(|c| find(summaries, p, size_bytes, c));
    let tp = |p: &str| c_tp.and_then(|c| find(summaries, p, tp_size, c)?.throughput_wf_s);
    let reduction = |p: &str| lat(p).and_then(|s| reduction_vs_stateless(summaries, s));
    let gain = |p: &str| {
        (p != BASELINE)
            .then(|| gain_pct(tp(p)?, tp(BASELINE)?))
            .flatten()
    };

    let c_text = |c: Option<u32>| c.map_or_else(|| MISSING.to_string(), |c| c.to_string());
    let mut out = format!(
        "State: bundled, {size}; T(W), availability and SLO violations at concurrency {}, \
         throughput at concurrency {}{}.\n\n",
        c_text(c_lat),
        c_text(c_tp),
        if tp_size == size_bytes {
            String::new()
        } else {
            format!(" and {}", size_label(tp_size))
        }
    );
    out.push_str(&header(&[
        "policy",
        "T(W) median ms",
        "T(W) vs stateless",
        "local availability",
        "SLO violations",
        "throughput wf/s",
        "throughput vs stateless",
    ]));
    for p in &policies {
        let s = lat(p);
        out.push_str(&row(&[
            cell(p),
            opt(s.and_then(|s| s.t_w_median_ms), fmt_ms),
            opt(reduction(p), fmt_pct),
            opt(s.and_then(|s| s.local_availability_pct), fmt_pct),
            opt(s.and_then(|s| s.slo_violations_pct), fmt_pct),
            opt(tp(p), |v| format!("{v:.2}")),
            opt(gain(p), |v| format!("{v:+.1}%")),
        ]));
    }
    let cand = lat(CANDIDATE);
    out.push_str("\nTargets (skylark):\n\n");
    out.push_str(&target_line(
        &format!("T(W) reduction at {size} >= {TARGET_REDUCTION_PCT}%"),
        reduction(CANDIDATE),
        |v| v >= TARGET_REDUCTION_PCT,
    ));
    out.push_str(&target_line(
        &format!("local state availability >= {TARGET_AVAILABILITY_PCT}%"),
        cand.and_then(|s| s.local_availability_pct),
        |v| v >= TARGET_AVAILABILITY_PCT,
    ));
    out.push_str(&target_line(
        &format!("SLO violations {TARGET_SLO_VIOLATIONS_PCT}%"),
        cand.and_then(|s| s.slo_violations_pct),
        |v| v <= TARGET_SLO_VIOLATIONS_PCT,
    ));
    out.push_str(&target_line(
        &format!(
            "throughput gain at {} >= {TARGET_THROUGHPUT_GAIN_PCT}%",
            size_label(tp_size)
        ),
        gain(CANDIDATE),
        |v| v >= TARGET_THROUGHPUT_GAIN_PCT,
    ));
    out
}

// ---------------------------------------------------------------------------------------
// Plot

/// Plot size in pixels.
const PLOT_SIZE: (u32, u32) = (1200, 700);
/// The font family the plot registers [`FONT_PATH`] under and draws with.
const FONT_FAMILY: &str = "sans-serif";

/// Reads the TrueType font at `path`, with an error naming the package to install.
fn load_font(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the plot font {path} ({e}): install the Debian package \
             {FONT_PACKAGE} (apt-get install {FONT_PACKAGE}, or run scripts/setup-deps.sh)"
        )
    })
}

/// Registers [`FONT_PATH`] with plotters once per process (ab_glyph needs the bytes for
/// the life of the process, so they are leaked, once).
fn ensure_font() -> Result<(), String> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let bytes: &'static [u8] = Box::leak(load_font(FONT_PATH)?.into_boxed_slice());
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, bytes).map_err(|_| {
            format!("{FONT_PATH} is not a usable TrueType font: reinstall {FONT_PACKAGE}")
        })
    })
    .clone()
}

/// Bar colour of a policy.
fn policy_color(policy: &str) -> RGBColor {
    match policy {
        "skylark" => RGBColor(31, 119, 180),
        "random" => RGBColor(255, 127, 14),
        "stateless" => RGBColor(127, 127, 127),
        "research" => RGBColor(148, 103, 189),
        _ => RGBColor(44, 160, 44),
    }
}

/// The x axis of a grouped bar chart: group `i` is centred on `i`, the axis spans
/// `-0.5 .. groups - 0.5`, and the only tick marks are the group centres.
struct Groups(usize);

impl Ranged for Groups {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, (p0, p1): (i32, i32)) -> i32 {
        let span = self.0.max(1) as f64;
        let frac = (v + 0.5) / span;
        (f64::from(p0) + frac * f64::from(p1 - p0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        (0..self.0).map(|i| i as f64).collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        -0.5..self.0.max(1) as f64 - 0.5
    }
}

/// What one bar panel shows.
struct Panel<'a> {
    caption: &'a str,
    y_desc: &'a str,
    /// The value of a summary, if measured.
    value: fn(&Summary) -> Option<f64>,
    /// The value label drawn above a bar.
    label: fn(f64) -> String,
    /// Fixed top of the y axis; `None` to fit the data (with room for the legend).
    y_max: Option<f64>,
    /// Whether to draw the legend (policy colours) in the upper left corner.
    legend: bool,
}

/// Grouped bars on `area`: one group per size, one bar per policy.
fn draw_panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    data: &[&Summary],
    sizes: &[u64],
    policies: &[&str],
    panel: &Panel,
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("drawing \"{}\": {e}", panel.caption);
    let values = data.iter().filter_map(|s| (panel.value)(s));
    let y_max = panel
        .y_max
        .unwrap_or_else(|| values.fold(0.0, f64::max) * 1.3)
        .max(1.0);
    // Enough decimals for the y axis's ticks to differ.
    let y_decimals = match y_max {
        m if m >= 20.0 => 0,
        m if m >= 2.0 => 1,
        _ => 2,
    };
    let mut chart = ChartBuilder::on(area)
        .caption(panel.caption, (FONT_FAMILY, 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(Groups(sizes.len()), 0.0..y_max)
        .map_err(|e| err(&e))?;
    let x_label = |x: &f64| {
        sizes
            .get(x.round().max(0.0) as usize)
            .map_or_else(String::new, |&b| size_label(b))
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("state size")
        .y_desc(panel.y_desc)
        .x_label_formatter(&x_label)
        .y_label_formatter(&|v| format!("{v:.y_decimals$}"))
        .y_max_light_lines(1)
        .label_style((FONT_FAMILY, 15))
        .axis_desc_style((FONT_FAMILY, 16))
        .draw()
        .map_err(|e| err(&e))?;
    if data.is_empty() {
        let style = TextStyle::from((FONT_FAMILY, 18).into_font())
            .pos(Pos::new(HPos::Center, VPos::Center));
        chart
            .draw_series([Text::new("no data", (0.0, y_max / 2.0), style)])
            .map_err(|e| err(&e))?;
        return Ok(());
    }
    let width = 0.8 / policies.len().max(1) as f64;
    let label_style =
        TextStyle::from((FONT_FAMILY, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (p, policy) in policies.iter().enumerate() {
        let color = policy_color(policy);
        let bars: Vec<(f64, f64)> = sizes
            .iter()
            .enumerate()
            .filter_map(|(g, size)| {
                let s = data
                    .iter()
                    .find(|s| s.config.policy == *policy && s.config.size_bytes == *size)?;
                Some((g as f64 - 0.4 + p as f64 * width, (panel.value)(s)?))
            })
            .collect();
        chart
            .draw_series(bars.iter().map(|&(x0, v)| {
                Rectangle::new([(x0 + 0.01, 0.0), (x0 + width - 0.01, v)], color.filled())
            }))
            .map_err(|e| err(&e))?
            .label(*policy)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        chart
            .draw_series(bars.iter().map(|&(x0, v)| {
                Text::new((panel.label)(v), (x0 + width / 2.0, v), label_style.clone())
            }))
            .map_err(|e| err(&e))?;
    }
    if !panel.legend {
        return Ok(());
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT_FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    Ok(())
}

/// A PNG (1200x700) of grouped bars over the state sizes, one bar per policy, for the
/// bundled state at concurrency 1: median T(W) on the left, local state availability
/// on the right. Fails if the font ([`FONT_PATH`]) is missing or the file cannot be
/// written; a run without such summaries gives a plot saying "no data".
pub fn plot(summaries: &[Summary], path: &Path) -> Result<(), String> {
    ensure_font()?;
    let data: Vec<&Summary> = summaries
        .iter()
        .filter(|s| s.config.state == HEADLINE_STATE && s.config.concurrency == 1 && s.n > 0)
        .collect();
    let mut sizes: Vec<u64> = data.iter().map(|s| s.config.size_bytes).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut policies: Vec<&str> = data.iter().map(|s| s.config.policy.as_str()).collect();
    policies.sort_by_key(|p| (rank(&POLICIES, p), *p));
    policies.dedup();

    let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let root = BitMapBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(
            "Skylark: workflow latency by state size (bundled state, concurrency 1)",
            (FONT_FAMILY, 24),
        )
        .map_err(|e| err(&e))?;
    let (left, right) = root.split_horizontally(760);
    draw_panel(
        &left,
        &data,
        &sizes,
        &policies,
        &Panel {
            caption: "Median workflow latency T(W)",
            y_desc: "T(W) median (ms)",
            value: |s| s.t_w_median_ms,
            label: |v| format!("{v:.0}"),
            y_max: None,
            legend: true,
        },
    )
    .map_err(|e| err(&e))?;
    draw_panel(
        &right,
        &data,
        &sizes,
        &policies,
        &Panel {
            caption: "Local state availability",
            y_desc: "reads served locally (%)",
            value: |s| s.local_availability_pct,
            label: |v| format!("{v:.0}"),
            y_max: Some(110.0),
            legend: false,
        },
    )
    .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

// ---------------------------------------------------------------------------------------
// Report directory

/// What `records.json` holds.
#[derive(Serialize)]
struct RecordsFile<'a> {
    meta: &'a Meta,
    workflows: &'a [WorkflowRecord],
    throughput: &'a [ThroughputRecord],
}

/// The bundled-state size the report's headline is for: the one nearest 1 MB (on a log
/// scale), if any.
fn headline_size(summaries: &[Summary]) -> Option<u64> {
    let distance = |b: u64| (b.max(1) as f64 / 1e6).ln().abs();
    summaries
        .iter()
        .filter(|s| s.config.state == HEADLINE_STATE)
        .map(|s| s.config.size_bytes)
        .min_by(|a, b| distance(*a).total_cmp(&distance(*b)))
}

/// Writes `contents` to `path`, with the path in the error.
fn write_file(path: &Path, contents: &[u8]) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|e| format!("write {}: {e}", path.display()))
}

/// Creates `dir` and writes `records.json`, `latency.png` and `report.md` (the
/// [`markdown`] report, the [`headline`] at the size nearest 1 MB and the plot) into
/// it; returns the path of `report.md`.
pub fn write_report(
    dir: &Path,
    meta: &Meta,
    records: &[WorkflowRecord],
    throughput: &[ThroughputRecord],
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let json = serde_json::to_string_pretty(&RecordsFile {
        meta,
        workflows: records,
        throughput,
    })
    .map_err(|e| format!("serialize the records: {e}"))?;
    write_file(&dir.join("records.json"), json.as_bytes())?;

    let all = records;
    let records = &primary_level(all);
    let summaries = summarize(records, throughput);
    plot(&summaries, &dir.join("latency.png"))?;

    let mut md = markdown(meta, &summaries);
    md.push_str(&crate::paired::markdown(records));
    md.push_str(&crate::handoff::markdown(records));
    md.push_str(&crate::slo::markdown(all));
    if let Some(size) = headline_size(&summaries) {
        let _ = write!(
            md,
            "\n## Headline ({})\n\n{}",
            size_label(size),
            headline(&summaries, size)
        );
    }
    md.push_str("\n## Plot\n\n![Median T(W) and local availability](latency.png)\n");
    let report = dir.join("report.md");
    write_file(&report, md.as_bytes())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    fn cfg(policy: &str, state: &str, size_bytes: u64, concurrency: u32) -> Config {
        Config {
            policy: policy.into(),
            state: state.into(),
            size_bytes,
            concurrency,
        }
    }

    fn step(function: &str, t_f_ms: f64, slo_ms: f64, local: u32, hops: &[u32]) -> StepRecord {
        StepRecord {
            function: function.into(),
            node: "sat-1".into(),
            t_f_ms,
            get_ms: (!hops.is_empty()).then_some(2.0 * hops.len() as f64),
            gets: hops.len() as u32,
            local_gets: local,
            hops: hops.to_vec(),
            put_ms: 1.0,
            compute_ms: t_f_ms / 2.0,
            slo_ms,
            local_at_request: None,
            own_store_answered: None,
            exec_ms: None,
            migrations: Vec::new(),
            read_at_ms: None,
            arrived_at_ms: None,
            attempts: 1,
        }
    }

    /// A workflow whose steps all meet a generous SLO and read locally.
    fn run(config: &Config, rep: u32, t_w_ms: f64) -> WorkflowRecord {
        WorkflowRecord {
            config: config.clone(),
            rep,
            t_w_ms,
            steps: vec![
                step("preprocess", 10.0, 1000.0, 0, &[]),
                step("detect", 20.0, 1000.0, 1, &[0]),
                step("alarm", 5.0, 1000.0, 1, &[0]),
            ],
            migration_ms: vec![3.0],
            state_bytes: config.size_bytes,
            t_star_ms: None,
            slo_level: None,
            outbox_at_start: None,
            quiet: None,
        }
    }

    fn tp(config: &Config, workflows: u32, wall_s: f64) -> ThroughputRecord {
        ThroughputRecord {
            config: config.clone(),
            workflows,
            wall_s,
            undrained: 0,
        }
    }

    fn meta() -> Meta {
        Meta {
            date: "2026-11-30".into(),
            machine: "test VM".into(),
            command: "cargo run --bin experiment".into(),
            notes: vec!["synthetic".into()],
        }
    }

    /// Skylark 30 ms, random 60 ms, stateless 100 ms at 1 MB (bundled, c = 1), with
    /// throughput at c = 4: skylark 16 wf/s, stateless 10 wf/s.
    fn scenario() -> (Vec<WorkflowRecord>, Vec<ThroughputRecord>) {
        let mut records = Vec::new();
        for (policy, ms) in [("stateless", 100.0), ("skylark", 30.0), ("random", 60.0)] {
            for rep in 0..3 {
                records.push(run(&cfg(policy, "bundled", MB, 1), rep, ms));
            }
        }
        let throughput = vec![
            tp(&cfg("skylark", "bundled", MB, 4), 32, 2.0),
            tp(&cfg("stateless", "bundled", MB, 4), 20, 2.0),
        ];
        (records, throughput)
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn median_and_nearest_rank_percentile() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 1.0, 5.0, f64::INFINITY]), Some(3.0));
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 95.0), Some(19.0)); // ceil(0.95 * 20) = 19th
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 95.0), Some(10.0)); // ceil(9.5) = 10th
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[], 95.0), None);
    }

    #[test]
    fn summary_metrics() {
        let c = cfg("skylark", "bundled", MB, 1);
        let mut a = run(&c, 0, 40.0);
        // 4 reads: 3 local (hops 0, 0, 0), 1 remote two hops away; the detect step
        // misses its SLO.
        a.steps = vec![
            step("preprocess", 10.0, 50.0, 0, &[]),
            step("detect", 80.0, 50.0, 2, &[0, 0]),
            step("alarm", 6.0, 50.0, 1, &[0, 2]),
        ];
        a.migration_ms = vec![4.0, 8.0];
        let mut b = run(&c, 1, 20.0);
        b.steps = vec![
            step("preprocess", 12.0, 50.0, 0, &[]),
            step("detect", 40.0, 50.0, 0, &[]),
        ];
        b.migration_ms = vec![];
        let s = summarize(&[a, b], &[tp(&c, 10, 4.0)]);
        assert_eq!(s.len(), 1);
        let s = &s[0];
        assert_eq!(s.n, 2);
        assert_eq!(s.t_w_median_ms, Some(30.0));
        assert_eq!(s.t_w_p95_ms, Some(40.0));
        assert_eq!(
            s.t_f_median_ms,
            vec![
                ("preprocess".to_string(), 11.0),
                ("detect".to_string(), 60.0),
                ("alarm".to_string(), 6.0)
            ]
        );
        assert_eq!(s.t_dr_median_ms, Some(4.0)); // get_ms 4, 4 (two steps with reads)
        assert_eq!(s.t_dm_median_ms, Some(6.0));
        assert!(close(s.hops_mean, 0.5)); // (0 + 0 + 0 + 2) / 4
        assert!(close(s.local_availability_pct, 75.0)); // 3 of 4
        assert!(close(s.slo_violations_pct, 20.0)); // 1 of 5 steps
        assert!(close(s.throughput_wf_s, 2.5));
    }

    #[test]
    fn missing_measurements_are_none() {
        let c = cfg("stateless", "single", MB, 1);
        let mut r = run(&c, 0, 10.0);
        r.steps = vec![step("preprocess", 10.0, 50.0, 0, &[])];
        r.migration_ms.clear();
        let s = &summarize(&[r], &[])[0];
        assert_eq!(s.t_dr_median_ms, None);
        assert_eq!(s.t_dm_median_ms, None);
        assert_eq!(s.hops_mean, None);
        assert_eq!(s.local_availability_pct, None);
        assert_eq!(s.throughput_wf_s, None);
        assert!(close(s.slo_violations_pct, 0.0));
    }

    #[test]
    fn grouping_and_order() {
        let mut records = Vec::new();
        for state in ["single", "bundled"] {
            for size in [2 * MB, MB / 2] {
                for policy in ["stateless", "random", "skylark"] {
                    for c in [4, 1] {
                        records.push(run(&cfg(policy, state, size, c), 0, 10.0));
                        records.push(run(&cfg(policy, state, size, c), 1, 12.0));
                    }
                }
            }
        }
        // Throughput only, for a configuration without workflow runs.
        let extra = cfg("skylark", "bundled", 5 * MB, 8);
        let s = summarize(&records, &[tp(&extra, 8, 1.0)]);
        assert_eq!(s.len(), 2 * 2 * 3 * 2 + 1);
        let order: Vec<(&str, u64, &str, u32)> = s
            .iter()
            .map(|s| {
                let c = &s.config;
                (
                    c.state.as_str(),
                    c.size_bytes,
                    c.policy.as_str(),
                    c.concurrency,
                )
            })
            .collect();
        assert_eq!(order[0], ("bundled", MB / 2, "skylark", 1));
        assert_eq!(order[1], ("bundled", MB / 2, "skylark", 4));
        assert_eq!(order[2], ("bundled", MB / 2, "random", 1));
        assert_eq!(order[4], ("bundled", MB / 2, "stateless", 1));
        assert_eq!(order[6], ("bundled", 2 * MB, "skylark", 1));
        assert_eq!(order[12], ("bundled", 5 * MB, "skylark", 8));
        assert_eq!(order[13], ("single", MB / 2, "skylark", 1));
        assert!(s.iter().take(12).all(|s| s.n == 2));
        assert_eq!(s[12].n, 0);
        assert_eq!(s[12].t_w_median_ms, None);
        assert_eq!(s[12].throughput_wf_s, Some(8.0));

        let md = markdown(&meta(), &s);
        let headings: Vec<&str> = md.lines().filter(|l| l.starts_with("## ")).collect();
        assert_eq!(
            headings,
            [
                "## State: bundled, concurrency 1",
                "## State: bundled, concurrency 4",
                "## State: bundled, concurrency 8",
                "## State: single, concurrency 1",
                "## State: single, concurrency 4",
            ]
        );
        // Rows of the first table: sizes ascending, policies in order.
        let first: Vec<&str> = md
            .split("## State: bundled, concurrency 1")
            .nth(1)
            .and_then(|t| t.split("## ").next())
            .map(|t| {
                t.lines()
                    .filter(|l| l.starts_with("| 0.5") || l.starts_with("| 2"))
            })
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(first.len(), 6);
        assert!(first[0].starts_with("| 0.5 MB | skylark |"));
        assert!(first[2].starts_with("| 0.5 MB | stateless |"));
        assert!(first[3].starts_with("| 2 MB | skylark |"));
    }

    #[test]
    fn markdown_reduction_vs_stateless() {
        let (records, throughput) = scenario();
        let s = summarize(&records, &throughput);
        let by = |p: &str| {
            s.iter()
                .find(|s| s.config.policy == p && s.config.concurrency == 1)
                .expect("summary")
        };
        assert!(close(reduction_vs_stateless(&s, by("skylark")), 70.0));
        assert!(close(reduction_vs_stateless(&s, by("random")), 40.0));
        assert_eq!(reduction_vs_stateless(&s, by("stateless")), None);

        let md = markdown(&meta(), &s);
        assert!(md.starts_with("# Skylark constellation experiment"));
        for needle in [
            "2026-11-30",
            "test VM",
            "`cargo run --bin experiment`",
            "synthetic",
        ] {
            assert!(md.contains(needle), "{needle} missing:\n{md}");
        }
        let line = |p: &str| {
            md.lines()
                .find(|l| l.starts_with(&format!("| 1 MB | {p} | 3 |")))
                .unwrap_or_else(|| panic!("no {p} row:\n{md}"))
                .to_string()
        };
        let sky = line("skylark");
        assert!(sky.contains("| 30.0 | 30.0 |"), "{sky}");
        assert!(
            sky.contains("| pre 10.0 / det 20.0 / alarm 5.00 |"),
            "{sky}"
        );
        assert!(sky.ends_with("| 100.0% | — | 0.0% | — | 70.0% |"), "{sky}");
        assert!(line("random").ends_with("| 40.0% |"));
        assert!(line("stateless").ends_with("| — |"));
        // The concurrency-4 group has throughput but no stateless latency to compare.
        assert!(
            md.contains("| 1 MB | skylark | 0 | — | — | — | — | — | — | — | — | — | 16.00 | — |")
        );
    }

    #[test]
    fn availability_counts_state_present_at_request_and_reports_arrivals_apart() {
        let c = cfg("skylark", "bundled", MB, 1);
        let mut r = run(&c, 0, 100.0);
        // preprocess reads nothing; detect waited for its copy; alarm found its state.
        r.steps[1].local_at_request = Some(false);
        r.steps[1].own_store_answered = Some(true);
        r.steps[1].get_ms = Some(200.0);
        r.steps[2].local_at_request = Some(true);
        r.steps[2].own_store_answered = Some(true);
        let s = summarize(&[r], &[]);
        assert_eq!(s[0].local_availability_pct, Some(50.0));
        assert_eq!(s[0].arrived_while_waiting_pct, Some(50.0));
        assert_eq!(s[0].arrived_wait_median_ms, Some(200.0));
        // A step answered by another node's store is neither.
        let mut r = run(&c, 0, 100.0);
        r.steps[1].local_at_request = Some(false);
        r.steps[1].own_store_answered = Some(false);
        let s = summarize(&[r], &[]);
        assert_eq!(s[0].local_availability_pct, Some(0.0));
        assert_eq!(s[0].arrived_while_waiting_pct, Some(0.0));
    }

    #[test]
    fn headline_targets_met() {
        let (records, throughput) = scenario();
        let h = headline(&summarize(&records, &throughput), MB);
        assert!(h.contains("concurrency 1"), "{h}");
        assert!(h.contains("throughput at concurrency 4"), "{h}");
        assert!(h.contains("| skylark | 30.0 | 70.0% | 100.0% | 0.0% | 16.00 | +60.0% |"));
        assert!(h.contains("| stateless | 100 | — | 100.0% | 0.0% | 10.00 | — |"));
        let targets: Vec<&str> = h.lines().filter(|l| l.starts_with("- ")).collect();
        assert_eq!(
            targets,
            [
                "- T(W) reduction at 1 MB >= 66%: 70.0% — met",
                "- local state availability >= 90%: 100.0% — met",
                "- SLO violations 0%: 0.0% — met",
                "- throughput gain at 1 MB >= 50%: 60.0% — met",
            ]
        );
    }

    #[test]
    fn headline_targets_not_met() {
        let (mut records, mut throughput) = scenario();
        for r in records.iter_mut().filter(|r| r.config.policy == "skylark") {
            r.t_w_ms = 50.0; // 50% reduction
            r.steps[1].t_f_ms = 2000.0; // 1 of 3 steps over its SLO
            r.steps[2].local_gets = 0; // 1 of 2 reads local
        }
        throughput[0].workflows = 24; // 12 wf/s: +20%
        let h = headline(&summarize(&records, &throughput), MB);
        let targets: Vec<&str> = h.lines().filter(|l| l.starts_with("- ")).collect();
        assert_eq!(
            targets,
            [
                "- T(W) reduction at 1 MB >= 66%: 50.0% — NOT met",
                "- local state availability >= 90%: 50.0% — NOT met",
                "- SLO violations 0%: 33.3% — NOT met",
                "- throughput gain at 1 MB >= 50%: 20.0% — NOT met",
            ]
        );
        // Nothing measured at that size.
        let h = headline(&summarize(&records, &[]), 5 * MB);
        assert_eq!(h.matches("not measured — NOT met").count(), 4, "{h}");
    }

    #[test]
    fn headline_takes_throughput_from_the_nearest_size_that_has_it() {
        // Latency at 1 MB, throughput only at 2 MB (as the presets run it): the headline
        // reports the 2 MB gain and says so, instead of "not measured".
        let (records, _) = scenario();
        let throughput = vec![
            tp(&cfg("skylark", "bundled", 2 * MB, 5), 30, 2.0),
            tp(&cfg("stateless", "bundled", 2 * MB, 5), 20, 2.0),
        ];
        let h = headline(&summarize(&records, &throughput), MB);
        assert!(h.contains("throughput at concurrency 5 and 2 MB"), "{h}");
        assert!(
            h.contains("- throughput gain at 2 MB >= 50%: 50.0% — met"),
            "{h}"
        );
        assert!(
            h.contains("| skylark | 30.0 | 70.0% | 100.0% | 0.0% | 15.00 | +50.0% |"),
            "{h}"
        );
    }

    #[test]
    fn compact_function_column() {
        let t_f: Vec<(String, f64)> = [
            ("preprocess", 12.0),
            ("detect", 8.0),
            ("detect2", 9.25),
            ("alarm", 150.4),
            ("other", 1.5),
        ]
        .iter()
        .map(|(f, ms)| (f.to_string(), *ms))
        .collect();
        assert_eq!(
            compact_functions(&t_f),
            "pre 12.0 / det 8.00 / det2 9.25 / alarm 150 / other 1.50"
        );
        assert_eq!(compact_functions(&[]), "—");
    }

    #[test]
    fn size_labels() {
        assert_eq!(size_label(MB / 2), "0.5 MB");
        assert_eq!(size_label(MB), "1 MB");
        assert_eq!(size_label(5 * MB), "5 MB");
        assert_eq!(size_label(1 << 20), "1 MiB");
        assert_eq!(size_label(1 << 19), "0.5 MiB");
        assert_eq!(size_label(65_536), "65.5 kB");
        assert_eq!(size_label(12), "12 B");
    }

    fn assert_png(path: &Path) {
        let bytes = std::fs::read(path).expect("read png");
        assert_eq!(
            &bytes[..8],
            b"\x89PNG\r\n\x1a\n",
            "{} is not a PNG",
            path.display()
        );
        assert!(bytes.len() > 10_000, "PNG only {} bytes", bytes.len());
    }

    #[test]
    fn plot_writes_png() {
        let mut records = Vec::new();
        for size in [MB / 2, MB, 2 * MB, 5 * MB] {
            for (policy, ms) in [("skylark", 30.0), ("random", 60.0), ("stateless", 100.0)] {
                let c = cfg(policy, "bundled", size, 1);
                records.push(run(&c, 0, ms * size as f64 / MB as f64));
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("latency.png");
        plot(&summarize(&records, &[]), &path).expect("plot");
        assert_png(&path);

        let empty = dir.path().join("empty.png");
        plot(&[], &empty).expect("plot without data");
        assert_png(&empty);
    }

    #[test]
    fn missing_font_names_the_package() {
        let e = load_font("/nonexistent/DejaVuSans.ttf").expect_err("no such font");
        assert!(
            e.contains(FONT_PACKAGE) && e.contains("/nonexistent"),
            "{e}"
        );
    }

    #[test]
    fn write_report_creates_the_files() {
        let (records, throughput) = scenario();
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("run-1");
        let report = write_report(&out, &meta(), &records, &throughput).expect("report");
        assert_eq!(report, out.join("report.md"));
        let md = std::fs::read_to_string(&report).expect("read report");
        assert!(md.contains("## Headline (1 MB)"), "{md}");
        for word in ["skylark", "random", "stateless", "bundled"] {
            assert!(md.contains(word), "report lacks {word}");
        }
        assert!(
            md.contains("- T(W) reduction at 1 MB >= 66%: 70.0% — met"),
            "{md}"
        );
        assert!(md.contains("](latency.png)"));
        assert_png(&out.join("latency.png"));
        let json = std::fs::read_to_string(out.join("records.json")).expect("read json");
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        let workflows: Vec<WorkflowRecord> =
            serde_json::from_value(v["workflows"].clone()).expect("workflow records");
        assert_eq!(workflows, records);
        assert_eq!(v["throughput"].as_array().map(Vec::len), Some(2));
        assert_eq!(v["meta"]["machine"], "test VM");
    }
}
