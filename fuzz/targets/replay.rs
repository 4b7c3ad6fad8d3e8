//! Replays a fuzz target's committed corpus as an ordinary test. Included by path from the
//! `fuzz_corpus` tests of the jwt, policy and engine crates (docs/fuzzing.md); not a fuzz target.

use std::path::{Path, PathBuf};

/// Runs `run` on every file of `fuzz/corpus/<target>/` in name order (some targets keep state
/// across inputs, as in a fuzzing run), names the file whose input panics, and returns what
/// `run` returned for each. A crash that was fixed is committed there under a descriptive
/// name, so this replays it from then on.
pub fn replay<R>(target: &str, run: fn(&[u8]) -> R) -> Vec<R> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no inputs", dir.display());
    let mut results = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        let Ok(result) = std::panic::catch_unwind(|| run(&data)) else {
            let input = format!(
                "fuzz/corpus/{target}/{}",
                file.file_name().unwrap().display()
            );
            panic!(
                "fuzz target {target} fails on {input} (reproduce: cargo fuzz run \
                 --fuzz-dir fuzz --sanitizer none {target} {input})"
            );
        };
        results.push(result);
    }
    results
}
