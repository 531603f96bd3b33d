//! MessagePack wire format of bundles and call options (rmp-serde, structs as maps).
//!
//! A bundle as delivered to the guest:
//! `{"chain": str, "source": {"tier": "local"|"neighbour"|"global", "node": str},
//!   "fields": {task_id: bin, ...}, "placement": {task_id: node, ...},
//!   "versions": {task_id: uint, ...}}` (the last two absent when empty).
//! Structs are encoded as maps with named keys so that either side may add optional keys
//! later; unknown keys are ignored when decoding.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Unexpected, Visitor};
use serde::{Deserialize, Serialize};
use serde_bytes::{ByteBuf, Bytes};
use std::collections::BTreeMap;

/// Where a bundle was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The node-local store.
    #[default]
    Local,
    /// A neighbouring node's store.
    Neighbour,
    /// The global (cloud) store.
    Global,
}

/// The store a bundle came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Source {
    pub tier: Tier,
    /// Name of the node whose store answered.
    pub node: String,
}

/// A decoded bundle: all state of one chain, one field per task.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
pub struct Bundle {
    pub chain: String,
    #[serde(default)]
    pub source: Source,
    pub fields: BTreeMap<String, ByteBuf>,
    /// Where puts placed their copies: task id to the node elected for it (absent
    /// for tasks whose propagation has not finished, or for older hosts).
    #[serde(default)]
    pub placement: BTreeMap<String, String>,
    /// Each field's version as held by the store that answered (absent for older hosts,
    /// and for fields written before versions existed).
    #[serde(default)]
    pub versions: BTreeMap<String, u64>,
}

/// Borrowed form used by the host to encode a bundle without copying values.
#[derive(Serialize)]
struct BundleRef<'a> {
    chain: &'a str,
    source: &'a Source,
    fields: BTreeMap<&'a str, &'a Bytes>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    placement: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    versions: BTreeMap<&'a str, u64>,
}

/// Storage-node election policy (see the model: where a put's state should go).
/// Serialized as its lowercase name; deserialized only from that name (see the
/// `Deserialize` impl).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// SLO-aware: the node nearest the destination whose migration still meets the SLO.
    Skylark,
    /// A uniformly random node on the path to the destination (baseline).
    Random,
    /// The global store only (the cloud-native baseline); reads skip local and neighbours.
    Stateless,
    /// Keep the state on this node (plus the global copy); no election.
    Local,
}

impl Policy {
    /// Every policy, in documentation order.
    pub const ALL: [Policy; 4] = [
        Policy::Skylark,
        Policy::Random,
        Policy::Stateless,
        Policy::Local,
    ];

    /// The lowercase name used in options and configuration.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Skylark => "skylark",
            Policy::Random => "random",
            Policy::Stateless => "stateless",
            Policy::Local => "local",
        }
    }

    /// Parses a lowercase name.
    pub fn parse(s: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// A policy is its name, a string. The derived impl would also take a variant index
/// (`policy: 2` meaning `stateless`) or a map `{"skylark": nil}`, neither of which the
/// ABI allows (RELIABILITY.md, section 1; `fuzz/regressions/options/` keeps both out).
impl<'de> Deserialize<'de> for Policy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Policy, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Policy;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a policy name: skylark, random, stateless or local")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Policy, E> {
                Policy::parse(s).ok_or_else(|| E::invalid_value(Unexpected::Str(s), &self))
            }

            fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<Policy, E> {
                std::str::from_utf8(b)
                    .ok()
                    .and_then(Policy::parse)
                    .ok_or_else(|| E::invalid_value(Unexpected::Bytes(b), &self))
            }
        }
        d.deserialize_str(Name)
    }
}

