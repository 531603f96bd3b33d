//! MessagePack wire format of bundles and call options (rmp-serde, structs as maps).
//!
//! A bundle as delivered to the guest:
//! `{"chain": str, "source": {"tier": "local"|"neighbour"|"global", "node": str},
//!   "fields": {task_id: bin, ...}}`.
//! Structs are encoded as maps with named keys so that either side may add optional keys
//! later; unknown keys are ignored when decoding.

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
}

/// Borrowed form used by the host to encode a bundle without copying values.
#[derive(Serialize)]
struct BundleRef<'a> {
    chain: &'a str,
    source: &'a Source,
    fields: BTreeMap<&'a str, &'a Bytes>,
}

/// Options of `skylark_put` / `skylark_put_many`. An empty options blob means defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct PutOptions {}

/// Options of `skylark_get_bundle`. An empty options blob means defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct GetOptions {}

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
    let fields = fields
        .into_iter()
        .map(|(k, v)| (k, Bytes::new(v)))
        .collect();
    rmp_serde::to_vec_named(&BundleRef {
        chain,
        source,
        fields,
    })
    .map_err(|e| WireError(format!("encoding bundle: {e}")))
}

/// Decodes a bundle produced by [`encode_bundle`].
pub fn decode_bundle(bytes: &[u8]) -> Result<Bundle, WireError> {
    rmp_serde::from_slice(bytes).map_err(|e| WireError(format!("decoding bundle: {e}")))
}

/// Encodes call options. Defaults encode to an empty map.
pub fn encode_options<T: Serialize>(opts: &T) -> Result<Vec<u8>, WireError> {
    rmp_serde::to_vec_named(opts).map_err(|e| WireError(format!("encoding options: {e}")))
}

/// Decodes call options; an empty blob yields the defaults.
pub fn decode_options<T: serde::de::DeserializeOwned + Default>(
    bytes: &[u8],
) -> Result<T, WireError> {
    if bytes.is_empty() {
        return Ok(T::default());
    }
    rmp_serde::from_slice(bytes).map_err(|e| WireError(format!("decoding options: {e}")))
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
        assert_eq!(decode_options::<PutOptions>(&[]).unwrap(), PutOptions {});
        let enc = encode_options(&PutOptions {}).unwrap();
        assert_eq!(enc, vec![0x80]); // empty map
        assert_eq!(decode_options::<GetOptions>(&enc).unwrap(), GetOptions {});
        assert!(decode_options::<PutOptions>(&[0xc1]).is_err()); // never-used marker
        assert!(decode_bundle(b"not msgpack at all").is_err());
    }
}
