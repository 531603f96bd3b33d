//! The fenced writes of `skylark_core::fence` (versioned put, copy, clean-up) run as the
//! plugin sends them, against a real redis-server: an older copy or a late clean-up never
//! replaces or deletes newer state, TTLs are given only when configured, and a guarded put
//! (condition, idempotency key) that is refused or repeated writes nothing.

use skylark_core::fence::{self, Copy, Placed, Stamped};
use skylark_testkit::Redis;
use std::collections::BTreeMap;
use std::time::Duration;

const KEY: &str = "skylark:bundle:fence";

/// Runs a script command of `fence` (by digest) with its text, as the plugin does after a
/// `NOSCRIPT` (these servers never saw the scripts).
fn run(r: &Redis, cmd: redis::Cmd) -> redis::Value {
    skylark_core::script::in_transaction(cmd)
        .query(&mut r.conn())
        .expect("the script runs")
}

fn put(r: &Redis, fields: &[(&str, &[u8])]) -> Vec<u64> {
    let replies: Vec<redis::Value> = fence::put(KEY, fields, None)
        .query(&mut r.conn())
        .expect("the put runs");
    fence::put_reply(&replies).expect("versions in the reply")
}

fn copy(r: &Redis, state: &[Stamped<'_>], placed: &[Placed<'_>]) -> i64 {
    let (wrote, _) = send(
        r,
        Copy {
            state,
            placed,
            ..Copy::default()
        },
    );
    wrote as i64
}

/// Sends a copy; (fields written, expected fields missing).
fn send(r: &Redis, c: Copy<'_>) -> (u64, Vec<String>) {
    let reply = run(r, c.cmd(KEY));
    let copied = fence::copy_reply(&reply).expect("a copy reply");
    let (wrote, missing) = (copied.wrote, copied.missing);
    let missing = missing
        .into_iter()
        .map(|f| String::from_utf8_lossy(&f).into_owned())
        .collect();
    (wrote, missing)
}

