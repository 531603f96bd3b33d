//! Reading a bundle with its size checked (issue 16 point 5): it holds at most
//! `SKYLARK_MAX_BUNDLE_BYTES` of state fields and at most [`reserved_limit`] of reserved
//! ones (versions, placement record, announcements, idempotency records), or the read
//! fails with `BundleTooLarge` and nothing of the bundle is cached or copied. A hostile or
//! overgrown store never streams more than about `3 × SKYLARK_MAX_BUNDLE_BYTES + 1 MiB`
//! into this process for one bundle.
//!
//! On the calling thread's [`crate::direct`] connection (the node-local store over plain
//! TCP or a Unix socket) a read is one plain `HGETALL` whose reply is bounded by that much
//! as it arrives (a larger one fails at its header and ends the connection); the limits
//! are checked on the fields read. One round trip, no Lua, each value read from the socket
//! straight into its buffer (issue 14 point 4: through the script below a 64 KiB bundle
//! took three round trips and a 10 x 1 MiB one 2.9 times a native `HGETALL`).
//!
//! Everywhere else the check comes before any byte of the bundle leaves the store: one
//! Lua script ([`READ`]) sums the field names and value lengths (`HKEYS`, `HSTRLEN`) and
//! returns the whole hash only within the limits; otherwise the two sums as integers,
//! which no `HGETALL` reply contains. A hash returned through the script passes through
//! Lua strings inside Redis (copied twice more than by a plain `HGETALL`), so the script
//! returns the hash itself only up to [`SCRIPT_RETURN_BYTES`] (32 KiB); a larger bundle
//! within the limits is answered `{state, reserved, 1}`, and, on the calling thread's
//! connection to a TLS store, read with a plain `HGETALL` in a transaction guarded by
//! `WATCH`: `WATCH`, the script again (sizes only), then `MULTI`/`HGETALL`/`EXEC`, which
//! Redis runs only if the bundle did not change after the check (else the check is
//! repeated). Other stores (reached on the plugin runtime over multiplexed connections,
//! where `WATCH` would see other requests' commands) get the hash through the script.

use crate::error::CallError;
use crate::keys;
use crate::script::Script;
use crate::store::{hash_pairs, BundleRead, HashPairs, Store};
use redis::Value;
use skylark_abi::Status;

