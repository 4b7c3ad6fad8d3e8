//! The committed fuzz corpus as a regression test: every input under `fuzz/corpus/<target>/`
//! through the very function the cargo-fuzz target runs (`fuzz/targets/<target>.rs`, included
//! here by path), with the target's own assertions, so that `cargo test` catches a seed or a
//! fixed crash that fails again without cargo-fuzz or a nightly toolchain. Targets here:
//! loading, compiling and validating policy YAML. See docs/fuzzing.md.

#[path = "../../../fuzz/targets/replay.rs"]
mod replay;
use replay::replay;

#[path = "../../../fuzz/targets/yaml_load.rs"]
mod yaml_load;

#[test]
fn yaml_load_corpus() {
    replay("yaml_load", yaml_load::run);
}
