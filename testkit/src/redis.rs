//! `redis-server` processes: the one launcher every part of the test tree uses (plain TCP,
//! a Unix socket, append-only durability, and further `redis.conf` lines for AUTH, ACL
//! users and TLS), the wait until a server answers, and reading what the plugin wrote in
//! a store (bundles, placement records, counters, the outbox).

use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The namespace the plugin uses by default.
pub const NS: &str = "skylark";

/// Prefix of the bundle fields holding the placement record.
pub const PLACEMENT_PREFIX: &str = "@at:";

/// Starts tried on free ports before giving up (a start fails when another process takes
/// the port first).
const START_ATTEMPTS: usize = 5;

/// How long a new server may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between readiness polls.
const POLL: Duration = Duration::from_millis(20);

/// How a store keeps its data across a restart of its `redis-server`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// No persistence at all (`appendonly no`, no snapshots): a restarted store is empty.
    #[default]
    Volatile,
    /// Append-only file written before every reply and fsynced once a second
    /// (`appendonly yes`, `appendfsync everysec`).
    AofEverysec,
    /// Append-only file fsynced before every reply (`appendfsync always`): a write the
    /// store acknowledged survives the store's death.
    AofAlways,
}

impl Durability {
    /// The `redis.conf` lines of this mode.
    pub fn conf_lines(self) -> &'static [&'static str] {
        match self {
            Durability::Volatile => &["appendonly no"],
            Durability::AofEverysec => &["appendonly yes", "appendfsync everysec"],
            Durability::AofAlways => &["appendonly yes", "appendfsync always"],
        }
    }

    /// The mode's name on command lines: `volatile`, `everysec` or `always`.
    pub fn name(self) -> &'static str {
        match self {
            Durability::Volatile => "volatile",
            Durability::AofEverysec => "everysec",
            Durability::AofAlways => "always",
        }
    }

    /// The mode named `name` (see [`Durability::name`]).
    pub fn parse(name: &str) -> Option<Durability> {
        [
            Durability::Volatile,
            Durability::AofEverysec,
            Durability::AofAlways,
        ]
        .into_iter()
        .find(|d| d.name() == name)
    }
}

/// What one `redis-server` runs with. Always: loopback only, no snapshots, not
/// daemonized, its files in its own directory.
#[derive(Clone, Debug, Default)]
pub struct ServerConfig {
    /// Plain TCP port; 0 for none (a Unix socket or TLS only).
    pub port: u16,
    /// A Unix socket (mode 700) to listen on as well.
    pub unix_socket: Option<PathBuf>,
    /// Persistence.
    pub durability: Durability,
    /// Further `redis.conf` lines (`requirepass`, `user`, `tls-port`, ...).
    pub extra: Vec<String>,
    /// Whether the server gets SIGKILL when the thread that launched it ends
    /// (`prctl(PR_SET_PDEATHSIG)`), so that it dies with the process however that ends.
    pub die_with_thread: bool,
}

impl ServerConfig {
    /// A plain server on TCP `port`.
    pub fn tcp(port: u16) -> ServerConfig {
        ServerConfig {
            port,
            ..ServerConfig::default()
        }
    }

    /// The `redis.conf` text for a server whose files are in `dir`.
    pub fn conf(&self, dir: &Path) -> String {
        let mut lines = vec![
            format!("port {}", self.port),
            "bind 127.0.0.1".to_string(),
            "save \"\"".to_string(),
            "daemonize no".to_string(),
            format!("dir {}", dir.display()),
        ];
        if let Some(sock) = &self.unix_socket {
            lines.push(format!("unixsocket {}", sock.display()));
            lines.push("unixsocketperm 700".to_string());
        }
        lines.extend(self.durability.conf_lines().iter().map(|l| l.to_string()));
        lines.extend(self.extra.iter().cloned());
        lines.join("\n") + "\n"
    }

    /// Writes `dir/redis.conf` and spawns `redis-server` on it; does not wait for it to
    /// answer. A server launched again in the same directory finds its append-only file.
    pub fn launch(&self, dir: &Path) -> Result<Child, String> {
        let conf = dir.join("redis.conf");
        std::fs::write(&conf, self.conf(dir))
            .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let mut cmd = Command::new("redis-server");
        cmd.arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.die_with_thread {
            let parent = std::process::id();
            // SAFETY: the hook runs in the forked child before exec and only makes two
            // system calls (async-signal-safe, no allocation).
            unsafe {
                cmd.pre_exec(move || die_with_parent(parent));
            }
        }
        cmd.spawn().map_err(|e| {
            format!("cannot start redis-server ({e}): install it (apt-get install redis-server)")
        })
    }
}

