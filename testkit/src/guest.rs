//! Guests under the real `wasmedge` CLI with the Skylark plugin loaded: a builder for the
//! command ([`Guest`]), a running process whose stdout lines arrive as printed
//! ([`Running`]), what a finished run produced ([`GuestRun`]), and ahead-of-time compiled
//! copies of guest modules ([`aot`]).

use crate::{plugin_dir, root, wasm, wasmedge_bin};
use serde_json::Value;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a guest run produced.
#[derive(Debug)]
pub struct GuestRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl GuestRun {
    /// The last stdout line parsed as JSON.
    pub fn json(&self) -> Value {
        let line = self
            .stdout
            .lines()
            .last()
            .unwrap_or_else(|| panic!("guest printed nothing; stderr:\n{}", self.stderr));
        serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "guest output {line:?} is not JSON ({e}); stderr:\n{}",
                self.stderr
            )
        })
    }

    /// Asserts a zero exit code, with the guest's output in the message otherwise.
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "wasmedge exited with {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// `wasmedge` with the plugin loaded and configured for node `test-node` on the store at
/// `redis_url`, and no other `SKYLARK_*` variable of this process; the caller adds
/// `wasmedge` options (`--env K=V`), then the module and its arguments.
pub fn wasmedge_command(redis_url: &str) -> Command {
    wasmedge_command_with(&wasmedge_bin(), &plugin_dir(), redis_url)
}

/// [`wasmedge_command`] with another `wasmedge` and plugin directory (the arm64 build
/// under qemu-user, for instance).
pub fn wasmedge_command_with(wasmedge: &Path, plugin_dir: &Path, redis_url: &str) -> Command {
    let mut cmd = Command::new(wasmedge);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SKYLARK_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("WASMEDGE_PLUGIN_PATH", plugin_dir)
        .env("SKYLARK_REDIS_URL", redis_url)
        .env("SKYLARK_NODE_NAME", "test-node");
    cmd
}

/// A guest invocation under the real `wasmedge` CLI with the Skylark plugin loaded.
pub struct Guest {
    cmd: Command,
    /// Where stderr goes instead of the captured pipe ([`Guest::stderr`]).
    stderr: Option<Stdio>,
}

impl Guest {
    /// `wasmedge <module>.wasm args...`, with the plugin, talking to `redis`.
    pub fn new(module: &str, redis_url: &str) -> Guest {
        Guest::at(&wasm(module), redis_url)
    }

    /// Like [`Guest::new`], for a module file outside the guest directory (an AOT-compiled
    /// copy, for instance).
    pub fn at(module: &Path, redis_url: &str) -> Guest {
        let mut cmd = wasmedge_command(redis_url);
        cmd.arg(module);
        Guest { cmd, stderr: None }
    }

    /// Like [`Guest::at`], under another `wasmedge` with another plugin directory.
    pub fn with_runtime(
        wasmedge: &Path,
        plugin_dir: &Path,
        module: &Path,
        redis_url: &str,
    ) -> Guest {
        let mut cmd = wasmedge_command_with(wasmedge, plugin_dir, redis_url);
        cmd.arg(module);
        Guest { cmd, stderr: None }
    }

    pub fn args<I, S>(mut self, args: I) -> Guest
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Sets a variable in the host process environment (plugin configuration).
    pub fn env(mut self, k: &str, v: &str) -> Guest {
        self.cmd.env(k, v);
        self
    }

    /// Removes a variable from the host process environment (the plugin's default applies).
    pub fn env_remove(mut self, k: &str) -> Guest {
        self.cmd.env_remove(k);
        self
    }

    /// Sends the guest's stderr to `stderr` instead of capturing it; the run's `stderr`
    /// is then empty.
    pub fn stderr(mut self, stderr: Stdio) -> Guest {
        self.stderr = Some(stderr);
        self
    }

    /// The `wasmedge` command, for settings this type has no method for (`pre_exec`).
    pub fn command_mut(&mut self) -> &mut Command {
        &mut self.cmd
    }

    /// Starts the guest without waiting.
    pub fn spawn(mut self) -> Running {
        let captured = self.stderr.is_none();
        let mut child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(self.stderr.take().unwrap_or_else(Stdio::piped))
            .spawn()
            .expect("start wasmedge");
        let started = Instant::now();
        let out = child.stdout.take().expect("piped stdout");
        let err = if captured {
            Some(child.stderr.take().expect("piped stderr"))
        } else {
            None
        };
        let (lines_tx, lines) = std::sync::mpsc::channel();
        let out_t = std::thread::spawn(move || {
            let mut all = String::new();
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                all.push_str(&line);
                all.push('\n');
                let _ = lines_tx.send((line, started.elapsed()));
            }
            all
        });
        let err_t = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut err) = err {
                let _ = err.read_to_string(&mut s);
            }
            s
        });
        Running {
            child,
            started,
            lines,
            out_t,
            err_t,
        }
    }

    /// Runs the guest to completion; kills it and panics after `timeout`.
    pub fn run(self, timeout: Duration) -> GuestRun {
        self.spawn().wait(timeout)
    }
}

