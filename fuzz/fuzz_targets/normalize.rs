//! libFuzzer entry point; the target itself is in `fuzz/targets/normalize.rs`, which
//! `cargo test` also runs on every file of `fuzz/corpus/normalize/` (see docs/fuzzing.md).
#![no_main]

#[path = "../targets/normalize.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
