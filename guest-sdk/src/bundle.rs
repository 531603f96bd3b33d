//! [`Bundle`]: read access to all state of one chain as delivered by `skylark_get_bundle`,
//! either decoded from MessagePack or read in place from the table layout
//! (`skylark_abi::table`), whose field values it hands out as slices of the one buffer
//! the host wrote them into.

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;
use skylark_abi::table::{self, FieldAt, View};
use skylark_abi::wire::{self, Source};
use skylark_abi::Status;
use std::collections::{btree_map, BTreeMap};
use std::sync::OnceLock;

/// All state of one chain: one field (raw bytes) per task that wrote to it, plus where the
/// host found it.
///
/// Obtained from [`get_bundle`](crate::get_bundle) / [`try_get_bundle`](crate::try_get_bundle),
/// or decoded from wire bytes with [`Bundle::decode`]. Two bundles are equal when their
/// chain, source, fields, placement and versions are, whichever layout they came in.
#[derive(Debug, Clone, Default)]
pub struct Bundle {
    repr: Repr,
}

#[derive(Debug, Clone)]
enum Repr {
    Wire(wire::Bundle),
    Table(Table),
}

impl Default for Repr {
    fn default() -> Self {
        Repr::Wire(wire::Bundle::default())
    }
}

/// A bundle in the table layout: the buffer the host wrote and its checked tables.
#[derive(Clone)]
struct Table {
    bytes: Vec<u8>,
    view: View,
    chain: String,
    source: Source,
    placement: BTreeMap<String, String>,
    /// The decoded structure, built on the first [`Bundle::as_wire`] only.
    wire: OnceLock<wire::Bundle>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("chain", &self.chain)
            .field("source", &self.source)
            .field("fields", &self.view.fields.len())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl Table {
    fn parse(bytes: Vec<u8>) -> std::result::Result<Table, table::Invalid> {
        let view = View::parse(&bytes)?;
        let text = |s: &table::Span| String::from_utf8_lossy(&bytes[s.clone()]).into_owned();
        let chain = text(&view.chain);
        let source = view.source(&bytes);
        let placement = view
            .placement
            .iter()
            .map(|(t, n)| (text(t), text(n)))
            .collect();
        Ok(Table {
            bytes,
            view,
            chain,
            source,
            placement,
            wire: OnceLock::new(),
        })
    }

    fn field(&self, task: &str) -> Option<&FieldAt> {
        self.view
            .find(&self.bytes, task.as_bytes())
            .and_then(|i| self.view.fields.get(i))
    }

    fn name(&self, f: &FieldAt) -> &str {
        // Checked to be UTF-8 by `View::parse`.
        std::str::from_utf8(&self.bytes[f.name.clone()]).unwrap_or_default()
    }

    fn to_wire(&self) -> wire::Bundle {
        let fields = self.view.fields.iter();
        wire::Bundle {
            chain: self.chain.clone(),
            source: self.source.clone(),
            fields: fields
                .clone()
                .map(|f| {
                    let v = ByteBuf::from(self.bytes[f.value.clone()].to_vec());
                    (self.name(f).to_string(), v)
                })
                .collect(),
            placement: self.placement.clone(),
            versions: fields
                .filter(|f| f.version != 0)
                .map(|f| (self.name(f).to_string(), f.version))
                .collect(),
        }
    }
}

impl Bundle {
    /// Decodes a bundle from its MessagePack wire encoding or its table layout (see
    /// `ABI.md`), copying the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Bundle> {
        if table::is_table(bytes) {
            return Bundle::from_bytes(bytes.to_vec());
        }
        wire::decode_bundle(bytes)
            .map(Bundle::from)
            .map_err(|e| Error::new(Status::Internal, format!("undecodable bundle: {e}")))
    }

