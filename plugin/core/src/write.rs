//! The write path of a put, on the guest's thread: one transaction (one round trip) on
//! the node-local store that writes the fields with their versions (`fence`), refreshes
//! the TTL, records the propagation job in the outbox and reads the outbox length (a put
//! is refused, and writes nothing, while the outbox is at `SKYLARK_MAX_OUTBOX`; see
//! `outbox::GuardedPut`); then the job is handed to the background. The values go from
//! guest memory to the socket in one copy and never through Lua. Policy `stateless` instead
//! writes straight to the global store (the cloud-native baseline).

use crate::clock::now_ms;
use crate::context::Context;
use crate::error::CallError;
use crate::outbox::{self, Guarded, GuardedPut, Job};
use crate::stats::{self, Counter};
use crate::store::{self, Request};
use crate::{fence, keys, resp};
use skylark_abi::wire::{Policy, PutOptions};
use skylark_abi::{ids, Status};

/// Checks options that come from the guest.
pub fn check_options(opts: &PutOptions) -> Result<(), CallError> {
    if let Some(d) = &opts.destination {
        ids::validate(d.as_bytes()).map_err(|e| {
            CallError::new(Status::InvalidOptions, format!("destination {d:?} {e}"))
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
    Ok(())
}

/// Stores `fields` of `chain` and schedules their propagation.
pub fn put(
    ctx: &'static Context,
    chain: &str,
    fields: &[(&str, &[u8])],
    opts: &PutOptions,
) -> Result<(), CallError> {
    check_options(opts)?;
    let p = &ctx.cluster.config.propagation;
    let policy = opts.policy.unwrap_or(p.policy);
    if policy == Policy::Stateless {
        return put_global(ctx, chain, fields);
    }
    let ns = &ctx.cluster.config.namespace;
    let key = keys::bundle(ns, chain);
    let Some(engine) = &ctx.engine else {
        // Propagation off: the fields, their versions and their TTL, one script.
        let [versions, values] = fence::put_commands(&key, fields, ctx.cluster.config.ttl);
        ctx.cluster.local.query_transaction(&[&versions, &values])?;
        stats::inc(Counter::Puts);
        return Ok(());
    };
    let now = now_ms();
    let job = Job {
        id: outbox::new_id(now),
        chain: chain.to_string(),
        tasks: fields.iter().map(|(t, _)| t.to_string()).collect(),
        origin: ctx.cluster.config.node_name.clone(),
        policy,
        destination: opts.destination.clone(),
        max_latency_ms: opts.max_latency_ms.unwrap_or(p.max_latency_ms),
        min_bandwidth_mbps: opts.min_bandwidth_mbps.unwrap_or(p.min_bandwidth_mbps),
        exec_ms: opts.exec_ms.unwrap_or(0),
        successor_in_ms: opts.successor_in_ms.unwrap_or(0),
        put_at_ms: now,
        cleanup: opts.cleanup,
        target: None,
        done: Vec::new(),
        exclude: Vec::new(),
        carried: Default::default(),
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
        p.max_outbox,
    );
    let [guard, values, undo] = put.commands();
    let outcome = ctx
        .cluster
        .local
        .query_transaction(&[&guard, &values, &undo])
        .and_then(|replies| {
            outbox::guarded_reply(&replies).ok_or_else(|| {
                ctx.cluster
                    .local
                    .reply_error(format!("unexpected replies {replies:?} to a put"))
            })
        });
    if let Guarded::Full(waiting) = outcome? {
        stats::inc(Counter::Backlogged);
        return Err(CallError::new(
            Status::Backlogged,
            format!(
                "the outbox of node {} holds {waiting} propagation jobs (SKYLARK_MAX_OUTBOX is {}): copies are far behind; chain {chain:?} was not stored, retry later",
                ctx.cluster.config.node_name, p.max_outbox
            ),
        ));
    }
    stats::inc(Counter::Puts);
    stats::inc(Counter::Jobs);
    match slot {
        Some(slot) => engine.submit(job, slot),
        None => {
            stats::inc(Counter::QueueOverflow);
            engine.note_backlog();
        }
    }
    Ok(())
}

/// Policy `stateless`: the fields go to the global store only, synchronously.
fn put_global(
    ctx: &'static Context,
    chain: &str,
    fields: &[(&str, &[u8])],
) -> Result<(), CallError> {
    let global = ctx.cluster.require_global()?;
    let ns = &ctx.cluster.config.namespace;
    let key = keys::bundle(ns, chain);
    let record: Vec<String> = fields
        .iter()
        .map(|(t, _)| keys::placement_field(t))
        .collect();
    let mut pipe = redis::pipe();
    pipe.atomic();
    for c in fence::put_commands(&key, fields, ctx.cluster.config.ttl) {
        pipe.add_command(resp::cmd(&c)).ignore();
    }
    store::write_hash(
        &mut pipe,
        &key,
        record.iter().map(|f| (f.as_str(), global.name.as_bytes())),
        ctx.cluster.config.ttl,
    );
    // With SKYLARK_GLOBAL_MIN_REPLICAS, acknowledged only once replicas confirm it.
    global.store.write(&Request::Pipe(pipe))?;
    stats::inc(Counter::StatelessPuts);
    Ok(())
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
}
