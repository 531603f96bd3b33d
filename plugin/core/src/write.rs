//! The write path of a put, on the guest's thread: one request (one round trip) to
//! the node-local store that writes the fields with their versions (`fence`), refreshes
//! the TTL, records the propagation job in the outbox and reads the outbox length (a put
//! is refused, and writes nothing, while the outbox is at `SKYLARK_MAX_OUTBOX`; see
//! `outbox::GuardedPut`); then the job is handed to the background. A put of at most
//! `outbox::INLINE_MAX` bytes of values is one script called by digest (`EVALSHA`), which
//! writes the values too; a larger one is a transaction whose scripts go with their text
//! and whose values go from guest memory to the socket in one copy, never through Lua.
//! Policy `stateless` instead writes straight to the global store (the cloud-native
//! baseline).
//!
//! On every path a put may carry a condition (`if_version`, `if_absent`) and an
//! idempotency key (`fence::Guard`), checked by the same script that assigns the
//! versions, on the store that accepts the put: a refused put writes nothing, makes no
//! job and counts no `puts`; a repeat of an idempotent put is answered with the first
//! put's versions.

use crate::clock::now_ms;
use crate::context::Context;
use crate::error::CallError;
use crate::fence::{Condition, Guard, Verdict};
use crate::outbox::{self, Guarded, GuardedPut, Job};
use crate::stats::{self, Counter};
use crate::{fence, keys, resp};
use skylark_abi::wire::{Policy, PutOptions, MAX_DESTINATIONS};
use skylark_abi::{ids, Status};

/// Checks options that come from the guest.
pub fn check_options(opts: &PutOptions) -> Result<(), CallError> {
    if let Some(d) = &opts.destination {
        ids::validate(d.as_bytes()).map_err(|e| {
            CallError::new(Status::InvalidOptions, format!("destination {d:?} {e}"))
        })?;
    }
    if opts.destination.is_some() && !opts.destinations.is_empty() {
        return Err(CallError::new(
            Status::InvalidOptions,
            "destination and destinations are exclusive: name every successor's node in destinations",
        ));
    }
    if opts.destinations.len() > MAX_DESTINATIONS {
        return Err(CallError::new(
            Status::InvalidOptions,
            format!(
                "destinations names {} nodes; at most {MAX_DESTINATIONS}",
                opts.destinations.len()
            ),
        ));
    }
    for d in &opts.destinations {
        ids::validate(d.as_bytes()).map_err(|e| {
            CallError::new(Status::InvalidOptions, format!("destinations: {d:?} {e}"))
        })?;
    }
    if let Some(b) = opts.min_bandwidth_mbps {
        if !b.is_finite() || b < 0.0 {
            return Err(CallError::new(
                Status::InvalidOptions,
                format!("min_bandwidth_mbps {b} is not a non-negative number"),
            ));
        }
    }
    if opts.if_version.is_some() && opts.if_absent {
        return Err(CallError::new(
            Status::InvalidOptions,
            "if_version and if_absent exclude each other",
        ));
    }
    if let Some(k) = &opts.idempotency_key {
        ids::validate(k.as_bytes()).map_err(|e| {
            CallError::new(Status::InvalidOptions, format!("idempotency_key {k:?} {e}"))
        })?;
    }
    Ok(())
}

/// The guard of a put with (checked) options `opts` and `fields`.
fn guard(opts: &PutOptions, fields: &[(&str, &[u8])]) -> Guard {
    let condition = match (opts.if_version, opts.if_absent) {
        (Some(v), _) => Condition::Version(v),
        (None, true) => Condition::Absent,
        (None, false) => Condition::Always,
    };
    Guard {
        condition,
        idempotency: opts
            .idempotency_key
            .as_deref()
            .map(|k| (keys::idempotency_field(k), fence::digest(fields))),
    }
}

/// What a put did: the versions a `skylark_put_v2` reports, and whether it counts as
/// success.
#[derive(Debug, PartialEq)]
pub struct Written {
    /// In the order of the put's fields: the versions assigned; for a repeat of an
    /// idempotent put, those of the first put; for a failed condition, those the store
    /// holds now (0: none).
    pub versions: Vec<u64>,
    /// The `ConditionFailed` error of a refused conditional put; `None` otherwise.
    pub refused: Option<CallError>,
}

impl Written {
    /// The versions, or the refusal.
    pub fn into_result(self) -> Result<Vec<u64>, CallError> {
        match self.refused {
            None => Ok(self.versions),
            Some(e) => Err(e),
        }
    }
}

