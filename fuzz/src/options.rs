//! Target `options`: `skylark_abi::wire::decode_options` for `PutOptions` and
//! `GetOptions` on arbitrary bytes, followed by the host's checks of option values
//! (`write::check_options`, `fetch::check_options`).
//!
//! The reference model reads the blob with our own MessagePack reader
//! ([`super::msgpack`]) and applies ABI.md: an empty blob means the defaults; otherwise
//! exactly one map, keys are strings, unknown keys are ignored whatever their value, a
//! known key appears at most once and has its documented type (`nil` counts as absent
//! for the optional keys; strings may come as `str` or `bin` holding UTF-8; unsigned
//! numbers in any integer encoding; `min_bandwidth_mbps` as any float or integer; an
//! empty `bin` for `require` reads as an empty list, an rmp-serde quirk we tolerate).
//! Asserts:
//! - decoding succeeds iff the model accepts, with the same options;
//! - an accepted blob re-encodes to one map that decodes to the same options;
//! - the host's value checks accept iff every node name and task id in the options is
//!   a valid id and the bandwidth is a finite non-negative number, and reject with
//!   `InvalidOptions` and a message.

use super::input::id_ok;
use super::msgpack::{self, ParseError, Value};
use skylark_abi::wire::{self, GetOptions, Policy, PutOptions};
use skylark_abi::Status;
use skylark_core::{fetch, write};

/// What the model expects of a blob.
#[derive(Debug)]
pub enum Model<T> {
    Ok(T),
    Err(String),
    /// Nested deeper than the model decides (near rmp-serde's depth limit).
    Undetermined,
}

/// Nesting up to which the model decides; rmp-serde refuses beyond 1024 levels.
const DECIDED_DEPTH: usize = 1000;

type Field<'a> = (&'a str, &'a Value);

fn text(v: &Value) -> Result<String, String> {
    match v {
        Value::Str(b) | Value::Bin(b) => {
            String::from_utf8(b.clone()).map_err(|_| "string is not UTF-8".to_string())
        }
        other => Err(format!("expected a string, got {other:?}")),
    }
}

fn opt_text(v: &Value) -> Result<Option<String>, String> {
    match v {
        Value::Nil => Ok(None),
        v => text(v).map(Some),
    }
}

fn opt_policy(v: &Value) -> Result<Option<Policy>, String> {
    match opt_text(v)? {
        None => Ok(None),
        Some(s) => Policy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .map(Some)
            .ok_or(format!("unknown policy {s:?}")),
    }
}

fn opt_layout(v: &Value) -> Result<Option<wire::Layout>, String> {
    match opt_text(v)? {
        None => Ok(None),
        Some(s) => wire::Layout::parse(&s)
            .map(Some)
            .ok_or(format!("unknown layout {s:?}")),
    }
}

fn opt_u64(v: &Value) -> Result<Option<u64>, String> {
    match v {
        Value::Nil => Ok(None),
        Value::Int(i) => u64::try_from(*i).map(Some).map_err(|_| format!("{i} < 0")),
        other => Err(format!("expected an unsigned integer, got {other:?}")),
    }
}

fn opt_f64(v: &Value) -> Result<Option<f64>, String> {
    match v {
        Value::Nil => Ok(None),
        Value::F32(f) => Ok(Some(f64::from(*f))),
        Value::F64(f) => Ok(Some(*f)),
        Value::Int(i) if *i >= 0 => Ok(Some(*i as u64 as f64)),
        Value::Int(i) => Ok(Some(*i as i64 as f64)),
        other => Err(format!("expected a number, got {other:?}")),
    }
}

fn boolean(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => Err(format!("expected a bool, got {other:?}")),
    }
}

fn texts(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Array(a) => a.iter().map(text).collect(),
        // rmp-serde reads a bin where a sequence is expected as a sequence of integers,
        // which are no strings: only the empty bin passes, as an empty list. Harmless,
        // tolerated (fuzz/regressions/options_model/require-empty-bin).
        Value::Bin(b) if b.is_empty() => Ok(Vec::new()),
        other => Err(format!("expected an array, got {other:?}")),
    }
}

