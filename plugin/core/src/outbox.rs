//! The outbox: propagation jobs persisted in the node-local Redis so that no put's copies
//! are lost when the process that made them exits or dies.
//!
//! A job is recorded in the same atomic step as the put's data (one transaction whose
//! guard script also refuses the put while the outbox holds `SKYLARK_MAX_OUTBOX` jobs,
//! [`GuardedPut`]). Jobs live in a hash
//! (`<ns>:outbox:jobs`, id to JSON) and a sorted set (`<ns>:outbox`, id to the unix ms
//! from which any plugin instance may claim it). The process that made a job holds it
//! for a lease; a claim moves the due time forward by another lease, atomically (Lua), so
//! two instances do not work on the same job at once. A job is removed when done.

use crate::error::CallError;
use crate::keys;
use crate::resp::Arg;
use crate::script::Script;
use crate::store::{Request, Store};
use serde::{Deserialize, Serialize};
use skylark_abi::wire::Policy;
use std::sync::atomic::{AtomicU64, Ordering};

/// One put's pending propagation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub chain: String,
    /// The task ids the put wrote.
    pub tasks: Vec<String>,
    /// The node that made the put.
    pub origin: String,
    pub policy: Policy,
    /// Where the successor runs: the put's `destination`, or the first of its
    /// `destinations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The further destinations of a fan-out (put option `destinations` after the first),
    /// each named once. Absent in jobs of older plugins and of puts with one destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_destinations: Vec<String>,
    pub max_latency_ms: u64,
    pub min_bandwidth_mbps: f64,
    pub exec_ms: u64,
    pub successor_in_ms: u64,
    pub put_at_ms: u64,
    #[serde(default)]
    pub cleanup: bool,
    /// The node elected for the copy; `None` until (re-)elected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The nodes elected for `more_destinations`, in their order (a node may appear more
    /// than once, and may be `target`, this node or the global store: each distinct node
    /// gets one copy). Elected after `target`; empty until then, and again after a
    /// re-targeting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_targets: Vec<String>,
    /// Nodes that already hold this job's copy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<String>,
    /// Nodes that stayed unreachable: never elected again for this job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// The versions of the bundle's fields (task id to version) in the copy the elected
    /// target acknowledged: what the placement record may claim that node holds (a later
    /// round re-reads the bundle, which may hold newer versions by then). Empty until the
    /// target's copy is made.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub carried: std::collections::BTreeMap<String, u64>,
    /// When each copy of `done` was acknowledged, in ms after the put (for the
    /// `propagated` event; absent in jobs of older plugins).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub landed: std::collections::BTreeMap<String, u64>,
    /// Failed copy attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Ids of later jobs of the same chain merged into this one (in this process only:
    /// their own outbox records stay until this job is done).
    #[serde(skip)]
    pub merged: Vec<String>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A job id unique across processes sharing a node's Redis: time, process id, a
/// per-process sequence number and the clock's sub-millisecond noise.
pub fn new_id(now_ms: u64) -> String {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let noise = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let pid = *PID.get_or_init(std::process::id);
    format!("{now_ms:x}-{pid:x}-{seq:x}-{noise:x}")
}

impl Job {
    /// The newest version of this job's own tasks in `versions` (a snapshot of the bundle):
    /// the put a copy to the elected node claims it for, and the bound of a clean-up.
    pub fn newest_put(&self, versions: &crate::keys::Versions) -> u64 {
        self.tasks
            .iter()
            .map(|t| crate::keys::version(versions, t.as_bytes()))
            .max()
            .unwrap_or(0)
    }

