//! The copies of one round of a job: the chain's bundle as read on this node, the fields
//! each target lacks, the fenced copy (`fence::copy`) with its announcement, and what came
//! of them.
//!
//! Order: the copies to the elected nodes (the consumers) go first, all at once; the copy
//! to the global store starts when they have been acknowledged or have failed
//! ([`copy_order`]). The consumer waits for its copy, the global copy only makes the state
//! durable: where both cross the same first link, the consumer's copy gets all of its
//! bandwidth instead of half (issue 13). The round still ends only when every copy has
//! ended, so a job is done only when all its copies are.

use super::sending::Sending;
use crate::clock::now_ms;
use crate::cluster::Cluster;
use crate::error::CallError;
use crate::nodes::Global;
use crate::outbox::Job;
use crate::store::{HashPairs, Request, Store};
use crate::topology::Schedule;
use crate::{fence, keys, skylog};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// The chain's bundle as this node holds it, split into state, placement and versions.
pub(super) struct Snapshot {
    pub state: HashPairs,
    pub placement: Vec<(String, String)>,
    /// Per-field versions; every state field has one (0 if written before versions).
    pub versions: keys::Versions,
}

impl Snapshot {
    /// Reads the chain's bundle from `store`, whose sizes the job has just checked
    /// (`bundle_read::read_checked_async`).
    pub async fn read(store: &Store, ns: &str, chain: &str) -> Result<Snapshot, CallError> {
        let pairs = crate::bundle_read::read_checked_async(store, ns, chain).await?;
        let keys::Split {
            state,
            placement,
            mut versions,
            ..
        } = keys::split(pairs);
        // A field written before versions existed counts as version 0.
        for (field, _) in &state {
            versions.entry(field.clone()).or_insert(0);
        }
        Ok(Snapshot {
            state,
            placement,
            versions,
        })
    }

    /// The version of `task`'s field (0 if unknown).
    pub fn version(&self, task: &[u8]) -> u64 {
        keys::version(&self.versions, task)
    }
}

/// Copies `snap` to every one of `targets`, with `record` as the placement the copies
/// carry, and waits for them all: first the elected nodes' copies (at once, their
/// `sending` records kept live meanwhile and removed when they have ended), then the
/// global store's ([`copy_order`]). A copy to an elected node claims
/// it for the job's put and leaves out the fields the record places there already, asking
/// the node to confirm it holds them; those it lacks (a clean-up emptied it meanwhile, or
/// it holds an older version) follow in a second copy, before the global store's.
#[allow(clippy::too_many_arguments)]
pub(super) async fn round(
    ctx: &Cluster,
    job: &Job,
    targets: &[String],
    snap: &Snapshot,
    record: &[(&str, &str)],
    global: Option<&Global>,
    topo: Option<&Schedule>,
    sending: &Sending<'_>,
) -> Round {
    let ns = &ctx.config.namespace;
    let key = keys::bundle(ns, &job.chain);
    let placed: Vec<fence::Placed> = record
        .iter()
        .map(|(t, n)| (*t, snap.version(t.as_bytes()), *n))
        .collect();
    let claim = job.newest_put(&snap.versions);
    let out = Outgoing {
        ctx,
        job,
        snap,
        placed: &placed,
        claim,
        global,
        topo,
    };
    let (elected, then) = copy_order(targets, global.map(|g| g.name.as_str()));
    let mut round = sending
        .while_copying(elected_copies(&out, &elected, &key))
        .await;
    // The elected copies have ended: no reader on their targets waits for the global copy.
    sending.clear().await;
    if !then.is_empty() {
        round.absorb(out.send_all(&then).await);
    }
    round
}

