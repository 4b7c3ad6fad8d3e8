//! Where a provider's remote keys live: the one name the policy compiler, the key store and the
//! fetcher share for a JWKS source.
//!
//! Owns the source's identity (equality, ordering, hashing: one fetcher serves every rule that
//! names the same source) and its first URL. Does not fetch (`meshguard-jwks` does).

use std::fmt;

/// A remote JWKS source.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RemoteKeySource {
    /// `jwksUri`.
    JwksUri(String),
    /// Neither `jwks` nor `jwksUri`: OpenID discovery. GET
    /// `<issuer without one trailing '/'>/.well-known/openid-configuration`, take `jwks_uri`,
    /// fetch it.
    Discovery { issuer: String },
}

impl RemoteKeySource {
    /// The URL fetched first: the `jwksUri`, or the discovery document's URL.
    pub fn first_url(&self) -> String {
        match self {
            RemoteKeySource::JwksUri(u) => u.clone(),
            RemoteKeySource::Discovery { issuer } => discovery_url(issuer),
        }
    }
}

/// The `uri` metric label and log name of a source: [`RemoteKeySource::first_url`].
impl fmt::Display for RemoteKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.first_url())
    }
}

/// The OpenID discovery document's URL for `issuer` (one trailing `/` dropped, as Envoy and
/// Istio do).
pub fn discovery_url(issuer: &str) -> String {
    let base = issuer.strip_suffix('/').unwrap_or(issuer);
    format!("{base}/.well-known/openid-configuration")
}
