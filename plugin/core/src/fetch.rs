//! The read path of `skylark_get_bundle`: the node-local store first (on the guest's
//! thread, one `HGETALL` for the bundle and its placement record), then, on a miss,
//! every candidate node in parallel (the node named by the caller, the nodes the local
//! placement record names, the current neighbours; the first hit wins), then the global
//! store. Policy `stateless` reads only the global store. A bundle found elsewhere is
//! copied to the node-local store in the background (read-through cache).
//!
//! Option `wait_for` first waits, on arrival signals (`arrivals`, no polling), until the
//! store the get reads first (the node-local one; the global one for `stateless`) holds
//! every named task, at most `wait_ms`; only if the deadline passes does it look at the
//! other tiers, once, and then reports whether the bundle it delivers is complete.

use crate::arrivals::{self, Listener};
use crate::bundle_read::Probe;
use crate::clock::now_ms;
use crate::context::Context;
use crate::error::CallError;
use crate::stats::{self, Counter};
use crate::store::{HashPairs, Request};
use crate::{bundle_read, fence, keys, runtime, skylog};
use skylark_abi::wire::{self, GetOptions, Policy, Source, Tier};
use skylark_abi::{ids, Status};
use std::sync::Arc;
use std::time::Duration;

/// A bundle as found: its fields, its placement record and where it came from.
#[derive(Debug)]
pub struct Found {
    pub fields: HashPairs,
    /// (task id, node) entries of the placement record.
    pub placement: Vec<(String, String)>,
    /// The fields' versions as held where they were found.
    pub versions: keys::Versions,
    pub source: Source,
}

impl Found {
    /// True if the bundle holds every task in `require` (linear in fields plus require).
    fn has(&self, require: &[String]) -> bool {
        keys::holds(&self.fields, require)
    }

    /// Takes from `other` (what this node holds) every field it holds in a newer version
    /// or that this bundle lacks: a read never returns a field older than the node's own.
    fn keep_newer(&mut self, other: Found) {
        for (field, value) in other.fields {
            let theirs = keys::version(&other.versions, &field);
            match self.fields.iter_mut().find(|(k, _)| *k == field) {
                Some((_, v)) => {
                    if theirs > keys::version(&self.versions, &field) {
                        *v = value;
                        self.versions.insert(field, theirs);
                    }
                }
                None => {
                    self.versions.insert(field.clone(), theirs);
                    self.fields.push((field, value));
                }
            }
        }
    }

    /// Splits a bundle hash as read (dropping fields that are not ids, `keys::split`); a
    /// hash without state yields just its placement record.
    fn new(raw: HashPairs, tier: Tier, node: String) -> Result<Found, Vec<(String, String)>> {
        let split = keys::split(raw);
        if split.dropped > 0 {
            skylog!(
                Info,
                "bundle from {node}: {} fields with names that are not ids or placement \
                 entries naming no valid node ignored",
                split.dropped
            );
        }
        if split.state.is_empty() {
            return Err(split.placement);
        }
        Ok(Found {
            fields: split.state,
            placement: split.placement,
            versions: split.versions,
            source: Source { tier, node },
        })
    }
}

/// Checks get options that come from the guest: `require`, `wait_for` and `from` must be
/// valid ids, and `require` and `wait_for` list at most [`wire::MAX_REQUIRE`] each.
pub fn check_options(opts: &GetOptions) -> Result<(), CallError> {
    for (name, list) in [("require", &opts.require), ("wait_for", &opts.wait_for)] {
        if list.len() > wire::MAX_REQUIRE {
            return Err(CallError::new(
                Status::InvalidOptions,
                format!(
                    "{name} lists {} task ids; at most {} accepted",
                    list.len(),
                    wire::MAX_REQUIRE
                ),
            ));
        }
        for t in list {
            ids::validate(t.as_bytes())
                .map_err(|e| CallError::new(Status::InvalidOptions, format!("{name} {t:?} {e}")))?;
        }
    }
    if let Some(from) = &opts.from {
        ids::validate(from.as_bytes())
            .map_err(|e| CallError::new(Status::InvalidOptions, format!("from {from:?} {e}")))?;
    }
    Ok(())
}

