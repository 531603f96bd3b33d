//! The host functions' behaviour: one [`Instance`] per `skylark` module instance holds the
//! last error message and pending results; each method implements one import of ABI.md.
//!
//! Every method returns the raw status code for the guest and never panics on guest input;
//! the plugin additionally catches panics at the FFI boundary.

use crate::context::{self, Context};
use crate::decode::{self, Limits, Output};
use crate::error::CallError;
use crate::fetch::{self, Found};
use crate::memory::GuestMemory;
use crate::pending::Pending;
use crate::reply::{self, Reply};
use crate::skylog;
use crate::write;
use skylark_abi::layout::GetResult;
use skylark_abi::wire::{self, Layout};
use skylark_abi::{imports, Status, ABI_VERSION};

/// Per-module-instance state.
#[derive(Debug, Default)]
pub struct Instance {
    last_error: String,
    pending: Option<Pending<Reply>>,
    /// The context the calls use; `None`: the process's own ([`context::get`]).
    ctx: Option<&'static Context>,
}

type Mem<'a> = Option<&'a mut dyn GuestMemory>;

/// Failed calls logged at `info` per second, per process.
const FAILED_CALL_LINES_PER_SEC: u64 = 20;
static FAILED_CALL_LINES: crate::log::RateLimit =
    crate::log::RateLimit::new(FAILED_CALL_LINES_PER_SEC);

fn memory<'a>(mem: Mem<'a>) -> Result<&'a mut dyn GuestMemory, CallError> {
    mem.ok_or_else(|| {
        CallError::new(
            Status::NoMemory,
            "the calling module has no memory 0, or a shared one (refused: another thread \
             could change its ids after the host checked them)",
        )
    })
}

fn limits(ctx: &Context) -> Limits {
    Limits {
        max_value_bytes: ctx.cluster.config.max_value_bytes,
        max_fields: ctx.cluster.config.max_fields,
    }
}

impl Instance {
    /// A fresh instance of the process's context; cheap (reads no configuration, opens
    /// no connection: the context is built on the first call).
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh instance whose calls use `ctx` (built from a configuration value with
    /// [`Context::new`] and [`Context::start`]) instead of the process environment's.
    pub fn with_context(ctx: &'static Context) -> Self {
        Instance {
            ctx: Some(ctx),
            ..Self::default()
        }
    }

    /// The context of this instance's calls.
    fn context(&self) -> Result<&'static Context, CallError> {
        match self.ctx {
            Some(ctx) => Ok(ctx),
            None => context::get(),
        }
    }

    /// The message of the most recent failure ("" after a success).
    pub fn last_error(&self) -> &str {
        &self.last_error
    }

    /// Records the outcome of a call and turns it into the guest's status code.
    fn finish(&mut self, import: &str, result: Result<(), CallError>) -> i32 {
        match result {
            Ok(()) => {
                self.last_error.clear();
                Status::Ok.code()
            }
            Err(e) => {
                let quiet = matches!(
                    e.status,
                    Status::NotFound | Status::BufferTooSmall | Status::TimedOut
                );
                if quiet {
                    skylog!(Debug, "{import}: {e}");
                } else if crate::log::enabled(crate::log::Level::Info) {
                    // The guest chooses the text (its ids) and the rate of these lines.
                    let now_s = crate::clock::now_ms() / 1000;
                    if let Some(missed) = FAILED_CALL_LINES.admit(now_s) {
                        if missed > 0 {
                            skylog!(Info, "{missed} failed-call lines suppressed (at most {FAILED_CALL_LINES_PER_SEC} a second)");
                        }
                        skylog!(Info, "{import}: {e}");
                    }
                }
                self.last_error = format!("{import}: {}", e.message);
                e.status.code()
            }
        }
    }

    /// Reports a caught panic.
    pub fn internal_error(&mut self, import: &str, what: &str) -> i32 {
        skylog!(Error, "{import}: caught panic: {what}");
        self.finish(
            import,
            Err(CallError::new(
                Status::Internal,
                format!("host bug caught at the FFI boundary: {what}"),
            )),
        )
    }

    fn pending(&mut self, ctx: &Context) -> &mut Pending<Reply> {
        self.pending
            .get_or_insert_with(|| Pending::new(ctx.cluster.config.max_pending))
    }

