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
//! Every other write of state is fenced by them, in one script on the store written:
//! - a copy (propagation, read-through cache) writes a field only where the store holds
//!   an older version of it or none, and a placement entry (`@at:<task>`) only where the
//!   store holds no newer version of that task;
//! - a clean-up deletes only the fields whose version is no newer than the one its job saw,
//!   and the bundle only if no state is left.
//!
//! So a copy or clean-up whose attempt timed out but whose bytes arrive late never replaces
//! newer state. Fields written before versions existed count as version 0, and a store
//! holding such a field without a version takes any versioned copy of it.

use crate::resp::{self, Arg};
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

/// The versions of a put without an outbox (propagation off, policy `stateless`). KEYS:
/// bundle. ARGV: TTL seconds (0 = none), now (µs), then the task ids. Returns the versions.
const VERSIONS: &str = concat!(
    "local key, now, first = KEYS[1], tonumber(ARGV[2]), 3\n",
    assign_versions!(),
    r#"
if tonumber(ARGV[1]) > 0 then
  redis.call('EXPIRE', key, ARGV[1])
end
return versions
"#
);

/// A fenced copy. KEYS: bundle. ARGV: TTL seconds (0 = none), an announcement field to
/// remove ('' = none), the number of state fields, then (field, version, value) triples,
/// then (task, version, node) placement triples. Returns how many state fields it wrote.
const COPY: &str = r#"
local key = KEYS[1]
local function held(task)
  return tonumber(redis.call('HGET', key, '@v:' .. task))
end
local n = tonumber(ARGV[3])
local wrote = 0
local i = 4
for _ = 1, n do
  local task, v = ARGV[i], tonumber(ARGV[i + 1])
  local have = held(task)
  if have == nil or v > have then
    redis.call('HSET', key, task, ARGV[i + 2], '@v:' .. task, ARGV[i + 1])
    wrote = wrote + 1
  end
  i = i + 3
end
while i <= #ARGV do
  local task, v = ARGV[i], tonumber(ARGV[i + 1])
  local have = held(task)
  if have == nil or v >= have then
    redis.call('HSET', key, '@at:' .. task, ARGV[i + 2])
  end
  i = i + 3
end
if ARGV[2] ~= '' then
  redis.call('HDEL', key, ARGV[2])
end
if tonumber(ARGV[1]) > 0 then
  redis.call('EXPIRE', key, ARGV[1])
end
return wrote
"#;

/// A fenced clean-up. KEYS: bundle. ARGV: (task, version) pairs its job saw. Deletes each
/// task's state, version and placement entry where the version held is no newer; then the
/// bundle, if no state field is left. Returns how many fields it deleted.
const SWEEP: &str = r#"
local key = KEYS[1]
local gone = 0
for i = 1, #ARGV, 2 do
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
return gone
"#;

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

/// A put of `fields` to `key` that assigns their versions, as one atomic pipeline (see
/// [`put_reply`]).
pub fn put<'a>(
    key: &'a str,
    fields: &[(&'a str, &'a [u8])],
    ttl: Option<Duration>,
) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for c in put_commands(key, fields, ttl) {
        pipe.add_command(resp::cmd(&c));
    }
    pipe
}

/// The commands of [`put`], to run in one transaction (`Store::query_transaction`),
/// borrowing the values: the versions script (which also refreshes the TTL), then the
/// values' `HSET`.
pub fn put_commands<'a>(
    key: &'a str,
    fields: &[(&'a str, &'a [u8])],
    ttl: Option<Duration>,
) -> [Vec<Arg<'a>>; 2] {
    let mut versions = Vec::with_capacity(6 + fields.len());
    versions.extend([
        "EVAL".into(),
        VERSIONS.into(),
        Arg::Int(1),
        key.into(),
        Arg::Int(ttl_arg(ttl)),
        Arg::Int(now_us()),
    ]);
    versions.extend(fields.iter().map(|(task, _)| Arg::from(*task)));
    [versions, values(key, fields)]
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

/// The versions a put assigned, in the order of its fields, from the replies of its
/// transaction (the versions script's comes first).
pub fn put_reply(replies: &[redis::Value]) -> Option<Vec<u64>> {
    match replies.first()? {
        redis::Value::Array(items) => items.iter().map(version).collect(),
        _ => None,
    }
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

/// A copy to `key`: `state` where the target holds nothing newer, `placed` entries where
/// it holds no newer version of their task; removes the announcement `incoming` (if any)
/// and refreshes the TTL (of a bundle that exists: `EXPIRE` creates nothing).
pub fn copy(
    key: &str,
    state: &[Stamped<'_>],
    placed: &[Placed<'_>],
    ttl: Option<Duration>,
    incoming: Option<&str>,
) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(COPY)
        .arg(1)
        .arg(key)
        .arg(ttl_arg(ttl))
        .arg(incoming.unwrap_or(""))
        .arg(state.len());
    for (field, v, value) in state {
        cmd.arg(*field).arg(*v).arg(*value);
    }
    for (task, v, node) in placed {
        cmd.arg(*task).arg(*v).arg(*node);
    }
    cmd
}

/// A clean-up of `key` that deletes what is no newer than `seen` (task, version).
pub fn sweep(key: &str, seen: &[(&[u8], u64)]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(SWEEP).arg(1).arg(key);
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
            redis::Value::BulkString(b"1764300000000001".to_vec()),
            redis::Value::BulkString(b"7".to_vec()),
        ]);
        assert_eq!(
            put_reply(&[r, redis::Value::Int(2)]),
            Some(vec![1_764_300_000_000_001, 7])
        );
        let bad = redis::Value::Array(vec![redis::Value::BulkString(b"x".to_vec())]);
        assert_eq!(put_reply(&[bad]), None);
        assert_eq!(put_reply(&[redis::Value::Nil]), None);
        assert_eq!(put_reply(&[]), None);
    }

    #[test]
    fn a_put_keeps_its_values_out_of_the_script() {
        let value = vec![1u8; 100];
        let [script, hset] = put_commands("k", &[("t", &value)], Some(Duration::from_secs(9)));
        assert!(!script.contains(&Arg::Bytes(&value)));
        assert_eq!(script[script.len() - 1], Arg::Bytes(b"t"));
        assert_eq!(
            hset,
            ["HSET".into(), "k".into(), "t".into(), Arg::Bytes(&value)]
        );
    }

    #[test]
    fn versions_fit_lua_numbers() {
        // Lua numbers are doubles: a version must stay an exact integer in one, for
        // centuries of microseconds (2^53 µs is about 285 years).
        assert!(now_us() < (1u64 << 53) / 2);
    }

    #[test]
    fn a_copy_lists_state_then_placement() {
        let cmd = copy(
            "ns:bundle:c",
            &[(b"t".as_slice(), 5, b"v".as_slice())],
            &[("t", 5, "n1"), ("u", 0, "n2")],
            None,
            Some("@incoming:j"),
        );
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
                "1",
                "t",
                "5",
                "v",
                "t",
                "5",
                "n1",
                "u",
                "0",
                "n2"
            ]
        );
    }
}
