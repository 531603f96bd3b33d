//! Guest SDK for Skylark: workflow state for `wasm32-wasip1` serverless functions.
//!
//! A function running in WasmEdge with the Skylark plugin stores its output ("state") as
//! one field of its chain's *bundle* and reads all predecessors' state in a single round
//! trip. This crate wraps the raw host imports of module `skylark` (see `ABI.md`, and
//! [`raw`] for the bare functions) in a small typed API:
//!
//! - [`put`] / [`put_value`] store one field; [`put_many`] stores several in one round trip.
//! - [`put_versioned`] / [`put_many_versioned`] (ABI version 2) do the same and return the
//!   versions the fields got; with [`PutOptions`]' `if_version` (compare-and-swap),
//!   `if_absent` and `idempotency_key` a put is conditional or idempotent (also through
//!   [`put_with`]). A failed condition is an [`Error`] with status `ConditionFailed`
//!   carrying the versions the node holds ([`Error::versions`]).
//! - [`get_bundle`] / [`try_get_bundle`] fetch every field of a chain as a [`Bundle`].
//! - [`wait_for`] waits until named tasks' fields are on this node, then fetches them.
//! - [`new_chain_id`] makes a fresh chain id; [`abi_version`] asks the host for its ABI.
//!
//! Every call returns [`Result`]; an [`Error`] carries the host's [`Status`] and message.
//! Chain and task ids are checked against the ABI's id rules before the host is called.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Detections {
//!     count: u32,
//! }
//!
//! fn detect(chain: &str) -> skylark_guest::Result<()> {
//!     // All state of the chain so far, in one round trip.
//!     let bundle = skylark_guest::get_bundle(chain)?;
//!     let image = bundle.get("preprocess").unwrap_or_default();
//!     let count = image.iter().filter(|px| **px > 200).count() as u32;
//!     // This task's output becomes field "detect" of the same bundle.
//!     skylark_guest::put_value(chain, "detect", &Detections { count })?;
//!     Ok(())
//! }
//!
//! # fn main() {
//! let chain = skylark_guest::new_chain_id();
//! skylark_guest::put(&chain, "preprocess", &[0, 255, 255, 3]).expect("put");
//! detect(&chain).expect("detect");
//! let done = skylark_guest::get_bundle(&chain).expect("get");
//! let det: Option<Detections> = done.load("detect").expect("decode");
//! # }
//! ```
//!
//! Outside `wasm32` the imports are stubs and every call fails with
//! [`Status::Unsupported`], so code using the SDK still builds and unit-tests natively.

mod bundle;
mod error;
mod host;
pub mod raw;

pub use bundle::{Bundle, Iter};
pub use error::{Error, Result};
pub use host::DEFAULT_GET_BUFFER;
pub use skylark_abi as abi;
pub use skylark_abi::wire::{GetOptions, Layout, Policy, PutOptions, Source, Tier};
pub use skylark_abi::Status;

use host::RawHost;
use serde::Serialize;
use skylark_abi::wire;

/// The ABI version the host implements (2 for this SDK's ABI, 1 for an older host that
/// lacks `skylark_put_v2`; 0 outside wasm32).
pub fn abi_version() -> i32 {
    // SAFETY: takes no arguments and touches no memory.
    unsafe { raw::skylark_version() }
}

/// Checks a chain or task id against the ABI's rules (1 to 128 bytes of
/// `A-Z a-z 0-9 . _ -`); an [`Error`] with status `InvalidId` otherwise.
pub fn validate_id(id: &str) -> Result<()> {
    host::check_id("chain or task", id)
}

/// A fresh random chain id: a UUID v4 in its hyphenated lowercase form, which is a valid
/// id by the ABI's rules.
pub fn new_chain_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// Encodes options as the ABI expects: nothing at all (`opts_len = 0`) for the defaults,
/// otherwise a MessagePack map.
fn encode_opts<T: Serialize + Default + PartialEq>(opts: &T) -> Result<Vec<u8>> {
    if *opts == T::default() {
        return Ok(Vec::new());
    }
    wire::encode_options(opts).map_err(|e| Error::new(Status::Internal, e.to_string()))
}

