//! The FFI boundary under real wasmedge with the real plugin and probe guest: a failing
//! host call whose logging meets a broken or closed stderr still returns its status to the
//! guest and the process exits normally (nothing panics outside `catch_unwind`, which would
//! abort wasmedge); and a `put_many` of 100,000 fields is stored and read back whole.

use probe::{fnv1a, pattern};
use skylark_abi::Status;
use skylark_testkit::{aot, chain_id, Guest, Redis, RUN_TIMEOUT};
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;

/// The write end of a pipe whose read end is already closed: every write fails (`EPIPE`).
fn broken_pipe() -> OwnedFd {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

/// A loopback port nothing listens on: connecting is refused at once.
fn refused_url() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    format!("redis://127.0.0.1:{port}")
}

/// Host calls that fail and log on the way: an invalid configuration (logged at `Error`
/// by default) and a refused store (logged at `Info`, enabled here with everything else).
/// Returns (name, guest, expected status).
fn failing_calls() -> Vec<(&'static str, Guest, Status)> {
    let chain = chain_id("ffi");
    let put = ["put", chain.as_str(), "t", "16", "1"];
    vec![
        (
            "invalid configuration",
            Guest::new("probe", &refused_url())
                .args(put)
                .env("SKYLARK_MAX_FIELDS", "0"),
            Status::ConfigInvalid,
        ),
        (
            "store refused, SKYLARK_LOG=trace",
            Guest::new("probe", &refused_url())
                .args(put)
                .env("SKYLARK_LOG", "trace"),
            Status::StoreUnavailable,
        ),
    ]
}

fn assert_normal_exit(name: &str, guest: Guest, expected: Status) {
    let run = guest.run(RUN_TIMEOUT);
    assert!(
        run.status.success(),
        "{name}: wasmedge exited with {:?} (a panic across the FFI boundary aborts it)\nstdout:\n{}",
        run.status,
        run.stdout
    );
    let out = run.json();
    assert_eq!(out["status"], expected.code(), "{name}: {out}");
    assert!(
        out["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{name}: {out}"
    );
}

/// Stderr is a pipe nobody reads, so every write to it fails with EPIPE. With SIGPIPE
/// ignored (as in many hosts) `eprintln!` panicked on that, and the panic out of the error
/// report after the first caught panic aborted wasmedge; with the default disposition the
/// first log line killed wasmedge with SIGPIPE.
#[test]
fn a_failing_call_with_broken_stderr_exits_normally() {
    for ignore_sigpipe in [true, false] {
        for (name, mut guest, expected) in failing_calls() {
            if ignore_sigpipe {
                // SAFETY: runs in the forked child before exec and only calls signal(2),
                // which is async-signal-safe.
                unsafe {
                    guest.command_mut().pre_exec(|| {
                        if libc::signal(libc::SIGPIPE, libc::SIG_IGN) == libc::SIG_ERR {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            // (Otherwise std::process resets SIGPIPE to its default in the child.)
            let guest = guest.stderr(Stdio::from(broken_pipe()));
            let name = format!("{name}, SIGPIPE ignored: {ignore_sigpipe}");
            assert_normal_exit(&name, guest, expected);
        }
    }
}

/// File descriptor 2 is closed (`2>&-`): writes to it fail (EBADF, or whatever file
/// reuses the number rejects them) and the process still exits normally.
#[test]
fn a_failing_call_with_stderr_closed_exits_normally() {
    for (name, mut guest, expected) in failing_calls() {
        // SAFETY: runs in the forked child before exec and only calls close(2), which is
        // async-signal-safe; descriptor 2 is the child's own.
        unsafe {
            guest.command_mut().pre_exec(|| {
                libc::close(2);
                Ok(())
            });
        }
        let guest = guest.stderr(Stdio::inherit());
        assert_normal_exit(name, guest, expected);
    }
}

/// A put_many of 100,000 fields in one call is stored whole and read back whole. (The
/// guest is AOT-compiled so that the host's time dominates: about 0.5 s on a loaded 2-core
/// machine, where the former pairwise duplicate check, 5 * 10^9 comparisons, took 25 s.
/// Linearity itself is checked by decode's unit test with a margin of orders of
/// magnitude; no wall-clock bound here.)
#[test]
fn a_100000_field_put_many_is_stored_and_read_back_whole() {
    const FIELDS: usize = 100_000;
    const SIZE: usize = 8;
    const SEED: u64 = 5;
    let module = aot("probe");
    let redis = Redis::start();
    let chain = chain_id("wide");
    let (count, size, seed) = (FIELDS.to_string(), SIZE.to_string(), SEED.to_string());
    let put = Guest::at(&module, &redis.url)
        .env("SKYLARK_MAX_FIELDS", &count)
        .args(["put-many", &chain, "f", &count, &size, &seed])
        .run(RUN_TIMEOUT);
    let out = put.assert_success().json();
    assert_eq!(out["status"], 0, "{out}");

    let stored = redis.state(&format!("skylark:bundle:{chain}"));
    assert_eq!(stored.len(), FIELDS);
    for i in 0..FIELDS {
        let v = stored.get(&format!("f{i}"));
        assert_eq!(v, Some(&pattern(SIZE, SEED + i as u64)), "field f{i}");
    }

    let got = Guest::at(&module, &redis.url)
        .env("SKYLARK_MAX_FIELDS", &count)
        .args(["get", &chain])
        .run(RUN_TIMEOUT);
    let got = got.assert_success().json();
    assert_eq!(got["status"], 0, "{}", got["error"]);
    let fields = got["fields"].as_object().expect("fields");
    assert_eq!(fields.len(), FIELDS);
    for i in 0..FIELDS {
        let f = &fields[&format!("f{i}")];
        assert_eq!(f["len"], SIZE, "field f{i}");
        assert_eq!(
            f["fnv"],
            fnv1a(&pattern(SIZE, SEED + i as u64)).as_str(),
            "field f{i}"
        );
    }
}
