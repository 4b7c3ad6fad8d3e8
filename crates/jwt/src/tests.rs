//! Unit tests across modules: one test per status, strictness rules, key selection and
//! attack classes. Integration tests with external vectors live in `tests/`.

use crate::*;
use serde_json::{Map, Value, json};
use std::fmt::Debug;
use std::sync::OnceLock;

const NOW: u64 = 1_700_000_000;
const SECRET: &[u8] = b"meshguard-unit-test-hmac-secret-0123456789";

fn b64(bytes: &[u8]) -> String {
    crate::b64::encode(bytes)
}

fn hs() -> SigningKey {
    SigningKey::hmac(SECRET)
}

fn rsa() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::generate(KeyKind::Rsa(2048)).unwrap())
}

fn rsa2() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::generate(KeyKind::Rsa(2048)).unwrap())
}

fn jwks_of(keys: &[Value]) -> Jwks {
    Jwks::parse(&json!({ "keys": keys }).to_string()).expect("jwks parses")
}

fn hs_jwks() -> Jwks {
    jwks_of(&[hs().public_jwk(Some("hs"))])
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

/// Signs byte-exact header and payload with the test HMAC key.
fn hs_token(header: &str, payload: &str) -> String {
    sign_raw(Algorithm::HS256, &hs(), header, payload).unwrap()
}

fn payload_token(payload: &str) -> String {
    hs_token(r#"{"alg":"HS256"}"#, payload)
}

fn token_with(alg: Algorithm, key: &SigningKey, header: Value, claims: Value) -> String {
    sign(alg, key, &obj(header), &obj(claims)).unwrap()
}

fn decode(t: &str) -> Result<Token, Status> {
    Token::decode(t, &Limits::default())
}

/// Asserts the exact status and its exact message text.
fn expect<T: Debug>(got: Result<T, Status>, want: Status, message: &str) {
    match got {
        Err(s) => {
            assert_eq!(s, want);
            assert_eq!(s.message(), message);
            assert_eq!(s.to_string(), message);
        }
        Ok(v) => panic!("expected {want:?}, got Ok({v:?})"),
    }
}

fn err<T: Debug>(got: Result<T, Status>) -> Status {
    match got {
        Err(s) => s,
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
    }
}

/// Replaces the signature section of `token`.
fn with_signature(token: &str, sig: &[u8]) -> String {
    let cut = token.rfind('.').unwrap();
    format!("{}.{}", &token[..cut], b64(sig))
}

fn signature_of(token: &str) -> Vec<u8> {
    let cut = token.rfind('.').unwrap();
    crate::b64::decode_strict(&token[cut + 1..]).unwrap()
}

// ---------------------------------------------------------------------------------------
// One test per status.

#[test]
fn status_jwt_missed_message() {
    // Produced by the policy layer, not here; only the text is pinned.
    expect::<()>(Err(Status::JwtMissed), Status::JwtMissed, "Jwt is missing");
}

#[test]
fn status_jwks_fetch_fail_message() {
    expect::<()>(
        Err(Status::JwksFetchFail),
        Status::JwksFetchFail,
        "Jwks remote fetch is failed",
    );
}

#[test]
fn status_not_yet_valid() {
    let t = decode(&payload_token(&format!(r#"{{"nbf":{}}}"#, NOW + 61))).unwrap();
    expect(
        t.check_time(NOW, 60),
        Status::JwtNotYetValid,
        "Jwt not yet valid",
    );
}

#[test]
fn status_expired() {
    let t = decode(&payload_token(&format!(r#"{{"exp":{}}}"#, NOW - 61))).unwrap();
    expect(t.check_time(NOW, 60), Status::JwtExpired, "Jwt is expired");
}

#[test]
fn status_bad_format() {
    let good = payload_token("{}");
    for bad in [
        "".to_owned(),
        "abc".to_owned(),
        "a.b".to_owned(),
        format!("{good}."),
        format!(".{good}"),
        good.replacen('.', "..", 1),
        format!("{good}.AAAA"),
        format!("{}.", &good[..good.rfind('.').unwrap()]),
        "a.b.c.d.e".to_owned(),
    ] {
        expect(
            decode(&bad),
            Status::JwtBadFormat,
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        );
    }
}

#[test]
fn status_header_bad_base64() {
    for h in [
        "eyJhbGciOiJIUzI1NiJ9=",
        "e!J9",
        "eyJhbGciOiJIUzI1NiJ9 ",
        "ey+J",
    ] {
        expect(
            decode(&format!("{h}.e30.AAAA")),
            Status::JwtHeaderParseErrorBadBase64,
            "Jwt header is an invalid Base64url encoded",
        );
    }
}

#[test]
fn status_header_bad_json() {
    for h in [
        "not json",
        "[\"alg\",\"HS256\"]",
        "\"HS256\"",
        r#"{"alg":"HS256"} trailing"#,
        r#"{"alg":"HS256","alg":"none"}"#,
        r#"{"alg":"RS256","kid":"rsa1","alg":"none"}"#,
        r#"{"alg":"HS256","x":{"a":1,"a":2}}"#,
    ] {
        expect(
            decode(&hs_token(h, "{}")),
            Status::JwtHeaderParseErrorBadJson,
            "Jwt header is an invalid JSON",
        );
    }
}

#[test]
fn status_header_bad_alg() {
    for h in [
        r#"{"typ":"JWT"}"#,
        r#"{"alg":1}"#,
        r#"{"alg":null}"#,
        r#"{"alg":["HS256"]}"#,
    ] {
        expect(
            decode(&hs_token(h, "{}")),
            Status::JwtHeaderBadAlg,
            "Jwt header [alg] field is required and must be a string",
        );
    }
}

#[test]
fn status_header_not_implemented_alg_including_none_spellings() {
    for alg in [
        "none", "None", "NONE", "nOnE", "", "hs256", "RS1", "ES256K", "Ed448", "RSA-OAEP",
    ] {
        let h = json!({ "alg": alg }).to_string();
        expect(
            decode(&hs_token(&h, "{}")),
            Status::JwtHeaderNotImplementedAlg,
            "Jwt header [alg] is not supported",
        );
    }
    // RFC 7515 A.5 style unsecured JWS with an empty signature is a format error first.
    let unsecured = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(b"{}"));
    assert_eq!(err(decode(&unsecured)), Status::JwtBadFormat);
    // ...and with a dummy signature it is refused for its alg.
    assert_eq!(
        err(decode(&format!("{unsecured}AAAA"))),
        Status::JwtHeaderNotImplementedAlg
    );
}

#[test]
fn status_header_bad_kid() {
    for h in [
        r#"{"alg":"HS256","kid":1}"#,
        r#"{"alg":"HS256","kid":null}"#,
        r#"{"alg":"HS256","kid":["a"]}"#,
    ] {
        expect(
            decode(&hs_token(h, "{}")),
            Status::JwtHeaderBadKid,
            "Jwt header [kid] field is not a string",
        );
    }
}

#[test]
fn status_header_unsupported_crit() {
    for h in [
        r#"{"alg":"HS256","crit":["exp2"],"exp2":1}"#,
        r#"{"alg":"HS256","crit":[]}"#,
        r#"{"alg":"HS256","crit":"exp2"}"#,
        r#"{"alg":"HS256","crit":["foo"]}"#,
        r#"{"alg":"HS256","crit":["b64"],"b64":false}"#,
        r#"{"alg":"HS256","crit":["alg"]}"#,
    ] {
        expect(
            decode(&hs_token(h, "{}")),
            Status::JwtHeaderUnsupportedCrit,
            "Jwt header [crit] lists an extension that is not supported",
        );
    }
    // kid is checked before crit.
    assert_eq!(
        err(decode(&hs_token(
            r#"{"alg":"HS256","kid":1,"crit":[]}"#,
            "{}"
        ))),
        Status::JwtHeaderBadKid
    );
}

#[test]
fn status_payload_bad_base64() {
    let h = b64(br#"{"alg":"HS256"}"#);
    for p in ["e30=", "e31", "e3 0", "e+0", "!"] {
        expect(
            decode(&format!("{h}.{p}.AAAA")),
            Status::JwtPayloadParseErrorBadBase64,
            "Jwt payload is an invalid Base64url encoded",
        );
    }
}

#[test]
fn status_payload_bad_json() {
    for p in [
        "Example of Ed25519 signing",
        "[]",
        "\"sub\"",
        "1",
        "null",
        r#"{"sub":"alice","sub":"admin"}"#,
        r#"{"iss":"evil","iss":"good"}"#,
        r#"{"a":{"b":[{"c":1,"c":1}]}}"#,
        "{} {}",
        "\u{feff}{}",
        r#"{"foo":1e5000}"#,
        r#"{"exp":[1e5000]}"#,
    ] {
        expect(
            decode(&payload_token(p)),
            Status::JwtPayloadParseErrorBadJson,
            "Jwt payload is an invalid JSON",
        );
    }
    // Invalid UTF-8 inside a string.
    let h = b64(br#"{"alg":"HS256"}"#);
    let p = b64(b"{\"sub\":\"\xc3\x28\"}");
    assert_eq!(
        err(decode(&format!("{h}.{p}.AAAA"))),
        Status::JwtPayloadParseErrorBadJson
    );
}

#[test]
fn status_iss_not_string() {
    expect(
        decode(&payload_token(r#"{"iss":["a"]}"#)),
        Status::JwtPayloadParseErrorIssNotString,
        "Jwt payload [iss] field is not a string",
    );
}

#[test]
fn status_sub_not_string() {
    expect(
        decode(&payload_token(r#"{"sub":42}"#)),
        Status::JwtPayloadParseErrorSubNotString,
        "Jwt payload [sub] field is not a string",
    );
}

#[test]
fn status_jti_not_string() {
    expect(
        decode(&payload_token(r#"{"jti":{}}"#)),
        Status::JwtPayloadParseErrorJtiNotString,
        "Jwt payload [jti] field is not a string",
    );
}

fn time_claim_cases(name: &str, not_integer: Status, out_of_range: Status) {
    for v in ["\"1750003600\"", "true", "null", "[1]", "{}"] {
        let t = decode(&payload_token(&format!(r#"{{"{name}":{v}}}"#)));
        assert_eq!(err(t), not_integer, "{name}={v}");
    }
    for v in [
        "-1",
        "-0.5",
        "2.001e206",
        "18446744073709551616",
        "18446744073709551615", // a double in Envoy: 2^64
        "18446744073709550592", // 2^64 - 1024 rounds (to even) to 2^64
        "1e5000",
        "-1e5000",
    ] {
        let t = decode(&payload_token(&format!(r#"{{"{name}":{v}}}"#)));
        assert_eq!(err(t), out_of_range, "{name}={v}");
    }
    let value = |v: &str| -> Option<u64> {
        let t = decode(&payload_token(&format!(r#"{{"{name}":{v}}}"#))).unwrap();
        let c = t.claims();
        match name {
            "iat" => c.iat,
            "nbf" => c.nbf,
            _ => c.exp,
        }
    };
    assert_eq!(value("1.5e9"), Some(1_500_000_000));
    assert_eq!(value("1700000000.9"), Some(1_700_000_000));
    assert_eq!(value("0"), Some(0));
    assert_eq!(value("-0.0"), Some(0));
    // The largest integer below 2^64 that a double holds exactly.
    assert_eq!(
        value("18446744073709549568"),
        Some(18_446_744_073_709_549_568)
    );
}

#[test]
fn status_iat_not_integer_and_out_of_range() {
    expect(
        decode(&payload_token(r#"{"iat":"1"}"#)),
        Status::JwtPayloadParseErrorIatNotInteger,
        "Jwt payload [iat] field is not an integer",
    );
    expect(
        decode(&payload_token(r#"{"iat":-1}"#)),
        Status::JwtPayloadParseErrorIatOutOfRange,
        "Jwt payload [iat] field is not a positive 64 bit integer",
    );
    time_claim_cases(
        "iat",
        Status::JwtPayloadParseErrorIatNotInteger,
        Status::JwtPayloadParseErrorIatOutOfRange,
    );
}

#[test]
fn status_nbf_not_integer_and_out_of_range() {
    expect(
        decode(&payload_token(r#"{"nbf":"1"}"#)),
        Status::JwtPayloadParseErrorNbfNotInteger,
        "Jwt payload [nbf] field is not an integer",
    );
    expect(
        decode(&payload_token(r#"{"nbf":1e300}"#)),
        Status::JwtPayloadParseErrorNbfOutOfRange,
        "Jwt payload [nbf] field is not a positive 64 bit integer",
    );
    time_claim_cases(
        "nbf",
        Status::JwtPayloadParseErrorNbfNotInteger,
        Status::JwtPayloadParseErrorNbfOutOfRange,
    );
}

#[test]
fn status_exp_not_integer_and_out_of_range() {
    expect(
        decode(&payload_token(r#"{"exp":"1750003600"}"#)),
        Status::JwtPayloadParseErrorExpNotInteger,
        "Jwt payload [exp] field is not an integer",
    );
    expect(
        decode(&payload_token(r#"{"exp":1e5000}"#)),
        Status::JwtPayloadParseErrorExpOutOfRange,
        "Jwt payload [exp] field is not a positive 64 bit integer",
    );
    time_claim_cases(
        "exp",
        Status::JwtPayloadParseErrorExpNotInteger,
        Status::JwtPayloadParseErrorExpOutOfRange,
    );
}

#[test]
fn status_aud_not_string() {
    for v in ["1", "[1]", "{}", r#"["a",null]"#, "null", "true"] {
        expect(
            decode(&payload_token(&format!(r#"{{"aud":{v}}}"#))),
            Status::JwtPayloadParseErrorAudNotString,
            "Jwt payload [aud] field is not a string or string list",
        );
    }
    let t = decode(&payload_token(r#"{"aud":[]}"#)).unwrap();
    assert!(t.claims().aud.is_empty());
    let t = decode(&payload_token(r#"{"aud":"one"}"#)).unwrap();
    assert_eq!(t.claims().aud, vec!["one".to_owned()]);
}

#[test]
fn status_signature_bad_base64() {
    let good = payload_token("{}");
    let cut = good.rfind('.').unwrap();
    for s in ["AAAA=", "AA+A", "A", "AAA B", "AB"] {
        expect(
            decode(&format!("{}.{s}", &good[..cut])),
            Status::JwtSignatureParseErrorBadBase64,
            "Jwt signature is an invalid Base64url encoded",
        );
    }
}

#[test]
fn status_ed25519_signature_wrong_length() {
    let ed = SigningKey::generate(KeyKind::Ed25519).unwrap();
    let jwks = jwks_of(&[ed.public_jwk(Some("ed"))]);
    let t = token_with(Algorithm::EdDSA, &ed, json!({}), json!({"sub":"x"}));
    assert_eq!(decode(&t).unwrap().verify_signature(&jwks), Ok(()));
    let sig = signature_of(&t);
    for bad in [&sig[..63], &[sig.as_slice(), &[0u8]].concat()[..]] {
        expect(
            decode(&with_signature(&t, bad))
                .unwrap()
                .verify_signature(&jwks),
            Status::JwtEd25519SignatureWrongLength,
            "Jwt ED25519 signature is wrong length",
        );
    }
}

#[test]
fn status_unknown_issuer() {
    let t = payload_token(r#"{"iss":"https://evil.example"}"#);
    let v = Validation {
        issuer: Some("https://good.example".into()),
        ..Validation::default()
    };
    expect(
        verify(&t, &v, &hs_jwks(), NOW),
        Status::JwtUnknownIssuer,
        "Jwt issuer is not configured",
    );
    // Missing iss counts as "".
    assert_eq!(
        err(verify(&payload_token("{}"), &v, &hs_jwks(), NOW)),
        Status::JwtUnknownIssuer
    );
    // Case and trailing slash matter.
    for iss in ["https://GOOD.example", "https://good.example/"] {
        let t = payload_token(&json!({ "iss": iss }).to_string());
        assert_eq!(
            err(verify(&t, &v, &hs_jwks(), NOW)),
            Status::JwtUnknownIssuer
        );
    }
    // No issuer configured, or an empty one, accepts anything.
    for issuer in [None, Some(String::new())] {
        let v = Validation {
            issuer,
            ..Validation::default()
        };
        assert!(verify(&t, &v, &hs_jwks(), NOW).is_ok());
    }
}

#[test]
fn status_audience_not_allowed() {
    let t = payload_token(r#"{"aud":["other"]}"#);
    let v = Validation {
        audiences: vec!["svc".into()],
        ..Validation::default()
    };
    expect(
        verify(&t, &v, &hs_jwks(), NOW),
        Status::JwtAudienceNotAllowed,
        "Audiences in Jwt are not allowed",
    );
    assert_eq!(Status::JwtAudienceNotAllowed.http_status(), 403);
}

#[test]
fn status_verification_fail() {
    let t = payload_token(r#"{"sub":"a"}"#);
    let other = jwks_of(&[SigningKey::hmac(b"another secret").public_jwk(None)]);
    expect(
        decode(&t).unwrap().verify_signature(&other),
        Status::JwtVerificationFail,
        "Jwt verification fails",
    );
}

#[test]
fn status_jwks_no_valid_keys() {
    let t = decode(&payload_token("{}")).unwrap();
    expect(
        t.verify_signature(&Jwks::empty()),
        Status::JwksNoValidKeys,
        "Jwks doesn't have any valid public key",
    );
    let all_bad = Jwks::parse(r#"{"keys":[{"kty":"RSA"},{"kty":"foo"},7]}"#).unwrap();
    assert!(all_bad.is_empty());
    assert_eq!(all_bad.skipped().len(), 3);
    assert_eq!(err(t.verify_signature(&all_bad)), Status::JwksNoValidKeys);
    assert_eq!(
        err(t.verify_signature(&Jwks::parse(r#"{"keys":[]}"#).unwrap())),
        Status::JwksNoValidKeys
    );
}

#[test]
fn status_jwks_kid_alg_mismatch() {
    let t = hs_token(r#"{"alg":"HS256","kid":"nope"}"#, "{}");
    expect(
        decode(&t).unwrap().verify_signature(&hs_jwks()),
        Status::JwksKidAlgMismatch,
        "Jwks doesn't have key to match kid or alg from Jwt",
    );
}

#[test]
fn status_jwks_parse_error() {
    for doc in [
        "",
        "not json",
        "[]",
        "\"keys\"",
        r#"{"keys":[]} x"#,
        r#"{"keys":[],"keys":[]}"#,
    ] {
        expect(
            Jwks::parse(doc),
            Status::JwksParseError,
            "Jwks is an invalid JSON",
        );
    }
}

#[test]
fn status_jwks_no_keys() {
    for doc in [
        "{}",
        r#"{"kid1":"-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"}"#,
    ] {
        expect(
            Jwks::parse(doc),
            Status::JwksNoKeys,
            "Jwks does not have [keys] field",
        );
    }
}

#[test]
fn status_jwks_bad_keys() {
    for doc in [r#"{"keys":{}}"#, r#"{"keys":"x"}"#, r#"{"keys":null}"#] {
        expect(
            Jwks::parse(doc),
            Status::JwksBadKeys,
            "[keys] in Jwks is not an array",
        );
    }
}

#[test]
fn status_too_large() {
    let limits = Limits::default();
    let pad = "x".repeat(limits.max_token_bytes);
    let t = payload_token(&json!({ "pad": pad }).to_string());
    expect(decode(&t), Status::JwtTooLarge, "Jwt is too large");
    // Checked before the format: even garbage of that size is "too large".
    expect(
        decode(&".".repeat(limits.max_token_bytes + 1)),
        Status::JwtTooLarge,
        "Jwt is too large",
    );
    // Exactly at the limit is fine.
    let base = payload_token(r#"{"pad":""}"#);
    let fill = limits.max_token_bytes - base.len();
    // Each 3 payload bytes add 4 base64 characters; aim just under the limit.
    let t = payload_token(&json!({ "pad": "y".repeat(fill * 3 / 4 - 3) }).to_string());
    assert!(t.len() <= limits.max_token_bytes, "{}", t.len());
    assert!(decode(&t).is_ok());
}

// ---------------------------------------------------------------------------------------
// Order of checks.

#[test]
fn header_checks_come_in_envoy_order() {
    // Bad payload base64 is not looked at when the header is bad.
    assert_eq!(
        err(decode("e!J9.!!!.AAAA")),
        Status::JwtHeaderParseErrorBadBase64
    );
    assert_eq!(
        err(decode(&hs_token(r#"{"alg":"none","kid":1}"#, "{}"))),
        Status::JwtHeaderNotImplementedAlg
    );
    assert_eq!(
        err(decode(&hs_token(r#"{"kid":1}"#, "{}"))),
        Status::JwtHeaderBadAlg
    );
}

#[test]
fn payload_checks_come_in_jwt_verify_lib_order() {
    let cases = [
        (
            r#"{"aud":1,"jti":1,"exp":"x","nbf":"x","iat":"x","sub":1,"iss":1}"#,
            Status::JwtPayloadParseErrorIssNotString,
        ),
        (
            r#"{"aud":1,"jti":1,"exp":"x","nbf":"x","iat":"x","sub":1}"#,
            Status::JwtPayloadParseErrorSubNotString,
        ),
        (
            r#"{"aud":1,"jti":1,"exp":"x","nbf":"x","iat":"x"}"#,
            Status::JwtPayloadParseErrorIatNotInteger,
        ),
        (
            r#"{"aud":1,"jti":1,"exp":"x","nbf":-1,"iat":-1}"#,
            Status::JwtPayloadParseErrorIatOutOfRange,
        ),
        (
            r#"{"aud":1,"jti":1,"exp":-1,"nbf":"x"}"#,
            Status::JwtPayloadParseErrorNbfNotInteger,
        ),
        (
            r#"{"aud":1,"jti":1,"exp":"x"}"#,
            Status::JwtPayloadParseErrorExpNotInteger,
        ),
        (
            r#"{"aud":1,"jti":1}"#,
            Status::JwtPayloadParseErrorJtiNotString,
        ),
        (r#"{"aud":1}"#, Status::JwtPayloadParseErrorAudNotString),
    ];
    for (payload, want) in cases {
        assert_eq!(err(decode(&payload_token(payload))), want, "{payload}");
    }
    // Payload problems come before a bad signature encoding.
    let good = payload_token(r#"{"sub":1}"#);
    let cut = good.rfind('.').unwrap();
    assert_eq!(
        err(decode(&format!("{}.!!!!", &good[..cut]))),
        Status::JwtPayloadParseErrorSubNotString
    );
}

#[test]
fn verify_checks_issuer_time_audience_signature_in_order() {
    let jwks = hs_jwks();
    let v = Validation {
        issuer: Some("good".into()),
        audiences: vec!["svc".into()],
        ..Validation::default()
    };
    let bad_sig = |p: &str| with_signature(&payload_token(p), &[0u8; 32]);
    let exp = NOW - 100;
    assert_eq!(
        err(verify(
            &bad_sig(&format!(r#"{{"iss":"bad","exp":{exp},"aud":"x"}}"#)),
            &v,
            &jwks,
            NOW
        )),
        Status::JwtUnknownIssuer
    );
    assert_eq!(
        err(verify(
            &bad_sig(&format!(r#"{{"iss":"good","exp":{exp},"aud":"x"}}"#)),
            &v,
            &jwks,
            NOW
        )),
        Status::JwtExpired
    );
    assert_eq!(
        err(verify(
            &bad_sig(r#"{"iss":"good","aud":"x"}"#),
            &v,
            &jwks,
            NOW
        )),
        Status::JwtAudienceNotAllowed
    );
    assert_eq!(
        err(verify(
            &bad_sig(r#"{"iss":"good","aud":"svc"}"#),
            &v,
            &jwks,
            NOW
        )),
        Status::JwtVerificationFail
    );
    let ok = verify(
        &payload_token(r#"{"iss":"good","aud":"svc"}"#),
        &v,
        &jwks,
        NOW,
    )
    .unwrap();
    assert_eq!(ok.claims().iss.as_deref(), Some("good"));
}

// ---------------------------------------------------------------------------------------
// Time.

fn time_token(claims: &str) -> Token {
    decode(&payload_token(claims)).unwrap()
}

#[test]
fn exp_skew_boundaries() {
    let t = time_token(&format!(r#"{{"exp":{}}}"#, NOW - 60));
    assert_eq!(
        t.check_time(NOW, 60),
        Ok(()),
        "now = exp + 60 is still valid"
    );
    let t = time_token(&format!(r#"{{"exp":{}}}"#, NOW - 61));
    assert_eq!(
        t.check_time(NOW, 60),
        Err(Status::JwtExpired),
        "now = exp + 61"
    );
    let t = time_token(&format!(r#"{{"exp":{NOW}}}"#));
    assert_eq!(t.check_time(NOW, 0), Ok(()));
    assert_eq!(t.check_time(NOW + 1, 0), Err(Status::JwtExpired));
}

#[test]
fn nbf_skew_boundaries() {
    let t = time_token(&format!(r#"{{"nbf":{}}}"#, NOW + 60));
    assert_eq!(t.check_time(NOW, 60), Ok(()), "nbf = now + 60 is valid");
    let t = time_token(&format!(r#"{{"nbf":{}}}"#, NOW + 61));
    assert_eq!(
        t.check_time(NOW, 60),
        Err(Status::JwtNotYetValid),
        "nbf = now + 61"
    );
}

#[test]
fn nbf_is_checked_before_exp() {
    let t = time_token(&format!(r#"{{"nbf":{},"exp":{}}}"#, NOW + 1000, NOW - 1000));
    assert_eq!(t.check_time(NOW, 60), Err(Status::JwtNotYetValid));
}

#[test]
fn missing_or_zero_exp_never_expires_and_iat_is_ignored() {
    assert_eq!(time_token("{}").check_time(u64::MAX, 60), Ok(()));
    assert_eq!(time_token(r#"{"exp":0}"#).check_time(u64::MAX, 60), Ok(()));
    let future_iat = time_token(&format!(r#"{{"iat":{}}}"#, NOW + 3600));
    assert_eq!(future_iat.check_time(NOW, 60), Ok(()));
}

#[test]
fn time_sums_saturate() {
    let t = time_token(r#"{"exp":18446744073709549568,"nbf":18446744073709549568}"#);
    assert_eq!(t.check_time(u64::MAX, u64::MAX), Ok(()));
    assert_eq!(t.check_time(0, 0), Err(Status::JwtNotYetValid));
}

#[test]
fn fractional_exp_is_truncated() {
    let t = time_token(&format!(r#"{{"exp":{}.9}}"#, NOW - 61));
    assert_eq!(t.claims().exp, Some(NOW - 61));
    assert_eq!(t.check_time(NOW, 60), Err(Status::JwtExpired));
}

// ---------------------------------------------------------------------------------------
// Audiences.

fn aud_check(token_aud: Value, allowed: &[&str]) -> Result<(), Status> {
    let t = decode(&payload_token(&json!({ "aud": token_aud }).to_string())).unwrap();
    let allowed: Vec<String> = allowed.iter().map(|s| (*s).to_owned()).collect();
    t.check_audiences(&allowed)
}

#[test]
fn audiences_are_sanitized_on_both_sides() {
    assert_eq!(aud_check(json!("svc"), &[]), Ok(()));
    assert_eq!(
        aud_check(json!("https://svc.example/"), &["svc.example"]),
        Ok(())
    );
    assert_eq!(
        aud_check(json!("svc.example"), &["http://svc.example/"]),
        Ok(())
    );
    assert_eq!(
        aud_check(json!("http://svc.example"), &["https://svc.example"]),
        Ok(())
    );
    assert_eq!(aud_check(json!(["other", "svc"]), &["svc"]), Ok(()));
    assert_eq!(aud_check(json!(["a", "b"]), &["x", "b/"]), Ok(()));
    // Only one trailing slash and one scheme are removed; case matters.
    assert_eq!(
        aud_check(json!("svc//"), &["svc"]),
        Err(Status::JwtAudienceNotAllowed)
    );
    assert_eq!(
        aud_check(json!("SVC"), &["svc"]),
        Err(Status::JwtAudienceNotAllowed)
    );
    assert_eq!(
        aud_check(json!([]), &["svc"]),
        Err(Status::JwtAudienceNotAllowed)
    );
    assert_eq!(
        aud_check(json!("ftp://svc"), &["svc"]),
        Err(Status::JwtAudienceNotAllowed)
    );
    let no_aud = decode(&payload_token("{}")).unwrap();
    assert_eq!(
        no_aud.check_audiences(&["svc".to_owned()]),
        Err(Status::JwtAudienceNotAllowed)
    );
}

// ---------------------------------------------------------------------------------------
// Decoding details.

#[test]
fn decode_exposes_header_claims_and_payload_section() {
    let header = r#"{"alg":"HS256","kid":"k1","typ":"JWT","jku":"https://evil.example/jwks"}"#;
    let payload = r#"{"iss":"i","sub":"s","aud":["a","b"],"exp":4000000000,"nbf":1,"iat":2,"jti":"j","x":{"y":[1]}}"#;
    let raw = hs_token(header, payload);
    let t = decode(&raw).unwrap();
    assert_eq!(t.header().alg, Algorithm::HS256);
    assert_eq!(t.header().kid.as_deref(), Some("k1"));
    assert_eq!(t.header().typ.as_deref(), Some("JWT"));
    assert_eq!(t.header().raw["jku"], json!("https://evil.example/jwks"));
    let c = t.claims();
    assert_eq!(c.iss.as_deref(), Some("i"));
    assert_eq!(c.sub.as_deref(), Some("s"));
    assert_eq!(c.aud, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(
        (c.exp, c.nbf, c.iat),
        (Some(4_000_000_000), Some(1), Some(2))
    );
    assert_eq!(c.jti.as_deref(), Some("j"));
    assert_eq!(c.payload["x"], json!({"y":[1]}));
    assert_eq!(t.payload_b64(), raw.split('.').nth(1).unwrap());
    // Debug shows claims but not the token text or signature.
    let dbg = format!("{t:?}");
    assert!(dbg.contains("\"s\""));
    assert!(!dbg.contains(raw.split('.').nth(2).unwrap()));
    assert!(!dbg.contains(t.payload_b64()));
}

#[test]
fn non_string_typ_is_ignored() {
    let t = decode(&hs_token(r#"{"alg":"HS256","typ":1}"#, "{}")).unwrap();
    assert_eq!(t.header().typ, None);
}

#[test]
fn ed25519_alias_in_header() {
    let ed = SigningKey::generate(KeyKind::Ed25519).unwrap();
    let jwks = jwks_of(&[ed.public_jwk(None)]);
    let t = sign_raw(Algorithm::EdDSA, &ed, r#"{"alg":"Ed25519"}"#, "{}").unwrap();
    let tok = decode(&t).unwrap();
    assert_eq!(tok.header().alg, Algorithm::EdDSA);
    assert_eq!(tok.verify_signature(&jwks), Ok(()));
}

#[test]
fn json_depth_limit_applies_to_header_and_payload() {
    let nest = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    // Object (depth 1) + 31 arrays = 32 levels: accepted.
    assert!(decode(&payload_token(&format!(r#"{{"a":{}}}"#, nest(31)))).is_ok());
    assert_eq!(
        err(decode(&payload_token(&format!(r#"{{"a":{}}}"#, nest(32))))),
        Status::JwtPayloadParseErrorBadJson
    );
    assert_eq!(
        err(decode(&hs_token(
            &format!(r#"{{"alg":"HS256","a":{}}}"#, nest(32)),
            "{}"
        ))),
        Status::JwtHeaderParseErrorBadJson
    );
    // 5000-deep nesting must not crash.
    let deep = format!(r#"{{"a":{}}}"#, nest(5000));
    let limits = Limits {
        max_token_bytes: 1 << 20,
        max_json_depth: 32,
    };
    assert_eq!(
        err(Token::decode(&payload_token(&deep), &limits)),
        Status::JwtPayloadParseErrorBadJson
    );
    // A caller may raise the limit.
    let roomy = Limits {
        max_token_bytes: 1 << 20,
        max_json_depth: 40,
    };
    assert!(Token::decode(&payload_token(&format!(r#"{{"a":{}}}"#, nest(35))), &roomy).is_ok());
}

#[test]
fn base64_strictness_on_every_section() {
    let good = payload_token(r#"{"sub":"abc"}"#);
    let parts: Vec<&str> = good.split('.').collect();
    assert!(decode(&good).is_ok());
    let padded = |s: &str| {
        let pad = (4 - s.len() % 4) % 4;
        format!("{s}{}", "=".repeat(pad))
    };
    // The header `{"alg":"HS256"}` is 15 bytes: 20 chars, no padding possible. Use a
    // header whose encoding needs padding.
    let h16 = b64(br#"{"alg":"HS256"} "#);
    assert_eq!(h16.len() % 4, 2);
    let t = hs_token(r#"{"alg":"HS256"} "#, "{}");
    assert!(decode(&t).is_ok());
    let tp: Vec<&str> = t.split('.').collect();
    assert_eq!(
        err(decode(&format!("{}.{}.{}", padded(tp[0]), tp[1], tp[2]))),
        Status::JwtHeaderParseErrorBadBase64
    );
    // Payload padded.
    if !parts[1].len().is_multiple_of(4) {
        assert_eq!(
            err(decode(&format!(
                "{}.{}.{}",
                parts[0],
                padded(parts[1]),
                parts[2]
            ))),
            Status::JwtPayloadParseErrorBadBase64
        );
    }
    // Signature padded (32-byte HMAC: 43 chars).
    assert_eq!(
        err(decode(&format!("{}.{}.{}=", parts[0], parts[1], parts[2]))),
        Status::JwtSignatureParseErrorBadBase64
    );
    // Non-zero trailing bits in the signature's last character.
    let last = parts[2].chars().last().unwrap();
    let bumped = crate::b64::decode_lenient(&format!(
        "{}{}",
        &parts[2][..parts[2].len() - 1],
        if last == 'A' { 'B' } else { 'A' }
    ));
    assert!(bumped.is_some());
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.find(last).unwrap();
    // 43 chars encode 32 bytes: the last char carries 2 unused bits.
    let noisy = alphabet.as_bytes()[idx | 1] as char;
    assert_ne!(noisy, last);
    assert_eq!(
        err(decode(&format!(
            "{}.{}.{}{noisy}",
            parts[0],
            parts[1],
            &parts[2][..parts[2].len() - 1]
        ))),
        Status::JwtSignatureParseErrorBadBase64
    );
    // Standard alphabet and whitespace.
    assert_eq!(
        err(decode(&format!("{} .{}.{}", parts[0], parts[1], parts[2]))),
        Status::JwtHeaderParseErrorBadBase64
    );
    assert_eq!(
        err(decode(&format!(
            "{}.{}.{}",
            parts[0],
            parts[1].replacen('e', "+", 1),
            parts[2]
        ))),
        Status::JwtPayloadParseErrorBadBase64
    );
}

// ---------------------------------------------------------------------------------------
// Key selection.

#[test]
fn kid_selection() {
    let a = rsa();
    let b = rsa2();
    let jwks = jwks_of(&[a.public_jwk(Some("a")), b.public_jwk(Some("b"))]);
    let claims = json!({"sub": "x"});
    // Right kid.
    let t = token_with(Algorithm::RS256, b, json!({"kid": "b"}), claims.clone());
    assert_eq!(decode(&t).unwrap().verify_signature(&jwks), Ok(()));
    // Wrong kid that exists: that key is tried and fails.
    let t = token_with(Algorithm::RS256, b, json!({"kid": "a"}), claims.clone());
    assert_eq!(
        err(decode(&t).unwrap().verify_signature(&jwks)),
        Status::JwtVerificationFail
    );
    // Unknown kid.
    let t = token_with(Algorithm::RS256, b, json!({"kid": "c"}), claims.clone());
    assert_eq!(
        err(decode(&t).unwrap().verify_signature(&jwks)),
        Status::JwksKidAlgMismatch
    );
    // No kid, or an empty kid: every key is tried.
    for header in [json!({}), json!({"kid": ""})] {
        let t = token_with(Algorithm::RS256, b, header, claims.clone());
        assert_eq!(decode(&t).unwrap().verify_signature(&jwks), Ok(()));
    }
    // Keys without kid (or with an empty kid) match any token kid.
    let anon = jwks_of(&[a.public_jwk(None), b.public_jwk(Some(""))]);
    let t = token_with(
        Algorithm::RS256,
        b,
        json!({"kid": "whatever"}),
        claims.clone(),
    );
    assert_eq!(decode(&t).unwrap().verify_signature(&anon), Ok(()));
    // Duplicate kids are all tried, in order.
    let dup = jwks_of(&[a.public_jwk(Some("same")), b.public_jwk(Some("same"))]);
    let t = token_with(Algorithm::RS256, b, json!({"kid": "same"}), claims);
    assert_eq!(decode(&t).unwrap().verify_signature(&dup), Ok(()));
}

#[test]
fn alg_selection() {
    let k = rsa();
    let mut rs256_only = k.public_jwk(Some("r"));
    rs256_only["alg"] = json!("RS256");
    let pinned = jwks_of(&[rs256_only]);
    let any = jwks_of(&[k.public_jwk(Some("r"))]);
    let claims = json!({"sub": "x"});
    for alg in Algorithm::RSA {
        let t = decode(&token_with(alg, k, json!({"kid": "r"}), claims.clone())).unwrap();
        assert_eq!(t.verify_signature(&any), Ok(()), "{alg} with alg-less key");
        let want = if alg == Algorithm::RS256 {
            Ok(())
        } else {
            Err(Status::JwksKidAlgMismatch)
        };
        assert_eq!(t.verify_signature(&pinned), want, "{alg} with RS256 key");
    }
    assert_eq!(any.keys()[0].algorithms().len(), 6);
    assert_eq!(pinned.keys()[0].algorithms(), &[Algorithm::RS256]);
}

#[test]
fn kty_selection_mismatch_vs_failure() {
    let ec = SigningKey::generate(KeyKind::EcP384).unwrap();
    // ES256 token against a P-384 key without alg: passes kid/alg, wrong curve, not tried.
    let p256 = SigningKey::generate(KeyKind::EcP256).unwrap();
    let t = decode(&token_with(Algorithm::ES256, &p256, json!({}), json!({}))).unwrap();
    let mut no_alg = ec.public_jwk(None);
    no_alg.as_object_mut().unwrap().remove("alg");
    assert_eq!(
        err(t.verify_signature(&jwks_of(&[no_alg]))),
        Status::JwtVerificationFail
    );
    // Same with alg ES384 on the key: mismatch.
    let mut with_alg = ec.public_jwk(None);
    with_alg["alg"] = json!("ES384");
    assert_eq!(
        err(t.verify_signature(&jwks_of(&[with_alg]))),
        Status::JwksKidAlgMismatch
    );
    // RS256 token against an EC-only JWKS (no alg): Envoy's kid_alg_matched is set.
    let r = decode(&token_with(Algorithm::RS256, rsa(), json!({}), json!({}))).unwrap();
    assert_eq!(
        err(r.verify_signature(&jwks_of(&[p256.public_jwk(None)]))),
        Status::JwtVerificationFail
    );
    // The right key later in the set is still found.
    let mixed = jwks_of(&[
        ec.public_jwk(None),
        hs().public_jwk(None),
        p256.public_jwk(None),
    ]);
    assert_eq!(t.verify_signature(&mixed), Ok(()));
}

#[test]
fn hmac_with_rsa_public_key_confusion_is_rejected() {
    let k = rsa();
    let jwk = k.public_jwk(Some("rsa"));
    let jwks_no_alg = jwks_of(std::slice::from_ref(&jwk));
    let mut pinned = jwk.clone();
    pinned["alg"] = json!("RS256");
    let jwks_pinned = jwks_of(&[pinned]);

    // The public key in the encodings an attacker might try as an HMAC secret.
    let n = crate::b64::decode_lenient(jwk["n"].as_str().unwrap()).unwrap();
    let jwk_text = jwk.to_string();
    let spki_pem = {
        let rsa_pub = aws_lc_rs::signature::RsaPublicKeyComponents {
            n: n.as_slice(),
            e: &[1u8, 0, 1][..],
        };
        use aws_lc_rs::encoding::AsDer as _;
        let der = rsa_pub.as_der().unwrap();
        let der = der.as_ref().to_vec();
        let body = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for c in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(c).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        (der, pem)
    };
    let secrets: Vec<Vec<u8>> = vec![
        spki_pem.1.clone().into_bytes(),
        spki_pem.1.trim_end().as_bytes().to_vec(),
        spki_pem.0.clone(),
        n.clone(),
        jwk_text.into_bytes(),
        jwk["n"].as_str().unwrap().as_bytes().to_vec(),
    ];
    for secret in secrets {
        let attacker = SigningKey::hmac(&secret);
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            for header in [json!({"kid": "rsa"}), json!({})] {
                let t = token_with(alg, &attacker, header, json!({"sub": "admin"}));
                let tok = decode(&t).unwrap();
                assert_eq!(
                    err(tok.verify_signature(&jwks_no_alg)),
                    Status::JwtVerificationFail
                );
                assert_eq!(
                    err(tok.verify_signature(&jwks_pinned)),
                    Status::JwksKidAlgMismatch
                );
            }
        }
    }
}

#[test]
fn psychic_ecdsa_signatures_are_rejected() {
    let k = SigningKey::generate(KeyKind::EcP256).unwrap();
    let jwks = jwks_of(&[k.public_jwk(Some("ec"))]);
    let t = token_with(
        Algorithm::ES256,
        &k,
        json!({"kid": "ec"}),
        json!({"sub": "x"}),
    );
    assert_eq!(decode(&t).unwrap().verify_signature(&jwks), Ok(()));
    // P-256 group order n.
    let order: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];
    let mut one = [0u8; 32];
    one[31] = 1;
    let zero = [0u8; 32];
    for (r, s) in [
        (zero, zero),
        (zero, one),
        (one, zero),
        (order, order),
        (one, order),
    ] {
        let sig = [r, s].concat();
        let forged = decode(&with_signature(&t, &sig)).unwrap();
        assert_eq!(
            err(forged.verify_signature(&jwks)),
            Status::JwtVerificationFail
        );
    }
}

/// Minimal DER `SEQUENCE { INTEGER r, INTEGER s }` from fixed-width halves.
fn ecdsa_der(raw: &[u8]) -> Vec<u8> {
    let int = |b: &[u8]| {
        let first = b.iter().position(|x| *x != 0).unwrap_or(b.len() - 1);
        let mut v = b[first..].to_vec();
        if v[0] & 0x80 != 0 {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    };
    let half = raw.len() / 2;
    let body = [int(&raw[..half]), int(&raw[half..])].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

#[test]
fn ecdsa_signatures_must_be_exact_raw_length() {
    let k = SigningKey::generate(KeyKind::EcP256).unwrap();
    let jwks = jwks_of(&[k.public_jwk(None)]);
    let t = token_with(Algorithm::ES256, &k, json!({}), json!({"sub": "x"}));
    let sig = signature_of(&t);
    assert_eq!(sig.len(), 64);
    let der = ecdsa_der(&sig);
    let padded = [sig.as_slice(), &[0]].concat();
    let short = &sig[..63];
    for bad in [der.as_slice(), padded.as_slice(), short, &[][..]] {
        if bad.is_empty() {
            continue; // an empty section is a format error, tested elsewhere
        }
        let forged = decode(&with_signature(&t, bad)).unwrap();
        assert_eq!(
            err(forged.verify_signature(&jwks)),
            Status::JwtVerificationFail
        );
    }
}

#[test]
fn embedded_header_keys_are_never_used() {
    let legit = SigningKey::generate(KeyKind::EcP256).unwrap();
    let jwks = jwks_of(&[legit.public_jwk(Some("legit"))]);
    let attacker = SigningKey::generate(KeyKind::EcP256).unwrap();
    let attacker_jwk = attacker.public_jwk(Some("legit"));
    for header in [
        json!({ "jwk": attacker_jwk }),
        json!({ "kid": "legit", "jwk": attacker_jwk }),
        json!({ "jku": "https://attacker.example/jwks.json" }),
        json!({ "x5u": "https://attacker.example/cert.pem" }),
        json!({ "x5c": ["MIIB"] }),
    ] {
        let t = token_with(Algorithm::ES256, &attacker, header, json!({"sub": "admin"}));
        let tok = decode(&t).unwrap();
        assert_eq!(
            err(tok.verify_signature(&jwks)),
            Status::JwtVerificationFail
        );
        assert_eq!(
            err(verify(&t, &Validation::default(), &jwks, NOW)),
            Status::JwtVerificationFail
        );
    }
    // The same attacker token with a symmetric twist: attacker jwk as oct.
    let hs_attacker = SigningKey::hmac(b"attacker");
    let t = token_with(
        Algorithm::HS256,
        &hs_attacker,
        json!({ "jwk": hs_attacker.public_jwk(None) }),
        json!({}),
    );
    assert_eq!(
        err(decode(&t).unwrap().verify_signature(&jwks)),
        Status::JwtVerificationFail
    );
}

#[test]
fn tampered_payload_fails() {
    let t = token_with(Algorithm::HS256, &hs(), json!({}), json!({"sub": "alice"}));
    let parts: Vec<&str> = t.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], b64(br#"{"sub":"admin"}"#), parts[2]);
    assert_eq!(
        err(decode(&forged).unwrap().verify_signature(&hs_jwks())),
        Status::JwtVerificationFail
    );
}

#[test]
fn duplicate_claims_signed_validly_are_still_rejected() {
    let t = payload_token(r#"{"iss":"evil","sub":"alice","sub":"admin"}"#);
    assert_eq!(
        err(verify(&t, &Validation::default(), &hs_jwks(), NOW)),
        Status::JwtPayloadParseErrorBadJson
    );
}

#[test]
fn verify_compact_signature_ignores_payload_content() {
    let t = hs_token(r#"{"alg":"HS256","kid":"hs"}"#, "not json at all");
    assert_eq!(err(decode(&t)), Status::JwtPayloadParseErrorBadJson);
    assert_eq!(verify_compact_signature(&t, &hs_jwks()), Ok(()));
    let other = jwks_of(&[SigningKey::hmac(b"x").public_jwk(None)]);
    assert_eq!(
        err(verify_compact_signature(&t, &other)),
        Status::JwtVerificationFail
    );
    // Header and base64 checks still apply.
    let crit = hs_token(r#"{"alg":"HS256","crit":["b64"],"b64":false}"#, "x");
    assert_eq!(
        err(verify_compact_signature(&crit, &hs_jwks())),
        Status::JwtHeaderUnsupportedCrit
    );
    assert_eq!(
        err(verify_compact_signature("e30.e30=.AAAA", &hs_jwks())),
        Status::JwtHeaderBadAlg
    );
    let h = b64(br#"{"alg":"HS256"}"#);
    assert_eq!(
        err(verify_compact_signature(
            &format!("{h}.e30=.AAAA"),
            &hs_jwks()
        )),
        Status::JwtPayloadParseErrorBadBase64
    );
}

// ---------------------------------------------------------------------------------------
// JWKS parsing.

fn skipped_reason(jwk: Value) -> String {
    let jwks = Jwks::parse(&json!({ "keys": [jwk] }).to_string()).unwrap();
    assert!(jwks.is_empty(), "key should be skipped: {jwks:?}");
    jwks.skipped()[0].reason.clone()
}

#[test]
fn jwks_skips_bad_keys_with_reasons() {
    let rsa_jwk = rsa().public_jwk(Some("r"));
    let n = rsa_jwk["n"].as_str().unwrap().to_owned();
    let ec = SigningKey::generate(KeyKind::EcP256)
        .unwrap()
        .public_jwk(None);
    let with = |base: &Value, k: &str, v: Value| {
        let mut j = base.clone();
        j[k] = v;
        j
    };
    let without = |base: &Value, k: &str| {
        let mut j = base.clone();
        j.as_object_mut().unwrap().remove(k);
        j
    };
    let cases: Vec<(Value, &str)> = vec![
        (json!({"n": n}), "[kty] is missing"),
        (with(&rsa_jwk, "kty", json!(1)), "[kty] is bad"),
        (with(&rsa_jwk, "kty", json!("RSA-HSM")), "not supported"),
        (
            with(&rsa_jwk, "kid", json!(1)),
            "[kid] field is not a string",
        ),
        (
            with(&rsa_jwk, "alg", json!(["RS256"])),
            "[alg] field is not a string",
        ),
        (
            with(&rsa_jwk, "alg", json!("RSA-OAEP")),
            "not a supported signature algorithm",
        ),
        (with(&rsa_jwk, "alg", json!("ES256")), "[RS] or [PS]"),
        (with(&rsa_jwk, "use", json!("enc")), "[use]"),
        (with(&rsa_jwk, "key_ops", json!(["encrypt"])), "[key_ops]"),
        (with(&rsa_jwk, "key_ops", json!("verify")), "[key_ops]"),
        (without(&rsa_jwk, "n"), "[n] field is missing"),
        (
            with(&rsa_jwk, "e", json!(65537)),
            "[e] field is not a string",
        ),
        (
            with(&rsa_jwk, "n", json!("!!!")),
            "[n] field is an invalid Base64url",
        ),
        (with(&rsa_jwk, "e", json!("EQ")), "3 or 65537"),
        (with(&rsa_jwk, "n", json!(b64(&[0xc5; 128]))), "1024 bits"),
        (with(&rsa_jwk, "n", json!(b64(&[0xc5; 1025]))), "8200 bits"),
        (
            with(&ec, "crv", json!("P-192")),
            "not supported for an EC key",
        ),
        (with(&ec, "crv", json!(256)), "[crv] field is not string"),
        (
            with(&ec, "alg", json!("ES384")),
            "not compatible with [alg]",
        ),
        (with(&ec, "alg", json!("RS256")), "[ES]"),
        (
            with(&ec, "x", json!(b64(&[7; 32]))),
            "not a point on the curve",
        ),
        (
            with(&ec, "y", json!(b64(&[1; 33]))),
            "longer than the curve's field",
        ),
        (without(&ec, "y"), "[y] field is missing"),
        (json!({"kty": "oct", "k": ""}), "[k] field is empty"),
        (json!({"kty": "oct"}), "[k] field is missing"),
        (
            json!({"kty": "oct", "k": "c2VjcmV0", "alg": "RS256"}),
            "[HS]",
        ),
        (
            json!({"kty": "OKP", "crv": "X25519", "x": b64(&[9; 32])}),
            "not supported for an OKP key",
        ),
        (
            json!({"kty": "OKP", "x": b64(&[9; 32])}),
            "[crv] field is missing",
        ),
        (
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[9; 31])}),
            "wrong length",
        ),
        (
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[9; 32]), "alg": "ES256"}),
            "[EdDSA]",
        ),
    ];
    for (jwk, want) in cases {
        let reason = skipped_reason(jwk.clone());
        assert!(
            reason.contains(want),
            "{jwk}: {reason:?} should contain {want:?}"
        );
        // Reasons never echo key material.
        assert!(!reason.contains(&n[..20]), "{reason}");
    }
    // Non-object entries.
    let j = Jwks::parse(r#"{"keys":[1,"x",null,[]]}"#).unwrap();
    assert_eq!(j.skipped().len(), 4);
    assert_eq!(j.skipped()[2].index, 2);
}

#[test]
fn jwks_keeps_good_keys_next_to_bad_ones() {
    let good = rsa().public_jwk(Some("good"));
    let doc = json!({"keys": [{"kty": "RSA", "kid": "bad"}, good, {"kty": "EC"}]});
    let j = Jwks::parse(&doc.to_string()).unwrap();
    assert_eq!(j.keys().len(), 1);
    assert_eq!(j.keys()[0].kid(), Some("good"));
    assert_eq!(j.keys()[0].index(), 1);
    assert_eq!(j.keys()[0].kty(), "RSA");
    assert_eq!(j.keys()[0].alg(), None);
    let skipped: Vec<(usize, Option<&str>)> = j
        .skipped()
        .iter()
        .map(|s| (s.index, s.kid.as_deref()))
        .collect();
    assert_eq!(skipped, vec![(0, Some("bad")), (2, None)]);
}

#[test]
fn jwks_member_decoding_is_lenient() {
    let jwk = rsa().public_jwk(None);
    let n = crate::b64::decode_lenient(jwk["n"].as_str().unwrap()).unwrap();
    // Leading zero byte on n, padding on e.
    let padded = json!({"kty": "RSA", "n": b64(&[&[0u8][..], &n].concat()), "e": "AQAB"});
    let t = decode(&token_with(Algorithm::RS256, rsa(), json!({}), json!({}))).unwrap();
    assert_eq!(t.verify_signature(&jwks_of(&[padded])), Ok(()));
    let b64_std_padding = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE, &n);
    let j = jwks_of(&[json!({"kty": "RSA", "n": b64_std_padding, "e": "AQAB"})]);
    assert_eq!(t.verify_signature(&j), Ok(()));
    // e = 3 is accepted by the parser.
    assert_eq!(
        jwks_of(&[json!({"kty": "RSA", "n": jwk["n"], "e": "Aw"})])
            .keys()
            .len(),
        1
    );
}

#[test]
fn jwks_ec_curve_defaults() {
    let k = SigningKey::generate(KeyKind::EcP256).unwrap();
    let mut bare = k.public_jwk(None);
    bare.as_object_mut().unwrap().remove("crv");
    let j = jwks_of(&[bare.clone()]);
    assert_eq!(j.keys()[0].curve(), Some("P-256"));
    assert_eq!(j.keys()[0].algorithms(), &[Algorithm::ES256]);
    // alg alone gives the curve.
    let k384 = SigningKey::generate(KeyKind::EcP384).unwrap();
    let mut by_alg = k384.public_jwk(None);
    by_alg.as_object_mut().unwrap().remove("crv");
    by_alg["alg"] = json!("ES384");
    let j = jwks_of(&[by_alg]);
    assert_eq!(j.keys()[0].curve(), Some("P-384"));
    // Short coordinates (leading zeros dropped by a sloppy encoder) are left-padded.
    let x = crate::b64::decode_lenient(bare["x"].as_str().unwrap()).unwrap();
    if x[0] == 0 {
        let mut short = bare.clone();
        short["x"] = json!(b64(&x[1..]));
        assert_eq!(jwks_of(&[short]).keys().len(), 1);
    }
}

#[test]
fn jwks_use_and_key_ops_that_allow_signing() {
    let mut jwk = rsa().public_jwk(None);
    jwk["use"] = json!("sig");
    jwk["key_ops"] = json!(["verify", "sign"]);
    assert_eq!(jwks_of(&[jwk]).keys().len(), 1);
}

#[test]
fn jwks_reports_private_material() {
    let mut rsa_priv = rsa().public_jwk(None);
    rsa_priv["d"] = json!("AQAB");
    let mut ec_priv = SigningKey::generate(KeyKind::EcP256)
        .unwrap()
        .public_jwk(None);
    ec_priv["d"] = json!(b64(&[1; 32]));
    let doc = json!({"keys": [rsa().public_jwk(None), rsa_priv, hs().public_jwk(None), ec_priv, {"kty": "x", "qi": "AA"}]});
    let j = Jwks::parse(&doc.to_string()).unwrap();
    assert_eq!(j.had_private_material(), vec![1, 2, 3, 4]);
    // Private members are ignored: the keys stay usable.
    assert_eq!(j.keys().len(), 4);
}

#[test]
fn jwks_debug_prints_no_key_bytes() {
    let rsa_jwk = rsa().public_jwk(Some("r"));
    let n = rsa_jwk["n"].as_str().unwrap();
    let hs_jwk = hs().public_jwk(Some("h"));
    let j = jwks_of(&[rsa_jwk.clone(), hs_jwk.clone()]);
    let dbg = format!("{j:?} {:?}", j.keys());
    assert!(dbg.contains("\"r\""));
    assert!(!dbg.contains(&n[..16]));
    assert!(!dbg.contains(hs_jwk["k"].as_str().unwrap()));
    let hex: String = crate::b64::decode_lenient(n).unwrap()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!dbg.to_lowercase().contains(&hex));
}

#[test]
fn jwks_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Jwks>();
    assert_send_sync::<Token>();
    assert_send_sync::<Status>();
    let j = hs_jwks();
    let c = j.clone();
    assert!(std::ptr::eq(j.keys().as_ptr(), c.keys().as_ptr()));
}

// ---------------------------------------------------------------------------------------
// Signing.

#[test]
fn signing_rejects_algorithm_key_mismatch() {
    let ec = SigningKey::generate(KeyKind::EcP256).unwrap();
    let e = sign(Algorithm::ES384, &ec, &Map::new(), &Map::new()).unwrap_err();
    assert_eq!(
        e,
        SignError::AlgorithmMismatch {
            alg: Algorithm::ES384,
            key: "EC P-256"
        }
    );
    assert_eq!(
        e.to_string(),
        "algorithm ES384 cannot be used with a EC P-256 key"
    );
    assert!(sign(Algorithm::HS256, rsa(), &Map::new(), &Map::new()).is_err());
    assert!(sign(Algorithm::RS256, &hs(), &Map::new(), &Map::new()).is_err());
    assert!(sign(Algorithm::EdDSA, &ec, &Map::new(), &Map::new()).is_err());
    assert_eq!(
        SigningKey::generate(KeyKind::Rsa(1024)).unwrap_err(),
        SignError::UnsupportedKeySize(1024)
    );
    assert_eq!(
        SigningKey::generate(KeyKind::Hmac(0)).unwrap_err(),
        SignError::UnsupportedKeySize(0)
    );
}

#[test]
fn sign_sets_alg_and_keeps_other_header_members() {
    let t = sign(
        Algorithm::HS384,
        &hs(),
        &obj(json!({"alg": "none", "kid": "hs", "typ": "JWT"})),
        &obj(json!({"sub": "x"})),
    )
    .unwrap();
    let tok = decode(&t).unwrap();
    assert_eq!(tok.header().alg, Algorithm::HS384);
    assert_eq!(tok.header().kid.as_deref(), Some("hs"));
    assert_eq!(tok.verify_signature(&hs_jwks()), Ok(()));
}

#[test]
fn pem_round_trips_and_formats() {
    for kind in [
        KeyKind::Rsa(2048),
        KeyKind::EcP256,
        KeyKind::EcP384,
        KeyKind::EcP521,
        KeyKind::Ed25519,
    ] {
        let k = SigningKey::generate(kind).unwrap();
        let pem = k.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{kind:?}");
        let back = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(back.kind(), kind);
        assert_eq!(back.thumbprint(), k.thumbprint());
        // Debug never shows the key.
        let dbg = format!("{back:?}");
        assert!(!dbg.contains(&pem[28..60]), "{dbg}");
    }
    // SEC1 "EC PRIVATE KEY", after an "EC PARAMETERS" block like `openssl ecparam -genkey`.
    for kind in [KeyKind::EcP256, KeyKind::EcP384, KeyKind::EcP521] {
        let curve = match kind {
            KeyKind::EcP256 => &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            KeyKind::EcP384 => &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            _ => &aws_lc_rs::signature::ECDSA_P521_SHA512_FIXED_SIGNING,
        };
        let pair = aws_lc_rs::signature::EcdsaKeyPair::generate(curve).unwrap();
        use aws_lc_rs::encoding::AsDer as _;
        let sec1 = pair.private_key().as_der().unwrap();
        let body =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sec1.as_ref());
        let pem = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n-----BEGIN EC PRIVATE KEY-----\n{body}\n-----END EC PRIVATE KEY-----\n"
        );
        let k = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(k.kind(), kind);
    }
    // HMAC: unpadded base64url of the secret.
    assert_eq!(hs().to_pem().unwrap(), format!("{}\n", b64(SECRET)));
    assert_eq!(hs().kind(), KeyKind::Hmac(SECRET.len()));
}

#[test]
fn pem_errors() {
    assert_eq!(
        SigningKey::from_pem("").unwrap_err(),
        SignError::NoPrivateKey
    );
    assert_eq!(
        SigningKey::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap_err(),
        SignError::NoPrivateKey
    );
    assert!(matches!(
        SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n").unwrap_err(),
        SignError::BadPem(_)
    ));
    assert!(matches!(
        SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n")
            .unwrap_err(),
        SignError::BadPem(_)
    ));
    assert!(matches!(
        SigningKey::from_pem(
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nAAAA\n-----END RSA PRIVATE KEY-----\n"
        )
        .unwrap_err(),
        SignError::BadPem(_)
    ));
    assert!(matches!(
        SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .unwrap_err(),
        SignError::KeyRejected(_)
    ));
}

#[test]
fn thumbprints_match_rfc_examples() {
    // RFC 7638 §3.1.
    let rsa = json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    });
    assert_eq!(
        jwk_thumbprint(rsa.as_object().unwrap()).as_deref(),
        Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
    );
    // RFC 8037 A.3.
    let okp =
        json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
    assert_eq!(
        jwk_thumbprint(okp.as_object().unwrap()).as_deref(),
        Some("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k")
    );
    assert_eq!(
        jwk_thumbprint(json!({"kty": "RSA"}).as_object().unwrap()),
        None
    );
    assert_eq!(
        jwk_thumbprint(json!({"kty": "x"}).as_object().unwrap()),
        None
    );
}

// ---------------------------------------------------------------------------------------
// Robustness: every one-character change or truncation of a valid token or JWKS, with the
// outcomes it may have (the fuzz targets in fuzz/ do the same at random, at length).

/// The section of a compact token that byte `i` belongs to; `None` for the two dots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Header,
    Payload,
    Signature,
}

fn section_of(token: &str, i: usize) -> Option<Section> {
    let dot1 = token.find('.').unwrap();
    let dot2 = token.rfind('.').unwrap();
    match i {
        _ if i < dot1 => Some(Section::Header),
        _ if i > dot1 && i < dot2 => Some(Section::Payload),
        _ if i > dot2 => Some(Section::Signature),
        _ => None,
    }
}

/// The statuses `verify` may give for a token whose only change is in `section`: a change
/// can break that section or the signature over it, never a section it did not touch.
/// `JwtBadFormat` (a `.` added, a dot removed) is allowed everywhere.
fn allowed_after_change(section: Section, status: Status) -> bool {
    use Status::*;
    status == JwtBadFormat
        || match section {
            Section::Header => matches!(
                status,
                JwtHeaderParseErrorBadBase64
                    | JwtHeaderParseErrorBadJson
                    | JwtHeaderBadAlg
                    | JwtHeaderNotImplementedAlg
                    | JwtHeaderBadKid
                    | JwtHeaderUnsupportedCrit
                    | JwksKidAlgMismatch
                    | JwtVerificationFail
            ),
            Section::Payload => matches!(
                status,
                JwtPayloadParseErrorBadBase64
                    | JwtPayloadParseErrorBadJson
                    | JwtPayloadParseErrorIssNotString
                    | JwtPayloadParseErrorSubNotString
                    | JwtPayloadParseErrorIatNotInteger
                    | JwtPayloadParseErrorIatOutOfRange
                    | JwtPayloadParseErrorNbfNotInteger
                    | JwtPayloadParseErrorNbfOutOfRange
                    | JwtPayloadParseErrorExpNotInteger
                    | JwtPayloadParseErrorExpOutOfRange
                    | JwtPayloadParseErrorJtiNotString
                    | JwtPayloadParseErrorAudNotString
                    | JwtUnknownIssuer
                    | JwtAudienceNotAllowed
                    | JwtExpired
                    | JwtNotYetValid
                    | JwtVerificationFail
            ),
            Section::Signature => {
                matches!(
                    status,
                    JwtSignatureParseErrorBadBase64
                        | JwtEd25519SignatureWrongLength
                        | JwtVerificationFail
                )
            }
        }
}

/// Every strict prefix and every one-character substitution of four valid tokens (ES256 with
/// a `kid`, EdDSA, HS256 and RS256 without). Decoding is strict (canonical base64url, no
/// duplicate members), so a token is accepted exactly when its text is unchanged: the number
/// of accepted substitutions equals the number of no-op ones (a character replaced by
/// itself). Every rejection names the section that changed (or the signature over it).
#[test]
fn mutated_tokens_are_rejected_unless_unchanged() {
    const SUBSTITUTES: [char; 10] = ['.', '=', 'A', 'e', '_', '-', '+', ' ', '\0', 'é'];
    let ec = SigningKey::generate(KeyKind::EcP256).unwrap();
    let ed = SigningKey::generate(KeyKind::Ed25519).unwrap();
    let jwks = jwks_of(&[
        ec.public_jwk(Some("ec")),
        ed.public_jwk(None),
        hs().public_jwk(None),
        rsa().public_jwk(None),
    ]);
    let claims = json!({
        "iss": "x", "sub": "y", "aud": ["a"], "exp": NOW + 600, "nbf": NOW - 10,
        "iat": NOW - 10, "jti": "j"
    });
    let seeds = [
        token_with(Algorithm::ES256, &ec, json!({"kid": "ec"}), claims.clone()),
        token_with(Algorithm::EdDSA, &ed, json!({}), claims.clone()),
        token_with(
            Algorithm::HS256,
            &hs(),
            json!({"typ": "JWT"}),
            claims.clone(),
        ),
        token_with(Algorithm::RS256, rsa(), json!({}), claims),
    ];
    let v = Validation {
        issuer: Some("x".into()),
        audiences: vec!["a".into()],
        ..Validation::default()
    };
    let (mut accepted, mut no_ops, mut rejected) = (0, 0, 0);
    for seed in &seeds {
        assert!(
            verify(seed, &v, &jwks, NOW).is_ok(),
            "seed verifies: {seed}"
        );
        assert_eq!(verify_compact_signature(seed, &jwks), Ok(()));
        let dot2 = seed.rfind('.').unwrap();
        for cut in 0..seed.len() {
            let t = &seed[..cut];
            let (full, jws) = (
                err(verify(t, &v, &jwks, NOW)),
                err(verify_compact_signature(t, &jwks)),
            );
            if cut <= dot2 + 1 {
                // Fewer than three sections, or an empty signature.
                assert_eq!(
                    (full, jws),
                    (Status::JwtBadFormat, Status::JwtBadFormat),
                    "{t}"
                );
            } else {
                for status in [full, jws] {
                    assert!(
                        allowed_after_change(Section::Signature, status),
                        "{status:?}: {t}"
                    );
                }
            }
        }
        for i in 0..seed.len() {
            for c in SUBSTITUTES {
                let mut s = String::with_capacity(seed.len() + 2);
                s.push_str(&seed[..i]);
                s.push(c);
                s.push_str(&seed[i + 1..]);
                let (full, jws) = (
                    verify(&s, &v, &jwks, NOW),
                    verify_compact_signature(&s, &jwks),
                );
                if s == *seed {
                    no_ops += 1;
                    assert!(full.is_ok() && jws.is_ok(), "no-op change rejected: {s}");
                }
                match (full, jws) {
                    (Ok(_), Ok(())) => accepted += 1,
                    (Err(full), Err(jws)) => {
                        rejected += 1;
                        match section_of(seed, i) {
                            None => assert_eq!(
                                (full, jws),
                                (Status::JwtBadFormat, Status::JwtBadFormat)
                            ),
                            Some(section) => {
                                assert!(
                                    allowed_after_change(section, full),
                                    "{section:?} changed, verify gave {full:?}: {s}"
                                );
                                assert!(
                                    allowed_after_change(section, jws),
                                    "{section:?} changed, verify_compact_signature gave {jws:?}: {s}"
                                );
                            }
                        }
                    }
                    (full, jws) => panic!(
                        "verify {full:?} and verify_compact_signature {jws:?} disagree on {s}"
                    ),
                }
            }
        }
    }
    // One no-op per character of a seed that is among the substitutes.
    let expected: usize = seeds.iter().map(|t| t.matches(SUBSTITUTES).count()).sum();
    assert_eq!(no_ops, expected);
    assert_eq!(
        accepted, no_ops,
        "accepted changes beyond the no-ops ({rejected} rejected)"
    );
}

/// Every strict prefix and every one-character substitution of a JWKS with an RSA, an EC
/// P-521, an Ed25519 and an HMAC key, each with its own `kid` and a token it signed, plus two
/// tokens signed by other keys with the same `kid`s. A mutated document either is refused with
/// a JWKS status, or its keys verify only what the unchanged keys verify: a token verifies
/// only if its key's material (`n` and `e`, `x` and `y`, `x`, `k`) is intact and its `kid`
/// value unchanged, and the foreign tokens never verify.
#[test]
fn mutated_jwks_verify_only_their_own_tokens() {
    let ec = SigningKey::generate(KeyKind::EcP521).unwrap();
    let ed = SigningKey::generate(KeyKind::Ed25519).unwrap();
    let hk = hs();
    let keys: [(&str, Algorithm, &SigningKey); 4] = [
        ("r", Algorithm::RS256, rsa()),
        ("e", Algorithm::ES512, &ec),
        ("o", Algorithm::EdDSA, &ed),
        ("h", Algorithm::HS256, &hk),
    ];
    let jwks_json: Vec<Value> = keys
        .iter()
        .map(|(kid, _, k)| k.public_jwk(Some(kid)))
        .collect();
    let doc = json!({ "keys": jwks_json }).to_string();
    let claims = json!({"iss": "x", "exp": NOW + 600});
    let sign_with =
        |alg, key, kid: &str| token_with(alg, key, json!({ "kid": kid }), claims.clone());
    let own: Vec<String> = keys
        .iter()
        .map(|(kid, alg, k)| sign_with(*alg, *k, kid))
        .collect();
    let foreign = [
        sign_with(Algorithm::RS256, rsa2(), "r"),
        sign_with(
            Algorithm::HS256,
            &SigningKey::hmac(b"another-secret-0123456789abcdef"),
            "h",
        ),
    ];
    // Key material as bytes: JWK members are decoded leniently (non-zero trailing bits are
    // allowed), so a changed character can leave the same key.
    let material = |jwk: &Value| -> Vec<Option<Vec<u8>>> {
        ["n", "e", "x", "y", "k"]
            .iter()
            .map(|m| {
                jwk.get(*m)
                    .and_then(Value::as_str)
                    .and_then(crate::b64::decode_lenient)
            })
            .collect()
    };
    let verifies = |jwks: &Jwks, t: &str| verify_compact_signature(t, jwks).is_ok();

    let parsed = Jwks::parse(&doc).unwrap();
    assert_eq!(parsed.keys().len(), 4);
    assert!(own.iter().all(|t| verifies(&parsed, t)));
    assert!(!foreign.iter().any(|t| verifies(&parsed, t)));

    for cut in 0..doc.len() {
        assert_eq!(
            err(Jwks::parse(&doc[..cut])),
            Status::JwksParseError,
            "{}",
            &doc[..cut]
        );
    }
    let (mut refused, mut parsed_docs, mut no_ops) = (0, 0, 0);
    for i in 0..doc.len() {
        for c in ['"', 'A', '0', '{', ']', ',', 'x'] {
            let mut s = doc.clone();
            s.replace_range(i..=i, &c.to_string());
            let jwks = match Jwks::parse(&s) {
                Err(status) => {
                    assert!(
                        matches!(
                            status,
                            Status::JwksParseError | Status::JwksNoKeys | Status::JwksBadKeys
                        ),
                        "{status:?}: {s}"
                    );
                    assert!(s != doc, "no-op change refused");
                    refused += 1;
                    continue;
                }
                Ok(jwks) => jwks,
            };
            parsed_docs += 1;
            if s == doc {
                no_ops += 1;
                assert!(
                    own.iter().all(|t| verifies(&jwks, t)),
                    "no-op change broke a key"
                );
            }
            assert!(jwks.keys().len() + jwks.skipped().len() <= 4, "{s}");
            for t in &foreign {
                assert!(!verifies(&jwks, t), "a foreign token verified with {s}");
            }
            let mutated: Value = serde_json::from_str(&s).expect("accepted JWKS is JSON");
            let mutated_keys = mutated["keys"].as_array().unwrap();
            for (k, t) in own.iter().enumerate() {
                if !verifies(&jwks, t) {
                    continue;
                }
                // Some key in the document has the signer's material and its kid (or none).
                let kid = keys[k].0;
                assert!(
                    mutated_keys
                        .iter()
                        .any(|jwk| material(jwk) == material(&jwks_json[k])
                            && jwk.get("kid").is_none_or(|v| v == kid)),
                    "key {kid}'s token verified without its key and kid: {s}"
                );
            }
        }
    }
    // One no-op per character of the document that is among the substitutes.
    assert_eq!(
        no_ops,
        doc.matches(['"', 'A', '0', '{', ']', ',', 'x']).count()
    );
    assert!(
        refused > 0 && parsed_docs > no_ops,
        "{refused} refused, {parsed_docs} parsed"
    );
}
