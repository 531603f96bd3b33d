//! Tenant isolation: the namespace comes from the environment of the process that runs
//! WasmEdge (the operator's pod spec), never from the guest, and prefixes every key the
//! plugin touches, on the node-local store and on the global store. Real guests under
//! real wasmedge, real redis-servers.

use serde_json::Value;
use skylark_testkit::{chain_id, Guest, Redis, RUN_TIMEOUT};
use std::time::{Duration, Instant};

const NOT_FOUND: i64 = 1;
const INVALID_ID: i64 = 12;

fn probe(redis: &Redis, ns: &str, args: &[&str]) -> Value {
    Guest::new("probe", &redis.url)
        .env("SKYLARK_NAMESPACE", ns)
        .args(args)
        .run(RUN_TIMEOUT)
        .assert_success()
        .json()
}

/// The FNV-1a hash the probe reports for field `task` of a get.
fn fnv_of(get: &Value, task: &str) -> String {
    get["fields"][task]["fnv"]
        .as_str()
        .unwrap_or_else(|| panic!("no field {task}: {get}"))
        .to_string()
}

/// The hash of the value a probe put wrote.
fn fnv_put(put: &Value) -> String {
    put["fnv"]
        .as_str()
        .unwrap_or_else(|| panic!("no fnv: {put}"))
        .to_string()
}

fn keys(redis: &Redis) -> Vec<String> {
    let mut conn = redis.conn();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("KEYS");
    keys.sort();
    keys
}

#[test]
fn a_tenant_cannot_read_or_overwrite_another() {
    let redis = Redis::start();
    let chain = chain_id("iso");

    let put_a = probe(&redis, "tenant-a", &["put", &chain, "t", "4096", "1"]);
    assert_eq!(put_a["status"], 0, "{put_a}");

    // B asks for the same chain and task names: nothing.
    let get_b = probe(&redis, "tenant-b", &["get", &chain]);
    assert_eq!(get_b["status"], NOT_FOUND, "{get_b}");

    // B writes the same names: its own bundle; A's bytes stay A's.
    let put_b = probe(&redis, "tenant-b", &["put", &chain, "t", "4096", "2"]);
    assert_eq!(put_b["status"], 0, "{put_b}");
    let get_a = probe(&redis, "tenant-a", &["get", &chain]);
    assert_eq!(get_a["status"], 0, "{get_a}");
    assert_eq!(fnv_of(&get_a, "t"), fnv_put(&put_a));
    let get_b = probe(&redis, "tenant-b", &["get", &chain]);
    assert_eq!(fnv_of(&get_b, "t"), fnv_put(&put_b));
    assert_ne!(put_a["fnv"], put_b["fnv"]);

    // Every key either tenant made carries its namespace.
    for k in keys(&redis) {
        assert!(
            k.starts_with("tenant-a:") || k.starts_with("tenant-b:"),
            "key {k:?} outside both namespaces"
        );
    }
}

#[test]
fn ids_cannot_reach_outside_the_namespace() {
    let redis = Redis::start();
    let victim = chain_id("victim");
    let put = probe(&redis, "tenant-b", &["put", &victim, "t", "64", "9"]);
    assert_eq!(put["status"], 0, "{put}");

    // Separators, globs, whitespace, path tricks and the other tenant's full key, as
    // chain ids and as task ids: all refused before any key is built.
    let full_key = format!("tenant-b:bundle:{victim}");
    let hostile = [
        full_key.as_str(),
        "../tenant-b",
        "*",
        "?",
        "[a-z]",
        "a b",
        "a\tb",
        "a/b",
        "a{b}",
        "",
    ];
    for id in hostile {
        let put = probe(&redis, "tenant-a", &["put", id, "t", "8", "1"]);
        assert_eq!(put["status"], INVALID_ID, "chain {id:?}: {put}");
        let get = probe(&redis, "tenant-a", &["get", id]);
        assert_eq!(get["status"], INVALID_ID, "chain {id:?}: {get}");
        let put = probe(&redis, "tenant-a", &["put", "c", id, "8", "1"]);
        assert_eq!(put["status"], INVALID_ID, "task {id:?}: {put}");
    }
    // Nothing of tenant-a's was written, and B's bundle is untouched.
    let all = keys(&redis);
    assert!(all.iter().all(|k| k.starts_with("tenant-b:")), "{all:?}");
    let get = probe(&redis, "tenant-b", &["get", &victim]);
    assert_eq!(fnv_of(&get, "t"), fnv_put(&put));
    assert_eq!(get["fields"]["t"]["len"], 64);
}