/// What a get delivers.
#[derive(Debug)]
pub struct Lookup {
    /// The bundle, `None` if no tier asked has it.
    pub found: Option<Found>,
    /// With `wait_for`: the deadline passed before every named task was there (the
    /// bundle holds the fields present so far). Always false without `wait_for`.
    pub timed_out: bool,
}

/// Looks `chain` up along the fallback order; `Ok(None)` if no tier has it.
pub fn get(
    ctx: &'static Context,
    chain: &str,
    opts: &GetOptions,
) -> Result<Option<Found>, CallError> {
    lookup(ctx, chain, opts).map(|l| l.found)
}

/// Like [`get`], honouring `wait_for` (see the module docs).
pub fn lookup(ctx: &'static Context, chain: &str, opts: &GetOptions) -> Result<Lookup, CallError> {
    check_options(opts)?;
    stats::inc(Counter::Gets);
    let policy = opts.policy.unwrap_or(ctx.cluster.config.propagation.policy);
    let mut timed_out = false;
    let found = if !opts.wait_for.is_empty() {
        stats::inc(Counter::WaitFors);
        let (found, complete) = waited(ctx, chain, opts, policy)?;
        timed_out = !complete;
        if timed_out {
            stats::inc(Counter::WaitForTimeouts);
        }
        found
    } else if policy == Policy::Stateless {
        global_only(ctx, chain)?
    } else {
        tiered(
            ctx,
            chain,
            opts,
            ctx.cluster.config.propagation.incoming_wait,
        )?
    };
    stats::inc(match found.as_ref().map(|f| f.source.tier) {
        None => Counter::Misses,
        Some(Tier::Local) => Counter::HitsLocal,
        Some(Tier::Neighbour) => Counter::HitsNeighbour,
        Some(Tier::Global) => Counter::HitsGlobal,
    });
    Ok(Lookup { found, timed_out })
}

/// The deadline of a `wait_for`: the guest's `wait_ms`, else `SKYLARK_WAIT_MS`, at most
/// `SKYLARK_MAX_WAIT_MS`.
pub fn wait_deadline(ctx: &Context, opts: &GetOptions) -> Duration {
    let c = &ctx.cluster.config;
    opts.wait_ms
        .map_or(c.wait, Duration::from_millis)
        .min(c.max_wait)
}

/// A get with `wait_for`: waits on the store read first (the node-local one, or the
/// global one for `stateless`) until it holds every task named, at most the deadline;
/// then, if something is still missing and other tiers may be asked, asks them once
/// (the named tasks required, no further waiting). Returns the bundle and whether it
/// holds every named task.
fn waited(
    ctx: &'static Context,
    chain: &str,
    opts: &GetOptions,
    policy: Policy,
) -> Result<(Option<Found>, bool), CallError> {
    let config = &ctx.cluster.config;
    let (store, tier, node) = if policy == Policy::Stateless {
        let g = ctx.cluster.require_global()?;
        (g.store, Tier::Global, g.name)
    } else {
        (
            Arc::clone(&ctx.cluster.local),
            Tier::Local,
            config.node_name.clone(),
        )
    };
    let wait = wait_deadline(ctx, opts);
    let listener = ctx.cluster.arrivals.of(&store);
    let complete = wait_for_tasks(ctx, &listener, chain, &opts.wait_for, wait)?;
    let raw = bundle_read::read(&store, &config.namespace, chain, config.max_bundle_bytes)?;
    let here = Found::new(raw, tier, node).ok();
    let complete_here = here.as_ref().is_some_and(|f| f.has(&opts.wait_for));
    if complete || complete_here || tier == Tier::Global || opts.local_only || ctx.engine.is_none()
    {
        return Ok((here, complete_here));
    }
    // The deadline passed: the other tiers, once, with the named tasks required.
    let mut require = opts.require.clone();
    require.extend(opts.wait_for.iter().cloned());
    let fallback = GetOptions {
        require,
        ..opts.clone()
    };
    let found = tiered(ctx, chain, &fallback, Duration::ZERO)?;
    let complete = found.as_ref().is_some_and(|f| f.has(&opts.wait_for));
    Ok((found, complete))
}

