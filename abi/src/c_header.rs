//! The C header for guests written in C (`guest-sdk/include/skylark.h`), rendered from this
//! crate's own tables: the imports of [`imports::ALL`], the statuses of [`Status::ALL`], the
//! records of [`crate::layout`], the id rules of [`ids`], [`wire::MAX_REQUIRE`] and
//! [`crate::ABI_VERSION`].
//!
//! The committed header is this rendering; a unit test fails when it is not, so a change
//! to the tables above is followed by regenerating it:
//! `cargo run -p skylark-abi --bin skylark-header > guest-sdk/include/skylark.h`.
//! The C parameter types and names of each import are the one thing the tables above do not
//! say; they are [`C_PARAMS`] here, and rendering fails for an import without them.

use crate::{ids, imports, wire, Status, ABI_VERSION};
use std::fmt::{self, Write};

/// The C declaration of one import: a one-line description and its parameters as
/// `(C type, name)`, in ABI order; the names are those of ABI.md's function table.
#[derive(Debug, Clone, Copy)]
pub struct CImport {
    pub name: &'static str,
    pub doc: &'static str,
    pub params: &'static [(&'static str, &'static str)],
}

const CHAIN: [(&str, &str); 2] = [("const char *", "chain_ptr"), ("uint32_t", "chain_len")];
const OPTS: [(&str, &str); 2] = [("const void *", "opts_ptr"), ("uint32_t", "opts_len")];
const ENTRIES: [(&str, &str); 2] = [
    ("const skylark_field_ref *", "entries_ptr"),
    ("uint32_t", "entries_count"),
];
const BUF: [(&str, &str); 3] = [
    ("void *", "buf_ptr"),
    ("uint32_t", "buf_cap"),
    ("skylark_get_result *", "result_ptr"),
];

/// The C types and names of every import's parameters (pointers are 32-bit on wasm32, so
/// each is one `i32` of the ABI). Entries for imports not (yet) in [`imports::ALL`] are
/// not rendered: `skylark_put_v2` is the ABI version 2 design's (ABI.md).
pub const C_PARAMS: &[CImport] = &[
    CImport {
        name: imports::VERSION,
        doc: "The host's ABI version (compare with SKYLARK_ABI_VERSION).",
        params: &[],
    },
    CImport {
        name: imports::PUT,
        doc: "Stores `value` as field `task` of the chain's bundle, in one round trip.",
        params: &[
            CHAIN[0],
            CHAIN[1],
            ("const char *", "task_ptr"),
            ("uint32_t", "task_len"),
            ("const void *", "value_ptr"),
            ("uint32_t", "value_len"),
            OPTS[0],
            OPTS[1],
        ],
    },
    CImport {
        name: imports::PUT_MANY,
        doc: "Stores `entries_count` fields of one bundle in one round trip, all or none.",
        params: &[CHAIN[0], CHAIN[1], ENTRIES[0], ENTRIES[1], OPTS[0], OPTS[1]],
    },
    CImport {
        name: "skylark_put_v2",
        doc: "As skylark_put_many, with conditions; writes entries_count uint64 versions.",
        params: &[
            CHAIN[0],
            CHAIN[1],
            ENTRIES[0],
            ENTRIES[1],
            OPTS[0],
            OPTS[1],
            ("uint64_t *", "versions_ptr"),
        ],
    },
    CImport {
        name: imports::GET_BUNDLE,
        doc: "Reads the chain's bundle (MessagePack) into buf, or keeps it under a handle \
              (SKYLARK_BUFFER_TOO_SMALL).",
        params: &[CHAIN[0], CHAIN[1], OPTS[0], OPTS[1], BUF[0], BUF[1], BUF[2]],
    },
    CImport {
        name: imports::TAKE_RESULT,
        doc: "Delivers the result kept under `handle` into buf and forgets it.",
        params: &[("uint32_t", "handle"), BUF[0], BUF[1], BUF[2]],
    },
    CImport {
        name: imports::DROP_RESULT,
        doc: "Forgets the result kept under `handle`.",
        params: &[("uint32_t", "handle")],
    },
    CImport {
        name: imports::LAST_ERROR,
        doc: "Copies the last failure's message (UTF-8, no terminator, truncated to buf_cap) \
              and writes its full length at len_ptr.",
        params: &[
            ("char *", "buf_ptr"),
            ("uint32_t", "buf_cap"),
            ("uint32_t *", "len_ptr"),
        ],
    },
];

/// The C fields of `layout::FieldRef`, in memory order (a test checks the order against
/// `FieldRef::to_bytes`).
const FIELD_REF: [(&str, &str, &str); 4] = [
    ("const char *", "task_ptr", "the task id"),
    ("uint32_t", "task_len", "its length in bytes"),
    ("const void *", "value_ptr", "the value bytes"),
    ("uint32_t", "value_len", "their length"),
];

