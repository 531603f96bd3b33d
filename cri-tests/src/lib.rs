//! The CRI test's harness: a private containerd (Debian trixie's 1.7, installed by
//! `runtimeclass/cri/install-containerd.sh`) with a generated configuration in a temporary
//! directory, the images it runs (built by the project's `oci-image` tool, plus a
//! statically linked pause image), and a CRI client that drives pods through containerd's
//! CRI API the way a kubelet does. The test itself is `tests/cri.rs`.
//!
//! - [`machine`]: what this machine has (root, tools, the private containerd and crun,
//!   cgroup layout); anything missing is [`Error::Unavailable`], which the test turns
//!   into a skip outside CI and a failure in CI unless `SKYLARK_SKIP_CRI` gives a reason.
//! - [`images`]: the pause program (`gcc -static`) and the OCI archives of the pause,
//!   probe and preprocess images.
//! - [`containerd`]: the configuration (runtime handlers `crun` and, optionally, `skylark`),
//!   the process, image import.
//! - [`kubelet`]: the CRI client and the pod/container life cycle.

pub mod containerd;
pub mod error;
pub mod images;
pub mod kubelet;
pub mod machine;

pub use error::{Error, Result};
