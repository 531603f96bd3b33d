//! Fuzz guest: calls the raw Skylark imports in a loop with arguments from a seeded PRNG
//! (pointers and lengths inside, across and beyond the end of memory, wrapping and
//! `i32`-negative, overlapping inputs and outputs; valid and invalid ids; documented,
//! garbage, truncated, deep and oversized option blobs; known, stale and made-up
//! handles; valid calls mixed in), and checks every answer against a model of ABI.md
//! (`run.rs` says what is checked). Runs under real `wasmedge` with the real plugin and
//! a real redis-server: `cargo run -p fuzz-runner` (or
//! `scripts/fuzz.sh`) starts both.
//!
//! `fuzz-guest <seed> <calls> <max_value_bytes> <max_fields> <max_pending> <local|prop> <chain prefix>`
//! where the limits are the plugin's `SKYLARK_MAX_*` settings of the run, `local` means
//! propagation is off (bundle contents are checked exactly) and `prop` on. Prints one JSON
//! line: calls and statuses per import, checks, violations (with the first examples);
//! exits 1 if there was a violation.

#[cfg(target_arch = "wasm32")]
mod gen;
#[cfg(target_arch = "wasm32")]
mod host;
#[cfg(target_arch = "wasm32")]
mod regions;
#[cfg(target_arch = "wasm32")]
mod rng;
#[cfg(target_arch = "wasm32")]
mod run;

#[cfg(target_arch = "wasm32")]
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(target_arch = "wasm32")]
fn main() {
    use host::Import;
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let num = |i: usize, default: u64| arg(i, "").parse::<u64>().unwrap_or(default);
    let cfg = run::Config {
        seed: num(1, 1),
        calls: num(2, 10_000),
        max_value_bytes: num(3, 64 << 20) as u32,
        max_fields: num(4, 1024) as u32,
        max_pending: num(5, 4) as usize,
        mirror: arg(6, "local") == "local",
        prefix: arg(7, "fz"),
    };
    let seed = cfg.seed;
    let mut f = run::Fuzzer::new(cfg);
    f.run();
    let t = &f.tally;
    let imports: Vec<String> = Import::ALL
        .iter()
        .map(|i| {
            let statuses: Vec<String> = t.status[i.index()]
                .iter()
                .map(|(code, n)| format!("\"{code}\":{n}"))
                .collect();
            format!(
                "{}:{{\"calls\":{},\"status\":{{{}}}}}",
                json_str(i.name()),
                t.calls[i.index()],
                statuses.join(",")
            )
        })
        .collect();
    let examples: Vec<String> = t.examples.iter().map(|e| json_str(e)).collect();
    println!(
        "{{\"seed\":{seed},\"calls\":{},\"checks\":{},\"violations\":{},\"imports\":{{{}}},\"examples\":[{}]}}",
        t.calls.iter().sum::<u64>(),
        t.checks,
        t.violations,
        imports.join(","),
        examples.join(",")
    );
    if t.violations > 0 {
        std::process::exit(1);
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("fuzz-guest is a wasm32-wasip1 program; run it in wasmedge");
    std::process::exit(2);
}
