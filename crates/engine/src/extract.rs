//! Token extraction from a request, as Envoy's `jwt_authn` extractor does it.
//!
//! Owns: reading a provider's header, query-parameter and cookie locations, the `prefix`
//! substring search, and refusing a location that appears more than once. Does not own:
//! verification or the requirement logic.

use http::HeaderMap;
use meshguard_policy::JwtProvider;

/// Where a token was found, so a successful provider can remove the header it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Header(http::HeaderName),
    Param(String),
    Cookie(String),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Header(h) => write!(f, "header {h}"),
            Location::Param(p) => write!(f, "query parameter {p}"),
            Location::Cookie(c) => write!(f, "cookie {c}"),
        }
    }
}

/// A token and where it came from.
#[derive(Clone, Debug)]
pub struct Extracted {
    pub token: String,
    pub location: Location,
}

/// Extraction failed because a location carries more than one token (PRODUCT.md decision 2:
/// two `Authorization` headers are refused rather than guessing which one Envoy would take).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultipleTokens(pub Location);

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Envoy's header rule: search the prefix anywhere (case-sensitive); absent means no token.
/// Then skip non-token characters and take the longest run of token characters.
fn token_after_prefix(value: &str, prefix: &str) -> Option<String> {
    if prefix.is_empty() {
        return Some(value.to_string());
    }
    let rest = &value[value.find(prefix)? + prefix.len()..];
    match rest.find(is_token_char) {
        Some(start) => {
            let tail = &rest[start..];
            let end = tail.find(|c: char| !is_token_char(c)).unwrap_or(tail.len());
            Some(tail[..end].to_string())
        }
        None => Some(rest.to_string()),
    }
}

/// Extracts `provider`'s tokens in Envoy's order: headers, then query parameters, then cookies.
pub fn extract(
    provider: &JwtProvider,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Vec<Extracted>, MultipleTokens> {
    let mut out = Vec::new();
    for loc in &provider.headers {
        let mut values = headers.get_all(&loc.name).iter();
        let Some(first) = values.next() else { continue };
        if values.next().is_some() {
            return Err(MultipleTokens(Location::Header(loc.name.clone())));
        }
        // A header that is not valid text cannot carry a token in the JWT alphabet; treat it as
        // present-but-garbage so that it fails verification rather than being ignored.
        let text = String::from_utf8_lossy(first.as_bytes());
        // Repeated headers may arrive joined into one value (RFC 9110 §5.3): a second
        // occurrence of the prefix is a second token, refused like a second header.
        if !loc.prefix.is_empty() && text.matches(loc.prefix.as_str()).nth(1).is_some() {
            return Err(MultipleTokens(Location::Header(loc.name.clone())));
        }
        if let Some(token) = token_after_prefix(&text, &loc.prefix) {
            out.push(Extracted {
                token,
                location: Location::Header(loc.name.clone()),
            });
        }
    }
    if let Some(query) = query {
        for name in &provider.params {
            let found = query_values(query, name);
            out.extend(at_most_one(found, || Location::Param(name.clone()))?);
        }
    }
    for name in &provider.cookies {
        let found = cookie_values(headers, name);
        out.extend(at_most_one(found, || Location::Cookie(name.clone()))?);
    }
    Ok(out)
}

/// The one token a location carries, or an error if it carries more.
fn at_most_one(
    mut found: impl Iterator<Item = String>,
    location: impl FnOnce() -> Location,
) -> Result<Option<Extracted>, MultipleTokens> {
    // The location is built only when there is a token: most requests carry none here.
    match (found.next(), found.next()) {
        (None, _) => Ok(None),
        (Some(token), None) => Ok(Some(Extracted {
            token,
            location: location(),
        })),
        (Some(_), Some(_)) => Err(MultipleTokens(location())),
    }
}

fn query_values<'a>(query: &'a str, name: &'a str) -> impl Iterator<Item = String> + 'a {
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = String> + 'a {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |c| {
            let (k, v) = c.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
        })
}

/// Query-string decoding (`+` is a space, `%XX` a byte); invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_searched_anywhere_and_case_sensitive() {
        assert_eq!(
            token_after_prefix("Bearer a.b.c", "Bearer ").as_deref(),
            Some("a.b.c")
        );
        assert_eq!(token_after_prefix("bearer a.b.c", "Bearer "), None);
        assert_eq!(token_after_prefix("a.b.c", "Bearer "), None);
        assert_eq!(
            token_after_prefix("x, Bearer  \"a.b.c\" rest", "Bearer ").as_deref(),
            Some("a.b.c")
        );
        assert_eq!(
            token_after_prefix("Bearer ", "Bearer ").as_deref(),
            Some("")
        );
        assert_eq!(token_after_prefix("raw", "").as_deref(), Some("raw"));
    }

    #[test]
    fn query_and_cookie_decoding() {
        assert_eq!(
            query_values("a=1&access_token=x%2Ey&b", "access_token").collect::<Vec<_>>(),
            vec!["x.y"]
        );
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1; session=tok; b=2".parse().unwrap());
        assert_eq!(
            cookie_values(&h, "session").collect::<Vec<_>>(),
            vec!["tok"]
        );
    }
}
