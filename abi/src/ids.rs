//! Rules for chain and task ids.
//!
//! Ids become parts of Redis keys and hash fields, so they are restricted to a charset
//! that cannot carry key separators (`:`), glob characters or whitespace.

/// Longest accepted id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Why an id was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    Empty,
    TooLong(usize),
    BadChar { index: usize, byte: u8 },
}

impl std::fmt::Display for IdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdError::Empty => write!(f, "is empty"),
            IdError::TooLong(n) => write!(f, "is {n} bytes long (max {MAX_ID_LEN})"),
            IdError::BadChar { index, byte } => write!(
                f,
                "has byte 0x{byte:02x} at offset {index}; allowed are A-Z a-z 0-9 . _ -"
            ),
        }
    }
}

impl std::error::Error for IdError {}

/// True for bytes allowed in an id.
pub fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Checks an id given as raw bytes (as it arrives from guest memory) and returns it as `&str`.
pub fn validate(id: &[u8]) -> Result<&str, IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(id.len()));
    }
    if let Some(index) = id.iter().position(|b| !is_id_byte(*b)) {
        return Err(IdError::BadChar {
            index,
            byte: id[index],
        });
    }
    // Every allowed byte is ASCII, so this cannot fail; map the error anyway.
    std::str::from_utf8(id).map_err(|e| IdError::BadChar {
        index: e.valid_up_to(),
        byte: id[e.valid_up_to()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_uuid_and_names() {
        assert_eq!(
            validate(b"6f1c2e0a-9b7d-4c1e-8f00-123456789abc"),
            Ok("6f1c2e0a-9b7d-4c1e-8f00-123456789abc")
        );
        assert_eq!(validate(b"detect_2.v1"), Ok("detect_2.v1"));
        assert!(validate(&[b'a'; MAX_ID_LEN]).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_separators() {
        assert_eq!(validate(b""), Err(IdError::Empty));
        assert_eq!(
            validate(&[b'a'; MAX_ID_LEN + 1]),
            Err(IdError::TooLong(MAX_ID_LEN + 1))
        );
        for bad in [
            &b"a:b"[..],
            b"a*",
            b"a b",
            b"a?",
            b"a[",
            b"\xff",
            b"a\0",
            b"a/b",
        ] {
            assert!(
                matches!(validate(bad), Err(IdError::BadChar { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            validate(b"ab:c"),
            Err(IdError::BadChar {
                index: 2,
                byte: b':'
            })
        );
    }
}
