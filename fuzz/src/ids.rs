//! Target `ids`: `skylark_abi::ids::validate` on arbitrary bytes.
//!
//! Asserts that it accepts exactly the documented ids (1-128 bytes of `A-Z a-z 0-9 . _ -`,
//! by a reference written from ABI.md), returns the input unchanged when it accepts, and
//! when it rejects names the right reason (empty, the true length, or the first bad byte
//! and its offset); that `is_id_byte` agrees with the reference; that an accepted id
//! cannot break the key layout (exactly three `:`-separated parts in a bundle key, and
//! kept as state, not mistaken for a reserved `@` field); and that `show_bytes`, which
//! puts rejected ids into error messages, prints only printable ASCII.

use super::input::{id_allowed_byte, id_ok};
use skylark_abi::ids::{self, IdError, MAX_ID_LEN};
use skylark_core::error::show_bytes;
use skylark_core::keys;

pub fn check(data: &[u8]) {
    let expect_ok = id_ok(data);
    match ids::validate(data) {
        Ok(s) => {
            assert!(expect_ok, "accepted an invalid id {data:?}");
            assert_eq!(s.as_bytes(), data);
            let key = keys::bundle("skylark", s);
            assert_eq!(key.split(':').count(), 3, "{key}");
            let (state, placement) = keys::split_placement(vec![(data.to_vec(), b"v".to_vec())]);
            assert_eq!(state.len(), 1, "id {s} taken for a reserved field");
            assert!(placement.is_empty());
        }
        Err(e) => {
            assert!(!expect_ok, "rejected a valid id {data:?}: {e}");
            match e {
                IdError::Empty => assert!(data.is_empty()),
                IdError::TooLong(n) => {
                    assert_eq!(n, data.len());
                    assert!(n > MAX_ID_LEN);
                }
                IdError::BadChar { index, byte } => {
                    assert!(!data.is_empty() && data.len() <= MAX_ID_LEN);
                    assert_eq!(data[index], byte);
                    assert!(!id_allowed_byte(byte));
                    assert!(data[..index].iter().all(|b| id_allowed_byte(*b)));
                }
            }
            assert!(!e.to_string().is_empty());
        }
    }
    for b in data {
        assert_eq!(ids::is_id_byte(*b), id_allowed_byte(*b), "byte {b:#04x}");
    }
    let shown = show_bytes(data, 48);
    assert!(
        shown.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "unprintable message text {shown:?}"
    );
    assert!(shown.len() <= 48 * 4 + 3);
}
