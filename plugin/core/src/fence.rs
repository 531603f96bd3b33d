//! Versions, and the writes they fence.
//!
//! Every state field of a bundle carries a version (the reserved field `@v:<task>`, see
//! `keys::version_field`), assigned by the put that wrote it, on the node that accepted
//! the put, in the same transaction as the write (`MULTI`: a script that assigns and
//! stores the versions, then a plain `HSET` of the values, so that values never pass
//! through Lua, which costs about a millisecond per MiB): the node's clock in
//! microseconds, and at least one more than the version that store already holds for the
//! field. Versions therefore grow with every put of a field on a node, follow real time
//! across nodes (up to clock skew), and stay above anything a node has seen (a copy or a
//! cached read raises the floor).
//!
//! The script that assigns a put's versions first runs the put's guard ([`Guard`], ABI
//! version 2): an idempotency key already recorded (`@idem:<key>`: a digest of the put's
//! fields and the versions they got) answers the put without writing, and a condition
//! (`if_version`, `if_absent`) that does not hold on this store refuses it. A refused put
//! leaves the bundle as it was: the values' `HSET` that follows in the same transaction
//! is undone by [`UNDO_REFUSED`], its last command.
//!
//! Every other write of state is fenced by them, in one script on the store written:
//! - a copy (propagation, read-through cache) writes a field only where the store holds
//!   an older version of it or none, and a placement entry (`@at:<task>`) only where the
//!   store holds no newer version of that task and no clean-up has emptied that node of
//!   this version (below);
//! - a clean-up deletes only the fields whose version is no newer than the one its job saw,
//!   and the bundle only if no state is left. Before it runs, its job moves the record of
//!   the emptied nodes' tasks to its target and records, on the writer's node, a tombstone
//!   per task the record no longer names the node for (`@swept:<task>` = `<node>
//!   <version>` lines); the clean-up deletes only those tasks. A placement entry naming a
//!   tombstoned node for a version no newer is refused, so another job of the chain that
//!   finishes later (its copy to that node made before the clean-up) cannot point readers
//!   there, and a clean-up never empties a node the record still sends readers to;
//! - a copy to the node a job elected claims it (`@claim` = the newest put the job
//!   carries, the highest kept): a clean-up by the job of an older put leaves that node
//!   alone, so the node the latest put elected keeps the whole bundle. That copy leaves out
//!   the fields the record places on the node already and asks the node to confirm it
//!   holds them (in those versions); the ones it lacks follow in a second copy.
//!
//! (RELIABILITY.md, finding 13: jobs of one chain in several processes finish and clean up
//! in any order.)
//! So a copy or clean-up whose attempt timed out but whose bytes arrive late never replaces
//! newer state. Fields written before versions existed count as version 0, and a store
//! holding such a field without a version takes any versioned copy of it.

use crate::keys;
use crate::resp::{self, Arg};
use crate::script::Script;
use std::time::Duration;