/// The C fields of `layout::GetResult`, in memory order.
const GET_RESULT: [(&str, &str, &str); 2] = [
    ("uint32_t", "len", "the full length of the encoded result"),
    (
        "uint32_t",
        "handle",
        "with SKYLARK_BUFFER_TOO_SMALL: the handle for skylark_take_result; else 0",
    ),
];

/// The C fields of the table layout's header (`table::HEADER_SIZE` bytes), in memory order.
const TABLE_HEADER: [(&str, &str, &str); 10] = [
    ("char", "magic[4]", "SKYLARK_TABLE_MAGIC, not terminated"),
    ("uint32_t", "len", "the block's length"),
    (
        "uint32_t",
        "field_count",
        "records of skylark_table_field after this header",
    ),
    (
        "uint32_t",
        "placement_count",
        "records of skylark_table_placement after those",
    ),
    ("uint32_t", "chain_off", "the chain id"),
    ("uint32_t", "chain_len", "its length"),
    ("uint32_t", "node_off", "the node whose store answered"),
    ("uint32_t", "node_len", "its length"),
    ("uint32_t", "tier", "0 local, 1 neighbour, 2 global"),
    ("uint32_t", "reserved", "0"),
];

/// The C fields of one field record of the table layout (`table::FIELD_SIZE` bytes).
const TABLE_FIELD: [(&str, &str, &str); 5] = [
    ("uint32_t", "name_off", "the task id"),
    ("uint32_t", "name_len", "its length"),
    ("uint32_t", "value_off", "the value bytes"),
    ("uint32_t", "value_len", "their length"),
    ("uint64_t", "version", "0: none"),
];

/// The C fields of one placement record of the table layout (`table::PLACEMENT_SIZE`).
const TABLE_PLACEMENT: [(&str, &str, &str); 4] = [
    ("uint32_t", "task_off", "the task id"),
    ("uint32_t", "task_len", "its length"),
    ("uint32_t", "node_off", "the node its put elected"),
    ("uint32_t", "node_len", "its length"),
];

/// Why the header cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// An import of [`imports::ALL`] has no entry in [`C_PARAMS`].
    NoCParams(&'static str),
    /// Its entry in [`C_PARAMS`] lists another number of parameters than [`imports::ALL`].
    ParamCount {
        name: &'static str,
        table: usize,
        c: usize,
    },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::NoCParams(n) => write!(
                f,
                "import {n} has no C parameter types and names: add it to C_PARAMS in abi/src/c_header.rs"
            ),
            HeaderError::ParamCount { name, table, c } => write!(
                f,
                "import {name} takes {table} parameters but C_PARAMS in abi/src/c_header.rs lists {c}"
            ),
        }
    }
}

impl std::error::Error for HeaderError {}

