//! A deliberately bad guest: calls every Skylark import with out-of-range pointers,
//! overflowing lengths, invalid ids and garbage options, through its own raw import
//! declarations (no SDK, so the host sees exactly these arguments). For each case it
//! prints `case <name> status <code> message <last error>`; the integration test checks
//! the codes, and that the host survives to serve a valid put/get at the end.

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "skylark")]
extern "C" {
    fn skylark_put(a: i32, b: i32, c: i32, d: i32, e: i32, f: i32, g: i32, h: i32) -> i32;
    fn skylark_put_many(a: i32, b: i32, c: i32, d: i32, e: i32, f: i32) -> i32;
    fn skylark_put_v2(a: i32, b: i32, c: i32, d: i32, e: i32, f: i32, g: i32) -> i32;
    fn skylark_get_bundle(a: i32, b: i32, c: i32, d: i32, e: i32, f: i32, g: i32) -> i32;
    fn skylark_take_result(a: i32, b: i32, c: i32, d: i32) -> i32;
    fn skylark_drop_result(a: i32) -> i32;
    fn skylark_last_error(a: i32, b: i32, c: i32) -> i32;
}

#[cfg(target_arch = "wasm32")]
fn memory_end() -> u32 {
    (core::arch::wasm32::memory_size(0) * 65_536) as u32
}

#[cfg(target_arch = "wasm32")]
fn last_error() -> String {
    let mut buf = vec![0u8; 512];
    let mut len = 0u32;
    let st = unsafe {
        skylark_last_error(
            buf.as_mut_ptr() as i32,
            buf.len() as i32,
            &mut len as *mut u32 as i32,
        )
    };
    if st != 0 {
        return format!("<skylark_last_error failed with {st}>");
    }
    buf.truncate((len as usize).min(buf.len()));
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(target_arch = "wasm32")]
fn report(name: &str, status: i32) {
    println!("case {name} status {status} message {}", last_error());
}

