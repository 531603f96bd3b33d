//! The testbed file and the Skylark topology document made from it: the nodes with
//! their stores, each slot's links with the characteristics of [`NetOptions`], and the
//! satellites' chain order.

use super::{NetOptions, UNLIMITED_MBPS};
use serde_json::{json, Value};
use skylark_core::topology::{NodeType, Schedule};
use std::path::PathBuf;

/// The testbed's topology file (`tests/data/constellation-topologies.json`).
pub fn testbed_file() -> PathBuf {
    skylark_testkit::root().join("tests/data/constellation-topologies.json")
}

/// The testbed's graphs as a Skylark document: the nodes with their stores' URLs, each
/// slot's links with the characteristics of [`NetOptions`], the given timing, and the
/// testbed's cloud node as the global node. No IP addresses are written: the plugin must
/// never reach for the real testbed's.
pub(super) fn skylark_document(
    testbed: &Schedule,
    opts: &NetOptions,
    urls: &[&str],
    slot_ms: u64,
    epoch_ms: u64,
) -> Result<Value, String> {
    let global = testbed
        .global()
        .ok_or("the testbed topology has no Cloud node")?;
    let nodes: Vec<Value> = testbed
        .nodes()
        .iter()
        .zip(urls)
        .map(|(n, url)| json!({"name": n.name, "type": n.kind.as_str(), "redis": url}))
        .collect();
    let kind = |id: u32| testbed.node(id).kind;
    let slots: Vec<Value> = (0..testbed.slots())
        .map(|slot| {
            let links = testbed.links(slot).iter().map(|l| {
                let spec = opts.link_spec(kind(l.a), kind(l.b));
                json!({
                    "source": testbed.name(l.a),
                    "target": testbed.name(l.b),
                    "latency_ms": spec.latency_ms,
                    "jitter_ms": spec.jitter_ms,
                    "bandwidth_mbps": spec.bandwidth_mbps.unwrap_or(UNLIMITED_MBPS),
                })
            });
            Value::Array(links.collect())
        })
        .collect();
    Ok(json!({
        "slot_ms": slot_ms,
        "epoch_ms": epoch_ms,
        "global": testbed.name(global),
        "nodes": nodes,
        "slots": slots,
    }))
}

/// The `Sat` nodes in chain order: slot 0's satellite-to-satellite links walked from the
/// end that appears first; the order of appearance if those links do not form one chain.
pub(super) fn chain_order(schedule: &Schedule) -> Vec<String> {
    let is_sat = |id: u32| schedule.get(id).is_some_and(|n| n.kind == NodeType::Sat);
    let sats: Vec<u32> = (0..schedule.len() as u32)
        .filter(|&id| is_sat(id))
        .collect();
    let next = |id: u32| -> Vec<u32> {
        schedule
            .neighbours(0, id)
            .map(|(other, _)| other)
            .filter(|&other| is_sat(other))
            .collect()
    };
    let by_appearance = || {
        sats.iter()
            .map(|&id| schedule.name(id).to_string())
            .collect()
    };
    let Some(&start) = sats.iter().find(|&&id| next(id).len() == 1) else {
        return by_appearance();
    };
    let mut chain = vec![start];
    let mut last = start;
    while let Some(after) = next(last).into_iter().find(|id| !chain.contains(id)) {
        chain.push(after);
        last = after;
    }
    if chain.len() != sats.len() {
        return by_appearance();
    }
    chain
        .into_iter()
        .map(|id| schedule.name(id).to_string())
        .collect()
}
