//! Reading a bundle with its size checked before its bytes leave the store (issue 16
//! point 5). One Lua script sums the field names and value lengths (`HKEYS`, `HSTRLEN`)
//! and returns the whole hash (`HGETALL`) only if the state fields hold at most
//! `SKYLARK_MAX_BUNDLE_BYTES` and the reserved ones (versions, placement record,
//! announcements, idempotency records) at most [`reserved_limit`]; otherwise it returns the two sums as
//! integers, which no `HGETALL` reply contains. A hostile or overgrown store therefore
//! never streams more than about `3 × SKYLARK_MAX_BUNDLE_BYTES + 1 MiB` into this process
//! for one bundle, and nothing of an oversized bundle is cached or copied.

use crate::error::CallError;
use crate::keys;
use crate::script::Script;
use crate::store::{hash_pairs, HashPairs, Request, Store};
use redis::Value;
use skylark_abi::Status;

/// KEYS: bundle. ARGV: most state bytes, most reserved bytes. Returns the hash as
/// `HGETALL` does, or `{state bytes, reserved bytes}` (counted until a limit was passed).
const READ: &str = r#"
local key = KEYS[1]
local max_state, max_reserved = tonumber(ARGV[1]), tonumber(ARGV[2])
local state, reserved = 0, 0
for _, f in ipairs(redis.call('HKEYS', key)) do
  local n = #f + redis.call('HSTRLEN', key, f)
  if string.byte(f, 1) == 64 then
    reserved = reserved + n
  else
    state = state + n
  end
  if state > max_state or reserved > max_reserved then
    return {state, reserved}
  end
end
return redis.call('HGETALL', key)
"#;

/// Most bytes of reserved fields (`@v:`, `@at:`, `@incoming:`, `@idem:`...) a bundle may hold next to
/// `max_state` bytes of state: twice as much plus 1 MiB (a version is about 20 bytes per
/// field, however small the field).
pub fn reserved_limit(max_state: u32) -> u64 {
    2 * u64::from(max_state) + (1 << 20)
}

/// [`READ`], called by digest.
static READ_SCRIPT: Script = Script::new(READ);

/// The request that reads `chain`'s bundle if it is within `max_state` bytes of state.
pub fn request(ns: &str, chain: &str, max_state: u32) -> Request {
    let mut cmd = READ_SCRIPT.cmd();
    cmd.arg(1)
        .arg(keys::bundle(ns, chain))
        .arg(max_state)
        .arg(reserved_limit(max_state));
    Request::Cmd(cmd)
}

/// The bundle's fields from the reply to [`request`], or `BundleTooLarge` (naming the
/// chain and `store`) when the script refused to send it.
pub fn pairs(
    store: &Store,
    chain: &str,
    max_state: u32,
    reply: Value,
) -> Result<HashPairs, CallError> {
    if let Value::Array(items) = &reply {
        if let [Value::Int(state), Value::Int(reserved)] = items.as_slice() {
            let what = if *state > i64::from(max_state) {
                format!("more than {max_state} bytes of state (at least {state} bytes)")
            } else {
                format!(
                    "more than {} bytes of versions and placement entries (at least \
                     {reserved})",
                    reserved_limit(max_state)
                )
            };
            return Err(CallError::new(
                Status::BundleTooLarge,
                format!(
                    "bundle of chain {chain:?} on {} holds {what}; SKYLARK_MAX_BUNDLE_BYTES is \
                     {max_state}: not read",
                    store.name()
                ),
            ));
        }
    }
    hash_pairs(reply).map_err(|m| store.reply_error(m))
}

/// Reads `chain`'s bundle from `store` on the calling thread, size-checked first.
pub fn read(store: &Store, ns: &str, chain: &str, max_state: u32) -> Result<HashPairs, CallError> {
    let reply = store.query(&request(ns, chain, max_state))?;
    pairs(store, chain, max_state, reply)
}

/// Reads `chain`'s bundle from `store` on the plugin runtime, size-checked first.
pub async fn read_async(
    store: &Store,
    ns: &str,
    chain: &str,
    max_state: u32,
) -> Result<HashPairs, CallError> {
    let reply = store.query_async(&request(ns, chain, max_state)).await?;
    pairs(store, chain, max_state, reply)
}
