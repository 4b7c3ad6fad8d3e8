//! Interoperability with an independent implementation, PyJWT, in both directions.
//!
//! * testdata/jwt/pyjwt/tokens.json: tokens PyJWT signed for every algorithm with keys
//!   from Python `cryptography` (regenerate with testdata/jwt/pyjwt/generate.py); they
//!   must verify here, and tampered copies must not.
//! * Tokens meshguard signs for every algorithm must verify under PyJWT
//!   (testdata/jwt/pyjwt/verify.py). That half needs `python3` with the `pyjwt` and
//!   `cryptography` packages: without them it fails when `MESHGUARD_REQUIRE_PYJWT=1` or
//!   `MESHGUARD_REQUIRE_PYTHON=1` (CI sets both), and otherwise passes with a visible
//!   `SKIPPED` line.

mod common;

use meshguard_jwt::{Algorithm, Jwks, KeyKind, SigningKey, Status, Validation, sign, verify};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Stdio};

const NOW: u64 = 1_700_000_100;

fn pyjwt_validation(tokens: &Value) -> Validation {
    Validation {
        issuer: Some(tokens["issuer"].as_str().unwrap().to_owned()),
        audiences: vec![tokens["audience"].as_str().unwrap().to_owned()],
        ..Validation::default()
    }
}

#[test]
fn pyjwt_tokens_verify_for_every_algorithm() {
    let jwks = Jwks::parse(&common::read("jwt/pyjwt/jwks.json")).unwrap();
    assert!(jwks.skipped().is_empty(), "{:?}", jwks.skipped());
    assert_eq!(jwks.keys().len(), 6);
    let tokens = common::read_json("jwt/pyjwt/tokens.json");
    let validation = pyjwt_validation(&tokens);
    let mut seen = BTreeSet::new();
    for t in tokens["tokens"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let raw = t["token"].as_str().unwrap();
        let alg = Algorithm::from_name(t["alg"].as_str().unwrap()).unwrap();
        let tok = verify(raw, &validation, &jwks, NOW).unwrap_or_else(|s| panic!("{name}: {s:?}"));
        assert_eq!(tok.header().alg, alg, "{name}");
        assert_eq!(tok.claims().sub.as_deref(), t["sub"].as_str(), "{name}");
        seen.insert(alg);

        // Tampered claims, original signature.
        let mut payload = tok.claims().payload.clone();
        payload.insert("sub".into(), json!("admin"));
        let forged = common::swap_payload(raw, &serde_json::to_string(&payload).unwrap());
        assert_eq!(
            verify(&forged, &validation, &jwks, NOW).unwrap_err(),
            Status::JwtVerificationFail,
            "{name}"
        );
        let flipped = common::flip_payload_bit(raw);
        assert_eq!(
            verify(&flipped, &Validation::default(), &jwks, NOW).unwrap_err(),
            Status::JwtVerificationFail,
            "{name}"
        );
    }
    let all: BTreeSet<Algorithm> = Algorithm::ALL.into_iter().collect();
    assert_eq!(seen, all, "every algorithm is covered");
}

#[test]
fn meshguard_tokens_verify_under_pyjwt() {
    if !common::python_oracle(
        "meshguard_tokens_verify_under_pyjwt",
        "jwt, cryptography",
        &["MESHGUARD_REQUIRE_PYJWT"],
    ) {
        return;
    }
    let issuer = "https://meshguard.test";
    let audience = "pyjwt-check";
    let keys = [
        ("hs", SigningKey::generate(KeyKind::Hmac(64)).unwrap()),
        ("rsa", SigningKey::generate(KeyKind::Rsa(2048)).unwrap()),
        ("ec256", SigningKey::generate(KeyKind::EcP256).unwrap()),
        ("ec384", SigningKey::generate(KeyKind::EcP384).unwrap()),
        ("ec512", SigningKey::generate(KeyKind::EcP521).unwrap()),
        ("ed", SigningKey::generate(KeyKind::Ed25519).unwrap()),
    ];
    let kid_for = |alg: Algorithm| match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => "hs",
        Algorithm::ES256 => "ec256",
        Algorithm::ES384 => "ec384",
        Algorithm::ES512 => "ec512",
        Algorithm::EdDSA => "ed",
        _ => "rsa",
    };
    let jwks_doc = json!({
        "keys": keys.iter().map(|(kid, k)| k.public_jwk(Some(kid))).collect::<Vec<_>>()
    });
    let jwks = Jwks::parse(&jwks_doc.to_string()).unwrap();
    let validation = Validation {
        issuer: Some(issuer.into()),
        audiences: vec![audience.into()],
        ..Validation::default()
    };
    let mut cases = Vec::new();
    for alg in Algorithm::ALL {
        let kid = kid_for(alg);
        let key = &keys.iter().find(|(k, _)| *k == kid).unwrap().1;
        let claims = json!({
            "iss": issuer, "sub": format!("meshguard-{alg}"), "aud": audience,
            "iat": NOW, "exp": 4_102_444_800u64, "scope": "read write"
        });
        let token = sign(
            alg,
            key,
            json!({"kid": kid, "typ": "JWT"}).as_object().unwrap(),
            claims.as_object().unwrap(),
        )
        .unwrap();
        // Our own verifier agrees.
        verify(&token, &validation, &jwks, NOW).unwrap_or_else(|s| panic!("{alg}: {s:?}"));
        let tampered = common::flip_payload_bit(&token);
        cases.push(json!({"name": alg.as_str(), "alg": alg.as_str(), "kid": kid, "token": token, "expect_valid": true}));
        cases.push(json!({"name": format!("{alg}-tampered"), "alg": alg.as_str(), "kid": kid, "token": tampered, "expect_valid": false}));
    }
    let request =
        json!({"jwks": jwks_doc, "issuer": issuer, "audience": audience, "tokens": cases});
    let script = common::testdata("jwt/pyjwt/verify.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "PyJWT disagreed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok")).count(), 26);
}
