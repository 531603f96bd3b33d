//! The SDK's error type: a host status code plus a human-readable message.

use skylark_abi::Status;
use std::fmt;

/// A failed Skylark call.
///
/// Host failures carry the status the host returned and the message it reported through
/// `skylark_last_error`. Failures detected by the SDK itself before or after a host call use
/// the closest status of the ABI:
///
/// | situation | status |
/// | --- | --- |
/// | a chain or task id breaks the id rules (checked before calling the host) | `InvalidId` |
/// | `put_many` with no fields | `TooManyFields` |
/// | the same task twice in one `put_many` | `DuplicateField` |
/// | a value longer than `u32::MAX` bytes | `ValueTooLarge` |
/// | no memory for a large bundle | `BundleTooLarge` |
/// | a stored field does not decode as the requested type ([`Bundle::load`](crate::Bundle::load)) | `StoreError` |
/// | a value or option does not encode, the host delivers an inconsistent result | `Internal` |
/// | an option the host would refuse (`if_version` with `if_absent`, a bad idempotency key) | `InvalidOptions` |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The status, or `None` when the host returned a code this SDK version does not know
    /// (the raw value is in [`code`](Self::code) either way).
    pub status: Option<Status>,
    /// The raw status code as returned by the host.
    pub code: i32,
    /// What went wrong, in words (the host's message where there is one).
    pub message: String,
    /// For `ConditionFailed` from a versioned put ([`put_versioned`](crate::put_versioned),
    /// [`put_many_versioned`](crate::put_many_versioned)): the versions the node holds now,
    /// one per field in the order of the call (0: the field is absent). Empty otherwise.
    pub versions: Vec<u64>,
}

/// Result of every fallible SDK call.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with a known status.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Error {
            status: Some(status),
            code: status.code(),
            message: message.into(),
            versions: Vec::new(),
        }
    }

    /// An error for a raw status code, known to this SDK version or not.
    pub fn from_code(code: i32, message: impl Into<String>) -> Self {
        Error {
            status: Status::from_code(code),
            code,
            message: message.into(),
            versions: Vec::new(),
        }
    }

    /// True if the error has status `status`.
    pub fn is(&self, status: Status) -> bool {
        self.status == Some(status)
    }

    /// True if the error means "this chain has no bundle".
    pub fn is_not_found(&self) -> bool {
        self.is(Status::NotFound)
    }

    /// The status name (`"NotFound"`), or `"Unknown"` for a code this SDK does not know.
    pub fn status_name(&self) -> &'static str {
        self.status.map_or("Unknown", Status::name)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.status_name(), self.code)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        } else if let Some(status) = self.status {
            write!(f, ": {}", status.describe())?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_status() {
        let e = Error::new(Status::NotFound, "no bundle for chain c1");
        assert_eq!(e.status, Some(Status::NotFound));
        assert_eq!(e.code, 1);
        assert!(e.is_not_found());
        assert!(e.is(Status::NotFound));
        assert!(!e.is(Status::Internal));
        assert_eq!(e.to_string(), "NotFound (1): no bundle for chain c1");
    }

    #[test]
    fn unknown_code_keeps_raw_value() {
        let e = Error::from_code(4711, "from a newer host");
        assert_eq!(e.status, None);
        assert_eq!(e.code, 4711);
        assert_eq!(e.status_name(), "Unknown");
        assert_eq!(e.to_string(), "Unknown (4711): from a newer host");
    }

    #[test]
    fn empty_message_falls_back_to_description() {
        let e = Error::from_code(Status::StoreTimeout.code(), "");
        assert_eq!(e.status, Some(Status::StoreTimeout));
        assert_eq!(e.to_string(), "StoreTimeout (21): store timeout");
        assert_eq!(Error::from_code(-3, "").to_string(), "Unknown (-3)");
    }

    #[test]
    fn is_a_std_error() {
        let e: Box<dyn std::error::Error> = Box::new(Error::new(Status::InvalidId, "bad"));
        assert_eq!(e.to_string(), "InvalidId (12): bad");
    }
}
