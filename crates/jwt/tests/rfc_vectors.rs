//! RFC 7515 appendix A.1-A.4 and RFC 8037 A.4 examples, verified with the RFCs' keys
//! (testdata/jwt/rfc). The clock is pinned before the vectors' `exp` (1300819380).

mod common;

use meshguard_jwt::{
    Algorithm, Jwks, Limits, Status, Token, Validation, verify, verify_compact_signature,
};
use serde_json::Value;

const RFC_EXP: u64 = 1_300_819_380;

fn vector(name: &str) -> (String, Jwks, Value) {
    let all = common::read_json("jwt/rfc/vectors.json");
    let v = all[name].clone();
    let jwks = Jwks::parse(&common::read(&format!(
        "jwt/rfc/{}",
        v["jwks"].as_str().unwrap()
    )))
    .expect("RFC JWKS parses");
    assert_eq!(
        jwks.keys().len(),
        1,
        "{name}: key usable, skipped: {:?}",
        jwks.skipped()
    );
    (v["token"].as_str().unwrap().to_owned(), jwks, v)
}

fn check_jwt_level(name: &str, alg: Algorithm) {
    let (token, jwks, v) = vector(name);
    assert_eq!(v["alg"], alg.as_str());
    let validation = Validation {
        issuer: Some("joe".into()),
        ..Validation::default()
    };
    let t = verify(&token, &validation, &jwks, RFC_EXP - 100).expect("verifies");
    assert_eq!(t.header().alg, alg);
    assert_eq!(t.claims().iss.as_deref(), Some("joe"));
    assert_eq!(t.claims().exp, Some(RFC_EXP));
    assert_eq!(
        t.claims().payload["http://example.com/is_root"],
        Value::Bool(true)
    );
    // Same token, decode + signature only.
    let d = Token::decode(&token, &Limits::default()).unwrap();
    assert_eq!(d.verify_signature(&jwks), Ok(()));
    // The clock matters: at exp + 61 it is expired, at exp + 60 not.
    assert_eq!(
        verify(&token, &validation, &jwks, RFC_EXP + 61).unwrap_err(),
        Status::JwtExpired
    );
    assert!(verify(&token, &validation, &jwks, RFC_EXP + 60).is_ok());
    // A changed claim breaks the signature.
    let forged = common::swap_payload(
        &token,
        r#"{"iss":"joe","exp":1300819380,"http://example.com/is_root":false}"#,
    );
    assert_eq!(
        verify(&forged, &validation, &jwks, RFC_EXP - 100).unwrap_err(),
        Status::JwtVerificationFail
    );
    // Whitespace-preserving tamper (case flip inside a claim name).
    let flipped = common::flip_payload_bit(&token);
    assert_eq!(
        Token::decode(&flipped, &Limits::default())
            .unwrap()
            .verify_signature(&jwks),
        Err(Status::JwtVerificationFail)
    );
}

#[test]
fn rfc7515_a1_hs256() {
    check_jwt_level("rfc7515-a1", Algorithm::HS256);
    let (token, _, _) = vector("rfc7515-a1");
    // Its header has CRLF whitespace and a typ.
    let t = Token::decode(&token, &Limits::default()).unwrap();
    assert_eq!(t.header().typ.as_deref(), Some("JWT"));
}

#[test]
fn rfc7515_a2_rs256() {
    check_jwt_level("rfc7515-a2", Algorithm::RS256);
    // The key has no alg, so a PS256 relabel of the same signature must fail, not match.
    let (_, jwks, _) = vector("rfc7515-a2");
    assert_eq!(jwks.keys()[0].algorithms().len(), 6);
}

#[test]
fn rfc7515_a3_es256() {
    check_jwt_level("rfc7515-a3", Algorithm::ES256);
}

#[test]
fn rfc7515_a4_es512_signature_level() {
    let (token, jwks, _) = vector("rfc7515-a4");
    assert_eq!(verify_compact_signature(&token, &jwks), Ok(()));
    // The payload is the bytes "Payload": a JWT verifier must refuse it.
    assert_eq!(
        Token::decode(&token, &Limits::default()).unwrap_err(),
        Status::JwtPayloadParseErrorBadJson
    );
    // One changed payload byte ("Payloae").
    let forged = token.replacen("UGF5bG9hZA", "UGF5bG9hZQ", 1);
    assert_eq!(
        verify_compact_signature(&forged, &jwks),
        Err(Status::JwtVerificationFail)
    );
}

#[test]
fn rfc8037_a4_ed25519_signature_level() {
    let (token, jwks, _) = vector("rfc8037-a4");
    assert_eq!(verify_compact_signature(&token, &jwks), Ok(()));
    assert_eq!(
        Token::decode(&token, &Limits::default()).unwrap_err(),
        Status::JwtPayloadParseErrorBadJson
    );
    let forged = token.replacen(
        "RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc",
        "RXhibXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc",
        1,
    );
    assert_eq!(
        verify_compact_signature(&forged, &jwks),
        Err(Status::JwtVerificationFail)
    );
}

#[test]
fn rfc_keys_do_not_cross_verify() {
    let (a2, _, _) = vector("rfc7515-a2");
    let (_, a3_jwks, _) = vector("rfc7515-a3");
    let (_, a1_jwks, _) = vector("rfc7515-a1");
    let t = Token::decode(&a2, &Limits::default()).unwrap();
    // RS256 token vs an EC key without alg: kid/alg pass, key type does not.
    assert_eq!(
        t.verify_signature(&a3_jwks),
        Err(Status::JwtVerificationFail)
    );
    assert_eq!(
        t.verify_signature(&a1_jwks),
        Err(Status::JwtVerificationFail)
    );
}

#[test]
fn rfc7515_a5_unsecured_is_rejected() {
    // RFC 7515 A.5: alg "none" with an empty signature section.
    let unsecured = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.";
    let (_, jwks, _) = vector("rfc7515-a1");
    assert_eq!(
        verify(unsecured, &Validation::default(), &jwks, RFC_EXP - 100).unwrap_err(),
        Status::JwtBadFormat
    );
    assert_eq!(
        verify(
            &format!("{unsecured}AA"),
            &Validation::default(),
            &jwks,
            RFC_EXP - 100
        )
        .unwrap_err(),
        Status::JwtHeaderNotImplementedAlg
    );
}