/// A guest that is running.
pub struct Running {
    child: Child,
    started: Instant,
    /// Stdout lines as they are printed, with the time since start.
    lines: std::sync::mpsc::Receiver<(String, Duration)>,
    out_t: std::thread::JoinHandle<String>,
    err_t: std::thread::JoinHandle<String>,
}

impl Running {
    /// Kills the guest (SIGKILL): no exit handlers run.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits at most `timeout` for the guest to exit, then kills it (SIGKILL); returns
    /// everything it printed. `status` tells whether the signal ended it.
    pub fn wait_or_kill(mut self, timeout: Duration) -> GuestRun {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    let _ = self.child.kill();
                    break self.child.wait().expect("wait for wasmedge");
                }
            }
        };
        GuestRun {
            status,
            stdout: self.out_t.join().unwrap_or_default(),
            stderr: self.err_t.join().unwrap_or_default(),
            elapsed: self.started.elapsed(),
        }
    }

    /// The next stdout line and when (since start) it was printed, waiting at most
    /// `timeout`; `None` if the guest closed stdout or the time ran out. The guest keeps
    /// running.
    pub fn next_line(&self, timeout: Duration) -> Option<(String, Duration)> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Like [`Running::wait`], and also returns the process's peak resident set size in
    /// bytes (`ru_maxrss`, which `wait4` reports when it reaps the process).
    pub fn wait_peak_rss(self, timeout: Duration) -> (GuestRun, u64) {
        use std::os::unix::process::ExitStatusExt;
        let pid = self.child.id() as libc::pid_t;
        let (status, peak_kib) = loop {
            let mut status = 0;
            // SAFETY: rusage is plain integers; all zeroes is a valid value to overwrite.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: `pid` is this process's own child, not reaped yet (nothing else
            // waits for it); `status` and `usage` are live locals wait4 may write.
            let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            if r == pid {
                break (ExitStatus::from_raw(status), usage.ru_maxrss.max(0) as u64);
            }
            assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
            if self.started.elapsed() > timeout {
                // SAFETY: signalling the still unreaped child; its pid cannot be reused.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("guest still running after {timeout:?}: killed");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let run = GuestRun {
            status,
            stdout: self.out_t.join().unwrap_or_default(),
            stderr: self.err_t.join().unwrap_or_default(),
            elapsed: self.started.elapsed(),
        };
        (run, peak_kib * 1024)
    }

    /// Waits for the guest; kills it and panics if it runs longer than `timeout`.
    pub fn wait(mut self, timeout: Duration) -> GuestRun {
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("wait for wasmedge") {
                break st;
            }
            if self.started.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("guest still running after {timeout:?}: killed");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        GuestRun {
            status,
            stdout: self.out_t.join().unwrap_or_default(),
            stderr: self.err_t.join().unwrap_or_default(),
            elapsed: self.started.elapsed(),
        }
    }
}

/// Default deadline for one guest run (interpreter mode, debug-free release guests).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Guest `name` compiled ahead of time with `wasmedge compile` into
/// `target/bench/<name>-aot.wasm`; recompiled only when the source module is newer.
/// Tests of one binary that ask at once compile it once (a process-wide lock); processes
/// compile into their own temporary file, so a rename never finds another's file gone.
pub fn aot(name: &str) -> PathBuf {
    aot_of(&wasm(name), name)
}

/// The module `src` compiled ahead of time into `target/bench/<name>-aot.wasm`, as
/// [`aot`] does for a guest of this workspace (e.g. `tests/data/v1/probe.wasm`).
pub fn aot_of(src: &Path, name: &str) -> PathBuf {
    static COMPILING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = COMPILING.lock().unwrap_or_else(|p| p.into_inner());
    let src = src.to_path_buf();
    let out = root().join(format!("target/bench/{name}-aot.wasm"));
    if let (Some(o), Some(s)) = (mtime(&out), mtime(&src)) {
        if o >= s {
            eprintln!("[aot] reusing {}", out.display());
            return out;
        }
    }
    let dir = out.parent().expect("target/bench has a parent");
    std::fs::create_dir_all(dir).expect("create target/bench");
    let tmp = dir.join(format!("{name}-aot.wasm.{}.partial", std::process::id()));
    eprintln!("[aot] wasmedge compile {} (takes a while)", src.display());
    let t = Instant::now();
    let result = Command::new(wasmedge_bin())
        .arg("compile")
        .arg(&src)
        .arg(&tmp)
        .output()
        .expect("start wasmedge compile");
    assert!(
        result.status.success(),
        "wasmedge compile failed ({:?}):\n{}{}",
        result.status,
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::rename(&tmp, &out).expect("move the AOT module into place");
    eprintln!("[aot] compiled in {:.1} s", t.elapsed().as_secs_f64());
    out
}
