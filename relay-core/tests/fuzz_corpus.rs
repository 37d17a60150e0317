//! Replays the committed fuzz corpora and crash regressions (`fuzz/corpus/<target>/`
//! and `fuzz/regressions/<target>/`) through the fuzz entry points, so the normal
//! test run on stable keeps every input that was once interesting or crashing.

use std::path::{Path, PathBuf};

use relay_core::fuzzing;

#[path = "support/epoch.rs"]
mod epoch;

/// The fuzz crate's directory.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Runs `f` on every file of the target's corpus and regressions; fails if
/// there is none, so a missing or emptied corpus does not pass silently.
fn replay(target: &str, f: fn(&[u8])) {
    let mut replayed = 0;
    for kind in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .map(|e| e.expect("reading a corpus directory").path())
            .filter(|p| {
                p.is_file()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        for path in paths {
            let data =
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let outcome = std::panic::catch_unwind(|| f(&data));
            assert!(
                outcome.is_ok(),
                "{target}: {} broke an invariant (panic above)",
                path.display()
            );
            replayed += 1;
        }
    }
    assert!(
        replayed > 0,
        "no corpus for {target} under {}",
        fuzz_dir().display()
    );
    println!("{target}: replayed {replayed} inputs");
}

#[test]
fn xmatrix_corpus() {
    replay("xmatrix", fuzzing::xmatrix);
}

#[test]
fn identifiers_corpus() {
    replay("identifiers", fuzzing::identifiers);
}

#[test]
fn canonical_json_corpus() {
    replay("canonical_json", fuzzing::canonical_json);
}

/// The relay machine at the tests' base instant: it only records `now`.
fn relay_request_now(data: &[u8]) {
    fuzzing::relay_request(epoch::epoch(), data);
}

#[test]
fn relay_request_corpus() {
    replay("relay_request", relay_request_now);
}
