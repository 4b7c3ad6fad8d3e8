//! One fetch of a source's keys over HTTP(S).
//!
//! Owns: the client (hyper-util pooled client over hyper-rustls; rustls with the system roots
//! plus an optional extra CA bundle; DNS through the SSRF guard's resolver), a GET with
//! redirects and a body cap, OpenID discovery, and validating what came back (a JSON object
//! with a `keys` array and at least one usable key, as istiod's `validateJWKSFormat` wants).
//! Does not own: the timeout (the caller wraps the whole fetch, discovery and redirects
//! included, so a waiting request is bounded by the rule timeout), retries or scheduling
//! (`source`), or which destinations are allowed (`guard`).
//!
//! Error texts name the URL and the reason; a body appears in them only as a short prefix,
//! and only when it is not JSON (an HTML error page), so key material never reaches a log.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, LOCATION, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use meshguard_jwt::discovery_url;
use meshguard_jwt::{Jwks, Status};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::guard::{GuardedResolver, check_url};
use crate::{JwksError, JwksSettings, RemoteKeySource};

type HttpClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Empty<Bytes>>;

const USER_AGENT_VALUE: &str = concat!("meshguard/", env!("CARGO_PKG_VERSION"));

/// How much of a non-JSON body an error message may quote.
const BODY_PREFIX_BYTES: usize = 48;

/// Fetches documents; shared by every source of a manager (one connection pool).
pub(crate) struct Fetcher {
    client: HttpClient,
    max_body_bytes: usize,
    max_redirects: usize,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_redirects", &self.max_redirects)
            .finish_non_exhaustive()
    }
}

/// The result of a successful fetch.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) jwks: Jwks,
    /// The JWKS URL fetched (for discovery: the one the document named).
    pub(crate) jwks_uri: String,
    /// The `keys` array re-serialized with sorted members: equal text means the same keys.
    pub(crate) canonical: String,
}

impl Fetcher {
    pub(crate) fn new(settings: &JwksSettings) -> Result<Fetcher, JwksError> {
        let tls = tls_config(settings.extra_ca.as_deref())?;
        let mut http = HttpConnector::new_with_resolver(GuardedResolver);
        // https URLs reach this connector too; hyper-rustls adds TLS on top.
        http.enforce_http(false);
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build(https);
        Ok(Fetcher {
            client,
            max_body_bytes: settings.max_body_bytes,
            max_redirects: settings.max_redirects,
        })
    }

    /// Fetches the keys of `source`. For discovery, `known_jwks_uri` (from an earlier
    /// discovery) is used when the discovery document cannot be fetched now, so an outage of
    /// the discovery endpoint alone does not stop key refreshes.
    pub(crate) async fn fetch(
        &self,
        source: &RemoteKeySource,
        known_jwks_uri: Option<&str>,
    ) -> Result<Fetched, String> {
        let jwks_uri = match source {
            RemoteKeySource::JwksUri(uri) => uri.clone(),
            RemoteKeySource::Discovery { issuer } => match self.discover(issuer).await {
                Ok(uri) => uri,
                Err(e) => match known_jwks_uri {
                    Some(known) => {
                        tracing::warn!(issuer = %issuer, error = %e, jwks_uri = known,
                            "OpenID discovery failed; using the JWKS URI it named before");
                        known.to_owned()
                    }
                    None => return Err(e),
                },
            },
        };
        let body = self.get(&jwks_uri).await?;
        let jwks = parse_jwks_body(&body).map_err(|e| format!("JWKS from {jwks_uri}: {e}"))?;
        Ok(Fetched {
            jwks,
            canonical: canonical_keys(&body),
            jwks_uri,
        })
    }

    async fn discover(&self, issuer: &str) -> Result<String, String> {
        let url = discovery_url(issuer);
        let body = self.get(&url).await?;
        parse_discovery(&body).map_err(|e| format!("discovery document {url}: {e}"))
    }

