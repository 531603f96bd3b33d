//! The two topology documents: the testbed's JSON (an array of slots of links, or of
//! links) and Skylark's own (an object with `nodes` and `slots`), read into a
//! [`Schedule`] with errors that name the offending slot, link or node.

use super::{Link, Node, NodeType, Schedule, TopologyError, DEFAULT_SLOT_MS};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

impl Schedule {
    /// Parses a topology document, detecting its format: a JSON array is the testbed
    /// format, a JSON object Skylark's own format.
    ///
    /// Testbed format: slots of links `{"bandwidth", "latency", "source": {"node_name",
    /// "node_type", "node_ip"}, "target": {...}}` (optional `"jitter"`), 60 s slots from
    /// epoch 0; or a plain array of such links (one static slot).
    ///
    /// Skylark format:
    /// ```json
    /// { "slot_ms": 60000, "epoch_ms": 0, "global": "pi5u1",
    ///   "nodes": [ {"name": "pi5u1", "type": "Cloud", "ip": "10.0.0.243",
    ///               "redis": "redis://10.0.0.243:6379"} ],
    ///   "slots": [ [ {"source": "pi5u2", "target": "pi5u3", "latency_ms": 10,
    ///                 "jitter_ms": 9, "bandwidth_mbps": 90} ] ] }
    /// ```
    /// `slot_secs` may replace `slot_ms`, `links` (one static slot) may replace `slots`;
    /// `ip`, `redis`, `jitter_ms`, `global` and `epoch_ms` are optional; unknown keys are
    /// ignored. The global node is `global`, else the first `Cloud` node, else none.
    ///
    /// The digest is FNV-1a 64 of `bytes`. Errors name the offending slot, link or node.
    pub fn parse(bytes: &[u8]) -> Result<Schedule, TopologyError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(TopologyError::Empty);
        }
        let doc: Value =
            serde_json::from_slice(bytes).map_err(|e| TopologyError::NotJson(e.to_string()))?;
        let mut schedule = match &doc {
            Value::Array(items) => parse_testbed(items)?,
            Value::Object(_) => parse_skylark(&doc)?,
            other => {
                return Err(TopologyError::NotADocument {
                    found: json_kind(other),
                })
            }
        };
        schedule.digest = super::document_digest(bytes);
        Ok(schedule)
    }
}

/// The JSON type of `v`, for messages.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Collects nodes by name while reading a document; a name seen again must agree.
#[derive(Default)]
struct NodeSet {
    nodes: Vec<Node>,
    index: HashMap<String, u32>,
}

impl NodeSet {
    /// Adds `node` or merges it into the node of the same name, returning its id.
    /// Conflicting types, IPs or Redis URLs are an error (`at` says where).
    fn add(&mut self, node: Node, at: &str) -> Result<u32, TopologyError> {
        let Some(&id) = self.index.get(&node.name) else {
            let id = self.nodes.len() as u32;
            self.index.insert(node.name.clone(), id);
            self.nodes.push(node);
            return Ok(id);
        };
        let known = &mut self.nodes[id as usize];
        if known.kind != node.kind {
            return Err(TopologyError::at(
                at,
                format!(
                    "node {:?} has type {} here but {} before",
                    node.name, node.kind, known.kind
                ),
            ));
        }
        merge_field(&mut known.ip, node.ip, "ip", &node.name, at)?;
        merge_field(&mut known.redis, node.redis, "redis", &node.name, at)?;
        Ok(id)
    }
}