/// The map's entries with string keys, or why the blob is not a map of named options.
fn entries(v: &Value) -> Result<Vec<(String, &Value)>, String> {
    let Value::Map(m) = v else {
        return Err(format!("not a map: {v:?}"));
    };
    m.iter()
        .map(|(k, x)| match k {
            Value::Str(_) | Value::Bin(_) => text(k).map(|name| (name, x)),
            other => Err(format!("key {other:?} is not a string")),
        })
        .collect()
}

/// Applies the model to a blob: `build` turns the known keys' values into options.
fn model<T: Default>(
    blob: &[u8],
    known: &[&str],
    build: impl Fn(&[Field]) -> Result<T, String>,
) -> Model<T> {
    if blob.is_empty() {
        return Model::Ok(T::default());
    }
    let (v, used, depth) = match msgpack::parse(blob) {
        Ok(p) => p,
        Err(ParseError::TooDeep) => return Model::Undetermined,
        Err(e) => return Model::Err(format!("{e:?}")),
    };
    if depth > DECIDED_DEPTH {
        return Model::Undetermined;
    }
    if used != blob.len() {
        return Model::Err(format!("{} bytes after the value", blob.len() - used));
    }
    let all = match entries(&v) {
        Ok(e) => e,
        Err(e) => return Model::Err(e),
    };
    let mut fields: Vec<Field> = Vec::new();
    for (name, x) in &all {
        if let Some(k) = known.iter().find(|k| **k == name.as_str()) {
            if fields.iter().any(|(seen, _)| seen == k) {
                return Model::Err(format!("duplicate key {k}"));
            }
            fields.push((k, x));
        }
    }
    match build(&fields) {
        Ok(o) => Model::Ok(o),
        Err(e) => Model::Err(e),
    }
}

const PUT_KEYS: &[&str] = &[
    "destination",
    "policy",
    "max_latency_ms",
    "min_bandwidth_mbps",
    "exec_ms",
    "successor_in_ms",
    "cleanup",
    "if_version",
    "if_absent",
    "idempotency_key",
    "destinations",
];
const GET_KEYS: &[&str] = &[
    "policy",
    "from",
    "local_only",
    "require",
    "wait_for",
    "wait_ms",
    "layout",
];

/// The model for `PutOptions`.
pub fn model_put(blob: &[u8]) -> Model<PutOptions> {
    model(blob, PUT_KEYS, |fields| {
        let mut o = PutOptions::default();
        for (k, v) in fields {
            match *k {
                "destination" => o.destination = opt_text(v)?,
                "policy" => o.policy = opt_policy(v)?,
                "max_latency_ms" => o.max_latency_ms = opt_u64(v)?,
                "min_bandwidth_mbps" => o.min_bandwidth_mbps = opt_f64(v)?,
                "exec_ms" => o.exec_ms = opt_u64(v)?,
                "successor_in_ms" => o.successor_in_ms = opt_u64(v)?,
                "if_version" => o.if_version = opt_u64(v)?,
                "if_absent" => o.if_absent = boolean(v)?,
                "idempotency_key" => o.idempotency_key = opt_text(v)?,
                "destinations" => o.destinations = texts(v)?,
                _ => o.cleanup = boolean(v)?,
            }
        }
        Ok(o)
    })
}

/// The model for `GetOptions`.
pub fn model_get(blob: &[u8]) -> Model<GetOptions> {
    model(blob, GET_KEYS, |fields| {
        let mut o = GetOptions::default();
        for (k, v) in fields {
            match *k {
                "policy" => o.policy = opt_policy(v)?,
                "from" => o.from = opt_text(v)?,
                "local_only" => o.local_only = boolean(v)?,
                "wait_for" => o.wait_for = texts(v)?,
                "wait_ms" => o.wait_ms = opt_u64(v)?,
                "layout" => o.layout = opt_layout(v)?,
                _ => o.require = texts(v)?,
            }
        }
        Ok(o)
    })
}

fn same<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    // Debug, not PartialEq: a NaN bandwidth is not equal to itself.
    format!("{a:?}") == format!("{b:?}")
}

fn is_map_marker(b: u8) -> bool {
    matches!(b, 0x80..=0x8f | 0xde | 0xdf)
}