/// Turns the verdict of the guard that ran on `node`'s store into what the put reports,
/// counting it.
fn verdict(
    node: &str,
    chain: &str,
    fields: &[(&str, &[u8])],
    opts: &PutOptions,
    limits: &fence::Limits,
    v: Verdict,
) -> Result<Written, CallError> {
    match v {
        Verdict::Stored(versions) => Ok(Written {
            versions,
            refused: None,
        }),
        Verdict::Repeated(versions) => {
            stats::inc(Counter::IdempotentRepeats);
            Ok(Written {
                versions,
                refused: None,
            })
        }
        Verdict::ConditionFailed(versions) => {
            stats::inc(Counter::ConditionsFailed);
            let condition = match opts.if_version {
                Some(v) => format!("if_version {v}"),
                None => "if_absent".to_string(),
            };
            let held: Vec<String> = fields
                .iter()
                .zip(&versions)
                .take(4)
                .map(|((t, _), v)| format!("{t}={v}"))
                .collect();
            let more = if fields.len() > 4 { ", ..." } else { "" };
            let refused = CallError::new(
                Status::ConditionFailed,
                format!(
                    "chain {chain:?}: {condition} does not hold on node {node} (versions held: {}{more}); nothing written",
                    held.join(", ")
                ),
            );
            Ok(Written {
                versions,
                refused: Some(refused),
            })
        }
        Verdict::Conflict => Err(CallError::new(
            Status::IdempotencyConflict,
            format!(
                "chain {chain:?}: idempotency key {:?} was recorded on node {node} for other fields or bytes; nothing written",
                opts.idempotency_key.as_deref().unwrap_or("")
            ),
        )),
        Verdict::TooLarge { state, reserved } => {
            stats::inc(Counter::LimitRefusals);
            Err(CallError::new(
                Status::BundleTooLarge,
                format!(
                    "chain {chain:?}: the put would leave its bundle on node {node} with {state} bytes of state and {reserved} reserved (SKYLARK_MAX_BUNDLE_BYTES is {max}: state at most that, reserved at most {reserved_max}); nothing written",
                    max = limits.max_state,
                    reserved_max = crate::bundle_read::reserved_limit(limits.max_state)
                ),
            ))
        }
        Verdict::OverQuota { bytes, quota } => {
            stats::inc(Counter::LimitRefusals);
            Err(CallError::new(
                Status::QuotaExceeded,
                format!(
                    "chain {chain:?}: the put would take the namespace's bundles on node {node} to {bytes} bytes, over its quota of {quota} (SKYLARK_NAMESPACE_MAX_BYTES); nothing written"
                ),
            ))
        }
    }
}

