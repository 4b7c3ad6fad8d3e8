//! Verification outcomes, named and worded exactly like Envoy's jwt_verify_lib `Status`.
//!
//! Owns: the [`Status`] enum, its response-body strings, HTTP codes and
//! `response_code_details` text. Does not own: deciding which status a request gets
//! (that is the verification code and, above it, the policy engine).

use std::fmt;

/// Envoy jwt_verify_lib statuses that meshguard can produce.
///
/// The two last variants are meshguard-only: they exist because meshguard is stricter
/// than Envoy (docs/decisions.md, decision 2) and Envoy has no string for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// No token was found (never produced by this crate; for the policy layer).
    JwtMissed,
    /// `now + skew < nbf`.
    JwtNotYetValid,
    /// `exp != 0 && now > exp + skew`.
    JwtExpired,
    /// Not three non-empty dot-separated sections.
    JwtBadFormat,
    /// Header section is not strict base64url.
    JwtHeaderParseErrorBadBase64,
    /// Header is not a JSON object (or has duplicate members, or is too deep).
    JwtHeaderParseErrorBadJson,
    /// Header `alg` missing or not a string.
    JwtHeaderBadAlg,
    /// Header `alg` is not one of the supported algorithms (this includes `none`).
    JwtHeaderNotImplementedAlg,
    /// Header `kid` present but not a string.
    JwtHeaderBadKid,
    /// Payload section is not strict base64url.
    JwtPayloadParseErrorBadBase64,
    /// Payload is not a JSON object (or has duplicate members, or is too deep).
    JwtPayloadParseErrorBadJson,
    /// `iss` is not a string.
    JwtPayloadParseErrorIssNotString,
    /// `sub` is not a string.
    JwtPayloadParseErrorSubNotString,
    /// `iat` is not a JSON number.
    JwtPayloadParseErrorIatNotInteger,
    /// `iat` is negative or does not fit in 64 bits.
    JwtPayloadParseErrorIatOutOfRange,
    /// `nbf` is not a JSON number.
    JwtPayloadParseErrorNbfNotInteger,
    /// `nbf` is negative or does not fit in 64 bits.
    JwtPayloadParseErrorNbfOutOfRange,
    /// `exp` is not a JSON number.
    JwtPayloadParseErrorExpNotInteger,
    /// `exp` is negative or does not fit in 64 bits.
    JwtPayloadParseErrorExpOutOfRange,
    /// `jti` is not a string.
    JwtPayloadParseErrorJtiNotString,
    /// `aud` is neither a string nor a list of strings.
    JwtPayloadParseErrorAudNotString,
    /// Signature section is not strict base64url.
    JwtSignatureParseErrorBadBase64,
    /// An Ed25519 key was tried and the signature is not 64 bytes.
    JwtEd25519SignatureWrongLength,
    /// Token `iss` is not the configured issuer.
    JwtUnknownIssuer,
    /// No token audience is allowed (HTTP 403).
    JwtAudienceNotAllowed,
    /// Some key matched kid/alg but none verified the signature.
    JwtVerificationFail,
    /// The JWKS holds no usable key.
    JwksNoValidKeys,
    /// No key matched the token's kid and alg.
    JwksKidAlgMismatch,
    /// The JWKS could not be fetched (never produced by this crate).
    JwksFetchFail,
    /// The JWKS text is not a JSON object.
    JwksParseError,
    /// The JWKS object has no `keys` member.
    JwksNoKeys,
    /// The JWKS `keys` member is not an array.
    JwksBadKeys,
    /// meshguard-only: header has `crit`; no extension is understood, so it is rejected
    /// (RFC 7515 §4.1.11). Envoy ignores `crit`.
    JwtHeaderUnsupportedCrit,
    /// meshguard-only: the token is longer than `Limits::max_token_bytes`.
    JwtTooLarge,
    /// A token location appears more than once (two `Authorization` headers). Envoy's
    /// jwt_verify_lib has this status (`JwtMultipleTokens`); meshguard uses it for every
    /// repeated location instead of picking one (docs/decisions.md, decision 2).
    JwtMultipleTokens,
}

