//! The call protocols (id checks, `FieldRef` arrays, the get-bundle buffer protocol, error
//! message retrieval), written against a small [`Host`] trait so that they can be
//! unit-tested on any target with a fake host. [`RawHost`] implements the trait with the
//! real imports from [`crate::raw`].

use crate::bundle::Bundle;
use crate::error::{Error, Result};
use crate::raw;
use skylark_abi::ids;
use skylark_abi::layout::{FieldRef, GetResult};
use skylark_abi::Status;
use std::collections::BTreeSet;

/// Capacity of the buffer the first `skylark_get_bundle` call offers: 64 KiB of values
/// plus 4 KiB for what the layout adds around them (the table layout's header and field
/// records, names, versions, placement), so that a bundle of one 64 KiB value arrives in
/// one host call. Larger bundles are fetched with exactly one `skylark_take_result` call.
/// The buffer is reserved, not zero-filled (the host writes into its spare capacity), and
/// a bundle of less than half of it is moved into a buffer of its own size.
pub const DEFAULT_GET_BUFFER: usize = 68 * 1024;

/// Size of the first buffer offered to `skylark_last_error`.
const ERROR_BUFFER: usize = 512;
/// Longest error message the SDK reads.
const MAX_ERROR_LEN: usize = 64 * 1024;

/// The host call that delivers a bundle into a buffer ([`Host::deliver_into`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Delivery<'a> {
    /// `skylark_get_bundle` of `chain` with the encoded options `opts`.
    Get { chain: &'a [u8], opts: &'a [u8] },
    /// `skylark_take_result` of the result the host keeps under `handle`.
    Take { handle: u32 },
}

/// The host calls, with guest memory expressed as slices instead of raw offsets.
/// Each method returns the raw status code.
pub(crate) trait Host {
    fn put(&mut self, chain: &[u8], task: &[u8], value: &[u8], opts: &[u8]) -> i32;
    fn put_many(&mut self, chain: &[u8], entries: &[FieldRef], opts: &[u8]) -> i32;
    fn put_v2(
        &mut self,
        chain: &[u8],
        entries: &[FieldRef],
        opts: &[u8],
        versions: &mut [u64],
    ) -> i32;
    fn get_bundle(
        &mut self,
        chain: &[u8],
        opts: &[u8],
        buf: &mut [u8],
        result: &mut GetResult,
    ) -> i32;
    fn take_result(&mut self, handle: u32, buf: &mut [u8], result: &mut GetResult) -> i32;
    /// `call` into the spare capacity of `buf` (empty, capacity at least `cap`) without
    /// initialising it first; on `Ok` and `TimedOut` `buf` then holds the `result.len`
    /// bytes delivered (at most `cap`). This default zero-fills and calls `get_bundle` or
    /// `take_result`; [`RawHost`] lets the host write into the capacity directly.
    fn deliver_into(
        &mut self,
        call: Delivery<'_>,
        buf: &mut Vec<u8>,
        cap: usize,
        result: &mut GetResult,
    ) -> i32 {
        buf.clear();
        buf.resize(cap, 0);
        let status = match call {
            Delivery::Get { chain, opts } => self.get_bundle(chain, opts, buf, result),
            Delivery::Take { handle } => self.take_result(handle, buf, result),
        };
        delivered(buf, status, result, cap);
        status
    }
    fn drop_result(&mut self, handle: u32) -> i32;
    fn last_error(&mut self, buf: &mut [u8], len: &mut u32) -> i32;
}

/// Cuts a zero-filled `buf` to what a `get_bundle` or `take_result` that answered
/// `status` delivered: `result.len` bytes (at most `cap`) on `Ok` and `TimedOut`,
/// nothing otherwise.
fn delivered(buf: &mut Vec<u8>, status: i32, result: &GetResult, cap: usize) {
    if status == Status::Ok.code() || status == Status::TimedOut.code() {
        buf.truncate((result.len as usize).min(cap));
    } else {
        buf.clear();
    }
}

/// The real host, reached through the imports of module `skylark`.
pub(crate) struct RawHost;

/// Length of a slice as the ABI passes it. Callers have checked it fits in `u32`.
fn len32(len: usize) -> i32 {
    len as u32 as i32
}

impl Host for RawHost {
    fn put(&mut self, chain: &[u8], task: &[u8], value: &[u8], opts: &[u8]) -> i32 {
        // SAFETY: every pointer/length pair describes a live slice that outlives the call;
        // the host only reads them.
        unsafe {
            raw::skylark_put(
                raw::addr(chain.as_ptr()),
                len32(chain.len()),
                raw::addr(task.as_ptr()),
                len32(task.len()),
                raw::addr(value.as_ptr()),
                len32(value.len()),
                raw::addr(opts.as_ptr()),
                len32(opts.len()),
            )
        }
    }

    fn put_many(&mut self, chain: &[u8], entries: &[FieldRef], opts: &[u8]) -> i32 {
        // SAFETY: as in `put`; `FieldRef` is `repr(C)` four `u32`s, which is the ABI's
        // 16-byte little-endian record on wasm32, and its pointers refer to slices the
        // caller keeps alive for the duration of the call.
        unsafe {
            raw::skylark_put_many(
                raw::addr(chain.as_ptr()),
                len32(chain.len()),
                raw::addr(entries.as_ptr()),
                len32(entries.len()),
                raw::addr(opts.as_ptr()),
                len32(opts.len()),
            )
        }
    }