    /// This job's outbox id and those of the jobs merged into it.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.id.as_str()).chain(self.merged.iter().map(String::as_str))
    }

    /// Merges a later job of the same chain (not yet started) into this one: its tasks
    /// join this job's, its options (the newer put's view of where the successor runs)
    /// replace this job's; the earlier put time stays, for latency accounting.
    ///
    /// This job may be one resumed from the outbox with copies already made (`done`).
    /// Those copies predate the later put and lack its state, so they no longer count:
    /// every target gets the merged copy. (Keeping them once let a later put's state
    /// skip the global store while its job left the outbox as done.)
    pub fn absorb(&mut self, later: Job) {
        self.done.clear();
        self.carried.clear();
        for t in later.tasks {
            if !self.tasks.contains(&t) {
                self.tasks.push(t);
            }
        }
        self.merged.push(later.id);
        self.merged.extend(later.merged);
        self.policy = later.policy;
        self.destination = later.destination;
        if self.more_destinations != later.more_destinations {
            self.more_destinations = later.more_destinations;
            self.more_targets.clear();
        }
        self.max_latency_ms = later.max_latency_ms;
        self.min_bandwidth_mbps = later.min_bandwidth_mbps;
        self.exec_ms = later.exec_ms;
        self.successor_in_ms = later.successor_in_ms;
        self.cleanup |= later.cleanup;
    }

    /// The job as stored in the outbox.
    pub fn to_json(&self) -> Result<String, CallError> {
        serde_json::to_string(self).map_err(|e| {
            CallError::new(
                skylark_abi::Status::Internal,
                format!("encoding outbox job: {e}"),
            )
        })
    }
}

/// Stores (or replaces) a job and keeps the outbox's byte count (`keys::outbox_bytes`):
/// KEYS: jobs, outbox, bytes. ARGV: job id, job JSON, due time, TTL seconds (0 = none),
/// which the count gets like the put's outbox keys (it may then outlive them a little:
/// a put reads it only while the outbox holds jobs). Only commands of the documented
/// ACL.
pub(crate) const RECORD: &str = r#"
local old = redis.call('HSTRLEN', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'n', #ARGV[2] - old)
if tonumber(ARGV[4]) > 0 then
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
"#;

/// Removes jobs and their bytes from the count: KEYS: jobs, outbox, bytes. ARGV: the
/// job ids (one script for a job and those merged into it).
pub(crate) const REMOVE: &str = r#"
local gone = 0
for _, id in ipairs(ARGV) do
  local n = redis.call('HSTRLEN', KEYS[1], id)
  if redis.call('HDEL', KEYS[1], id) == 1 then
    gone = gone + n
  end
  redis.call('ZREM', KEYS[2], id)
end
if gone > 0 and redis.call('HINCRBY', KEYS[3], 'n', -gone) <= 0 then
  redis.call('DEL', KEYS[3])
end
"#;

/// Appends `script` on the outbox of `ns` to `pipe`, whose next `arg`s are the script's.
fn outbox_script<'p>(
    pipe: &'p mut redis::Pipeline,
    script: &str,
    ns: &str,
) -> &'p mut redis::Pipeline {
    pipe.cmd("EVAL")
        .arg(script)
        .arg(3)
        .arg(keys::outbox_jobs(ns))
        .arg(keys::outbox(ns))
        .arg(keys::outbox_bytes(ns))
}

/// Appends the command that stores `job`, claimable from `due_ms`, to `pipe` (`ttl`: the
/// plugin's `SKYLARK_TTL_SECS`).
pub fn record(
    pipe: &mut redis::Pipeline,
    ns: &str,
    job_id: &str,
    json: &str,
    due_ms: u64,
    ttl: Option<std::time::Duration>,
) {
    outbox_script(pipe, RECORD, ns)
        .arg(job_id)
        .arg(json)
        .arg(due_ms)
        .arg(ttl.map(|t| t.as_secs().max(1)).unwrap_or(0))
        .ignore();
}

