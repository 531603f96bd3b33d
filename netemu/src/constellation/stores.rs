//! The node stores: one `redis-server` per node, spawned from a keeper thread that
//! lives as long as the constellation (their parent-death signal is tied to it).

use skylark_testkit::redis::{ServerConfig, Started};
use skylark_testkit::{Durability, Redis};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `redis-server` starts tried per node (a start fails when another process takes the
/// free port first).
pub(super) const STORE_ATTEMPTS: usize = 5;

/// How long all stores together may take to answer `PING`.
pub(super) const STORE_START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a restarted store may take to load its data and answer `PING`.
pub(super) const STORE_RESTART_TIMEOUT: Duration = Duration::from_secs(30);

/// Work for the keeper thread.
pub(super) type KeeperJob = Box<dyn FnOnce() + Send>;

/// The thread the stores are spawned from. Their parent-death signal is tied to it, so
/// it stays alive (running only the jobs it is given, such as restarting a store) until
/// dropped, after the stores are stopped.
pub(super) struct StoreKeeper {
    jobs: Option<mpsc::Sender<KeeperJob>>,
    thread: Option<JoinHandle<()>>,
}

impl StoreKeeper {
    /// Starts `count` stores, with their directories under `root`, from a new keeper
    /// thread; returns when all answer `PING`.
    pub(super) fn start(
        count: usize,
        root: &Path,
        durability: Durability,
    ) -> Result<(StoreKeeper, Vec<Redis>), String> {
        let (jobs, queue) = mpsc::channel::<KeeperJob>();
        let thread = std::thread::Builder::new()
            .name("constellation-stores".into())
            .spawn(move || {
                // Until the constellation goes: the stores die with this thread.
                while let Ok(job) = queue.recv() {
                    job();
                }
            })
            .map_err(|e| format!("cannot start the store thread: {e}"))?;
        let keeper = StoreKeeper {
            jobs: Some(jobs),
            thread: Some(thread),
        };
        let root = root.to_path_buf();
        let stores = keeper.run(move || start_stores(count, &root, durability))??;
        Ok((keeper, stores))
    }

    /// Runs `job` on the keeper thread and returns its result.
    pub(super) fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let (done, result) = mpsc::channel();
        let job: KeeperJob = Box::new(move || {
            let _ = done.send(job());
        });
        self.jobs
            .as_ref()
            .ok_or("the store thread is stopping")?
            .send(job)
            .map_err(|_| "the store thread is gone".to_string())?;
        result
            .recv()
            .map_err(|_| "the store thread died while running a job".to_string())
    }
}

impl Drop for StoreKeeper {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Spawns `count` stores at once and waits until every one answers `PING`, replacing
/// any that exits (its port was taken) up to [`STORE_ATTEMPTS`] times.
pub(super) fn start_stores(
    count: usize,
    root: &Path,
    durability: Durability,
) -> Result<Vec<Redis>, String> {
    let spawn = || Redis::spawn_on_free_port(|port| store_config(port, durability), Some(root));
    let mut stores = (0..count).map(|_| spawn()).collect::<Result<Vec<_>, _>>()?;
    let deadline = Instant::now() + STORE_START_TIMEOUT;
    for store in &mut stores {
        let mut attempts = 1;
        loop {
            match store.wait_started(deadline, Redis::ping) {
                Started::Ready => break,
                Started::Exited(_) if attempts < STORE_ATTEMPTS => {
                    attempts += 1;
                    *store = spawn()?;
                }
                Started::Exited(_) => {
                    return Err(format!(
                        "redis-server exited at once {STORE_ATTEMPTS} times (ports taken?)"
                    ))
                }
                Started::Late => {
                    return Err(format!(
                        "redis-server did not answer PING within {STORE_START_TIMEOUT:?}: {}",
                        store.url
                    ))
                }
            }
        }
    }
    Ok(stores)
}

/// A node store on `port`: killed (SIGKILL) when the thread that launches it ends.
pub(super) fn store_config(port: u16, durability: Durability) -> ServerConfig {
    ServerConfig {
        port,
        durability,
        die_with_thread: true,
        ..ServerConfig::default()
    }
}