/// The elected nodes' copies, then the fields elected nodes turned out to lack, in one
/// more copy each.
async fn elected_copies(out: &Outgoing<'_>, elected: &[String], key: &str) -> Round {
    let (ctx, job, snap, claim, topo) = (out.ctx, out.job, out.snap, out.claim, out.topo);
    let p = &ctx.config.propagation;
    let mut round = out.send_all(elected).await;
    for (name, missing) in std::mem::take(&mut round.lacking) {
        let missing: HashSet<&[u8]> = missing.iter().map(Vec::as_slice).collect();
        let stamped: Vec<fence::Stamped> = snap
            .state
            .iter()
            .filter(|(f, _)| missing.contains(f.as_slice()))
            .map(|(f, v)| (f.as_slice(), snap.version(f), v.as_slice()))
            .collect();
        let bytes: usize = stamped.iter().map(|(f, _, v)| f.len() + v.len()).sum();
        let deadline = copy_deadline(ctx.config.timeout, bytes, p.copy_min_mbps, job.attempts);
        let copy = fence::Copy {
            state: &stamped,
            claim,
            ttl: ctx.config.ttl,
            ..Default::default()
        }
        .cmd(key);
        let r = match ctx.nodes.store(topo, &name) {
            Ok(s) => send_copy(&s, None, &Request::Cmd(copy), deadline).await,
            Err(e) => Err(CallError::from(e)),
        };
        skylog!(
            Info,
            "job {}: {name} lacked {} field(s) its record placed there; copied them",
            job.id,
            missing.len()
        );
        match r {
            Ok(_) => {
                round.landed.push((name.clone(), now_ms()));
                round.copied.push(name);
            }
            Err(e) => round.failed.push((name, e)),
        }
    }
    round
}

/// The order of a round's copies: the elected nodes' copies first (together), then the
/// global store's, which starts when the first have ended. Each list keeps `targets`'
/// order.
pub(super) fn copy_order(targets: &[String], global: Option<&str>) -> (Vec<String>, Vec<String>) {
    targets
        .iter()
        .cloned()
        .partition(|t| Some(t.as_str()) != global)
}

/// What every copy of a round shares: the job, its snapshot, the placement the copies
/// carry and the claim they make.
struct Outgoing<'a> {
    ctx: &'a Cluster,
    job: &'a Job,
    snap: &'a Snapshot,
    placed: &'a [fence::Placed<'a>],
    claim: u64,
    global: Option<&'a Global>,
    topo: Option<&'a Schedule>,
}

impl Outgoing<'_> {
    /// Sends the copies to `names` at once and waits for them all.
    async fn send_all(&self, names: &[String]) -> Round {
        let (ctx, job, snap) = (self.ctx, self.job, self.snap);
        let p = &ctx.config.propagation;
        let ns = &ctx.config.namespace;
        let key = keys::bundle(ns, &job.chain);
        let wait = p.incoming_wait;
        let plans: Vec<(&String, bool, Fields, Fields)> = names
            .iter()
            .map(|name| {
                let is_global = self.global.is_some_and(|g| &g.name == name);
                let (fields, left_out) =
                    delta(&snap.state, &snap.placement, &job.tasks, name, is_global);
                (name, is_global, fields, left_out)
            })
            .collect();
        let size =
            |fields: &Fields| -> usize { fields.iter().map(|(f, v)| f.len() + v.len()).sum() };
        // The copies sent together leave this node at once and may share their first
        // links: each announcement counts all of their bytes.
        let together: usize = plans.iter().map(|(_, _, fields, _)| size(fields)).sum();
        // Each copy's announcement (named, so that a reader requiring other tasks does
        // not wait for it; a name that is not UTF-8, never an id, leaves it unnamed) and
        // how long it is live: the copy's expected transfer plus the incoming wait.
        let announcements: Vec<Option<(String, u64)>> = plans
            .iter()
            .map(|(name, _, fields, _)| {
                (!wait.is_zero()).then(|| {
                    let tasks: Option<Vec<&str>> = fields
                        .iter()
                        .map(|(f, _)| std::str::from_utf8(f).ok())
                        .collect();
                    let field = keys::incoming_field(&job.id, &tasks.unwrap_or_default());
                    (field, live_until(ctx, self.topo, name, together))
                })
            })
            .collect();
        let mut copies = tokio::task::JoinSet::new();
        for ((name, is_global, fields, left_out), announced) in plans.into_iter().zip(announcements)
        {
            let bytes = size(&fields);
            let deadline = copy_deadline(ctx.config.timeout, bytes, p.copy_min_mbps, job.attempts);
            let stamped: Vec<fence::Stamped> = fields
                .iter()
                .map(|(f, v)| (f.as_slice(), snap.version(f), v.as_slice()))
                .collect();
            let expected: Vec<(&[u8], u64)> = if is_global {
                Vec::new()
            } else {
                left_out
                    .iter()
                    .map(|(f, _)| (f.as_slice(), snap.version(f)))
                    .collect()
            };
            let copy = fence::Copy {
                state: &stamped,
                placed: self.placed,
                expected: &expected,
                claim: if is_global { 0 } else { self.claim },
                ttl: ctx.config.ttl,
                incoming: announced.as_ref().map(|(field, _)| field.as_str()),
                ..Default::default()
            }
            .cmd(&key);
            let marker = announced.map(|(field, until)| {
                incoming_marker(ns, &job.chain, &field, until, ctx.config.ttl)
            });
            let store = match self.global {
                Some(g) if is_global => Ok(Arc::clone(&g.store)),
                _ => ctx.nodes.store(self.topo, name),
            };
            let req = Request::Cmd(copy);
            let name = name.clone();
            copies.spawn(async move {
                let r = match store {
                    Ok(s) => send_copy(&s, marker, &req, deadline).await,
                    Err(e) => Err(CallError::from(e)),
                };
                (name, r)
            });
        }
        join_copies(&mut copies, &job.id).await
    }
}