/// Options of `skylark_put` / `skylark_put_many`. An empty options blob means defaults;
/// every absent key takes the node's configured default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct PutOptions {
    /// Node where the successor (or the workflow's end) is expected to run. Default: the
    /// global store's node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Election policy for this put.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// SLO: the step's latency budget in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<u64>,
    /// SLO: the least bottleneck bandwidth (Mbit/s) a path to the elected node may have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_bandwidth_mbps: Option<f64>,
    /// How long the producer has run so far, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec_ms: Option<u64>,
    /// When the successor is expected to start, in milliseconds from now; election uses
    /// the topology valid then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub successor_in_ms: Option<u64>,
    /// Once this put's copies are stored, delete the chain's copies on the nodes that
    /// earlier puts placed them on (other than this put's targets).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cleanup: bool,
    /// Compare-and-swap (ABI version 2): every field of the call must hold exactly this
    /// version on the node that accepts the put (0: no version, i.e. absent), else the put
    /// writes nothing and answers `ConditionFailed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub if_version: Option<u64>,
    /// (ABI version 2) None of the call's fields may exist on the node that accepts the
    /// put, else `ConditionFailed`. Together with `if_version`: `InvalidOptions`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub if_absent: bool,
    /// (ABI version 2) A key (id rules) that makes the put idempotent: repeating it with
    /// the same fields and bytes is acknowledged with the first put's versions, without a
    /// new version or propagation job; the same key with other fields or bytes is
    /// `IdempotencyConflict`. Kept with the bundle on the node that accepted the put.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Several successors' nodes (a fan-out): the state is placed for each of them, one
    /// copy per distinct elected node. At most [`MAX_DESTINATIONS`]; together with
    /// `destination`: `InvalidOptions`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<String>,
}

/// How `skylark_get_bundle` lays a bundle out in guest memory (get option `layout`, ABI
/// version 2). Serialized as its name; deserialized only from that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// The MessagePack map of "Bundle encoding" (ABI.md); the only layout of version 1.
    #[default]
    Msgpack,
    /// The table layout of [`crate::table`]: fields read in place, no decoding.
    Table,
}

impl Layout {
    /// The name used in options.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Msgpack => "msgpack",
            Layout::Table => "table",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Layout> {
        [Layout::Msgpack, Layout::Table]
            .into_iter()
            .find(|l| l.name() == s)
    }
}

/// A layout is its name, a string (as [`Policy`]).
impl<'de> Deserialize<'de> for Layout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Layout, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Layout;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a bundle layout: msgpack or table")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Layout, E> {
                Layout::parse(s).ok_or_else(|| E::invalid_value(Unexpected::Str(s), &self))
            }

            fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<Layout, E> {
                std::str::from_utf8(b)
                    .ok()
                    .and_then(Layout::parse)
                    .ok_or_else(|| E::invalid_value(Unexpected::Bytes(b), &self))
            }
        }
        d.deserialize_str(Name)
    }
}

/// Options of `skylark_get_bundle`. An empty options blob means defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct GetOptions {
    /// Read policy; `stateless` reads only the global store. Default: the node's policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// A node known to hold the bundle (e.g. from a bundle's placement record); tried
    /// right after the node-local store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Only the node-local store: no neighbours, no global store.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub local_only: bool,
    /// Task ids the caller needs. A bundle lacking one of them is not a hit: the host
    /// keeps looking (a copy on its way to this node, the other tiers) for a bounded
    /// time, then returns the most complete bundle it found. At most [`MAX_REQUIRE`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub require: Vec<String>,
    /// Task ids to wait for: the host returns as soon as every one of them is readable
    /// in the store the get reads first (the node-local store; the global store for
    /// policy `stateless`), or with status `TimedOut` and the fields present so far when
    /// `wait_ms` has passed. At most [`MAX_REQUIRE`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wait_for: Vec<String>,
    /// Deadline of `wait_for` in milliseconds (default and cap: the node's
    /// `SKYLARK_WAIT_MS` and `SKYLARK_MAX_WAIT_MS`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// How the bundle is laid out in the guest's buffer (ABI version 2; default
    /// [`Layout::Msgpack`]). A host older than this option ignores it and answers in
    /// MessagePack: a reader tells the two apart by [`crate::table::MAGIC`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
}

