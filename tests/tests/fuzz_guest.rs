//! The wasm fuzz guest in the normal test suite: 20,000 random calls to the real imports
//! under real `wasmedge` with the real plugin and real redis-servers, in two processes
//! (propagation on with small limits; and propagation off, bundle contents checked
//! exactly).
//! Every status must be one the model allows, every error must come with a message, no
//! host write may stray outside its spans, and wasmedge must exit normally.
//! `scripts/fuzz.sh` runs the same for a million calls and more.

use fuzz_runner::{run, Options};
use std::time::Duration;

#[test]
fn twenty_thousand_random_calls_break_nothing() {
    let report = run(&Options {
        calls: 20_000,
        procs: 2,
        parallel: 2,
        // Seeds 3 and 4: variants `prop-small` and `local` (the variant is seed mod 4).
        seed: 3,
        timeout: Duration::from_secs(600),
    });
    let text = report.render();
    eprintln!("{text}");
    assert!(report.crashes().is_empty(), "{text}");
    assert_eq!(report.violations(), 0, "{text}");
    assert!(report.calls() >= 20_000, "{text}");
    let statuses = report.statuses();
    // The mix reached success and the main error paths of every import.
    for (import, codes) in [
        ("skylark_put", &[0, 10, 12][..]),
        ("skylark_put_many", &[0, 10, 12, 14, 17]),
        ("skylark_put_v2", &[0, 10, 12, 14]),
        ("skylark_get_bundle", &[0, 2, 10, 12, 15]),
        ("skylark_take_result", &[0, 2, 10, 16]),
        ("skylark_drop_result", &[0, 16]),
        ("skylark_last_error", &[0, 10]),
    ] {
        for code in codes {
            assert!(
                statuses.get(import).is_some_and(|c| c.contains_key(code)),
                "{import} never returned {code}:\n{text}"
            );
        }
    }
}