/// Decodes `blob` as `T`, compares with the model, checks the re-encoding round trip.
fn compare<T>(blob: &[u8], expect: Model<T>) -> Option<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Default + std::fmt::Debug,
{
    let got = wire::decode_options::<T>(blob);
    match (&got, &expect) {
        (Ok(o), Model::Ok(m)) => assert!(same(o, m), "decoded {o:?}, model {m:?}"),
        (Err(e), Model::Err(_)) => assert!(!e.to_string().is_empty()),
        (_, Model::Undetermined) => {}
        (got, expect) => panic!("blob {blob:02x?}: decoded {got:?}, model {expect:?}"),
    }
    let o = got.ok()?;
    let enc = wire::encode_options(&o).expect("accepted options encode");
    assert!(is_map_marker(enc[0]), "options encode to {enc:02x?}");
    let back = wire::decode_options::<T>(&enc).expect("re-encoded options decode");
    assert!(same(&back, &o), "round trip {o:?} -> {back:?}");
    Some(o)
}

pub fn check_put_blob(blob: &[u8]) {
    let Some(o) = compare(blob, model_put(blob)) else {
        return;
    };
    let valid = o.destination.as_deref().is_none_or(|d| id_ok(d.as_bytes()))
        && (o.destination.is_none() || o.destinations.is_empty())
        && o.destinations.len() <= skylark_abi::wire::MAX_DESTINATIONS
        && o.destinations.iter().all(|d| id_ok(d.as_bytes()))
        && o.min_bandwidth_mbps
            .is_none_or(|b| b.is_finite() && b >= 0.0);
    match write::check_options(&o) {
        Ok(()) => assert!(valid, "host accepted {o:?}"),
        Err(e) => {
            assert!(!valid, "host rejected {o:?}: {e}");
            assert_eq!(e.status, Status::InvalidOptions);
            assert!(!e.message.is_empty());
        }
    }
}

pub fn check_get_blob(blob: &[u8]) {
    let Some(o) = compare(blob, model_get(blob)) else {
        return;
    };
    let valid = o.from.as_deref().is_none_or(|d| id_ok(d.as_bytes()))
        && o.require.len() <= skylark_abi::wire::MAX_REQUIRE
        && o.require.iter().all(|t| id_ok(t.as_bytes()))
        && o.wait_for.len() <= skylark_abi::wire::MAX_REQUIRE
        && o.wait_for.iter().all(|t| id_ok(t.as_bytes()));
    match fetch::check_options(&o) {
        Ok(()) => assert!(valid, "host accepted {o:?}"),
        Err(e) => {
            assert!(!valid, "host rejected {o:?}: {e}");
            assert_eq!(e.status, Status::InvalidOptions);
            assert!(!e.message.is_empty());
        }
    }
}

pub fn check(data: &[u8]) {
    check_put_blob(data);
    check_get_blob(data);
}

/// Seed inputs: documented options, and blobs near the rules' edges.
pub fn seeds() -> Vec<Vec<u8>> {
    let put = PutOptions {
        destination: Some("pi5u1".into()),
        policy: Some(Policy::Random),
        max_latency_ms: Some(250),
        min_bandwidth_mbps: Some(30.5),
        exec_ms: Some(12),
        successor_in_ms: Some(60_000),
        cleanup: true,
        ..PutOptions::default()
    };
    let get = GetOptions {
        policy: Some(Policy::Stateless),
        from: Some("pi4u5".into()),
        local_only: true,
        require: vec!["preprocess".into(), "detect".into()],
        wait_for: vec!["detect".into()],
        wait_ms: Some(250),
        layout: Some(wire::Layout::Table),
    };
    let mut out = vec![
        vec![],
        vec![0x80],
        wire::encode_options(&put).unwrap_or_default(),
        wire::encode_options(&get).unwrap_or_default(),
        vec![0x91, 0xa5, b'p', b'i', b'5', b'u', b'1'],
        vec![0x80, 0xc0],
        vec![0x81, 0x06, 0xc3],
    ];
    let mut w = msgpack::Writer::default();
    w.map(2, 1);
    w.str(b"policy", 2);
    w.bin(b"local", 0);
    w.str(b"future_key", 0);
    w.value(
        &Value::Array(vec![Value::Map(vec![(Value::Nil, Value::Ext(3, vec![1]))])]),
        1,
    );
    out.push(w.out);
    out
}
