//! Arrival signals: waiting for state without polling Redis.
//!
//! Every script that writes state to a bundle (a put's versions script, a fenced copy
//! from propagation or the read-through cache) also `PUBLISH`es, in the same atomic step,
//! the task ids it wrote on the store's channel `<ns>/arrivals:<chain>` (`lua!`,
//! `keys::arrivals`); a clean-up that deletes the whole bundle publishes an empty list.
//! The publish is a `redis.pcall`: a store whose ACL does not allow it still takes the
//! write, and its readers only wait until their deadlines.
//!
//! A reader that waits (a get's `wait_for`, its `require`, a read waiting for an
//! announced copy) [`Listener::watch`]es the channel: the process keeps one pub/sub
//! connection per store, shared by all its waiters, on the plugin runtime. The waiter
//! subscribes first, then reads the bundle's field names once (closing the race with a
//! write just before the subscription), then reads them again only when a message says
//! something arrived, until its condition holds or its deadline passes ([`wait_until`]).
//! When the pub/sub connection breaks, every waiter is told, subscribes again (over a new
//! connection) and re-reads.

use crate::error::CallError;
use crate::store::{Request, Store};
use crate::{keys, runtime, skylog};
use futures_util::StreamExt;
use redis::aio::PubSubSink;
use skylark_abi::Status;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

/// Lua that publishes an arrival: `arrived(key, tasks)` sends the task ids in `tasks`
/// (a Lua array), space-separated, on the channel of the bundle `key`
/// (`<ns>:bundle:<chain>` gives `<ns>/arrivals:<chain>`; a namespace never holds `:`);
/// `arrived_args(key, first)` sends `ARGV[first..]`. Scripts concatenate it before their
/// own code.
macro_rules! arrivals_lua {
    () => {
        r#"
local function arrived(key, tasks)
  local ns, chain = string.match(key, '^(.-):bundle:(.+)$')
  if ns then
    redis.pcall('PUBLISH', ns .. '/arrivals:' .. chain, table.concat(tasks, ' '))
  end
end
local function arrived_args(key, first)
  local tasks = {}
  for i = first, #ARGV do
    tasks[#tasks + 1] = ARGV[i]
  end
  arrived(key, tasks)
end
"#
    };
}
pub(crate) use arrivals_lua as lua;

/// What a waiter hears.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// A write of these task ids (possibly none: a copy that only removed its
    /// announcement).
    Arrived(Vec<String>),
    /// The pub/sub connection broke: messages may have been missed.
    Lost,
}

/// A waiter's id and the sending end of its signals.
type Waiter = (u64, UnboundedSender<Signal>);

/// A live pub/sub connection: its subscribing half, its generation and the task that
/// reads its messages (which holds the connection open).
struct Conn {
    sink: PubSubSink,
    generation: u64,
    reader: tokio::task::AbortHandle,
}

/// The pub/sub connection of one store and the waiters of each channel.
pub struct Listener {
    store: Arc<Store>,
    conn: tokio::sync::Mutex<Option<Conn>>,
    /// Waiters by channel.
    waiters: Mutex<HashMap<String, Vec<Waiter>>>,
    next: std::sync::atomic::AtomicU64,
}

/// One waiter's subscription; unsubscribes (if it was the channel's last) when dropped.
pub struct Watch {
    listener: Arc<Listener>,
    channel: String,
    id: u64,
    rx: UnboundedReceiver<Signal>,
}

