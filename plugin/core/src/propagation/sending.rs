//! Sending records: a job's copies to elected nodes, recorded on this node's bundle
//! (`keys::SENDING_PREFIX`) as soon as the job has elected them, before it reads the
//! bundle (the election needs only its sizes), and removed when the elected copies have
//! ended (before the global copy, which no reader on a target waits for) or the attempt
//! has. A reader on the target that probes this node before the copy's announcement has landed
//! there (it lands after the bundle is read, a connection and a round trip over the
//! route; a fresh consumer probes well before that) learns from them that the state is
//! on its way, and waits for it instead of pulling the same bytes over the same links
//! (`fetch`, issue 13: at 20 MB every consumer pulled beside its copy). While the elected
//! copies run their records are renewed ([`Sending::while_copying`]): a copy slower than
//! expected (its link shared with another copy) is still on its way when its first
//! deadline passes, and a reader that gave up on it then pulled beside it.

use super::copy::live_until;
use crate::bundle_read::Sizes;
use crate::clock::now_ms;
use crate::cluster::Cluster;
use crate::keys;
use crate::outbox::Job;
use crate::script::Script;
use crate::skylog;
use crate::store::Request;
use crate::topology::Schedule;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// KEYS: bundle. ARGV: now (unix ms), then field, value, field, value... Sets the fields
/// only on a bundle that exists, so that a record never recreates a bundle deleted
/// meanwhile (it would have no TTL; `PTTL` answers -2 for a missing key, and the
/// documented node user may not call `EXISTS`), and first removes the records whose time
/// has passed (left by a process that ended during its copy).
pub const RECORD: &str = r#"
local key = KEYS[1]
if redis.call('PTTL', key) == -2 then
  return 0
end
local now = tonumber(ARGV[1])
for _, f in ipairs(redis.call('HKEYS', key)) do
  if string.sub(f, 1, 9) == '@sending:' then
    local until_ms = tonumber(redis.call('HGET', key, f))
    if until_ms == nil or until_ms <= now then
      redis.call('HDEL', key, f)
    end
  end
end
redis.call('HSET', key, unpack(ARGV, 2))
return 1
"#;

static RECORD_SCRIPT: Script = Script::new(RECORD);

/// The records of a round's copies to the elected nodes among `targets` (not the global
/// store), live as long as their announcements will be: the expected transfer of all of
/// the elected copies (each at most the bundle's state, sent together) over the current
/// route, plus `SKYLARK_INCOMING_WAIT_MS`. Each is named like the copy's announcement
/// with every state field of the bundle (a copy brings the job's own and whatever its
/// target lacks, e.g. a predecessor's state that a later consumer reads: `detect2` reads
/// `preprocess`'s state from `detect`'s copy), unnamed when there are more than an
/// announcement names. None without announcements.
pub(super) fn records(
    ctx: &Cluster,
    job: &Job,
    targets: &[String],
    global: Option<&str>,
    topo: Option<&Schedule>,
    bundle: &Sizes,
) -> Vec<(String, u64)> {
    if ctx.config.propagation.incoming_wait.is_zero() {
        return Vec::new();
    }
    let elected: Vec<&String> = targets
        .iter()
        .filter(|t| Some(t.as_str()) != global)
        .collect();
    let together =
        usize::try_from(bundle.state.saturating_mul(elected.len() as u64)).unwrap_or(usize::MAX);
    let tasks: Vec<&str> = bundle.fields.iter().flatten().map(String::as_str).collect();
    let announced = keys::incoming_field(&job.id, &tasks);
    elected
        .into_iter()
        .map(|node| {
            (
                keys::sending_field(node, &announced),
                live_until(ctx, topo, node, together),
            )
        })
        .collect()
}

/// An attempt's sending records on its own bundle, from when its targets are elected
/// until its elected copies have ended.
pub(super) struct Sending<'a> {
    ctx: &'a Cluster,
    key: String,
    job: String,
    records: Vec<(String, u64)>,
    cleared: AtomicBool,
}