/// Waits (on the guest's thread, the waiting itself on the plugin runtime) until the
/// bundle on `listener`'s store holds every task in `tasks`, at most `wait`.
fn wait_for_tasks(
    ctx: &'static Context,
    listener: &Arc<Listener>,
    chain: &str,
    tasks: &[String],
    wait: Duration,
) -> Result<bool, CallError> {
    let c = &ctx.cluster.config;
    // Beyond the wait: subscribing (connecting included) and each read has its deadline.
    let bound = wait + c.timeout.saturating_mul(3) + c.connect_timeout;
    let (listener, chain, tasks) = (Arc::clone(listener), chain.to_string(), tasks.to_vec());
    runtime::run(bound, async move {
        let deadline = tokio::time::Instant::now() + wait;
        let wanted: std::collections::HashSet<&str> = tasks.iter().map(String::as_str).collect();
        let relevant = |arrived: &[String]| arrived.iter().any(|a| wanted.contains(a.as_str()));
        let done = |names: &[Vec<u8>]| arrivals::holds_all(names, &tasks);
        arrivals::wait_until(
            &listener,
            &ctx.cluster.config.namespace,
            &chain,
            deadline,
            relevant,
            done,
        )
        .await
    })
}

/// The fallback order: the local store (waiting at most `wait` for a copy announced to it
/// and, while asking the other tiers, for required state to arrive), then the others.
fn tiered(
    ctx: &'static Context,
    chain: &str,
    opts: &GetOptions,
    wait: Duration,
) -> Result<Option<Found>, CallError> {
    let ns = &ctx.cluster.config.namespace;
    let mut raw = read_local(ctx, ns, chain)?;
    // A get that names the state it needs and finds all of it here does not wait for
    // copies announced to this node: they cannot make its answer more complete (and a
    // read never returns a field older than the node's own either way).
    let satisfied = !opts.require.is_empty() && keys::holds(&raw, &opts.require);
    if !satisfied && !wait.is_zero() {
        let mut incoming = keys::incoming(&raw);
        if !opts.require.is_empty() {
            // Nor for copies that bring none of the required state the node lacks (a
            // step on the global node need not wait for every earlier step's global copy).
            let missing = missing(&raw, &opts.require);
            incoming.retain(|(field, _)| keys::may_bring(field, &missing));
        }
        if !incoming.is_empty() {
            if let Some(r) = wait_incoming(ctx, ns, chain, incoming)? {
                raw = r;
            }
        }
    }
    let (mut local, placement) =
        match Found::new(raw, Tier::Local, ctx.cluster.config.node_name.clone()) {
            Ok(found) if found.has(&opts.require) => return Ok(Some(found)),
            Ok(found) => {
                let placement = found.placement.clone();
                (Some(found), placement)
            }
            // The node may hold just a placement record naming where the state went.
            Err(placement) => (None, placement),
        };
    if opts.local_only || ctx.engine.is_none() {
        return Ok(local);
    }
    let mut hints: Vec<String> = opts.from.iter().cloned().collect();
    hints.extend(placement.into_iter().map(|(_, node)| node));
    let chain_owned = chain.to_string();
    let require = opts.require.clone();
    // The required tasks this node lacks: a copy of one of them announced here is worth
    // waiting for rather than pulling the same bytes over the same links.
    let lacking: Vec<String> = match &local {
        Some(f) => missing(&f.fields, &require)
            .into_iter()
            .map(String::from)
            .collect(),
        None => require.clone(),
    };
    // Each remote tier has the store deadline (the neighbour and global tiers run one
    // after the other); waiting for required state to arrive locally has its own bound.
    let deadline = ctx.cluster.config.timeout.saturating_mul(3)
        + ctx.cluster.config.connect_timeout
        + wait.max(announced_wait_cap(ctx));
    let found = runtime::run(deadline, async move {
        elsewhere_or_arriving(ctx, &chain_owned, hints, &require, &lacking, wait).await
    })?;
    match found {
        Some(mut f) => {
            if f.source.tier != Tier::Local && ctx.cluster.config.propagation.read_cache {
                fill_cache(ctx, chain, &f);
            }
            if let Some(mine) = local.take() {
                f.keep_newer(mine);
            }
            Ok(Some(f))
        }
        // Nothing complete anywhere: the most complete thing is what this node has.
        None => Ok(local),
    }
}

