//! Target `bundle`: the read side's bundle encoding, from a Redis hash as `HGETALL`
//! returns it to the bytes the guest decodes.
//!
//! Two modes, picked by the first byte:
//! - a hash of arbitrary field names and values (state, `@at:` placement entries, `@v:`
//!   versions, `@incoming:` announcements, unknown `@` fields, names that are not UTF-8)
//!   goes through `keys::split` and `calls::encode` (the host's size check and
//!   encoding) and `wire::decode_bundle`. Asserts against a reference written from
//!   ABI.md/README: a state field counts only if its name is an id, a placement entry
//!   only if its task and node are ids (a bundle from another node is untrusted: the rest
//!   is dropped); `BundleTooLarge` iff those state names and values exceed the limit,
//!   else the guest decodes exactly the chain, the source, the state fields, the
//!   placement record and the versions of the state fields (those that are numbers),
//!   nothing else of the reserved fields; every error carries a message;
//! - arbitrary bytes go to `decode_bundle`: it never panics, and a bundle it accepts
//!   re-encodes (`encode_bundle_versioned`) to bytes that decode to the same bundle.

use super::input::Input;
use skylark_abi::wire::{self, Source, Tier};
use skylark_abi::{ids, Status};
use skylark_core::calls;
use skylark_core::fetch::Found;
use skylark_core::keys;
use std::collections::BTreeMap;

fn text(inp: &mut Input) -> String {
    let n = usize::from(inp.u8() % 24);
    String::from_utf8_lossy(inp.bytes(n)).into_owned()
}

fn field_name(inp: &mut Input) -> Vec<u8> {
    let prefix: &[u8] = match inp.u8() % 7 {
        0 => keys::PLACEMENT_PREFIX.as_bytes(),
        1 => keys::INCOMING_PREFIX.as_bytes(),
        2 => b"@",
        3 => keys::VERSION_PREFIX.as_bytes(),
        _ => b"",
    };
    let n = usize::from(inp.u8() % 20);
    let mut name = prefix.to_vec();
    if inp.bool() {
        // Mostly ids, so that most fields are state the host keeps.
        const ID: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789._-";
        name.extend(inp.bytes(n).iter().map(|b| ID[usize::from(*b) % ID.len()]));
    } else {
        name.extend(inp.bytes(n));
    }
    name
}

/// (field name, value) pairs of a hash.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Reference split of a bundle hash: (state, placement, versions), names that are ids
/// only; a version is a decimal number (the last one of a task counts).
/// Versions by task (raw name).
type Versions = BTreeMap<Vec<u8>, u64>;

fn reference(pairs: &Pairs) -> (Pairs, Vec<(String, String)>, Versions) {
    let id = |b: &[u8]| ids::validate(b).is_ok();
    let mut state = Vec::new();
    let mut placement = Vec::new();
    let mut versions = BTreeMap::new();
    for (k, v) in pairs {
        if let Some(task) = k.strip_prefix(b"@v:") {
            if let Some(n) = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            {
                versions.insert(task.to_vec(), n);
            }
        } else if let Some(task) = k.strip_prefix(b"@at:") {
            if let (true, true, Ok(t), Ok(n)) = (
                id(task),
                id(v),
                std::str::from_utf8(task),
                std::str::from_utf8(v),
            ) {
                placement.push((t.to_string(), n.to_string()));
            }
        } else if k.first() != Some(&b'@') && id(k) {
            state.push((k.clone(), v.clone()));
        }
    }
    (state, placement, versions)
}