    /// GET `url` with `accept: application/json`, following redirects (each hop checked by
    /// the guard); 2xx required; the body is capped at `max_body_bytes`.
    async fn get(&self, url: &str) -> Result<Bytes, String> {
        let mut uri = check_url(url).map_err(|e| format!("GET {url}: {e}"))?;
        let mut redirects = 0;
        loop {
            let request = Request::get(uri.clone())
                .header(ACCEPT, "application/json")
                .header(USER_AGENT, USER_AGENT_VALUE)
                .body(Empty::new())
                .map_err(|e| format!("GET {uri}: {e}"))?;
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("GET {uri}: {}", error_chain(&e)))?;
            let status = response.status();
            if is_redirect(status) {
                if redirects >= self.max_redirects {
                    return Err(format!(
                        "GET {url}: too many redirects (more than {})",
                        self.max_redirects
                    ));
                }
                redirects += 1;
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| format!("GET {uri}: HTTP {status} without a usable location"))?;
                let next =
                    resolve_location(&uri, location).map_err(|e| format!("GET {uri}: {e}"))?;
                let next_uri = check_url(&next).map_err(|e| format!("redirect from {uri}: {e}"))?;
                if is_https(&uri) && !is_https(&next_uri) {
                    return Err(format!(
                        "redirect from {uri} to {next_uri} refused: it downgrades https to http"
                    ));
                }
                uri = next_uri;
                continue;
            }
            if !status.is_success() {
                return Err(format!("GET {uri}: HTTP status {status}"));
            }
            let declared = response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > self.max_body_bytes as u64) {
                return Err(format!(
                    "GET {uri}: response larger than {} bytes",
                    self.max_body_bytes
                ));
            }
            return read_capped(response.into_body(), self.max_body_bytes)
                .await
                .map_err(|e| format!("GET {uri}: {e}"));
        }
    }
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

fn is_https(uri: &Uri) -> bool {
    uri.scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("https"))
}

/// Reads at most `max` bytes; a longer body is an error, and the rest is never read.
async fn read_capped(mut body: hyper::body::Incoming, max: usize) -> Result<Bytes, String> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the response: {}", error_chain(&e)))?;
        if let Ok(data) = frame.into_data() {
            if buf.len().saturating_add(data.len()) > max {
                return Err(format!("response larger than {max} bytes"));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

/// `e` and its sources, joined with `: ` (hyper's own texts are terse: "client error
/// (Connect)"; the cause is further down).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// The target of a redirect from `base` to `location` (RFC 3986 §5.2: absolute,
/// scheme-relative, absolute-path, query-only or relative-path references; the fragment
/// is dropped; dot segments are removed).
pub fn resolve_location(base: &Uri, location: &str) -> Result<String, String> {
    let location = location.split('#').next().unwrap_or("").trim();
    if location.is_empty() {
        return Err("redirect without a location".to_owned());
    }
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or("");
    if has_scheme(location) {
        return Ok(location.to_owned());
    }
    if location.starts_with("//") {
        return Ok(format!("{scheme}:{location}"));
    }
    let (path, query) = match location.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (location, None),
    };
    let merged = if path.is_empty() {
        // Query only: same path.
        base.path().to_owned()
    } else if path.starts_with('/') {
        path.to_owned()
    } else {
        let base_path = base.path();
        let dir = base_path
            .rfind('/')
            .and_then(|i| base_path.get(..=i))
            .unwrap_or("/");
        format!("{dir}{path}")
    };
    let path = remove_dot_segments(&merged);
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    Ok(format!("{scheme}://{authority}{path}{query}"))
}

/// True when `s` starts with an RFC 3986 scheme followed by `:`.
fn has_scheme(s: &str) -> bool {
    match s.split_once(':') {
        Some((scheme, _)) => {
            let mut chars = scheme.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    }
}

/// The `jwks_uri` of an OpenID discovery document.
pub fn parse_discovery(body: &[u8]) -> Result<String, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("empty response body".to_owned());
    }
    let doc: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("not valid JSON ({e}); it starts with {}", body_prefix(body)))?;
    let obj = doc
        .as_object()
        .ok_or_else(|| "not a JSON object".to_owned())?;
    match obj.get("jwks_uri") {
        None => Err("no \"jwks_uri\" member".to_owned()),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => {
            Err("\"jwks_uri\" is empty".to_owned())
        }
        Some(serde_json::Value::String(s)) => Ok(s.trim().to_owned()),
        Some(_) => Err("\"jwks_uri\" is not a string".to_owned()),
    }
}