fn text(all: &BTreeMap<String, Vec<u8>>, field: &str) -> Option<String> {
    all.get(field)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[test]
fn puts_number_every_field_and_versions_only_grow() {
    let r = Redis::start();
    let first = put(&r, &[("t0", b"a"), ("t1", b"b")]);
    assert_eq!(first.len(), 2);
    let second = put(&r, &[("t0", b"c")]);
    assert!(second[0] > first[0], "{second:?} after {first:?}");
    // A copy from a node whose clock runs far ahead raises the floor: the next put here
    // is newer still, whatever this node's clock says.
    let ahead = second[0] + 3_600_000_000;
    assert_eq!(copy(&r, &[(b"t0", ahead, b"d")], &[]), 1);
    let third = put(&r, &[("t0", b"e")]);
    assert_eq!(third, [ahead + 1]);
    let all = r.hgetall(KEY);
    assert_eq!(text(&all, "t0").as_deref(), Some("e"));
    assert_eq!(text(&all, "@v:t0"), Some((ahead + 1).to_string()));
}

#[test]
fn an_older_copy_never_replaces_a_newer_one() {
    let r = Redis::start();
    let v = put(&r, &[("t0", b"new")])[0];
    assert_eq!(
        copy(&r, &[(b"t0", v - 1, b"old")], &[("t0", v - 1, "n1")]),
        0
    );
    assert_eq!(
        copy(&r, &[(b"t0", v, b"new")], &[]),
        0,
        "the same version again"
    );
    let all = r.hgetall(KEY);
    assert_eq!(text(&all, "t0").as_deref(), Some("new"));
    assert_eq!(
        text(&all, "@at:t0"),
        None,
        "an older copy's placement entry"
    );
    // A newer copy, and its placement entry, land.
    assert_eq!(
        copy(&r, &[(b"t0", v + 1, b"newer")], &[("t0", v + 1, "n2")]),
        1
    );
    let all = r.hgetall(KEY);
    assert_eq!(text(&all, "t0").as_deref(), Some("newer"));
    assert_eq!(text(&all, "@at:t0").as_deref(), Some("n2"));
    // A placement entry about the version held lands (a job recording where its copy
    // went); one about an older version does not.
    assert_eq!(copy(&r, &[], &[("t0", v + 1, "n3")]), 0);
    assert_eq!(text(&r.hgetall(KEY), "@at:t0").as_deref(), Some("n3"));
    assert_eq!(copy(&r, &[], &[("t0", v, "n4")]), 0);
    assert_eq!(text(&r.hgetall(KEY), "@at:t0").as_deref(), Some("n3"));
}

#[test]
fn a_field_without_a_version_takes_any_copy() {
    let r = Redis::start();
    let _: () = redis::cmd("HSET")
        .arg(KEY)
        .arg("t0")
        .arg("legacy")
        .query(&mut r.conn())
        .expect("HSET");
    assert_eq!(copy(&r, &[(b"t0", 0, b"copied")], &[]), 1);
    assert_eq!(text(&r.hgetall(KEY), "t0").as_deref(), Some("copied"));
}

#[test]
fn a_late_cleanup_deletes_only_what_its_job_saw() {
    let r = Redis::start();
    let seen = put(&r, &[("t0", b"a"), ("t1", b"b")]);
    let _ = copy(&r, &[], &[("t0", seen[0], "n1"), ("t1", seen[1], "n1")]);
    // t1 is written again after the clean-up's job read the bundle.
    let newer = put(&r, &[("t1", b"c")])[0];
    let sweep = fence::sweep(KEY, seen[1], &[(b"t0", seen[0]), (b"t1", seen[1])]);
    assert_eq!(run(&r, sweep), redis::Value::Int(3));
    let all = r.hgetall(KEY);
    assert_eq!(text(&all, "t0"), None);
    assert_eq!(text(&all, "@v:t0"), None);
    assert_eq!(text(&all, "@at:t0"), None);
    assert_eq!(text(&all, "t1").as_deref(), Some("c"));
    assert_eq!(text(&all, "@v:t1"), Some(newer.to_string()));
    // What is left once no state remains goes with the bundle.
    let sweep = fence::sweep(KEY, newer, &[(b"t1", newer)]);
    let _ = run(&r, sweep);
    assert!(r.hgetall(KEY).is_empty(), "{:?}", r.hgetall(KEY));
}

/// Finding 13 (RELIABILITY.md): a clean-up's job moves `t0` from n1 to n2 and empties n1
/// of it; another job of the chain, carrying the same version and finishing later, must
/// not name n1 again. A newer version may be placed there.
#[test]
fn a_placement_never_names_a_node_a_cleanup_emptied_of_that_version() {
    let r = Redis::start();
    let v = put(&r, &[("t0", b"a"), ("t1", b"b")]);
    let (v0, v1) = (v[0], v[1]);
    // The clean-up's finish: t0 and t1 placed on n2, n1 emptied of both up to their
    // versions (two tombstones of t0: n3 had been emptied by an earlier clean-up).
    send(
        &r,
        Copy {
            placed: &[("t0", v0, "n2")],
            swept: &[("t0", v0 - 5, "n3")],
            ..Copy::default()
        },
    );
    send(
        &r,
        Copy {
            placed: &[("t0", v0, "n2"), ("t1", v1, "n2")],
            swept: &[("t0", v0, "n1"), ("t1", v1, "n1")],
            ..Copy::default()
        },
    );
    // The other job finishes later: same version, the emptied node.
    let _ = copy(&r, &[], &[("t0", v0, "n1"), ("t1", v1, "n1")]);
    let all = r.hgetall(KEY);
    assert_eq!(text(&all, "@at:t0").as_deref(), Some("n2"), "{all:?}");
    assert_eq!(text(&all, "@at:t1").as_deref(), Some("n2"), "{all:?}");
    assert_eq!(
        text(&all, "@swept:t0").as_deref(),
        Some(format!("n1 {v0}\nn3 {}", v0 - 5).as_str())
    );
    // n3's tombstone is for an older version: the current one may be placed there, and a
    // newer put of t0 may be placed on n1 again.
    let _ = copy(&r, &[], &[("t0", v0, "n3")]);
    assert_eq!(text(&r.hgetall(KEY), "@at:t0").as_deref(), Some("n3"));
    let newer = put(&r, &[("t0", b"c")])[0];
    let _ = copy(&r, &[], &[("t0", newer, "n1")]);
    assert_eq!(text(&r.hgetall(KEY), "@at:t0").as_deref(), Some("n1"));
    // A clean-up whose placement could not move t1 off n2 (the record still names n2)
    // records no tombstone there, and is told so: it must leave t1 on n2.
    let reply = run(
        &r,
        Copy {
            placed: &[("t1", v1 - 1, "n4")],
            swept: &[("t1", v1, "n2"), ("t0", newer, "n2")],
            ..Copy::default()
        }
        .cmd(KEY),
    );
    let copied = fence::copy_reply(&reply).expect("a copy reply");
    assert_eq!(copied.swept, [(b"t0".to_vec(), "n2".to_string())]);
    let all = r.hgetall(KEY);
    assert_eq!(text(&all, "@at:t1").as_deref(), Some("n2"));
    assert_eq!(
        text(&all, "@swept:t1").as_deref(),
        Some(format!("n1 {v1}").as_str())
    );
    // Tombstones are not state: the bundle holds t0 and t1 only.
    let state: Vec<String> = r
        .hgetall(KEY)
        .into_keys()
        .filter(|k| !k.starts_with('@'))
        .collect();
    assert_eq!(state, ["t0", "t1"]);
}

#[test]
fn copies_expire_only_with_a_ttl() {
    let r = Redis::start();
    let ttl = |r: &Redis| -> i64 {
        redis::cmd("TTL")
            .arg(KEY)
            .query(&mut r.conn())
            .expect("TTL")
    };
    let v = put(&r, &[("t0", b"a")])[0];
    assert_eq!(ttl(&r), -1, "a put without a TTL");
    assert_eq!(copy(&r, &[(b"t0", v + 1, b"b")], &[]), 1);
    assert_eq!(ttl(&r), -1, "a copy without a TTL");
    let announced = Copy {
        ttl: Some(Duration::from_secs(90)),
        incoming: Some("@incoming:j"),
        ..Copy::default()
    };
    send(&r, announced);
    let t = ttl(&r);
    assert!((1..=90).contains(&t), "TTL {t}");
    // The announcement a copy removes, and no expiry for a bundle that does not exist.
    let _ = run(&r, announced.cmd("skylark:bundle:none"));
    let exists: i64 = redis::cmd("EXISTS")
        .arg("skylark:bundle:none")
        .query(&mut r.conn())
        .expect("EXISTS");
    assert_eq!(exists, 0);
}

/// Finding 13 (RELIABILITY.md), the other order: a copy to the node a later put's job
/// elected leaves out what the record places there, asks the node to confirm it, and
/// claims the node; a clean-up by the job of an earlier put then leaves it alone, and a
/// node a clean-up emptied first reports what it lacks.
#[test]
fn a_cleanup_never_empties_a_node_a_later_put_elected_and_a_copy_finds_what_is_gone() {
    let r = Redis::start();
    // The node holds t0 and t1 from earlier copies.
    let (v0, v1) = (100, 200);
    assert_eq!(copy(&r, &[(b"t0", v0, b"a"), (b"t1", v1, b"b")], &[]), 2);
    // The later put (of t2, version 400) is copied here: t2 sent, t0 and t1 expected.
    let (wrote, missing) = send(
        &r,
        Copy {
            state: &[(b"t2", 400, b"c")],
            expected: &[(b"t0", v0), (b"t1", v1)],
            claim: 400,
            ..Copy::default()
        },
    );
    assert_eq!((wrote, missing.len()), (1, 0));
    // The clean-up of an earlier put's job (put 300, it saw t0, t1, t2 at 100, 200, 150)
    // arrives late: refused, everything stays.
    let late = fence::sweep(KEY, 300, &[(b"t0", v0), (b"t1", v1), (b"t2", 150)]);
    assert_eq!(run(&r, late), redis::Value::Int(-1));
    assert_eq!(
        r.hgetall(KEY)
            .into_keys()
            .filter(|k| !k.starts_with('@'))
            .collect::<Vec<_>>(),
        ["t0", "t1", "t2"]
    );
    // A clean-up by a job as new as the claim goes ahead.
    let ok = fence::sweep(KEY, 400, &[(b"t0", v0)]);
    assert_eq!(run(&r, ok), redis::Value::Int(2));
    // Now t0 is gone (and t1 is older than expected): a copy that expected them hears so.
    let (_, missing) = send(
        &r,
        Copy {
            expected: &[(b"t0", v0), (b"t1", v1 + 1), (b"t2", 400)],
            claim: 500,
            ..Copy::default()
        },
    );
    assert_eq!(missing, ["t0", "t1"]);
    assert_eq!(
        text(&r.hgetall(KEY), "@claim").as_deref(),
        Some("500"),
        "the highest claim stays"
    );
}

/// A put with a guard (condition, idempotency key) as the plugin sends it: (what it did,
/// the whole hash afterwards).
fn guarded(
    r: &Redis,
    fields: &[(&str, &[u8])],
    guard: &fence::Guard,
) -> (fence::Verdict, BTreeMap<String, Vec<u8>>) {
    let replies: Vec<redis::Value> = fence::put_guarded(KEY, fields, None, guard)
        .query(&mut r.conn())
        .expect("the put runs");
    let verdict = fence::put_verdict(&replies).expect("a verdict in the reply");
    (verdict, r.hgetall(KEY))
}

#[test]
fn a_refused_put_writes_nothing_and_a_repeat_answers_with_the_first_versions() {
    use fence::{Condition, Guard, Verdict};
    let r = Redis::start();
    let v = put(&r, &[("t", b"a")])[0];
    let before = r.hgetall(KEY);
    let cas = |version| Guard {
        condition: Condition::Version(version),
        idempotency: None,
    };
    // A stale compare-and-swap of t and a new u: neither is written, u reports 0.
    let (verdict, after) = guarded(&r, &[("t", b"b"), ("u", b"c")], &cas(v - 1));
    assert_eq!(verdict, Verdict::ConditionFailed(vec![v, 0]));
    assert_eq!(after, before, "the values' HSET was undone");
    let absent = Guard {
        condition: Condition::Absent,
        idempotency: None,
    };
    let (verdict, after) = guarded(&r, &[("u", b"c"), ("t", b"b")], &absent);
    assert_eq!(verdict, Verdict::ConditionFailed(vec![0, v]));
    assert_eq!(after, before);
    // The swap that holds.
    let (verdict, after) = guarded(&r, &[("t", b"b")], &cas(v));
    let Verdict::Stored(w) = verdict else {
        panic!("{verdict:?}")
    };
    assert!(w[0] > v);
    assert_eq!(text(&after, "t").as_deref(), Some("b"));

    // An idempotent put of two fields, repeated in the other order, then with other bytes.
    let fields: [(&str, &[u8]); 2] = [("x", b"1"), ("y", b"2")];
    let keyed = Guard {
        condition: Condition::Always,
        idempotency: Some(("@idem:k".into(), fence::digest(&fields))),
    };
    let (verdict, after) = guarded(&r, &fields, &keyed);
    let Verdict::Stored(first) = verdict else {
        panic!("{verdict:?}")
    };
    let record = text(&after, "@idem:k").expect("the record");
    assert_eq!(
        record,
        format!("{}\nx {}\ny {}", fence::digest(&fields), first[0], first[1])
    );
    let swapped: [(&str, &[u8]); 2] = [("y", b"2"), ("x", b"1")];
    let (verdict, again) = guarded(&r, &swapped, &keyed);
    assert_eq!(verdict, Verdict::Repeated(vec![first[1], first[0]]));
    assert_eq!(again, after, "a repeat writes nothing");
    let other: [(&str, &[u8]); 2] = [("x", b"1"), ("y", b"3")];
    let conflict = Guard {
        idempotency: Some(("@idem:k".into(), fence::digest(&other))),
        ..keyed.clone()
    };
    let (verdict, again) = guarded(&r, &other, &conflict);
    assert_eq!(verdict, Verdict::Conflict);
    assert_eq!(again, after);
}
