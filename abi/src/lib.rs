//! The contract between the Skylark host plugin and the guest SDK.
//!
//! Everything both sides must agree on lives here and only here: the import module and
//! function names ([`imports`]), the numeric status codes ([`Status`]), the rules for chain
//! and task ids ([`ids`]), the fixed-layout structures passed through guest memory
//! ([`layout`]) and the MessagePack wire format of bundles and options ([`wire`]).
//! `ABI.md` at the repository root describes the same contract for other languages;
//! [`c_header`] renders it as the C header `guest-sdk/include/skylark.h`.

pub mod c_header;
pub mod ids;
pub mod imports;
pub mod layout;
pub mod status;
pub mod table;
pub mod wire;

pub use status::Status;

/// Version of the host/guest contract. Version 2 adds `skylark_put_v2`, conditional and
/// idempotent puts and the table layout of bundles (get option `layout`); every
/// version-1 import keeps its parameters and meaning.
pub const ABI_VERSION: i32 = 2;