/// Fills `known` from `new`, or fails if both are set and differ.
fn merge_field(
    known: &mut Option<String>,
    new: Option<String>,
    what: &str,
    name: &str,
    at: &str,
) -> Result<(), TopologyError> {
    match (known.as_deref(), new) {
        (Some(k), Some(n)) if k != n => {
            // A Redis URL may carry a password: the message is logged and published.
            let shown = |v: &str| {
                if what == "redis" {
                    crate::config::redact(v)
                } else {
                    v.to_string()
                }
            };
            Err(TopologyError::at(
                at,
                format!(
                    "node {name:?} has {what} {:?} here but {:?} before",
                    shown(&n),
                    shown(k)
                ),
            ))
        }
        (None, Some(n)) => {
            *known = Some(n);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Parses a node type, naming the node and place on error.
fn node_type(kind: &str, name: &str, at: &str) -> Result<NodeType, TopologyError> {
    NodeType::parse(kind).ok_or_else(|| {
        TopologyError::at(
            at,
            format!("node {name:?} has unknown type {kind:?} (expected Cloud, Edge or Sat)"),
        )
    })
}

/// One end of a testbed link.
#[derive(Deserialize)]
struct TestbedEnd {
    node_name: String,
    node_type: String,
    #[serde(default)]
    node_ip: Option<String>,
}

/// A link in the testbed format.
#[derive(Deserialize)]
struct TestbedLink {
    source: TestbedEnd,
    target: TestbedEnd,
    latency: f64,
    bandwidth: f64,
    #[serde(default)]
    jitter: f64,
}

/// Parses the testbed format: an array of slots (arrays of links) or of links.
fn parse_testbed(items: &[Value]) -> Result<Schedule, TopologyError> {
    let slots: Vec<&[Value]> = match items.first() {
        None => {
            return Err(TopologyError::whole(
                "topology document has no slots (empty array)",
            ))
        }
        Some(Value::Object(_)) => vec![items],
        Some(_) => items
            .iter()
            .enumerate()
            .map(|(si, v)| match v {
                Value::Array(links) => Ok(links.as_slice()),
                other => Err(TopologyError::at(
                    format!("slot {si}"),
                    format!("expected an array of links, found {}", json_kind(other)),
                )),
            })
            .collect::<Result<_, _>>()?,
    };
    let mut nodes = NodeSet::default();
    let mut graphs = Vec::with_capacity(slots.len());
    for (si, raw) in slots.iter().enumerate() {
        let mut links = Vec::with_capacity(raw.len());
        for (li, v) in raw.iter().enumerate() {
            let at = format!("slot {si}, link {li}");
            let l =
                TestbedLink::deserialize(v).map_err(|e| TopologyError::at(&at, e.to_string()))?;
            let mut end = |e: TestbedEnd| -> Result<u32, TopologyError> {
                let kind = node_type(&e.node_type, &e.node_name, &at)?;
                let node = Node {
                    name: e.node_name,
                    kind,
                    ip: e.node_ip,
                    redis: None,
                };
                nodes.add(node, &at)
            };
            let a = end(l.source)?;
            let b = end(l.target)?;
            links.push(Link {
                a,
                b,
                latency_ms: l.latency,
                jitter_ms: l.jitter,
                bandwidth_mbps: l.bandwidth,
            });
        }
        graphs.push(links);
    }
    let global = nodes.nodes.iter().position(|n| n.kind == NodeType::Cloud);
    Schedule::from_parts(
        nodes.nodes,
        graphs,
        DEFAULT_SLOT_MS,
        0,
        global.map(|g| g as u32),
    )
}

/// Skylark's own document format (see [`Schedule::parse`]).
#[derive(Deserialize)]
struct SkylarkDoc {
    slot_ms: Option<u64>,
    slot_secs: Option<f64>,
    epoch_ms: Option<u64>,
    global: Option<String>,
    #[serde(default)]
    nodes: Vec<Value>,
    slots: Option<Vec<Value>>,
    links: Option<Vec<Value>>,
}

/// A node in the Skylark format.
#[derive(Deserialize)]
struct SkylarkNode {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    ip: Option<String>,
    redis: Option<String>,
}

/// A link in the Skylark format.
#[derive(Deserialize)]
struct SkylarkLink {
    source: String,
    target: String,
    latency_ms: f64,
    #[serde(default)]
    jitter_ms: f64,
    bandwidth_mbps: f64,
}

/// Parses Skylark's own format.
fn parse_skylark(doc: &Value) -> Result<Schedule, TopologyError> {
    let doc = SkylarkDoc::deserialize(doc)
        .map_err(|e| TopologyError::at("topology document", e.to_string()))?;
    let slot_ms = slot_length(doc.slot_ms, doc.slot_secs)?;
    let mut nodes = NodeSet::default();
    for (i, v) in doc.nodes.iter().enumerate() {
        let at = format!("node {i}");
        let n = SkylarkNode::deserialize(v).map_err(|e| TopologyError::at(&at, e.to_string()))?;
        let kind = node_type(&n.kind, &n.name, &at)?;
        let node = Node {
            name: n.name,
            kind,
            ip: n.ip,
            redis: n.redis,
        };
        nodes.add(node, &at)?;
    }
    let raw_slots: Vec<Value> = match (doc.slots, doc.links) {
        (Some(_), Some(_)) => {
            return Err(TopologyError::whole(
                "topology document has both `slots` and `links`",
            ))
        }
        (Some(slots), None) => slots,
        (None, Some(links)) => vec![Value::Array(links)],
        (None, None) => {
            return Err(TopologyError::whole(
                "topology document has no `slots` (or `links`)",
            ))
        }
    };
    let mut graphs = Vec::with_capacity(raw_slots.len());
    for (si, raw) in raw_slots.iter().enumerate() {
        let Value::Array(raw) = raw else {
            return Err(TopologyError::at(
                format!("slot {si}"),
                format!("expected an array of links, found {}", json_kind(raw)),
            ));
        };
        graphs.push(skylark_links(&nodes, si, raw)?);
    }
    let global = match doc.global {
        Some(name) => Some(nodes.index.get(&name).copied().ok_or_else(|| {
            TopologyError::whole(format!("global node {name:?} is not among the nodes"))
        })?),
        None => nodes
            .nodes
            .iter()
            .position(|n| n.kind == NodeType::Cloud)
            .map(|g| g as u32),
    };
    Schedule::from_parts(
        nodes.nodes,
        graphs,
        slot_ms,
        doc.epoch_ms.unwrap_or(0),
        global,
    )
}

/// Reads the links of slot `si`, resolving node names.
fn skylark_links(nodes: &NodeSet, si: usize, raw: &[Value]) -> Result<Vec<Link>, TopologyError> {
    let mut links = Vec::with_capacity(raw.len());
    for (li, v) in raw.iter().enumerate() {
        let at = format!("slot {si}, link {li}");
        let l = SkylarkLink::deserialize(v).map_err(|e| TopologyError::at(&at, e.to_string()))?;
        let id = |name: &str| {
            nodes.index.get(name).copied().ok_or_else(|| {
                TopologyError::at(&at, format!("unknown node {name:?} (not in `nodes`)"))
            })
        };
        links.push(Link {
            a: id(&l.source)?,
            b: id(&l.target)?,
            latency_ms: l.latency_ms,
            jitter_ms: l.jitter_ms,
            bandwidth_mbps: l.bandwidth_mbps,
        });
    }
    Ok(links)
}

/// The slot length from `slot_ms` or `slot_secs` (default one minute).
fn slot_length(slot_ms: Option<u64>, slot_secs: Option<f64>) -> Result<u64, TopologyError> {
    match (slot_ms, slot_secs) {
        (Some(_), Some(_)) => Err(TopologyError::whole(
            "give either `slot_ms` or `slot_secs`, not both",
        )),
        (Some(0), None) => Err(TopologyError::whole("slot_ms must be > 0")),
        (Some(ms), None) => Ok(ms),
        (None, Some(secs)) => {
            let ms = (secs * 1000.0).round();
            if secs.is_finite() && ms >= 1.0 && ms < u64::MAX as f64 {
                Ok(ms as u64)
            } else {
                Err(TopologyError::whole(format!(
                    "slot_secs {secs} must be a finite number of at least 0.001"
                )))
            }
        }
        (None, None) => Ok(DEFAULT_SLOT_MS),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use crate::topology::DEFAULT_SLOT_MS;

    #[test]
    fn parses_the_constellation() {
        let s = constellation();
        assert_eq!(s.len(), 8);
        assert_eq!(s.slots(), 7);
        assert_eq!(s.slot_ms(), 60_000);
        assert_eq!(s.epoch_ms(), 0);
        let g = s.global().unwrap();
        assert_eq!(s.node(g).name, "pi5u1");
        assert_eq!(s.node(g).kind, NodeType::Cloud);
        assert_eq!(s.node(g).ip.as_deref(), Some("10.0.0.243"));
        for slot in 0..7 {
            assert_eq!(s.links(slot).len(), 7, "slot {slot}");
        }
        let sats = s.nodes().iter().filter(|n| n.kind == NodeType::Sat);
        assert_eq!(sats.count(), 7);
        assert_eq!(s.digest(), super::super::document_digest(CONSTELLATION));
    }

    #[test]
    fn ground_link_moves_along_the_chain() {
        let s = constellation();
        let cloud = s.id("pi5u1").unwrap();
        let ground = |slot| {
            let mut n: Vec<_> = s.neighbours(slot, cloud).collect();
            assert_eq!(n.len(), 1, "slot {slot}");
            let (sat, l) = n.pop().unwrap();
            assert_eq!((l.latency_ms, l.bandwidth_mbps), (40.0, 30.0));
            s.node(sat).name.clone()
        };
        let order = [
            "pi5u2", "pi5u3", "pi5u4", "pi4u5", "pi4u6", "pi4u8", "pi4p1",
        ];
        for (slot, sat) in order.iter().enumerate() {
            assert_eq!(ground(slot), *sat);
        }
        // Slot 3 joins the cloud to pi4u5, both ways round.
        let pi4u5 = s.id("pi4u5").unwrap();
        assert!(s.link(3, cloud, pi4u5).is_some());
        assert!(s.link(3, pi4u5, cloud).is_some());
        assert!(s.link(2, cloud, pi4u5).is_none());
        let sat_link = s.link(3, s.id("pi5u2").unwrap(), s.id("pi5u3").unwrap());
        assert_eq!(sat_link.unwrap().latency_ms, 10.0);
    }

    #[test]
    fn testbed_array_of_links_is_one_slot() {
        let doc = r#"[{"bandwidth": 90, "latency": 10, "jitter": 9,
            "source": {"node_ip": "10.0.0.1", "node_name": "x", "node_type": "sat"},
            "target": {"node_name": "y", "node_type": "EDGE"}}]"#;
        let s = Schedule::parse(doc.as_bytes()).unwrap();
        assert_eq!((s.len(), s.slots()), (2, 1));
        assert_eq!(s.node(1).kind, NodeType::Edge);
        assert_eq!(s.global(), None);
        assert_eq!(s.link(0, 0, 1).unwrap().jitter_ms, 9.0);
        assert_eq!(s.slot_at(123_456_789), 0);
    }

    const SKYLARK: &str = r#"{
        "slot_secs": 30, "epoch_ms": 1000, "global": "e1", "comment": "ignored",
        "nodes": [
            {"name": "c1", "type": "Cloud", "ip": "10.0.0.243"},
            {"name": "e1", "type": "Edge", "redis": "redis://edge:7000", "extra": 1},
            {"name": "s1", "type": "Sat", "ip": "fd00::1"},
            {"name": "s2", "type": "Sat"}
        ],
        "slots": [
            [ {"source": "s1", "target": "s2", "latency_ms": 10, "jitter_ms": 9, "bandwidth_mbps": 90},
              {"source": "s1", "target": "c1", "latency_ms": 40, "bandwidth_mbps": 30} ],
            []
        ] }"#;

    #[test]
    fn parses_the_skylark_format() {
        let s = Schedule::parse(SKYLARK.as_bytes()).unwrap();
        assert_eq!(
            (s.len(), s.slots(), s.slot_ms(), s.epoch_ms()),
            (4, 2, 30_000, 1000)
        );
        assert_eq!(s.global(), s.id("e1"));
        let (s1, s2, c1) = (
            s.id("s1").unwrap(),
            s.id("s2").unwrap(),
            s.id("c1").unwrap(),
        );
        let l = s.link(0, s2, s1).unwrap();
        assert_eq!(
            (l.latency_ms, l.jitter_ms, l.bandwidth_mbps),
            (10.0, 9.0, 90.0)
        );
        assert_eq!(s.link(0, c1, s1).unwrap().jitter_ms, 0.0);
        assert_eq!(s.neighbours(0, s1).count(), 2);
        assert_eq!(s.neighbours(1, s1).count(), 0, "a fully partitioned slot");
        assert_eq!(s.neighbours(9, s1).count(), 0, "unknown slot");
        assert_eq!(s.slot_at(1000 + 30_000), 1);
        // Redis URLs: explicit, from the IP (v4 and v6), or none.
        assert_eq!(s.redis_url(c1, 6379).unwrap(), "redis://10.0.0.243:6379");
        assert_eq!(
            s.redis_url(s.id("e1").unwrap(), 6379).unwrap(),
            "redis://edge:7000"
        );
        assert_eq!(s.redis_url(s1, 6380).unwrap(), "redis://[fd00::1]:6380");
        assert_eq!(s.redis_url(s2, 6379), None);
        assert_eq!(s.redis_url(99, 6379), None);
        assert_eq!(s.id("nope"), None);
    }

    #[test]
    fn skylark_defaults_and_static_links() {
        let doc = r#"{"nodes": [{"name": "a", "type": "Sat"}, {"name": "b", "type": "Cloud"}],
            "links": [{"source": "a", "target": "b", "latency_ms": 1, "bandwidth_mbps": 2}]}"#;
        let s = Schedule::parse(doc.as_bytes()).unwrap();
        assert_eq!(
            (s.slots(), s.slot_ms(), s.epoch_ms()),
            (1, DEFAULT_SLOT_MS, 0)
        );
        assert_eq!(s.global(), s.id("b"), "first Cloud node");
        let doc = r#"{"slot_ms": 5, "nodes": [{"name": "a", "type": "Sat"}], "slots": [[]]}"#;
        let s = Schedule::parse(doc.as_bytes()).unwrap();
        assert_eq!((s.slot_ms(), s.global()), (5, None));
    }

    #[test]
    fn digest_identifies_the_version() {
        let a = Schedule::parse(SKYLARK.as_bytes()).unwrap();
        let b = Schedule::parse(SKYLARK.replace("\"ignored\"", "\"x\"").as_bytes()).unwrap();
        assert_eq!(
            a.digest(),
            Schedule::parse(SKYLARK.as_bytes()).unwrap().digest()
        );
        assert_ne!(a.digest(), b.digest());
        let p1 = Schedule::from_parts(three_nodes(), vec![vec![]], 1, 0, None).unwrap();
        let p2 = Schedule::from_parts(three_nodes(), vec![vec![]], 2, 0, None).unwrap();
        assert_ne!(p1.digest(), p2.digest());
    }

    #[test]
    fn document_errors() {
        assert_eq!(Schedule::parse(b" ").unwrap_err(), TopologyError::Empty);
        assert!(matches!(
            Schedule::parse(b"{"),
            Err(TopologyError::NotJson(_))
        ));
        assert_eq!(
            Schedule::parse(b"42").unwrap_err(),
            TopologyError::NotADocument { found: "a number" }
        );
        assert!(err("").contains("empty"));
        assert!(err(" \n").contains("empty"));
        assert!(err("{").contains("not valid JSON"));
        assert!(err("42").contains("found a number"));
        assert!(err("[]").contains("no slots"));
        assert!(err("[[]]").contains("no nodes"));
        assert!(err("[[], 3]").contains("slot 1: expected an array of links"));
        assert!(err(r#"{"nodes": [{"name": "a", "type": "Sat"}]}"#).contains("no `slots`"));
        assert!(err(r#"{"nodes": [], "slots": [[]]}"#).contains("no nodes"));
        assert!(
            err(r#"{"nodes": [{"name": "a", "type": "Sat"}], "slots": []}"#).contains("no slots")
        );
        assert!(
            err(r#"{"slot_ms": 0, "nodes": [{"name": "a", "type": "Sat"}], "slots": [[]]}"#)
                .contains("slot_ms must be > 0")
        );
        assert!(
            err(r#"{"slot_secs": 0, "nodes": [{"name": "a", "type": "Sat"}], "slots": [[]]}"#)
                .contains("slot_secs 0")
        );
        assert!(
            err(r#"{"slot_ms": 1, "slot_secs": 1, "nodes": [], "slots": [[]]}"#).contains("either")
        );
        assert!(
            err(r#"{"nodes": [{"name": "a", "type": "Sat"}], "slots": [[]], "links": []}"#)
                .contains("both")
        );
        let e = err(r#"{"global": "zz", "nodes": [{"name": "a", "type": "Sat"}], "slots": [[]]}"#);
        assert!(e.contains("global node \"zz\""), "{e}");
        let e = err(r#"{"nodes": [{"name": "a", "type": "Moon"}], "slots": [[]]}"#);
        assert!(
            e.contains("node 0") && e.contains("unknown type \"Moon\""),
            "{e}"
        );
        let e = err(r#"{"nodes": [{"name": "a"}], "slots": [[]]}"#);
        assert!(e.contains("node 0") && e.contains("type"), "{e}");
    }

    #[test]
    fn link_errors_name_slot_and_link() {
        let nodes = r#""nodes": [{"name": "a", "type": "Sat"}, {"name": "b", "type": "Sat"}]"#;
        let with = |link: &str| err(&format!(r#"{{{nodes}, "slots": [[], [{link}]]}}"#));
        let e = with(r#"{"source": "a", "target": "zz", "latency_ms": 1, "bandwidth_mbps": 1}"#);
        assert!(
            e.contains("slot 1, link 0") && e.contains("unknown node \"zz\""),
            "{e}"
        );
        let e = with(r#"{"source": "a", "target": "b", "latency_ms": -1, "bandwidth_mbps": 1}"#);
        assert!(
            e.contains("slot 1, link 0 (a - b)") && e.contains("latency -1"),
            "{e}"
        );
        let e = with(r#"{"source": "a", "target": "b", "latency_ms": 1, "bandwidth_mbps": 0}"#);
        assert!(
            e.contains("slot 1, link 0 (a - b)") && e.contains("bandwidth 0"),
            "{e}"
        );
        let e = with(
            r#"{"source": "a", "target": "b", "latency_ms": 1, "jitter_ms": -2, "bandwidth_mbps": 1}"#,
        );
        assert!(e.contains("jitter -2"), "{e}");
        let e = with(r#"{"source": "a", "target": "a", "latency_ms": 1, "bandwidth_mbps": 1}"#);
        assert!(e.contains("two different nodes"), "{e}");
        let e = with(r#"{"source": "a", "target": "b", "bandwidth_mbps": 1}"#);
        assert!(
            e.contains("slot 1, link 0") && e.contains("latency_ms"),
            "{e}"
        );
        let l = r#"{"source": "a", "target": "b", "latency_ms": 1, "bandwidth_mbps": 1}"#;
        let r = r#"{"source": "b", "target": "a", "latency_ms": 2, "bandwidth_mbps": 1}"#;
        let e = with(&format!("{l}, {r}"));
        assert!(
            e.contains("slot 1, link 1 (b - a)") && e.contains("duplicates link 0"),
            "{e}"
        );
    }

    #[test]
    fn node_errors() {
        // Conflicting duplicates, in both formats.
        let e = err(
            r#"{"nodes": [{"name": "a", "type": "Sat"}, {"name": "a", "type": "Edge"}],
            "slots": [[]]}"#,
        );
        assert!(
            e.contains("node 1") && e.contains("type Edge here but Sat"),
            "{e}"
        );
        let e = err(r#"{"nodes": [{"name": "a", "type": "Sat", "ip": "1.1.1.1"},
            {"name": "a", "type": "sat", "ip": "2.2.2.2"}], "slots": [[]]}"#);
        assert!(e.contains("ip \"2.2.2.2\" here but \"1.1.1.1\""), "{e}");
        // Two Redis URLs for one node: the message is logged and published, so the
        // passwords in them are not shown (issue 16 point 6).
        let e = err(
            r#"{"nodes": [{"name": "a", "type": "Sat", "redis": "redis://u:first-pw@h:1"},
            {"name": "a", "type": "Sat", "redis": "redis://:second-pw@h:2/0?password=third-pw"}],
            "slots": [[]]}"#,
        );
        assert!(!e.contains("-pw"), "{e}");
        assert!(
            e.contains("redis \"redis://:***@h:2/0?password=***\" here but \"redis://u:***@h:1\""),
            "{e}"
        );
        let ok = r#"{"nodes": [{"name": "a", "type": "Sat"}, {"name": "a", "type": "SAT",
            "ip": "1.1.1.1"}], "slots": [[]]}"#;
        let s = Schedule::parse(ok.as_bytes()).unwrap();
        assert_eq!((s.len(), s.node(0).ip.as_deref()), (1, Some("1.1.1.1")));
        let e = err(r#"[[{"bandwidth": 1, "latency": 1,
            "source": {"node_name": "x", "node_type": "Sat", "node_ip": "1"},
            "target": {"node_name": "y", "node_type": "Sat"}}],
            [{"bandwidth": 1, "latency": 1,
            "source": {"node_name": "x", "node_type": "Cloud"},
            "target": {"node_name": "y", "node_type": "Sat"}}]]"#);
        assert!(
            e.contains("slot 1, link 0") && e.contains("type Cloud here but Sat"),
            "{e}"
        );
        // Names must be ids.
        let e = err(r#"{"nodes": [{"name": "a b", "type": "Sat"}], "slots": [[]]}"#);
        assert!(e.contains("node 0: name \"a b\" has byte 0x20"), "{e}");
        let e = err(r#"{"nodes": [{"name": "", "type": "Sat"}], "slots": [[]]}"#);
        assert!(e.contains("is empty"), "{e}");
        let long = "n".repeat(129);
        let e = err(&format!(
            r#"{{"nodes": [{{"name": "{long}", "type": "Sat"}}], "slots": [[]]}}"#
        ));
        assert!(e.contains("129 bytes"), "{e}");
        // Store addresses must be Redis URLs.
        let e = err(
            r#"{"nodes": [{"name": "a", "type": "Sat", "redis": "http://a:1"}],
            "slots": [[]]}"#,
        );
        assert!(e.contains("node 0 (a): redis"), "{e}");
        let ok = r#"{"nodes": [{"name": "a", "type": "Sat", "redis": "unix:///run/r.sock"}],
            "slots": [[]]}"#;
        assert!(Schedule::parse(ok.as_bytes()).is_ok());
    }
}
