//! The committed fuzz corpus as a regression test: every input under `fuzz/corpus/<target>/`
//! through the very function the cargo-fuzz target runs (`fuzz/targets/<target>.rs`, included
//! here by path), with the target's own assertions, so that `cargo test` catches a seed or a
//! fixed crash that fails again without cargo-fuzz or a nightly toolchain. Targets here:
//! path normalization in all four modes; evaluation against a fixed policy set. See docs/fuzzing.md.

#[path = "../../../fuzz/targets/replay.rs"]
mod replay;
use replay::replay;

#[path = "../../../fuzz/targets/normalize.rs"]
mod normalize;

#[path = "../../../fuzz/targets/evaluate.rs"]
mod evaluate;

#[test]
fn normalize_corpus() {
    replay("normalize", normalize::run);
}

#[test]
fn evaluate_corpus() {
    let read = replay("evaluate", evaluate::run_bytes);
    // Every seed is a structured input the target reads (none is skipped as unreadable).
    assert!(read.iter().all(|&ran| ran), "{read:?}");
}