/// The Lua that assigns fresh versions to the fields a put writes and stores them, in one
/// `HSET` (per 2,000 fields); the values follow in a plain `HSET` of the same transaction.
/// Expects `key` (the bundle), `now` (microseconds) and `first` (the index in ARGV of the
/// first task id); leaves the assigned versions, as decimal strings, in `versions`.
macro_rules! assign_versions {
    () => {
        r#"
local versions, args = {}, {}
for i = first, #ARGV do
  local vf = '@v:' .. ARGV[i]
  local v = math.max(now, (tonumber(redis.call('HGET', key, vf)) or 0) + 1)
  local vs = string.format('%.0f', v)
  local n = #args
  args[n + 1], args[n + 2] = vf, vs
  versions[#versions + 1] = vs
end
-- One HSET (in slices that stay within Lua's stack for unpack).
for j = 1, #args, 4000 do
  redis.call('HSET', key, unpack(args, j, math.min(j + 3999, #args)))
end
"#
    };
}
pub(crate) use assign_versions;

/// The guard of a put (before its versions are assigned): an idempotency key already
/// recorded answers the put (a repeat with the same digest: `{3, versions of the first
/// put...}`; another digest: `{4}`), then a condition that does not hold refuses it
/// (`{2, versions held...}`, 0 for none). Either way the put is refused: [`refuse`] marks
/// the bundle and keeps the fields' current values for [`UNDO_REFUSED`], since the values'
/// `HSET` that follows in the transaction is about to overwrite them. Expects `key`,
/// `first` (the index in ARGV of the first task id) and `g` (the index of the four guard
/// arguments: condition mode 0 none, 1 `if_version`, 2 `if_absent`; the version; the
/// record's field, '' for none; the digest of the call's fields).
macro_rules! guard {
    () => {
        r#"
local function refuse()
  redis.call('HSET', key, '@refused', '1')
  for i = first, #ARGV do
    local old = redis.call('HGET', key, ARGV[i])
    if old then
      redis.call('HSET', key, '@refused:' .. ARGV[i], old)
    end
  end
end
local idem, digest = ARGV[g + 2], ARGV[g + 3]
if idem ~= '' then
  local rec = redis.call('HGET', key, idem)
  if rec then
    refuse()
    if string.sub(rec, 1, #digest + 1) ~= digest .. '\n' then
      return {4}
    end
    local had = {}
    for t, v in string.gmatch(rec, '\n(%S+) (%d+)') do
      had[t] = v
    end
    local out = {3}
    for i = first, #ARGV do
      out[#out + 1] = had[ARGV[i]] or '0'
    end
    return out
  end
end
local mode = tonumber(ARGV[g])
if mode > 0 then
  local want, failed, held = tonumber(ARGV[g + 1]), false, {2}
  for i = first, #ARGV do
    local v = tonumber(redis.call('HGET', key, '@v:' .. ARGV[i])) or 0
    held[#held + 1] = string.format('%.0f', v)
    if (mode == 1 and v ~= want) or (mode == 2 and redis.call('HEXISTS', key, ARGV[i]) == 1) then
      failed = true
    end
  end
  if failed then
    refuse()
    return held
  end
end
"#
    };
}
pub(crate) use guard;

/// `first`, the index in ARGV of a put's first task id, from `l` (the index of its
/// [`limits`] arguments): four arguments, then one length per task id, then the task ids.
macro_rules! first_task {
    () => {
        "local first = l + 4 + (#ARGV - l - 3) / 2\n"
    };
}
pub(crate) use first_task;

/// The limits of a put (issue 16 point 3), checked after its [`guard`] and before anything
/// is written; a put over a limit is refused like a failed condition ([`refuse`], undone
/// by [`UNDO_REFUSED`]):
/// - the bundle as the put leaves it holds at most the bundle limit of state bytes (field
///   names and values) and of reserved bytes, the limits a read checks
///   (`bundle_read`), so a put never makes a bundle that no read delivers; the reserved
///   bytes the put adds (versions, placement entries, its idempotency record) are counted
///   at their most. Refused: `{5, state bytes, reserved bytes}`. Counted exactly
///   (`HKEYS`, `HSTRLEN`), unless there is no quota and `MEMORY USAGE` shows the bundle
///   far below the limit (its names and values take at most twice its memory): one
///   command instead of one per field. A user without `memory|usage` gets the exact count.
/// - with a quota, the namespace's bytes on this store stay within it: a usage hash
///   (`keys::usage`: each bundle's bytes at its last put, and `@total`) and a sorted set
///   (`keys::usage_expiry`: when to look at each bundle again) kept by the puts
///   themselves. Each put first forgets up to 8 bundles that are gone (expired or
///   emptied) since the usage last counted them, then refuses a put that grows its bundle
///   beyond the quota: `{6, bytes it would make, quota}`. A put that does not grow its
///   bundle is always accepted, so a tenant at its quota can still overwrite.
///
/// Expects `key`, `first`, `now` (µs), `idem` and `digest` (from [`guard`]), `placed`
/// (the node recorded as every field's placement, '' for none), `l` (the index in ARGV
/// of the limit arguments: the most state bytes, the most reserved bytes, the quota (0 =
/// none), the TTL seconds, then the values' lengths, one per task id, which follow them
/// from `first` on: [`first_task`]) and `u` (the index in KEYS of the usage hash and
/// sorted set; unused without a quota).
/// Leaves `size` (the bundle's bytes after the put), `quota` and, with a quota (always
/// the exact count), `present` (whether the bundle exists) for [`quota`].
macro_rules! limits {
    () => {
        r#"
local quota, add, ext, far = tonumber(ARGV[l + 2]), 0, 0, false
for i = first, #ARGV do
  add = add + #ARGV[i] + ARGV[l + 4 + i - first]
  ext = ext + 2 * #ARGV[i] + #placed + 48
end
if idem ~= '' then
  ext = 2 * ext + #idem + #digest
end
if quota == 0 then
  local m = redis.pcall('MEMORY', 'USAGE', key, 'SAMPLES', '0')
  far = (m == false or type(m) == 'number') and 2 * (m or 0) + add + ext <= tonumber(ARGV[l])
end
local state, reserved, present = add, ext, false
if not far then
  local w = {}
  for i = first, #ARGV do
    w[ARGV[i]] = true
  end
  for _, f in ipairs(redis.call('HKEYS', key)) do
    present = true
    local n = #f + redis.call('HSTRLEN', key, f)
    if string.byte(f, 1) == 64 then
      reserved = reserved + n
    elseif not w[f] then
      state = state + n
    end
  end
  if state > tonumber(ARGV[l]) or reserved > tonumber(ARGV[l + 1]) then
    refuse()
    return {5, state, reserved}
  end
end
local size = state + reserved
"#
    };
}
pub(crate) use limits;

/// With a quota (the `_QUOTA` scripts only), after [`limits`]: forgets up to 8 bundles
/// that are gone, then refuses a put that grows its bundle beyond the quota (see
/// [`limits`]). Whether a counted bundle is gone: `PTTL` (by `pcall`; a user without
/// `+pttl` gets `HKEYS`, which costs in proportion to the bundle's fields), so that the
/// ACLs documented before quotas still work. Leaves `used`, `had` and `now_ms` for
/// [`account`].
macro_rules! quota {
    () => {
        r#"
local uk, ek, now_ms, had = KEYS[u], KEYS[u + 1], math.floor(now / 1000), 0
local used = tonumber(redis.call('HGET', uk, '@total')) or 0
for _, b in ipairs(redis.call('ZRANGEBYSCORE', ek, '-inf', now_ms, 'LIMIT', 0, 8)) do
  if b ~= key then
    local left = redis.pcall('PTTL', b)
    if type(left) ~= 'number' then
      left = #redis.call('HKEYS', b) == 0 and -2 or -1
    end
    if left == -2 then
      used = used - (tonumber(redis.call('HGET', uk, b)) or 0)
      redis.call('HDEL', uk, b)
      redis.call('ZREM', ek, b)
    else
      redis.call('ZADD', ek, now_ms + math.min(left > 0 and left or 60000, 60000), b)
    end
  end
end
used = math.max(used, 0)
redis.call('HSET', uk, '@total', used)
if present then
  had = tonumber(redis.call('HGET', uk, key)) or 0
else
  used = math.max(used - (tonumber(redis.call('HGET', uk, key)) or 0), 0)
end
if size > had and used - had + size > quota then
  refuse()
  return {6, used - had + size, quota}
end
"#
    };
}
pub(crate) use quota;

/// After an accepted put's writes, with a quota ([`quota`]): records the bundle's bytes
/// and the namespace's new total, and when to look at the bundle again (when it expires,
/// and at least every minute, so that a bundle a clean-up deleted stops counting within
/// about a minute); the usage keys expire with the TTL like the outbox.
macro_rules! account {
    () => {
        r#"
local ttl = tonumber(ARGV[l + 3])
redis.call('HSET', uk, key, size, '@total', used - had + size)
redis.call('ZADD', ek, now_ms + math.min(ttl > 0 and ttl * 1000 or 60000, 60000), key)
if ttl > 0 then
  redis.call('EXPIRE', uk, ttl)
  redis.call('EXPIRE', ek, ttl)
end
"#
    };
}
pub(crate) use account;

/// After [`assign_versions`]: records the idempotency key, if any, with the digest and the
/// versions assigned (`<digest>` then one `<task> <version>` line per field).
macro_rules! record_idempotency {
    () => {
        r#"
if idem ~= '' then
  local rec = {digest}
  for i, v in ipairs(versions) do
    rec[#rec + 1] = ARGV[first + i - 1] .. ' ' .. v
  end
  redis.call('HSET', key, idem, table.concat(rec, '\n'))
end
"#
    };
}
pub(crate) use record_idempotency;

/// The text of [`VERSIONS`], and with [`quota`] and [`account`] of [`VERSIONS_QUOTA`].
macro_rules! versions {
    ($($quota:expr, $account:expr)?) => {
        concat!(
            crate::arrivals::lua!(),
            "local key, now, g, l, u = KEYS[1], tonumber(ARGV[2]), 4, 8, 2\n",
            first_task!(),
            guard!(),
            "local placed = ARGV[3]\n",
            limits!(),
            $($quota,)?
            assign_versions!(),
            record_idempotency!(),
            $($account,)?
            r#"
if ARGV[3] ~= '' then
  for i = first, #ARGV do
    redis.call('HSET', key, '@at:' .. ARGV[i], ARGV[3])
  end
end
if tonumber(ARGV[1]) > 0 then
  redis.call('EXPIRE', key, ARGV[1])
end
local out = {1}
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

/// The versions of a put without an outbox (propagation off, policy `stateless`). KEYS:
/// bundle, then, with a quota, the usage hash and sorted set ([`limits`]). ARGV: TTL
/// seconds (0 = none), now (µs), the node to record as every field's placement ('' =
/// none), the four guard arguments ([`guard`]), the limit arguments with the values'
/// lengths ([`limits`]), then the task ids. Returns `{1, versions...}`, or a refusal of the guard or the limits.
/// (See `versions`.)
pub(crate) const VERSIONS: &str = versions!();

/// [`VERSIONS`] with a quota: KEYS: bundle, the usage hash and sorted set ([`quota`]).
pub(crate) const VERSIONS_QUOTA: &str = versions!(quota!(), account!());

/// The last command of a guarded put's transaction: if its guard refused the put, puts
/// the fields' previous values back (or removes the fields that did not exist) and
/// removes the marks; otherwise nothing. Only a refused put copies values through Lua.
/// KEYS: bundle. ARGV: the task ids. Returns 1 if it undid the values' write, else 0.
pub(crate) const UNDO_REFUSED: &str = r#"
local key = KEYS[1]
if not redis.call('HGET', key, '@refused') then
  return 0
end
for i = 1, #ARGV do
  local kept = '@refused:' .. ARGV[i]
  local old = redis.call('HGET', key, kept)
  if old then
    redis.call('HSET', key, ARGV[i], old)
    redis.call('HDEL', key, kept)
  else
    redis.call('HDEL', key, ARGV[i])
  end
end
redis.call('HDEL', key, '@refused')
return 1
"#;

/// The condition of a conditional put.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Condition {
    /// None: the put always writes (unless refused otherwise).
    #[default]
    Always,
    /// `if_version`: every field holds exactly this version (0: none).
    Version(u64),
    /// `if_absent`: no field exists.
    Absent,
}

/// What a put asks of the store that accepts it besides writing: a condition and an
/// idempotency record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Guard {
    pub condition: Condition,
    /// The record's field (`keys::idempotency_field`) and the digest of the call's fields
    /// ([`digest`]).
    pub idempotency: Option<(String, String)>,
}

impl Guard {
    /// A put with neither condition nor key: it cannot be refused by its guard, so its
    /// transaction needs no [`UNDO_REFUSED`].
    pub fn is_plain(&self) -> bool {
        self.condition == Condition::Always && self.idempotency.is_none()
    }

    /// The four guard arguments of [`guard`].
    pub(crate) fn args(&self) -> [Arg<'_>; 4] {
        let (mode, version) = match self.condition {
            Condition::Always => (0, 0),
            Condition::Version(v) => (1, v),
            Condition::Absent => (2, 0),
        };
        let (field, digest) = match &self.idempotency {
            Some((f, d)) => (f.as_str(), d.as_str()),
            None => ("", ""),
        };
        [
            Arg::Int(mode),
            Arg::Int(version),
            field.into(),
            digest.into(),
        ]
    }
}

/// The limits a store checks a put against ([`limits`]): the bundle limit, and on the
/// node-local store the namespace's quota.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most state bytes of a bundle (`SKYLARK_MAX_BUNDLE_BYTES`); the reserved bytes get
    /// `bundle_read::reserved_limit` of it, as on a read.
    pub max_state: u32,
    /// The namespace's quota; never on a global store, which may be a Redis Cluster where
    /// the usage keys would lie in other slots than the bundle.
    pub quota: Option<Quota>,
}

/// Most bytes a namespace's bundles may hold on a store, counted by its puts
/// (`SKYLARK_NAMESPACE_MAX_BYTES`), and the keys that count them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quota {
    pub bytes: u64,
    /// `keys::usage` and `keys::usage_expiry` of the namespace.
    pub keys: [String; 2],
}

impl Limits {
    /// The limits of a put in `namespace` on its node-local store: `max_state`, and a quota
    /// of `quota_bytes` unless 0.
    pub fn local(max_state: u32, namespace: &str, quota_bytes: u64) -> Limits {
        Limits {
            max_state,
            quota: (quota_bytes > 0).then(|| Quota {
                bytes: quota_bytes,
                keys: [keys::usage(namespace), keys::usage_expiry(namespace)],
            }),
        }
    }

    /// The bundle limit only (a global store).
    pub fn bundle_only(max_state: u32) -> Limits {
        Limits {
            max_state,
            quota: None,
        }
    }

    /// The usage keys, for KEYS after the bundle's (none without a quota).
    pub(crate) fn keys(&self) -> impl Iterator<Item = Arg<'_>> {
        self.quota
            .iter()
            .flat_map(|q| q.keys.iter().map(|k| Arg::from(k.as_str())))
    }

    /// The number of [`Limits::keys`].
    pub(crate) fn key_count(&self) -> u64 {
        if self.quota.is_some() {
            2
        } else {
            0
        }
    }

    /// The [`limits`] arguments of a put of `fields` with `ttl`: four, then the values'
    /// lengths.
    pub(crate) fn args<'a, 'f>(
        &self,
        fields: &'f [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> impl Iterator<Item = Arg<'a>> + use<'a, 'f> {
        [
            Arg::Int(u64::from(self.max_state)),
            Arg::Int(crate::bundle_read::reserved_limit(self.max_state)),
            Arg::Int(self.quota.as_ref().map_or(0, |q| q.bytes)),
            Arg::Int(ttl_arg(ttl)),
        ]
        .into_iter()
        .chain(fields.iter().map(|(_, v)| Arg::Int(v.len() as u64)))
    }
}

/// The digest an idempotency record keeps of a put's fields: SHA-256 (hex) over each
/// (task, value) pair, length-prefixed, in task order, so that the same fields in another
/// order are the same put.
pub fn digest(fields: &[(&str, &[u8])]) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<&(&str, &[u8])> = fields.iter().collect();
    sorted.sort_unstable_by_key(|(task, _)| *task);
    let mut h = Sha256::new();
    for (task, value) in sorted {
        h.update((task.len() as u64).to_le_bytes());
        h.update(task.as_bytes());
        h.update((value.len() as u64).to_le_bytes());
        h.update(value);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a put's transaction did, from its guard's reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Written; the fields got these versions.
    Stored(Vec<u64>),
    /// Nothing written: the condition does not hold; the versions the store holds (0: none).
    ConditionFailed(Vec<u64>),
    /// Nothing written: a repeat of the put recorded under its idempotency key, which got
    /// these versions.
    Repeated(Vec<u64>),
    /// Nothing written: the idempotency key was recorded for other fields or bytes.
    Conflict,
    /// Nothing written: the bundle would hold this many state and reserved bytes, over
    /// the bundle limit.
    TooLarge { state: u64, reserved: u64 },
    /// Nothing written: the namespace's bundles would hold this many bytes on the store,
    /// over its quota (the second number).
    OverQuota { bytes: u64, quota: u64 },
}

/// Decodes a refusal of a guard or of the limits (`{2|3|4|5|6, ...}`); `None` for any
/// other reply.
pub fn refusal(items: &[redis::Value]) -> Option<Verdict> {
    let tag = match items.first()? {
        redis::Value::Int(n) => *n,
        _ => return None,
    };
    let versions = || items[1..].iter().map(version).collect::<Option<Vec<u64>>>();
    match tag {
        2 => Some(Verdict::ConditionFailed(versions()?)),
        3 => Some(Verdict::Repeated(versions()?)),
        4 if items.len() == 1 => Some(Verdict::Conflict),
        5 | 6 if items.len() == 3 => {
            let n = |v: &redis::Value| match v {
                redis::Value::Int(n) => u64::try_from(*n).ok(),
                _ => None,
            };
            let (a, b) = (n(&items[1])?, n(&items[2])?);
            Some(if tag == 5 {
                Verdict::TooLarge {
                    state: a,
                    reserved: b,
                }
            } else {
                Verdict::OverQuota { bytes: a, quota: b }
            })
        }
        _ => None,
    }
}

/// A fenced copy. KEYS: bundle. ARGV: TTL seconds (0 = none), an announcement field to
/// remove ('' = none), the claim (0 = none), then the counts of state triples, placement
/// triples and expected pairs, then (field, version, value) state triples, (task, version,
/// node) placement triples, (task, version) expected pairs and (task, version, node)
/// tombstones of swept nodes. Returns {fields written, {the expected fields missing or
/// older here}, {task, node of each tombstone recorded}}. Publishes the fields written
/// (`arrivals`) when it wrote any or removed its announcement.
pub(crate) const COPY: &str = concat!(
    crate::arrivals::lua!(),
    r#"
local key = KEYS[1]
local function held(task)
  return tonumber(redis.call('HGET', key, '@v:' .. task))
end
-- The tombstones of `task`: node -> the version up to which a clean-up emptied it.
local function tombs(task)
  local t = {}
  local s = redis.call('HGET', key, '@swept:' .. task)
  if s then
    for node, v in string.gmatch(s, '(%S+) (%d+)') do
      t[node] = tonumber(v)
    end
  end
  return t
end
local claim = tonumber(ARGV[3])
local n, np, ne = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local wrote, written = 0, {}
local i = 7
for _ = 1, n do
  local task, v = ARGV[i], tonumber(ARGV[i + 1])
  local have = held(task)
  if have == nil or v > have then
    redis.call('HSET', key, task, ARGV[i + 2], '@v:' .. task, ARGV[i + 1])
    wrote = wrote + 1
    written[wrote] = task
  end
  i = i + 3
end
local placed_at = i
i = i + 3 * np
local missing, kept = {}, {}
for _ = 1, ne do
  local have = held(ARGV[i])
  if have == nil or have < tonumber(ARGV[i + 1]) or redis.call('HEXISTS', key, ARGV[i]) == 0 then
    missing[#missing + 1] = ARGV[i]
  end
  i = i + 2
end
local first_tomb = i
i = placed_at
for _ = 1, np do
  local task, v, node = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local have = held(task)
  local emptied = tombs(task)[node]
  if (have == nil or v >= have) and (emptied == nil or v > emptied) then
    redis.call('HSET', key, '@at:' .. task, node)
  end
  i = i + 3
end
-- A tombstone only where the record (as the placements above left it) no longer names
-- the node for the task: the clean-up may empty the node of those tasks only.
for j = first_tomb, #ARGV, 3 do
  local task, v, node = ARGV[j], tonumber(ARGV[j + 1]), ARGV[j + 2]
  if redis.call('HGET', key, '@at:' .. task) ~= node then
    local t = tombs(task)
    if (t[node] or -1) < v then
      t[node] = v
    end
    local lines = {}
    for nd, tv in pairs(t) do
      lines[#lines + 1] = nd .. ' ' .. string.format('%.0f', tv)
    end
    table.sort(lines)
    redis.call('HSET', key, '@swept:' .. task, table.concat(lines, '\n'))
    kept[#kept + 1] = task
    kept[#kept + 1] = node
  end
end
if claim > 0 and claim > (tonumber(redis.call('HGET', key, '@claim')) or 0) then
  redis.call('HSET', key, '@claim', ARGV[3])
end
local unannounced = 0
if ARGV[2] ~= '' then
  unannounced = redis.call('HDEL', key, ARGV[2])
end
if tonumber(ARGV[1]) > 0 then
  redis.call('EXPIRE', key, ARGV[1])
end
if wrote > 0 or unannounced > 0 then
  arrived(key, written)
end
return {wrote, missing, kept}
"#
);

/// A fenced clean-up. KEYS: bundle. ARGV: the newest put its job carries, then (task,
/// version) pairs its job saw. Refused (-1) if a job of a later put claimed this node;
/// otherwise deletes each task's state, version and placement entry where the version held
/// is no newer, then the bundle if no state field is left (signalling it on the arrivals
/// channel with no task: a read waiting for an announced copy re-reads), and returns how
/// many fields it deleted.
pub(crate) const SWEEP: &str = concat!(
    crate::arrivals::lua!(),
    r#"
local key = KEYS[1]
if (tonumber(redis.call('HGET', key, '@claim')) or 0) > tonumber(ARGV[1]) then
  return -1
end
local gone = 0
for i = 2, #ARGV, 2 do
  local task = ARGV[i]
  local have = tonumber(redis.call('HGET', key, '@v:' .. task))
  if have == nil or have <= tonumber(ARGV[i + 1]) then
    gone = gone + redis.call('HDEL', key, task, '@v:' .. task, '@at:' .. task)
  end
end
for _, f in ipairs(redis.call('HKEYS', key)) do
  if string.sub(f, 1, 1) ~= '@' then
    return gone
  end
end
redis.call('DEL', key)
arrived(key, {})
return gone
"#
);

/// The clock versions start from: microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn ttl_arg(ttl: Option<Duration>) -> u64 {
    ttl.map(|t| t.as_secs().max(1)).unwrap_or(0)
}

/// The limits of [`put`] and [`put_guarded`] (tools and tests): the largest bundle limit
/// there is, no quota.
const NO_LIMITS: Limits = Limits {
    max_state: u32::MAX,
    quota: None,
};

/// A put of `fields` to `key` that assigns their versions, as one atomic pipeline (see
/// [`put_reply`]).
pub fn put<'a>(
    key: &'a str,
    fields: &[(&'a str, &'a [u8])],
    ttl: Option<Duration>,
) -> redis::Pipeline {
    put_guarded(key, fields, ttl, &Guard::default())
}

/// [`put`] with a condition and/or idempotency key (see [`put_verdict`]).
pub fn put_guarded<'a>(
    key: &'a str,
    fields: &[(&'a str, &'a [u8])],
    ttl: Option<Duration>,
    guard: &'a Guard,
) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for c in put_commands(key, fields, ttl, guard, None, &NO_LIMITS) {
        pipe.add_command(resp::cmd(&c));
    }
    pipe
}

/// The commands of [`put`], to run in one transaction (`Store::query_transaction`),
/// borrowing the values: the versions script (which also checks the put's `limits`,
/// refreshes the TTL and, with `placed_at`, records that node as every field's
/// placement), the values' `HSET`, and [`UNDO_REFUSED`] (any put may be refused, if not
/// by its guard then by its limits).
pub fn put_commands<'a>(
    key: &'a str,
    fields: &[(&'a str, &'a [u8])],
    ttl: Option<Duration>,
    guard: &'a Guard,
    placed_at: Option<&'a str>,
    limits: &'a Limits,
) -> Vec<Vec<Arg<'a>>> {
    let mut versions = Vec::with_capacity(16 + 2 * fields.len());
    let script = if limits.quota.is_some() {
        VERSIONS_QUOTA
    } else {
        VERSIONS
    };
    versions.extend([
        "EVAL".into(),
        script.into(),
        Arg::Int(1 + limits.key_count()),
    ]);
    versions.push(key.into());
    versions.extend(limits.keys());
    versions.extend([
        Arg::Int(ttl_arg(ttl)),
        Arg::Int(now_us()),
        placed_at.unwrap_or("").into(),
    ]);
    versions.extend(guard.args());
    versions.extend(limits.args(fields, ttl));
    versions.extend(fields.iter().map(|(task, _)| Arg::from(*task)));
    vec![versions, values(key, fields), undo(key, fields)]
}

/// [`UNDO_REFUSED`] for the fields of a put.
pub(crate) fn undo<'a>(key: &'a str, fields: &[(&'a str, &'a [u8])]) -> Vec<Arg<'a>> {
    let mut undo = Vec::with_capacity(4 + fields.len());
    undo.extend(["EVAL".into(), UNDO_REFUSED.into(), Arg::Int(1), key.into()]);
    undo.extend(fields.iter().map(|(task, _)| Arg::from(*task)));
    undo
}

/// The versions a put assigned, in the order of its fields, from the replies of its
/// transaction (the versions script's comes first); `None` if it was refused.
pub fn put_reply(replies: &[redis::Value]) -> Option<Vec<u64>> {
    match put_verdict(replies)? {
        Verdict::Stored(v) => Some(v),
        _ => None,
    }
}

/// What a put's transaction did, from its replies (the versions script's comes first).
pub fn put_verdict(replies: &[redis::Value]) -> Option<Verdict> {
    let redis::Value::Array(items) = replies.first()? else {
        return None;
    };
    match items.first()? {
        redis::Value::Int(1) => items[1..]
            .iter()
            .map(version)
            .collect::<Option<Vec<u64>>>()
            .map(Verdict::Stored),
        _ => refusal(items),
    }
}

/// `HSET key task value ...`: the values of a put, outside any script.
pub(crate) fn values<'a>(key: &'a str, fields: &[(&'a str, &'a [u8])]) -> Vec<Arg<'a>> {
    let mut hset = Vec::with_capacity(2 + 2 * fields.len());
    hset.extend([Arg::from("HSET"), key.into()]);
    for (task, value) in fields {
        hset.push((*task).into());
        hset.push((*value).into());
    }
    hset
}

/// A version as a script returned it (a decimal string).
pub fn version(v: &redis::Value) -> Option<u64> {
    match v {
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        redis::Value::SimpleString(s) => s.parse().ok(),
        redis::Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// A state field of a copy: (field, version, value).
pub type Stamped<'a> = (&'a [u8], u64, &'a [u8]);

/// A placement entry of a copy: (task, version of the task the entry is about, node).
pub type Placed<'a> = (&'a str, u64, &'a str);

/// A fenced copy to one bundle, sent as one script ([`Copy::cmd`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Copy<'a> {
    /// State written where the store holds an older version or none.
    pub state: &'a [Stamped<'a>],
    /// Placement entries, written where the store holds no newer version of their task and
    /// no tombstone names their node for their version or a newer one.
    pub placed: &'a [Placed<'a>],
    /// Fields left out because the sender takes the store to hold them at these versions
    /// or newer: the reply lists those it does not ([`copy_reply`]).
    pub expected: &'a [(&'a [u8], u64)],
    /// Tombstones to record: (task, version up to which a clean-up empties the node, node).
    pub swept: &'a [Placed<'a>],
    /// On the node a job elected: the newest put the job carries. The store keeps the
    /// highest claim; a clean-up by the job of an older put leaves the bundle alone.
    pub claim: u64,
    /// The bundle TTL to set (of a bundle that exists: `EXPIRE` creates nothing).
    pub ttl: Option<Duration>,
    /// The announcement of this copy, removed by it.
    pub incoming: Option<&'a str>,
}