/// The text of the guard of a put with its job: the first command of the put's transaction
/// (`MULTI`; this script; `HSET` of the values; `fence::UNDO_REFUSED`; `EXEC`), and the
/// body of the put as one script ([`inline_put`]). First the put's own guard
/// (`fence::guard`: an idempotency key already recorded, a condition that does not hold),
/// then the outbox: while it has room the script assigns the fields' versions (`fence`),
/// records the idempotency key, refreshes the TTL, records the job and publishes the
/// tasks' arrival (`arrivals`). A refused put (by its guard, because the outbox is full,
/// or by its limits) records nothing, publishes nothing, marks the bundle (`@refused`) and
/// keeps the fields' current values (`@refused:<task>`), which the values' `HSET` is about
/// to overwrite, for `UNDO_REFUSED` to put back: the transaction as a whole then writes
/// nothing. The values themselves never pass through this text. The outbox is full when
/// it holds the most jobs, or when this job would take its jobs' bytes beyond the most
/// bytes (a count kept by this script, [`RECORD`] and [`REMOVE`], forgotten whenever the
/// outbox is empty). Then the put's limits (`fence::limits`: the bundle limit, and with
/// `fence::quota` and `fence::account` the namespace's quota). KEYS: bundle, jobs, outbox,
/// outbox bytes, then, with a quota, the usage hash and sorted set. ARGV: max outbox
/// length, TTL seconds (0 = none), job id, job JSON, due time, now (µs), the four guard
/// arguments, the outbox's most bytes, the four limit arguments with the values' lengths,
/// then the task ids. Returns `{1, length after, versions...}` when stored, `{0, length,
/// bytes}` when the outbox is full, or the refusal of the guard or the limits
/// (`fence::refusal`).
macro_rules! guarded_put {
    ($($quota:expr, $account:expr)?) => {
        concat!(
            crate::arrivals::lua!(),
            "local key, now, g, l, u = KEYS[1], tonumber(ARGV[6]), 7, 12, 5\n",
            crate::fence::first_task!(),
            crate::fence::guard!(),
            r#"
local waiting, queued = redis.call('ZCARD', KEYS[3]), 0
if waiting > 0 then
  queued = tonumber(redis.call('HGET', KEYS[4], 'n')) or 0
end
if waiting >= tonumber(ARGV[1]) or queued + #ARGV[4] > tonumber(ARGV[11]) then
  refuse()
  return {0, waiting, queued}
end
local placed = ''
"#,
            crate::fence::limits!(),
            $($quota,)?
            crate::fence::assign_versions!(),
            crate::fence::record_idempotency!(),
            $($account,)?
            r#"
if tonumber(ARGV[2]) > 0 then
  redis.call('EXPIRE', key, ARGV[2])
end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[3])
redis.call('HSET', KEYS[4], 'n', queued + #ARGV[4])
-- The outbox outlives every bundle this node's puts wrote, then expires (issue 16 point 3).
if tonumber(ARGV[2]) > 0 then
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[3], ARGV[2])
  redis.call('EXPIRE', KEYS[4], ARGV[2])
end
local out = {1, waiting + 1}
for _, v in ipairs(versions) do
  out[#out + 1] = v
end
-- Published now, delivered after the transaction (which writes the values) is done.
arrived_args(key, first)
return out
"#
        )
    };
}

/// The guarded put (see `guarded_put`), without a quota.
pub(crate) const GUARDED_PUT: &str = guarded_put!();

/// [`GUARDED_PUT`] with a quota (`fence::quota`; KEYS 5 and 6: the usage hash and sorted
/// set).
pub(crate) const GUARDED_PUT_QUOTA: &str =
    guarded_put!(crate::fence::quota!(), crate::fence::account!());