/// Looks for the bundle (complete with respect to `require`) on other nodes and, at the
/// same time, if state is required, waits for it to arrive in the local store; the first
/// complete answer wins. A neighbour's bundle too large to come back with its size check
/// is not pulled while a copy of the required state this node lacks (`lacking`) is
/// announced on its way here ([`Elsewhere::Coming`]): the pull would cross the same links
/// as the copy and halve both (BENCHMARKS section 4: a 5 MB hand-off took 2.0 s instead
/// of 1.1 s). The wait for the copy keeps its bound; if it passes, the state is pulled
/// after all.
async fn elsewhere_or_arriving(
    ctx: &'static Context,
    chain: &str,
    hints: Vec<String>,
    require: &[String],
    lacking: &[String],
    wait: std::time::Duration,
) -> Result<Option<Found>, CallError> {
    // Every wait of this read for a copy on its way ends by then, however long the
    // copy's announcement: `tiered`'s runtime deadline allows for exactly this much.
    let waits_end = now_ms() + wait.max(announced_wait_cap(ctx)).as_millis() as u64;
    let defer = (!wait.is_zero()).then_some(lacking);
    let elsewhere = remote(ctx, chain, hints.clone(), require, defer);
    let arriving = arrival(ctx, chain, require, wait);
    tokio::pin!(elsewhere, arriving);
    let (mut elsewhere_done, mut arriving_done, mut coming) = (false, false, None);
    loop {
        tokio::select! {
            r = &mut elsewhere, if !elsewhere_done => {
                elsewhere_done = true;
                match r? {
                    Elsewhere::Found(f) => return Ok(Some(f)),
                    Elsewhere::Missing => {}
                    Elsewhere::Coming(until) => coming = Some(until),
                }
            }
            r = &mut arriving, if !arriving_done => {
                arriving_done = true;
                if let Some(f) = r? {
                    return Ok(Some(f));
                }
            }
            else => break,
        }
    }
    let Some(mut until) = coming else {
        return Ok(None);
    };
    loop {
        // A copy expected to take longer than the wait (a large one over a slow or shared
        // link) is waited for until its announcement ends.
        let more = until.min(waits_end).saturating_sub(now_ms());
        if more > 0 {
            if let Some(f) = arrival(ctx, chain, require, Duration::from_millis(more)).await? {
                return Ok(Some(f));
            }
        }
        if now_ms() >= waits_end {
            break;
        }
        // Its sender renews its record while the copy runs (`propagation::sending`): a
        // copy slower than expected, its link shared with another, is still on its way.
        // Probe again before pulling beside it.
        match remote(ctx, chain, hints.clone(), require, Some(lacking)).await? {
            Elsewhere::Coming(later) if later > until => until = later,
            Elsewhere::Found(f) => return Ok(Some(f)),
            Elsewhere::Coming(_) | Elsewhere::Missing => break,
        }
    }
    // The announced copy did not come within the wait: pull the state after all.
    skylog!(
        Info,
        "get {chain}: an announced copy did not arrive in time; reading it elsewhere"
    );
    match remote(ctx, chain, hints, require, None).await? {
        Elsewhere::Found(f) => Ok(Some(f)),
        Elsewhere::Missing | Elsewhere::Coming(_) => Ok(None),
    }
}