/// Encodes get options, asking for the table layout unless `opts.layout` names one: the
/// bundle's values are then read where the host wrote them, with nothing decoded or
/// copied. A host older than that option answers in MessagePack, which [`Bundle`] reads
/// as well.
fn encode_get_opts(opts: &GetOptions) -> Result<Vec<u8>> {
    if opts.layout.is_some() {
        return encode_opts(opts);
    }
    encode_opts(&GetOptions {
        layout: Some(Layout::Table),
        ..opts.clone()
    })
}

/// Encodes put options after the checks the host would make of the ABI version 2 options:
/// `if_version` excludes `if_absent`, and an idempotency key follows the id rules.
fn encode_put_opts(opts: &PutOptions) -> Result<Vec<u8>> {
    if opts.if_version.is_some() && opts.if_absent {
        return Err(Error::new(
            Status::InvalidOptions,
            "if_version and if_absent exclude each other",
        ));
    }
    if let Some(k) = &opts.idempotency_key {
        host::check_id("idempotency key", k)
            .map_err(|e| Error::new(Status::InvalidOptions, e.message))?;
    }
    encode_opts(opts)
}

/// Stores `value` (any bytes) as field `task` of chain `chain`'s bundle, in one round trip.
/// Returns once the node-local store has acknowledged the write. An existing field of the
/// same task is replaced.
pub fn put(chain: &str, task: &str, value: &[u8]) -> Result<()> {
    put_with(chain, task, value, &PutOptions::default())
}

/// [`put`] with explicit options.
pub fn put_with(chain: &str, task: &str, value: &[u8], opts: &PutOptions) -> Result<()> {
    let opts = encode_put_opts(opts)?;
    host::put(&mut RawHost, chain, task, value, &opts)
}

/// Stores several fields of one bundle in one round trip, all or nothing. The host reads
/// the values where the caller has them (nothing is copied). Each task may appear once.
pub fn put_many(chain: &str, fields: &[(&str, &[u8])]) -> Result<()> {
    put_many_with(chain, fields, &PutOptions::default())
}

/// [`put_many`] with explicit options.
pub fn put_many_with(chain: &str, fields: &[(&str, &[u8])], opts: &PutOptions) -> Result<()> {
    let opts = encode_put_opts(opts)?;
    host::put_many(&mut RawHost, chain, fields, &opts)
}

/// [`put_with`] through `skylark_put_v2` (ABI version 2): returns the version the field
/// got (for a repeat of an idempotent put, the first put's). With `opts.if_version` or
/// `opts.if_absent` a failed condition is an error with status `ConditionFailed` whose
/// [`Error::versions`] holds the version the node holds now (0: absent).
pub fn put_versioned(chain: &str, task: &str, value: &[u8], opts: &PutOptions) -> Result<u64> {
    let versions = put_many_versioned(chain, &[(task, value)], opts)?;
    versions.first().copied().ok_or_else(|| {
        Error::new(
            Status::Internal,
            "skylark_put_v2 returned no version for one field",
        )
    })
}

/// [`put_many_with`] through `skylark_put_v2` (ABI version 2): the versions of the fields,
/// in their order. Conditions apply to every field: all hold or nothing is written.
pub fn put_many_versioned(
    chain: &str,
    fields: &[(&str, &[u8])],
    opts: &PutOptions,
) -> Result<Vec<u64>> {
    let opts = encode_put_opts(opts)?;
    host::put_v2(&mut RawHost, chain, fields, &opts)
}

/// [`put_value_with`] through `skylark_put_v2`: returns the field's version.
pub fn put_value_versioned<T: Serialize + ?Sized>(
    chain: &str,
    task: &str,
    value: &T,
    opts: &PutOptions,
) -> Result<u64> {
    let bytes = encode_value(value)?;
    put_versioned(chain, task, &bytes, opts)
}

