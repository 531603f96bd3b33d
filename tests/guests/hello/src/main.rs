//! The smallest guest: imports nothing but WASI, prints one JSON line and exits. The
//! latency bench runs it with and without the plugin loaded (`bench --load`) to measure
//! what loading the plugin costs a `wasmedge` process: start-up time and memory.

fn main() {
    println!("{{\"op\": \"hello\", \"status\": 0}}");
}
