//! The two base64url dialects meshguard reads.
//!
//! Owns: the strict decoder used for every token section and the lenient one used for
//! JWK members. Does not own: anything about what the bytes mean.
//!
//! Tokens are decoded strictly (docs/decisions.md, decision 2): URL-safe alphabet only, no `=`
//! padding, no whitespace, unused trailing bits must be zero. Envoy (absl) accepts
//! padding; meshguard does not, so one token has exactly one spelling.
//!
//! JWK members (`n`, `e`, `x`, `y`, `k`) are decoded leniently: URL-safe alphabet, padding
//! optional, non-zero trailing bits tolerated. The JWKS comes from the configured
//! provider, not from the client, and Envoy accepts such keys; rejecting them would lock
//! users out without making any token easier to forge.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

const STRICT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Strict base64url decode of a token section.
pub(crate) fn decode_strict(s: &str) -> Option<Vec<u8>> {
    STRICT.decode(s).ok()
}

/// Lenient base64url decode of a JWK member.
pub(crate) fn decode_lenient(s: &str) -> Option<Vec<u8>> {
    LENIENT.decode(s).ok()
}

/// Unpadded base64url, the only form meshguard writes.
pub(crate) fn encode(bytes: &[u8]) -> String {
    STRICT.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_accepts_canonical() {
        assert_eq!(decode_strict("e30").as_deref(), Some(&b"{}"[..]));
        assert_eq!(decode_strict("").as_deref(), Some(&b""[..]));
        assert_eq!(decode_strict("-_8").as_deref(), Some(&[0xfb, 0xff][..]));
    }

    #[test]
    fn strict_rejects_variants() {
        for s in [
            "e30=",  // padding
            "e30==", // padding
            "e3 0",  // space
            "e30\n", // newline
            "e31",   // non-zero trailing bits
            "+/8",   // standard alphabet
            "e",     // impossible length
            "e3=0",  // padding in the middle
            "é30",   // non-ASCII
        ] {
            assert_eq!(decode_strict(s), None, "{s:?}");
        }
    }

    #[test]
    fn lenient_accepts_padding_and_trailing_bits() {
        assert_eq!(decode_lenient("AQAB").as_deref(), Some(&[1, 0, 1][..]));
        assert_eq!(decode_lenient("e30=").as_deref(), Some(&b"{}"[..]));
        assert_eq!(decode_lenient("e31").as_deref(), Some(&b"{}"[..]));
        assert_eq!(decode_lenient("+/8"), None);
        assert_eq!(decode_lenient("e3 0"), None);
    }

    #[test]
    fn encode_is_unpadded() {
        assert_eq!(encode(b"{}"), "e30");
    }
}
