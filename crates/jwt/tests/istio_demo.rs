//! Istio's sample tokens (security/tools/jwt/samples) verify against its sample JWKS, and
//! the sample private key signs tokens that verify too.

mod common;

use meshguard_jwt::{Algorithm, Jwks, Limits, SigningKey, Status, Token, Validation, sign, verify};
use serde_json::json;

const NOW: u64 = 1_700_000_000;
const ISSUER: &str = "testing@secure.istio.io";
const KID: &str = "DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ";

fn jwks() -> Jwks {
    Jwks::parse(&common::read("istio-demo/jwks.json")).unwrap()
}

fn validation() -> Validation {
    Validation {
        issuer: Some(ISSUER.into()),
        ..Validation::default()
    }
}

fn demo(name: &str) -> String {
    common::read(&format!("istio-demo/{name}"))
        .trim()
        .to_owned()
}

#[test]
fn demo_jwt_verifies() {
    let t = verify(&demo("demo.jwt"), &validation(), &jwks(), NOW).unwrap();
    assert_eq!(t.header().alg, Algorithm::RS256);
    assert_eq!(t.header().kid.as_deref(), Some(KID));
    let c = t.claims();
    assert_eq!(c.iss.as_deref(), Some(ISSUER));
    assert_eq!(c.sub.as_deref(), Some(ISSUER));
    assert_eq!(c.exp, Some(4_685_989_700));
    assert_eq!(c.iat, Some(1_532_389_700));
    assert_eq!(c.payload["foo"], json!("bar"));
}

#[test]
fn groups_scope_jwt_verifies() {
    let t = verify(&demo("groups-scope.jwt"), &validation(), &jwks(), NOW).unwrap();
    let c = t.claims();
    assert_eq!(c.exp, Some(3_537_391_104));
    assert_eq!(c.payload["groups"], json!(["group1", "group2"]));
    assert_eq!(c.payload["scope"], json!(["scope1", "scope2"]));
}

#[test]
fn tampered_demo_tokens_fail() {
    for name in ["demo.jwt", "groups-scope.jwt"] {
        let raw = demo(name);
        let flipped = common::flip_payload_bit(&raw);
        assert_ne!(flipped, raw);
        assert_eq!(
            verify(&flipped, &validation(), &jwks(), NOW).unwrap_err(),
            Status::JwtVerificationFail,
            "{name}"
        );
        // Flipping a byte of the raw section, not just a letter's case.
        let t = Token::decode(&raw, &Limits::default()).unwrap();
        let forged = common::swap_payload(
            &raw,
            &serde_json::to_string(&t.claims().payload)
                .unwrap()
                .replace("testing@", "testinG@"),
        );
        assert_eq!(
            verify(&forged, &Validation::default(), &jwks(), NOW).unwrap_err(),
            Status::JwtVerificationFail,
            "{name}"
        );
    }
}

#[test]
fn demo_tokens_expire_and_check_issuer() {
    assert_eq!(
        verify(
            &demo("groups-scope.jwt"),
            &validation(),
            &jwks(),
            3_537_391_104 + 61
        )
        .unwrap_err(),
        Status::JwtExpired
    );
    let other = Validation {
        issuer: Some("someone-else".into()),
        ..Validation::default()
    };
    assert_eq!(
        verify(&demo("demo.jwt"), &other, &jwks(), NOW).unwrap_err(),
        Status::JwtUnknownIssuer
    );
}

#[test]
fn sample_private_key_signs_verifiable_tokens() {
    let key = SigningKey::from_pem(&common::read("istio-demo/key.pem")).unwrap();
    // gen-jwt.py uses the jwcrypto thumbprint as kid: that is the RFC 7638 thumbprint.
    assert_eq!(key.thumbprint(), KID);
    assert_eq!(key.default_algorithm(), Algorithm::RS256);
    let jwk = key.public_jwk(Some(KID));
    let published = common::read_json("istio-demo/jwks.json")["keys"][0].clone();
    assert_eq!(jwk["n"], published["n"]);
    assert_eq!(jwk["e"], published["e"]);
    let header = json!({"kid": KID, "typ": "JWT"});
    let claims = json!({"iss": ISSUER, "sub": ISSUER, "exp": NOW + 3600, "iat": NOW});
    for alg in Algorithm::RSA {
        let t = sign(
            alg,
            &key,
            header.as_object().unwrap(),
            claims.as_object().unwrap(),
        )
        .unwrap();
        assert!(verify(&t, &validation(), &jwks(), NOW).is_ok(), "{alg}");
    }
}
