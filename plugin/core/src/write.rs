//! The write path of a put, on the guest's thread: one atomic round trip to the
//! node-local store that writes the fields, refreshes the TTL and records the propagation
//! job in the outbox; then the job is handed to the background. Policy `stateless` instead
//! writes straight to the global store (the cloud-native baseline).

use crate::context::Context;
use crate::error::CallError;
use crate::events::now_ms;
use crate::outbox::{self, Job};
use crate::stats::{self, Counter};
use crate::store::{self, Request};
use crate::{keys, propagate};
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
    let p = &ctx.config.propagation;
    let policy = opts.policy.unwrap_or(p.policy);
    if policy == Policy::Stateless {
        return put_global(ctx, chain, fields);
    }
    let ns = &ctx.config.namespace;
    let mut pipe = redis::pipe();
    pipe.atomic();
    store::write_hash(
        &mut pipe,
        &keys::bundle(ns, chain),
        fields.iter().copied(),
        ctx.config.ttl,
    );
    let mut job = None;
    let mut reserved = false;
    if let Some(engine) = &ctx.engine {
        let now = now_ms();
        let j = Job {
            id: outbox::new_id(now),
            chain: chain.to_string(),
            tasks: fields.iter().map(|(t, _)| t.to_string()).collect(),
            origin: ctx.config.node_name.clone(),
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
            attempts: 0,
            merged: Vec::new(),
        };
        reserved = engine.reserve();
        // Our own job is ours for a lease; an overflowing one is due for the next sweep.
        let due = if reserved {
            now + p.lease.as_millis() as u64
        } else {
            now
        };
        let json = match j.to_json() {
            Ok(json) => json,
            Err(e) => {
                if reserved {
                    engine.release_slot();
                }
                return Err(e);
            }
        };
        outbox::record(&mut pipe, ns, &j.id, &json, due);
        job = Some(j);
    }
    if let Err(e) = ctx.local.query(&Request::Pipe(pipe)) {
        if let (true, Some(engine)) = (reserved, &ctx.engine) {
            engine.release_slot();
        }
        return Err(e);
    }
    stats::inc(Counter::Puts);
    if let (Some(job), Some(engine)) = (job, &ctx.engine) {
        stats::inc(Counter::Jobs);
        if reserved {
            engine.submit(ctx, job);
        } else {
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
    let global = propagate::require_global(ctx)?;
    let ns = &ctx.config.namespace;
    let record: Vec<String> = fields
        .iter()
        .map(|(t, _)| keys::placement_field(t))
        .collect();
    let all = fields
        .iter()
        .copied()
        .chain(record.iter().map(|f| (f.as_str(), global.name.as_bytes())));
    let mut pipe = redis::pipe();
    pipe.atomic();
    store::write_hash(&mut pipe, &keys::bundle(ns, chain), all, ctx.config.ttl);
    global.store.query(&Request::Pipe(pipe))?;
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
