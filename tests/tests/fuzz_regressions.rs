//! Replays the fuzzers' committed inputs on stable Rust, in the normal test suite: every
//! file of `fuzz/regressions/<target>/` (inputs that once broke a property; each stays
//! fixed) and of `fuzz/seeds/<target>/` (the seed corpus), plus the built-in seeds,
//! through the same property checks the cargo-fuzz targets run (`fuzz/src/`, included
//! here by path, so there is one copy of every check).
//!
//! `SKYLARK_WRITE_SEEDS=1 cargo test -p skylark-tests --test fuzz_regressions` rewrites
//! `fuzz/seeds/` from the built-in seeds.

#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod props;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .join("fuzz")
}

/// The files of `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    v.sort();
    v
}

/// Runs every input of `kind/<target>/`; returns how many ran, panics listing failures.
fn replay(kind: &str) -> usize {
    props::instance::configure();
    let mut ran = 0;
    let mut failed = Vec::new();
    let root = fuzz_dir().join(kind);
    for dir in files_and_dirs(&root) {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let check = props::target(&name)
            .unwrap_or_else(|| panic!("{} names no fuzz target", dir.display()));
        for f in files(&dir) {
            let data = std::fs::read(&f).expect("read input");
            ran += 1;
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| check(&data))) {
                let why = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failed.push(format!("{}: {why}", f.display()));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} inputs fail:\n{}",
        failed.len(),
        failed.join("\n")
    );
    ran
}

fn files_and_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

#[test]
fn regressions_stay_fixed() {
    let n = replay("regressions");
    eprintln!("replayed {n} regression inputs");
    // The inputs that once broke a property are committed (fuzz/regressions/); finding
    // none means the test looked in the wrong place or they were lost, not that all pass.
    assert!(n > 0, "no regression inputs under fuzz/regressions/");
    for dir in files_and_dirs(&fuzz_dir().join("regressions")) {
        assert!(
            !files(&dir).is_empty(),
            "{} holds no regression input",
            dir.display()
        );
    }
}

#[test]
fn seed_corpus_passes() {
    props::instance::configure();
    if std::env::var_os("SKYLARK_WRITE_SEEDS").is_some() {
        for (target, seeds) in props::seeds() {
            let dir = fuzz_dir().join("seeds").join(target);
            std::fs::create_dir_all(&dir).expect("create seed dir");
            for (i, s) in seeds.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i:02}")), s).expect("write seed");
            }
        }
    }
    for (target, seeds) in props::seeds() {
        let check = props::target(target).expect("seed of a known target");
        for s in &seeds {
            check(s);
        }
    }
    let n = replay("seeds");
    assert!(n > 0, "no seed corpus under fuzz/seeds/");
}

#[test]
fn every_target_has_a_fuzz_binary() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in props::TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "target {name} has no [[bin]] in fuzz/Cargo.toml"
        );
        assert!(fuzz_dir()
            .join("fuzz_targets")
            .join(format!("{name}.rs"))
            .exists());
    }
}
