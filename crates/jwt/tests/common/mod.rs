//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `testdata/<rel>` at the workspace root.
pub fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(rel)
}

pub fn read(rel: &str) -> String {
    let p = testdata(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

pub fn read_json(rel: &str) -> serde_json::Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("parsing {rel}: {e}"))
}

/// Replaces the payload section with `payload_json` (base64url), keeping header and
/// signature: a signed token whose claims were changed.
pub fn swap_payload(token: &str, payload_json: &str) -> String {
    use base64::Engine as _;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload_json);
    format!("{}.{p}.{}", parts[0], parts[2])
}

/// Flips one bit of the decoded payload, re-encodes, keeps header and signature.
pub fn flip_payload_bit(token: &str) -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload = engine.decode(parts[1]).unwrap();
    // Change the case of the first member name's first letter (`"iss"` -> `"Iss"`): one
    // bit differs and the JSON stays valid, so only the signature can catch it.
    let pos = payload
        .iter()
        .position(|b| *b == b'"')
        .map(|q| q + 1)
        .filter(|p| payload.get(*p).is_some_and(u8::is_ascii_alphabetic))
        .expect("payload starts with a member name");
    payload[pos] ^= 0x20;
    format!("{}.{}.{}", parts[0], engine.encode(&payload), parts[2])
}