/// Borrowed state fields: (field, value).
type Fields<'a> = Vec<&'a (Vec<u8>, Vec<u8>)>;

/// The state fields of a copy to `target`, split into those it carries and those it
/// leaves out (borrowed, not copied). It carries this job's own, plus, except on the
/// global store (every put sends its own state there), those whose placement record does
/// not already name `target`.
fn delta<'a>(
    state: &'a HashPairs,
    placement: &[(String, String)],
    own: &[String],
    target: &str,
    is_global: bool,
) -> (Fields<'a>, Fields<'a>) {
    state.iter().partition(|(field, _)| {
        let Ok(task) = std::str::from_utf8(field) else {
            return true;
        };
        if own.iter().any(|t| t == task) {
            return true;
        }
        !is_global && !placement.iter().any(|(t, n)| t == task && n == target)
    })
}

/// How long a copy of `bytes` to `target` is expected to take over the current slot's
/// route: a round trip (the request and its answer) plus the transfer at the route's
/// bottleneck. 0 when the topology does not know the route (no topology, a store outside
/// it). An announcement stays live this long plus `SKYLARK_INCOMING_WAIT_MS`, so that a
/// reader waits for a 10 MB copy that takes 4 s over a shared 40 Mbit/s link instead of
/// pulling the same bytes over the same link after 3 s (BENCHMARKS section 4).
fn expected_ms(topo: Option<&Schedule>, local: &str, target: &str, bytes: usize) -> u64 {
    let Some(s) = topo else {
        return 0;
    };
    let (Some(from), Some(to)) = (s.id(local), s.id(target)) else {
        return 0;
    };
    let Some(route) = s.shortest_path(s.slot_at(now_ms()), from, to) else {
        return 0;
    };
    // Mbit/s = 125 bytes per ms.
    let transfer = bytes as f64 / (route.bottleneck_mbps * 125.0);
    let ms = 2.0 * route.latency_ms + transfer;
    if ms.is_finite() && ms > 0.0 {
        ms.min(86_400_000.0).ceil() as u64
    } else {
        0
    }
}

/// Until when (unix ms) the announcement (and the sending record) of a copy to `target`
/// is live, the copies sent together carrying `together` bytes: their expected transfer
/// ([`expected_ms`]) plus `SKYLARK_INCOMING_WAIT_MS` from now.
pub(super) fn live_until(
    ctx: &Cluster,
    topo: Option<&Schedule>,
    target: &str,
    together: usize,
) -> u64 {
    let expected = expected_ms(topo, &ctx.config.node_name, target, together);
    now_ms() + expected + ctx.config.propagation.incoming_wait.as_millis() as u64
}