/// What the other tiers answered.
enum Elsewhere {
    /// A bundle holding the required state.
    Found(Found),
    /// No node holds it.
    Missing,
    /// A neighbour holds a bundle too large to come back with its size check, and a copy
    /// of required state this node lacks is on its way here (announced here, or recorded
    /// as sent here on a node probed), live until this time (ms since the epoch): not
    /// pulled.
    Coming(u64),
}

/// What probing one neighbour came to.
enum Probed {
    /// Its bundle (empty if it has none).
    Read(HashPairs),
    /// Too large to pull while a copy of the lacking state is on its way here (announced
    /// here or recorded as sent here by the probed node), live until this time (ms since
    /// the epoch).
    Coming(u64),
}

/// Until when (ms since the epoch) a copy bringing one of `lacking` is announced, live,
/// in the local store's bundle of `chain` (`HKEYS`, then the deadline of each such
/// announcement); the latest such deadline, `None` if none is live.
async fn copy_coming(ctx: &'static Context, chain: &str, lacking: &[String]) -> Option<u64> {
    let key = keys::bundle(&ctx.cluster.config.namespace, chain);
    let local = &ctx.cluster.local;
    let names = match local
        .query_async(&Request::Cmd(redis::cmd("HKEYS").arg(&key).clone()))
        .await
    {
        Ok(redis::Value::Array(names)) => names,
        Ok(_) => return None,
        Err(e) => {
            skylog!(Info, "get {chain}: looking for announced copies: {e}");
            return None;
        }
    };
    let lacking: Vec<&str> = lacking.iter().map(String::as_str).collect();
    let mut latest = None;
    for name in names {
        let redis::Value::BulkString(field) = name else {
            continue;
        };
        if !field.starts_with(keys::INCOMING_PREFIX.as_bytes())
            || !keys::may_bring(&field, &lacking)
        {
            continue;
        }
        let until = local
            .query_async(&Request::Cmd(
                redis::cmd("HGET").arg(&key).arg(&field).clone(),
            ))
            .await;
        if let Ok(redis::Value::BulkString(v)) = until {
            let until = keys::incoming_until(&v);
            if until > now_ms() {
                latest = latest.max(Some(until));
            }
        }
    }
    latest
}

/// Until when (ms since the epoch) a neighbour's sending records (`keys::SENDING_PREFIX`,
/// from its probe) say a copy bringing one of `lacking` is on its way to `node`, live; the
/// latest such time. The neighbour writes them as soon as its job has elected this node,
/// before the copy's announcement can land here (issue 13).
fn sending_here(records: &[(Vec<u8>, u64)], node: &str, lacking: &[String]) -> Option<u64> {
    let lacking: Vec<&str> = lacking.iter().map(String::as_str).collect();
    let now = now_ms();
    records
        .iter()
        .filter(|(field, until)| {
            *until > now
                && keys::sent_to(field, node).is_some_and(|f| keys::may_bring(&f, &lacking))
        })
        .map(|(_, until)| *until)
        .max()
}