/// KEYS: bundle. ARGV: most state bytes, most reserved bytes, most bytes returned through
/// the script. Returns the hash as `HGETALL` does when it is within the limits and holds
/// at most ARGV[3] bytes; `{state bytes, reserved bytes}` (counted until a limit was
/// passed) when it is over a limit; `{state bytes, reserved bytes, 1, name, value, ..}`
/// when it is within the limits but larger than ARGV[3], with the bundle's sending records
/// (`keys::SENDING_PREFIX`, small and within the reserved limit), so that a reader that
/// decides whether to pull the bundle knows which copies are on their way.
pub(crate) const READ: &str = r#"
local key = KEYS[1]
local max_state, max_reserved = tonumber(ARGV[1]), tonumber(ARGV[2])
local state, reserved = 0, 0
local sending = {}
for _, f in ipairs(redis.call('HKEYS', key)) do
  local n = #f + redis.call('HSTRLEN', key, f)
  if string.byte(f, 1) == 64 then
    reserved = reserved + n
    if string.sub(f, 1, 9) == '@sending:' then
      sending[#sending + 1] = f
    end
  else
    state = state + n
  end
  if state > max_state or reserved > max_reserved then
    return {state, reserved}
  end
end
if state + reserved > tonumber(ARGV[3]) then
  local large = {state, reserved, 1}
  for _, f in ipairs(sending) do
    large[#large + 1] = f
    large[#large + 1] = redis.call('HGET', key, f)
  end
  return large
end
return redis.call('HGETALL', key)
"#;

/// The most bytes (names and values, state and reserved) of a bundle the script returns
/// itself. Above it, the two more round trips of the guarded `HGETALL` cost less than
/// the script's copies: already at 64 KiB (measured for issue 14 point 4: BENCHMARKS.md
/// section 1, "Large bundles"), not at 10 KiB.
pub const SCRIPT_RETURN_BYTES: u64 = 32 << 10;

/// Tries of the guarded read before the bundle is read through the script after all
/// (each try that fails met a write of the bundle between its check and its read).
const GUARDED_TRIES: u32 = 3;

/// Most bytes of reserved fields (`@v:`, `@at:`, `@incoming:`, `@idem:`...) a bundle may hold next to
/// `max_state` bytes of state: twice as much plus 1 MiB (a version is about 20 bytes per
/// field, however small the field).
pub fn reserved_limit(max_state: u32) -> u64 {
    2 * u64::from(max_state) + (1 << 20)
}

/// [`READ`], called by digest.
static READ_SCRIPT: Script = Script::new(READ);

/// The request that reads `chain`'s bundle if it is within `max_state` bytes of state,
/// returning it through the script when it holds at most `script_bytes` bytes; by digest
/// (`Store` sends the text again on `NOSCRIPT`). Tagged as a bundle read: its reply is
/// bounded by the bundle limit (`Store::query_bundle`).
pub fn request(ns: &str, chain: &str, max_state: u32, script_bytes: u64) -> BundleRead {
    let mut cmd = READ_SCRIPT.cmd();
    args(&mut cmd, &keys::bundle(ns, chain), max_state, script_bytes);
    BundleRead::new(cmd)
}

/// [`READ`] with its text, for the guarded read's pipeline (which has no `NOSCRIPT`
/// retry).
fn script(key: &str, max_state: u32, script_bytes: u64) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(READ);
    args(&mut cmd, key, max_state, script_bytes);
    cmd
}

fn args(cmd: &mut redis::Cmd, key: &str, max_state: u32, script_bytes: u64) {
    cmd.arg(1)
        .arg(key)
        .arg(max_state)
        .arg(reserved_limit(max_state))
        .arg(script_bytes);
}

/// What the script answered.
enum Checked {
    /// The hash.
    Hash(Value),
    /// Over a limit: the sums counted so far.
    TooLarge(i64, i64),
    /// Within the limits, larger than the script returns.
    Large,
}

fn checked(reply: Value) -> Checked {
    if let Value::Array(items) = &reply {
        match items.as_slice() {
            [Value::Int(state), Value::Int(reserved)] => {
                return Checked::TooLarge(*state, *reserved)
            }
            [Value::Int(_), Value::Int(_), Value::Int(1), ..] => return Checked::Large,
            _ => {}
        }
    }
    Checked::Hash(reply)
}

fn too_large(store: &Store, chain: &str, max_state: u32, state: i64, reserved: i64) -> CallError {
    let what = if state > i64::from(max_state) {
        format!("more than {max_state} bytes of state (at least {state} bytes)")
    } else {
        format!(
            "more than {} bytes of versions and placement entries (at least {reserved})",
            reserved_limit(max_state)
        )
    };
    CallError::new(
        Status::BundleTooLarge,
        format!(
            "bundle of chain {chain:?} on {} holds {what}; SKYLARK_MAX_BUNDLE_BYTES is \
             {max_state}: not read",
            store.name()
        ),
    )
}

/// The bundle's fields from the reply to [`request`], or `BundleTooLarge` (naming the
/// chain and `store`) when the script refused to send it. A `Large` answer (the request
/// asked for at most so many bytes through the script) is a store error here: only
/// [`read`] handles it.
pub fn pairs(
    store: &Store,
    chain: &str,
    max_state: u32,
    reply: Value,
) -> Result<HashPairs, CallError> {
    match checked(reply) {
        Checked::Hash(v) => hash_pairs(v).map_err(|m| store.reply_error(m)),
        Checked::TooLarge(state, reserved) => {
            Err(too_large(store, chain, max_state, state, reserved))
        }
        Checked::Large => Err(store.reply_error(format!(
            "bundle of chain {chain:?}: the size check asked for a guarded read"
        ))),
    }
}

/// Reads `chain`'s bundle from `store` on the calling thread, size-checked: one bounded
/// `HGETALL` on a [`crate::direct`] connection; elsewhere checked first, through the
/// script up to [`SCRIPT_RETURN_BYTES`], above that with the guarded `HGETALL` where the
/// store has the calling thread's connection (see the module docs).
pub fn read(store: &Store, ns: &str, chain: &str, max_state: u32) -> Result<HashPairs, CallError> {
    if let Some(reply) = store.hgetall_direct(&keys::bundle(ns, chain), store.reply_limits().bundle)
    {
        return checked_pairs(store, chain, max_state, reply);
    }
    let script_bytes = if store.has_total_deadline() {
        u64::MAX
    } else {
        SCRIPT_RETURN_BYTES
    };
    let reply = store.query_bundle(&request(ns, chain, max_state, script_bytes))?;
    let reply = match checked(reply) {
        Checked::Large => guarded(store, ns, chain, max_state)?,
        other => other,
    };
    match reply {
        Checked::Hash(v) => hash_pairs(v).map_err(|m| store.reply_error(m)),
        Checked::TooLarge(state, reserved) => {
            Err(too_large(store, chain, max_state, state, reserved))
        }
        // Changed by writes at every try: read through the script after all.
        Checked::Large => {
            let reply = store.query_bundle(&request(ns, chain, max_state, u64::MAX))?;
            pairs(store, chain, max_state, reply)
        }
    }
}

/// The bundle from a plain `HGETALL` reply (`Store::hgetall_direct`), refused with
/// `BundleTooLarge` when its state or reserved fields are over the limits the script
/// checks.
fn checked_pairs(
    store: &Store,
    chain: &str,
    max_state: u32,
    reply: Result<Value, CallError>,
) -> Result<HashPairs, CallError> {
    let reply = reply?;
    let pairs = hash_pairs(reply).map_err(|m| store.reply_error(m))?;
    let (mut state, mut reserved) = (0u64, 0u64);
    for (f, v) in &pairs {
        let n = (f.len() + v.len()) as u64;
        if f.first() == Some(&b'@') {
            reserved += n;
        } else {
            state += n;
        }
    }
    if state > u64::from(max_state) || reserved > reserved_limit(max_state) {
        let n = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
        return Err(too_large(store, chain, max_state, n(state), n(reserved)));
    }
    Ok(pairs)
}

/// The guarded read on the calling thread's connection: `WATCH` and the size check in
/// one round trip, then, within the limits, `MULTI`/`HGETALL`/`EXEC` in another; `Large`
/// if every try met a write between the two (or the store has no such connection).
fn guarded(store: &Store, ns: &str, chain: &str, max_state: u32) -> Result<Checked, CallError> {
    let key = keys::bundle(ns, chain);
    let mut check = redis::pipe();
    check
        .cmd("WATCH")
        .arg(&key)
        .ignore()
        .add_command(script(&key, max_state, 0));
    let mut read = redis::pipe();
    read.atomic().cmd("HGETALL").arg(&key);
    // The outcome travels as one Value: the script's answer or the hash, or nothing
    // (every try met a write).
    let exchange = |conn: &mut crate::direct::Link| -> redis::RedisResult<Value> {
        for _ in 0..GUARDED_TRIES {
            let answer = match check.query::<Vec<Value>>(conn) {
                Ok(mut v) if v.len() == 1 => v.remove(0),
                // A user without `watch` (the minimal ACLs before the guarded read):
                // nothing is watched; the caller reads through the script instead.
                Err(e) if e.code() == Some("NOPERM") => return Ok(Value::Okay),
                other => {
                    // The connection may still watch the key: the next EXEC on it,
                    // anyone's, must not depend on this read.
                    redis::cmd("UNWATCH").query::<()>(conn)?;
                    return other.map(Value::Array);
                }
            };
            if !matches!(checked(answer.clone()), Checked::Large) {
                // Over a limit, or an empty or missing hash: nothing to read.
                redis::cmd("UNWATCH").query::<()>(conn)?;
                return Ok(answer);
            }
            // EXEC clears the watch whatever it answers; nil: the bundle changed.
            if let Some(mut replies) = read.query::<Option<Vec<Value>>>(conn)? {
                if replies.len() == 1 {
                    return Ok(replies.remove(0));
                }
                return Ok(Value::Array(replies));
            }
        }
        Ok(Value::Okay)
    };
    match store.exchange_blocking(exchange) {
        None => Ok(Checked::Large),
        Some(Ok(Value::Okay)) => Ok(Checked::Large),
        Some(Ok(v)) => match checked(v) {
            // Only the script answers Large, and not here: a reply of the wrong shape.
            Checked::Large => Err(store.reply_error(format!(
                "bundle of chain {chain:?}: a size check asked for another guarded read"
            ))),
            other => Ok(other),
        },
        Some(Err(e)) => Err(e),
    }
}

/// What a probe of another node's bundle found.
#[derive(Debug)]
pub enum Probe {
    /// The hash itself (a bundle of at most [`SCRIPT_RETURN_BYTES`]).
    Hash(HashPairs),
    /// A larger bundle within the limits (read it with [`read_async`], one more round
    /// trip), with its sending records: (field, unix ms it is live until).
    Large(Vec<(Vec<u8>, u64)>),
}

/// The first step of a read from another node on the plugin runtime: the size check,
/// which returns the hash itself up to [`SCRIPT_RETURN_BYTES`], only the bundle's sending
/// records for a larger bundle within the limits, `BundleTooLarge` over a limit. Lets a
/// reader decide whether a large bundle is worth pulling before any of its bytes leave
/// the store.
pub async fn probe_async(
    store: &Store,
    ns: &str,
    chain: &str,
    max_state: u32,
) -> Result<Probe, CallError> {
    let reply = store
        .query_bundle_async(&request(ns, chain, max_state, SCRIPT_RETURN_BYTES))
        .await?;
    let records = sending_records(&reply);
    match checked(reply) {
        Checked::Large => Ok(Probe::Large(records)),
        Checked::Hash(v) => hash_pairs(v)
            .map(Probe::Hash)
            .map_err(|m| store.reply_error(m)),
        Checked::TooLarge(state, reserved) => {
            Err(too_large(store, chain, max_state, state, reserved))
        }
    }
}

/// KEYS: bundle. ARGV: the most state field names to return, then task ids. Returns
/// `{bytes of the state fields, bytes of the fields of the task ids, bytes of the reserved
/// fields, name, name..}` (bytes of names and values; the names of the state fields, at
/// most ARGV[1] of them): what an election needs to know of a bundle before any of its
/// bytes are read, and the limits' check.
pub(crate) const SIZES: &str = r#"
local key = KEYS[1]
local most = tonumber(ARGV[1])
local state, own, reserved = 0, 0, 0
local names = {}
for _, f in ipairs(redis.call('HKEYS', key)) do
  local n = #f + redis.call('HSTRLEN', key, f)
  if string.byte(f, 1) == 64 then
    reserved = reserved + n
  else
    state = state + n
    if #names < most then
      names[#names + 1] = f
    end
  end
end
for i = 2, #ARGV do
  local n = redis.call('HSTRLEN', key, ARGV[i])
  if n > 0 then
    own = own + #ARGV[i] + n
  end
end
local out = {state, own, reserved}
for _, f in ipairs(names) do
  out[#out + 1] = f
end
return out
"#;

static SIZES_SCRIPT: Script = Script::new(SIZES);

/// The sizes of a bundle ([`SIZES`]), in bytes of names and values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizes {
    /// All state fields.
    pub state: u64,
    /// The fields of the tasks asked about.
    pub own: u64,
    /// The reserved (`@`) fields.
    pub reserved: u64,
    /// The names of the state fields, if there are at most as many as were asked for
    /// (`None`: more, or a name that is not an id).
    pub fields: Option<Vec<String>>,
}

impl Sizes {
    /// `BundleTooLarge` (naming the chain and `store`) if the bundle is over either limit
    /// for `max_state` bytes of state, as the size check of [`READ`] would answer.
    pub fn check(&self, store: &Store, chain: &str, max_state: u32) -> Result<(), CallError> {
        if self.state > u64::from(max_state) || self.reserved > reserved_limit(max_state) {
            let n = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
            return Err(too_large(
                store,
                chain,
                max_state,
                n(self.state),
                n(self.reserved),
            ));
        }
        Ok(())
    }
}

/// The sizes of `chain`'s bundle on `store` ([`SIZES`]), `tasks` the fields of `own`, with
/// the names of its state fields if there are at most `most`.
pub async fn sizes_async(
    store: &Store,
    ns: &str,
    chain: &str,
    tasks: &[String],
    most: usize,
) -> Result<Sizes, CallError> {
    let mut cmd = SIZES_SCRIPT.cmd();
    cmd.arg(1).arg(keys::bundle(ns, chain)).arg(most + 1);
    for t in tasks {
        cmd.arg(t);
    }
    let reply = store.query_async(&crate::store::Request::Cmd(cmd)).await?;
    if let Value::Array(v) = &reply {
        if let [Value::Int(state), Value::Int(own), Value::Int(reserved), names @ ..] = v.as_slice()
        {
            let n = |i: i64| u64::try_from(i).unwrap_or(0);
            let fields: Option<Vec<String>> = names
                .iter()
                .map(|name| match name {
                    Value::BulkString(b) if skylark_abi::ids::validate(b).is_ok() => {
                        String::from_utf8(b.clone()).ok()
                    }
                    _ => None,
                })
                .collect();
            return Ok(Sizes {
                state: n(*state),
                own: n(*own),
                reserved: n(*reserved),
                fields: fields.filter(|f| f.len() <= most),
            });
        }
    }
    Err(store.reply_error(format!(
        "bundle sizes of chain {chain:?}: expected three integers"
    )))
}

/// Reads `chain`'s bundle from `store` on the plugin runtime with a plain `HGETALL`, for a
/// bundle whose [`Sizes`] were just checked (a propagation job's snapshot of its own
/// node's bundle): without the script's copies through Lua, which took five times a plain
/// `HGETALL` for large bundles and, at 20 MB, longer than a consumer takes to start
/// (issue 13). The reply is bounded as any bundle read's, so a bundle that grew past the
/// limits since the check fails the read instead of streaming in.
pub async fn read_checked_async(
    store: &Store,
    ns: &str,
    chain: &str,
) -> Result<HashPairs, CallError> {
    let read = BundleRead::new(redis::cmd("HGETALL").arg(keys::bundle(ns, chain)).clone());
    let reply = store.query_bundle_async(&read).await?;
    hash_pairs(reply).map_err(|m| store.reply_error(m))
}

/// The sending records a `Large` answer of [`READ`] carries after its first three items:
/// (field, unix ms); pairs of another shape are skipped (another node's data).
fn sending_records(reply: &Value) -> Vec<(Vec<u8>, u64)> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    if items.len() <= 3 {
        return Vec::new();
    }
    items[3..]
        .chunks(2)
        .filter_map(|pair| match pair {
            [Value::BulkString(f), Value::BulkString(v)]
                if f.starts_with(keys::SENDING_PREFIX.as_bytes()) =>
            {
                Some((f.clone(), keys::incoming_until(v)))
            }
            _ => None,
        })
        .collect()
}

/// Reads `chain`'s bundle from `store` on the plugin runtime, size-checked first (the
/// hash through the script: the runtime's connections are multiplexed).
pub async fn read_async(
    store: &Store,
    ns: &str,
    chain: &str,
    max_state: u32,
) -> Result<HashPairs, CallError> {
    let reply = store
        .query_bundle_async(&request(ns, chain, max_state, u64::MAX))
        .await?;
    pairs(store, chain, max_state, reply)
}
