//! [`Bundle`]: read access to all state of one chain as delivered by `skylark_get_bundle`.

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;
use skylark_abi::wire::{self, Source};
use skylark_abi::Status;
use std::collections::btree_map;

/// All state of one chain: one field (raw bytes) per task that wrote to it, plus where the
/// host found it.
///
/// Obtained from [`get_bundle`](crate::get_bundle) / [`try_get_bundle`](crate::try_get_bundle),
/// or decoded from wire bytes with [`Bundle::decode`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bundle {
    inner: wire::Bundle,
}

impl Bundle {
    /// Decodes a bundle from its MessagePack wire encoding (see `ABI.md`).
    pub fn decode(bytes: &[u8]) -> Result<Bundle> {
        wire::decode_bundle(bytes)
            .map(Bundle::from)
            .map_err(|e| Error::new(Status::Internal, format!("undecodable bundle: {e}")))
    }

    /// The chain id this bundle belongs to.
    pub fn chain(&self) -> &str {
        &self.inner.chain
    }

    /// Which store tier and node answered.
    pub fn source(&self) -> &Source {
        &self.inner.source
    }

    /// The node a put of `task` placed its copy on (its elected node), once the host
    /// finished propagating it; a consumer can pass it as [`GetOptions::from`](crate::GetOptions).
    pub fn placement(&self, task: &str) -> Option<&str> {
        self.inner.placement.get(task).map(String::as_str)
    }

    /// The whole placement record as `(task, node)`, in ascending task-id order.
    pub fn placements(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inner
            .placement
            .iter()
            .map(|(t, n)| (t.as_str(), n.as_str()))
    }

    /// The version of `task`'s field as held by the store that answered (assigned by the
    /// node that accepted its put; it grows with every put of the task). `None` for a
    /// task without a field, from a host older than ABI version 2, or written before
    /// versions existed.
    pub fn version(&self, task: &str) -> Option<u64> {
        self.inner.versions.get(task).copied()
    }

    /// The raw bytes task `task` stored, if it did.
    pub fn get(&self, task: &str) -> Option<&[u8]> {
        self.inner.fields.get(task).map(|v| v.as_slice())
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
        self.inner.fields.contains_key(task)
    }

    /// Number of fields (tasks that stored state).
    pub fn len(&self) -> usize {
        self.inner.fields.len()
    }

    /// True if the bundle has no field.
    pub fn is_empty(&self) -> bool {
        self.inner.fields.is_empty()
    }

    /// The fields as `(task, bytes)`, in ascending task-id order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            inner: self.inner.fields.iter(),
        }
    }

    /// The task ids, in ascending order.
    pub fn tasks(&self) -> impl Iterator<Item = &str> + '_ {
        self.inner.fields.keys().map(String::as_str)
    }

    /// Total size of all field values in bytes.
    pub fn value_bytes(&self) -> usize {
        self.inner.fields.values().map(|v| v.len()).sum()
    }

    /// The decoded wire structure.
    pub fn as_wire(&self) -> &wire::Bundle {
        &self.inner
    }

    /// Unwraps into the decoded wire structure (to take ownership of field values).
    pub fn into_wire(self) -> wire::Bundle {
        self.inner
    }
}

impl From<wire::Bundle> for Bundle {
    fn from(inner: wire::Bundle) -> Self {
        Bundle { inner }
    }
}

/// Iterator over a bundle's `(task, bytes)` pairs in task order; see [`Bundle::iter`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    inner: btree_map::Iter<'a, String, ByteBuf>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
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