/// A small put with its job as one script: `guarded_put` (the text given) with the values
/// after the task ids (ARGV: those of [`GUARDED_PUT`], then one value per task id, so
/// that with 11 fixed arguments and 4 limit arguments `n = (#ARGV - 15) / 3`), which it
/// writes itself (`HSET`) once the guard, the outbox and the limits let the put through;
/// a refused put only has its marks removed. One command is all or nothing whether or not
/// the server's script cache holds it (`NOSCRIPT` runs nothing), which a transaction
/// calling scripts by digest is not. The values pass through Lua, which costs in
/// proportion to their size: only for puts of at most [`INLINE_MAX`] bytes of values
/// (`write`). Same reply as [`GUARDED_PUT`].
macro_rules! inline_put {
    ($body:expr) => {
        concat!(
            r#"
local A = ARGV
local n = (#A - 15) / 3
local ARGV = {}
for i = 1, 15 + 2 * n do
  ARGV[i] = A[i]
end
local function put()
"#,
            $body,
            r#"
end
local key, out = KEYS[1], put()
local args = {}
if out[1] == 1 then
  for i = 1, n do
    args[2 * i - 1], args[2 * i] = A[15 + n + i], A[15 + 2 * n + i]
  end
  for j = 1, #args, 4000 do
    redis.call('HSET', key, unpack(args, j, math.min(j + 3999, #args)))
  end
else
  args[1] = '@refused'
  for i = 1, n do
    args[i + 1] = '@refused:' .. A[15 + n + i]
  end
  for j = 1, #args, 4000 do
    redis.call('HDEL', key, unpack(args, j, math.min(j + 3999, #args)))
  end
end
return out
"#
        )
    };
}

/// [`GUARDED_PUT`] as one script, called by digest (`EVALSHA`; see `inline_put`).
pub(crate) static GUARDED_PUT_INLINE: Script = Script::new(inline_put!(guarded_put!()));

/// [`GUARDED_PUT_QUOTA`] as one script, called by digest (`EVALSHA`; see `inline_put`).
pub(crate) static GUARDED_PUT_QUOTA_INLINE: Script = Script::new(inline_put!(guarded_put!(
    crate::fence::quota!(),
    crate::fence::account!()
)));

/// The most bytes of values a put may carry to be written by [`GUARDED_PUT_INLINE`] (or
/// [`GUARDED_PUT_QUOTA_INLINE`]: through Lua, one command by digest); a larger one is a
/// transaction with the values in a plain `HSET` ([`GuardedPut::commands`]). Where the
/// two cost the same: measured with `put-request-bench --size` (BENCHMARKS.md section 1),
/// the script was ahead at 8 KiB and behind at 16 KiB.
pub const INLINE_MAX: usize = 8 * 1024;

/// What a guarded put found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guarded {
    /// Stored; the outbox now holds this many jobs; the fields got these versions.
    Stored(u64, Vec<u64>),
    /// Not stored: the outbox holds this many jobs, of this many bytes, and this job
    /// would take it beyond one of its bounds.
    Full { jobs: u64, bytes: u64 },
    /// Not stored, no job: the put's own guard refused or answered it
    /// (`ConditionFailed`, `Repeated`, `Conflict`; never `Stored`).
    Refused(crate::fence::Verdict),
}

/// How much the outbox of a namespace may hold before puts are refused
/// (`SKYLARK_MAX_OUTBOX`, `SKYLARK_MAX_OUTBOX_BYTES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub jobs: u64,
    pub bytes: u64,
}

/// One transaction that writes `fields` of `bundle` with fresh versions (refreshing its
/// TTL) and records job `job_id` due at `due_ms`, unless the outbox of namespace `ns`
/// is at its bounds, the put is over its limits or its guard refuses it: then it writes
/// nothing (see [`GUARDED_PUT`]).
pub struct GuardedPut<'a> {
    pub bundle: &'a str,
    /// The jobs hash, the outbox and its byte count.
    pub keys: [String; 3],
    pub fields: &'a [(&'a str, &'a [u8])],
    pub ttl: Option<std::time::Duration>,
    pub job_id: &'a str,
    pub json: &'a str,
    pub due_ms: u64,
    pub bounds: Bounds,
    /// The put's condition and idempotency key.
    pub guard: &'a crate::fence::Guard,
    /// The bundle limit and the namespace's quota.
    pub limits: &'a crate::fence::Limits,
}

impl<'a> GuardedPut<'a> {
    /// The put of `fields` to `bundle` in namespace `ns` with job `job_id` (`json`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ns: &str,
        bundle: &'a str,
        fields: &'a [(&'a str, &'a [u8])],
        ttl: Option<std::time::Duration>,
        job_id: &'a str,
        json: &'a str,
        due_ms: u64,
        bounds: Bounds,
        guard: &'a crate::fence::Guard,
        limits: &'a crate::fence::Limits,
    ) -> GuardedPut<'a> {
        GuardedPut {
            bundle,
            keys: [
                keys::outbox_jobs(ns),
                keys::outbox(ns),
                keys::outbox_bytes(ns),
            ],
            fields,
            ttl,
            job_id,
            json,
            due_ms,
            bounds,
            guard,
            limits,
        }
    }

    /// Whether the values are small enough for one script ([`GuardedPut::inline`]).
    pub fn is_small(&self) -> bool {
        self.fields.iter().map(|(_, v)| v.len()).sum::<usize>() <= INLINE_MAX
    }

    /// The script and its arguments (for `Store::query_script`) of the put as one
    /// command, [`GUARDED_PUT_INLINE`] (with a quota [`GUARDED_PUT_QUOTA_INLINE`]),
    /// borrowing the values; for a put [`GuardedPut::is_small`].
    pub fn inline(&self) -> (&'static Script, Vec<Arg<'_>>) {
        let mut args = Vec::with_capacity(22 + 3 * self.fields.len());
        args.push(Arg::Int(4 + self.limits.key_count()));
        self.guard_args(&mut args);
        args.extend(self.fields.iter().map(|(_, value)| Arg::from(*value)));
        let script = if self.limits.quota.is_some() {
            &GUARDED_PUT_QUOTA_INLINE
        } else {
            &GUARDED_PUT_INLINE
        };
        (script, args)
    }

    /// The transaction's commands (for `Store::query_transaction`), borrowing the
    /// values: [`GUARDED_PUT`] (with a quota [`GUARDED_PUT_QUOTA`]), the values' `HSET`,
    /// `fence::UNDO_REFUSED`. Scripts go with their text: in a transaction a script
    /// missing from the server's cache would fail alone and leave the values' `HSET`
    /// unguarded.
    pub fn commands(&self) -> [Vec<Arg<'_>>; 3] {
        let mut guard = Vec::with_capacity(24 + 2 * self.fields.len());
        let script = if self.limits.quota.is_some() {
            GUARDED_PUT_QUOTA
        } else {
            GUARDED_PUT
        };
        guard.extend([
            "EVAL".into(),
            script.into(),
            Arg::Int(4 + self.limits.key_count()),
        ]);
        self.guard_args(&mut guard);
        [
            guard,
            crate::fence::values(self.bundle, self.fields),
            crate::fence::undo(self.bundle, self.fields),
        ]
    }

    /// The keys and arguments of [`GUARDED_PUT`] after the key count.
    fn guard_args<'s>(&'s self, out: &mut Vec<Arg<'s>>) {
        out.push(self.bundle.into());
        out.extend(self.keys.iter().map(|k| Arg::from(k.as_str())));
        out.extend(self.limits.keys());
        out.extend([
            Arg::Int(self.bounds.jobs),
            Arg::Int(self.ttl.map(|t| t.as_secs().max(1)).unwrap_or(0)),
            self.job_id.into(),
            self.json.into(),
            Arg::Int(self.due_ms),
            Arg::Int(crate::fence::now_us()),
        ]);
        out.extend(self.guard.args());
        out.push(Arg::Int(self.bounds.bytes));
        out.extend(self.limits.args(self.fields, self.ttl));
        out.extend(self.fields.iter().map(|(task, _)| Arg::from(*task)));
    }
}

/// Decodes the replies of a [`GuardedPut`]'s transaction (the guard's comes first).
pub fn guarded_reply(replies: &[redis::Value]) -> Option<Guarded> {
    let redis::Value::Array(items) = replies.first()? else {
        return None;
    };
    let int = |v: &redis::Value| match v {
        redis::Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    };
    match (items.first().and_then(int), items.get(1).and_then(int)) {
        (Some(1), Some(n)) => {
            let versions: Option<Vec<u64>> = items[2..].iter().map(crate::fence::version).collect();
            Some(Guarded::Stored(n, versions?))
        }
        (Some(0), Some(jobs)) => Some(Guarded::Full {
            jobs,
            bytes: items.get(2).and_then(int)?,
        }),
        _ => crate::fence::refusal(items).map(Guarded::Refused),
    }
}

/// Appends the command that removes finished jobs (`ids`: a job and those merged into
/// it) to `pipe`.
pub fn remove<'i>(pipe: &mut redis::Pipeline, ns: &str, ids: impl IntoIterator<Item = &'i str>) {
    let cmd = outbox_script(pipe, REMOVE, ns);
    for id in ids {
        cmd.arg(id);
    }
    cmd.ignore();
}