    /// Like [`Bundle::decode`], keeping `bytes` as the bundle's storage when they are the
    /// table layout (the field values are then slices of it: nothing is copied).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Bundle> {
        if !table::is_table(&bytes) {
            return Bundle::decode(&bytes);
        }
        Table::parse(bytes)
            .map(|t| Bundle {
                repr: Repr::Table(t),
            })
            .map_err(|e| Error::new(Status::Internal, format!("undecodable bundle: {e}")))
    }

    /// The chain id this bundle belongs to.
    pub fn chain(&self) -> &str {
        match &self.repr {
            Repr::Wire(w) => &w.chain,
            Repr::Table(t) => &t.chain,
        }
    }

    /// Which store tier and node answered.
    pub fn source(&self) -> &Source {
        match &self.repr {
            Repr::Wire(w) => &w.source,
            Repr::Table(t) => &t.source,
        }
    }

    fn placement_map(&self) -> &BTreeMap<String, String> {
        match &self.repr {
            Repr::Wire(w) => &w.placement,
            Repr::Table(t) => &t.placement,
        }
    }

    /// The node a put of `task` placed its copy on (its elected node), once the host
    /// finished propagating it; a consumer can pass it as [`GetOptions::from`](crate::GetOptions).
    pub fn placement(&self, task: &str) -> Option<&str> {
        self.placement_map().get(task).map(String::as_str)
    }

    /// The whole placement record as `(task, node)`, in ascending task-id order.
    pub fn placements(&self) -> impl Iterator<Item = (&str, &str)> {
        self.placement_map()
            .iter()
            .map(|(t, n)| (t.as_str(), n.as_str()))
    }

    /// The version of `task`'s field as held by the store that answered (assigned by the
    /// node that accepted its put; it grows with every put of the task). `None` for a
    /// task without a field, from a host older than ABI version 2, or written before
    /// versions existed.
    pub fn version(&self, task: &str) -> Option<u64> {
        match &self.repr {
            Repr::Wire(w) => w.versions.get(task).copied(),
            Repr::Table(t) => t.field(task).map(|f| f.version).filter(|v| *v != 0),
        }
    }

    /// The raw bytes task `task` stored, if it did.
    pub fn get(&self, task: &str) -> Option<&[u8]> {
        match &self.repr {
            Repr::Wire(w) => w.fields.get(task).map(|v| v.as_slice()),
            Repr::Table(t) => t.field(task).map(|f| &t.bytes[f.value.clone()]),
        }
    }

    /// Decodes the field of `task` as MessagePack (written by
    /// [`put_value`](crate::put_value)). `Ok(None)` if the task stored nothing; an error with
    /// status `StoreError` if the bytes do not decode as `T`.
    pub fn load<T: DeserializeOwned>(&self, task: &str) -> Result<Option<T>> {
        match self.get(task) {
            None => Ok(None),
            Some(bytes) => rmp_serde::from_slice(bytes).map(Some).map_err(|e| {
                Error::new(
                    Status::StoreError,
                    format!(
                        "field {task:?} of chain {:?} ({} bytes) does not decode as {}: {e}",
                        self.chain(),
                        bytes.len(),
                        std::any::type_name::<T>()
                    ),
                )
            }),
        }
    }

    /// True if task `task` stored a field.
    pub fn contains(&self, task: &str) -> bool {
        self.get(task).is_some()
    }

    /// Number of fields (tasks that stored state).
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Wire(w) => w.fields.len(),
            Repr::Table(t) => t.view.fields.len(),
        }
    }

    /// True if the bundle has no field.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The fields as `(task, bytes)`, in ascending task-id order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            inner: match &self.repr {
                Repr::Wire(w) => Inner::Wire(w.fields.iter()),
                Repr::Table(t) => Inner::Table(t, t.view.fields.iter()),
            },
        }
    }

    /// The task ids, in ascending order.
    pub fn tasks(&self) -> impl Iterator<Item = &str> + '_ {
        self.iter().map(|(t, _)| t)
    }

    /// Total size of all field values in bytes.
    pub fn value_bytes(&self) -> usize {
        self.iter().map(|(_, v)| v.len()).sum()
    }

    /// The decoded wire structure (for a bundle in the table layout, built, with a copy of
    /// every value, on the first call).
    pub fn as_wire(&self) -> &wire::Bundle {
        match &self.repr {
            Repr::Wire(w) => w,
            Repr::Table(t) => t.wire.get_or_init(|| t.to_wire()),
        }
    }

    /// Unwraps into the decoded wire structure (to take ownership of field values).
    pub fn into_wire(self) -> wire::Bundle {
        match self.repr {
            Repr::Wire(w) => w,
            Repr::Table(mut t) => t.wire.take().unwrap_or_else(|| t.to_wire()),
        }
    }

    fn versions(&self) -> impl Iterator<Item = (&str, u64)> {
        self.tasks()
            .filter_map(move |t| self.version(t).map(|v| (t, v)))
    }
}

impl PartialEq for Bundle {
    fn eq(&self, other: &Bundle) -> bool {
        self.chain() == other.chain()
            && self.source() == other.source()
            && self.iter().eq(other.iter())
            && self.placements().eq(other.placements())
            && self.versions().eq(other.versions())
    }
}

impl Eq for Bundle {}

impl From<wire::Bundle> for Bundle {
    fn from(inner: wire::Bundle) -> Self {
        Bundle {
            repr: Repr::Wire(inner),
        }
    }
}

/// Iterator over a bundle's `(task, bytes)` pairs in task order; see [`Bundle::iter`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    inner: Inner<'a>,
}