/// The request announcing a copy: `HSET <bundle> @incoming:<job> <until ms>` and, with a
/// bundle TTL, `EXPIRE <bundle> <ttl> NX`, so that a bundle the announcement creates
/// expires like any other if its copy never comes. With no TTL (TTL 0) nothing may expire,
/// so no `EXPIRE` at all: an announcement that gave an existing bundle an expiry made the
/// copies of a "never expire" deployment vanish. (A marker whose copy never comes then
/// stays; readers ignore it once its time has passed.)
fn incoming_marker(
    ns: &str,
    chain: &str,
    field: &str,
    until_ms: u64,
    ttl: Option<Duration>,
) -> Request {
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("HSET")
        .arg(keys::bundle(ns, chain))
        .arg(field)
        .arg(until_ms)
        .ignore();
    if let Some(ttl) = ttl {
        pipe.cmd("EXPIRE")
            .arg(keys::bundle(ns, chain))
            .arg(ttl.as_secs().max(1))
            .arg("NX")
            .ignore();
    }
    Request::Pipe(pipe)
}

/// How long a copy of `bytes` may take: the store deadline plus the transfer time at the
/// slowest acceptable rate (`SKYLARK_COPY_MIN_MBPS`; 1 Mbit/s = 125 bytes/ms), doubled for
/// each failure of the job so far (at most 32 times). Copies that share a link each get
/// less than its rate: with a fixed deadline, several large ones over a slow link all
/// timed out, were re-sent in full and timed out again, for ever (RELIABILITY.md, finding
/// 14); a longer deadline at each retry lets them through.
pub fn copy_deadline(timeout: Duration, bytes: usize, min_mbps: f64, failures: u32) -> Duration {
    let transfer_ms = bytes as f64 / (min_mbps.max(f64::MIN_POSITIVE) * 125.0);
    let once = timeout + Duration::from_millis(transfer_ms.min(86_400_000.0).ceil() as u64);
    once.saturating_mul(1 << failures.min(5))
}

/// Sends the announcement (if any) and the copy back to back on one connection: the small
/// announcement lands first, then the copy (within `deadline`), which removes it. Returns
/// the expected fields the store lacks ([`fence::copy_reply`]).
async fn send_copy(
    store: &Store,
    marker: Option<Request>,
    copy: &Request,
    deadline: Duration,
) -> Result<Vec<Vec<u8>>, CallError> {
    let reply = match marker {
        Some(m) => {
            let (announced, copied) = tokio::join!(
                store.query_async(&m),
                store.write_async_within(copy, deadline)
            );
            if let Err(e) = announced {
                skylog!(Debug, "announcing a copy to {}: {e}", store.name());
            }
            copied?
        }
        None => store.write_async_within(copy, deadline).await?,
    };
    fence::copy_reply(&reply)
        .map(|c| c.missing)
        .ok_or_else(|| store.reply_error("unexpected reply to a copy".to_string()))
}

/// What one copy task came to: its target, and the fields the target lacks or the error.
type CopyOutcome = (String, Result<Vec<Vec<u8>>, CallError>);

/// What one round of copies achieved.
#[derive(Debug, Default)]
pub(super) struct Round {
    /// Targets whose copy this round made.
    pub copied: Vec<String>,
    /// When (unix ms) each copy of `copied` was acknowledged.
    pub landed: Vec<(String, u64)>,
    /// Targets whose copy failed, with the error.
    pub failed: Vec<(String, CallError)>,
    /// Copy tasks that ended without a result (panicked or cancelled).
    lost: usize,
    /// Targets whose copy succeeded but which lack fields the copy took them to hold.
    lacking: Vec<(String, Vec<Vec<u8>>)>,
}

impl Round {
    /// Adds the outcomes of `later`, a later part of the same round.
    fn absorb(&mut self, later: Round) {
        self.copied.extend(later.copied);
        self.landed.extend(later.landed);
        self.failed.extend(later.failed);
        self.lost += later.lost;
        self.lacking.extend(later.lacking);
    }

    /// Whether this round made a copy on every one of its `targets`: counted from this
    /// round's own results, never from the job's earlier successes.
    pub fn made_all(&self, targets: &[String]) -> bool {
        self.failed.is_empty() && self.lost == 0 && targets.iter().all(|t| self.copied.contains(t))
    }
}