/// Encodes a value the way [`put_value`] stores it and [`Bundle::load`] reads it:
/// MessagePack with structs as maps (rmp-serde's named encoding). Useful to build the
/// values of a [`put_many`].
pub fn encode_value<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| {
        Error::new(
            Status::Internal,
            format!("encoding {}: {e}", std::any::type_name::<T>()),
        )
    })
}

/// Decodes bytes written by [`put_value`] / [`encode_value`] (what [`Bundle::load`] does
/// for one field); an error with status `StoreError` if they do not decode as `T`.
pub fn decode_value<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| {
        Error::new(
            Status::StoreError,
            format!(
                "{} bytes do not decode as {}: {e}",
                bytes.len(),
                std::any::type_name::<T>()
            ),
        )
    })
}

/// Stores a serializable value as field `task` (see [`encode_value`] for the encoding).
pub fn put_value<T: Serialize + ?Sized>(chain: &str, task: &str, value: &T) -> Result<()> {
    put_value_with(chain, task, value, &PutOptions::default())
}

/// [`put_value`] with explicit options.
pub fn put_value_with<T: Serialize + ?Sized>(
    chain: &str,
    task: &str,
    value: &T,
    opts: &PutOptions,
) -> Result<()> {
    let bytes = encode_value(value)?;
    put_with(chain, task, &bytes, opts)
}

/// Fetches every field of chain `chain`'s bundle in one store round trip.
///
/// A chain without a bundle (never written, or expired) is an error with status
/// `NotFound`; use [`try_get_bundle`] to treat that as `None`. Bundles larger than
/// [`DEFAULT_GET_BUFFER`] are collected with one `skylark_take_result` call, without
/// asking the store again.
pub fn get_bundle(chain: &str) -> Result<Bundle> {
    get_bundle_with(chain, &GetOptions::default())
}

/// [`get_bundle`] with explicit options.
pub fn get_bundle_with(chain: &str, opts: &GetOptions) -> Result<Bundle> {
    let opts = encode_get_opts(opts)?;
    host::get_bundle(&mut RawHost, chain, &opts)
}

/// Like [`get_bundle`], but a missing bundle is `Ok(None)`.
pub fn try_get_bundle(chain: &str) -> Result<Option<Bundle>> {
    try_get_bundle_with(chain, &GetOptions::default())
}

/// [`try_get_bundle`] with explicit options.
pub fn try_get_bundle_with(chain: &str, opts: &GetOptions) -> Result<Option<Bundle>> {
    let opts = encode_get_opts(opts)?;
    host::try_get_bundle(&mut RawHost, chain, &opts)
}

/// What a get with `wait_for` delivered ([`wait_for`], [`wait_for_with`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Waited {
    /// The bundle: complete, or the fields present when the deadline passed; `None` if
    /// the chain had no bundle at all by then.
    pub bundle: Option<Bundle>,
    /// Every task waited for is in `bundle` (the host answered `Ok`, not `TimedOut`).
    pub complete: bool,
}

/// Waits until every task in `tasks` has stored its field of chain `chain` on this node
/// (locally, or arrived by propagation), at most `wait_ms` milliseconds (capped by the
/// node's `SKYLARK_MAX_WAIT_MS`), and returns the bundle: the fan-in join. When the
/// deadline passes first, the host looks at the other tiers once; [`Waited::complete`]
/// is false if the tasks are still not all there, and the bundle holds what was.
pub fn wait_for(chain: &str, tasks: &[&str], wait_ms: u64) -> Result<Waited> {
    let opts = GetOptions {
        wait_for: tasks.iter().map(|t| t.to_string()).collect(),
        wait_ms: Some(wait_ms),
        ..Default::default()
    };
    wait_for_with(chain, &opts)
}

