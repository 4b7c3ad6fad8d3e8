//! libFuzzer entry point; the target itself is in `fuzz/targets/evaluate.rs`, which
//! `cargo test` also runs on every file of `fuzz/corpus/evaluate/` (see docs/fuzzing.md).
#![no_main]

#[path = "../targets/evaluate.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    target::run_bytes(data);
});