/// In a forked child: asks the kernel for SIGKILL when the forking thread ends, and fails
/// if the parent (process `parent`) is already gone, which the request would miss.
fn die_with_parent(parent: u32) -> io::Result<()> {
    // SAFETY: plain system calls without pointers.
    let set = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::getppid() } as u32 != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// How a wait for a new server ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Started {
    /// It answers.
    Ready,
    /// It exited (its port was taken, most likely).
    Exited(ExitStatus),
    /// It did not answer by the deadline.
    Late,
}

/// `fields` of a bundle hash without the reserved ones, whose names start with `@`
/// (placement record, versions, announcements).
pub fn state_fields(mut fields: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    fields.retain(|k, _| !k.starts_with('@'));
    fields
}

/// A `redis-server` process that lives as long as this value (SIGKILL on drop).
pub struct Redis {
    child: Child,
    dir: tempfile::TempDir,
    config: ServerConfig,
    /// URL for `SKYLARK_REDIS_URL`: the TCP port, else the Unix socket.
    pub url: String,
    /// TCP port (plain or TLS), or 0 when listening on a Unix socket only.
    pub port: u16,
}

impl Redis {
    /// Starts a redis-server on a free loopback port; panics if it cannot.
    pub fn start() -> Redis {
        Redis::start_on_free_port(ServerConfig::tcp, None, Redis::ping)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a redis-server listening only on a Unix socket; panics if it cannot.
    pub fn start_unix() -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = ServerConfig {
            unix_socket: Some(dir.path().join("redis.sock")),
            ..ServerConfig::default()
        };
        let mut redis = Redis::launch_in(dir, 0, config).unwrap_or_else(|e| panic!("{e}"));
        match redis.wait_started(Instant::now() + START_TIMEOUT, |r| r.ping()) {
            Started::Ready => redis,
            other => panic!("redis-server on a Unix socket did not start: {other:?}"),
        }
    }

