//! Arbitrary bytes as a JWKS document: parsing must never panic, and whatever keys it yields
//! must be usable for key selection and verification without panicking.

use std::sync::LazyLock;

use meshguard_jwt::{Jwks, Limits, Token};

const DEMO: &str = include_str!("../../testdata/istio-demo/demo.jwt");

static TOKEN: LazyLock<Token> = LazyLock::new(|| {
    Token::decode(DEMO.trim(), &Limits::default()).expect("the demo token decodes")
});

pub fn run(data: &[u8]) {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(jwks) = Jwks::parse(json) else {
        return;
    };
    for key in jwks.keys() {
        let _ = (
            key.kid(),
            key.kty(),
            key.alg(),
            key.algorithms(),
            key.curve(),
        );
        assert!(key.index() < jwks.keys().len() + jwks.skipped().len());
    }
    let _ = format!("{jwks:?}");
    let _ = jwks.had_private_material();
    let _ = jwks.is_empty();
    // Key selection and verification with fuzzed keys.
    let _ = TOKEN.verify_signature(&jwks);
}
