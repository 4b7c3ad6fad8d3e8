//! The committed fuzz corpus as a regression test: every input under `fuzz/corpus/<target>/`
//! through the very function the cargo-fuzz target runs (`fuzz/targets/<target>.rs`, included
//! here by path), with the target's own assertions, so that `cargo test` catches a seed or a
//! fixed crash that fails again without cargo-fuzz or a nightly toolchain. Targets here:
//! `Token::decode`, claim checks and signature verification; `Jwks::parse` and key use. See docs/fuzzing.md.

use std::path::{Path, PathBuf};

#[path = "../../../fuzz/targets/jwt_decode.rs"]
mod jwt_decode;

#[path = "../../../fuzz/targets/jwks_parse.rs"]
mod jwks_parse;

/// Runs `run` on every file of `fuzz/corpus/<target>/` in name order (some targets keep state
/// across inputs, as in a fuzzing run), names the file whose input panics, and returns what
/// `run` returned for each. A crash that was fixed is committed there under a descriptive
/// name, so this replays it from then on.
fn replay<R>(target: &str, run: fn(&[u8]) -> R) -> Vec<R> {
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

#[test]
fn jwt_decode_corpus() {
    replay("jwt_decode", jwt_decode::run);
}

#[test]
fn jwks_parse_corpus() {
    replay("jwks_parse", jwks_parse::run);
}