impl<'a> Sending<'a> {
    /// Writes `records` ((field, unix ms the copy is expected by), [`records`]) to the
    /// local bundle `key`.
    pub(super) async fn write(
        ctx: &'a Cluster,
        key: String,
        job: &str,
        records: Vec<(String, u64)>,
    ) -> Sending<'a> {
        record(ctx, &key, job, &records).await;
        Sending {
            ctx,
            key,
            job: job.to_string(),
            records,
            cleared: AtomicBool::new(false),
        }
    }

    /// Runs `copies` (the elected copies), keeping the records live meanwhile ([`renew`]).
    pub(super) async fn while_copying<T>(&self, copies: impl Future<Output = T>) -> T {
        tokio::select! {
            t = copies => t,
            never = renew(self.ctx, &self.key, &self.job, &self.records) => match never {},
        }
    }

    /// Removes the records (once: the round does when its elected copies have ended, the
    /// attempt again in case it ended before its round).
    pub(super) async fn clear(&self) {
        if !self.cleared.swap(true, Ordering::Relaxed) {
            clear(self.ctx, &self.key, &self.job, &self.records).await;
        }
    }
}

/// Writes `records` ((field, unix ms the copy is expected by)) to the local bundle `key`.
/// A failure costs only readers' knowledge of the copies (logged).
async fn record(ctx: &Cluster, key: &str, job: &str, records: &[(String, u64)]) {
    if records.is_empty() {
        return;
    }
    let mut cmd = RECORD_SCRIPT.cmd();
    cmd.arg(1).arg(key).arg(now_ms());
    for (field, until) in records {
        cmd.arg(field).arg(until);
    }
    if let Err(e) = ctx.local.query_async(&Request::Cmd(cmd)).await {
        skylog!(Info, "job {job}: recording its copies as on their way: {e}");
    }
}

/// Keeps `records` live while the elected copies run (never returns; dropped when they
/// have ended): whenever a record is within half of
/// `SKYLARK_INCOMING_WAIT_MS` (at least [`MIN_RENEWAL`]) of its time, all of them are
/// written again, live for that much more. A copy thus counts as on its way for as long as its
/// sender still sends it (each copy ends at its own deadline, `copy::copy_deadline`), not
/// only for as long as its route's nominal bandwidth would take; a reader bounds its own
/// wait (`fetch`).
async fn renew(ctx: &Cluster, key: &str, job: &str, records: &[(String, u64)]) -> Infallible {
    let live = ctx.config.propagation.incoming_wait.max(MIN_RENEWAL);
    let Some(mut until) = records.iter().map(|(_, until)| *until).min() else {
        return std::future::pending().await;
    };
    let mut records = records.to_vec();
    loop {
        let at = renewal_at(until, live);
        tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await;
        until = until.max(now_ms() + live.as_millis() as u64);
        for (_, u) in &mut records {
            *u = (*u).max(until);
        }
        record(ctx, key, job, &records).await;
    }
}

/// The least time a renewal keeps a record live: with a tiny `SKYLARK_INCOMING_WAIT_MS` a
/// long copy's records are still written at most ten times a second.
const MIN_RENEWAL: Duration = Duration::from_millis(200);

/// When (unix ms) a record live until `until` is renewed: half of `live` before then.
fn renewal_at(until: u64, live: Duration) -> u64 {
    until.saturating_sub(live.as_millis() as u64 / 2)
}

/// Removes the records of a round whose elected copies have ended (made or failed).
async fn clear(ctx: &Cluster, key: &str, job: &str, records: &[(String, u64)]) {
    if records.is_empty() {
        return;
    }
    let mut cmd = redis::cmd("HDEL");
    cmd.arg(key);
    for (field, _) in records {
        cmd.arg(field);
    }
    if let Err(e) = ctx.local.query_async(&Request::Cmd(cmd)).await {
        skylog!(Info, "job {job}: removing its sending records: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_renewed_half_its_renewal_before_its_time() {
        assert_eq!(renewal_at(10_000, Duration::from_millis(3000)), 8_500);
        assert_eq!(renewal_at(100, Duration::from_millis(3000)), 0);
    }
}
