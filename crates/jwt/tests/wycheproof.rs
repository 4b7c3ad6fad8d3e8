//! Project Wycheproof JWS and JWK vectors (C2SP/wycheproof `testvectors_v1/`, vendored in
//! `testdata/wycheproof/` with the licence and the source commit).
//!
//! Every vector's key goes through [`Jwks::parse`] (a JWS group's single JWK is wrapped in a
//! `keys` array; a JWK vector's key set is used as is; HMAC groups have only a `private`
//! key, every other group is verified with its `public` one) and its token through
//! [`verify_compact_signature`]. A vector is accepted when the key set parses with every
//! key usable (none in [`Jwks::skipped`]) and the signature verifies; a skipped key is a
//! rejection of its own, so a key-level vector is never "rejected" only because its token
//! happens to be malformed.
//!
//! Every `invalid` vector must be rejected and every `valid` one accepted, except the
//! exceptions listed below, which are asserted exactly (tcId and, for rejections, status) so
//! that any change of behaviour is noticed. `testdata/wycheproof/README.md` gives the
//! reason for each. `acceptable` vectors (none in the current files) are only recorded.

use meshguard_jwt::{Jwks, Status, verify_compact_signature};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

const JWS_FILE: &str = "json_web_signature_test.json";
const JWK_FILE: &str = "json_web_key_test.json";

/// `valid` JWS vectors meshguard rejects on purpose, with how it rejects them.
const JWS_VALID_REJECTED: &[(u64, Verdict)] = &[
    // emptyPayload (RS256, RS384, RS512, PS256, PS384, PS512): `h..s` has an empty section
    // (docs/decisions.md, decision 2; Envoy rejects it too).
    (259, Verdict::Rejected(Status::JwtBadFormat)),
    (264, Verdict::Rejected(Status::JwtBadFormat)),
    (268, Verdict::Rejected(Status::JwtBadFormat)),
    (272, Verdict::Rejected(Status::JwtBadFormat)),
    (320, Verdict::Rejected(Status::JwtBadFormat)),
    (325, Verdict::Rejected(Status::JwtBadFormat)),
    // RFC 7520 Figure 20: a PS384 token against a JWK whose `alg` is PS256 (docs/decisions.md,
    // decision 2, as Envoy: a JWK whose alg differs from the token's is skipped).
    (346, Verdict::Rejected(Status::JwksKidAlgMismatch)),
    // RFC 7520 Figure 27: the JWK's `alg` is "ES521", not a JWS algorithm, so the key is
    // skipped (Envoy keeps it, then skips it for the alg mismatch: JwksKidAlgMismatch).
    (347, Verdict::KeySkipped),
    (350, Verdict::Rejected(Status::JwksKidAlgMismatch)),
    (351, Verdict::KeySkipped),
    // A '?' inside the header / payload; the MAC was computed without it, so only a decoder
    // that drops invalid characters accepts these (docs/decisions.md, decision 2).
    (372, Verdict::Rejected(Status::JwtHeaderParseErrorBadBase64)),
    (
        373,
        Verdict::Rejected(Status::JwtPayloadParseErrorBadBase64),
    ),
];

/// `invalid` JWS vectors meshguard accepts: both are byte-identical to tcId 357, a `valid`
/// vector (asserted below); the padding their comments describe is not in the data.
const JWS_INVALID_ACCEPTED: &[u64] = &[367, 370];

/// The valid vector that 367 and 370 duplicate.
const JWS_DUPLICATED_VALID: u64 = 357;

/// `valid` JWK vectors meshguard rejects on purpose.
const JWK_VALID_REJECTED: &[(u64, Verdict)] = &[];

/// `invalid` JWK vectors meshguard accepts, as Envoy does; each verifies only with a key the
/// operator configured (README.md explains each).
const JWK_INVALID_ACCEPTED: &[u64] = &[
    1,  // MixedKeySet (flagged Ambiguous): an oct and an EC key in one set
    4,  // DuplicateKid (flagged Ambiguous): two keys with the same kid, each tried
    7,  // an RSA key with the ROCA weakness: not fingerprinted
    10, // HS256 key of 31 bytes
    11, // HS384 key of 47 bytes
    12, // HS512 key of 63 bytes
];

fn data(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/wycheproof")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// meshguard's answer to one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Accepted,
    /// The key set was refused as a whole.
    JwksRefused(Status),
    /// `Jwks::parse` skipped a key as unusable (the reason is in `Vector::skipped`).
    KeySkipped,
    /// Every key is usable and the token was refused.
    Rejected(Status),
}

/// meshguard's verdict, and the reasons of any skipped keys.
fn judge(key: &Value, jws: &str) -> (Verdict, Vec<String>) {
    let doc = if key.get("keys").is_some() {
        key.clone()
    } else {
        json!({ "keys": [key] })
    };
    match Jwks::parse(&doc.to_string()) {
        Err(s) => (Verdict::JwksRefused(s), Vec::new()),
        Ok(jwks) if !jwks.skipped().is_empty() => (
            Verdict::KeySkipped,
            jwks.skipped().iter().map(|k| k.reason.clone()).collect(),
        ),
        Ok(jwks) => match verify_compact_signature(jws, &jwks) {
            Ok(()) => (Verdict::Accepted, Vec::new()),
            Err(s) => (Verdict::Rejected(s), Vec::new()),
        },
    }
}

