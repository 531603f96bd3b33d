//! How a workflow step reads its predecessors' state and stores its own, in either layout
//! the evaluation compares (`--state`):
//! - `bundled` (default): one bundle per chain; a step reads every predecessor's state in
//!   one request and adds its own as one more field;
//! - `single`: one key per task (the bundle of chain `<chain>.<task>` holds just that
//!   task's field); a step makes one request per predecessor it needs.
//!
//! Both go through the same Skylark host calls, so placement and fallback reads apply to
//! either. `--policy stateless` also makes the reads go to the global store only.

use crate::cli::{timed, Args};
use serde_json::{json, Value};
use skylark_guest::{GetOptions, PutOptions, Source};
use std::collections::BTreeMap;

/// The state layout of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Bundled,
    Single,
}

impl Layout {
    /// The layout from `--state` (default bundled).
    pub fn from_args(args: &Args) -> Result<Layout, String> {
        match args.value("state") {
            None | Some("bundled") => Ok(Layout::Bundled),
            Some("single") => Ok(Layout::Single),
            Some(other) => Err(format!("--state {other:?} is not bundled or single")),
        }
    }

    /// The chain whose bundle holds `task`'s state in this layout.
    pub fn chain_of(self, chain: &str, task: &str) -> String {
        match self {
            Layout::Bundled => chain.to_string(),
            Layout::Single => format!("{chain}.{task}"),
        }
    }
}

/// The read options of a step: `--policy stateless` reads only the global store.
pub fn get_options(args: &Args) -> Result<GetOptions, String> {
    let policy = match args.value("policy") {
        None => None,
        Some(p) => Some(skylark_guest::Policy::parse(p).ok_or_else(|| {
            format!("--policy {p:?} is not one of skylark, random, stateless, local")
        })?),
    };
    // `--wait-inputs-ms MS`: wait (at most MS) for inputs not yet put (a join started
    // before its inputs); see `needing`.
    let wait_ms = match args.value("wait-inputs-ms") {
        None => None,
        Some(_) => Some(args.number::<u64>("wait-inputs-ms", 0)?),
    };
    Ok(GetOptions {
        policy,
        wait_ms,
        ..Default::default()
    })
}

/// What a step read: the fields it got and how.
#[derive(Debug, Default)]
pub struct Read {
    /// Every field received (in the bundled layout also those the step does not need).
    pub fields: BTreeMap<String, Vec<u8>>,
    /// Requests made.
    pub gets: u32,
    /// Requests the node-local store answered.
    pub local_gets: u32,
    /// Where each request was answered.
    pub sources: Vec<Source>,
    /// Time spent in the requests, in milliseconds.
    pub get_ms: f64,
}

impl Read {
    /// The state of `task`, or an error naming what is there.
    pub fn field(&self, chain: &str, task: &str) -> Result<&[u8], String> {
        self.fields.get(task).map(Vec::as_slice).ok_or_else(|| {
            format!(
                "chain {chain} has no state of task {task:?} (found: {:?}); run it first",
                self.fields.keys().collect::<Vec<_>>()
            )
        })
    }

    /// The read as JSON for the step's report line.
    pub fn report(&self) -> Value {
        json!({
            "get_ms": self.get_ms,
            "gets": self.gets,
            "local_gets": self.local_gets,
            "sources": self.sources,
            "source": self.sources.first(),
            "bundle_fields": self.fields.len(),
        })
    }
}

/// The options of a read that needs the state of `needed`.
/// - By default (`require`): the host asks every tier at once and also waits (bounded)
///   for copies already announced to this node, so a step whose inputs were put before it
///   started gets them wherever they are, without waiting where the policy placed them
///   elsewhere (`random`, `stateless`).
/// - With a deadline (`opts.wait_ms`, the `--wait-inputs-ms` flag; `wait_for`): the host
///   waits on this node until every input is there, also inputs whose put has not
///   happened yet: the fan-in join started before its inputs (ABI.md, "Waiting for
///   state"); at the deadline it looks at the other tiers once, and a join whose inputs
///   are still missing fails with `TimedOut`.
fn needing(needed: Vec<String>, opts: &GetOptions) -> GetOptions {
    if opts.wait_ms.is_some() {
        GetOptions {
            wait_for: needed,
            ..opts.clone()
        }
    } else {
        GetOptions {
            require: needed,
            ..opts.clone()
        }
    }
}

