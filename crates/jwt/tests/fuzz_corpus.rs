//! The committed fuzz corpus as a regression test: every input under `fuzz/corpus/<target>/`
//! through the very function the cargo-fuzz target runs (`fuzz/targets/<target>.rs`, included
//! here by path), with the target's own assertions, so that `cargo test` catches a seed or a
//! fixed crash that fails again without cargo-fuzz or a nightly toolchain. Targets here:
//! `Token::decode`, claim checks and signature verification; `Jwks::parse` and key use. See docs/fuzzing.md.

#[path = "../../../fuzz/targets/replay.rs"]
mod replay;
use replay::replay;

#[path = "../../../fuzz/targets/jwt_decode.rs"]
mod jwt_decode;

#[path = "../../../fuzz/targets/jwks_parse.rs"]
mod jwks_parse;

#[test]
fn jwt_decode_corpus() {
    replay("jwt_decode", jwt_decode::run);
}

#[test]
fn jwks_parse_corpus() {
    replay("jwks_parse", jwks_parse::run);
}
