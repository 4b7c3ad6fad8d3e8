//! JWS algorithm names.
//!
//! Owns: the set of `alg` values meshguard accepts (Envoy's thirteen, plus the RFC 9864
//! name `Ed25519` as an alias of `EdDSA`). Does not own: any crypto.

use std::fmt;

/// A JWS signature algorithm that meshguard can verify and sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// HMAC SHA-256.
    HS256,
    /// HMAC SHA-384.
    HS384,
    /// HMAC SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    RS512,
    /// RSASSA-PSS SHA-256, MGF1 SHA-256, salt 32.
    PS256,
    /// RSASSA-PSS SHA-384, MGF1 SHA-384, salt 48.
    PS384,
    /// RSASSA-PSS SHA-512, MGF1 SHA-512, salt 64.
    PS512,
    /// ECDSA P-256 SHA-256, raw r||s.
    ES256,
    /// ECDSA P-384 SHA-384, raw r||s.
    ES384,
    /// ECDSA P-521 SHA-512, raw r||s.
    ES512,
    /// Ed25519 (the only EdDSA curve supported, as in Envoy).
    EdDSA,
}

/// Which key type an algorithm needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed25519,
}

impl Algorithm {
    /// The algorithms an RSA key can verify (PKCS#1 v1.5 and PSS).
    pub const RSA: [Algorithm; 6] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ];

    /// All algorithms, in declaration order.
    pub const ALL: [Algorithm; 13] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::ES512,
        Algorithm::EdDSA,
    ];

    /// The registered JWS name (`EdDSA` for Ed25519).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::ES512 => "ES512",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// Parses an `alg` value, case-sensitively. `Ed25519` (RFC 9864) is accepted as an
    /// alias of `EdDSA` (docs/decisions.md, decision 2). `none`, in any spelling, is not an algorithm.
    pub fn from_name(s: &str) -> Option<Self> {
        if s == "Ed25519" {
            return Some(Algorithm::EdDSA);
        }
        Algorithm::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub(crate) fn family(self) -> Family {
        match self {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => Family::Rsa,
            Algorithm::ES256 | Algorithm::ES384 | Algorithm::ES512 => Family::Ec,
            Algorithm::EdDSA => Family::Ed25519,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.as_str()), Some(a));
            assert_eq!(a.to_string(), a.as_str());
        }
    }

    #[test]
    fn ed25519_is_an_alias() {
        assert_eq!(Algorithm::from_name("Ed25519"), Some(Algorithm::EdDSA));
    }

    #[test]
    fn unknown_and_none_rejected() {
        for s in [
            "none", "None", "NONE", "nOnE", "", "hs256", "RS1", "ES256K", "Ed448", "EDDSA",
            "RS256 ",
        ] {
            assert_eq!(Algorithm::from_name(s), None, "{s:?}");
        }
    }
}
