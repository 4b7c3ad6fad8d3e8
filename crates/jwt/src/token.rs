//! Decoding a compact JWS into a [`Token`], and the claim checks that need no key.
//!
//! Owns: step 1 of Envoy's verification (`Jwt::parseFromString`, same checks in the
//! same order, plus meshguard's strictness), the time check (`verifyTimeConstraint`) and
//! the audience check (`CheckAudience`). Does not own: issuer configuration, token
//! extraction from requests, or signatures (see `verify`).
//!
//! Order of checks, each returning the first failure:
//! 1. length > `max_token_bytes` → `JwtTooLarge` (meshguard-only, before any work);
//! 2. exactly three `.`-separated sections, none empty → else `JwtBadFormat` (Envoy skips
//!    empty sections, so it accepts `h.p.s.` and `.h.p.s`; meshguard does not);
//! 3. header: base64url, JSON object, `alg`, `kid`, then `crit` (meshguard-only);
//! 4. payload: base64url, JSON object, then `iss`, `sub`, `iat`, `nbf`, `exp`, `jti`,
//!    `aud` (jwt_verify_lib `jwt.cc` order);
//! 5. signature base64url.
//!
//! Header members `jwk`, `jku`, `x5u`, `x5c` are kept in [`Header::raw`] but never used.

use crate::alg::Algorithm;
use crate::b64;
use crate::json::{self, JsonError};
use crate::status::Status;
use serde_json::{Map, Value};
use std::fmt;

/// Resource bounds applied while decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted token text, in bytes. Default 16 KiB.
    pub max_token_bytes: usize,
    /// Deepest accepted JSON nesting in header and payload (the object itself is 1).
    /// Default 32.
    pub max_json_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_token_bytes: 16 * 1024,
            max_json_depth: 32,
        }
    }
}

/// The decoded JOSE header.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    /// `alg`, already mapped to a supported algorithm.
    pub alg: Algorithm,
    /// `kid` if present (it must be a string). An empty `kid` selects like no `kid`.
    pub kid: Option<String>,
    /// `typ` if present and a string; not checked (Envoy ignores it too).
    pub typ: Option<String>,
    /// The whole header object.
    pub raw: Map<String, Value>,
}

/// The registered claims, type-checked, plus the whole payload.
#[derive(Clone, Debug, PartialEq)]
pub struct Claims {
    /// `iss`.
    pub iss: Option<String>,
    /// `sub`.
    pub sub: Option<String>,
    /// `aud`, a single string becomes a one-element list; absent is empty.
    pub aud: Vec<String>,
    /// `exp`, truncated toward zero. `Some(0)` means "never expires", as in Envoy.
    pub exp: Option<u64>,
    /// `nbf`, truncated toward zero.
    pub nbf: Option<u64>,
    /// `iat`, truncated toward zero; never checked.
    pub iat: Option<u64>,
    /// `jti`.
    pub jti: Option<String>,
    /// The whole payload object.
    pub payload: Map<String, Value>,
}

/// A decoded, NOT yet verified, token. Owns its data.
///
/// `Debug` shows the header and claims but never the token text or signature.
#[derive(Clone)]
pub struct Token {
    raw: String,
    /// Byte index of the first and second `.` in `raw`.
    dot1: usize,
    dot2: usize,
    header: Header,
    claims: Claims,
    signature: Vec<u8>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("header", &self.header)
            .field("claims", &self.claims)
            .field("signature_len", &self.signature.len())
            .finish_non_exhaustive()
    }
}

/// When a token may be used: `nbf` and `exp` (`Some(0)`: never expires, as in Envoy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub nbf: Option<u64>,
    pub exp: Option<u64>,
}

impl Validity {
    /// Envoy's time checks with `skew_secs` of clock skew either way.
    pub fn check(&self, now_unix: u64, skew_secs: u64) -> Result<(), Status> {
        if let Some(nbf) = self.nbf
            && now_unix.saturating_add(skew_secs) < nbf
        {
            return Err(Status::JwtNotYetValid);
        }
        if let Some(exp) = self.exp
            && exp != 0
            && now_unix > exp.saturating_add(skew_secs)
        {
            return Err(Status::JwtExpired);
        }
        Ok(())
    }
}

/// The three sections of a compact token, as sent.
#[derive(Clone, Copy)]
pub(crate) struct Sections<'a> {
    pub header: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
    pub dot1: usize,
    pub dot2: usize,
}

/// Size and shape checks (steps 1 and 2).
pub(crate) fn split<'a>(raw: &'a str, limits: &Limits) -> Result<Sections<'a>, Status> {
    if raw.len() > limits.max_token_bytes {
        return Err(Status::JwtTooLarge);
    }
    let mut parts = raw.splitn(4, '.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Status::JwtBadFormat);
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(Status::JwtBadFormat);
    }
    Ok(Sections {
        header: h,
        payload: p,
        signature: s,
        dot1: h.len(),
        dot2: h.len() + 1 + p.len(),
    })
}

