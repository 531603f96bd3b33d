//! Names of the host module and its functions, as a guest imports them, and the one table
//! ([`ALL`]) of every import with its parameter count.
//!
//! Every function takes and returns `i32` values only (pointers and lengths are guest
//! memory offsets in bytes) and returns a [`crate::Status`] code. The plugin takes each
//! trampoline's parameter count from [`ALL`] through [`params`] (at compile time) and
//! checks its function list against [`ALL`] with [`check`] when it registers the module, in
//! release builds too: a host function can never read more parameters than WasmEdge was
//! told it has.

use std::fmt;

/// The import module every Skylark host function lives in.
pub const MODULE: &str = "skylark";

/// `() -> abi_version`
pub const VERSION: &str = "skylark_version";
/// `(chain_ptr, chain_len, task_ptr, task_len, value_ptr, value_len, opts_ptr, opts_len) -> status`
pub const PUT: &str = "skylark_put";
/// `(chain_ptr, chain_len, entries_ptr, entries_count, opts_ptr, opts_len) -> status`
pub const PUT_MANY: &str = "skylark_put_many";
/// `(chain_ptr, chain_len, entries_ptr, entries_count, opts_ptr, opts_len, versions_ptr) -> status`
/// (ABI version 2): as [`PUT_MANY`], and writes `entries_count` little-endian `u64`
/// versions at `versions_ptr`.
pub const PUT_V2: &str = "skylark_put_v2";
/// `(chain_ptr, chain_len, opts_ptr, opts_len, buf_ptr, buf_cap, result_ptr) -> status`
pub const GET_BUNDLE: &str = "skylark_get_bundle";
/// `(handle, buf_ptr, buf_cap, result_ptr) -> status`
pub const TAKE_RESULT: &str = "skylark_take_result";
/// `(handle) -> status`
pub const DROP_RESULT: &str = "skylark_drop_result";
/// `(buf_ptr, buf_cap, len_ptr) -> status`
pub const LAST_ERROR: &str = "skylark_last_error";

/// One host function: its import name and its number of `i32` parameters (each returns
/// one `i32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Import {
    pub name: &'static str,
    pub params: usize,
}

const fn import(name: &'static str, params: usize) -> Import {
    Import { name, params }
}

/// Every import with its number of `i32` parameters: the only place the counts are written.
pub const ALL: &[Import] = &[
    import(VERSION, 0),
    import(PUT, 8),
    import(PUT_MANY, 6),
    import(GET_BUNDLE, 7),
    import(TAKE_RESULT, 4),
    import(DROP_RESULT, 1),
    import(LAST_ERROR, 3),
    import(PUT_V2, 7),
];

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The parameter count of import `name` in [`ALL`]. Meant for constant contexts, where a
/// name missing from the table is a compile error; at run time it panics for such a name.
pub const fn params(name: &str) -> usize {
    let mut i = 0;
    while i < ALL.len() {
        if same(ALL[i].name, name) {
            return ALL[i].params;
        }
        i += 1;
    }
    panic!("not a Skylark import: add it to skylark_abi::imports::ALL")
}

/// How a host's function list differs from [`ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// An import of [`ALL`] has no host function.
    Missing(&'static str),
    /// A host function that is not in [`ALL`].
    Unknown(String),
    /// Two host functions for one import.
    Duplicate(String),
    /// A host function reads a different number of parameters than [`ALL`] declares.
    Params {
        name: &'static str,
        table: usize,
        host: usize,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Missing(n) => write!(f, "import {n} has no host function"),
            Mismatch::Unknown(n) => write!(f, "host function {n:?} is not a Skylark import"),
            Mismatch::Duplicate(n) => write!(f, "import {n} has more than one host function"),
            Mismatch::Params { name, table, host } => write!(
                f,
                "import {name} takes {table} parameters but its host function reads {host}"
            ),
        }
    }
}

impl std::error::Error for Mismatch {}

/// Checks a host's functions, given as `(import name, parameters the function reads)`,
/// against [`ALL`]: exactly one function per import, each reading exactly the declared
/// number of parameters.
pub fn check<'a>(host: impl IntoIterator<Item = (&'a str, usize)>) -> Result<(), Mismatch> {
    let mut seen = [false; ALL.len()];
    for (name, n) in host {
        let Some(i) = ALL.iter().position(|imp| imp.name == name) else {
            return Err(Mismatch::Unknown(name.to_string()));
        };
        if std::mem::replace(&mut seen[i], true) {
            return Err(Mismatch::Duplicate(name.to_string()));
        }
        if ALL[i].params != n {
            return Err(Mismatch::Params {
                name: ALL[i].name,
                table: ALL[i].params,
                host: n,
            });
        }
    }
    match seen.iter().position(|s| !s) {
        Some(i) => Err(Mismatch::Missing(ALL[i].name)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Vec<(&'static str, usize)> {
        ALL.iter().map(|i| (i.name, i.params)).collect()
    }

    #[test]
    fn params_reads_the_table() {
        const PUT_PARAMS: usize = params(PUT);
        assert_eq!(PUT_PARAMS, 8);
        for imp in ALL {
            assert_eq!(params(imp.name), imp.params);
        }
        assert!(std::panic::catch_unwind(|| params("skylark_nope")).is_err());
    }

    #[test]
    fn check_accepts_the_table_and_names_every_kind_of_mismatch() {
        assert_eq!(check(table()), Ok(()));
        let mut t = table();
        t.reverse();
        assert_eq!(check(t), Ok(()), "order does not matter");

        let mut t = table();
        t[1].1 = 7;
        let e = check(t).unwrap_err();
        assert_eq!(
            e,
            Mismatch::Params {
                name: PUT,
                table: 8,
                host: 7
            }
        );
        assert_eq!(
            e.to_string(),
            "import skylark_put takes 8 parameters but its host function reads 7"
        );

        let t: Vec<_> = table()
            .into_iter()
            .filter(|(n, _)| *n != LAST_ERROR)
            .collect();
        assert_eq!(check(t), Err(Mismatch::Missing(LAST_ERROR)));

        let mut t = table();
        t.push((PUT, 8));
        assert_eq!(check(t), Err(Mismatch::Duplicate(PUT.into())));

        let mut t = table();
        t.push(("skylark_extra", 0));
        assert_eq!(check(t), Err(Mismatch::Unknown("skylark_extra".into())));
    }

    #[test]
    fn names_are_unique_and_in_the_module_namespace() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(a.name.starts_with("skylark_"), "{}", a.name);
            assert!(ALL[i + 1..].iter().all(|b| b.name != a.name), "{}", a.name);
        }
    }

    /// ABI.md's function table lists the same imports with the same parameter counts.
    #[test]
    fn abi_md_lists_the_table() {
        let doc = include_str!("../../ABI.md");
        let mut rows = Vec::new();
        for line in doc.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let Some(name) = cells.get(1).and_then(|c| c.strip_prefix('`')) else {
                continue;
            };
            let Some(name) = name.strip_suffix('`') else {
                continue;
            };
            if !name.starts_with("skylark_") || cells.len() < 4 {
                continue;
            }
            let params = match cells[2] {
                "—" | "" => 0,
                p => p.split(',').count(),
            };
            rows.push((name.to_string(), params));
        }
        let expected: Vec<(String, usize)> =
            ALL.iter().map(|i| (i.name.to_string(), i.params)).collect();
        assert_eq!(rows, expected);
    }
}