    fn put_v2(
        &mut self,
        chain: &[u8],
        entries: &[FieldRef],
        opts: &[u8],
        versions: &mut [u64],
    ) -> i32 {
        // SAFETY: as in `put_many`; the host writes `8 * entries.len()` bytes at
        // `versions`, which holds exactly `entries.len()` `u64`s (little-endian on wasm32,
        // as the ABI's record) and is exclusively borrowed for the call.
        unsafe {
            raw::skylark_put_v2(
                raw::addr(chain.as_ptr()),
                len32(chain.len()),
                raw::addr(entries.as_ptr()),
                len32(entries.len()),
                raw::addr(opts.as_ptr()),
                len32(opts.len()),
                raw::addr(versions.as_mut_ptr()),
            )
        }
    }

    fn get_bundle(
        &mut self,
        chain: &[u8],
        opts: &[u8],
        buf: &mut [u8],
        result: &mut GetResult,
    ) -> i32 {
        // SAFETY: the host writes at most `buf.len()` bytes into `buf` and 8 bytes into the
        // `repr(C)` `GetResult`, both exclusively borrowed for the call.
        unsafe {
            raw::skylark_get_bundle(
                raw::addr(chain.as_ptr()),
                len32(chain.len()),
                raw::addr(opts.as_ptr()),
                len32(opts.len()),
                raw::addr(buf.as_mut_ptr()),
                len32(buf.len()),
                raw::addr(result as *mut GetResult),
            )
        }
    }

    fn take_result(&mut self, handle: u32, buf: &mut [u8], result: &mut GetResult) -> i32 {
        // SAFETY: as in `get_bundle`.
        unsafe {
            raw::skylark_take_result(
                handle as i32,
                raw::addr(buf.as_mut_ptr()),
                len32(buf.len()),
                raw::addr(result as *mut GetResult),
            )
        }
    }

    fn deliver_into(
        &mut self,
        call: Delivery<'_>,
        buf: &mut Vec<u8>,
        cap: usize,
        result: &mut GetResult,
    ) -> i32 {
        buf.clear();
        let cap = cap.min(buf.capacity());
        let out = raw::addr(buf.as_mut_ptr());
        let result_at = raw::addr(result as *mut GetResult);
        let status = match call {
            // SAFETY: the host writes at most `cap` bytes at `buf`'s pointer, which has
            // room for `cap` (its capacity), and 8 bytes into the `repr(C)` `GetResult`;
            // both are exclusively borrowed for the call, whose inputs it only reads.
            Delivery::Get { chain, opts } => unsafe {
                raw::skylark_get_bundle(
                    raw::addr(chain.as_ptr()),
                    len32(chain.len()),
                    raw::addr(opts.as_ptr()),
                    len32(opts.len()),
                    out,
                    len32(cap),
                    result_at,
                )
            },
            // SAFETY: as above.
            Delivery::Take { handle } => unsafe {
                raw::skylark_take_result(handle as i32, out, len32(cap), result_at)
            },
        };
        written(buf, status, result, cap);
        status
    }

    fn drop_result(&mut self, handle: u32) -> i32 {
        // SAFETY: touches no guest memory.
        unsafe { raw::skylark_drop_result(handle as i32) }
    }

    fn last_error(&mut self, buf: &mut [u8], len: &mut u32) -> i32 {
        // SAFETY: the host writes at most `buf.len()` bytes into `buf` and 4 into `len`.
        unsafe {
            raw::skylark_last_error(
                raw::addr(buf.as_mut_ptr()),
                len32(buf.len()),
                raw::addr(len as *mut u32),
            )
        }
    }
}

/// Checks a chain or task id against the ABI's id rules without calling the host.
pub(crate) fn check_id(kind: &str, id: &str) -> Result<()> {
    ids::validate(id.as_bytes()).map(|_| ()).map_err(|e| {
        let shown: String = id.chars().take(40).collect();
        let ellipsis = if shown.len() < id.len() { "..." } else { "" };
        Error::new(
            Status::InvalidId,
            format!("{kind} id {shown:?}{ellipsis} {e}"),
        )
    })
}

/// Checks that a length fits the ABI's unsigned 32-bit lengths.
fn check_len(what: &str, len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| {
        Error::new(
            Status::ValueTooLarge,
            format!(
                "{what} is {len} bytes; the ABI carries at most {} bytes",
                u32::MAX
            ),
        )
    })
}

