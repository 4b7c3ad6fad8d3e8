//! Tokens for scenarios, signed with Istio's public demo key (`testdata/istio-demo/`): the
//! walkthrough's two tokens as they are, and fresh ones with chosen claims.
//!
//! The demo key pair is public (it is in Istio's repository); it exists to mint test tokens.

use std::time::{SystemTime, UNIX_EPOCH};

use meshguard_jwt::{Algorithm, SigningKey, sign};
use serde_json::{Map, Value};

/// The walkthrough's issuer, also the default `iss` and `sub` of minted tokens.
pub const DEMO_ISSUER: &str = "testing@secure.istio.io";
/// The `kid` of the demo key in [`DEMO_JWKS`].
pub const DEMO_KID: &str = "DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ";
/// The demo JWKS (one RSA key), as a RequestAuthentication's `jwks` would carry it.
pub const DEMO_JWKS: &str = include_str!("../../../testdata/istio-demo/jwks.json");
/// The walkthrough's token (`demo.jwt`): `iss` and `sub` `testing@secure.istio.io`, no expiry.
pub const DEMO_TOKEN: &str = include_str!("../../../testdata/istio-demo/demo.jwt");
/// The walkthrough's second token (`groups-scope.jwt`): adds `groups` and `scope`.
pub const GROUPS_TOKEN: &str = include_str!("../../../testdata/istio-demo/groups-scope.jwt");
const DEMO_KEY_PEM: &str = include_str!("../../../testdata/istio-demo/key.pem");

/// The walkthrough's token, trimmed.
pub fn demo() -> &'static str {
    DEMO_TOKEN.trim()
}

/// The walkthrough's groups-and-scope token, trimmed.
pub fn groups() -> &'static str {
    GROUPS_TOKEN.trim()
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A token signed with the demo key (RS256, `kid` [`DEMO_KID`]). Claims start as `iss` and
/// `sub` [`DEMO_ISSUER`], `iat` now, `exp` in an hour; each entry of `claims` replaces one
/// (`null` removes it). Each entry of `header` does the same to the JOSE header.
pub fn mint(claims: &Map<String, Value>, header: &Map<String, Value>) -> String {
    mint_with(Algorithm::RS256, claims, header)
}

/// [`mint`] with another algorithm of the same RSA key (`RS384`, `PS256`, ...).
pub fn mint_with(
    alg: Algorithm,
    claims: &Map<String, Value>,
    header: &Map<String, Value>,
) -> String {
    let key = SigningKey::from_pem(DEMO_KEY_PEM).expect("the demo key parses");
    let t = now();
    let mut all = Map::new();
    all.insert("iss".into(), DEMO_ISSUER.into());
    all.insert("sub".into(), DEMO_ISSUER.into());
    all.insert("iat".into(), t.into());
    all.insert("exp".into(), (t + 3600).into());
    merge(&mut all, claims);
    let mut jose = Map::new();
    jose.insert("kid".into(), DEMO_KID.into());
    merge(&mut jose, header);
    sign(alg, &key, &jose, &all).expect("the demo key signs")
}

/// A token from `claims` only (JSON object text), for the common case.
pub fn mint_json(claims: Value) -> String {
    match claims {
        Value::Object(m) => mint(&m, &Map::new()),
        other => panic!("mint_json wants an object, got {other}"),
    }
}

fn merge(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        if v.is_null() {
            into.remove(k);
        } else {
            into.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    #[test]
    fn minted_claims_replace_and_remove() {
        let t = mint_json(serde_json::json!({"sub": "alice", "exp": null}));
        let payload = t.split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"sub\":\"alice\""), "{text}");
        assert!(!text.contains("\"exp\""), "{text}");
        assert!(text.contains(DEMO_ISSUER), "{text}");
    }
}