/// The command renewing the lease of jobs `ids` until `due_ms`: one `ZADD` that moves
/// the due time of those still in the outbox (`XX`: a finished, removed job is not added
/// back) and only forward (`GT`: a later due time, a retry's backoff saved with its
/// progress, stays). `ids` must not be empty. (A Lua script did this before; it needed
/// `ZSCORE`, which the documented ACLs do not grant. `GT` needs Redis 6.2.)
pub fn renew(ns: &str, ids: &[String], due_ms: u64) -> redis::Cmd {
    let mut cmd = redis::cmd("ZADD");
    cmd.arg(keys::outbox(ns)).arg("XX").arg("GT");
    for id in ids {
        cmd.arg(due_ms).arg(id);
    }
    cmd
}

/// Appends the commands that make jobs `ids` claimable at `now_ms` (a process giving up
/// jobs it can no longer finish), for those still in the outbox, to `pipe`.
pub fn release(pipe: &mut redis::Pipeline, ns: &str, ids: &[String], now_ms: u64) {
    for id in ids {
        pipe.cmd("ZADD")
            .arg(keys::outbox(ns))
            .arg("XX")
            .arg(now_ms)
            .arg(id)
            .ignore();
    }
}

/// Claims up to `limit` due jobs: returns them and moves their due time to `lease_until`.
/// Ids whose job record is missing are removed. KEYS: outbox, jobs. ARGV: now, lease
/// until, limit.
pub(crate) const CLAIM: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local job = redis.call('HGET', KEYS[2], id)
  if job then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    out[#out + 1] = id
    out[#out + 1] = job
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"#;

/// A claimed outbox entry: a job, or an id whose record could not be decoded.
pub enum Claimed {
    Job(Box<Job>),
    Invalid { id: String, reason: String },
}

/// Claims due jobs from `store`'s outbox (on the plugin runtime).
pub async fn claim(
    store: &Store,
    ns: &str,
    now_ms: u64,
    lease_until_ms: u64,
    limit: usize,
) -> Result<Vec<Claimed>, CallError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    static CLAIM_SCRIPT: Script = Script::new(CLAIM);
    let mut cmd = CLAIM_SCRIPT.cmd();
    cmd.arg(2)
        .arg(keys::outbox(ns))
        .arg(keys::outbox_jobs(ns))
        .arg(now_ms)
        .arg(lease_until_ms)
        .arg(limit);
    let reply = store.query_async(&Request::Cmd(cmd)).await?;
    let items = match reply {
        redis::Value::Array(items) => items,
        redis::Value::Nil => Vec::new(),
        other => return Err(store.reply_error(format!("unexpected outbox claim reply {other:?}"))),
    };
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(id), Some(job)) = (it.next(), it.next()) {
        let id = text(id).unwrap_or_default();
        out.push(match text(job).map(|j| serde_json::from_str::<Job>(&j)) {
            Some(Ok(job)) if job.id == id => Claimed::Job(Box::new(job)),
            Some(Ok(job)) => Claimed::Invalid {
                reason: format!("record names job {:?}", job.id),
                id,
            },
            Some(Err(e)) => Claimed::Invalid {
                id,
                reason: e.to_string(),
            },
            None => Claimed::Invalid {
                id,
                reason: "record is not UTF-8 text".into(),
            },
        });
    }
    Ok(out)
}