#[derive(Debug, Clone)]
enum Inner<'a> {
    Wire(btree_map::Iter<'a, String, ByteBuf>),
    Table(&'a Table, std::slice::Iter<'a, FieldAt>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Wire(i) => i.next().map(|(k, v)| (k.as_str(), v.as_slice())),
            Inner::Table(t, i) => i.next().map(|f| (t.name(f), &t.bytes[f.value.clone()])),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.inner {
            Inner::Wire(i) => i.size_hint(),
            Inner::Table(_, i) => i.size_hint(),
        }
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Bundle {
    type Item = (&'a str, &'a [u8]);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use skylark_abi::wire::{encode_bundle, Tier};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Detections {
        count: u32,
        boxes: Vec<(u32, u32, u32, u32)>,
    }

    fn sample() -> Bundle {
        let det = rmp_serde::to_vec_named(&Detections {
            count: 1,
            boxes: vec![(1, 2, 3, 4)],
        })
        .unwrap();
        let src = Source {
            tier: Tier::Neighbour,
            node: "sat3".into(),
        };
        let img = [0u8, 255, 7];
        let enc = encode_bundle(
            "c-1",
            &src,
            [("preprocess", &img[..]), ("detect", &det[..])],
        )
        .unwrap();
        Bundle::decode(&enc).unwrap()
    }

    #[test]
    fn accessors() {
        let b = sample();
        assert_eq!(b.chain(), "c-1");
        assert_eq!(b.source().tier, Tier::Neighbour);
        assert_eq!(b.source().node, "sat3");
        assert_eq!(b.len(), 2);
        assert!(!b.is_empty());
        assert!(b.contains("preprocess"));
        assert!(!b.contains("alarm"));
        assert_eq!(b.get("preprocess"), Some(&[0u8, 255, 7][..]));
        assert_eq!(b.get("alarm"), None);
        assert_eq!(b.value_bytes(), 3 + b.get("detect").unwrap().len());
    }

    #[test]
    fn iterates_in_task_order() {
        let b = sample();
        let tasks: Vec<&str> = b.iter().map(|(t, _)| t).collect();
        assert_eq!(tasks, ["detect", "preprocess"]);
        assert_eq!(b.iter().len(), 2);
        assert_eq!(b.tasks().collect::<Vec<_>>(), tasks);
        let via_ref: Vec<(&str, &[u8])> = (&b).into_iter().collect();
        assert_eq!(via_ref[1], ("preprocess", &[0u8, 255, 7][..]));
    }

    #[test]
    fn load_typed_values() {
        let b = sample();
        assert_eq!(
            b.load::<Detections>("detect").unwrap(),
            Some(Detections {
                count: 1,
                boxes: vec![(1, 2, 3, 4)]
            })
        );
        assert_eq!(b.load::<Detections>("alarm").unwrap(), None);
        // Three raw bytes are no Detections map.
        let err = b.load::<Detections>("preprocess").unwrap_err();
        assert!(err.is(Status::StoreError), "{err}");
        assert!(err.message.contains("preprocess"), "{err}");
    }

    /// `sample()`'s content in the table layout.
    fn sample_table() -> Vec<u8> {
        let w = sample().into_wire();
        let fields: Vec<table::FieldIn> = w
            .fields
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_slice(), 0))
            .collect();
        table::plan(&w.chain, &w.source, &fields, &[])
            .unwrap()
            .to_vec()
    }

    #[test]
    fn the_table_layout_reads_in_place_and_equals_the_decoded_bundle() {
        let bytes = sample_table();
        let b = Bundle::from_bytes(bytes.clone()).unwrap();
        assert_eq!(b, sample());
        assert_eq!(sample(), b);
        assert_eq!(Bundle::decode(&bytes).unwrap(), b);
        assert_eq!(b.chain(), "c-1");
        assert_eq!(b.source().node, "sat3");
        assert_eq!(b.get("preprocess"), Some(&[0u8, 255, 7][..]));
        assert_eq!(b.version("preprocess"), None, "version 0 is none");
        assert!(b.load::<Detections>("detect").unwrap().is_some());
        assert_eq!(b.tasks().collect::<Vec<_>>(), ["detect", "preprocess"]);
        assert_eq!(b.as_wire(), &sample().into_wire());
        assert_eq!(b.clone().into_wire(), sample().into_wire());
        // Borrowed: the value lies inside the buffer that was handed over.
        let moved = Bundle::from_bytes(bytes).unwrap();
        let v = moved.get("preprocess").unwrap().as_ptr() as usize;
        let Repr::Table(t) = &moved.repr else {
            panic!("not a table")
        };
        let buf = t.bytes.as_ptr() as usize;
        assert!((buf..buf + t.bytes.len()).contains(&v));
        let mut broken = sample_table();
        broken.pop();
        assert!(Bundle::from_bytes(broken).unwrap_err().is(Status::Internal));
    }

    #[test]
    fn empty_bundle_and_garbage() {
        let enc = encode_bundle("e", &Source::default(), std::iter::empty()).unwrap();
        let b = Bundle::decode(&enc).unwrap();
        assert!(b.is_empty());
        assert_eq!(b.len(), 0);
        assert_eq!(b.iter().next(), None);
        assert_eq!(b.source().tier, Tier::Local);
        let err = Bundle::decode(b"\xc1 nope").unwrap_err();
        assert!(err.is(Status::Internal), "{err}");
    }
}