/// Waits, on arrival signals, until the local store holds every required task, at most
/// `wait`; then reads the bundle. `None` at once when nothing is required, and when
/// waiting fails (the other tiers still answer).
async fn arrival(
    ctx: &'static Context,
    chain: &str,
    require: &[String],
    wait: Duration,
) -> Result<Option<Found>, CallError> {
    if require.is_empty() || wait.is_zero() {
        return Ok(None);
    }
    let ns = &ctx.cluster.config.namespace;
    let listener = ctx.cluster.arrivals.of(&ctx.cluster.local);
    let started = tokio::time::Instant::now();
    let arrived = arrivals::wait_until(
        &listener,
        ns,
        chain,
        started + wait,
        |arrived| arrived.iter().any(|a| require.iter().any(|r| r == a)),
        |names| arrivals::holds_all(names, require),
    )
    .await;
    match arrived {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) => {
            skylog!(Info, "get {chain}: waiting for required state: {e}");
            return Ok(None);
        }
    }
    stats::inc(Counter::IncomingWaits);
    stats::add(
        Counter::IncomingWaitMs,
        started.elapsed().as_millis() as u64,
    );
    let max = ctx.cluster.config.max_bundle_bytes;
    let raw = bundle_read::read_async(&ctx.cluster.local, ns, chain, max).await?;
    Ok(Found::new(raw, Tier::Local, ctx.cluster.config.node_name.clone()).ok())
}

/// The tasks of `require` that the bundle hash `raw` holds no field for.
fn missing<'a>(raw: &HashPairs, require: &'a [String]) -> Vec<&'a str> {
    require
        .iter()
        .filter(|t| !raw.iter().any(|(k, _)| k == t.as_bytes()))
        .map(String::as_str)
        .collect()
}

fn read_local(ctx: &Context, ns: &str, chain: &str) -> Result<HashPairs, CallError> {
    bundle_read::read(
        &ctx.cluster.local,
        ns,
        chain,
        ctx.cluster.config.max_bundle_bytes,
    )
}

/// The longest a read waits for announced copies: an announcement is live for its copy's
/// expected transfer plus `SKYLARK_INCOMING_WAIT_MS` (`propagation::copy`), at most
/// `SKYLARK_MAX_WAIT_MS` (and never less than `SKYLARK_INCOMING_WAIT_MS`).
fn announced_wait_cap(ctx: &Context) -> Duration {
    let c = &ctx.cluster.config;
    c.max_wait.max(c.propagation.incoming_wait)
}

/// A copy to this node is on its way (announced by its sender): rather than fetch the
/// state from elsewhere over the same links, wait, on arrival signals, until the
/// announcements are gone (the copy removes its own, and signals) or their deadlines pass
/// (at most [`announced_wait_cap`]), then read the bundle again. `None` if no
/// announcement is still live.
fn wait_incoming(
    ctx: &'static Context,
    ns: &str,
    chain: &str,
    incoming: Vec<(Vec<u8>, u64)>,
) -> Result<Option<HashPairs>, CallError> {
    let cap = now_ms() + announced_wait_cap(ctx).as_millis() as u64;
    let live: Vec<(Vec<u8>, u64)> = incoming
        .into_iter()
        .filter(|(_, until)| *until > now_ms())
        .map(|(f, until)| (f, until.min(cap)))
        .collect();
    let Some(deadline) = live.iter().map(|(_, until)| *until).max() else {
        return Ok(None);
    };
    let started = std::time::Instant::now();
    let wait = Duration::from_millis(deadline.saturating_sub(now_ms()));
    let c = &ctx.cluster.config;
    let listener = ctx.cluster.arrivals.of(&ctx.cluster.local);
    let (owned_ns, owned_chain) = (ns.to_string(), chain.to_string());
    let bound = wait + c.timeout.saturating_mul(3) + c.connect_timeout;
    let waited = runtime::run(bound, async move {
        let pending = move |names: &[Vec<u8>]| {
            let now = now_ms();
            live.iter()
                .any(|(f, until)| *until > now && names.contains(f))
        };
        arrivals::wait_until(
            &listener,
            &owned_ns,
            &owned_chain,
            tokio::time::Instant::now() + wait,
            |_| true,
            |names| !pending(names),
        )
        .await
    });
    if let Err(e) = waited {
        // The copy may still have come; the read below says.
        skylog!(Info, "get {chain}: waiting for an announced copy: {e}");
    }
    stats::inc(Counter::IncomingWaits);
    stats::add(
        Counter::IncomingWaitMs,
        started.elapsed().as_millis() as u64,
    );
    read_local(ctx, ns, chain).map(Some)
}