/// [`wait_for`] with explicit options (`opts.wait_for` names the tasks; without any, this
/// is a plain [`try_get_bundle_with`]).
pub fn wait_for_with(chain: &str, opts: &GetOptions) -> Result<Waited> {
    for t in &opts.wait_for {
        host::check_id("task", t)?;
    }
    let opts = encode_get_opts(opts)?;
    let (bundle, timed_out) = host::wait_for(&mut RawHost, chain, &opts)?;
    Ok(Waited {
        bundle,
        complete: !timed_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use skylark_abi::wire::encode_bundle;

    #[test]
    fn chain_ids_are_valid_and_fresh() {
        let a = new_chain_id();
        let b = new_chain_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert!(skylark_abi::ids::validate(a.as_bytes()).is_ok(), "{a}");
        assert!(validate_id(&a).is_ok());
        assert_eq!(a.as_bytes()[14], b'4'); // version nibble
    }

    #[test]
    fn validate_id_rules() {
        assert!(validate_id("detect_2.v1-x").is_ok());
        assert!(validate_id(&"a".repeat(128)).is_ok());
        for bad in ["", "a:b", "a b", "ä", "a/b", &"a".repeat(129)] {
            let err = validate_id(bad).unwrap_err();
            assert!(err.is(Status::InvalidId), "{bad:?}");
            assert_eq!(err.code, 12);
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Detections {
        count: u32,
        boxes: Vec<(u32, u32, u32, u32)>,
        image_bytes: u64,
    }

    #[test]
    fn put_value_encoding_round_trips_through_a_bundle() {
        let det = Detections {
            count: 2,
            boxes: vec![(0, 0, 3, 3), (10, 12, 14, 15)],
            image_bytes: 1 << 20,
        };
        let enc = encode_value(&det).unwrap();
        // Named encoding: the map carries the field names.
        assert!(enc.windows(5).any(|w| w == b"count"));
        let bundle = Bundle::decode(
            &encode_bundle("c", &Source::default(), [("detect", &enc[..])]).unwrap(),
        )
        .unwrap();
        assert_eq!(bundle.load::<Detections>("detect").unwrap(), Some(det));
        // Plain values work as well.
        let enc = encode_value(&true).unwrap();
        let bundle =
            Bundle::decode(&encode_bundle("c", &Source::default(), [("alarm", &enc[..])]).unwrap())
                .unwrap();
        assert_eq!(bundle.load::<bool>("alarm").unwrap(), Some(true));
    }

    #[test]
    fn default_options_are_sent_as_nothing() {
        assert!(encode_opts(&PutOptions::default()).unwrap().is_empty());
        assert!(encode_opts(&GetOptions::default()).unwrap().is_empty());
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn native_build_reports_unsupported() {
        assert_eq!(abi_version(), 0);
        let err = put("c", "t", b"v").unwrap_err();
        assert!(err.is(Status::Unsupported), "{err}");
        assert_eq!(err.message, "skylark_put: not supported on this target");
        assert!(put_many("c", &[("t", b"v")])
            .unwrap_err()
            .is(Status::Unsupported));
        assert!(get_bundle("c").unwrap_err().is(Status::Unsupported));
        assert!(try_get_bundle("c").unwrap_err().is(Status::Unsupported));
        assert!(put_value("c", "t", &1u8)
            .unwrap_err()
            .is(Status::Unsupported));
        // Id checks come first, even natively.
        assert!(put("c:1", "t", b"v").unwrap_err().is(Status::InvalidId));
        let none = PutOptions::default();
        assert!(put_versioned("c", "t", b"v", &none)
            .unwrap_err()
            .is(Status::Unsupported));
        assert!(put_many_versioned("c", &[("t", b"v")], &none)
            .unwrap_err()
            .is(Status::Unsupported));
    }

    #[test]
    fn options_the_host_would_refuse_never_reach_it() {
        let both = PutOptions {
            if_version: Some(1),
            if_absent: true,
            ..PutOptions::default()
        };
        let err = put_versioned("c", "t", b"v", &both).unwrap_err();
        assert!(err.is(Status::InvalidOptions), "{err}");
        let key = PutOptions {
            idempotency_key: Some("a b".into()),
            ..PutOptions::default()
        };
        let err = put_with("c", "t", b"v", &key).unwrap_err();
        assert!(err.is(Status::InvalidOptions), "{err}");
        assert!(err.message.starts_with("idempotency key id"), "{err}");
    }
}
