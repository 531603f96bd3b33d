//! A hostile guest calls every import (`skylark_put_v2` too) with out-of-range pointers,
//! wrapping lengths, invalid ids and garbage options: each call gets the right error code
//! and a message, the wasmedge process exits normally, and the host still serves valid
//! calls afterwards.

use skylark_abi::Status;
use skylark_testkit::{Guest, Redis, RUN_TIMEOUT};
use std::collections::HashMap;

#[test]
fn hostile_arguments_get_error_codes_and_the_runtime_survives() {
    let redis = Redis::start();
    let run = Guest::new("bad-guest", &redis.url)
        .args(["hostile-chain"])
        .run(RUN_TIMEOUT);
    run.assert_success();

    let mut cases: HashMap<String, (i32, String)> = HashMap::new();
    for line in run.stdout.lines() {
        let Some(rest) = line.strip_prefix("case ") else {
            continue;
        };
        let (name, rest) = rest.split_once(" status ").expect("case line");
        let (code, message) = rest.split_once(" message ").expect("case line");
        cases.insert(name.into(), (code.parse().expect("code"), message.into()));
    }

    use Status::*;
    let expected = [
        ("put_chain_past_end", InvalidPointer),
        ("put_task_past_end", InvalidPointer),
        ("put_value_past_end", InvalidPointer),
        ("put_value_wraps", InvalidPointer),
        ("put_chain_len_huge", InvalidPointer),
        ("put_value_len_huge", ValueTooLarge),
        ("put_opts_past_end", InvalidPointer),
        ("put_chain_colon", InvalidId),
        ("put_task_glob", InvalidId),
        ("put_chain_empty", InvalidId),
        ("put_chain_too_long", InvalidId),
        ("put_task_nul", InvalidId),
        ("put_opts_garbage", InvalidOptions),
        ("put_many_table_past_end", InvalidPointer),
        ("put_many_count_huge", TooManyFields),
        ("put_many_count_zero", TooManyFields),
        ("put_many_record_past_end", InvalidPointer),
        ("put_many_duplicate", DuplicateField),
        ("put_v2_versions_past_end", InvalidPointer),
        ("put_v2_versions_wrap", InvalidPointer),
        ("put_v2_count_huge", TooManyFields),
        ("put_v2_conditions_exclusive", InvalidOptions),
        ("get_result_past_end", InvalidPointer),
        ("get_buffer_past_end", InvalidPointer),
        ("get_chain_past_end", InvalidPointer),
        ("take_unknown_handle", UnknownHandle),
        ("take_result_past_end", InvalidPointer),
        ("drop_unknown_handle", UnknownHandle),
        ("last_error_len_past_end", InvalidPointer),
        ("last_error_buf_past_end", InvalidPointer),
        ("valid_put", Ok),
        ("valid_put_v2", Ok),
        ("valid_get", Ok),
    ];
    for (name, status) in expected {
        let (code, message) = cases
            .get(name)
            .unwrap_or_else(|| panic!("case {name} missing from output:\n{}", run.stdout));
        assert_eq!(*code, status.code(), "{name}: {message}");
        if status != Ok && !name.starts_with("last_error") {
            assert!(
                message.starts_with("skylark_"),
                "{name} has no message: {message:?}"
            );
        }
        if status == Ok {
            assert!(message.is_empty(), "{name}: success must clear the message");
        }
    }
    assert_eq!(
        cases.len(),
        expected.len(),
        "unexpected cases:\n{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("valid_get_contains_value true"),
        "{}",
        run.stdout
    );

    // The valid versioned put reports the version it assigned.
    let version: u64 = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("valid_put_v2_version "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no version of the valid put_v2:\n{}", run.stdout));
    let held = redis.hgetall("skylark:bundle:hostile-chain");
    assert_eq!(
        held.get("@v:task")
            .map(|v| String::from_utf8_lossy(v).into_owned()),
        Some(version.to_string())
    );

    // Only the valid puts reached the store (one field: none of the refused "other").
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(keys, vec!["skylark:bundle:hostile-chain".to_string()]);
    assert_eq!(redis.state("skylark:bundle:hostile-chain").len(), 1);
}