/// Stores `fields` of `chain` and schedules their propagation.
pub fn put(
    ctx: &'static Context,
    chain: &str,
    fields: &[(&str, &[u8])],
    opts: &PutOptions,
) -> Result<Written, CallError> {
    check_options(opts)?;
    let guard = guard(opts, fields);
    let p = &ctx.cluster.config.propagation;
    let policy = opts.policy.unwrap_or(p.policy);
    if policy == Policy::Stateless {
        return put_global(ctx, chain, fields, opts, &guard);
    }
    let ns = &ctx.cluster.config.namespace;
    let key = keys::bundle(ns, chain);
    let Some(engine) = &ctx.engine else {
        // Propagation off: the fields, their versions and their TTL, one script.
        let limits = &ctx.cluster.limits;
        let cmds = fence::put_commands(&key, fields, ctx.cluster.config.ttl, &guard, None, limits);
        let cmds: Vec<&[resp::Arg<'_>]> = cmds.iter().map(Vec::as_slice).collect();
        let replies = ctx.cluster.local.query_transaction(&cmds)?;
        let v = fence::put_verdict(&replies).ok_or_else(|| {
            ctx.cluster
                .local
                .reply_error(format!("unexpected replies {replies:?} to a put"))
        })?;
        if matches!(v, Verdict::Stored(_)) {
            stats::inc(Counter::Puts);
        }
        return verdict(
            &ctx.cluster.config.node_name,
            chain,
            fields,
            opts,
            limits,
            v,
        );
    };
    let (first, more) = split_destinations(opts);
    let now = now_ms();
    let job = Job {
        id: outbox::new_id(now),
        chain: chain.to_string(),
        tasks: fields.iter().map(|(t, _)| t.to_string()).collect(),
        origin: ctx.cluster.config.node_name.clone(),
        policy,
        destination: first.cloned(),
        more_destinations: more,
        max_latency_ms: opts.max_latency_ms.unwrap_or(p.max_latency_ms),
        min_bandwidth_mbps: opts.min_bandwidth_mbps.unwrap_or(p.min_bandwidth_mbps),
        exec_ms: opts.exec_ms.unwrap_or(0),
        successor_in_ms: opts.successor_in_ms.unwrap_or(0),
        put_at_ms: now,
        cleanup: opts.cleanup,
        target: None,
        more_targets: Vec::new(),
        done: Vec::new(),
        exclude: Vec::new(),
        carried: Default::default(),
        landed: Default::default(),
        attempts: 0,
        merged: Vec::new(),
    };
    let json = job.to_json()?;
    // A queue slot, given back on every early return below (it is a guard).
    let slot = engine.reserve();
    // Our own job is ours for a lease; an overflowing one is due for the next sweep.
    let due = if slot.is_some() {
        now + p.lease.as_millis() as u64
    } else {
        now
    };
    let put = GuardedPut::new(
        ns,
        &key,
        fields,
        ctx.cluster.config.ttl,
        &job.id,
        &json,
        due,
        outbox::Bounds {
            jobs: p.max_outbox,
            bytes: p.max_outbox_bytes,
        },
        &guard,
        &ctx.cluster.limits,
    );
    let local = &ctx.cluster.local;
    let replies = if put.is_small() {
        // One script by digest: all or nothing even if the server lost the script.
        let (script, args) = put.inline();
        local.query_script(script, &args).map(|reply| vec![reply])
    } else {
        let [guard, values, undo] = put.commands();
        local.query_transaction(&[&guard, &values, &undo])
    };
    let outcome = replies.and_then(|replies| {
        outbox::guarded_reply(&replies).ok_or_else(|| {
            ctx.cluster
                .local
                .reply_error(format!("unexpected replies {replies:?} to a put"))
        })
    });
    let versions = match outcome? {
        Guarded::Stored(_, versions) => versions,
        Guarded::Refused(v) => {
            let node = &ctx.cluster.config.node_name;
            return verdict(node, chain, fields, opts, &ctx.cluster.limits, v);
        }
        Guarded::Full { jobs, bytes } => {
            stats::inc(Counter::Backlogged);
            return Err(CallError::new(
                Status::Backlogged,
                format!(
                    "the outbox of node {} holds {jobs} propagation jobs of {bytes} bytes, and this put's job of {} bytes does not fit (SKYLARK_MAX_OUTBOX is {}, SKYLARK_MAX_OUTBOX_BYTES {}): copies are far behind; chain {chain:?} was not stored, retry later",
                    ctx.cluster.config.node_name, json.len(), p.max_outbox, p.max_outbox_bytes
                ),
            ));
        }
    };
    stats::inc(Counter::Puts);
    stats::inc(Counter::Jobs);
    match slot {
        Some(slot) => engine.submit(job, slot),
        None => {
            stats::inc(Counter::QueueOverflow);
            engine.note_backlog();
        }
    }
    Ok(Written {
        versions,
        refused: None,
    })
}

/// The put's first destination (`destination`, or the first of `destinations`) and the
/// further ones of a fan-out, each named once, in the guest's order.
fn split_destinations(opts: &PutOptions) -> (Option<&String>, Vec<String>) {
    let Some((first, rest)) = opts.destinations.split_first() else {
        return (opts.destination.as_ref(), Vec::new());
    };
    let mut more: Vec<String> = Vec::with_capacity(rest.len());
    for d in rest {
        if d != first && !more.contains(d) {
            more.push(d.clone());
        }
    }
    (Some(first), more)
}

/// Policy `stateless`: the fields go to the global store only, synchronously, with the
/// global node as their placement; a condition or idempotency key is checked there.
fn put_global(
    ctx: &'static Context,
    chain: &str,
    fields: &[(&str, &[u8])],
    opts: &PutOptions,
    guard: &Guard,
) -> Result<Written, CallError> {
    let global = ctx.cluster.require_global()?;
    let ns = &ctx.cluster.config.namespace;
    let key = keys::bundle(ns, chain);
    // The bundle limit only: a quota counts the node-local store.
    let limits = fence::Limits::bundle_only(ctx.cluster.config.max_bundle_bytes);
    let cmds = fence::put_commands(
        &key,
        fields,
        ctx.cluster.config.ttl,
        guard,
        Some(global.name.as_str()),
        &limits,
    );
    let cmds: Vec<&[resp::Arg<'_>]> = cmds.iter().map(Vec::as_slice).collect();
    // Through the runtime with one deadline, and with SKYLARK_GLOBAL_MIN_REPLICAS
    // acknowledged only once replicas confirm it.
    let replies = global.store.write_transaction(&cmds)?;
    let v = fence::put_verdict(&replies).ok_or_else(|| {
        global
            .store
            .reply_error(format!("unexpected replies {replies:?} to a put"))
    })?;
    if matches!(v, Verdict::Stored(_)) {
        stats::inc(Counter::StatelessPuts);
    }
    verdict(&global.name, chain, fields, opts, &limits, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_options() {
        let bad = PutOptions {
            destination: Some("no such node!".into()),
            ..PutOptions::default()
        };
        assert_eq!(
            check_options(&bad).unwrap_err().status,
            Status::InvalidOptions
        );
        let bad = PutOptions {
            min_bandwidth_mbps: Some(f64::NAN),
            ..PutOptions::default()
        };
        assert_eq!(
            check_options(&bad).unwrap_err().status,
            Status::InvalidOptions
        );
        assert!(check_options(&PutOptions::default()).is_ok());
    }

    #[test]
    fn destinations_are_checked_and_split() {
        let names = |n: usize| (0..n).map(|i| format!("n{i}")).collect::<Vec<_>>();
        let both = PutOptions {
            destination: Some("a".into()),
            destinations: vec!["b".into()],
            ..PutOptions::default()
        };
        let too_many = PutOptions {
            destinations: names(MAX_DESTINATIONS + 1),
            ..PutOptions::default()
        };
        let bad_id = PutOptions {
            destinations: vec!["a".into(), "no such node!".into()],
            ..PutOptions::default()
        };
        for bad in [both, too_many, bad_id] {
            let e = check_options(&bad).unwrap_err();
            assert_eq!(e.status, Status::InvalidOptions, "{bad:?}");
            assert!(e.message.contains("destination"), "{}", e.message);
        }
        let most = PutOptions {
            destinations: names(MAX_DESTINATIONS),
            ..PutOptions::default()
        };
        assert!(check_options(&most).is_ok());

        // The first destination is the job's own, the rest its fan-out, each once.
        let fan = PutOptions {
            destinations: vec!["a".into(), "b".into(), "a".into(), "c".into(), "b".into()],
            ..PutOptions::default()
        };
        let (first, more) = split_destinations(&fan);
        assert_eq!(first.map(String::as_str), Some("a"));
        assert_eq!(more, ["b", "c"]);
        let one = PutOptions {
            destination: Some("d".into()),
            ..PutOptions::default()
        };
        assert_eq!(split_destinations(&one), (Some(&"d".to_string()), vec![]));
        assert_eq!(split_destinations(&PutOptions::default()), (None, vec![]));
    }

    #[test]
    fn conditions_exclude_each_other_and_keys_follow_the_id_rules() {
        let both = PutOptions {
            if_version: Some(3),
            if_absent: true,
            ..PutOptions::default()
        };
        let e = check_options(&both).unwrap_err();
        assert_eq!(e.status, Status::InvalidOptions);
        assert!(e.message.contains("exclude each other"), "{}", e.message);
        for bad in ["", "a:b", "with space", &"k".repeat(129)] {
            let o = PutOptions {
                idempotency_key: Some(bad.into()),
                ..PutOptions::default()
            };
            let e = check_options(&o).unwrap_err();
            assert_eq!(e.status, Status::InvalidOptions, "{bad:?}");
            assert!(e.message.starts_with("idempotency_key"), "{}", e.message);
        }
        for good in ["invocation-7", "a.b_c-D9", &"k".repeat(128)] {
            let o = PutOptions {
                idempotency_key: Some(good.into()),
                if_version: Some(0),
                ..PutOptions::default()
            };
            assert!(check_options(&o).is_ok(), "{good:?}");
        }
        let absent = PutOptions {
            if_absent: true,
            ..PutOptions::default()
        };
        assert!(check_options(&absent).is_ok());
    }

    #[test]
    fn options_make_the_guard() {
        let fields: [(&str, &[u8]); 1] = [("t", b"v")];
        assert!(guard(&PutOptions::default(), &fields).is_plain());
        let cas = PutOptions {
            if_version: Some(0),
            ..PutOptions::default()
        };
        assert_eq!(guard(&cas, &fields).condition, Condition::Version(0));
        let idem = PutOptions {
            if_absent: true,
            idempotency_key: Some("k1".into()),
            ..PutOptions::default()
        };
        let g = guard(&idem, &fields);
        assert_eq!(g.condition, Condition::Absent);
        assert_eq!(
            g.idempotency,
            Some(("@idem:k1".to_string(), fence::digest(&fields)))
        );
    }
}