/// Neighbours (and hinted nodes) in parallel, first hit wins; then the global store.
/// With `defer` (the required tasks this node lacks), a neighbour's bundle too large to
/// come back with its size check is pulled only if no copy of one of them is announced
/// here ([`Elsewhere::Coming`] otherwise, and the global store is not read either).
async fn remote(
    ctx: &'static Context,
    chain: &str,
    hints: Vec<String>,
    require: &[String],
    defer: Option<&[String]>,
) -> Result<Elsewhere, CallError> {
    let ns = ctx.cluster.config.namespace.clone();
    let local = &ctx.cluster.config.node_name;
    let topo = ctx.cluster.current_topology().await;
    let global = ctx.cluster.nodes.global(topo.as_deref());
    let mut candidates = hints;
    if let Some(t) = topo.as_deref() {
        if let Some(me) = t.id(local) {
            let slot = t.slot_at(now_ms());
            candidates.extend(t.neighbours(slot, me).map(|(n, _)| t.node(n).name.clone()));
        }
    }
    let mut seen = std::collections::HashSet::new();
    candidates.retain(|n| {
        n != local && global.as_ref().is_none_or(|g| &g.name != n) && seen.insert(n.clone())
    });

    let max = ctx.cluster.config.max_bundle_bytes;
    let defer: Option<Arc<Vec<String>>> = defer
        .filter(|lacking| !lacking.is_empty())
        .map(|lacking| Arc::new(lacking.to_vec()));
    let mut probes = tokio::task::JoinSet::new();
    for name in candidates {
        let store = match ctx.cluster.nodes.store(topo.as_deref(), &name) {
            Ok(s) => s,
            Err(e) => {
                skylog!(Debug, "get {chain}: skipping {name}: {e}");
                continue;
            }
        };
        let (ns, chain, defer) = (ns.clone(), chain.to_string(), defer.clone());
        probes.spawn(async move {
            let r = match defer {
                None => bundle_read::read_async(&store, &ns, &chain, max)
                    .await
                    .map(Probed::Read),
                Some(lacking) => match bundle_read::probe_async(&store, &ns, &chain, max).await {
                    Ok(Probe::Hash(raw)) => Ok(Probed::Read(raw)),
                    Ok(Probe::Large(records)) => {
                        let node = &ctx.cluster.config.node_name;
                        match sending_here(&records, node, &lacking)
                            .max(copy_coming(ctx, &chain, &lacking).await)
                        {
                            Some(until) => Ok(Probed::Coming(until)),
                            None => bundle_read::read_async(&store, &ns, &chain, max)
                                .await
                                .map(Probed::Read),
                        }
                    }
                    Err(e) => Err(e),
                },
            };
            (name, r)
        });
    }
    // A bundle too large to read anywhere is an error, not a miss.
    let (mut too_large, mut coming) = (None, None);
    while let Some(joined) = probes.join_next().await {
        match joined {
            Ok((name, Ok(Probed::Read(raw)))) => {
                if let Ok(found) = Found::new(raw, Tier::Neighbour, name) {
                    if found.has(require) {
                        probes.abort_all();
                        return Ok(Elsewhere::Found(found));
                    }
                }
            }
            Ok((name, Ok(Probed::Coming(until)))) => {
                skylog!(
                    Debug,
                    "get {chain}: not pulled from {name}: a copy is on its way"
                );
                coming = coming.max(Some(until));
            }
            Ok((name, Err(e))) => {
                skylog!(Info, "get {chain}: neighbour {name}: {e}");
                if e.status == Status::BundleTooLarge {
                    too_large = Some(e);
                }
            }
            Err(e) => skylog!(Error, "get {chain}: probe task failed: {e}"),
        }
    }
    if let Some(until) = coming {
        return Ok(Elsewhere::Coming(until));
    }
    let miss = || too_large.clone().map_or(Ok(Elsewhere::Missing), Err);
    let Some(g) = global else {
        return miss();
    };
    if &g.name == local {
        return miss();
    }
    let raw = bundle_read::read_async(&g.store, &ns, chain, max).await?;
    match Found::new(raw, Tier::Global, g.name) {
        Ok(f) if f.has(require) => Ok(Elsewhere::Found(f)),
        _ => miss(),
    }
}