/// Most task ids a get's `require` (or `wait_for`) may list (more: `InvalidOptions`).
pub const MAX_REQUIRE: usize = 1024;

/// Most nodes a put's `destinations` may list (more: `InvalidOptions`).
pub const MAX_DESTINATIONS: usize = 16;

/// A wire encoding or decoding failure.
#[derive(Debug)]
pub struct WireError(String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

/// Encodes a bundle from borrowed field names and values. Later duplicates of a name win.
pub fn encode_bundle<'a, I>(chain: &str, source: &Source, fields: I) -> Result<Vec<u8>, WireError>
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    encode_bundle_placed(chain, source, fields, std::iter::empty())
}

/// Like [`encode_bundle_placed`], with each field's version (task id, version).
pub fn encode_bundle_versioned<'a, I, P, V>(
    chain: &str,
    source: &Source,
    fields: I,
    placement: P,
    versions: V,
) -> Result<Vec<u8>, WireError>
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
    P: IntoIterator<Item = (&'a str, &'a str)>,
    V: IntoIterator<Item = (&'a str, u64)>,
{
    let fields: BTreeMap<&str, &Bytes> = fields
        .into_iter()
        .map(|(k, v)| (k, Bytes::new(v)))
        .collect();
    let bundle = BundleRef {
        chain,
        source,
        fields,
        placement: placement.into_iter().collect(),
        versions: versions.into_iter().collect(),
    };
    // Sized up front (names, values and a few header bytes each, plus the small rest): a
    // large bundle is written once instead of through a growing buffer's copies.
    let per_field = |k: &str| k.len() + 16;
    let estimate = 128
        + chain.len()
        + source.node.len()
        + bundle
            .fields
            .iter()
            .map(|(k, v)| per_field(k) + v.len())
            .sum::<usize>()
        + bundle
            .placement
            .iter()
            .map(|(t, n)| per_field(t) + n.len())
            .sum::<usize>()
        + bundle.versions.keys().map(|t| per_field(t)).sum::<usize>();
    let mut out = Vec::with_capacity(estimate);
    rmp_serde::encode::write_named(&mut out, &bundle)
        .map_err(|e| WireError(format!("encoding bundle: {e}")))?;
    Ok(out)
}

/// Like [`encode_bundle`], with the placement record (task id, node) of the chain.
pub fn encode_bundle_placed<'a, I, P>(
    chain: &str,
    source: &Source,
    fields: I,
    placement: P,
) -> Result<Vec<u8>, WireError>
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
    P: IntoIterator<Item = (&'a str, &'a str)>,
{
    encode_bundle_versioned(chain, source, fields, placement, std::iter::empty())
}

/// Decodes a bundle produced by [`encode_bundle`].
pub fn decode_bundle(bytes: &[u8]) -> Result<Bundle, WireError> {
    rmp_serde::from_slice(bytes).map_err(|e| WireError(format!("decoding bundle: {e}")))
}

/// Encodes call options. Defaults encode to an empty map.
pub fn encode_options<T: Serialize>(opts: &T) -> Result<Vec<u8>, WireError> {
    rmp_serde::to_vec_named(opts).map_err(|e| WireError(format!("encoding options: {e}")))
}

/// Decodes call options; an empty blob yields the defaults. Anything else must be exactly
/// one MessagePack map with string keys: serde alone would also take an array (fields
/// by position), integer keys (fields by index) and bytes after the map, none of which
/// the ABI allows (RELIABILITY.md, section 1; `fuzz/regressions/options/`).
pub fn decode_options<T: serde::de::DeserializeOwned + Default>(
    bytes: &[u8],
) -> Result<T, WireError> {
    if bytes.is_empty() {
        return Ok(T::default());
    }
    let fail = |e: &dyn std::fmt::Display| WireError(format!("decoding options: {e}"));
    let mut shape = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    OptionsMap::deserialize(&mut shape).map_err(|e| fail(&e))?;
    let after = (bytes.len() as u64).saturating_sub(shape.position());
    if after > 0 {
        return Err(fail(&format_args!("{after} bytes after the options map")));
    }
    rmp_serde::from_slice(bytes).map_err(|e| fail(&e))
}

