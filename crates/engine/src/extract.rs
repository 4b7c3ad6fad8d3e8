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

impl serde::Serialize for Location {
    /// As text (`header authorization`), the form reports show.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
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

/// Extraction failed because a location carries more than one token (docs/decisions.md, decision 2:
/// two `Authorization` headers are refused rather than guessing which one Envoy would take).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultipleTokens(pub Location);

/// `[A-Za-z0-9_.-]`, the characters of a compact JWT, as a table: a token is scanned byte by
/// byte on every request, and one load per byte is the cheapest test.
#[expect(
    clippy::indexing_slicing,
    reason = "evaluated at compile time: a bad index fails the build, not a request"
)]
static TOKEN_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-';
        b += 1;
    }
    t
};

#[expect(
    clippy::indexing_slicing,
    reason = "a u8 indexes a 256-entry table; the compiler drops the bounds check"
)]
fn is_token_byte(b: u8) -> bool {
    TOKEN_BYTE[usize::from(b)]
}

/// Envoy's header rule: search the prefix anywhere (case-sensitive; absent means no token),
/// then, in what follows the prefix, skip non-token characters, take the run of token
/// characters after them (or everything when there is none, which fails verification).
fn token_in(rest: &str) -> &str {
    let bytes = rest.as_bytes();
    let Some(start) = bytes.iter().position(|b| is_token_byte(*b)) else {
        return rest;
    };
    let tail = bytes.get(start..).unwrap_or_default();
    // Eight bytes per step with one branch: a token is hundreds of bytes long.
    let mut len = 0;
    for chunk in tail.chunks_exact(8) {
        if !chunk.iter().fold(true, |all, b| all & is_token_byte(*b)) {
            break;
        }
        len += 8;
    }
    let run = tail.get(len..).unwrap_or_default();
    len += run
        .iter()
        .position(|b| !is_token_byte(*b))
        .unwrap_or(run.len());
    // Token bytes are ASCII, so both ends are character boundaries.
    rest.get(start..start + len).unwrap_or(rest)
}