/// [`COPY`] and [`SWEEP`], called by digest.
static COPY_SCRIPT: Script = Script::new(COPY);
static SWEEP_SCRIPT: Script = Script::new(SWEEP);

impl Copy<'_> {
    /// The script that makes this copy to `key` (by digest; with its text when the copy
    /// carries [`crate::script::TEXT_FROM_BYTES`] or more).
    pub fn cmd(&self, key: &str) -> redis::Cmd {
        let payload = self.state.iter().map(|(f, _, v)| f.len() + v.len()).sum();
        let mut cmd = COPY_SCRIPT.cmd_for(payload);
        cmd.arg(1)
            .arg(key)
            .arg(ttl_arg(self.ttl))
            .arg(self.incoming.unwrap_or(""))
            .arg(self.claim)
            .arg(self.state.len())
            .arg(self.placed.len())
            .arg(self.expected.len());
        for (field, v, value) in self.state {
            cmd.arg(*field).arg(*v).arg(*value);
        }
        for (task, v, node) in self.placed {
            cmd.arg(*task).arg(*v).arg(*node);
        }
        for (field, v) in self.expected {
            cmd.arg(*field).arg(*v);
        }
        for (task, v, node) in self.swept {
            cmd.arg(*task).arg(*v).arg(*node);
        }
        cmd
    }
}