/// Header checks (step 3).
pub(crate) fn parse_header(section: &str, limits: &Limits) -> Result<Header, Status> {
    let bytes = b64::decode_strict(section).ok_or(Status::JwtHeaderParseErrorBadBase64)?;
    let raw = json::parse_object(&bytes, limits.max_json_depth)
        .map_err(|_| Status::JwtHeaderParseErrorBadJson)?;
    let alg = match raw.get("alg") {
        Some(Value::String(s)) => {
            Algorithm::from_name(s).ok_or(Status::JwtHeaderNotImplementedAlg)?
        }
        _ => return Err(Status::JwtHeaderBadAlg),
    };
    let kid = match raw.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(Status::JwtHeaderBadKid),
    };
    // We implement no JWS extension, so any `crit` (even `[]`, which RFC 7515 forbids)
    // names something we do not understand.
    if raw.contains_key("crit") {
        return Err(Status::JwtHeaderUnsupportedCrit);
    }
    let typ = raw.get("typ").and_then(Value::as_str).map(str::to_owned);
    Ok(Header { alg, kid, typ, raw })
}

/// Payload base64 check alone (used where the payload need not be JSON).
pub(crate) fn decode_payload_bytes(section: &str) -> Result<Vec<u8>, Status> {
    b64::decode_strict(section).ok_or(Status::JwtPayloadParseErrorBadBase64)
}

/// Signature base64 check (step 5).
pub(crate) fn decode_signature(section: &str) -> Result<Vec<u8>, Status> {
    b64::decode_strict(section).ok_or(Status::JwtSignatureParseErrorBadBase64)
}

fn string_claim(
    payload: &Map<String, Value>,
    name: &str,
    err: Status,
) -> Result<Option<String>, Status> {
    match payload.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(err),
    }
}

/// jwt_verify_lib `GetUInt64`: must be a JSON number; negative or >= 2^64 is out of
/// range; fractions are dropped. Envoy holds every JSON number as a double, so an integer
/// that rounds to 2^64 as a double (2^64 - 1024 and above) is out of range too.
fn time_claim(
    payload: &Map<String, Value>,
    name: &str,
    not_integer: Status,
    out_of_range: Status,
) -> Result<Option<u64>, Status> {
    // 2^64 is exactly representable; anything at or above it does not fit.
    const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
    let n = match payload.get(name) {
        None => return Ok(None),
        Some(Value::Number(n)) => n,
        Some(_) => return Err(not_integer),
    };
    if let Some(u) = n.as_u64() {
        if u as f64 >= TWO_POW_64 {
            return Err(out_of_range);
        }
        return Ok(Some(u));
    }
    if n.is_i64() {
        return Err(out_of_range); // a negative integer
    }
    let f = n.as_f64().ok_or(out_of_range)?;
    if !(0.0..TWO_POW_64).contains(&f) {
        return Err(out_of_range);
    }
    // In range and finite, so the cast only truncates the fraction.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(Some(f as u64))
}

fn audiences(payload: &Map<String, Value>) -> Result<Vec<String>, Status> {
    match payload.get("aud") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or(Status::JwtPayloadParseErrorAudNotString)
            })
            .collect(),
        Some(_) => Err(Status::JwtPayloadParseErrorAudNotString),
    }
}

/// Payload checks (step 4).
fn parse_claims(section: &str, limits: &Limits) -> Result<Claims, Status> {
    let bytes = decode_payload_bytes(section)?;
    let payload = json::parse_object(&bytes, limits.max_json_depth).map_err(|e| match e {
        JsonError::NumberOutOfRange("iat") => Status::JwtPayloadParseErrorIatOutOfRange,
        JsonError::NumberOutOfRange("nbf") => Status::JwtPayloadParseErrorNbfOutOfRange,
        JsonError::NumberOutOfRange("exp") => Status::JwtPayloadParseErrorExpOutOfRange,
        _ => Status::JwtPayloadParseErrorBadJson,
    })?;
    let iss = string_claim(&payload, "iss", Status::JwtPayloadParseErrorIssNotString)?;
    let sub = string_claim(&payload, "sub", Status::JwtPayloadParseErrorSubNotString)?;
    let iat = time_claim(
        &payload,
        "iat",
        Status::JwtPayloadParseErrorIatNotInteger,
        Status::JwtPayloadParseErrorIatOutOfRange,
    )?;
    let nbf = time_claim(
        &payload,
        "nbf",
        Status::JwtPayloadParseErrorNbfNotInteger,
        Status::JwtPayloadParseErrorNbfOutOfRange,
    )?;
    let exp = time_claim(
        &payload,
        "exp",
        Status::JwtPayloadParseErrorExpNotInteger,
        Status::JwtPayloadParseErrorExpOutOfRange,
    )?;
    let jti = string_claim(&payload, "jti", Status::JwtPayloadParseErrorJtiNotString)?;
    let aud = audiences(&payload)?;
    Ok(Claims {
        iss,
        sub,
        aud,
        exp,
        nbf,
        iat,
        jti,
        payload,
    })
}

