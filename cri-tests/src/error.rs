//! The harness's error type: what failed, with the context needed to find out why.

use std::path::Path;

/// A failure of the harness or of the path under test.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This machine cannot run the test (not root, a tool or the network missing); the
    /// test skips, or fails in CI unless `SKYLARK_SKIP_CRI` allows it.
    #[error("{0}")]
    Unavailable(String),
    /// An I/O operation on a named object failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A CRI call was refused.
    #[error("CRI {call}: {status}")]
    Cri {
        call: &'static str,
        status: Box<tonic::Status>,
    },
    /// Anything else that went wrong; the message says what.
    #[error("{0}")]
    Failed(String),
}

/// The harness's result.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error on `path`, for `what` (e.g. "write").
    pub fn io(what: &str, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            what: format!("{what} {}", path.display()),
            source,
        }
    }

    /// A refused CRI call.
    pub fn cri(call: &'static str, status: tonic::Status) -> Error {
        Error::Cri {
            call,
            status: Box::new(status),
        }
    }
}