/// The shape every options blob must have: a map with string keys (values unchecked).
struct OptionsMap;

impl<'de> Deserialize<'de> for OptionsMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<OptionsMap, D::Error> {
        struct Map;
        impl<'de> Visitor<'de> for Map {
            type Value = OptionsMap;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of options with string keys")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<OptionsMap, A::Error> {
                while m.next_key::<OptionName>()?.is_some() {
                    m.next_value::<IgnoredAny>()?;
                }
                Ok(OptionsMap)
            }
        }
        d.deserialize_map(Map)
    }
}

/// A key of an options map: a string (MessagePack `str`, or `bin` holding UTF-8).
struct OptionName;

impl<'de> Deserialize<'de> for OptionName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<OptionName, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = OptionName;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an option name (a string)")
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<OptionName, E> {
                Ok(OptionName)
            }

            fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<OptionName, E> {
                std::str::from_utf8(b)
                    .map(|_| OptionName)
                    .map_err(|_| E::invalid_value(Unexpected::Bytes(b), &self))
            }
        }
        d.deserialize_str(Name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_round_trips_binary_values() {
        let big = vec![0xABu8; 70_000];
        let src = Source {
            tier: Tier::Neighbour,
            node: "pi5u3".into(),
        };
        let enc = encode_bundle(
            "c1",
            &src,
            [("preprocess", &b"\x00\xff raw"[..]), ("detect", &big[..])],
        )
        .unwrap();
        let b = decode_bundle(&enc).unwrap();
        assert_eq!(b.chain, "c1");
        assert_eq!(b.source, src);
        assert_eq!(b.fields.len(), 2);
        assert_eq!(b.fields["preprocess"].as_ref(), b"\x00\xff raw");
        assert_eq!(b.fields["detect"].len(), 70_000);
    }

    #[test]
    fn values_are_msgpack_bin_not_arrays() {
        // bin32 header 0xc6 for a 70,000-byte value: one byte per byte, no per-element tags.
        let v = vec![7u8; 70_000];
        let enc = encode_bundle("c", &Source::default(), [("t", &v[..])]).unwrap();
        assert!(enc.len() < 70_000 + 64, "encoded {} bytes", enc.len());
    }

    #[test]
    fn empty_bundle_and_unknown_keys() {
        let enc = encode_bundle("c", &Source::default(), std::iter::empty()).unwrap();
        assert!(decode_bundle(&enc).unwrap().fields.is_empty());
        // A newer host may add keys; an older guest ignores them.
        #[derive(Serialize)]
        struct Newer<'a> {
            chain: &'a str,
            fields: BTreeMap<&'a str, &'a Bytes>,
            hops: u32,
        }
        let enc = rmp_serde::to_vec_named(&Newer {
            chain: "c",
            fields: BTreeMap::new(),
            hops: 3,
        })
        .unwrap();
        assert_eq!(decode_bundle(&enc).unwrap().source.tier, Tier::Local);
    }

    #[test]
    fn options_default_on_empty_and_reject_garbage() {
        assert_eq!(
            decode_options::<PutOptions>(&[]).unwrap(),
            PutOptions::default()
        );
        let enc = encode_options(&PutOptions::default()).unwrap();
        assert_eq!(enc, vec![0x80]); // empty map
        assert_eq!(
            decode_options::<GetOptions>(&enc).unwrap(),
            GetOptions::default()
        );
        assert!(decode_options::<PutOptions>(&[0xc1]).is_err()); // never-used marker
        assert!(decode_bundle(b"not msgpack at all").is_err());
    }

    #[test]
    fn put_options_round_trip_and_policy_names() {
        let o = PutOptions {
            destination: Some("pi5u1".into()),
            policy: Some(Policy::Random),
            max_latency_ms: Some(250),
            min_bandwidth_mbps: Some(30.5),
            exec_ms: Some(12),
            successor_in_ms: Some(60_000),
            cleanup: true,
            if_version: Some(1_764_300_000_000_001),
            if_absent: false,
            idempotency_key: Some("invocation-7".into()),
            destinations: vec!["pi4u5".into(), "pi4u6".into()],
        };
        let back: PutOptions = decode_options(&encode_options(&o).unwrap()).unwrap();
        assert_eq!(back, o);
        for p in Policy::ALL {
            assert_eq!(Policy::parse(p.name()), Some(p));
        }
        assert_eq!(Policy::parse("Skylark"), None);
        // A policy name the host does not know is an error, not a silent default.
        #[derive(Serialize)]
        struct Bad {
            policy: &'static str,
        }
        let enc = encode_options(&Bad { policy: "fastest" }).unwrap();
        assert!(decode_options::<PutOptions>(&enc).is_err());
    }

    #[test]
    fn options_are_exactly_one_map_with_string_keys() {
        // RELIABILITY.md, section 1; fuzz/regressions/options/ has the inputs.
        let dest = [0x91, 0xa5, b'p', b'i', b'5', b'u', b'1']; // ["pi5u1"]
        assert!(decode_options::<PutOptions>(&dest).is_err(), "array");
        assert!(
            decode_options::<PutOptions>(&[0x80, 0xc0]).is_err(),
            "trailing byte"
        );
        assert!(
            decode_options::<PutOptions>(&[0x81, 0x06, 0xc3]).is_err(),
            "integer key"
        );
        let mut policy = vec![0x81, 0xa6];
        policy.extend(b"policy");
        for bad in [
            &[0x02][..],
            &[0x81, 0xa5, b'l', b'o', b'c', b'a', b'l', 0xc0],
        ] {
            let mut blob = policy.clone();
            blob.extend(bad);
            assert!(decode_options::<PutOptions>(&blob).is_err(), "{blob:02x?}");
        }
        // Still accepted: str or bin names, unknown keys with any value, nil = absent.
        let mut ok = vec![0x83, 0xc4, 6];
        ok.extend(b"policy");
        ok.extend([0xa5]);
        ok.extend(b"local");
        ok.extend([0xa3, b'n', b'e', b'w', 0x92, 0xd4, 1, 2, 0x80, 0xa7]);
        ok.extend(b"exec_ms");
        ok.push(0xc0);
        let o: PutOptions = decode_options(&ok).unwrap();
        assert_eq!((o.policy, o.exec_ms), (Some(Policy::Local), None));
    }

    #[test]
    fn placement_round_trips() {
        let enc = encode_bundle_placed(
            "c",
            &Source::default(),
            [("t", &b"v"[..])],
            [("t", "pi5u3")],
        )
        .unwrap();
        let b = decode_bundle(&enc).unwrap();
        assert_eq!(b.placement.get("t").map(String::as_str), Some("pi5u3"));
        assert!(b.versions.is_empty());
    }

    #[test]
    fn versions_round_trip_and_are_absent_when_empty() {
        let enc = encode_bundle_versioned(
            "c",
            &Source::default(),
            [("t", &b"v"[..]), ("u", &b"w"[..])],
            std::iter::empty(),
            [("t", 1_764_300_000_000_001), ("u", 7)],
        )
        .unwrap();
        let b = decode_bundle(&enc).unwrap();
        assert_eq!(b.versions.get("t"), Some(&1_764_300_000_000_001));
        assert_eq!(b.versions.get("u"), Some(&7));
        let plain = encode_bundle("c", &Source::default(), [("t", &b"v"[..])]).unwrap();
        assert!(!plain.windows(8).any(|w| w == b"versions"));
    }

    #[test]
    fn wait_options_round_trip() {
        let o = GetOptions {
            wait_for: vec!["a".into(), "b".into()],
            wait_ms: Some(250),
            ..GetOptions::default()
        };
        let back: GetOptions = decode_options(&encode_options(&o).unwrap()).unwrap();
        assert_eq!(back, o);
    }
}