/// Reads the state of `tasks` (the predecessors this step needs) of `chain`.
pub fn read(
    layout: Layout,
    chain: &str,
    tasks: &[&str],
    opts: &GetOptions,
) -> Result<Read, String> {
    let mut out = Read::default();
    let chains: Vec<String> = match layout {
        Layout::Bundled => vec![chain.to_string()],
        Layout::Single => tasks.iter().map(|t| layout.chain_of(chain, t)).collect(),
    };
    for (i, c) in chains.iter().enumerate() {
        let needed: Vec<String> = match layout {
            Layout::Bundled => tasks.iter().map(|t| t.to_string()).collect(),
            Layout::Single => vec![tasks[i].to_string()],
        };
        let opts = needing(needed, opts);
        let (bundle, ms) = timed(|| skylark_guest::get_bundle_with(c, &opts));
        let bundle = bundle.map_err(|e| format!("fetching the state of chain {c}: {e}"))?;
        out.get_ms += ms;
        out.gets += 1;
        if bundle.source().tier == skylark_guest::Tier::Local {
            out.local_gets += 1;
        }
        out.sources.push(bundle.source().clone());
        for (task, bytes) in bundle.iter() {
            out.fields.insert(task.to_string(), bytes.to_vec());
        }
    }
    Ok(out)
}

/// Stores `value` as `task`'s state of `chain`; returns the put's time in milliseconds.
pub fn write(
    layout: Layout,
    chain: &str,
    task: &str,
    value: &[u8],
    opts: &PutOptions,
) -> Result<f64, String> {
    let c = layout.chain_of(chain, task);
    let (stored, ms) = timed(|| skylark_guest::put_with(&c, task, value, opts));
    stored.map_err(|e| format!("storing the state of task {task:?} of chain {c}: {e}"))?;
    Ok(ms)
}

/// Stores `value` MessagePack-encoded (as `skylark_guest::put_value` does) as `task`'s
/// state of `chain`; returns the put's time in milliseconds.
pub fn write_value<T: serde::Serialize>(
    layout: Layout,
    chain: &str,
    task: &str,
    value: &T,
    opts: &PutOptions,
) -> Result<f64, String> {
    let c = layout.chain_of(chain, task);
    let (stored, ms) = timed(|| skylark_guest::put_value_with(&c, task, value, opts));
    stored.map_err(|e| format!("storing the state of task {task:?} of chain {c}: {e}"))?;
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse;

    fn args(v: &[&str]) -> Args {
        parse(
            &["state", "policy"],
            v.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap()
    }

    #[test]
    fn layouts_and_chains() {
        assert_eq!(Layout::from_args(&args(&["c"])).unwrap(), Layout::Bundled);
        let single = Layout::from_args(&args(&["c", "--state", "single"])).unwrap();
        assert_eq!(single.chain_of("c", "detect"), "c.detect");
        assert_eq!(Layout::Bundled.chain_of("c", "detect"), "c");
        assert!(Layout::from_args(&args(&["c", "--state", "fused"])).is_err());
    }

    #[test]
    fn get_options_follow_the_policy() {
        let o = get_options(&args(&["c", "--policy", "stateless"])).unwrap();
        assert_eq!(o.policy, Some(skylark_guest::Policy::Stateless));
        assert!(get_options(&args(&["c", "--policy", "nearest"])).is_err());
        assert_eq!(get_options(&args(&["c"])).unwrap(), GetOptions::default());
    }

    #[test]
    fn missing_fields_are_named() {
        let r = Read::default();
        let e = r.field("c", "preprocess").unwrap_err();
        assert!(e.contains("preprocess"), "{e}");
    }
}