    /// `skylark_version() -> abi_version`
    pub fn version(&mut self) -> i32 {
        ABI_VERSION
    }

    /// `skylark_put`
    pub fn put(&mut self, mem: Mem<'_>, a: [u32; 8]) -> i32 {
        let r = (|| {
            let ctx = self.context()?;
            let mem = memory(mem)?;
            let req = decode::put(mem, &a, &limits(ctx))?;
            write::put(ctx, req.chain, &req.fields, &req.options)?
                .into_result()
                .map(drop)
        })();
        self.finish(imports::PUT, r)
    }

    /// `skylark_put_many`
    pub fn put_many(&mut self, mem: Mem<'_>, a: [u32; 6]) -> i32 {
        let r = (|| {
            let ctx = self.context()?;
            let mem = memory(mem)?;
            let req = decode::put_many(mem, &a, &limits(ctx))?;
            write::put(ctx, req.chain, &req.fields, &req.options)?
                .into_result()
                .map(drop)
        })();
        self.finish(imports::PUT_MANY, r)
    }

    /// `skylark_put_v2`: as `skylark_put_many`, and the versions (assigned, of the first
    /// put for an idempotent repeat, or held now for a failed condition) go to the guest.
    pub fn put_v2(&mut self, mem: Mem<'_>, a: [u32; 7]) -> i32 {
        let r = (|| {
            let ctx = self.context()?;
            let mem = memory(mem)?;
            let (req, versions_ptr) = decode::put_v2(mem, &a, &limits(ctx))?;
            let written = write::put(ctx, req.chain, &req.fields, &req.options)?;
            mem.write(
                versions_ptr,
                &decode::versions_record(&written.versions),
                "versions record",
            )?;
            written.into_result().map(drop)
        })();
        self.finish(imports::PUT_V2, r)
    }

    /// `skylark_get_bundle`
    pub fn get_bundle(&mut self, mem: Mem<'_>, a: [u32; 7]) -> i32 {
        let r = (|| {
            let ctx = self.context()?;
            let mem = memory(mem)?;
            let req = decode::get(mem, &a)?;
            let lookup = fetch::lookup(ctx, &req.chain, &req.options)?;
            let timed_out = lookup.timed_out.then(|| {
                let held = |t: &String| {
                    lookup
                        .found
                        .as_ref()
                        .is_some_and(|f| f.fields.iter().any(|(k, _)| k == t.as_bytes()))
                };
                let missing: Vec<&String> =
                    req.options.wait_for.iter().filter(|t| !held(t)).collect();
                const SHOWN: usize = 8;
                let more = match missing.len().saturating_sub(SHOWN) {
                    0 => String::new(),
                    n => format!(" and {n} more"),
                };
                CallError::new(
                    Status::TimedOut,
                    format!(
                        "chain {:?}: after {} ms still missing {:?}{more}; delivered what was \
                         there",
                        req.chain,
                        fetch::wait_deadline(ctx, &req.options).as_millis(),
                        &missing[..missing.len().min(SHOWN)],
                    ),
                )
            });
            let Some(found) = lookup.found else {
                write_result(mem, &req.out, GetResult::default())?;
                if let Some(e) = timed_out {
                    return Err(e);
                }
                let tiers = if req.options.local_only || ctx.engine.is_none() {
                    format!("node {}", ctx.cluster.config.node_name)
                } else {
                    format!(
                        "node {}, its neighbours or the global store",
                        ctx.cluster.config.node_name
                    )
                };
                return Err(CallError::new(
                    Status::NotFound,
                    format!("chain {:?} has no bundle on {tiers}", req.chain),
                ));
            };
            let max = ctx.cluster.config.max_bundle_bytes;
            let reply = match req.options.layout.unwrap_or_default() {
                Layout::Msgpack => Reply::Encoded(encode(max, &req.chain, &found)?),
                Layout::Table => reply::table(max, &req.chain, found)?,
            };
            self.deliver(ctx, mem, &req.out, reply, timed_out.is_some())?;
            timed_out.map_or(Ok(()), Err)
        })();
        self.finish(imports::GET_BUNDLE, r)
    }

