//! meshguard-jwt: JWT decoding, JWKS parsing, signature verification and signing, with
//! the observable behaviour of Envoy's `jwt_authn` filter (google/jwt_verify_lib).
//!
//! This crate knows nothing about Istio policy: it does not find tokens in requests,
//! pick providers, fetch JWKS or apply claims. Callers hand it a token string, a
//! [`Validation`] and a [`Jwks`], and get a [`Token`] or the exact Envoy [`Status`].
//!
//! Where Envoy is lax, meshguard is stricter (never laxer): empty sections, padded or
//! non-canonical base64url, duplicate JSON members, excessive nesting, `crit`, oversize
//! tokens, RSA keys under 2048 bits and encryption keys are all refused. The module docs
//! say where each rule lives.
//!
//! Modules: `status` (statuses and their texts), `alg` (algorithm names), `b64` (base64url
//! dialects), `json` (strict JSON), `token` (decoding and claim checks), `jwks` (keys),
//! `verify` (key selection and the check sequence), `sign` (signing), `source` (where remote
//! keys live).
#![forbid(unsafe_code)]
// No panics on the request path: index with `get`, no unwrap/expect/panic!/unreachable!.
// An allowed site says why it cannot panic (docs/architecture.md, Panics). Tests may use
// them (clippy.toml; `string_slice` has no such option, hence the `cfg_attr`).
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]
#![cfg_attr(not(test), deny(clippy::string_slice))]

mod alg;
mod b64;
mod json;
mod jwks;
mod sign;
mod source;
mod status;
mod token;
mod verify;

pub use alg::Algorithm;
pub use jwks::{Jwks, Key, SkippedKey};
pub use sign::{KeyKind, SignError, SigningKey, jwk_thumbprint, sign, sign_raw};
pub use source::{RemoteKeySource, discovery_url};
pub use status::Status;
pub use token::{Claims, Header, Limits, Token, Validity};
pub use verify::{Validation, verify, verify_compact_signature};

#[cfg(test)]
mod tests;
