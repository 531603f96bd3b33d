//! Status codes returned by every host function, shared by host and guest.

use std::fmt;

macro_rules! statuses {
    ($($(#[doc = $doc:literal])* $name:ident = $code:literal, $text:literal;)*) => {
        /// Outcome of a host call. `Ok` is 0; every other value is a failure whose
        /// human-readable detail the guest reads with `skylark_last_error`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(i32)]
        pub enum Status {
            $($(#[doc = $doc])* $name = $code,)*
        }

        impl Status {
            /// Every status, in code order.
            pub const ALL: &'static [Status] = &[$(Status::$name,)*];

            /// The status for a raw code, `None` for a code this version does not know.
            pub fn from_code(code: i32) -> Option<Status> {
                match code {
                    $($code => Some(Status::$name),)*
                    _ => None,
                }
            }

            /// A short fixed description of the status.
            pub fn describe(self) -> &'static str {
                match self {
                    $(Status::$name => $text,)*
                }
            }

            /// The name of the status, as in the source (`NotFound`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Status::$name => stringify!($name),)*
                }
            }
        }
    };
}

statuses! {
    /// Success.
    Ok = 0, "ok";
    /// The requested bundle does not exist (or has expired).
    NotFound = 1, "bundle not found";
    /// The guest buffer is too small; the result is held by the host under a handle.
    BufferTooSmall = 2, "guest buffer too small";
    /// A pointer/length pair lies (partly) outside the guest's linear memory.
    InvalidPointer = 10, "pointer or length outside guest memory";
    /// The calling module has no linear memory the host could read.
    NoMemory = 11, "calling module exports no memory";
    /// A chain or task id is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    InvalidId = 12, "invalid chain or task id";
    /// A value is larger than the configured maximum.
    ValueTooLarge = 13, "value too large";
    /// More fields than the configured maximum, or no field at all.
    TooManyFields = 14, "too many fields";
    /// The options blob is not a MessagePack map of known option types.
    InvalidOptions = 15, "invalid options";
    /// No pending result exists under that handle.
    UnknownHandle = 16, "unknown result handle";
    /// The same task id appears twice in one call.
    DuplicateField = 17, "duplicate task id in one call";
    /// The bundle read from the store is larger than the configured maximum, or a put
    /// would make it so (nothing written).
    BundleTooLarge = 18, "bundle too large";
    /// A put would take the namespace's bytes on the node-local store beyond its quota
    /// (`SKYLARK_NAMESPACE_MAX_BYTES`); nothing written.
    QuotaExceeded = 19, "namespace quota exceeded";
    /// The store could not be reached (connection refused, DNS, TLS handshake).
    StoreUnavailable = 20, "store unavailable";
    /// The store did not answer within the configured timeout.
    StoreTimeout = 21, "store timeout";
    /// The store answered with an error, or with data Skylark cannot decode.
    StoreError = 22, "store error";
    /// The node's outbox already holds `SKYLARK_MAX_OUTBOX` propagation jobs (copies are
    /// far behind, e.g. during a long partition); the put was not stored. Retry later.
    Backlogged = 23, "propagation backlog full";
    /// A conditional put's condition (`if_version`, `if_absent`) does not hold on the node
    /// that accepted the put; nothing was written.
    ConditionFailed = 24, "put condition does not hold";
    /// An idempotency key was reused with other fields or bytes; nothing was written.
    IdempotencyConflict = 25, "idempotency key reused with other bytes";
    /// `skylark_get_bundle` with `wait_for`: the deadline (`wait_ms`) passed before every
    /// named field was readable; the fields present so far are delivered as with `Ok`.
    TimedOut = 26, "wait_for deadline passed";
    /// The plugin's configuration (environment) is invalid.
    ConfigInvalid = 30, "invalid plugin configuration";
    /// The call is not available here (guest SDK built for a non-wasm target).
    Unsupported = 31, "not supported on this target";
    /// A bug in the host: it was caught and reported instead of crashing the runtime.
    Internal = 99, "internal host error";
}

impl Status {
    /// The raw code as passed through the ABI.
    pub fn code(self) -> i32 {
        self as i32
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.describe(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for s in Status::ALL {
            assert!(seen.insert(s.code()), "duplicate code {}", s.code());
            assert_eq!(Status::from_code(s.code()), Some(*s));
        }
        assert_eq!(Status::from_code(12345), None);
        assert_eq!(Status::Ok.code(), 0);
    }

    #[test]
    fn display_names_code() {
        assert_eq!(Status::NotFound.to_string(), "bundle not found (1)");
        assert_eq!(Status::StoreTimeout.name(), "StoreTimeout");
    }
}
