//! The error type of a host call: a status code for the guest plus a message for humans.

use skylark_abi::Status;
use std::fmt;

/// A failed host call, as reported to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub status: Status,
    pub message: String,
}

impl CallError {
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        CallError {
            status,
            message: message.into(),
        }
    }

    /// Prefixes the message with context (typically the import's name).
    pub fn context(mut self, what: &str) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.message, self.status.name())
    }
}

impl std::error::Error for CallError {}

/// Renders untrusted bytes for an error message: printable ASCII as is, the rest escaped,
/// cut after `max` bytes.
pub fn show_bytes(bytes: &[u8], max: usize) -> String {
    let mut out: String = bytes
        .iter()
        .take(max)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if bytes.len() > max {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_bytes_escapes_and_truncates() {
        assert_eq!(show_bytes(b"ab:\xff\n", 10), "ab:\\xff\\n");
        assert_eq!(show_bytes(b"abcdef", 3), "abc...");
    }

    #[test]
    fn context_prefixes() {
        let e = CallError::new(Status::InvalidId, "chain id is empty").context("skylark_put");
        assert_eq!(e.message, "skylark_put: chain id is empty");
        assert_eq!(e.to_string(), "skylark_put: chain id is empty [InvalidId]");
    }
}
