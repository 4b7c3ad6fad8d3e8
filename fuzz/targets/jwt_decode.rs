//! Arbitrary bytes as a compact JWT: strict decoding, the key-less claim checks and signature
//! verification against Istio's demo JWKS must never panic.
//!
//! Property: the demo key verifies exactly the two demo tokens. Decoding is strict (canonical
//! base64url, no empty sections, no duplicate members) and RS256 signatures are
//! deterministic, so any other text that verifies would be a malleability bug.

use std::sync::LazyLock;

use meshguard_jwt::{Jwks, Limits, Token, Validation};

const JWKS_JSON: &str = include_str!("../../testdata/istio-demo/jwks.json");
const DEMO: &str = include_str!("../../testdata/istio-demo/demo.jwt");
const GROUPS_SCOPE: &str = include_str!("../../testdata/istio-demo/groups-scope.jwt");

static JWKS: LazyLock<Jwks> =
    LazyLock::new(|| Jwks::parse(JWKS_JSON).expect("the demo JWKS parses"));

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let raw = text.as_ref();
    let Ok(token) = Token::decode(raw, &Limits::default()) else {
        return;
    };
    // The payload section is a slice of the input between the first two dots.
    assert!(raw.contains(token.payload_b64()));
    let _ = token.check_time(1_795_890_870, 60);
    let _ = token.check_time(u64::MAX, u64::MAX);
    let _ = token.check_audiences(&["https://example.com/".to_string()]);
    if token.verify_signature(&JWKS).is_ok() {
        assert!(
            raw == DEMO.trim() || raw == GROUPS_SCOPE.trim(),
            "a token other than the demo tokens verified: {raw:?}"
        );
    }
    // The full sequence (decode, issuer, time, audiences, signature) agrees with the parts.
    let _ = meshguard_jwt::verify(raw, &Validation::default(), &JWKS, 1_795_890_870);
}
