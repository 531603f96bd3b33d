//! The baseline a WasmEdge user would pick instead of the plugin: a Redis client inside
//! the guest (`redis_wasi`, redis-rs over WasmEdge's socket extension), doing the work of
//! a put as one pipelined `MULTI; HSET key f0 v0 ...; EXPIRE key 86400; EXEC`. Used by
//! the latency bench (BENCHMARKS.md section 1), one JSON line per run:
//!
//! ```text
//! redis-guest put   <redis-url> <chain> <size>                       first put of the process, connecting included
//! redis-guest bench <redis-url> <chain> <size> <fields> <iterations> warm puts on one connection
//! ```

#[cfg(target_os = "wasi")]
mod guest;

#[cfg(target_os = "wasi")]
fn main() {
    guest::main()
}

#[cfg(not(target_os = "wasi"))]
fn main() {
    eprintln!("redis-guest runs under wasmedge only (cargo build --target wasm32-wasip1)");
    std::process::exit(2);
}