/// Policy `stateless`: the global store only.
fn global_only(ctx: &'static Context, chain: &str) -> Result<Option<Found>, CallError> {
    let global = ctx.cluster.require_global()?;
    let raw = bundle_read::read(
        &global.store,
        &ctx.cluster.config.namespace,
        chain,
        ctx.cluster.config.max_bundle_bytes,
    )?;
    Ok(Found::new(raw, Tier::Global, global.name).ok())
}

/// Writes a bundle found on another node to the node-local store, fenced (`fence`: a field
/// the node holds in a newer version stays): one local round trip on the guest's thread,
/// so that a put that follows in the same function extends a complete local bundle. A
/// failure only costs the cache.
fn fill_cache(ctx: &'static Context, chain: &str, found: &Found) {
    let version = |task: &[u8]| keys::version(&found.versions, task);
    let stamped: Vec<fence::Stamped> = found
        .fields
        .iter()
        .map(|(f, v)| (f.as_slice(), version(f), v.as_slice()))
        .collect();
    let placed: Vec<fence::Placed> = found
        .placement
        .iter()
        .map(|(t, n)| (t.as_str(), version(t.as_bytes()), n.as_str()))
        .collect();
    let key = keys::bundle(&ctx.cluster.config.namespace, chain);
    let cmd = fence::Copy {
        state: &stamped,
        placed: &placed,
        ttl: ctx.cluster.config.ttl,
        ..Default::default()
    }
    .cmd(&key);
    match ctx.cluster.local.query(&Request::Cmd(cmd)) {
        Ok(_) => stats::inc(Counter::CacheFills),
        Err(e) => skylog!(Info, "get {chain}: keeping a local copy: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_ids_are_checked_and_capped() {
        let opts = |wait_for: Vec<String>| GetOptions {
            wait_for,
            ..GetOptions::default()
        };
        let ids = |n: usize| (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>();
        assert!(check_options(&opts(ids(wire::MAX_REQUIRE))).is_ok());
        let e = check_options(&opts(ids(wire::MAX_REQUIRE + 1))).unwrap_err();
        assert_eq!(e.status, Status::InvalidOptions);
        assert!(e.message.contains("wait_for lists 1025"), "{e}");
        for bad in ["", "a:b", "a b", "@v:x"] {
            let e = check_options(&opts(vec!["ok".into(), bad.into()])).unwrap_err();
            assert_eq!(e.status, Status::InvalidOptions, "{bad:?}");
            assert!(e.message.starts_with("wait_for "), "{e}");
        }
        let long = "x".repeat(129);
        assert!(check_options(&opts(vec![long])).is_err());
    }

    #[test]
    fn require_is_capped() {
        let ids = |n: usize| (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>();
        let opts = |require| GetOptions {
            require,
            ..GetOptions::default()
        };
        assert!(check_options(&opts(ids(wire::MAX_REQUIRE))).is_ok());
        let e = check_options(&opts(ids(wire::MAX_REQUIRE + 1))).unwrap_err();
        assert_eq!(e.status, Status::InvalidOptions);
        assert!(e.message.contains("at most 1024"), "{e}");
    }
}