#[test]
fn the_guest_cannot_choose_its_namespace() {
    let redis = Redis::start();
    let chain = chain_id("env");
    // The guest's own environment (wasmedge --env) says tenant-b; the host process, i.e.
    // the operator, says tenant-a. The plugin reads only the host's.
    let mut cmd = std::process::Command::new(skylark_testkit::wasmedge_bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SKYLARK_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .env("WASMEDGE_PLUGIN_PATH", skylark_testkit::plugin_dir())
        .env("SKYLARK_REDIS_URL", &redis.url)
        .env("SKYLARK_NODE_NAME", "test-node")
        .env("SKYLARK_NAMESPACE", "tenant-a")
        .args(["--env", "SKYLARK_NAMESPACE=tenant-b"])
        .arg(skylark_testkit::wasm("probe"))
        .args(["put", &chain, "t", "16", "1"])
        .output()
        .expect("run wasmedge");
    assert!(out.status.success(), "{out:?}");
    let all = keys(&redis);
    assert_eq!(all, [format!("tenant-a:bundle:{chain}")]);
}

#[test]
fn propagated_copies_stay_in_their_namespace() {
    // Two nodes and a global store; A writes on node 1 with propagation to the global
    // store. On node 2, B's get falls back all the way to the global store and finds
    // nothing; A's get on node 2 finds A's copy there.
    let node1 = Redis::start();
    let node2 = Redis::start();
    let global = Redis::start();
    let chain = chain_id("prop");
    let on = |node: &Redis, name: &str, ns: &str, args: &[&str]| -> Value {
        Guest::new("probe", &node.url)
            .env("SKYLARK_NAMESPACE", ns)
            .env("SKYLARK_NODE_NAME", name)
            .env("SKYLARK_GLOBAL_URL", &global.url)
            .env(
                "SKYLARK_NODE_ADDRS",
                &format!("n1={},n2={}", node1.url, node2.url),
            )
            .args(args)
            .run(RUN_TIMEOUT)
            .assert_success()
            .json()
    };
    let put = on(
        &node1,
        "n1",
        "tenant-a",
        &["put", &chain, "t", "2048", "5", "--policy", "local"],
    );
    assert_eq!(put["status"], 0, "{put}");
    let global_key = format!("tenant-a:bundle:{chain}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while global.hgetall(&global_key).is_empty() {
        assert!(Instant::now() < deadline, "no global copy of {global_key}");
        std::thread::sleep(Duration::from_millis(20));
    }

    let get_b = on(&node2, "n2", "tenant-b", &["get", &chain]);
    assert_eq!(get_b["status"], NOT_FOUND, "{get_b}");
    let get_a = on(&node2, "n2", "tenant-a", &["get", &chain]);
    assert_eq!(get_a["status"], 0, "{get_a}");
    assert_eq!(fnv_of(&get_a, "t"), fnv_put(&put));
    for store in [&node1, &node2, &global] {
        for k in keys(store) {
            assert!(
                k.starts_with("tenant-a:")
                    || k.starts_with("tenant-a/")
                    || k.starts_with("tenant-b:"),
                "key {k:?}"
            );
        }
    }
    assert!(
        keys(&global).iter().all(|k| !k.starts_with("tenant-b:")),
        "B never wrote"
    );
}
