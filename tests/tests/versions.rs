//! ABI version 2 on the write path (issue 17, points 1 and 5): `skylark_put_v2` returns
//! the versions a put assigned; conditional puts (`if_version`, `if_absent`) and
//! idempotent puts (`idempotency_key`) on each write path (the outbox's guarded put,
//! propagation off, policy `stateless` on the global store); writers racing a
//! compare-and-swap on one field; and an unchanged version-1 guest (the probe built at the
//! version-1 commit, `tests/data/v1/probe.wasm`) against this host. Real wasmedge, the
//! real plugin, real redis-servers.

use probe::{fnv1a, pattern};
use serde_json::Value;
use skylark_testkit::{chain_id, now_ms, root, Guest, Redis, NS, RUN_TIMEOUT};
use std::collections::BTreeMap;
use std::time::Duration;

const CONDITION_FAILED: i64 = 24;
const IDEMPOTENCY_CONFLICT: i64 = 25;

/// The store a put goes through.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    /// Propagation on: the guarded put with its job, copies to a global store.
    Outbox,
    /// Propagation off: the versions script alone.
    Off,
    /// Policy `stateless`: the global store only.
    Stateless,
}

struct Setup {
    path: Path,
    local: Redis,
    global: Redis,
}

impl Setup {
    fn new(path: Path) -> Setup {
        Setup {
            path,
            local: Redis::start(),
            global: Redis::start(),
        }
    }

    /// The probe with `args` on this path; its JSON line.
    fn probe(&self, args: &[&str]) -> Value {
        let mut g = Guest::new("probe", &self.local.url).args(args);
        g = match self.path {
            Path::Outbox => g.env("SKYLARK_GLOBAL_URL", &self.global.url),
            Path::Off => g.env("SKYLARK_PROPAGATION", "off"),
            Path::Stateless => g
                .env("SKYLARK_GLOBAL_URL", &self.global.url)
                .args(["--policy", "stateless"]),
        };
        g.run(RUN_TIMEOUT).assert_success().json()
    }

    /// The store that accepts the puts.
    fn store(&self) -> &Redis {
        match self.path {
            Path::Stateless => &self.global,
            _ => &self.local,
        }
    }

    /// The bundle hash on the accepting store, reserved fields included.
    fn hash(&self, chain: &str) -> BTreeMap<String, Vec<u8>> {
        self.store().hgetall(&format!("{NS}:bundle:{chain}"))
    }

    /// What puts write in the bundle hash: state, versions, idempotency records and
    /// refusal marks (not what propagation adds later: placement record, claims).
    fn written(&self, chain: &str) -> BTreeMap<String, Vec<u8>> {
        let mut h = self.hash(chain);
        h.retain(|k, _| {
            !k.starts_with('@')
                || ["@v:", "@idem:", "@refused"]
                    .iter()
                    .any(|p| k.starts_with(p))
        });
        h
    }

    /// This node's counter of stored puts on this path.
    fn stored(&self) -> u64 {
        let name = match self.path {
            Path::Stateless => "stateless_puts",
            _ => "puts",
        };
        self.counter(name)
    }