impl Status {
    /// Every status, in declaration order (for metrics registration and exhaustive tests).
    pub const ALL: [Status; 35] = [
        Status::JwtMissed,
        Status::JwtNotYetValid,
        Status::JwtExpired,
        Status::JwtBadFormat,
        Status::JwtHeaderParseErrorBadBase64,
        Status::JwtHeaderParseErrorBadJson,
        Status::JwtHeaderBadAlg,
        Status::JwtHeaderNotImplementedAlg,
        Status::JwtHeaderBadKid,
        Status::JwtPayloadParseErrorBadBase64,
        Status::JwtPayloadParseErrorBadJson,
        Status::JwtPayloadParseErrorIssNotString,
        Status::JwtPayloadParseErrorSubNotString,
        Status::JwtPayloadParseErrorIatNotInteger,
        Status::JwtPayloadParseErrorIatOutOfRange,
        Status::JwtPayloadParseErrorNbfNotInteger,
        Status::JwtPayloadParseErrorNbfOutOfRange,
        Status::JwtPayloadParseErrorExpNotInteger,
        Status::JwtPayloadParseErrorExpOutOfRange,
        Status::JwtPayloadParseErrorJtiNotString,
        Status::JwtPayloadParseErrorAudNotString,
        Status::JwtSignatureParseErrorBadBase64,
        Status::JwtEd25519SignatureWrongLength,
        Status::JwtUnknownIssuer,
        Status::JwtAudienceNotAllowed,
        Status::JwtVerificationFail,
        Status::JwksNoValidKeys,
        Status::JwksKidAlgMismatch,
        Status::JwksFetchFail,
        Status::JwksParseError,
        Status::JwksNoKeys,
        Status::JwksBadKeys,
        Status::JwtHeaderUnsupportedCrit,
        Status::JwtTooLarge,
        Status::JwtMultipleTokens,
    ];