/// `hay.contains(needle)`, searching first for a byte of `needle` that a token cannot contain
/// (the space of `Bearer `): a request's header is mostly token, so that byte is rare and the
/// search runs at `memchr` speed instead of comparing at every position.
fn occurs_in(hay: &str, needle: &str) -> bool {
    let pick = needle
        .bytes()
        .enumerate()
        .find(|(_, b)| !is_token_byte(*b) && b.is_ascii());
    let Some((j, probe)) = pick else {
        return hay.contains(needle);
    };
    hay.match_indices(char::from(probe)).any(|(hit, _)| {
        hit.checked_sub(j)
            .and_then(|start| hay.as_bytes().get(start..))
            .is_some_and(|from| from.starts_with(needle.as_bytes()))
    })
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
        let text = match std::str::from_utf8(first.as_bytes()) {
            Ok(t) => std::borrow::Cow::Borrowed(t),
            Err(_) => String::from_utf8_lossy(first.as_bytes()),
        };
        // Repeated headers may arrive joined into one value (RFC 9110 §5.3): a second
        // occurrence of the prefix is a second token, refused like a second header.
        let prefix = loc.prefix.as_str();
        let token = if prefix.is_empty() {
            Some(&*text)
        } else {
            match text.split_once(prefix) {
                None => None,
                Some((_, rest)) => {
                    if occurs_in(rest, prefix) {
                        return Err(MultipleTokens(Location::Header(loc.name.clone())));
                    }
                    Some(token_in(rest))
                }
            }
        };
        if let Some(token) = token {
            out.push(Extracted {
                token: token.to_string(),
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

/// `query` without the parameters whose decoded name is `name` (Envoy removes a verified
/// token's parameter when the token is not forwarded). The other parameters are kept byte for
/// byte, in order. `None` when nothing but empty pieces is left: no query at all.
pub fn remove_query_param(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let (k, _) = pair.split_once('=').unwrap_or((pair, ""));
            percent_decode(k) != name
        })
        .collect();
    if kept.iter().all(|p| p.is_empty()) {
        None
    } else {
        Some(kept.join("&"))
    }
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
    let mut rest = s.as_bytes();
    let mut out = Vec::with_capacity(rest.len());
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match (b, tail) {
            (b'%', [hi, lo, after @ ..]) => {
                let hex = crate::normalize::hex_value(*hi)
                    .zip(crate::normalize::hex_value(*lo))
                    .map(|(h, l)| h << 4 | l);
                match hex {
                    Some(b) => {
                        out.push(b);
                        rest = after;
                    }
                    None => out.push(b'%'),
                }
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Envoy's header rule: search the prefix anywhere (case-sensitive); absent means no token.
    /// Then skip non-token characters and take the longest run of token characters. Token
    /// characters are ASCII, so the run found by scanning bytes starts and ends on character
    /// boundaries.
    fn token_after_prefix<'v>(value: &'v str, prefix: &str) -> Option<&'v str> {
        if prefix.is_empty() {
            return Some(value);
        }
        Some(token_in(&value[value.find(prefix)? + prefix.len()..]))
    }

    #[test]
    fn prefix_is_searched_anywhere_and_case_sensitive() {
        assert_eq!(token_after_prefix("Bearer a.b.c", "Bearer "), Some("a.b.c"));
        assert_eq!(token_after_prefix("bearer a.b.c", "Bearer "), None);
        assert_eq!(token_after_prefix("a.b.c", "Bearer "), None);
        assert_eq!(
            token_after_prefix("x, Bearer  \"a.b.c\" rest", "Bearer "),
            Some("a.b.c")
        );
        assert_eq!(token_after_prefix("Bearer ", "Bearer "), Some(""));
        assert_eq!(token_after_prefix("raw", ""), Some("raw"));
    }

    #[test]
    fn token_scan_matches_a_character_by_character_scan() {
        // The scan takes eight bytes per step: check every length and every position of the
        // first non-token character, against the obvious definition.
        fn reference(rest: &str) -> &str {
            let is_tok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
            match rest.find(is_tok) {
                Some(start) => {
                    let tail = &rest[start..];
                    &tail[..tail.find(|c: char| !is_tok(c)).unwrap_or(tail.len())]
                }
                None => rest,
            }
        }
        for len in 0..40 {
            let token: String = "aZ09_.-x".chars().cycle().take(len).collect();
            for stop in [" ", "\"", ",", "é", "+", "/", "=", "\t"] {
                for lead in ["", " ", "\"", " é "] {
                    for cut in 0..=len {
                        let text = format!("{lead}{}{stop}{}", &token[..cut], &token[cut..]);
                        assert_eq!(token_in(&text), reference(&text), "{text:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn occurs_in_agrees_with_contains() {
        let needles = ["Bearer ", "x", " ", "Token: ", "é ", "ab", "a b", "Bearer"];
        let hays = [
            "",
            "Bearer",
            "Bearer ",
            "xBearer Bearer ",
            "abc Bearer",
            "a b",
            "é é ",
            " Bearer x Bearer y",
            "Token:Token: ",
            "aab b",
        ];
        for n in needles {
            for h in hays {
                assert_eq!(occurs_in(h, n), h.contains(n), "{h:?} / {n:?}");
            }
        }
    }

    #[test]
    fn a_removed_query_parameter_leaves_the_others_as_they_were() {
        assert_eq!(remove_query_param("access_token=T", "access_token"), None);
        assert_eq!(remove_query_param("access_token=T&", "access_token"), None);
        assert_eq!(
            remove_query_param(
                "a=%2F&access%5Ftoken=T&b=c+d&access_token=U&f",
                "access_token"
            ),
            Some("a=%2F&b=c+d&f".into())
        );
        assert_eq!(
            remove_query_param("x=1&access_token", "access_token"),
            Some("x=1".into())
        );
        assert_eq!(
            remove_query_param("tok=1", "access_token"),
            Some("tok=1".into())
        );
    }

    #[test]
    fn query_and_cookie_decoding() {
        assert_eq!(
            query_values("a=1&access_token=x%2Ey&b", "access_token").collect::<Vec<_>>(),
            vec!["x.y"]
        );
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        // Two hex digits, no sign: `%+1` is not the byte 0x01.
        assert_eq!(percent_decode("%+1%-1%2B"), "% 1%-1+");
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1; session=tok; b=2".parse().unwrap());
        assert_eq!(
            cookie_values(&h, "session").collect::<Vec<_>>(),
            vec!["tok"]
        );
    }
}