impl Watch {
    /// The next signal; `Lost` if the listener is gone.
    pub async fn next(&mut self) -> Signal {
        self.rx.recv().await.unwrap_or(Signal::Lost)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let last = {
            let mut waiters = lock(&self.listener.waiters);
            match waiters.get_mut(&self.channel) {
                Some(list) => {
                    list.retain(|(id, _)| *id != self.id);
                    list.is_empty()
                }
                None => false,
            }
        };
        if !last {
            return;
        }
        let (listener, channel) = (Arc::clone(&self.listener), self.channel.clone());
        if let Ok(rt) = runtime::handle() {
            rt.spawn(async move { listener.unsubscribe_idle(channel).await });
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the map is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Listener {
    pub fn new(store: Arc<Store>) -> Arc<Listener> {
        Arc::new(Listener {
            store,
            conn: tokio::sync::Mutex::new(None),
            waiters: Mutex::new(HashMap::new()),
            next: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Subscribes to `channel` (connecting first if needed); messages published after
    /// this returns reach the [`Watch`]. Runs on the plugin runtime.
    pub async fn watch(self: &Arc<Self>, channel: &str) -> Result<Watch, CallError> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = unbounded_channel();
        // Registered before subscribing, so that nothing published once the subscription
        // holds is missed; and before `unsubscribe_idle` checks, so that it keeps the
        // subscription.
        lock(&self.waiters)
            .entry(channel.to_string())
            .or_default()
            .push((id, tx));
        let watch = Watch {
            listener: Arc::clone(self),
            channel: channel.to_string(),
            id,
            rx,
        };
        let mut conn = self.conn.lock().await;
        let live = match conn.as_mut() {
            Some(live) => live,
            None => conn.insert(self.connect().await?),
        };
        let subscribed =
            tokio::time::timeout(self.store.timeout(), live.sink.subscribe(channel)).await;
        match subscribed {
            Ok(Ok(())) => Ok(watch),
            Ok(Err(e)) => {
                self.reset(&mut conn);
                Err(self.store.error(e).context("subscribing to arrivals"))
            }
            Err(_) => {
                self.reset(&mut conn);
                Err(CallError::new(
                    Status::StoreTimeout,
                    format!(
                        "{}: subscribing to arrivals: no answer within {} ms (SKYLARK_TIMEOUT_MS)",
                        self.store.name(),
                        self.store.timeout().as_millis()
                    ),
                ))
            }
        }
    }

    /// Closes the connection in `conn` (its reader task ends, which drops it) and tells
    /// every waiter that it may have missed messages.
    fn reset(&self, conn: &mut Option<Conn>) {
        if let Some(old) = conn.take() {
            old.reader.abort();
            self.tell_all(Signal::Lost);
        }
    }

    fn tell_all(&self, signal: Signal) {
        for list in lock(&self.waiters).values() {
            for (_, tx) in list {
                let _ = tx.send(signal.clone());
            }
        }
    }

    /// Opens a pub/sub connection and starts the task that hands its messages out.
    async fn connect(self: &Arc<Self>) -> Result<Conn, CallError> {
        let (sink, mut stream) = self.store.pubsub().await?.split();
        let generation = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let me = Arc::clone(self);
        let reader = runtime::handle()?.spawn(async move {
            while let Some(msg) = stream.next().await {
                let channel = msg.get_channel_name().to_string();
                let tasks: Vec<String> = String::from_utf8_lossy(msg.get_payload_bytes())
                    .split(' ')
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect();
                if let Some(list) = lock(&me.waiters).get(&channel) {
                    for (_, tx) in list {
                        let _ = tx.send(Signal::Arrived(tasks.clone()));
                    }
                }
            }
            skylog!(
                Info,
                "arrivals: the pub/sub connection to {} ended",
                me.store.name()
            );
            let mut conn = me.conn.lock().await;
            if conn.as_ref().is_some_and(|c| c.generation == generation) {
                *conn = None;
            }
            drop(conn);
            me.tell_all(Signal::Lost);
        });
        Ok(Conn {
            sink,
            generation,
            reader: reader.abort_handle(),
        })
    }

    /// Unsubscribes from `channel` unless a waiter registered again meanwhile.
    async fn unsubscribe_idle(&self, channel: String) {
        let mut conn = self.conn.lock().await;
        {
            let mut waiters = lock(&self.waiters);
            if waiters.get(&channel).is_some_and(|l| !l.is_empty()) {
                return;
            }
            waiters.remove(&channel);
        }
        if let Some(live) = conn.as_mut() {
            let r =
                tokio::time::timeout(self.store.timeout(), live.sink.unsubscribe(&channel)).await;
            if !matches!(r, Ok(Ok(()))) {
                // A connection that does not answer is replaced on the next watch.
                self.reset(&mut conn);
            }
        }
    }
}

/// One [`Listener`] per store (by name), for the life of the process.
#[derive(Default)]
pub struct Listeners(Mutex<HashMap<String, Arc<Listener>>>);

impl Listeners {
    /// The listener of `store`.
    pub fn of(&self, store: &Arc<Store>) -> Arc<Listener> {
        Arc::clone(
            lock(&self.0)
                .entry(store.name().to_string())
                .or_insert_with(|| Listener::new(Arc::clone(store))),
        )
    }
}

/// The field names of `chain`'s bundle on `store`.
async fn names(store: &Store, ns: &str, chain: &str) -> Result<Vec<Vec<u8>>, CallError> {
    let mut cmd = redis::cmd("HKEYS");
    cmd.arg(keys::bundle(ns, chain));
    match store.query_async(&Request::Cmd(cmd)).await? {
        redis::Value::Array(items) => Ok(items
            .into_iter()
            .filter_map(|v| match v {
                redis::Value::BulkString(b) => Some(b),
                _ => None,
            })
            .collect()),
        redis::Value::Nil => Ok(Vec::new()),
        other => Err(store.reply_error(format!("unexpected HKEYS reply {other:?}"))),
    }
}

/// Waits until `done` holds for the field names of `chain`'s bundle on `store`, or
/// `deadline` passes: subscribes, reads the names, and reads them again on each arrival
/// signal (a signal whose tasks `relevant` rejects costs nothing). Returns whether
/// `done` held. Runs on the plugin runtime.
pub async fn wait_until(
    listener: &Arc<Listener>,
    ns: &str,
    chain: &str,
    deadline: Instant,
    relevant: impl Fn(&[String]) -> bool,
    done: impl Fn(&[Vec<u8>]) -> bool,
) -> Result<bool, CallError> {
    let channel = keys::arrivals(ns, chain);
    loop {
        let mut watch = listener.watch(&channel).await?;
        if done(&names(&listener.store, ns, chain).await?) {
            return Ok(true);
        }
        loop {
            match tokio::time::timeout_at(deadline, watch.next()).await {
                Err(_) => return Ok(false),
                Ok(Signal::Lost) => break,
                Ok(Signal::Arrived(tasks)) => {
                    if relevant(&tasks) && done(&names(&listener.store, ns, chain).await?) {
                        return Ok(true);
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

/// Whether `names` (a bundle's field names) include every task in `tasks` (linear in
/// both).
pub fn holds_all(names: &[Vec<u8>], tasks: &[String]) -> bool {
    if tasks.is_empty() {
        return true;
    }
    let held: std::collections::HashSet<&[u8]> = names.iter().map(Vec::as_slice).collect();
    tasks.iter().all(|t| held.contains(t.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_all_tasks() {
        let names = vec![b"a".to_vec(), b"@v:a".to_vec(), b"b".to_vec()];
        assert!(holds_all(&names, &["a".into(), "b".into()]));
        assert!(holds_all(&names, &[]));
        assert!(!holds_all(&names, &["a".into(), "c".into()]));
        // A version field is not the state itself.
        assert!(!holds_all(&[b"@v:a".to_vec()], &["a".into()]));
    }

    #[test]
    fn the_lua_channel_matches_the_key_layout() {
        // The script derives the channel from the bundle key; both come from `keys`.
        let key = keys::bundle("ns-1", "c.2");
        let (ns, chain) = key.split_once(":bundle:").unwrap();
        assert_eq!(
            format!("{ns}/arrivals:{chain}"),
            keys::arrivals("ns-1", "c.2")
        );
        assert!(lua!().contains("'/arrivals:'"));
    }
}
