//! A guest whose memory is shared (threads proposal) is refused (issue 16, Low): another
//! thread could rewrite an id in a shared memory between the host's check and its use, so
//! the host reads no shared memory at all and every call that needs memory fails with
//! `NoMemory`. Real wasmedge (`--enable-threads`) with the plugin, a real redis-server;
//! the two modules differ only in the `shared` flag of their memory.

use skylark_testkit::{guest::wasmedge_command, Redis, NS};

const NO_MEMORY: i32 = 11;

/// A module that puts "value" as task "task" of chain "chain" and exits with the status.
fn module(memory: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
  (import "skylark" "skylark_put"
    (func $put (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  {memory}
  (data (i32.const 0) "chaintaskvalue")
  (func (export "_start")
    (call $exit (call $put (i32.const 0) (i32.const 5) (i32.const 5) (i32.const 4)
                           (i32.const 9) (i32.const 5) (i32.const 0) (i32.const 0)))))"#
    ))
    .expect("valid WAT")
}

fn run(redis: &Redis, wasm: &[u8]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("m.wasm");
    std::fs::write(&path, wasm).expect("write the module");
    let out = wasmedge_command(&redis.url)
        .env("SKYLARK_LOG", "info")
        .arg("--enable-threads")
        .arg(&path)
        .output()
        .expect("run wasmedge");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_shared_memory_is_refused() {
    let redis = Redis::start();
    let key = format!("{NS}:bundle:chain");
    let (code, stderr) = run(&redis, &module(r#"(memory (export "memory") 1 1 shared)"#));
    assert_eq!(code, Some(NO_MEMORY), "{stderr}");
    assert!(stderr.contains("shared one"), "{stderr}");
    assert!(redis.hgetall(&key).is_empty(), "nothing stored");

    // The same module with an unshared memory stores its value.
    let (code, stderr) = run(&redis, &module(r#"(memory (export "memory") 1 1)"#));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        redis.hgetall(&key).get("task").map(Vec::as_slice),
        Some(&b"value"[..])
    );
}
