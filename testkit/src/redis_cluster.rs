//! Distributed global stores on loopback, started and torn down (SIGKILL on drop, also
//! when a test panics) by the test kit: a Redis Cluster of 3 primaries and 3 replicas
//! ([`RedisCluster`], formed by `redis-cli --cluster create`) and a primary with 2
//! replicas watched by 3 sentinels ([`Sentinels`], `redis-server --sentinel`), both
//! from Debian's `redis-server` and `redis-tools`. Also what tests do to them: find the
//! primary holding a key, move a slot (`CLUSTER SETSLOT` + `MIGRATE`), read a bundle,
//! stop and resume replicas, fail over.

use crate::redis::{state_fields, Redis, ServerConfig, NS};
use crate::wait::eventually;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a cluster or a Sentinel deployment may take to form, or to fail over.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// The name Sentinel monitors the primary by.
pub const MASTER_NAME: &str = "skylark-global";

fn query<T: redis::FromRedisValue>(r: &Redis, cmd: &mut redis::Cmd) -> redis::RedisResult<T> {
    let mut c = r
        .try_conn()
        .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "no answer")))?;
    cmd.query(&mut c)
}

/// Sends SIGSTOP (`stop`) or SIGCONT to a server.
fn signal(r: &Redis, stop: bool) {
    let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
    // SAFETY: a plain system call on the pid of a child this process started.
    let rc = unsafe { libc::kill(r.pid() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", r.pid());
}

/// A 3-primary / 3-replica Redis Cluster on loopback.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    /// Starts six `cluster-enabled` servers, forms the cluster with one replica per
    /// primary, and returns once every node reports `cluster_state:ok` and every replica
    /// is in sync. Panics if it cannot.
    pub fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let node = Redis::start_on_free_port(
                |port| ServerConfig {
                    port,
                    extra: vec![
                        "cluster-enabled yes".into(),
                        "cluster-config-file nodes.conf".into(),
                        "cluster-node-timeout 2000".into(),
                        // The bus port off port + 10000, which may be taken or too high.
                        format!("cluster-port {}", crate::net::free_port()),
                    ],
                    ..ServerConfig::default()
                },
                None,
                Redis::ping,
            )
            .unwrap_or_else(|e| panic!("cluster node: {e}"));
            nodes.push(node);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli (apt-get install redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        eventually("the cluster to form", FORM_TIMEOUT, || {
            cluster.nodes.iter().all(|n| {
                query::<String>(n, redis::cmd("CLUSTER").arg("INFO")).is_ok_and(|i| {
                    i.contains("cluster_state:ok") && i.contains("cluster_known_nodes:6")
                })
            }) && cluster.replicas_in_sync()
        });
        cluster
    }

    /// Whether every replica's link to its primary is up.
    fn replicas_in_sync(&self) -> bool {
        let replicas: Vec<&Redis> = self.nodes.iter().filter(|n| !self.is_primary(n)).collect();
        replicas.len() == 3
            && replicas.iter().all(|r| {
                query::<String>(r, redis::cmd("INFO").arg("replication"))
                    .is_ok_and(|i| i.contains("master_link_status:up"))
            })
    }

    /// `SKYLARK_GLOBAL_URL` for this cluster (every node as a seed).
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// Whether `node` is a primary now (`ROLE`).
    pub fn is_primary(&self, node: &Redis) -> bool {
        query::<Vec<redis::Value>>(node, &mut redis::cmd("ROLE"))
            .ok()
            .and_then(|r| match r.first() {
                Some(redis::Value::BulkString(b)) => Some(b == b"master"),
                _ => None,
            })
            .unwrap_or(false)
    }

    /// The slot of `key`.
    pub fn slot(&self, key: &str) -> u16 {
        query(
            &self.nodes[0],
            redis::cmd("CLUSTER").arg("KEYSLOT").arg(key),
        )
        .expect("KEYSLOT")
    }

    /// The node id of `node`.
    pub fn id(&self, node: &Redis) -> String {
        query(node, redis::cmd("CLUSTER").arg("MYID")).expect("CLUSTER MYID")
    }

    /// The primary that owns `slot`, as `node` sees it.
    fn owner_by(&self, node: &Redis, slot: u16) -> Option<u16> {
        let slots: Vec<redis::Value> = query(node, redis::cmd("CLUSTER").arg("SLOTS")).ok()?;
        for range in slots {
            let redis::Value::Array(items) = range else {
                continue;
            };
            let int = |v: &redis::Value| match v {
                redis::Value::Int(i) => Some(*i),
                _ => None,
            };
            let (Some(lo), Some(hi)) = (int(&items[0]), int(&items[1])) else {
                continue;
            };
            if (lo..=hi).contains(&i64::from(slot)) {
                if let Some(redis::Value::Array(primary)) = items.get(2) {
                    return primary.get(1).and_then(int).map(|p| p as u16);
                }
            }
        }
        None
    }

    /// The primary owning `slot` now.
    pub fn owner(&self, slot: u16) -> &Redis {
        let port = self
            .owner_by(&self.nodes[0], slot)
            .unwrap_or_else(|| panic!("no owner of slot {slot}"));
        self.by_port(port)
    }

    fn by_port(&self, port: u16) -> &Redis {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// Another primary than `not`.
    pub fn other_primary(&self, not: &Redis) -> &Redis {
        self.nodes
            .iter()
            .find(|n| n.port != not.port && self.is_primary(n))
            .expect("another primary")
    }

    /// Moves `slot` (and its keys) from its owner to `to`, as `redis-cli --cluster
    /// reshard` does; `between` runs while the slot is half-moved (`MIGRATING` on the
    /// source, `IMPORTING` on the target: requests for moved keys get `ASK`), after the
    /// first batch of keys moved.
    pub fn move_slot(&self, slot: u16, to: &Redis, between: impl FnOnce()) {
        let from = self.owner(slot);
        assert_ne!(from.port, to.port, "slot {slot} is on the target already");
        let (from_id, to_id) = (self.id(from), self.id(to));
        let setslot = |n: &Redis, what: &str, id: &str| {
            query::<String>(
                n,
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg(what)
                    .arg(id),
            )
            .unwrap_or_else(|e| panic!("SETSLOT {slot} {what}: {e}"));
        };
        setslot(to, "IMPORTING", &from_id);
        setslot(from, "MIGRATING", &to_id);
        let mut between = Some(between);
        loop {
            let keys: Vec<String> = query(
                from,
                redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(100),
            )
            .expect("GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg("127.0.0.1")
                .arg(to.port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys);
            query::<String>(from, &mut migrate).unwrap_or_else(|e| panic!("MIGRATE: {e}"));
            if let Some(f) = between.take() {
                f();
            }
        }
        if let Some(f) = between.take() {
            f();
        }
        // The target first, then the source, then everyone (as redis-cli does).
        setslot(to, "NODE", &to_id);
        setslot(from, "NODE", &to_id);
        for n in self.nodes.iter().filter(|n| self.is_primary(n)) {
            let _ = query::<String>(
                n,
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("NODE")
                    .arg(&to_id),
            );
        }
        eventually(
            "every node to see the slot's new owner",
            FORM_TIMEOUT,
            || {
                self.nodes
                    .iter()
                    .all(|n| self.owner_by(n, slot) == Some(to.port))
            },
        );
    }

    /// SIGKILLs the primary owning `slot` and waits until its replica has taken over
    /// (every surviving node names the new owner and reports `cluster_state:ok`).
    /// Returns the killed node's port.
    pub fn kill_owner(&mut self, slot: u16) -> u16 {
        let port = self.owner(slot).port;
        let i = self
            .nodes
            .iter()
            .position(|n| n.port == port)
            .expect("the owner is a node");
        let mut dead = self.nodes.remove(i);
        dead.kill().expect("SIGKILL the primary");
        self.wait_taken_over(slot, port);
        port
    }

    /// Waits until every node names another owner of `slot` than the (dead) node on
    /// `port` and reports `cluster_state:ok`.
    pub fn wait_taken_over(&self, slot: u16, port: u16) {
        eventually("the replica to take over", FORM_TIMEOUT, || {
            self.nodes.iter().all(|n| {
                self.owner_by(n, slot).is_some_and(|p| p != port)
                    && query::<String>(n, redis::cmd("CLUSTER").arg("INFO"))
                        .is_ok_and(|i| i.contains("cluster_state:ok"))
            })
        });
    }

    /// Adds a new node as a replica of `primary` (`redis-cli --cluster add-node
    /// --cluster-slave`) and waits until its link is up: after a failover the promoted
    /// replica has none, and `WAIT 1` cannot succeed there until one joins.
    pub fn add_replica(&mut self, primary_port: u16) {
        let node = Redis::start_on_free_port(
            |port| ServerConfig {
                port,
                extra: vec![
                    "cluster-enabled yes".into(),
                    "cluster-config-file nodes.conf".into(),
                    "cluster-node-timeout 2000".into(),
                    format!("cluster-port {}", crate::net::free_port()),
                ],
                ..ServerConfig::default()
            },
            None,
            Redis::ping,
        )
        .unwrap_or_else(|e| panic!("cluster node: {e}"));
        let id = self.id(self.by_port(primary_port));
        let out = Command::new("redis-cli")
            .args(["--cluster", "add-node"])
            .arg(format!("127.0.0.1:{}", node.port))
            .arg(format!("127.0.0.1:{primary_port}"))
            .args(["--cluster-slave", "--cluster-master-id", &id])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster add-node: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        eventually("the new replica to sync", FORM_TIMEOUT, || {
            query::<String>(&node, redis::cmd("INFO").arg("replication"))
                .is_ok_and(|i| i.contains("master_link_status:up"))
        });
        self.nodes.push(node);
    }

    /// Every field of hash `key`, read from the primary that owns it.
    pub fn hgetall(&self, key: &str) -> BTreeMap<String, Vec<u8>> {
        let owner = self.owner(self.slot(key));
        query(owner, redis::cmd("HGETALL").arg(key)).expect("HGETALL")
    }

    /// The state fields of `chain`'s bundle in the cluster.
    pub fn bundle(&self, chain: &str) -> BTreeMap<String, Vec<u8>> {
        state_fields(self.hgetall(&format!("{NS}:bundle:{chain}")))
    }
}

/// A primary with two replicas, and three sentinels monitoring it as [`MASTER_NAME`].
pub struct Sentinels {
    /// The data nodes; the first started as the primary (see [`Sentinels::primary`]).
    pub data: Vec<Redis>,
    sentinels: Vec<(Child, u16, tempfile::TempDir)>,
}

impl Sentinels {
    /// Starts the primary, two replicas and three sentinels (quorum 2, down after 1 s);
    /// returns once every sentinel knows both replicas and the other sentinels.
    pub fn start() -> Sentinels {
        let start = |extra: Vec<String>| {
            Redis::start_on_free_port(
                |port| ServerConfig {
                    port,
                    extra: extra.clone(),
                    ..ServerConfig::default()
                },
                None,
                Redis::ping,
            )
            .unwrap_or_else(|e| panic!("sentinel data node: {e}"))
        };
        let primary = start(vec![]);
        let replicaof = vec![format!("replicaof 127.0.0.1 {}", primary.port)];
        let data = vec![primary, start(replicaof.clone()), start(replicaof)];
        let primary_port = data[0].port;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let port = crate::net::free_port();
            let dir = tempfile::tempdir().expect("temp dir");
            let conf = dir.path().join("sentinel.conf");
            let text = [
                format!("port {port}"),
                "bind 127.0.0.1".into(),
                "daemonize no".into(),
                format!("dir {}", dir.path().display()),
                format!("sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2"),
                format!("sentinel down-after-milliseconds {MASTER_NAME} 1000"),
                format!("sentinel failover-timeout {MASTER_NAME} 5000"),
            ]
            .join("\n")
                + "\n";
            std::fs::write(&conf, text).expect("write sentinel.conf");
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server --sentinel (apt-get install redis-server)");
            sentinels.push((child, port, dir));
        }
        let s = Sentinels { data, sentinels };
        eventually(
            "the sentinels to see 2 replicas and each other",
            FORM_TIMEOUT,
            || {
                s.sentinels.iter().all(|(_, port, _)| {
                    let count = |what: &str| {
                        sentinel_query::<Vec<redis::Value>>(
                            *port,
                            redis::cmd("SENTINEL").arg(what).arg(MASTER_NAME),
                        )
                        .map(|v| v.len())
                        .unwrap_or(0)
                    };
                    count("replicas") == 2 && count("sentinels") == 2
                }) && s.data[1..].iter().all(|r| {
                    query::<String>(r, redis::cmd("INFO").arg("replication"))
                        .is_ok_and(|i| i.contains("master_link_status:up"))
                })
            },
        );
        s
    }

    /// `SKYLARK_GLOBAL_URL` for this deployment.
    pub fn url(&self) -> String {
        let list: Vec<String> = self
            .sentinels
            .iter()
            .map(|(_, port, _)| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", list.join(","))
    }

    /// The data node the sentinels name as primary now.
    pub fn primary(&self) -> &Redis {
        let port = self.primary_port().expect("a sentinel names the primary");
        self.data
            .iter()
            .find(|n| n.port == port)
            .expect("the primary is one of the data nodes")
    }

    fn primary_port(&self) -> Option<u16> {
        Sentinels::primary_port_by(self.sentinels[0].1)
    }

    /// The primary's port as the sentinel on `port` names it.
    fn primary_port_by(port: u16) -> Option<u16> {
        let addr: Vec<String> = sentinel_query(
            port,
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER_NAME),
        )
        .ok()?;
        addr.get(1)?.parse().ok()
    }

    /// The replicas (every data node but the primary).
    pub fn replicas(&self) -> Vec<&Redis> {
        let p = self.primary().port;
        self.data.iter().filter(|n| n.port != p).collect()
    }

    /// `SENTINEL FAILOVER`, then waits until the failover is complete: every sentinel
    /// names the same new primary, it answers as one, and the old primary has become a
    /// replica (until then a client that asked a slower sentinel could still write to the
    /// old primary, and lose the write when it resyncs).
    pub fn failover(&self) {
        let old = self.primary().port;
        let (_, port, _) = &self.sentinels[0];
        let _: String = sentinel_query(
            *port,
            redis::cmd("SENTINEL").arg("FAILOVER").arg(MASTER_NAME),
        )
        .expect("SENTINEL FAILOVER");
        let role = |n: &Redis| {
            query::<Vec<redis::Value>>(n, &mut redis::cmd("ROLE"))
                .ok()
                .and_then(|r| match r.first() {
                    Some(redis::Value::BulkString(b)) => {
                        Some(String::from_utf8_lossy(b).into_owned())
                    }
                    _ => None,
                })
        };
        eventually("the failover to complete", FORM_TIMEOUT, || {
            let named: Vec<Option<u16>> = self
                .sentinels
                .iter()
                .map(|(_, p, _)| Sentinels::primary_port_by(*p))
                .collect();
            let Some(Some(new)) = named.first().copied() else {
                return false;
            };
            new != old
                && named.iter().all(|p| *p == Some(new))
                && self.data.iter().all(|n| {
                    let want = if n.port == new { "master" } else { "slave" };
                    role(n).as_deref() == Some(want)
                })
        });
    }

    /// SIGKILLs the primary and waits until the sentinels have promoted a replica: every
    /// sentinel names it, it answers as a primary, and the other replica follows it.
    /// Returns the killed primary's port.
    pub fn kill_primary(&mut self) -> u16 {
        let old = self.primary().port;
        let i = self
            .data
            .iter()
            .position(|n| n.port == old)
            .expect("the primary is a data node");
        let mut dead = self.data.remove(i);
        dead.kill().expect("SIGKILL the primary");
        eventually("a replica to be promoted", FORM_TIMEOUT, || {
            let named: Vec<Option<u16>> = self
                .sentinels
                .iter()
                .map(|(_, p, _)| Sentinels::primary_port_by(*p))
                .collect();
            let Some(Some(new)) = named.first().copied() else {
                return false;
            };
            new != old
                && named.iter().all(|p| *p == Some(new))
                && self.data.iter().all(|n| {
                    let info = query::<String>(n, redis::cmd("INFO").arg("replication"))
                        .unwrap_or_default();
                    if n.port == new {
                        info.contains("role:master")
                    } else {
                        info.contains(&format!("master_port:{new}"))
                            && info.contains("master_link_status:up")
                    }
                })
        });
        old
    }

    /// The state fields of `chain`'s bundle on the current primary.
    pub fn bundle(&self, chain: &str) -> BTreeMap<String, Vec<u8>> {
        self.primary().bundle(chain)
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) both replicas: a stopped replica acknowledges
    /// nothing, so `WAIT 1` times out.
    pub fn pause_replicas(&self, paused: bool) {
        for r in self.replicas() {
            signal(r, paused);
        }
    }
}

fn sentinel_query<T: redis::FromRedisValue>(
    port: u16,
    cmd: &mut redis::Cmd,
) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut c = client.get_connection_with_timeout(Duration::from_secs(1))?;
    cmd.query(&mut c)
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        // Stopped replicas die of SIGKILL as well (Redis's own drop).
        for (child, _, _) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