/// Validates and parses a JWKS response: a JSON object with a `keys` array holding at least
/// one usable key (keys `meshguard_jwt` cannot use are skipped and listed by
/// [`Jwks::skipped`]; a set with none left is an error, so the previous keys stay in use).
pub fn parse_jwks_body(body: &[u8]) -> Result<Jwks, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("empty response body".to_owned());
    }
    let text = std::str::from_utf8(body).map_err(|_| {
        format!(
            "response is not UTF-8 text; it starts with {}",
            body_prefix(body)
        )
    })?;
    let jwks = Jwks::parse(text).map_err(|status| match status {
        Status::JwksNoKeys => {
            "no \"keys\" member (a JWKS is a JSON object with a \"keys\" array)".to_owned()
        }
        Status::JwksBadKeys => "\"keys\" is not an array".to_owned(),
        _ => format!(
            "not a JSON object (invalid JSON, a duplicate member or nesting too deep); \
             it starts with {}",
            body_prefix(body)
        ),
    })?;
    if jwks.is_empty() {
        let skipped = jwks.skipped();
        if skipped.is_empty() {
            return Err("\"keys\" is empty".to_owned());
        }
        let reasons = skipped
            .iter()
            .take(3)
            .map(|s| match &s.kid {
                Some(kid) => format!("[{}] kid {kid:?}: {}", s.index, s.reason),
                None => format!("[{}]: {}", s.index, s.reason),
            })
            .collect::<Vec<_>>()
            .join("; ");
        let more = if skipped.len() > 3 { "; ..." } else { "" };
        return Err(format!(
            "no usable key ({} skipped: {reasons}{more})",
            skipped.len()
        ));
    }
    Ok(jwks)
}

/// The `keys` array with sorted members (serde_json's map is ordered), for change detection.
fn canonical_keys(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("keys").map(|k| k.to_string()))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// The first bytes of a body, quoted and escaped, for error messages.
fn body_prefix(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body.get(..BODY_PREFIX_BYTES).unwrap_or(body));
    let ellipsis = if body.len() > BODY_PREFIX_BYTES {
        "..."
    } else {
        ""
    };
    format!("{:?}{ellipsis}", text)
}

/// System roots are read once per process: the read is slow-ish and they do not change
/// under a running proxy.
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "could not load some system CA certificates");
        }
        found.certs
    })
}

/// The CA certificates a TLS client of meshguard trusts: the system's, plus every certificate
/// of the PEM bundle `extra_ca`. The error is the reason the bundle is unusable, without its
/// path (callers name the file and the flag). Used for JWKS fetches and for `https://`
/// upstreams alike.
pub fn trusted_roots(extra_ca: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let (_, ignored) = roots.add_parsable_certificates(native_roots().iter().cloned());
    if ignored > 0 {
        tracing::debug!(ignored, "some system CA certificates are unusable");
    }
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path).map_err(|e| e.to_string())?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not a PEM file: {e}"))?;
        if certs.is_empty() {
            return Err("no certificate in the file".to_owned());
        }
        for (i, cert) in certs.into_iter().enumerate() {
            roots
                .add(cert)
                .map_err(|e| format!("certificate {}: {e}", i + 1))?;
        }
    }
    Ok(roots)
}