struct Vector {
    tc_id: u64,
    group: String,
    comment: String,
    result: String,
    jws: String,
    verdict: Verdict,
    skipped: Vec<String>,
}

fn run(file: &str) -> Vec<Vector> {
    let doc = data(file);
    let mut out = Vec::new();
    for group in doc["testGroups"].as_array().expect("testGroups") {
        let key = group
            .get("public")
            .or_else(|| group.get("private"))
            .expect("group key");
        for t in group["tests"].as_array().expect("tests") {
            let jws = t["jws"].as_str().expect("jws").to_owned();
            let (verdict, skipped) = judge(key, &jws);
            out.push(Vector {
                tc_id: t["tcId"].as_u64().expect("tcId"),
                group: group["comment"].as_str().unwrap_or("").to_owned(),
                comment: t["comment"].as_str().unwrap_or("").to_owned(),
                result: t["result"].as_str().expect("result").to_owned(),
                verdict,
                skipped,
                jws,
            });
        }
    }
    let declared = doc["numberOfTests"].as_u64().expect("numberOfTests");
    assert_eq!(out.len() as u64, declared, "{file}: numberOfTests");
    out
}

/// Checks every vector of `file` against the expectations and exceptions; prints counts.
fn check(file: &str, valid_rejected: &[(u64, Verdict)], invalid_accepted: &[u64]) -> Vec<Vector> {
    let vectors = run(file);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut got_valid_rejected = Vec::new();
    let mut got_invalid_accepted = Vec::new();
    for v in &vectors {
        let accepted = v.verdict == Verdict::Accepted;
        match v.result.as_str() {
            "valid" => {
                *counts.entry("valid").or_default() += 1;
                if accepted {
                    *counts.entry("passed").or_default() += 1;
                } else {
                    got_valid_rejected.push((v.tc_id, v.verdict));
                }
            }
            "invalid" => {
                *counts.entry("invalid").or_default() += 1;
                if accepted {
                    got_invalid_accepted.push(v.tc_id);
                } else {
                    *counts.entry("passed").or_default() += 1;
                }
            }
            "acceptable" => {
                *counts.entry("acceptable").or_default() += 1;
                println!(
                    "wycheproof {file} tcId {} acceptable [{}] {}: meshguard {:?}",
                    v.tc_id, v.group, v.comment, v.verdict
                );
            }
            other => panic!("{file} tcId {}: unknown result {other:?}", v.tc_id),
        }
    }
    for v in &vectors {
        let documented = valid_rejected.iter().any(|(id, _)| *id == v.tc_id)
            || invalid_accepted.contains(&v.tc_id);
        let off = match v.result.as_str() {
            "valid" => v.verdict != Verdict::Accepted,
            "invalid" => v.verdict == Verdict::Accepted,
            _ => false,
        };
        if off && !documented {
            println!(
                "wycheproof {file}: UNDOCUMENTED tcId {} [{}] {} ({}): {:?}",
                v.tc_id, v.group, v.comment, v.result, v.verdict
            );
        }
    }
    let exceptions = got_valid_rejected.len() + got_invalid_accepted.len();
    println!(
        "wycheproof {file}: {} vectors: {} valid, {} invalid, {} acceptable; {} as Wycheproof expects, {} documented exceptions ({} valid rejected, {} invalid accepted)",
        vectors.len(),
        counts.get("valid").copied().unwrap_or(0),
        counts.get("invalid").copied().unwrap_or(0),
        counts.get("acceptable").copied().unwrap_or(0),
        counts.get("passed").copied().unwrap_or(0),
        exceptions,
        got_valid_rejected.len(),
        got_invalid_accepted.len(),
    );
    assert_eq!(
        got_invalid_accepted, invalid_accepted,
        "{file}: the invalid vectors meshguard accepts changed"
    );
    assert_eq!(
        got_valid_rejected, valid_rejected,
        "{file}: the valid vectors meshguard rejects changed"
    );
    vectors
}

#[test]
fn json_web_signature_vectors() {
    let vectors = check(JWS_FILE, JWS_VALID_REJECTED, JWS_INVALID_ACCEPTED);
    let jws_of = |id: u64| {
        vectors
            .iter()
            .find(|v| v.tc_id == id)
            .map(|v| v.jws.as_str())
            .unwrap()
    };
    for id in JWS_INVALID_ACCEPTED {
        assert_eq!(
            jws_of(*id),
            jws_of(JWS_DUPLICATED_VALID),
            "tcId {id} is no longer a copy of tcId {JWS_DUPLICATED_VALID}: re-check it"
        );
    }
}

#[test]
fn json_web_key_vectors() {
    let vectors = check(JWK_FILE, JWK_VALID_REJECTED, JWK_INVALID_ACCEPTED);
    for v in &vectors {
        println!(
            "wycheproof {JWK_FILE} tcId {:>2} {:<7} [{}] {}: {:?} {}",
            v.tc_id,
            v.result,
            v.group,
            v.comment,
            v.verdict,
            v.skipped.join("; ")
        );
    }
}