    /// A counter of this node; 0 with propagation off, where no counters are written
    /// (they are flushed by the propagation engine).
    fn counter(&self, name: &str) -> u64 {
        self.local
            .stats("test-node")
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

fn status(v: &Value) -> i64 {
    v["status"]
        .as_i64()
        .unwrap_or_else(|| panic!("no status in {v}"))
}

fn versions(v: &Value) -> Vec<u64> {
    v["versions"]
        .as_array()
        .unwrap_or_else(|| panic!("no versions in {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap_or_else(|| panic!("version {x} in {v}")))
        .collect()
}

fn version_of(hash: &BTreeMap<String, Vec<u8>>, task: &str) -> u64 {
    let v = hash
        .get(&format!("@v:{task}"))
        .unwrap_or_else(|| panic!("no version of {task} in {:?}", hash.keys()));
    String::from_utf8_lossy(v)
        .parse()
        .expect("a decimal version")
}

#[test]
fn put_v2_returns_the_versions_it_assigned() {
    let s = Setup::new(Path::Outbox);
    let chain = chain_id("v2");
    let first = s.probe(&["put", &chain, "t", "100", "1", "--v2"]);
    assert_eq!(status(&first), 0, "{first}");
    let second = s.probe(&["put", &chain, "t", "100", "2", "--v2"]);
    assert_eq!(status(&second), 0, "{second}");
    let (v1, v2) = (versions(&first), versions(&second));
    assert!(v2[0] > v1[0], "{v1:?} then {v2:?}");
    assert_eq!(version_of(&s.hash(&chain), "t"), v2[0]);

    let many = s.probe(&["put-many", &chain, "f", "3", "10", "5", "--v2"]);
    assert_eq!(status(&many), 0, "{many}");
    let vs = versions(&many);
    let hash = s.hash(&chain);
    assert_eq!(
        vs,
        (0..3)
            .map(|i| version_of(&hash, &format!("f{i}")))
            .collect::<Vec<_>>()
    );
    // The version-1 import still answers without versions.
    let v1_put = s.probe(&["put", &chain, "t", "100", "3"]);
    assert_eq!((status(&v1_put), &v1_put["versions"]), (0, &Value::Null));
    assert!(version_of(&s.hash(&chain), "t") > v2[0]);
}

/// `if_absent`, then `if_version`, on one path: a refused put changes nothing and counts
/// no put, a put whose condition holds writes a newer version.
fn conditions_on(path: Path) {
    let s = Setup::new(path);
    let chain = chain_id("cond");
    let put = |seed: &str, cond: &[&str]| {
        let mut args = vec!["put", &chain, "t", "300", seed, "--v2"];
        args.extend(cond);
        s.probe(&args)
    };
    let first = put("1", &["--if-absent"]);
    assert_eq!(status(&first), 0, "{path:?}: {first}");
    let v = versions(&first)[0];
    let before = s.written(&chain);
    let stored = s.stored();

    let again = put("2", &["--if-absent"]);
    assert_eq!(status(&again), CONDITION_FAILED, "{path:?}: {again}");
    assert_eq!(versions(&again), [v], "the version held is reported");
    let stale = put("3", &["--if-version", &(v - 1).to_string()]);
    assert_eq!(status(&stale), CONDITION_FAILED, "{path:?}: {stale}");
    assert_eq!(versions(&stale), [v]);
    // Through the version-1 import: the same refusal, without versions.
    let v1 = s.probe(&["put", &chain, "t", "300", "4", "--if-version", "1"]);
    assert_eq!(status(&v1), CONDITION_FAILED, "{path:?}: {v1}");
    assert_eq!(v1["versions"], Value::Null);
    assert_eq!(s.written(&chain), before, "{path:?}: a refused put wrote");
    assert_eq!(s.stored(), stored, "{path:?}: a refused put counted");
    if path != Path::Off {
        assert_eq!(s.counter("conditions_failed"), 3, "{path:?}");
    }

    let cas = put("5", &["--if-version", &v.to_string()]);
    assert_eq!(status(&cas), 0, "{path:?}: {cas}");
    let w = versions(&cas)[0];
    assert!(w > v, "{path:?}: {w} after {v}");
    let hash = s.hash(&chain);
    assert_eq!(hash["t"], pattern(300, 5));
    assert_eq!(version_of(&hash, "t"), w);

    // Several fields: every one must hold the condition, or none is written.
    let many = |cond: &[&str]| {
        let mut args = vec!["put-many", &chain, "m", "2", "10", "9", "--v2"];
        args.extend(cond);
        s.probe(&args)
    };
    let made = many(&["--if-absent"]);
    assert_eq!(status(&made), 0, "{path:?}: {made}");
    let mv = versions(&made);
    let three = s.probe(&[
        "put-many",
        &chain,
        "m",
        "3",
        "10",
        "7",
        "--v2",
        "--if-absent",
    ]);
    assert_eq!(status(&three), CONDITION_FAILED, "{path:?}: {three}");
    assert_eq!(versions(&three), [mv[0], mv[1], 0], "m2 is absent");
    assert!(!s.hash(&chain).contains_key("m2"), "{path:?}: m2 written");
    // One put gives its new fields one version: a compare-and-swap of both holds.
    assert_eq!(mv[0], mv[1], "{mv:?}");
    let both = many(&["--if-version", &mv[0].to_string()]);
    assert_eq!(status(&both), 0, "{path:?}: {both}");
    assert!(versions(&both).iter().all(|v| *v > mv[0]), "{both}");
    let no_marks = s.hash(&chain);
    assert!(
        no_marks.keys().all(|k| !k.starts_with("@refused")),
        "{path:?}: marks left: {:?}",
        no_marks.keys()
    );
}

#[test]
fn conditional_puts_with_propagation() {
    conditions_on(Path::Outbox);
}

#[test]
fn conditional_puts_with_propagation_off() {
    conditions_on(Path::Off);
}

#[test]
fn conditional_puts_on_the_stateless_path() {
    conditions_on(Path::Stateless);
}

/// Repeats of an idempotent put on one path: acknowledged with the first versions,
/// nothing written, no job; other bytes under the same key are a conflict.
fn idempotency_on(path: Path) {
    let s = Setup::new(path);
    let chain = chain_id("idem");
    let put = |seed: &str, extra: &[&str]| {
        let mut args = vec!["put", &chain, "t", "500", seed, "--v2"];
        args.extend(extra);
        s.probe(&args)
    };
    let first = put("1", &["--idem", "inv-1"]);
    assert_eq!(status(&first), 0, "{path:?}: {first}");
    let v = versions(&first);
    let before = s.written(&chain);
    assert!(before.contains_key("@idem:inv-1"), "{:?}", before.keys());
    let (stored, jobs) = (s.stored(), s.counter("jobs"));

    let repeat = put("1", &["--idem", "inv-1"]);
    assert_eq!(status(&repeat), 0, "{path:?}: {repeat}");
    assert_eq!(versions(&repeat), v, "{path:?}: the first put's versions");
    let other = put("2", &["--idem", "inv-1"]);
    assert_eq!(status(&other), IDEMPOTENCY_CONFLICT, "{path:?}: {other}");
    let other_task = s.probe(&["put", &chain, "u", "500", "1", "--v2", "--idem", "inv-1"]);
    assert_eq!(status(&other_task), IDEMPOTENCY_CONFLICT, "{other_task}");
    assert_eq!(
        s.written(&chain),
        before,
        "{path:?}: a repeat or conflict wrote"
    );
    assert_eq!(
        (s.stored(), s.counter("jobs")),
        (stored, jobs),
        "{path:?}: no new put, no new job"
    );
    if path != Path::Off {
        assert_eq!(s.counter("idempotent_repeats"), 1, "{path:?}");
    }

    // A later put of the field; a late retry of the first one changes nothing.
    let newer = put("3", &[]);
    assert_eq!(status(&newer), 0, "{newer}");
    let late = put("1", &["--idem", "inv-1"]);
    assert_eq!((status(&late), versions(&late)), (0, v.clone()), "{late}");
    assert_eq!(s.hash(&chain)["t"], pattern(500, 3), "{path:?}");

    // A retried compare-and-swap: the retry's condition no longer holds, the key answers.
    let w = versions(&newer)[0];
    let cas = ["--idem", "inv-2", "--if-version"];
    let w_text = w.to_string();
    let swapped = put("4", &[cas[0], cas[1], cas[2], &w_text]);
    assert_eq!(status(&swapped), 0, "{swapped}");
    let retried = put("4", &[cas[0], cas[1], cas[2], &w_text]);
    assert_eq!(
        (status(&retried), versions(&retried)),
        (0, versions(&swapped)),
        "{retried}"
    );

    // The records are never state: not returned, not copied.
    let got = s.probe(&["get", &chain]);
    assert_eq!(status(&got), 0, "{got}");
    let fields: Vec<&String> = got["fields"].as_object().expect("fields").keys().collect();
    assert_eq!(fields, ["t"], "{got}");
    if path == Path::Outbox {
        skylark_testkit::eventually(
            "the copy on the global store",
            Duration::from_secs(30),
            || {
                let g = s.global.hgetall(&format!("{NS}:bundle:{chain}"));
                g.get("t") == Some(&pattern(500, 4))
            },
        );
        let g = s.global.hgetall(&format!("{NS}:bundle:{chain}"));
        assert!(
            g.keys().all(|k| !k.starts_with("@idem:")),
            "copied: {:?}",
            g.keys()
        );
    }
    // The record lives and expires with the bundle.
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{NS}:bundle:{chain}"))
        .query(&mut s.store().conn())
        .expect("TTL");
    assert!((1..=86_400).contains(&ttl), "TTL {ttl}");
}

#[test]
fn idempotent_puts_with_propagation() {
    idempotency_on(Path::Outbox);
}

#[test]
fn idempotent_puts_with_propagation_off() {
    idempotency_on(Path::Off);
}

#[test]
fn idempotent_puts_on_the_stateless_path() {
    idempotency_on(Path::Stateless);
}

#[test]
fn racing_compare_and_swap_has_one_winner_per_version() {
    // WRITERS processes put the same field at once, each only if it still holds the
    // version all of them saw: exactly one wins each round, the others are refused with
    // the winner's version, and the field holds the winner's bytes.
    const WRITERS: u64 = 5;
    const ROUNDS: u64 = 4;
    let s = Setup::new(Path::Outbox);
    let chain = chain_id("race");
    let mut held: Option<u64> = None;
    let mut late = 0;
    for round in 0..ROUNDS {
        let start_at = (now_ms() + 2_500).to_string();
        let cond: Vec<String> = match held {
            None => vec!["--if-absent".into()],
            Some(v) => vec!["--if-version".into(), v.to_string()],
        };
        let running: Vec<_> = (0..WRITERS)
            .map(|w| {
                let seed = (round * WRITERS + w + 1).to_string();
                let mut args = vec![
                    "put".to_string(),
                    chain.clone(),
                    "t".into(),
                    "256".into(),
                    seed,
                    "--v2".into(),
                    "--start-at-ms".into(),
                    start_at.clone(),
                ];
                args.extend(cond.iter().cloned());
                Guest::new("probe", &s.local.url)
                    .env("SKYLARK_GLOBAL_URL", &s.global.url)
                    .args(args)
                    .spawn()
            })
            .collect();
        let outs: Vec<Value> = running
            .into_iter()
            .map(|r| r.wait(RUN_TIMEOUT).assert_success().json())
            .collect();
        late += outs.iter().filter(|o| o["late"] == true).count();
        let winners: Vec<&Value> = outs.iter().filter(|o| status(o) == 0).collect();
        assert_eq!(winners.len(), 1, "round {round}: {outs:?}");
        let won = versions(winners[0])[0];
        assert!(
            held.is_none_or(|v| won > v),
            "round {round}: {won} after {held:?}"
        );
        for o in &outs {
            if status(o) != 0 {
                assert_eq!(status(o), CONDITION_FAILED, "round {round}: {o}");
                assert_eq!(versions(o), [won], "round {round}: {o}");
            }
        }
        let hash = s.hash(&chain);
        assert_eq!(version_of(&hash, "t"), won, "round {round}");
        assert_eq!(
            winners[0]["fnv"].as_str(),
            Some(fnv1a(&hash["t"]).as_str()),
            "round {round}: the winner's bytes"
        );
        held = Some(won);
    }
    assert_eq!(s.counter("puts"), ROUNDS);
    assert_eq!(s.counter("conditions_failed"), ROUNDS * (WRITERS - 1));
    eprintln!(
        "{late} of {} writers started after their round's start time",
        ROUNDS * WRITERS
    );
}

/// The probe built at the version-1 commit (`scripts/build-v1-probe.sh`).
fn v1_probe() -> std::path::PathBuf {
    let p = root().join("tests/data/v1/probe.wasm");
    assert!(p.exists(), "{} missing", p.display());
    p
}

#[test]
fn a_version_1_guest_runs_unchanged() {
    let redis = Redis::start();
    let run = |args: &[&str]| -> Value {
        Guest::at(&v1_probe(), &redis.url)
            .env("SKYLARK_PROPAGATION", "off")
            .args(args)
            .run(RUN_TIMEOUT)
            .assert_success()
            .json()
    };
    // The module imports only version-1 functions.
    let module = std::fs::read(v1_probe()).expect("read the v1 probe");
    assert!(
        !module.windows(14).any(|w| w == b"skylark_put_v2"),
        "the v1 probe imports skylark_put_v2"
    );
    let chain = chain_id("v1");
    let put = run(&["put", &chain, "pre", "70000", "3"]);
    assert_eq!(status(&put), 0, "{put}");
    let many = run(&["put-many", &chain, "f", "4", "1000", "10"]);
    assert_eq!(status(&many), 0, "{many}");
    let got = run(&["get", &chain]);
    assert_eq!(status(&got), 0, "{got}");
    assert_eq!(got["tier"], "local");
    let fields = got["fields"].as_object().expect("fields");
    assert_eq!(fields.len(), 5, "{got}");
    assert_eq!(
        fields["pre"]["fnv"].as_str(),
        Some(fnv1a(&pattern(70000, 3)).as_str())
    );
    for i in 0..4u64 {
        assert_eq!(
            fields[&format!("f{i}")]["fnv"].as_str(),
            Some(fnv1a(&pattern(1000, 10 + i)).as_str()),
            "f{i}"
        );
    }
    // The v1 puts got versions like any other: a v2 compare-and-swap builds on them.
    let hash = redis.hgetall(&format!("{NS}:bundle:{chain}"));
    let v = version_of(&hash, "pre");
    let cas = Guest::new("probe", &redis.url)
        .env("SKYLARK_PROPAGATION", "off")
        .args(["put", &chain, "pre", "10", "4", "--v2", "--if-version"])
        .args([v.to_string()])
        .run(RUN_TIMEOUT)
        .assert_success()
        .json();
    assert_eq!(status(&cas), 0, "{cas}");
    assert!(versions(&cas)[0] > v);
    // And the v1 guest reads what the v2 one wrote.
    let got = run(&["get", &chain]);
    assert_eq!(got["fields"]["pre"]["len"], 10, "{got}");
}