/// Waits for every copy task of a round and sorts their outcomes.
async fn join_copies(copies: &mut tokio::task::JoinSet<CopyOutcome>, job_id: &str) -> Round {
    let mut round = Round::default();
    while let Some(joined) = copies.join_next().await {
        match joined {
            Ok((name, Ok(missing))) if missing.is_empty() => {
                round.landed.push((name.clone(), now_ms()));
                round.copied.push(name);
            }
            Ok((name, Ok(missing))) => round.lacking.push((name, missing)),
            Ok((name, Err(e))) => round.failed.push((name, e)),
            Err(e) => {
                skylog!(Error, "job {job_id}: copy task ended without a result: {e}");
                round.lost += 1;
            }
        }
    }
    round
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_lasts_the_expected_transfer_over_the_route() {
        let s = Schedule::parse(
            br#"{"nodes": [{"name": "a", "type": "Sat"}, {"name": "b", "type": "Sat"},
                          {"name": "c", "type": "Sat"}, {"name": "far", "type": "Sat"}],
                 "links": [{"source": "a", "target": "b", "latency_ms": 10, "bandwidth_mbps": 80},
                           {"source": "b", "target": "c", "latency_ms": 5, "bandwidth_mbps": 40}]}"#,
        )
        .expect("a topology");
        // a -> c: 15 ms one way, bottleneck 40 Mbit/s (5,000 bytes per ms): 10 MB take
        // 2,000 ms, plus the round trip.
        assert_eq!(expected_ms(Some(&s), "a", "c", 10_000_000), 2_030);
        assert_eq!(expected_ms(Some(&s), "a", "b", 0), 20);
        // Unknown routes add nothing: no topology, a node outside it, no path.
        assert_eq!(expected_ms(None, "a", "c", 10_000_000), 0);
        assert_eq!(expected_ms(Some(&s), "a", "global", 10_000_000), 0);
        assert_eq!(expected_ms(Some(&s), "a", "far", 10_000_000), 0);
    }

    fn dies() -> CopyOutcome {
        panic!("a copy task that panics (expected in this test)")
    }

    #[test]
    fn a_round_counts_only_its_own_copies() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a test runtime");
        rt.block_on(async {
            // An earlier round copied to the global store ("cloud"), so the job's all-time
            // successes number 1; this round's only target, the elected node, has its copy
            // task panic, then cancelled. Neither round made its copy.
            let earlier_done = ["cloud".to_string()];
            let targets = vec!["sat-b".to_string()];
            let mut copies = tokio::task::JoinSet::new();
            copies.spawn(async { dies() });
            let round = join_copies(&mut copies, "j1").await;
            assert_eq!((round.copied.len(), round.lost), (0, 1));
            assert!(earlier_done.len() >= targets.len());
            assert!(!round.made_all(&targets), "a panicked copy counted as made");

            let mut copies = tokio::task::JoinSet::new();
            copies
                .spawn(async { std::future::pending::<CopyOutcome>().await })
                .abort();
            let round = join_copies(&mut copies, "j1").await;
            assert_eq!(round.lost, 1);
            assert!(
                !round.made_all(&targets),
                "a cancelled copy counted as made"
            );

            // A failed copy is not made either; a successful one is.
            let mut copies = tokio::task::JoinSet::new();
            copies.spawn(async {
                (
                    "sat-b".to_string(),
                    Err(CallError::new(
                        skylark_abi::Status::StoreUnavailable,
                        "down",
                    )),
                )
            });
            assert!(!join_copies(&mut copies, "j1").await.made_all(&targets));
            let mut copies = tokio::task::JoinSet::new();
            copies.spawn(async { ("sat-b".to_string(), Ok(Vec::new())) });
            assert!(join_copies(&mut copies, "j1").await.made_all(&targets));
        });
    }

    /// Each command of a request as its RESP bytes (lossy text).
    fn packed(r: &Request) -> Vec<String> {
        let text = |c: &redis::Cmd| String::from_utf8_lossy(&c.get_packed_command()).into_owned();
        match r {
            Request::Pipe(p) => p.cmd_iter().map(text).collect(),
            Request::Cmd(c) => vec![text(c)],
        }
    }

    #[test]
    fn writes_give_every_copy_the_configured_ttl_or_none() {
        let key = "ns:bundle:c";
        let mut pipe = redis::pipe();
        crate::store::write_hash(&mut pipe, key, [("t", b"v".as_slice())], None);
        let cmds = packed(&Request::Pipe(pipe));
        assert!(!cmds.iter().any(|c| c.contains("EXPIRE")), "{cmds:?}");

        let mut pipe = redis::pipe();
        crate::store::write_hash(
            &mut pipe,
            key,
            [("t", b"v".as_slice())],
            Some(Duration::from_secs(90)),
        );
        let cmds = packed(&Request::Pipe(pipe));
        assert!(
            cmds.iter()
                .any(|c| c.contains("EXPIRE") && c.contains("\r\n90\r\n")),
            "{cmds:?}"
        );

        // The announcement of a copy: an expiry only with a TTL, and only NX.
        let m = packed(&incoming_marker("ns", "c", "@incoming:j", 1, None));
        assert!(!m.iter().any(|c| c.contains("EXPIRE")), "{m:?}");
        let m = packed(&incoming_marker(
            "ns",
            "c",
            "@incoming:j",
            1,
            Some(Duration::from_secs(90)),
        ));
        assert!(
            m.iter()
                .any(|c| c.contains("EXPIRE") && c.contains("\r\n90\r\n") && c.contains("NX")),
            "{m:?}"
        );
    }

    #[test]
    fn elected_nodes_are_copied_to_before_the_global_store() {
        let s = |v: &[&str]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let none: Vec<String> = Vec::new();
        // The global store's copy waits for the consumers' copies, whatever the order
        // of the targets.
        assert_eq!(
            copy_order(&s(&["g", "n1", "n2"]), Some("g")),
            (s(&["n1", "n2"]), s(&["g"]))
        );
        assert_eq!(
            copy_order(&s(&["n1", "g"]), Some("g")),
            (s(&["n1"]), s(&["g"]))
        );
        // Only the global store's copy left (the elected copy made in an earlier round,
        // or the target is this node): it goes at once.
        assert_eq!(copy_order(&s(&["g"]), Some("g")), (none.clone(), s(&["g"])));
        // No global store: every copy goes at once.
        assert_eq!(
            copy_order(&s(&["n1", "n2"]), None),
            (s(&["n1", "n2"]), none.clone())
        );
    }

    #[test]
    fn copy_deadlines_grow_with_size_and_failures() {
        let t = Duration::from_millis(2000);
        assert_eq!(copy_deadline(t, 0, 5.0, 0), t);
        // 10 MB at 5 Mbit/s (625 bytes/ms): 16 s more.
        assert_eq!(
            copy_deadline(t, 10_000_000, 5.0, 0),
            Duration::from_millis(18_000)
        );
        assert_eq!(copy_deadline(t, 1, 5.0, 0), Duration::from_millis(2001));
        // Each failure doubles it, up to 32 times.
        assert_eq!(copy_deadline(t, 0, 5.0, 1), 2 * t);
        assert_eq!(copy_deadline(t, 0, 5.0, 3), 8 * t);
        assert_eq!(copy_deadline(t, 0, 5.0, 40), 32 * t);
        // Absurd inputs stay finite.
        assert!(
            copy_deadline(t, usize::MAX, 0.0, u32::MAX) <= 32 * (t + Duration::from_secs(86_400))
        );
    }

    #[test]
    fn copies_carry_only_what_the_target_lacks() {
        let state = vec![
            (b"pre".to_vec(), b"image".to_vec()),
            (b"det".to_vec(), b"boxes".to_vec()),
        ];
        let placement = vec![("pre".to_string(), "n2".to_string())];
        let own = vec!["det".to_string()];
        let names =
            |v: Vec<&(Vec<u8>, Vec<u8>)>| v.into_iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        // n2 already holds pre (placed there): only det goes; pre is left out.
        let (sent, left_out) = delta(&state, &placement, &own, "n2", false);
        assert_eq!(names(sent), [b"det".to_vec()]);
        assert_eq!(names(left_out), [b"pre".to_vec()]);
        // n3 holds nothing of this chain: everything goes.
        assert_eq!(delta(&state, &placement, &own, "n3", false).0.len(), 2);
        // The global store got pre from pre's own put.
        assert_eq!(
            names(delta(&state, &placement, &own, "g", true).0),
            [b"det".to_vec()]
        );
    }
}