    /// The response body text: Envoy's `getStatusString` verbatim for Envoy statuses.
    pub fn message(self) -> &'static str {
        match self {
            Status::JwtMissed => "Jwt is missing",
            Status::JwtNotYetValid => "Jwt not yet valid",
            Status::JwtExpired => "Jwt is expired",
            Status::JwtBadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            Status::JwtHeaderParseErrorBadBase64 => "Jwt header is an invalid Base64url encoded",
            Status::JwtHeaderParseErrorBadJson => "Jwt header is an invalid JSON",
            Status::JwtHeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            Status::JwtHeaderNotImplementedAlg => "Jwt header [alg] is not supported",
            Status::JwtHeaderBadKid => "Jwt header [kid] field is not a string",
            Status::JwtPayloadParseErrorBadBase64 => "Jwt payload is an invalid Base64url encoded",
            Status::JwtPayloadParseErrorBadJson => "Jwt payload is an invalid JSON",
            Status::JwtPayloadParseErrorIssNotString => "Jwt payload [iss] field is not a string",
            Status::JwtPayloadParseErrorSubNotString => "Jwt payload [sub] field is not a string",
            Status::JwtPayloadParseErrorIatNotInteger => {
                "Jwt payload [iat] field is not an integer"
            }
            Status::JwtPayloadParseErrorIatOutOfRange => {
                "Jwt payload [iat] field is not a positive 64 bit integer"
            }
            Status::JwtPayloadParseErrorNbfNotInteger => {
                "Jwt payload [nbf] field is not an integer"
            }
            Status::JwtPayloadParseErrorNbfOutOfRange => {
                "Jwt payload [nbf] field is not a positive 64 bit integer"
            }
            Status::JwtPayloadParseErrorExpNotInteger => {
                "Jwt payload [exp] field is not an integer"
            }
            Status::JwtPayloadParseErrorExpOutOfRange => {
                "Jwt payload [exp] field is not a positive 64 bit integer"
            }
            Status::JwtPayloadParseErrorJtiNotString => "Jwt payload [jti] field is not a string",
            Status::JwtPayloadParseErrorAudNotString => {
                "Jwt payload [aud] field is not a string or string list"
            }
            Status::JwtSignatureParseErrorBadBase64 => {
                "Jwt signature is an invalid Base64url encoded"
            }
            Status::JwtEd25519SignatureWrongLength => "Jwt ED25519 signature is wrong length",
            Status::JwtUnknownIssuer => "Jwt issuer is not configured",
            Status::JwtAudienceNotAllowed => "Audiences in Jwt are not allowed",
            Status::JwtVerificationFail => "Jwt verification fails",
            Status::JwksNoValidKeys => "Jwks doesn't have any valid public key",
            Status::JwksKidAlgMismatch => "Jwks doesn't have key to match kid or alg from Jwt",
            Status::JwksFetchFail => "Jwks remote fetch is failed",
            Status::JwksParseError => "Jwks is an invalid JSON",
            Status::JwksNoKeys => "Jwks does not have [keys] field",
            Status::JwksBadKeys => "[keys] in Jwks is not an array",
            Status::JwtHeaderUnsupportedCrit => {
                "Jwt header [crit] lists an extension that is not supported"
            }
            Status::JwtTooLarge => "Jwt is too large",
            Status::JwtMultipleTokens => "Found multiple Jwt tokens",
        }
    }

    /// HTTP status of the local reply: 403 for a disallowed audience, 401 otherwise
    /// (Envoy `filter.cc` `onComplete`).
    pub fn http_status(self) -> u16 {
        match self {
            Status::JwtAudienceNotAllowed => 403,
            _ => 401,
        }
    }

    /// Envoy's `response_code_details`: `jwt_authn_access_denied{<message, spaces as _>}`.
    pub fn details(self) -> String {
        format!(
            "jwt_authn_access_denied{{{}}}",
            self.message().replace(' ', "_")
        )
    }

    /// The variant name, e.g. `"JwtExpired"`; stable, for JSON output and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Status::JwtMissed => "JwtMissed",
            Status::JwtNotYetValid => "JwtNotYetValid",
            Status::JwtExpired => "JwtExpired",
            Status::JwtBadFormat => "JwtBadFormat",
            Status::JwtHeaderParseErrorBadBase64 => "JwtHeaderParseErrorBadBase64",
            Status::JwtHeaderParseErrorBadJson => "JwtHeaderParseErrorBadJson",
            Status::JwtHeaderBadAlg => "JwtHeaderBadAlg",
            Status::JwtHeaderNotImplementedAlg => "JwtHeaderNotImplementedAlg",
            Status::JwtHeaderBadKid => "JwtHeaderBadKid",
            Status::JwtPayloadParseErrorBadBase64 => "JwtPayloadParseErrorBadBase64",
            Status::JwtPayloadParseErrorBadJson => "JwtPayloadParseErrorBadJson",
            Status::JwtPayloadParseErrorIssNotString => "JwtPayloadParseErrorIssNotString",
            Status::JwtPayloadParseErrorSubNotString => "JwtPayloadParseErrorSubNotString",
            Status::JwtPayloadParseErrorIatNotInteger => "JwtPayloadParseErrorIatNotInteger",
            Status::JwtPayloadParseErrorIatOutOfRange => "JwtPayloadParseErrorIatOutOfRange",
            Status::JwtPayloadParseErrorNbfNotInteger => "JwtPayloadParseErrorNbfNotInteger",
            Status::JwtPayloadParseErrorNbfOutOfRange => "JwtPayloadParseErrorNbfOutOfRange",
            Status::JwtPayloadParseErrorExpNotInteger => "JwtPayloadParseErrorExpNotInteger",
            Status::JwtPayloadParseErrorExpOutOfRange => "JwtPayloadParseErrorExpOutOfRange",
            Status::JwtPayloadParseErrorJtiNotString => "JwtPayloadParseErrorJtiNotString",
            Status::JwtPayloadParseErrorAudNotString => "JwtPayloadParseErrorAudNotString",
            Status::JwtSignatureParseErrorBadBase64 => "JwtSignatureParseErrorBadBase64",
            Status::JwtEd25519SignatureWrongLength => "JwtEd25519SignatureWrongLength",
            Status::JwtUnknownIssuer => "JwtUnknownIssuer",
            Status::JwtAudienceNotAllowed => "JwtAudienceNotAllowed",
            Status::JwtVerificationFail => "JwtVerificationFail",
            Status::JwksNoValidKeys => "JwksNoValidKeys",
            Status::JwksKidAlgMismatch => "JwksKidAlgMismatch",
            Status::JwksFetchFail => "JwksFetchFail",
            Status::JwksParseError => "JwksParseError",
            Status::JwksNoKeys => "JwksNoKeys",
            Status::JwksBadKeys => "JwksBadKeys",
            Status::JwtHeaderUnsupportedCrit => "JwtHeaderUnsupportedCrit",
            Status::JwtTooLarge => "JwtTooLarge",
            Status::JwtMultipleTokens => "JwtMultipleTokens",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Status {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_match_debug_and_are_unique() {
        let mut seen = HashSet::new();
        for s in Status::ALL {
            assert_eq!(s.name(), format!("{s:?}"));
            assert!(seen.insert(s.name()));
            assert!(!s.message().is_empty());
            assert_eq!(s.to_string(), s.message());
        }
    }

    #[test]
    fn http_status_is_403_only_for_audience() {
        for s in Status::ALL {
            let want = if s == Status::JwtAudienceNotAllowed {
                403
            } else {
                401
            };
            assert_eq!(s.http_status(), want, "{s:?}");
        }
    }

    #[test]
    fn details_replace_spaces() {
        assert_eq!(
            Status::JwtExpired.details(),
            "jwt_authn_access_denied{Jwt_is_expired}"
        );
        assert_eq!(
            Status::JwksKidAlgMismatch.details(),
            "jwt_authn_access_denied{Jwks_doesn't_have_key_to_match_kid_or_alg_from_Jwt}"
        );
    }

    #[test]
    fn never_produced_statuses_have_envoy_text() {
        assert_eq!(Status::JwtMissed.message(), "Jwt is missing");
        assert_eq!(
            Status::JwksFetchFail.message(),
            "Jwks remote fetch is failed"
        );
    }
}