/// What a copy's reply says ([`copy_reply`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Copied {
    /// State fields written.
    pub wrote: u64,
    /// The expected fields the store lacks (or holds older).
    pub missing: Vec<Vec<u8>>,
    /// The tombstones recorded, as (task, node): those whose node the record no longer
    /// names for the task. A clean-up may empty a node of these tasks only.
    pub swept: Vec<(Vec<u8>, String)>,
}

/// Decodes a copy's reply.
pub fn copy_reply(reply: &redis::Value) -> Option<Copied> {
    let redis::Value::Array(items) = reply else {
        return None;
    };
    let [wrote, missing, swept] = items.as_slice() else {
        return None;
    };
    let bulks = |v: &redis::Value| -> Option<Vec<Vec<u8>>> {
        match v {
            redis::Value::Array(a) => a
                .iter()
                .map(|x| match x {
                    redis::Value::BulkString(b) => Some(b.clone()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    };
    let swept = bulks(swept)?;
    if swept.len() % 2 != 0 {
        return None;
    }
    Some(Copied {
        wrote: version(wrote)?,
        missing: bulks(missing)?,
        swept: swept
            .chunks(2)
            .map(|p| Some((p[0].clone(), String::from_utf8(p[1].clone()).ok()?)))
            .collect::<Option<_>>()?,
    })
}

/// A clean-up of `key` that deletes what is no newer than `seen` (task, version), unless
/// the job of a put newer than `newest_put` claimed the store's bundle (reply -1).
pub fn sweep(key: &str, newest_put: u64, seen: &[(&[u8], u64)]) -> redis::Cmd {
    let mut cmd = SWEEP_SCRIPT.cmd();
    cmd.arg(1).arg(key).arg(newest_put);
    for (task, v) in seen {
        cmd.arg(*task).arg(*v);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_decode() {
        let r = redis::Value::Array(vec![
            redis::Value::Int(1),
            redis::Value::BulkString(b"1764300000000001".to_vec()),
            redis::Value::BulkString(b"7".to_vec()),
        ]);
        assert_eq!(
            put_reply(&[r, redis::Value::Int(2)]),
            Some(vec![1_764_300_000_000_001, 7])
        );
        let bad = redis::Value::Array(vec![
            redis::Value::Int(1),
            redis::Value::BulkString(b"x".to_vec()),
        ]);
        assert_eq!(put_reply(&[bad]), None);
        let bulk = |s: &str| redis::Value::BulkString(s.as_bytes().to_vec());
        let refused = |items: Vec<redis::Value>| put_verdict(&[redis::Value::Array(items)]);
        assert_eq!(
            refused(vec![redis::Value::Int(2), bulk("7"), bulk("0")]),
            Some(Verdict::ConditionFailed(vec![7, 0]))
        );
        assert_eq!(
            refused(vec![redis::Value::Int(3), bulk("9")]),
            Some(Verdict::Repeated(vec![9]))
        );
        assert_eq!(refused(vec![redis::Value::Int(4)]), Some(Verdict::Conflict));
        assert_eq!(refused(vec![redis::Value::Int(4), bulk("1")]), None);
        assert_eq!(refused(vec![redis::Value::Int(5)]), None);
        let int = redis::Value::Int;
        assert_eq!(
            refused(vec![int(5), int(120), int(40)]),
            Some(Verdict::TooLarge {
                state: 120,
                reserved: 40
            })
        );
        assert_eq!(
            refused(vec![int(6), int(300), int(200)]),
            Some(Verdict::OverQuota {
                bytes: 300,
                quota: 200
            })
        );
        assert_eq!(refused(vec![int(6), bulk("300"), int(200)]), None);
        assert_eq!(refused(vec![int(7), int(1), int(2)]), None);
        assert_eq!(put_reply(&[redis::Value::Nil]), None);
        assert_eq!(put_reply(&[]), None);
    }

    #[test]
    fn a_put_keeps_its_values_out_of_the_script() {
        let value = vec![1u8; 100];
        let plain = Guard::default();
        let limits = Limits::local(1000, "ns", 5000);
        let cmds = put_commands(
            "k",
            &[("t", &value)],
            Some(Duration::from_secs(9)),
            &plain,
            None,
            &limits,
        );
        let [script, hset, undo] = cmds.as_slice() else {
            panic!("a put is three commands: {cmds:?}");
        };
        assert!(!script.contains(&Arg::Bytes(&value)));
        assert_eq!(script[script.len() - 1], Arg::Bytes(b"t"));
        assert_eq!(
            *hset,
            ["HSET".into(), "k".into(), "t".into(), Arg::Bytes(&value)]
        );
        // The bundle and the usage keys; the limits, then the value's length.
        assert_eq!(script[2], Arg::Int(3));
        assert_eq!(script[4..6], ["ns:usage".into(), "ns:usage:expiry".into()]);
        let n = script.len();
        assert_eq!(
            script[n - 6..n - 1],
            [
                Arg::Int(1000),
                Arg::Int(crate::bundle_read::reserved_limit(1000)),
                Arg::Int(5000),
                Arg::Int(9),
                Arg::Int(100)
            ]
        );
        // Any put may be refused (by its guard or its limits): it ends with the undo of
        // the values' write, which carries no value.
        assert_eq!(undo[1], Arg::from(UNDO_REFUSED));
        assert!(!undo.contains(&Arg::Bytes(&value)));
        // With a quota the script counts the namespace's bytes; without one it does not.
        assert_eq!(script[1], Arg::from(VERSIONS_QUOTA));
        assert!(VERSIONS_QUOTA.contains("'@total'") && !VERSIONS.contains("'@total'"));
        // Without a quota (a global store) the bundle is the only key.
        let cmds = put_commands("k", &[("t", &value)], None, &plain, None, &NO_LIMITS);
        assert_eq!(cmds[0][2], Arg::Int(1));
    }

    #[test]
    fn the_digest_covers_names_and_bytes_in_task_order() {
        let d = digest(&[("a", b"1"), ("b", b"2")]);
        assert_eq!(d.len(), 64);
        assert_eq!(
            d,
            digest(&[("b", b"2"), ("a", b"1")]),
            "order does not matter"
        );
        assert_ne!(d, digest(&[("a", b"1"), ("b", b"3")]));
        assert_ne!(d, digest(&[("a", b"1"), ("c", b"2")]));
        // Lengths are part of it: moving a byte from a name to a value is another put.
        assert_ne!(digest(&[("ab", b"c")]), digest(&[("a", b"bc")]));
    }

    #[test]
    fn versions_fit_lua_numbers() {
        // Lua numbers are doubles: a version must stay an exact integer in one, for
        // centuries of microseconds (2^53 µs is about 285 years).
        assert!(now_us() < (1u64 << 53) / 2);
    }

    #[test]
    fn a_copy_lists_its_parts_in_order() {
        let cmd = Copy {
            state: &[(b"t".as_slice(), 5, b"v".as_slice())],
            placed: &[("t", 5, "n1"), ("u", 0, "n2")],
            expected: &[(b"w".as_slice(), 4)],
            swept: &[("t", 5, "n3")],
            claim: 9,
            ttl: None,
            incoming: Some("@incoming:j"),
        }
        .cmd("ns:bundle:c");
        let args: Vec<String> = cmd
            .args_iter()
            .skip(4) // EVAL, the script, the key count, the key
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(
            args,
            [
                "0",
                "@incoming:j",
                "9",
                "1",
                "2",
                "1",
                "t",
                "5",
                "v",
                "t",
                "5",
                "n1",
                "u",
                "0",
                "n2",
                "w",
                "4",
                "t",
                "5",
                "n3"
            ]
        );
    }

    #[test]
    fn copy_replies_decode() {
        let bulk = |s: &str| redis::Value::BulkString(s.as_bytes().to_vec());
        let r = redis::Value::Array(vec![
            redis::Value::Int(2),
            redis::Value::Array(vec![bulk("t0")]),
            redis::Value::Array(vec![bulk("t1"), bulk("n1")]),
        ]);
        assert_eq!(
            copy_reply(&r),
            Some(Copied {
                wrote: 2,
                missing: vec![b"t0".to_vec()],
                swept: vec![(b"t1".to_vec(), "n1".to_string())],
            })
        );
        let odd = redis::Value::Array(vec![
            redis::Value::Int(0),
            redis::Value::Array(vec![]),
            redis::Value::Array(vec![bulk("t1")]),
        ]);
        assert_eq!(copy_reply(&odd), None);
        assert_eq!(copy_reply(&redis::Value::Int(1)), None);
        assert_eq!(copy_reply(&redis::Value::Array(vec![])), None);
    }
}
