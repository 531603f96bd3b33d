//! The fenced writes of `skylark_core::fence` (versioned put, copy, clean-up) run as the
//! plugin sends them, against a real redis-server: an older copy or a late clean-up never
//! replaces or deletes newer state, and TTLs are given only when configured.

use skylark_core::fence::{self, Placed, Stamped};
use skylark_testkit::Redis;
use std::collections::BTreeMap;
use std::time::Duration;

const KEY: &str = "skylark:bundle:fence";

fn run(r: &Redis, cmd: redis::Cmd) -> redis::Value {
    cmd.query(&mut r.conn()).expect("the script runs")
}

fn put(r: &Redis, fields: &[(&str, &[u8])]) -> Vec<u64> {
    let replies: Vec<redis::Value> = fence::put(KEY, fields, None)
        .query(&mut r.conn())
        .expect("the put runs");
    fence::put_reply(&replies).expect("versions in the reply")
}

fn copy(r: &Redis, state: &[Stamped<'_>], placed: &[Placed<'_>]) -> i64 {
    match run(r, fence::copy(KEY, state, placed, None, None)) {
        redis::Value::Int(n) => n,
        other => panic!("unexpected copy reply {other:?}"),
    }
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
    let sweep = fence::sweep(KEY, &[(b"t0", seen[0]), (b"t1", seen[1])]);
    assert_eq!(run(&r, sweep), redis::Value::Int(3));
    let all = r.hgetall(KEY);
    assert_eq!(text(&all, "t0"), None);
    assert_eq!(text(&all, "@v:t0"), None);
    assert_eq!(text(&all, "@at:t0"), None);
    assert_eq!(text(&all, "t1").as_deref(), Some("c"));
    assert_eq!(text(&all, "@v:t1"), Some(newer.to_string()));
    // What is left once no state remains goes with the bundle.
    let sweep = fence::sweep(KEY, &[(b"t1", newer)]);
    let _ = run(&r, sweep);
    assert!(r.hgetall(KEY).is_empty(), "{:?}", r.hgetall(KEY));
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
    let _ = run(
        &r,
        fence::copy(KEY, &[(b"t0", v + 1, b"b")], &[], None, None),
    );
    assert_eq!(ttl(&r), -1, "a copy without a TTL");
    let _ = run(
        &r,
        fence::copy(
            KEY,
            &[],
            &[],
            Some(Duration::from_secs(90)),
            Some("@incoming:j"),
        ),
    );
    let t = ttl(&r);
    assert!((1..=90).contains(&t), "TTL {t}");
    // The announcement a copy removes, and no expiry for a bundle that does not exist.
    let _ = run(
        &r,
        fence::copy(
            "skylark:bundle:none",
            &[],
            &[],
            Some(Duration::from_secs(90)),
            Some("@incoming:j"),
        ),
    );
    let exists: i64 = redis::cmd("EXISTS")
        .arg("skylark:bundle:none")
        .query(&mut r.conn())
        .expect("EXISTS");
    assert_eq!(exists, 0);
}