/// Reads the message of the host's most recent failure, `None` if there is none or it
/// cannot be read.
fn last_error_message<H: Host>(host: &mut H) -> Option<String> {
    let mut buf = vec![0u8; ERROR_BUFFER];
    let mut len = 0u32;
    if host.last_error(&mut buf, &mut len) != Status::Ok.code() {
        return None;
    }
    let full = len as usize;
    if full <= buf.len() {
        buf.truncate(full);
    } else {
        // Truncated: ask again with room for all of it (capped), keep the first answer if
        // the second one disagrees.
        let mut bigger = vec![0u8; full.min(MAX_ERROR_LEN)];
        let mut len2 = 0u32;
        if host.last_error(&mut bigger, &mut len2) == Status::Ok.code() && len2 as usize == full {
            bigger.truncate(full);
            buf = bigger;
        }
        if full > buf.len() {
            let mut msg = String::from_utf8_lossy(&buf).into_owned();
            msg.push_str("...");
            return Some(msg);
        }
    }
    if buf.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Turns a non-zero status into an [`Error`], with the host's message.
pub(crate) fn host_error<H: Host>(host: &mut H, code: i32, call: &str) -> Error {
    let message = last_error_message(host).unwrap_or_else(|| {
        let what = Status::from_code(code).map_or("unknown status code", Status::describe);
        format!("{call}: {what}")
    });
    Error::from_code(code, message)
}

/// Builds the `FieldRef` array for `skylark_put_many`: one record per field, pointing at
/// the caller's task and value bytes (nothing is copied). Validates every task id, rejects
/// an empty list and duplicate tasks, all before the host is called.
pub(crate) fn field_refs(fields: &[(&str, &[u8])]) -> Result<Vec<FieldRef>> {
    if fields.is_empty() {
        return Err(Error::new(
            Status::TooManyFields,
            "put_many needs at least one field",
        ));
    }
    let mut seen = BTreeSet::new();
    let mut refs = Vec::with_capacity(fields.len());
    for (task, value) in fields {
        check_id("task", task)?;
        if !seen.insert(*task) {
            return Err(Error::new(
                Status::DuplicateField,
                format!("task {task:?} appears more than once in one put_many"),
            ));
        }
        let value_len = check_len(&format!("value of task {task:?}"), value.len())?;
        refs.push(FieldRef {
            task_ptr: raw::addr(task.as_ptr()) as u32,
            task_len: task.len() as u32,
            value_ptr: raw::addr(value.as_ptr()) as u32,
            value_len,
        });
    }
    Ok(refs)
}

/// `skylark_put` with guest-side checks.
pub(crate) fn put<H: Host>(
    host: &mut H,
    chain: &str,
    task: &str,
    value: &[u8],
    opts: &[u8],
) -> Result<()> {
    check_id("chain", chain)?;
    check_id("task", task)?;
    check_len(&format!("value of task {task:?}"), value.len())?;
    let status = host.put(chain.as_bytes(), task.as_bytes(), value, opts);
    outcome(host, status, "skylark_put")
}

/// `skylark_put_many` with guest-side checks.
pub(crate) fn put_many<H: Host>(
    host: &mut H,
    chain: &str,
    fields: &[(&str, &[u8])],
    opts: &[u8],
) -> Result<()> {
    check_id("chain", chain)?;
    let refs = field_refs(fields)?;
    // `fields` (and so every pointer in `refs`) stays borrowed until the call returns.
    let status = host.put_many(chain.as_bytes(), &refs, opts);
    outcome(host, status, "skylark_put_many")
}

/// `skylark_put_v2` with guest-side checks: the versions of the fields, in their order.
/// `ConditionFailed` carries the versions the node holds now ([`Error::versions`]).
pub(crate) fn put_v2<H: Host>(
    host: &mut H,
    chain: &str,
    fields: &[(&str, &[u8])],
    opts: &[u8],
) -> Result<Vec<u64>> {
    check_id("chain", chain)?;
    let refs = field_refs(fields)?;
    let mut versions = vec![0u64; refs.len()];
    // `fields` (and so every pointer in `refs`) stays borrowed until the call returns.
    let status = host.put_v2(chain.as_bytes(), &refs, opts, &mut versions);
    match Status::from_code(status) {
        Some(Status::Ok) => Ok(versions),
        Some(Status::ConditionFailed) => {
            let mut e = host_error(host, status, "skylark_put_v2");
            e.versions = versions;
            Err(e)
        }
        _ => Err(host_error(host, status, "skylark_put_v2")),
    }
}

/// `Ok` for status 0, otherwise the error with the host's message.
fn outcome<H: Host>(host: &mut H, status: i32, import: &str) -> Result<()> {
    if status == Status::Ok.code() {
        Ok(())
    } else {
        Err(host_error(host, status, import))
    }
}

/// Sets the length of `buf`, whose spare capacity the host was offered `cap` bytes of, to
/// what the host wrote: `result.len` bytes (at most `cap`) on `Ok` and `TimedOut`.
fn written(buf: &mut Vec<u8>, status: i32, result: &GetResult, cap: usize) {
    if status == Status::Ok.code() || status == Status::TimedOut.code() {
        let n = (result.len as usize).min(cap);
        // SAFETY: on `Ok` and `TimedOut` the host wrote the result's `len` bytes at the
        // start of the buffer (ABI.md, `skylark_get_bundle` and `skylark_take_result`);
        // `n` is at most that, and `cap` is at most the capacity (the callers cut it).
        unsafe { buf.set_len(n) };
    }
}

/// The get-bundle buffer protocol. Returns the encoded bundle, or `Ok(None)` on `NotFound`
/// (without reading the error message, which [`host_error`] can still fetch afterwards).
///
/// One `skylark_get_bundle` call with a buffer of `first_cap` bytes; if the host answers
/// `BufferTooSmall`, one `skylark_take_result` call with a buffer of exactly the reported
/// length. The store is never asked twice.
pub(crate) fn get_bundle_bytes<H: Host>(
    host: &mut H,
    chain: &str,
    opts: &[u8],
    first_cap: usize,
) -> Result<Option<Vec<u8>>> {
    let got = get_bundle_got(host, chain, opts, first_cap)?;
    if got.timed_out {
        return Err(host_error(
            host,
            Status::TimedOut.code(),
            "skylark_get_bundle",
        ));
    }
    Ok(got.bytes)
}

/// What the get-bundle protocol delivered.
#[derive(Debug)]
pub(crate) struct Got {
    /// The encoded bundle, `None` if there is none.
    pub bytes: Option<Vec<u8>>,
    /// The host answered `TimedOut` (a `wait_for` whose deadline passed): the bundle holds
    /// the fields present so far.
    pub timed_out: bool,
}

/// The get-bundle buffer protocol of [`get_bundle_bytes`], with `TimedOut` (from
/// `skylark_get_bundle`, or from `skylark_take_result` after `BufferTooSmall`) delivering
/// the bundle as `Ok` does, marked.
pub(crate) fn get_bundle_got<H: Host>(
    host: &mut H,
    chain: &str,
    opts: &[u8],
    first_cap: usize,
) -> Result<Got> {
    check_id("chain", chain)?;
    let cap = first_cap.min(u32::MAX as usize);
    let mut buf = Vec::with_capacity(cap);
    let mut result = GetResult::default();
    let call = Delivery::Get {
        chain: chain.as_bytes(),
        opts,
    };
    let status = host.deliver_into(call, &mut buf, cap, &mut result);
    let status = Status::from_code(status).ok_or(status);
    let timed_out = status == Ok(Status::TimedOut);
    match status {
        Ok(Status::TimedOut) if result.len == 0 => Ok(Got {
            bytes: None,
            timed_out,
        }),
        Ok(Status::Ok | Status::TimedOut) => {
            let len = result.len as usize;
            if len > cap || len != buf.len() {
                return Err(Error::new(
                    Status::Internal,
                    format!("skylark_get_bundle reported {len} bytes in a {cap}-byte buffer"),
                ));
            }
            // A small bundle read in place keeps its buffer: not the whole first one.
            if len < cap / 2 {
                buf.shrink_to_fit();
            }
            Ok(Got {
                bytes: Some(buf),
                timed_out,
            })
        }
        Ok(Status::NotFound) => Ok(Got {
            bytes: None,
            timed_out,
        }),
        Ok(Status::BufferTooSmall) => {
            drop(buf);
            let (bytes, timed_out) = take_exact(host, result)?;
            Ok(Got {
                bytes: Some(bytes),
                timed_out,
            })
        }
        Ok(other) => Err(host_error(host, other.code(), "skylark_get_bundle")),
        Err(code) => Err(host_error(host, code, "skylark_get_bundle")),
    }
}

/// Fetches and decodes a chain's bundle; `Ok(None)` if the chain has none.
pub(crate) fn try_get_bundle<H: Host>(
    host: &mut H,
    chain: &str,
    opts: &[u8],
) -> Result<Option<Bundle>> {
    let Some(bytes) = get_bundle_bytes(host, chain, opts, DEFAULT_GET_BUFFER)? else {
        return Ok(None);
    };
    decode_for(chain, bytes).map(Some)
}

/// A get with `wait_for`: the bundle (complete or, after `TimedOut`, what was there) and
/// whether the deadline passed.
pub(crate) fn wait_for<H: Host>(
    host: &mut H,
    chain: &str,
    opts: &[u8],
) -> Result<(Option<Bundle>, bool)> {
    let got = get_bundle_got(host, chain, opts, DEFAULT_GET_BUFFER)?;
    let bundle = match got.bytes {
        Some(bytes) => Some(decode_for(chain, bytes)?),
        None => None,
    };
    Ok((bundle, got.timed_out))
}

/// Decodes the bundle the host delivered for `chain`, checking it is that chain's.
/// The table layout is kept as the bundle's storage, not copied.
fn decode_for(chain: &str, bytes: Vec<u8>) -> Result<Bundle> {
    let bundle = Bundle::from_bytes(bytes).map_err(|e| {
        Error::new(
            Status::Internal,
            format!(
                "skylark_get_bundle delivered a bad encoding for chain {chain:?}: {}",
                e.message
            ),
        )
    })?;
    if bundle.chain() != chain {
        return Err(Error::new(
            Status::Internal,
            format!(
                "asked for the bundle of chain {chain:?}, the host delivered chain {:?}",
                bundle.chain()
            ),
        ));
    }
    Ok(bundle)
}

/// Fetches and decodes a chain's bundle; a missing bundle is a `NotFound` error carrying
/// the host's message.
pub(crate) fn get_bundle<H: Host>(host: &mut H, chain: &str, opts: &[u8]) -> Result<Bundle> {
    match try_get_bundle(host, chain, opts)? {
        Some(bundle) => Ok(bundle),
        None => Err(host_error(
            host,
            Status::NotFound.code(),
            "skylark_get_bundle",
        )),
    }
}

/// Collects a result the host keeps under a handle, in a buffer of exactly its length;
/// also says whether the host marked it `TimedOut` (a `wait_for` whose deadline passed).
fn take_exact<H: Host>(host: &mut H, pending: GetResult) -> Result<(Vec<u8>, bool)> {
    let len = pending.len as usize;
    let handle = pending.handle;
    if handle == 0 {
        return Err(Error::new(
            Status::Internal,
            format!("skylark_get_bundle answered BufferTooSmall ({len} bytes) without a handle"),
        ));
    }
    let mut buf = Vec::new();
    if buf.try_reserve_exact(len).is_err() {
        host.drop_result(handle);
        return Err(Error::new(
            Status::BundleTooLarge,
            format!("cannot allocate {len} bytes for the bundle"),
        ));
    }
    let mut result = GetResult::default();
    let status = host.deliver_into(Delivery::Take { handle }, &mut buf, len, &mut result);
    let timed_out = status == Status::TimedOut.code();
    if status != Status::Ok.code() && !timed_out {
        // Read the message before anything else can overwrite it.
        let err = host_error(host, status, "skylark_take_result");
        if status == Status::BufferTooSmall.code() {
            // Still pending on the host: release it.
            host.drop_result(handle);
        }
        return Err(err);
    }
    let got = result.len as usize;
    if got > len || got != buf.len() {
        return Err(Error::new(
            Status::Internal,
            format!("skylark_take_result reported {got} bytes in a {len}-byte buffer"),
        ));
    }
    Ok((buf, timed_out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use skylark_abi::wire::{encode_bundle, Source, Tier};
    use std::collections::HashMap;

    /// An in-memory host: a map of encoded bundles, pending results, a last-error message
    /// and a log of calls.
    #[derive(Default)]
    struct FakeHost {
        bundles: HashMap<String, Vec<u8>>,
        pending: HashMap<u32, Vec<u8>>,
        next_handle: u32,
        last_error: String,
        calls: Vec<String>,
        /// Status `put`/`put_many`/`get_bundle` fail with, if set.
        fail: Option<(Status, &'static str)>,
        put_many_seen: Vec<(usize, Vec<u32>)>,
        /// Deliver results as a `wait_for` that timed out.
        timed_out: bool,
    }

    impl FakeHost {
        fn with_bundle(chain: &str, fields: &[(&str, &[u8])]) -> Self {
            let mut host = FakeHost::default();
            let src = Source {
                tier: Tier::Local,
                node: "edge1".into(),
            };
            let enc = encode_bundle(chain, &src, fields.iter().copied()).unwrap();
            host.bundles.insert(chain.to_string(), enc);
            host
        }

        fn fail_with(&mut self, status: Status, msg: &str) -> i32 {
            self.last_error = msg.to_string();
            status.code()
        }

        fn ok(&mut self) -> i32 {
            self.last_error.clear();
            0
        }
    }

    impl Host for FakeHost {
        fn put(&mut self, chain: &[u8], task: &[u8], value: &[u8], _opts: &[u8]) -> i32 {
            self.calls.push("put".into());
            if let Some((st, msg)) = self.fail {
                return self.fail_with(st, msg);
            }
            let chain = String::from_utf8(chain.to_vec()).unwrap();
            let task = String::from_utf8(task.to_vec()).unwrap();
            let mut fields: Vec<(String, Vec<u8>)> = match self.bundles.get(&chain) {
                Some(enc) => Bundle::decode(enc)
                    .unwrap()
                    .iter()
                    .map(|(t, v)| (t.to_string(), v.to_vec()))
                    .collect(),
                None => Vec::new(),
            };
            fields.retain(|(t, _)| *t != task);
            fields.push((task, value.to_vec()));
            let enc = encode_bundle(
                &chain,
                &Source::default(),
                fields.iter().map(|(t, v)| (t.as_str(), v.as_slice())),
            )
            .unwrap();
            self.bundles.insert(chain, enc);
            self.ok()
        }

        fn put_many(&mut self, _chain: &[u8], entries: &[FieldRef], _opts: &[u8]) -> i32 {
            self.calls.push("put_many".into());
            if let Some((st, msg)) = self.fail {
                return self.fail_with(st, msg);
            }
            // Pointers are truncated to 32 bits off wasm32, so only lengths are checked.
            self.put_many_seen
                .push((entries.len(), entries.iter().map(|e| e.value_len).collect()));
            self.ok()
        }

        fn put_v2(
            &mut self,
            chain: &[u8],
            entries: &[FieldRef],
            opts: &[u8],
            versions: &mut [u64],
        ) -> i32 {
            let st = self.put_many(chain, entries, opts);
            self.calls.last_mut().unwrap().push_str("_v2");
            // Version i + 1 for field i; a failed condition reports version 9 held.
            let held = if st == Status::ConditionFailed.code() {
                9
            } else {
                0
            };
            for (i, v) in versions.iter_mut().enumerate() {
                *v = held.max(i as u64 + 1);
            }
            st
        }

        fn get_bundle(
            &mut self,
            chain: &[u8],
            _opts: &[u8],
            buf: &mut [u8],
            result: &mut GetResult,
        ) -> i32 {
            self.calls.push(format!("get_bundle cap={}", buf.len()));
            if let Some((st, msg)) = self.fail {
                return self.fail_with(st, msg);
            }
            let chain = std::str::from_utf8(chain).unwrap();
            let Some(enc) = self.bundles.get(chain).cloned() else {
                *result = GetResult::default();
                return self.fail_with(Status::NotFound, &format!("no bundle for chain {chain}"));
            };
            if enc.len() <= buf.len() {
                buf[..enc.len()].copy_from_slice(&enc);
                *result = GetResult {
                    len: enc.len() as u32,
                    handle: 0,
                };
                if self.timed_out {
                    return self.fail_with(Status::TimedOut, "wait_for timed out");
                }
                return self.ok();
            }
            self.next_handle += 1;
            let handle = self.next_handle;
            *result = GetResult {
                len: enc.len() as u32,
                handle,
            };
            self.pending.insert(handle, enc);
            self.fail_with(Status::BufferTooSmall, "buffer too small")
        }

        fn take_result(&mut self, handle: u32, buf: &mut [u8], result: &mut GetResult) -> i32 {
            self.calls
                .push(format!("take_result {handle} cap={}", buf.len()));
            let Some(enc) = self.pending.get(&handle) else {
                return self.fail_with(Status::UnknownHandle, &format!("no result {handle}"));
            };
            let len = enc.len();
            *result = GetResult {
                len: len as u32,
                handle,
            };
            if len > buf.len() {
                return self.fail_with(Status::BufferTooSmall, "still too small");
            }
            let enc = self.pending.remove(&handle).unwrap();
            buf[..len].copy_from_slice(&enc);
            result.handle = 0;
            if self.timed_out {
                return self.fail_with(Status::TimedOut, "taken: wait_for timed out");
            }
            self.ok()
        }

        fn drop_result(&mut self, handle: u32) -> i32 {
            self.calls.push(format!("drop_result {handle}"));
            if self.pending.remove(&handle).is_some() {
                self.ok()
            } else {
                self.fail_with(Status::UnknownHandle, "no such handle")
            }
        }

        fn last_error(&mut self, buf: &mut [u8], len: &mut u32) -> i32 {
            self.calls.push(format!("last_error cap={}", buf.len()));
            let msg = self.last_error.as_bytes();
            let n = msg.len().min(buf.len());
            buf[..n].copy_from_slice(&msg[..n]);
            *len = msg.len() as u32;
            0
        }
    }

    fn decode(bytes: Option<Vec<u8>>) -> Bundle {
        Bundle::decode(&bytes.expect("bundle present")).unwrap()
    }

    #[test]
    fn timed_out_delivers_the_partial_bundle_marked() {
        let big = vec![5u8; 100_000];
        for (fields, cap) in [
            (vec![("a", &b"x"[..])], DEFAULT_GET_BUFFER),
            (vec![("a", &big[..])], 64),
        ] {
            let mut host = FakeHost::with_bundle("c", &fields);
            host.timed_out = true;
            let got = get_bundle_got(&mut host, "c", &[], cap).unwrap();
            assert!(got.timed_out);
            let b = decode(got.bytes);
            assert_eq!(b.get("a").map(<[u8]>::len), Some(fields[0].1.len()));
            // The plain get turns it into an error with the host's message.
            let mut host = FakeHost::with_bundle("c", &fields);
            host.timed_out = true;
            let err = get_bundle_bytes(&mut host, "c", &[], cap).unwrap_err();
            assert!(err.is(Status::TimedOut), "{err}");
            assert!(err.message.contains("wait_for timed out"), "{err}");
        }
        // No bundle at all yet: TimedOut with length 0.
        struct Empty(FakeHost);
        impl Host for Empty {
            fn put(&mut self, c: &[u8], t: &[u8], v: &[u8], o: &[u8]) -> i32 {
                self.0.put(c, t, v, o)
            }
            fn put_many(&mut self, c: &[u8], e: &[FieldRef], o: &[u8]) -> i32 {
                self.0.put_many(c, e, o)
            }
            fn put_v2(&mut self, c: &[u8], e: &[FieldRef], o: &[u8], v: &mut [u64]) -> i32 {
                self.0.put_v2(c, e, o, v)
            }
            fn get_bundle(&mut self, _: &[u8], _: &[u8], _: &mut [u8], r: &mut GetResult) -> i32 {
                *r = GetResult::default();
                self.0.fail_with(Status::TimedOut, "nothing yet")
            }
            fn take_result(&mut self, h: u32, b: &mut [u8], r: &mut GetResult) -> i32 {
                self.0.take_result(h, b, r)
            }
            fn drop_result(&mut self, h: u32) -> i32 {
                self.0.drop_result(h)
            }
            fn last_error(&mut self, b: &mut [u8], l: &mut u32) -> i32 {
                self.0.last_error(b, l)
            }
        }
        let (bundle, timed_out) = wait_for(&mut Empty(FakeHost::default()), "c", &[]).unwrap();
        assert!(bundle.is_none() && timed_out);
    }

    #[test]
    fn fits_first_time() {
        let mut host = FakeHost::with_bundle("c1", &[("preprocess", b"img"), ("detect", b"d")]);
        let b = decode(get_bundle_bytes(&mut host, "c1", &[], DEFAULT_GET_BUFFER).unwrap());
        assert_eq!(b.chain(), "c1");
        assert_eq!(b.source().node, "edge1");
        assert_eq!(b.get("preprocess"), Some(&b"img"[..]));
        assert_eq!(host.calls, [format!("get_bundle cap={DEFAULT_GET_BUFFER}")]);
    }

    #[test]
    fn too_small_then_take_exactly_once() {
        let big = vec![0x5au8; 100_000];
        let mut host = FakeHost::with_bundle("c2", &[("preprocess", &big)]);
        let enc_len = host.bundles["c2"].len();
        let b = decode(get_bundle_bytes(&mut host, "c2", &[], DEFAULT_GET_BUFFER).unwrap());
        assert_eq!(b.get("preprocess"), Some(&big[..]));
        // One store round trip, then one take with a buffer of exactly the encoded length.
        assert_eq!(
            host.calls,
            [
                format!("get_bundle cap={DEFAULT_GET_BUFFER}"),
                format!("take_result 1 cap={enc_len}")
            ]
        );
        assert!(host.pending.is_empty());
    }

    #[test]
    fn tiny_first_buffer_works_too() {
        let mut host = FakeHost::with_bundle("c3", &[("a", b"xyz")]);
        let b = decode(get_bundle_bytes(&mut host, "c3", &[], 1).unwrap());
        assert_eq!(b.get("a"), Some(&b"xyz"[..]));
        assert_eq!(host.calls.len(), 2);
    }

    #[test]
    fn not_found_is_none_and_message_is_still_readable() {
        let mut host = FakeHost::default();
        assert_eq!(
            get_bundle_bytes(&mut host, "nope", &[], DEFAULT_GET_BUFFER).unwrap(),
            None
        );
        assert_eq!(host.calls, [format!("get_bundle cap={DEFAULT_GET_BUFFER}")]);
        let err = host_error(&mut host, Status::NotFound.code(), "skylark_get_bundle");
        assert!(err.is_not_found());
        assert_eq!(err.message, "no bundle for chain nope");
    }

    #[test]
    fn one_64_kib_value_arrives_in_the_first_buffer() {
        // The table layout of one 64 KiB value with its version, under a long chain and
        // task id: the header and names push it past 64 KiB, not past the first buffer.
        let value = vec![7u8; 64 * 1024];
        let chain = "c".repeat(64);
        let task = "t".repeat(64);
        let fields: Vec<skylark_abi::table::FieldIn> =
            vec![(task.as_bytes(), value.as_slice(), u64::MAX)];
        let block = skylark_abi::table::plan(&chain, &Source::default(), &fields, &[])
            .unwrap()
            .to_vec();
        assert!(block.len() > 64 * 1024, "{}", block.len());
        let mut host = FakeHost::default();
        host.bundles.insert(chain.clone(), block);
        let b = get_bundle(&mut host, &chain, &[]).unwrap();
        assert_eq!(b.get(&task).map(<[u8]>::len), Some(value.len()));
        assert_eq!(
            host.calls,
            [format!("get_bundle cap={DEFAULT_GET_BUFFER}")],
            "one host call, no skylark_take_result"
        );
    }

    #[test]
    fn typed_get_bundle_and_not_found_error() {
        let mut host = FakeHost::with_bundle("c9", &[("detect", b"d")]);
        let b = get_bundle(&mut host, "c9", &[]).unwrap();
        assert_eq!(b.get("detect"), Some(&b"d"[..]));
        assert_eq!(try_get_bundle(&mut host, "zz", &[]).unwrap(), None);
        let err = get_bundle(&mut host, "zz", &[]).unwrap_err();
        assert!(err.is_not_found());
        assert_eq!(err.to_string(), "NotFound (1): no bundle for chain zz");
        // The host's bundle must be for the chain asked for.
        let other = host.bundles["c9"].clone();
        host.bundles.insert("c10".into(), other);
        let err = get_bundle(&mut host, "c10", &[]).unwrap_err();
        assert!(err.is(Status::Internal), "{err}");
        host.bundles.insert("c11".into(), b"garbage".to_vec());
        let err = try_get_bundle(&mut host, "c11", &[]).unwrap_err();
        assert!(err.is(Status::Internal), "{err}");
    }

    #[test]
    fn store_failure_carries_host_message() {
        let mut host = FakeHost {
            fail: Some((Status::StoreUnavailable, "connect 127.0.0.1:6379: refused")),
            ..FakeHost::default()
        };
        let err = get_bundle_bytes(&mut host, "c", &[], DEFAULT_GET_BUFFER).unwrap_err();
        assert_eq!(err.status, Some(Status::StoreUnavailable));
        assert_eq!(err.code, 20);
        assert_eq!(err.message, "connect 127.0.0.1:6379: refused");
        assert_eq!(
            err.to_string(),
            "StoreUnavailable (20): connect 127.0.0.1:6379: refused"
        );
    }

    #[test]
    fn long_error_message_is_read_whole() {
        let long = "x".repeat(2000);
        let mut host = FakeHost {
            last_error: long.clone(),
            ..FakeHost::default()
        };
        let err = host_error(&mut host, Status::StoreError.code(), "call");
        assert_eq!(err.message, long);
        assert_eq!(host.calls, ["last_error cap=512", "last_error cap=2000"]);
    }

    #[test]
    fn missing_message_falls_back_to_description() {
        let mut host = FakeHost::default();
        let err = host_error(&mut host, 4242, "skylark_put");
        assert_eq!(err.status, None);
        assert_eq!(err.code, 4242);
        assert_eq!(err.message, "skylark_put: unknown status code");
        let err = host_error(&mut RawHost, Status::StoreTimeout.code(), "skylark_put");
        assert_eq!(err.message, "skylark_put: store timeout");
    }

    #[test]
    fn unknown_handle_on_take() {
        struct Evicting(FakeHost);
        impl Host for Evicting {
            fn put(&mut self, c: &[u8], t: &[u8], v: &[u8], o: &[u8]) -> i32 {
                self.0.put(c, t, v, o)
            }
            fn put_many(&mut self, c: &[u8], e: &[FieldRef], o: &[u8]) -> i32 {
                self.0.put_many(c, e, o)
            }
            fn put_v2(&mut self, c: &[u8], e: &[FieldRef], o: &[u8], v: &mut [u64]) -> i32 {
                self.0.put_v2(c, e, o, v)
            }
            fn get_bundle(&mut self, c: &[u8], o: &[u8], b: &mut [u8], r: &mut GetResult) -> i32 {
                let st = self.0.get_bundle(c, o, b, r);
                self.0.pending.clear(); // evicted before the take
                st
            }
            fn take_result(&mut self, h: u32, b: &mut [u8], r: &mut GetResult) -> i32 {
                self.0.take_result(h, b, r)
            }
            fn drop_result(&mut self, h: u32) -> i32 {
                self.0.drop_result(h)
            }
            fn last_error(&mut self, b: &mut [u8], l: &mut u32) -> i32 {
                self.0.last_error(b, l)
            }
        }
        let mut host = Evicting(FakeHost::with_bundle("c", &[("a", &[1u8; 100])]));
        let err = get_bundle_bytes(&mut host, "c", &[], 16).unwrap_err();
        assert!(err.is(Status::UnknownHandle), "{err}");
        assert_eq!(err.message, "no result 1");
    }

    #[test]
    fn invalid_ids_never_reach_the_host() {
        let mut host = FakeHost::default();
        for chain in ["", "a:b", "with space", &"c".repeat(129)] {
            let err = put(&mut host, chain, "t", b"v", &[]).unwrap_err();
            assert!(err.is(Status::InvalidId), "{chain:?}: {err}");
            let err = get_bundle_bytes(&mut host, chain, &[], 64).unwrap_err();
            assert!(err.is(Status::InvalidId), "{chain:?}: {err}");
            let err = put_many(&mut host, chain, &[("t", b"v")], &[]).unwrap_err();
            assert!(err.is(Status::InvalidId), "{chain:?}: {err}");
        }
        let err = put(&mut host, "c", "t*", b"v", &[]).unwrap_err();
        assert!(err.message.starts_with("task id \"t*\""), "{err}");
        let err = put_many(&mut host, "c", &[("ok", b"v"), ("", b"w")], &[]).unwrap_err();
        assert!(err.is(Status::InvalidId), "{err}");
        assert!(host.calls.is_empty(), "{:?}", host.calls);
        // Long ids are shown shortened.
        let err = put(&mut host, &"z".repeat(200), "t", b"v", &[]).unwrap_err();
        assert_eq!(
            err.message,
            format!(
                "chain id {:?}... is 200 bytes long (max 128)",
                "z".repeat(40)
            )
        );
    }

    #[test]
    fn put_stores_and_reports_host_failures() {
        let mut host = FakeHost::default();
        put(&mut host, "c", "preprocess", b"abc", &[]).unwrap();
        put(&mut host, "c", "detect", b"", &[]).unwrap();
        let b = decode(get_bundle_bytes(&mut host, "c", &[], 1024).unwrap());
        assert_eq!(b.len(), 2);
        assert_eq!(b.get("detect"), Some(&b""[..]));

        host.fail = Some((Status::ValueTooLarge, "value of 9 MiB above 8 MiB"));
        let err = put(&mut host, "c", "t", b"v", &[]).unwrap_err();
        assert!(err.is(Status::ValueTooLarge));
        assert_eq!(err.message, "value of 9 MiB above 8 MiB");
    }

    #[test]
    fn field_ref_array_points_at_callers_bytes() {
        let v1 = vec![1u8; 10];
        let v2 = b"xy".to_vec();
        let fields: [(&str, &[u8]); 2] = [("preprocess", &v1), ("detect", &v2)];
        let refs = field_refs(&fields).unwrap();
        assert_eq!(refs.len(), 2);
        for (r, (task, value)) in refs.iter().zip(fields.iter()) {
            assert_eq!(r.task_len as usize, task.len());
            assert_eq!(r.value_len as usize, value.len());
            assert_eq!(r.task_ptr, task.as_ptr() as usize as u32);
            assert_eq!(r.value_ptr, value.as_ptr() as usize as u32);
        }
        // The array is the ABI's 16-byte records back to back.
        assert_eq!(
            std::mem::size_of_val(refs.as_slice()),
            2 * skylark_abi::layout::FieldRef::SIZE
        );
    }

    #[test]
    fn put_v2_returns_versions_and_a_failed_condition_carries_them() {
        let mut host = FakeHost::default();
        let v = put_v2(&mut host, "c", &[("a", b"1"), ("b", b"22")], &[]).unwrap();
        assert_eq!(v, [1, 2]);
        assert_eq!(host.calls, ["put_many_v2"]);
        host.fail = Some((Status::ConditionFailed, "if_version 3 does not hold"));
        let err = put_v2(&mut host, "c", &[("a", b"1")], &[]).unwrap_err();
        assert!(err.is(Status::ConditionFailed), "{err}");
        assert_eq!(err.versions, [9]);
        assert_eq!(err.message, "if_version 3 does not hold");
        host.fail = Some((Status::IdempotencyConflict, "other bytes"));
        let err = put_v2(&mut host, "c", &[("a", b"1")], &[]).unwrap_err();
        assert!(err.is(Status::IdempotencyConflict), "{err}");
        assert!(err.versions.is_empty());
        // Ids and the field list are checked before the host is called.
        let calls = host.calls.len();
        assert!(put_v2(&mut host, "c:1", &[("a", b"1")], &[])
            .unwrap_err()
            .is(Status::InvalidId));
        assert!(put_v2(&mut host, "c", &[], &[])
            .unwrap_err()
            .is(Status::TooManyFields));
        assert_eq!(host.calls.len(), calls);
    }

    #[test]
    fn field_ref_array_rejects_empty_and_duplicates() {
        assert!(field_refs(&[]).unwrap_err().is(Status::TooManyFields));
        let err = field_refs(&[("a", b"1"), ("b", b"2"), ("a", b"3")]).unwrap_err();
        assert!(err.is(Status::DuplicateField), "{err}");
        let mut host = FakeHost::default();
        put_many(&mut host, "c", &[("a", b"1"), ("b", b"22")], &[]).unwrap();
        assert_eq!(host.put_many_seen, [(2, vec![1, 2])]);
    }
}