fn check_hash(inp: &mut Input) {
    let max = if inp.bool() {
        inp.u32()
    } else {
        u32::from(inp.u16())
    };
    let chain = text(inp);
    let source = Source {
        tier: [Tier::Local, Tier::Neighbour, Tier::Global][usize::from(inp.u8() % 3)],
        node: text(inp),
    };
    let n = inp.u8() % 24;
    let mut pairs = Vec::new();
    for _ in 0..n {
        let k = field_name(inp);
        let len = if inp.u8() & 7 == 0 {
            usize::from(inp.u16())
        } else {
            usize::from(inp.u8() % 32)
        };
        // A version field mostly holds a number.
        let value = if k.starts_with(b"@v:") && inp.u8() & 3 != 0 {
            inp.u64().to_string().into_bytes()
        } else {
            inp.bytes(len).to_vec()
        };
        pairs.push((k, value));
    }
    let (state, placement, versions) = reference(&pairs);
    let split = keys::split(pairs);
    assert_eq!(split.state, state);
    assert_eq!(split.placement, placement);
    let found = Found {
        fields: split.state,
        placement: split.placement,
        versions: split.versions,
        source: source.clone(),
    };
    let total: u64 = state.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
    let utf8 = state.iter().all(|(k, _)| std::str::from_utf8(k).is_ok());
    match calls::encode(max, &chain, &found) {
        Ok(bytes) => {
            assert!(total <= u64::from(max) && utf8);
            let b = wire::decode_bundle(&bytes).expect("the host's encoding decodes");
            let fields: BTreeMap<String, Vec<u8>> = state
                .iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.clone()))
                .collect();
            let placement: BTreeMap<String, String> = placement.into_iter().collect();
            assert_eq!((&b.chain, &b.source), (&chain, &source));
            let got: BTreeMap<String, Vec<u8>> = b
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.to_vec()))
                .collect();
            assert_eq!(got, fields);
            assert_eq!(b.placement, placement);
            let delivered: BTreeMap<String, u64> = versions
                .into_iter()
                .filter_map(|(t, v)| {
                    let t = String::from_utf8(t).ok()?;
                    fields.contains_key(&t).then_some((t, v))
                })
                .collect();
            assert_eq!(b.versions, delivered);
        }
        Err(e) => {
            let status = if total > u64::from(max) {
                Status::BundleTooLarge
            } else {
                assert!(!utf8, "refused a valid bundle: {e}");
                Status::StoreError
            };
            assert_eq!(e.status, status, "{e}");
            assert!(e.message.contains(&format!("{chain:?}")), "{e}");
        }
    }
}

fn check_raw(bytes: &[u8]) {
    let Ok(b) = wire::decode_bundle(bytes) else {
        return;
    };
    let enc = wire::encode_bundle_versioned(
        &b.chain,
        &b.source,
        b.fields.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        b.placement.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        b.versions.iter().map(|(k, v)| (k.as_str(), *v)),
    )
    .expect("a decoded bundle encodes");
    let back = wire::decode_bundle(&enc).expect("a re-encoded bundle decodes");
    assert_eq!(back, b);
}

pub fn check(data: &[u8]) {
    let mut inp = Input::new(data);
    if inp.u8() & 3 == 0 {
        check_raw(inp.rest());
    } else {
        check_hash(&mut inp);
    }
}

/// Seed inputs: a bundle as the host encodes it, and a hash with every field kind.
pub fn seeds() -> Vec<Vec<u8>> {
    let enc = wire::encode_bundle_placed(
        "chain-1",
        &Source {
            tier: Tier::Neighbour,
            node: "pi5u3".into(),
        },
        [("preprocess", &b"\x00\xffraw"[..]), ("detect", b"7")],
        [("preprocess", "pi4u5")],
    )
    .unwrap_or_default();
    let mut raw = vec![0];
    raw.extend(enc);
    let mut hash = vec![1, 0, 0x00, 0x10, 7];
    hash.extend(b"chain-1");
    hash.extend([1, 5]);
    hash.extend(b"pi5u3");
    hash.push(4);
    for (prefix, name, value) in [
        (3u8, &b"preprocess"[..], &b"abc"[..]),
        (0, b"preprocess", b"pi4u5"),
        (1, b"job-1", b"1700000000000"),
        (3, b"bad\xff", b"x"),
    ] {
        hash.extend([prefix, name.len() as u8]);
        hash.extend(name);
        hash.extend([1, value.len() as u8]);
        hash.extend(value);
    }
    vec![raw, hash]
}