/// `NotFound` -> `SKYLARK_NOT_FOUND`.
pub fn c_status_name(s: Status) -> String {
    let mut out = String::from("SKYLARK_");
    for (i, c) in s.name().chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Every byte [`ids::is_id_byte`] allows, in byte order.
fn id_bytes() -> String {
    (0u8..=255)
        .filter(|b| ids::is_id_byte(*b))
        .map(char::from)
        .collect()
}

fn c_params(name: &'static str, count: usize) -> Result<&'static CImport, HeaderError> {
    let c = C_PARAMS
        .iter()
        .find(|c| c.name == name)
        .ok_or(HeaderError::NoCParams(name))?;
    if c.params.len() != count {
        return Err(HeaderError::ParamCount {
            name,
            table: count,
            c: c.params.len(),
        });
    }
    Ok(c)
}

/// Renders `guest-sdk/include/skylark.h`.
pub fn render() -> Result<String, HeaderError> {
    let mut decls = String::new();
    for imp in imports::ALL {
        let c = c_params(imp.name, imp.params)?;
        let params = if c.params.is_empty() {
            "void".to_string()
        } else {
            c.params
                .iter()
                .map(|(ty, name)| c_decl(ty, name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        decls.push_str(&format!(
            "/* {} */\nSKYLARK_IMPORT(\"{}\")\nint32_t {}({params});\n\n",
            c.doc, imp.name, imp.name
        ));
    }
    let mut h = String::new();
    // Writing to a String cannot fail.
    let _ = write_header(&mut h, &decls);
    Ok(h)
}

/// `uint32_t len`, `const char *task_ptr`.
fn c_decl(ty: &str, name: &str) -> String {
    if ty.ends_with('*') {
        format!("{ty}{name}")
    } else {
        format!("{ty} {name}")
    }
}

fn write_header(h: &mut String, imports: &str) -> fmt::Result {
    writeln!(
        h,
        "/* skylark.h: the Skylark host ABI (version {ABI_VERSION}) for guests in C, compiled for wasm32-wasi.
 *
 * GENERATED from the skylark-abi crate; do not edit. Regenerate with
 *   cargo run -p skylark-abi --bin skylark-header > guest-sdk/include/skylark.h
 * (a unit test of skylark-abi fails while this file differs from the rendering).
 * ABI.md describes every function, option, status and the bundle encoding. */
#ifndef SKYLARK_H
#define SKYLARK_H

#if !defined(__wasm32__)
#error \"skylark.h declares imports of wasm32 guests: compile with --target=wasm32-wasi\"
#endif

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern \"C\" {{
#define SKYLARK_STATIC_ASSERT static_assert
#else
#define SKYLARK_STATIC_ASSERT _Static_assert
#endif

/* The ABI version this header describes; skylark_version() returns the host's. */
#define SKYLARK_ABI_VERSION {ABI_VERSION}

/* The import module of every function below. */
#define SKYLARK_MODULE \"{module}\"

/* Chain and task ids: 1 to SKYLARK_MAX_ID_LEN bytes, each one of SKYLARK_ID_BYTES;
 * anything else is SKYLARK_INVALID_ID. */
#define SKYLARK_MAX_ID_LEN {max_id}
#define SKYLARK_ID_BYTES \"{id_bytes}\"

/* Most task ids a get's `require` option may list. */
#define SKYLARK_MAX_REQUIRE {max_require}
",
        module = imports::MODULE,
        max_id = ids::MAX_ID_LEN,
        id_bytes = id_bytes(),
        max_require = wire::MAX_REQUIRE,
    )?;

    writeln!(
        h,
        "/* Status codes: every function but skylark_version returns one; every code but
 * SKYLARK_OK comes with a message (skylark_last_error). */
enum skylark_status {{"
    )?;
    for s in Status::ALL {
        writeln!(
            h,
            "    {} = {}, /* {} */",
            c_status_name(*s),
            s.code(),
            s.describe()
        )?;
    }
    writeln!(
        h,
        "}};

/* The status's name as ABI.md spells it (\"NotFound\"); NULL for a code this header does
 * not know. */
static inline const char *skylark_status_name(int32_t status) {{
    switch (status) {{"
    )?;
    for s in Status::ALL {
        writeln!(
            h,
            "    case {}: return \"{}\";",
            c_status_name(*s),
            s.name()
        )?;
    }
    writeln!(
        h,
        "    default: return NULL;
    }}
}}

/* 1 when `id[0..len]` is a valid chain or task id, else 0. */
static inline int skylark_valid_id(const char *id, size_t len) {{
    if (len == 0 || len > SKYLARK_MAX_ID_LEN) return 0;
    for (size_t i = 0; i < len; i++) {{
        const char *allowed = SKYLARK_ID_BYTES;
        while (*allowed && *allowed != id[i]) allowed++;
        if (!*allowed) return 0;
    }}
    return 1;
}}
"
    )?;

    write_record(
        h,
        "One field of skylark_put_many: where its task id and value are in guest memory \
         (layout::FieldRef).",
        "skylark_field_ref",
        &FIELD_REF,
        crate::layout::FieldRef::SIZE,
    )?;
    write_record(
        h,
        "What skylark_get_bundle and skylark_take_result write at result_ptr \
         (layout::GetResult).",
        "skylark_get_result",
        &GET_RESULT,
        crate::layout::GetResult::SIZE,
    )?;
    writeln!(
        h,
        "/* The table layout of a bundle (get option layout = \"table\", ABI.md \"Bundle table
 * layout\"): this header, field_count field records sorted by name, placement_count
 * placement records, then the bytes. Offsets count from the start of the block. */
#define SKYLARK_TABLE_MAGIC \"{magic}\"
",
        magic = String::from_utf8_lossy(&crate::table::MAGIC),
    )?;
    write_record(
        h,
        "The header of the table layout (table::HEADER_SIZE).",
        "skylark_table_header",
        &TABLE_HEADER,
        crate::table::HEADER_SIZE,
    )?;
    write_record(
        h,
        "One field of the table layout (table::FIELD_SIZE).",
        "skylark_table_field",
        &TABLE_FIELD,
        crate::table::FIELD_SIZE,
    )?;
    write_record(
        h,
        "One placement entry of the table layout (table::PLACEMENT_SIZE).",
        "skylark_table_placement",
        &TABLE_PLACEMENT,
        crate::table::PLACEMENT_SIZE,
    )?;

    writeln!(
        h,
        "#define SKYLARK_IMPORT(name) __attribute__((import_module(SKYLARK_MODULE), import_name(name)))

/* The imports (skylark_abi::imports::ALL). Pointers and lengths are in the guest's memory. */

{imports}#ifdef __cplusplus
}}
#endif

#endif /* SKYLARK_H */"
    )
}

fn write_record(
    h: &mut String,
    doc: &str,
    name: &str,
    fields: &[(&str, &str, &str)],
    size: usize,
) -> fmt::Result {
    writeln!(h, "/* {doc} */\ntypedef struct {name} {{")?;
    for (ty, field, what) in fields {
        let decl = format!("{};", c_decl(ty, field));
        writeln!(h, "    {decl:<28}/* {what} */")?;
    }
    writeln!(
        h,
        "}} {name};
SKYLARK_STATIC_ASSERT(sizeof({name}) == {size}, \"{name} is {size} bytes\");
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{FieldRef, GetResult};

    const COMMITTED: &str = include_str!("../../guest-sdk/include/skylark.h");

    /// The committed header is the rendering of the tables (when this fails after a change
    /// to the ABI tables: regenerate, see the module doc).
    #[test]
    fn committed_header_is_the_rendering() {
        let rendered = render().expect("render the header");
        if let Some((i, (c, r))) = COMMITTED
            .lines()
            .zip(rendered.lines())
            .enumerate()
            .find(|(_, (c, r))| c != r)
        {
            panic!(
                "guest-sdk/include/skylark.h differs from the rendering at line {}:\n  \
                 committed: {c}\n  rendered:  {r}\nregenerate it: cargo run -p skylark-abi \
                 --bin skylark-header > guest-sdk/include/skylark.h",
                i + 1
            );
        }
        assert_eq!(
            COMMITTED.lines().count(),
            rendered.lines().count(),
            "guest-sdk/include/skylark.h has another number of lines than the rendering; \
             regenerate it: cargo run -p skylark-abi --bin skylark-header > \
             guest-sdk/include/skylark.h"
        );
    }

    #[test]
    fn every_import_and_status_is_declared() {
        let h = render().unwrap();
        for imp in imports::ALL {
            assert!(
                h.contains(&format!(
                    "SKYLARK_IMPORT(\"{}\")\nint32_t {}(",
                    imp.name, imp.name
                )),
                "{}",
                imp.name
            );
        }
        for s in Status::ALL {
            assert!(
                h.contains(&format!("    {} = {},", c_status_name(*s), s.code())),
                "{s:?}"
            );
        }
        assert!(h.contains(&format!("#define SKYLARK_ABI_VERSION {ABI_VERSION}\n")));
        assert_eq!(
            c_status_name(Status::BufferTooSmall),
            "SKYLARK_BUFFER_TOO_SMALL"
        );
        assert_eq!(c_status_name(Status::Ok), "SKYLARK_OK");
    }

    #[test]
    fn an_import_without_c_parameters_is_an_error() {
        assert_eq!(
            c_params("skylark_nope", 0).unwrap_err(),
            HeaderError::NoCParams("skylark_nope")
        );
        let e = c_params(imports::PUT, 7).unwrap_err();
        assert_eq!(
            e,
            HeaderError::ParamCount {
                name: imports::PUT,
                table: 7,
                c: 8
            }
        );
        assert!(e.to_string().contains("C_PARAMS"), "{e}");
        for imp in imports::ALL {
            assert!(c_params(imp.name, imp.params).is_ok(), "{}", imp.name);
        }
    }

    #[test]
    fn record_fields_are_in_memory_order() {
        let f = FieldRef {
            task_ptr: 1,
            task_len: 2,
            value_ptr: 3,
            value_len: 4,
        }
        .to_bytes();
        let words: Vec<u32> = f
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        assert_eq!(words, [1, 2, 3, 4]);
        let names: Vec<&str> = FIELD_REF.iter().map(|f| f.1).collect();
        assert_eq!(names, ["task_ptr", "task_len", "value_ptr", "value_len"]);
        assert_eq!(FIELD_REF.len() * 4, FieldRef::SIZE);

        let r = GetResult { len: 1, handle: 2 }.to_bytes();
        assert_eq!(r, [1, 0, 0, 0, 2, 0, 0, 0]);
        let names: Vec<&str> = GET_RESULT.iter().map(|f| f.1).collect();
        assert_eq!(names, ["len", "handle"]);
        assert_eq!(GET_RESULT.len() * 4, GetResult::SIZE);
    }

    #[test]
    fn id_bytes_are_the_id_rules() {
        let allowed = id_bytes();
        assert_eq!(allowed.len(), 26 * 2 + 10 + 3);
        for b in 0u8..=255 {
            assert_eq!(allowed.as_bytes().contains(&b), ids::is_id_byte(b), "{b}");
        }
    }
}