fn text(v: redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => String::from_utf8(b).ok(),
        redis::Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            id: new_id(1),
            chain: "c".into(),
            tasks: vec!["t".into()],
            origin: "pi5u2".into(),
            policy: Policy::Skylark,
            destination: Some("pi5u1".into()),
            more_destinations: vec![],
            max_latency_ms: 5000,
            min_bandwidth_mbps: 0.0,
            exec_ms: 3,
            successor_in_ms: 0,
            put_at_ms: 1,
            cleanup: false,
            target: None,
            more_targets: vec![],
            done: vec![],
            exclude: vec![],
            carried: Default::default(),
            landed: Default::default(),
            attempts: 0,
            merged: vec![],
        }
    }

    #[test]
    fn absorbing_merges_tasks_and_takes_the_newer_options() {
        let mut a = job();
        let mut b = job();
        b.id = new_id(2);
        b.tasks = vec!["t".into(), "u".into()];
        b.destination = Some("pi4u5".into());
        b.put_at_ms = 9;
        let b_id = b.id.clone();
        a.absorb(b);
        assert_eq!(a.tasks, vec!["t".to_string(), "u".to_string()]);
        assert_eq!(a.destination.as_deref(), Some("pi4u5"));
        assert_eq!(a.put_at_ms, 1);
        assert_eq!(
            a.ids().collect::<Vec<_>>(),
            vec![a.id.as_str(), b_id.as_str()]
        );
        // Merged ids are process-local: not persisted.
        assert!(!a.to_json().unwrap().contains(&b_id));
    }

    #[test]
    fn absorbing_a_later_put_forgets_the_copies_already_made() {
        // Resumed from the outbox: the global copy of t was made, pi5u3's was not.
        let mut resumed = job();
        resumed.target = Some("pi5u3".into());
        resumed.done = vec!["pi5u1".into()];
        let mut later = job();
        later.id = new_id(2);
        later.tasks = vec!["u".into()];
        resumed.absorb(later);
        // u is on no store but this one yet: the global store must get the copy again.
        assert!(resumed.done.is_empty());
        assert_eq!(resumed.target.as_deref(), Some("pi5u3"));
        assert_eq!(resumed.tasks, vec!["t".to_string(), "u".to_string()]);
    }

    #[test]
    fn ids_are_unique() {
        let a = new_id(5);
        let b = new_id(5);
        assert_ne!(a, b);
        assert!(skylark_abi::ids::validate(a.as_bytes()).is_ok(), "{a}");
    }

    #[test]
    fn jobs_round_trip_and_tolerate_missing_progress() {
        let j = job();
        let back: Job = serde_json::from_str(&j.to_json().unwrap()).unwrap();
        assert_eq!(back, j);
        // Progress fields are optional: a minimal record decodes.
        let minimal = r#"{"id":"x","chain":"c","tasks":["t"],"origin":"n","policy":"random",
            "max_latency_ms":1,"min_bandwidth_mbps":0,"exec_ms":0,"successor_in_ms":0,"put_at_ms":0}"#;
        let j: Job = serde_json::from_str(minimal).unwrap();
        assert!(j.done.is_empty() && j.target.is_none());
        assert!(j.more_destinations.is_empty() && j.more_targets.is_empty());
        // A job recorded before fan-outs existed (this plugin's JSON of that time, with
        // progress) decodes as a job with one destination.
        let old = r#"{"id":"y","chain":"c","tasks":["t"],"origin":"n","policy":"skylark",
            "destination":"pi4u5","max_latency_ms":5000,"min_bandwidth_mbps":0.0,"exec_ms":3,
            "successor_in_ms":0,"put_at_ms":7,"cleanup":true,"target":"pi5u3",
            "done":["pi5u1"],"carried":{"t":12},"attempts":2}"#;
        let j: Job = serde_json::from_str(old).unwrap();
        assert_eq!(j.destination.as_deref(), Some("pi4u5"));
        assert_eq!(j.target.as_deref(), Some("pi5u3"));
        assert!(j.more_destinations.is_empty() && j.more_targets.is_empty());
        // A single-destination job is written as before: no new keys.
        let json = j.to_json().unwrap();
        assert!(!json.contains("more_"), "{json}");
        // A fan-out job round-trips.
        let mut fan = job();
        fan.more_destinations = vec!["pi4u6".into()];
        fan.more_targets = vec!["pi5u4".into()];
        let back: Job = serde_json::from_str(&fan.to_json().unwrap()).unwrap();
        assert_eq!(back, fan);
    }

    #[test]
    fn absorbing_other_destinations_elects_the_fan_out_again() {
        let mut a = job();
        a.more_destinations = vec!["pi4u6".into()];
        a.more_targets = vec!["pi5u4".into()];
        let mut same = job();
        same.id = new_id(3);
        same.more_destinations = vec!["pi4u6".into()];
        a.absorb(same);
        assert_eq!(a.more_targets, ["pi5u4"]);
        let mut other = job();
        other.id = new_id(4);
        other.more_destinations = vec!["pi4u7".into()];
        a.absorb(other);
        assert_eq!(a.more_destinations, ["pi4u7"]);
        assert!(a.more_targets.is_empty());
    }

    #[test]
    fn record_and_remove_are_one_command_each() {
        let mut pipe = redis::pipe();
        record(&mut pipe, "ns", "id", "{}", 9, None);
        // A job and the jobs merged into it: one script.
        remove(&mut pipe, "ns", ["id", "merged"]);
        assert_eq!(pipe.cmd_iter().count(), 2);
    }
}