    /// `skylark_take_result(handle, buf_ptr, buf_cap, result_ptr)`
    pub fn take_result(&mut self, mem: Mem<'_>, a: [u32; 4]) -> i32 {
        let r = (|| {
            let ctx = self.context()?;
            let mem = memory(mem)?;
            let out = decode::output(mem, a[1], a[2], a[3])?;
            let handle = a[0];
            let Some(len) = self.pending(ctx).len_of(handle) else {
                return Err(unknown_handle(handle));
            };
            if len > out.buf_cap as usize {
                write_result(
                    mem,
                    &out,
                    GetResult {
                        len: len as u32,
                        handle,
                    },
                )?;
                return Err(too_small(len, out.buf_cap, handle));
            }
            let (reply, timed_out) = self
                .pending(ctx)
                .take_marked(handle)
                .ok_or_else(|| unknown_handle(handle))?;
            reply.write(mem, out.buf_ptr)?;
            write_result(
                mem,
                &out,
                GetResult {
                    len: len as u32,
                    handle: 0,
                },
            )?;
            if timed_out {
                return Err(CallError::new(
                    Status::TimedOut,
                    format!(
                        "the result under handle {handle} is a get whose wait_for timed out: \
                         not every task waited for is in it"
                    ),
                ));
            }
            Ok(())
        })();
        self.finish(imports::TAKE_RESULT, r)
    }

    /// `skylark_drop_result(handle)`
    pub fn drop_result(&mut self, handle: u32) -> i32 {
        let r = (|| {
            let ctx = self.context()?;
            self.pending(ctx)
                .take(handle)
                .map(|_| ())
                .ok_or_else(|| unknown_handle(handle))
        })();
        self.finish(imports::DROP_RESULT, r)
    }

    /// `skylark_last_error(buf_ptr, buf_cap, len_ptr)`: reads the message without changing
    /// it. If the read itself fails, that failure becomes the message, as for every other
    /// import: a non-zero status always has one (the `instance` fuzz target found this
    /// path without a message).
    pub fn read_last_error(&mut self, mem: Mem<'_>, a: [u32; 3]) -> i32 {
        let r = (|| {
            let mem = memory(mem)?;
            mem.check_writable(a[2], 4, "length record")?;
            let msg = self.last_error.as_bytes();
            let n = msg.len().min(a[1] as usize);
            mem.write(a[0], &msg[..n], "message buffer")?;
            mem.write(a[2], &(msg.len() as u32).to_le_bytes(), "length record")
        })();
        match r {
            Ok(()) => Status::Ok.code(),
            Err(e) => self.finish(imports::LAST_ERROR, Err(e)),
        }
    }

    /// Writes `reply` to the guest buffer, or keeps it under a handle (marked if the
    /// result is a `wait_for` that timed out) if it does not fit.
    fn deliver(
        &mut self,
        ctx: &Context,
        mem: &mut dyn GuestMemory,
        out: &Output,
        reply: Reply,
        timed_out: bool,
    ) -> Result<(), CallError> {
        let len = reply.len();
        if len <= out.buf_cap as usize {
            reply.write(mem, out.buf_ptr)?;
            return write_result(
                mem,
                out,
                GetResult {
                    len: len as u32,
                    handle: 0,
                },
            );
        }
        let handle = self.pending(ctx).insert_marked(reply, timed_out);
        write_result(
            mem,
            out,
            GetResult {
                len: len as u32,
                handle,
            },
        )?;
        Err(too_small(len, out.buf_cap, handle))
    }
}

fn write_result(mem: &mut dyn GuestMemory, out: &Output, r: GetResult) -> Result<(), CallError> {
    mem.write(out.result_ptr, &r.to_bytes(), "result record")
}

fn unknown_handle(handle: u32) -> CallError {
    CallError::new(
        Status::UnknownHandle,
        format!("no pending result under handle {handle}"),
    )
}

fn too_small(len: usize, cap: u32, handle: u32) -> CallError {
    CallError::new(
        Status::BufferTooSmall,
        format!("result of {len} bytes does not fit a buffer of {cap} bytes; kept under handle {handle}"),
    )
}