fn tls_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, JwksError> {
    let roots = trusted_roots(extra_ca).map_err(|reason| JwksError::ExtraCa {
        path: extra_ca.map(Path::to_owned).unwrap_or_default(),
        reason,
    })?;
    if roots.is_empty() {
        tracing::warn!("no trusted CA certificates: https JWKS fetches will fail");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| JwksError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshguard_jwt::{KeyKind, SigningKey};

    fn jwk(kid: &str) -> serde_json::Value {
        SigningKey::generate(KeyKind::EcP256)
            .unwrap()
            .public_jwk(Some(kid))
    }

    #[test]
    fn jwks_body_valid() {
        let body = serde_json::json!({"keys": [jwk("a"), jwk("b")]}).to_string();
        let jwks = parse_jwks_body(body.as_bytes()).unwrap();
        let kids: Vec<_> = jwks.keys().iter().map(|k| k.kid()).collect();
        assert_eq!(kids, [Some("a"), Some("b")]);
    }

    #[test]
    fn jwks_body_partly_usable_keeps_good_keys() {
        let body = serde_json::json!({"keys": [{"kty": "XYZ", "kid": "odd"}, jwk("good")]});
        let jwks = parse_jwks_body(body.to_string().as_bytes()).unwrap();
        assert_eq!(jwks.keys().len(), 1);
        assert_eq!(jwks.skipped().len(), 1);
    }

    #[test]
    fn jwks_body_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty response body"),
            (b"  \n", "empty response body"),
            (b"<html>bad gateway</html>", "not a JSON object"),
            (b"{}", "no \"keys\" member"),
            (br#"{"keys": {}}"#, "\"keys\" is not an array"),
            (br#"{"keys": "x"}"#, "\"keys\" is not an array"),
            (br#"{"keys": []}"#, "\"keys\" is empty"),
            (br#"[1, 2]"#, "not a JSON object"),
            (br#"{"keys": [], "keys": []}"#, "duplicate member"),
            (
                br#"{"keys": [{"kty": "nope"}]}"#,
                "no usable key (1 skipped",
            ),
            (b"\xff\xfe{", "not UTF-8"),
            // Google's x509 map form (istiod refuses it too).
            (
                br#"{"abc": "-----BEGIN CERTIFICATE-----"}"#,
                "no \"keys\" member",
            ),
        ];
        for (body, want) in cases {
            let e = parse_jwks_body(body).unwrap_err();
            assert!(
                e.contains(want),
                "{:?}: got {e:?}, want {want:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn jwks_error_quotes_only_a_prefix() {
        let long = format!("<html>{}</html>", "x".repeat(10_000));
        let e = parse_jwks_body(long.as_bytes()).unwrap_err();
        assert!(e.len() < 200, "{e}");
        assert!(e.contains("<html>xxx") && e.ends_with("..."), "{e}");
    }

    #[test]
    fn canonical_ignores_member_order_and_whitespace() {
        let a = br#"{"keys": [{"kty": "EC", "kid": "1", "x": "a"}]}"#;
        let b = br#"{ "keys":[ {"kid":"1","x":"a","kty":"EC"} ], "extra": 1 }"#;
        let c = br#"{"keys": [{"kty": "EC", "kid": "2", "x": "a"}]}"#;
        assert_eq!(canonical_keys(a), canonical_keys(b));
        assert_ne!(canonical_keys(a), canonical_keys(c));
    }

    #[test]
    fn discovery_documents() {
        assert_eq!(
            parse_discovery(br#"{"issuer": "https://i", "jwks_uri": "https://i/keys"}"#).unwrap(),
            "https://i/keys"
        );
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty response body"),
            (b"nope", "not valid JSON"),
            (b"[]", "not a JSON object"),
            (br#"{"issuer": "x"}"#, "no \"jwks_uri\""),
            (br#"{"jwks_uri": 3}"#, "not a string"),
            (br#"{"jwks_uri": " "}"#, "empty"),
        ];
        for (body, want) in cases {
            let e = parse_discovery(body).unwrap_err();
            assert!(e.contains(want), "got {e:?}, want {want:?}");
        }
    }

    #[test]
    fn discovery_url_trims_one_slash() {
        assert_eq!(
            discovery_url("https://issuer.example"),
            "https://issuer.example/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://issuer.example/realms/x/"),
            "https://issuer.example/realms/x/.well-known/openid-configuration"
        );
        // istiod's TrimSuffix removes a single '/'.
        assert_eq!(
            discovery_url("https://issuer.example//"),
            "https://issuer.example//.well-known/openid-configuration"
        );
    }

    #[test]
    fn redirect_locations() {
        let base: Uri = "https://idp.example:8443/realms/a/certs?x=1"
            .parse()
            .unwrap();
        let cases = [
            ("https://other.example/keys", "https://other.example/keys"),
            ("http://other.example/keys", "http://other.example/keys"),
            ("//cdn.example/k.json", "https://cdn.example/k.json"),
            ("/keys", "https://idp.example:8443/keys"),
            ("/keys?v=2#frag", "https://idp.example:8443/keys?v=2"),
            ("keys.json", "https://idp.example:8443/realms/a/keys.json"),
            ("../b/certs", "https://idp.example:8443/realms/b/certs"),
            ("./certs2", "https://idp.example:8443/realms/a/certs2"),
            ("../../../../x", "https://idp.example:8443/x"),
            ("?y=2", "https://idp.example:8443/realms/a/certs?y=2"),
        ];
        for (loc, want) in cases {
            assert_eq!(resolve_location(&base, loc).unwrap(), want, "{loc}");
        }
        assert!(resolve_location(&base, "").is_err());
        assert!(resolve_location(&base, "#only").is_err());
    }

    #[test]
    fn extra_ca_errors_name_the_file() {
        let missing = std::env::temp_dir().join("meshguard-jwks-no-such-ca.pem");
        let e = tls_config(Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("meshguard-jwks-no-such-ca.pem"), "{e}");

        let empty = std::env::temp_dir().join(format!(
            "meshguard-jwks-empty-ca-{}.pem",
            std::process::id()
        ));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = tls_config(Some(&empty)).unwrap_err().to_string();
        let _ = std::fs::remove_file(&empty);
        assert!(
            e.contains("meshguard-jwks-empty-ca") && e.contains("no certificate"),
            "{e}"
        );
    }

    #[test]
    fn error_chain_joins_sources() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("refused to connect"));
        assert_eq!(
            error_chain(&e),
            "client error (Connect): refused to connect"
        );
    }
}
