//! Harness for the system tests: finds the wasmedge binary, the built plugin and guest
//! `.wasm` files, starts throw-away `redis-server` processes on free ports or Unix
//! sockets, and runs guests under `wasmedge` with a deadline.
//!
//! Build the artifacts first with `scripts/test.sh` (which also runs the tests), or set
//! `WASMEDGE_BIN`, `SKYLARK_PLUGIN_DIR` and `SKYLARK_WASM_DIR` yourself.

use serde_json::Value;
use std::io::{BufRead, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn env_path(var: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or(default)
}

fn must_exist(p: PathBuf, what: &str) -> PathBuf {
    assert!(
        p.exists(),
        "{what} not found at {}: run scripts/test.sh, which installs WasmEdge and builds the \
         plugin and guests before running the tests",
        p.display()
    );
    p
}

/// The `wasmedge` command.
pub fn wasmedge_bin() -> PathBuf {
    must_exist(
        env_path("WASMEDGE_BIN", root().join(".wasmedge/bin/wasmedge")),
        "wasmedge",
    )
}

/// The directory holding only `libwasmedgePluginSkylark.so`, for `WASMEDGE_PLUGIN_PATH`.
pub fn plugin_dir() -> PathBuf {
    let dir = env_path("SKYLARK_PLUGIN_DIR", root().join("target/plugin"));
    must_exist(
        dir.join("libwasmedgePluginSkylark.so"),
        "the Skylark plugin",
    );
    dir
}

/// A guest module by name (`probe`, `bad-guest`, `preprocess`, ...).
pub fn wasm(name: &str) -> PathBuf {
    let dir = env_path(
        "SKYLARK_WASM_DIR",
        root().join("target/wasm32-wasip1/release"),
    );
    must_exist(dir.join(format!("{name}.wasm")), "guest module")
}

/// A redis-server process that lives as long as this value.
pub struct Redis {
    child: Child,
    _dir: tempfile::TempDir,
    /// URL for `SKYLARK_REDIS_URL`.
    pub url: String,
    /// TCP port, or 0 when listening on a Unix socket only.
    pub port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

impl Redis {
    /// Starts a redis-server on a free loopback port.
    pub fn start() -> Redis {
        for _ in 0..5 {
            let port = free_port();
            if let Some(r) = Redis::spawn(port, None) {
                return r;
            }
        }
        panic!("redis-server did not start on a free port after 5 attempts");
    }

    /// Starts a redis-server listening only on a Unix socket.
    pub fn start_unix() -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let sock = dir.path().join("redis.sock");
        Redis::spawn_in(dir, 0, Some(sock)).expect("redis-server on a Unix socket did not start")
    }

    fn spawn(port: u16, sock: Option<PathBuf>) -> Option<Redis> {
        Redis::spawn_in(tempfile::tempdir().expect("temp dir"), port, sock)
    }

    fn spawn_in(dir: tempfile::TempDir, port: u16, sock: Option<PathBuf>) -> Option<Redis> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(s) = &sock {
            cmd.arg("--unixsocket")
                .arg(s)
                .args(["--unixsocketperm", "700"]);
        }
        let child = cmd
            .spawn()
            .expect("redis-server not found: install it (apt-get install redis-server)");
        let url = match &sock {
            Some(s) => format!("unix://{}", s.display()),
            None => format!("redis://127.0.0.1:{port}"),
        };
        let mut redis = Redis {
            child,
            _dir: dir,
            url,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = redis.child.try_wait() {
                return None; // exited: port taken, probably
            }
            if redis.try_conn().is_some() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn try_conn(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(self.url.as_str()).ok()?;
        let mut c = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        redis::cmd("PING").query::<String>(&mut c).ok()?;
        Some(c)
    }

    /// A synchronous connection for assertions.
    pub fn conn(&self) -> redis::Connection {
        self.try_conn().expect("connect to test redis")
    }

    /// Every field of a hash, as a sorted map.
    pub fn hgetall(&self, key: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
        redis::cmd("HGETALL")
            .arg(key)
            .query(&mut self.conn())
            .expect("HGETALL")
    }

    /// The state fields of a bundle hash: every field but the reserved ones (`@at:`,
    /// `@v:`, `@incoming:`), as a sorted map.
    pub fn state(&self, key: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
        let mut all = self.hgetall(key);
        all.retain(|k, _| !k.starts_with('@'));
        all
    }

    /// Number of calls of `command` the server has served (from INFO commandstats).
    pub fn command_calls(&self, command: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.conn())
            .expect("INFO");
        let prefix = format!("cmdstat_{}:calls=", command.to_ascii_lowercase());
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
        let mut cmd = Command::new(wasmedge_bin());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SKYLARK_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("WASMEDGE_PLUGIN_PATH", plugin_dir())
            .env("SKYLARK_REDIS_URL", redis_url)
            .env("SKYLARK_NODE_NAME", "test-node")
            .arg(module);
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

/// A chain id unique to this test process and call site.
pub fn chain_id(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub mod cluster;
pub mod constellation;
pub mod fault_checks;
pub mod faults;
pub mod fuzz_guest;
pub mod history;
pub mod linkemu;
pub mod report;
pub mod secure;

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Guest `name` compiled ahead of time with `wasmedge compile` into
/// `target/bench/<name>-aot.wasm`; recompiled only when the source module is newer.
/// Tests of one binary that ask at once compile it once (a process-wide lock); processes
/// compile into their own temporary file, so a rename never finds another's file gone.
pub fn aot(name: &str) -> PathBuf {
    static COMPILING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = COMPILING.lock().unwrap_or_else(|p| p.into_inner());
    let src = wasm(name);
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

/// Subscribes to pub/sub `channel` of the redis-server at `url`; every message payload
/// arrives on the returned receiver, from a background thread. Returns once subscribed;
/// panics if that fails within 5 s.
pub fn subscribe(url: &str, channel: &str) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (url_owned, channel_owned) = (url.to_string(), channel.to_string());
    std::thread::spawn(move || {
        let (url, channel) = (url_owned, channel_owned);
        let Ok(client) = redis::Client::open(url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let mut ps = conn.as_pubsub();
        if ps.subscribe(&channel).is_err() {
            return;
        }
        let _ = ready_tx.send(());
        while let Ok(msg) = ps.get_message() {
            let Ok(line) = msg.get_payload::<String>() else {
                continue;
            };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("could not subscribe to {channel} at {url}"));
    rx
}