#[cfg(target_arch = "wasm32")]
fn main() {
    let chain = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "bad-guest-chain".into());
    let end = memory_end();
    let c = chain.as_bytes();
    let (cp, cl) = (c.as_ptr() as i32, c.len() as i32);
    let task = b"task";
    let (tp, tl) = (task.as_ptr() as i32, task.len() as i32);
    let value = b"value";
    let (vp, vl) = (value.as_ptr() as i32, value.len() as i32);
    let mut result = [0u32; 2];
    let rp = result.as_mut_ptr() as i32;
    let mut buf = vec![0u8; 256];
    let (bp, bc) = (buf.as_mut_ptr() as i32, buf.len() as i32);
    let e = end as i32;

    unsafe {
        // Pointers past the end of memory, and ranges that wrap around 2^32.
        report(
            "put_chain_past_end",
            skylark_put(e, 4, tp, tl, vp, vl, 0, 0),
        );
        report(
            "put_task_past_end",
            skylark_put(cp, cl, e - 2, 4, vp, vl, 0, 0),
        );
        report(
            "put_value_past_end",
            skylark_put(cp, cl, tp, tl, e - 1, 64, 0, 0),
        );
        report("put_value_wraps", skylark_put(cp, cl, tp, tl, -2, 16, 0, 0));
        report(
            "put_chain_len_huge",
            skylark_put(cp, -1, tp, tl, vp, vl, 0, 0),
        );
        report(
            "put_value_len_huge",
            skylark_put(cp, cl, tp, tl, vp, -1, 0, 0),
        );
        report(
            "put_opts_past_end",
            skylark_put(cp, cl, tp, tl, vp, vl, e, 8),
        );
        // Invalid ids.
        let colon = b"a:b";
        report(
            "put_chain_colon",
            skylark_put(colon.as_ptr() as i32, 3, tp, tl, vp, vl, 0, 0),
        );
        let star = b"chain*";
        report(
            "put_task_glob",
            skylark_put(cp, cl, star.as_ptr() as i32, 6, vp, vl, 0, 0),
        );
        report("put_chain_empty", skylark_put(cp, 0, tp, tl, vp, vl, 0, 0));
        let long = [b'x'; 129];
        report(
            "put_chain_too_long",
            skylark_put(long.as_ptr() as i32, 129, tp, tl, vp, vl, 0, 0),
        );
        let nul = b"a\0b";
        report(
            "put_task_nul",
            skylark_put(cp, cl, nul.as_ptr() as i32, 3, vp, vl, 0, 0),
        );
        // Garbage options.
        let garbage = [0xc1u8, 0xff, 0x00];
        report(
            "put_opts_garbage",
            skylark_put(cp, cl, tp, tl, vp, vl, garbage.as_ptr() as i32, 3),
        );
        // Multi-field puts with a bad table or bad records.
        report(
            "put_many_table_past_end",
            skylark_put_many(cp, cl, e - 8, 1, 0, 0),
        );
        report(
            "put_many_count_huge",
            skylark_put_many(cp, cl, 0, 0x1000_0000, 0, 0),
        );
        report("put_many_count_zero", skylark_put_many(cp, cl, 0, 0, 0, 0));
        let other = b"other";
        let op = other.as_ptr() as u32;
        let recs: [u32; 8] = [tp as u32, tl as u32, vp as u32, vl as u32, op, 5, end, 4];
        report(
            "put_many_record_past_end",
            skylark_put_many(cp, cl, recs.as_ptr() as i32, 2, 0, 0),
        );
        let dups: [u32; 8] = [
            tp as u32, tl as u32, vp as u32, vl as u32, tp as u32, tl as u32, vp as u32, vl as u32,
        ];
        report(
            "put_many_duplicate",
            skylark_put_many(cp, cl, dups.as_ptr() as i32, 2, 0, 0),
        );
        // Versioned puts (ABI version 2) whose versions record lies outside memory, or
        // whose options exclude each other: nothing may be stored (task "other").
        let one: [u32; 4] = [op, 5, vp as u32, vl as u32];
        let orp = one.as_ptr() as i32;
        report(
            "put_v2_versions_past_end",
            skylark_put_v2(cp, cl, orp, 1, 0, 0, e - 4),
        );
        report(
            "put_v2_versions_wrap",
            skylark_put_v2(cp, cl, orp, 1, 0, 0, -4),
        );
        report(
            "put_v2_count_huge",
            skylark_put_v2(cp, cl, orp, 0x1000_0000, 0, 0, 0),
        );
        let mut both = vec![0x82u8, 0xaa];
        both.extend(b"if_version");
        both.extend([0x01, 0xa9]);
        both.extend(b"if_absent");
        both.push(0xc3);
        let mut versions = [0u64; 1];
        let vsp = versions.as_mut_ptr() as i32;
        report(
            "put_v2_conditions_exclusive",
            skylark_put_v2(cp, cl, orp, 1, both.as_ptr() as i32, both.len() as i32, vsp),
        );
        // Reads with bad output locations.
        report(
            "get_result_past_end",
            skylark_get_bundle(cp, cl, 0, 0, bp, bc, e - 4),
        );
        report(
            "get_buffer_past_end",
            skylark_get_bundle(cp, cl, 0, 0, e - 16, 64, rp),
        );
        report(
            "get_chain_past_end",
            skylark_get_bundle(e + 100, 4, 0, 0, bp, bc, rp),
        );
        report("take_unknown_handle", skylark_take_result(777, bp, bc, rp));
        report("take_result_past_end", skylark_take_result(1, bp, bc, -8));
        report("drop_unknown_handle", skylark_drop_result(12345));
        let st = skylark_last_error(bp, bc, e);
        println!("case last_error_len_past_end status {st} message -");
        let st = skylark_last_error(e - 1, 64, rp);
        println!("case last_error_buf_past_end status {st} message -");

        // The host is still healthy: a valid put and get succeed.
        report("valid_put", skylark_put(cp, cl, tp, tl, vp, vl, 0, 0));
        let task_rec: [u32; 4] = [tp as u32, tl as u32, vp as u32, vl as u32];
        report(
            "valid_put_v2",
            skylark_put_v2(cp, cl, task_rec.as_ptr() as i32, 1, 0, 0, vsp),
        );
        println!("valid_put_v2_version {}", versions[0]);
        let st = skylark_get_bundle(cp, cl, 0, 0, bp, bc, rp);
        report("valid_get", st);
        println!("valid_get_len {}", result[0]);
    }
    buf.truncate(result[0] as usize);
    let found = buf.windows(value.len()).any(|w| w == value);
    println!("valid_get_contains_value {found}");
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("bad-guest is a wasm32-wasip1 program; run it in wasmedge");
    std::process::exit(2);
}
