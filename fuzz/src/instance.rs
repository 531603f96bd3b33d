//! Target `instance`: sequences of host calls on one `skylark_core::Instance`, the code
//! behind every import, with arbitrary arguments over a small guest memory (or none).
//!
//! The store is a Unix socket that does not exist, so calls that pass validation end in
//! `StoreUnavailable` without I/O waits; the store paths themselves are fuzzed for real
//! by the wasm fuzz guest. Asserts, after every call:
//! - the status is a documented code, not `Internal` (a caught panic) and not
//!   `ConfigInvalid` (the configuration is valid);
//! - `Ok` leaves the last-error message empty; any other status leaves a message that
//!   starts with the import's name and says more than that (`skylark_last_error`'s own
//!   failures included);
//! - `skylark_last_error` returning `Ok` wrote the message's full length at `len_ptr`
//!   and its first `buf_cap` bytes to `buf` and did not change the message;
//! - no call except a successful `skylark_last_error` changed guest memory (nothing can
//!   succeed in writing a result here; `skylark_put_v2` writes its versions only after
//!   the store answered).

use super::input::{span_fits, Input};
use skylark_abi::{imports, Status, ABI_VERSION};
use skylark_core::config::Config;
use skylark_core::context::Context;
use skylark_core::memory::{GuestMemory, VecMemory};
use skylark_core::Instance;
use std::sync::OnceLock;

/// The plugin configuration of the instances under test.
const SETTINGS: &[(&str, &str)] = &[
    ("SKYLARK_REDIS_URL", "unix:///nonexistent/skylark-fuzz.sock"),
    ("SKYLARK_PROPAGATION", "off"),
    ("SKYLARK_LOG", "off"),
    ("SKYLARK_MAX_VALUE_BYTES", "4096"),
    ("SKYLARK_MAX_FIELDS", "8"),
    ("SKYLARK_MAX_PENDING", "2"),
    ("SKYLARK_TIMEOUT_MS", "200"),
];

static CONTEXT: OnceLock<&'static Context> = OnceLock::new();

/// The context every fuzzed instance runs on, built once from [`SETTINGS`] (a
/// configuration value, not the process environment).
pub fn configure() -> &'static Context {
    CONTEXT.get_or_init(|| {
        let config = Config::from_lookup(|k| {
            SETTINGS
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        })
        .expect("the fuzz configuration is valid");
        Context::new(config)
            .expect("the fuzz context builds")
            .start()
    })
}

fn check_message(inst: &Instance, import: &str, code: i32) {
    let status = Status::from_code(code)
        .unwrap_or_else(|| panic!("{import} returned undocumented code {code}"));
    assert_ne!(status, Status::Internal, "{import}: {}", inst.last_error());
    // The configuration set by `configure` is valid.
    assert_ne!(status, Status::ConfigInvalid, "{}", inst.last_error());
    let msg = inst.last_error();
    if status == Status::Ok {
        assert!(
            msg.is_empty(),
            "{import} succeeded but left message {msg:?}"
        );
    } else {
        let prefix = format!("{import}: ");
        assert!(
            msg.starts_with(&prefix) && msg.len() > prefix.len(),
            "{import} returned {status:?} with message {msg:?}"
        );
    }
}

fn args<const N: usize>(inp: &mut Input, size: u64) -> [u32; N] {
    let mut a = [0u32; N];
    for x in a.iter_mut() {
        *x = inp.ptr_like(size);
    }
    a
}

pub fn check(data: &[u8]) {
    let ctx = configure();
    let mut inp = Input::new(data);
    let size = u64::from(inp.u16() % 2049);
    let mut mem = VecMemory(vec![0; size as usize]);
    let content = inp.bytes(size as usize);
    mem.0[..content.len()].copy_from_slice(content);
    let mut inst = Instance::with_context(ctx);
    for _ in 0..16 {
        if inp.is_empty() {
            break;
        }
        let op = inp.u8();
        let no_memory = op & 0x80 != 0 && op & 0x40 != 0;
        let before = mem.0.clone();
        let message_before = inst.last_error().to_string();
        let m: Option<&mut dyn GuestMemory> = if no_memory { None } else { Some(&mut mem) };
        let (import, code) = match op % 7 {
            0 => {
                assert_eq!(inst.version(), ABI_VERSION);
                continue;
            }
            1 => (imports::PUT, inst.put(m, args(&mut inp, size))),
            2 if op & 0x20 != 0 => (imports::PUT_V2, inst.put_v2(m, args(&mut inp, size))),
            2 => (imports::PUT_MANY, inst.put_many(m, args(&mut inp, size))),
            3 => (
                imports::GET_BUNDLE,
                inst.get_bundle(m, args(&mut inp, size)),
            ),
            4 => (
                imports::TAKE_RESULT,
                inst.take_result(m, args(&mut inp, size)),
            ),
            5 => (imports::DROP_RESULT, inst.drop_result(inp.u32())),
            _ => {
                let a: [u32; 3] = args(&mut inp, size);
                let code = inst.read_last_error(m, a);
                if code == Status::Ok.code() {
                    assert!(!no_memory);
                    assert_eq!(inst.last_error(), message_before, "reading changed it");
                    check_read(&mem.0, &before, &message_before, a);
                    continue;
                }
                (imports::LAST_ERROR, code)
            }
        };
        check_message(&inst, import, code);
        assert!(
            mem.0 == before,
            "{import} returned {code} and changed guest memory"
        );
    }
}

/// What a successful `skylark_last_error(buf, cap, len_ptr)` must have written.
fn check_read(after: &[u8], before: &[u8], msg: &str, a: [u32; 3]) {
    let (buf, cap, len_ptr) = (a[0] as usize, a[1] as usize, a[2] as usize);
    let size = after.len() as u64;
    assert!(span_fits(size, a[2], 4), "length written outside memory");
    assert_eq!(
        after[len_ptr..len_ptr + 4],
        (msg.len() as u32).to_le_bytes(),
        "length record"
    );
    let n = msg.len().min(cap);
    let mut expect = before.to_vec();
    if n > 0 {
        assert!(span_fits(size, a[0], n as u32));
        expect[buf..buf + n].copy_from_slice(&msg.as_bytes()[..n]);
    }
    expect[len_ptr..len_ptr + 4].copy_from_slice(&(msg.len() as u32).to_le_bytes());
    assert!(
        after == expect.as_slice(),
        "wrote outside the message and length"
    );
}

/// Seed inputs: a 64-byte memory holding a chain and a task id, then a put, a failed
/// and a successful `skylark_last_error`, a get, a take, a drop, a version and a put
/// without memory.
pub fn seeds() -> Vec<Vec<u8>> {
    use super::input::ptr_raw;
    let mut s = vec![64, 0];
    let mut mem = [0u8; 64];
    mem[..7].copy_from_slice(b"chain-1");
    mem[8..10].copy_from_slice(b"t1");
    mem[12] = b'v';
    s.extend(mem);
    let mut op = |code: u8, args: &[u32]| {
        s.push(code);
        for a in args {
            s.extend(ptr_raw(*a));
        }
    };
    op(1, &[0, 7, 8, 2, 12, 1, 0, 0]);
    op(6, &[16, 32, 62]);
    op(6, &[16, 32, 56]);
    op(3, &[0, 7, 0, 0, 16, 32, 48]);
    op(4, &[1, 16, 8, 48]);
    op(0, &[]);
    op(0xc1, &[0, 7, 8, 2, 12, 1, 0, 0]);
    s.push(5);
    s.extend(7u32.to_le_bytes());
    vec![s]
}