/// Envoy `sanitizeAudience`: drop one leading `http://` or `https://` and one trailing `/`.
fn sanitize_audience(aud: &str) -> &str {
    let rest = aud
        .strip_prefix("http://")
        .or_else(|| aud.strip_prefix("https://"))
        .unwrap_or(aud);
    rest.strip_suffix('/').unwrap_or(rest)
}

impl Token {
    /// Decodes `raw` with every check of Envoy's `Jwt::parseFromString`, in its order,
    /// plus meshguard's stricter ones (see the module doc). Verifies nothing.
    pub fn decode(raw: &str, limits: &Limits) -> Result<Token, Status> {
        let sections = split(raw, limits)?;
        let header = parse_header(sections.header, limits)?;
        let claims = parse_claims(sections.payload, limits)?;
        let signature = decode_signature(sections.signature)?;
        Ok(Token {
            raw: raw.to_owned(),
            dot1: sections.dot1,
            dot2: sections.dot2,
            header,
            claims,
            signature,
        })
    }

    /// The JOSE header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// The claims, taken out of a token that is no longer needed (no copy of the payload).
    pub fn into_claims(self) -> Claims {
        self.claims
    }

    /// The second section exactly as sent (for `outputPayloadToHeader`).
    pub fn payload_b64(&self) -> &str {
        // `split` set both dots inside `raw`, on ASCII bytes: `get` never misses.
        self.raw.get(self.dot1 + 1..self.dot2).unwrap_or_default()
    }

    /// `header.payload` exactly as sent: the bytes the signature covers.
    pub(crate) fn signing_input(&self) -> &str {
        // As above; an empty input could only fail verification.
        self.raw.get(..self.dot2).unwrap_or_default()
    }

    /// jwt_verify_lib `verifyTimeConstraint`: `now + skew < nbf` → `JwtNotYetValid`
    /// (checked first), then `exp != 0 && now > exp + skew` → `JwtExpired`. Missing `exp`
    /// never expires. Sums saturate instead of wrapping.
    pub fn check_time(&self, now_unix: u64, skew_secs: u64) -> Result<(), Status> {
        self.validity().check(now_unix, skew_secs)
    }

    /// The token's time window, for callers that keep it without the token.
    pub fn validity(&self) -> Validity {
        Validity {
            nbf: self.claims.nbf,
            exp: self.claims.exp,
        }
    }

    /// Envoy `CheckAudience`: an empty `allowed` list accepts everything; otherwise one of
    /// the token's audiences must equal one allowed audience after both are sanitized
    /// (one leading `http://`/`https://` and one trailing `/` removed). A token without
    /// `aud` fails a non-empty list.
    pub fn check_audiences(&self, allowed: &[String]) -> Result<(), Status> {
        if allowed.is_empty() {
            return Ok(());
        }
        let hit = self.claims.aud.iter().any(|a| {
            let a = sanitize_audience(a);
            allowed.iter().any(|b| sanitize_audience(b) == a)
        });
        if hit {
            Ok(())
        } else {
            Err(Status::JwtAudienceNotAllowed)
        }
    }

    /// Verifies the signature with Envoy's key selection; see [`crate::Jwks`] and the
    /// `verify` module.
    pub fn verify_signature(&self, jwks: &crate::Jwks) -> Result<(), Status> {
        crate::verify::select_and_verify(
            self.header.alg,
            self.header.kid.as_deref(),
            self.signing_input().as_bytes(),
            &self.signature,
            jwks,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_audience_like_envoy() {
        for (input, want) in [
            ("http://a.com/", "a.com"),
            ("https://a.com", "a.com"),
            ("a.com/", "a.com"),
            ("a.com//", "a.com/"),
            ("https://https://a.com", "https://a.com"),
            ("http://", ""),
            ("/", ""),
            ("", ""),
            ("HTTP://a.com", "HTTP://a.com"),
            ("ftp://a.com/", "ftp://a.com"),
        ] {
            assert_eq!(sanitize_audience(input), want, "{input:?}");
        }
    }

    #[test]
    fn split_rejects_empty_and_extra_sections() {
        let l = Limits::default();
        for t in [
            "a.b.c.", ".a.b.c", "a..b.c", "a.b.", "a.b", "a", "", "..", "a.b.c.d", "a.b..", ".b.c",
        ] {
            assert_eq!(split(t, &l).err(), Some(Status::JwtBadFormat), "{t:?}");
        }
        let s = split("aa.bbb.c", &l).unwrap();
        assert_eq!((s.header, s.payload, s.signature), ("aa", "bbb", "c"));
        assert_eq!((s.dot1, s.dot2), (2, 6));
    }

    #[test]
    fn size_limit_checked_first() {
        let l = Limits {
            max_token_bytes: 5,
            max_json_depth: 32,
        };
        assert_eq!(split("a.b.c", &l).err(), None);
        assert_eq!(split("......", &l).err(), Some(Status::JwtTooLarge));
    }
}