    /// Starts a server with `config` (on its port) in a new directory; returns once it
    /// answers `PING`.
    pub fn start_with(config: ServerConfig) -> Result<Redis, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("cannot create a directory: {e}"))?;
        let port = config.port;
        let mut redis = Redis::launch_in(dir, port, config)?;
        match redis.wait_started(Instant::now() + START_TIMEOUT, Redis::ping) {
            Started::Ready => Ok(redis),
            other => Err(format!(
                "redis-server on {} did not start: {other:?}",
                redis.url
            )),
        }
    }

    /// Starts a server with the configuration `make` gives for a free port, in a new
    /// directory (under `parent` if given), retrying on other ports if it exits at once;
    /// returns once `ready` says it answers.
    pub fn start_on_free_port(
        make: impl Fn(u16) -> ServerConfig,
        parent: Option<&Path>,
        ready: impl Fn(&Redis) -> bool,
    ) -> Result<Redis, String> {
        for _ in 0..START_ATTEMPTS {
            let mut redis = Redis::spawn_on_free_port(&make, parent)?;
            match redis.wait_started(Instant::now() + START_TIMEOUT, &ready) {
                Started::Ready => return Ok(redis),
                Started::Exited(_) => continue,
                Started::Late => {
                    return Err(format!(
                        "redis-server on {} did not answer within {START_TIMEOUT:?}",
                        redis.url
                    ))
                }
            }
        }
        Err(format!(
            "redis-server exited at once {START_ATTEMPTS} times (ports taken?)"
        ))
    }

    /// Spawns a server with the configuration `make` gives for a free port, in a new
    /// directory (under `parent` if given); does not wait ([`Redis::wait_started`]).
    pub fn spawn_on_free_port(
        make: impl Fn(u16) -> ServerConfig,
        parent: Option<&Path>,
    ) -> Result<Redis, String> {
        let port = crate::net::free_port();
        let dir = match parent {
            Some(p) => tempfile::Builder::new().prefix("redis-").tempdir_in(p),
            None => tempfile::tempdir(),
        }
        .map_err(|e| format!("cannot create a store directory: {e}"))?;
        Redis::launch_in(dir, port, make(port))
    }

    /// Launches `config` in `dir`; `port` is the server's TCP port (plain or TLS), 0 for
    /// a Unix socket only.
    fn launch_in(dir: tempfile::TempDir, port: u16, config: ServerConfig) -> Result<Redis, String> {
        let child = config.launch(dir.path())?;
        let url = match (&config.unix_socket, port) {
            (Some(s), 0) => format!("unix://{}", s.display()),
            (_, port) => format!("redis://127.0.0.1:{port}"),
        };
        Ok(Redis {
            child,
            port,
            dir,
            config,
            url,
        })
    }

    /// Polls until `ready` says the server answers, it exits, or `deadline` passes.
    pub fn wait_started(&mut self, deadline: Instant, ready: impl Fn(&Redis) -> bool) -> Started {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Started::Exited(status),
                Ok(None) if ready(self) => return Started::Ready,
                Ok(None) | Err(_) => {}
            }
            if Instant::now() > deadline {
                return Started::Late;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Whether a plain connection gets an answer to `PING`.
    pub fn ping(&self) -> bool {
        self.try_conn().is_some()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's directory (its `redis.conf` and append-only file).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the server runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// SIGKILLs the server (no shutdown, no final write) and reaps it.
    pub fn kill(&mut self) -> io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(|_| ())
    }

    /// Makes `child` (a server launched again with [`Redis::config`] in [`Redis::dir`])
    /// the process of this value, after [`Redis::kill`].
    pub fn replace_child(&mut self, child: Child) {
        self.child = child;
    }

    /// A synchronous connection, or `None` if the server does not answer `PING`.
    pub fn try_conn(&self) -> Option<redis::Connection> {
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
    pub fn hgetall(&self, key: &str) -> BTreeMap<String, Vec<u8>> {
        redis::cmd("HGETALL")
            .arg(key)
            .query(&mut self.conn())
            .expect("HGETALL")
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

    /// Bytes the server has sent to its clients so far (`INFO stats`,
    /// `total_net_output_bytes`): what a test reads to tell whether a bundle left it.
    pub fn output_bytes(&self) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query(&mut self.conn())
            .expect("INFO");
        info.lines()
            .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no total_net_output_bytes in INFO stats"))
    }

    /// The state fields of a bundle hash: every field but the reserved ones (`@at:`,
    /// `@v:`, `@incoming:`), as a sorted map.
    pub fn state(&self, key: &str) -> BTreeMap<String, Vec<u8>> {
        state_fields(self.hgetall(key))
    }

    /// The state fields of `chain`'s bundle (empty if absent): [`Redis::state`] of its key.
    pub fn bundle(&self, chain: &str) -> BTreeMap<String, Vec<u8>> {
        self.state(&format!("{NS}:bundle:{chain}"))
    }

    /// The placement record (task id to node) held with `chain`'s bundle.
    pub fn placement(&self, chain: &str) -> BTreeMap<String, String> {
        self.hgetall(&format!("{NS}:bundle:{chain}"))
            .into_iter()
            .filter_map(|(k, v)| {
                let task = k.strip_prefix(PLACEMENT_PREFIX)?.to_string();
                Some((task, String::from_utf8_lossy(&v).into_owned()))
            })
            .collect()
    }

    /// Number of jobs in the store's outbox.
    pub fn outbox_len(&self) -> usize {
        redis::cmd("ZCARD")
            .arg(format!("{NS}:outbox"))
            .query(&mut self.conn())
            .expect("ZCARD")
    }

    /// The counters node `node` keeps in this store (`<ns>:stats:<node>`).
    pub fn stats(&self, node: &str) -> BTreeMap<String, u64> {
        self.hgetall(&format!("{NS}:stats:{node}"))
            .into_iter()
            .map(|(k, v)| {
                let n = String::from_utf8_lossy(&v).parse().unwrap_or(0);
                (k, n)
            })
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_has_every_setting() {
        let config = ServerConfig {
            port: 7000,
            unix_socket: Some(PathBuf::from("/tmp/s.sock")),
            durability: Durability::AofAlways,
            extra: vec!["requirepass pw".into()],
            die_with_thread: false,
        };
        let conf = config.conf(Path::new("/tmp/d"));
        for line in [
            "port 7000",
            "bind 127.0.0.1",
            "save \"\"",
            "dir /tmp/d",
            "unixsocket /tmp/s.sock",
            "appendonly yes",
            "appendfsync always",
            "requirepass pw",
        ] {
            assert!(
                conf.lines().any(|l| l == line),
                "{line:?} missing in\n{conf}"
            );
        }
    }

    #[test]
    fn durability_names_round_trip() {
        for d in [
            Durability::Volatile,
            Durability::AofEverysec,
            Durability::AofAlways,
        ] {
            assert_eq!(Durability::parse(d.name()), Some(d));
        }
        assert_eq!(Durability::parse("sometimes"), None);
    }
}
