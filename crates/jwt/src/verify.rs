//! Key selection, signature verification and the full verification sequence.
//!
//! Owns: jwt_verify_lib `verifyJwtWithoutTimeChecking` (which key is tried, which status
//! a failure gets) and Envoy's order of checks for one token against one provider's
//! settings (`authenticator.cc`): decode, issuer, time, audiences, signature.
//! Does not own: finding tokens in requests, choosing providers, fetching JWKS.
//!
//! Key selection, for each usable key in JWKS order:
//! 1. skip it if the token's `kid` and the key's `kid` are both non-empty and differ;
//! 2. skip it if the key has an `alg` different from the token's;
//! 3. the key now counts as "matched" (Envoy sets `kid_alg_matched` here, before looking
//!    at the key type);
//! 4. if the key can verify the token's algorithm (RSA for RS*/PS*, EC of the matching
//!    curve for ES*, oct for HS*, OKP Ed25519 for EdDSA) it is tried; success ends the
//!    search. For an Ed25519 key a signature that is not 64 bytes ends the search with
//!    `JwtEd25519SignatureWrongLength`, as in Envoy.
//!
//! When nothing verified: `JwksKidAlgMismatch` if no key passed steps 1-2, else
//! `JwtVerificationFail`. So an HS256 token against a JWKS of one RSA key without `alg`
//! is `JwtVerificationFail`, exactly what Envoy answers. Envoy would also try an EC key
//! against an RS256 token or an OKP key against any token; meshguard never uses a key
//! with an algorithm outside its family (stricter, same statuses).
//!
//! ES* signatures must be exactly the raw `r || s` of the curve (64, 96 or 132 bytes);
//! DER or other lengths fail. HMAC tags are compared in constant time by aws-lc-rs.

use crate::alg::Algorithm;
use crate::jwks::Jwks;
use crate::status::Status;
use crate::token::{self, Limits, Token};

/// What one provider accepts. Checked by [`verify`] in Envoy's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    /// Required `iss`; `None` or `""` accepts any (a missing `iss` counts as `""`).
    pub issuer: Option<String>,
    /// Allowed audiences; empty accepts any (see [`Token::check_audiences`]).
    pub audiences: Vec<String>,
    /// Clock skew in seconds; Istio always uses 60.
    pub skew_secs: u64,
    /// Decoding bounds.
    pub limits: Limits,
}

impl Default for Validation {
    fn default() -> Self {
        Validation {
            issuer: None,
            audiences: Vec::new(),
            skew_secs: 60,
            limits: Limits::default(),
        }
    }
}

/// Verifies `raw` in Envoy's order: decode, issuer, time, audiences, signature. Returns
/// the decoded token on success.
pub fn verify(
    raw: &str,
    validation: &Validation,
    jwks: &Jwks,
    now_unix: u64,
) -> Result<Token, Status> {
    let token = Token::decode(raw, &validation.limits)?;
    if let Some(issuer) = validation.issuer.as_deref().filter(|i| !i.is_empty())
        && token.claims().iss.as_deref().unwrap_or("") != issuer
    {
        return Err(Status::JwtUnknownIssuer);
    }
    token.check_time(now_unix, validation.skew_secs)?;
    token.check_audiences(&validation.audiences)?;
    token.verify_signature(jwks)?;
    Ok(token)
}

/// Checks only the JWS layer of a compact token: sections, header (all header checks),
/// payload and signature base64url, then key selection and the signature itself. The
/// payload is NOT required to be JSON.
///
/// It exists for signature-level test vectors whose payload is not a JWT claims set
/// (RFC 8037 A.4, RFC 7520 §4) and for diagnostics ("is the signature right, whatever the
/// claims say?"). Never use it to accept a request: use [`verify`].
pub fn verify_compact_signature(raw: &str, jwks: &Jwks) -> Result<(), Status> {
    let limits = Limits::default();
    let sections = token::split(raw, &limits)?;
    let header = token::parse_header(sections.header, &limits)?;
    token::decode_payload_bytes(sections.payload)?;
    let signature = token::decode_signature(sections.signature)?;
    // `split` put `dot2` inside `raw`; `get` only keeps this path free of panics.
    let signing_input = raw
        .as_bytes()
        .get(..sections.dot2)
        .ok_or(Status::JwtBadFormat)?;
    select_and_verify(
        header.alg,
        header.kid.as_deref(),
        signing_input,
        &signature,
        jwks,
    )
}

/// jwt_verify_lib `verifyJwtWithoutTimeChecking`; see the module doc.
pub(crate) fn select_and_verify(
    alg: Algorithm,
    kid: Option<&str>,
    signing_input: &[u8],
    signature: &[u8],
    jwks: &Jwks,
) -> Result<(), Status> {
    if jwks.is_empty() {
        return Err(Status::JwksNoValidKeys);
    }
    let token_kid = kid.filter(|k| !k.is_empty());
    let mut kid_alg_matched = false;
    for key in jwks.keys() {
        if let (Some(t), Some(k)) = (token_kid, key.kid().filter(|k| !k.is_empty()))
            && t != k
        {
            continue;
        }
        if key.alg().is_some_and(|a| a != alg) {
            continue;
        }
        kid_alg_matched = true;
        if alg == Algorithm::EdDSA
            && key.algorithms().contains(&Algorithm::EdDSA)
            && signature.len() != 64
        {
            return Err(Status::JwtEd25519SignatureWrongLength);
        }
        if let Some(len) = ecdsa_signature_len(alg)
            && signature.len() != len
        {
            // Wrong-length r||s cannot verify with any key; keep looking like Envoy
            // would, which ends in the same status.
            continue;
        }
        if key.verify(alg, signing_input, signature) == Some(true) {
            return Ok(());
        }
    }
    Err(if kid_alg_matched {
        Status::JwtVerificationFail
    } else {
        Status::JwksKidAlgMismatch
    })
}

fn ecdsa_signature_len(alg: Algorithm) -> Option<usize> {
    match alg {
        Algorithm::ES256 => Some(64),
        Algorithm::ES384 => Some(96),
        Algorithm::ES512 => Some(132),
        _ => None,
    }
}
