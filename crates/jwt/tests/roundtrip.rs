//! Round trip for every key kind: generate -> sign -> Jwks::parse(public_jwk) -> verify.

use meshguard_jwt::{Algorithm, Jwks, KeyKind, SigningKey, Status, Validation, sign, verify};
use serde_json::json;

const NOW: u64 = 1_700_000_000;

fn algorithms_for(kind: KeyKind) -> Vec<Algorithm> {
    match kind {
        KeyKind::Rsa(_) => Algorithm::RSA.to_vec(),
        KeyKind::EcP256 => vec![Algorithm::ES256],
        KeyKind::EcP384 => vec![Algorithm::ES384],
        KeyKind::EcP521 => vec![Algorithm::ES512],
        KeyKind::Ed25519 => vec![Algorithm::EdDSA],
        KeyKind::Hmac(_) => vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
    }
}

#[test]
fn every_key_kind_round_trips() {
    let kinds = [
        KeyKind::Rsa(2048),
        KeyKind::Rsa(3072),
        KeyKind::EcP256,
        KeyKind::EcP384,
        KeyKind::EcP521,
        KeyKind::Ed25519,
        KeyKind::Hmac(32),
        KeyKind::Hmac(64),
    ];
    let mut covered = Vec::new();
    for kind in kinds {
        let key = SigningKey::generate(kind).unwrap();
        assert_eq!(key.kind(), kind);
        let kid = key.thumbprint();
        let jwks = Jwks::parse(&json!({"keys": [key.public_jwk(Some(&kid))]}).to_string()).unwrap();
        assert_eq!(jwks.keys().len(), 1, "{kind:?}: {:?}", jwks.skipped());
        assert_eq!(jwks.keys()[0].kid(), Some(kid.as_str()));
        let validation = Validation {
            issuer: Some("rt".into()),
            audiences: vec!["svc".into()],
            ..Validation::default()
        };
        assert_eq!(algorithms_for(kind)[0], key.default_algorithm());
        let other = SigningKey::generate(kind).unwrap();
        let other_jwks =
            Jwks::parse(&json!({"keys": [other.public_jwk(Some(&kid))]}).to_string()).unwrap();
        for alg in algorithms_for(kind) {
            let claims = json!({"iss": "rt", "aud": ["svc"], "exp": NOW + 60, "nbf": NOW});
            let t = sign(
                alg,
                &key,
                json!({"kid": kid}).as_object().unwrap(),
                claims.as_object().unwrap(),
            )
            .unwrap();
            let tok = verify(&t, &validation, &jwks, NOW)
                .unwrap_or_else(|s| panic!("{kind:?} {alg}: {s:?}"));
            assert_eq!(tok.header().alg, alg);
            // Another key of the same kind does not verify it.
            assert_eq!(
                verify(&t, &validation, &other_jwks, NOW).unwrap_err(),
                Status::JwtVerificationFail,
                "{kind:?} {alg}"
            );
            covered.push(alg);
        }
        // The exported PEM signs the same way.
        if !matches!(kind, KeyKind::Hmac(_)) {
            let back = SigningKey::from_pem(&key.to_pem().unwrap()).unwrap();
            let t = sign(
                key.default_algorithm(),
                &back,
                json!({}).as_object().unwrap(),
                json!({"iss": "rt", "aud": "svc"}).as_object().unwrap(),
            )
            .unwrap();
            assert!(verify(&t, &validation, &jwks, NOW).is_ok(), "{kind:?}");
        }
    }
    covered.sort();
    covered.dedup();
    assert_eq!(covered, Algorithm::ALL.to_vec());
}
