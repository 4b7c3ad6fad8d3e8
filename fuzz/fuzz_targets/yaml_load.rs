//! libFuzzer entry point; the target itself is in `fuzz/targets/yaml_load.rs`, which
//! `cargo test` also runs on every file of `fuzz/corpus/yaml_load/` (see docs/fuzzing.md).
#![no_main]

#[path = "../targets/yaml_load.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