/// Checks a bundle read from the store against `max_bundle_bytes`
/// (`SKYLARK_MAX_BUNDLE_BYTES`) and encodes it for the guest. Pure, so that it can be
/// fuzzed without a store.
pub fn encode(max_bundle_bytes: u32, chain: &str, found: &Found) -> Result<Vec<u8>, CallError> {
    let pairs = &found.fields;
    let total: u64 = pairs.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
    if total > u64::from(max_bundle_bytes) {
        return Err(CallError::new(
            Status::BundleTooLarge,
            format!(
                "bundle of chain {chain:?} holds {total} bytes; SKYLARK_MAX_BUNDLE_BYTES is {max_bundle_bytes}"
            ),
        ));
    }
    let mut fields = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        let name = std::str::from_utf8(k).map_err(|_| {
            CallError::new(
                Status::StoreError,
                format!("bundle of chain {chain:?} has a field name that is not UTF-8"),
            )
        })?;
        fields.push((name, v.as_slice()));
    }
    let placement = found
        .placement
        .iter()
        .map(|(t, n)| (t.as_str(), n.as_str()));
    // The versions of the fields delivered (names already checked as UTF-8 above).
    let versions = fields
        .iter()
        .filter_map(|(name, _)| found.versions.get(name.as_bytes()).map(|v| (*name, *v)));
    let bytes = wire::encode_bundle_versioned(
        chain,
        &found.source,
        fields.iter().copied(),
        placement,
        versions,
    )
    .map_err(|e| CallError::new(Status::Internal, e.to_string()))?;
    if bytes.len() > u32::MAX as usize {
        return Err(CallError::new(
            Status::BundleTooLarge,
            format!("encoded bundle of {} bytes exceeds 4 GiB", bytes.len()),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::memory::VecMemory;

    /// A context of its own, from a configuration value: a store that is not there.
    fn unreachable_store() -> &'static Context {
        let config = Config::from_lookup(|k| match k {
            "SKYLARK_REDIS_URL" => Some("unix:///nonexistent/skylark-calls-test.sock".into()),
            "SKYLARK_PROPAGATION" => Some("off".into()),
            "SKYLARK_TIMEOUT_MS" => Some("200".into()),
            "SKYLARK_MAX_VALUE_BYTES" => Some("2".into()),
            _ => None,
        })
        .expect("a valid configuration");
        Context::new(config).expect("a context").start()
    }

    #[test]
    fn an_instance_runs_on_the_context_it_is_given() {
        let ctx = unreachable_store();
        assert!(ctx.engine.is_none());
        let mut inst = Instance::with_context(ctx);
        // Chain "c", task "t", value "vvvv" (4 bytes), no options.
        let mut m = VecMemory(b"ctvvvv".to_vec());
        // The configuration's limit applies: at most 2 bytes.
        assert_eq!(
            inst.put(Some(&mut m), [0, 1, 1, 1, 2, 4, 0, 0]),
            Status::ValueTooLarge.code()
        );
        assert!(inst.last_error().contains("SKYLARK_MAX_VALUE_BYTES is 2"));
        // Its store: a socket that is not there.
        assert_eq!(
            inst.put(Some(&mut m), [0, 1, 1, 1, 2, 2, 0, 0]),
            Status::StoreUnavailable.code(),
            "{}",
            inst.last_error()
        );
    }

    #[test]
    fn a_failed_last_error_read_leaves_a_message_of_its_own() {
        // fuzz/regressions/instance/ has the input that found this path without a message.
        let mut inst = Instance::new();
        let mut m = VecMemory(vec![0; 16]);
        assert_eq!(
            inst.read_last_error(Some(&mut m), [0, 4, 14]),
            Status::InvalidPointer.code()
        );
        let msg = inst.last_error().to_string();
        assert!(
            msg.starts_with("skylark_last_error: length record [14, 14+4)"),
            "{msg}"
        );
        assert_eq!(inst.read_last_error(Some(&mut m), [0, 16, 12]), 0);
        assert_eq!(&m.0[12..], &(msg.len() as u32).to_le_bytes());
        assert_eq!(inst.last_error(), msg, "a successful read changes nothing");
        assert_eq!(
            inst.read_last_error(None, [0, 0, 0]),
            Status::NoMemory.code()
        );
        assert!(inst.last_error().starts_with("skylark_last_error: "));
    }
}
