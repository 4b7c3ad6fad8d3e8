//! Istio's `MeshConfig`: the parts meshguard reads (root namespace, path normalization,
//! trusted proxies, extension providers), from a bare MeshConfig file or the `istio`
//! ConfigMap that holds one; and `meshConfig.pathNormalization` as a type.
//!
//! Plain data and its parsing: what the settings do is for the crates that use them.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// `meshConfig.pathNormalization.normalization`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PathNormalization {
    /// Only the fragment is removed.
    None,
    /// RFC 3986 normalization (`DEFAULT` is an alias).
    #[default]
    Base,
    /// `Base`, then merge runs of `/`.
    MergeSlashes,
    /// Decode `%2F`/`%5C` first, then `MergeSlashes`.
    DecodeAndMergeSlashes,
}

/// Why a `pathNormalization` value was not understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownPathNormalization {
    value: String,
}

// === impl PathNormalization ===

impl PathNormalization {
    /// Every accepted spelling, for error messages and help texts.
    pub const ACCEPTED: &'static str =
        "NONE, BASE, DEFAULT, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES";

    /// The canonical upper-case name, as written in MeshConfig.
    pub fn as_str(self) -> &'static str {
        match self {
            PathNormalization::None => "NONE",
            PathNormalization::Base => "BASE",
            PathNormalization::MergeSlashes => "MERGE_SLASHES",
            PathNormalization::DecodeAndMergeSlashes => "DECODE_AND_MERGE_SLASHES",
        }
    }
}

impl FromStr for PathNormalization {
    type Err = UnknownPathNormalization;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let known = [
            ("NONE", PathNormalization::None),
            ("BASE", PathNormalization::Base),
            ("DEFAULT", PathNormalization::Base),
            ("MERGE_SLASHES", PathNormalization::MergeSlashes),
            (
                "DECODE_AND_MERGE_SLASHES",
                PathNormalization::DecodeAndMergeSlashes,
            ),
        ];
        known
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|&(_, mode)| mode)
            .ok_or_else(|| UnknownPathNormalization {
                value: s.to_string(),
            })
    }
}

impl fmt::Display for PathNormalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl UnknownPathNormalization ===

impl fmt::Display for UnknownPathNormalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown path normalization {:?}; expected one of {}",
            self.value,
            PathNormalization::ACCEPTED
        )
    }
}

impl std::error::Error for UnknownPathNormalization {}

/// The parts of Istio's `MeshConfig` meshguard reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    #[serde(default)]
    pub root_namespace: Option<String>,
    #[serde(default)]
    pub path_normalization: Option<MeshPathNormalization>,
    #[serde(default)]
    pub default_config: Option<MeshProxyConfig>,
    #[serde(default)]
    pub extension_providers: Vec<ExtensionProvider>,
    /// The mesh's trust domain (mutual TLS: the SPIFFE IDs peers must have).
    #[serde(default)]
    pub trust_domain: Option<String>,
    #[serde(default)]
    pub trust_domain_aliases: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct MeshPathNormalization {
    #[serde(default)]
    pub normalization: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshProxyConfig {
    #[serde(default)]
    pub gateway_topology: Option<GatewayTopology>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayTopology {
    #[serde(default)]
    pub num_trusted_proxies: Option<usize>,
}

/// `meshConfig.extensionProviders[]`: the two ext_authz kinds are read; other kinds (tracing,
/// access logging) are ignored, as they do not change a decision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProvider {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub envoy_ext_authz_grpc: Option<ExtAuthzGrpcSpec>,
    #[serde(default)]
    pub envoy_ext_authz_http: Option<ExtAuthzHttpSpec>,
}

/// `envoyExtAuthzGrpc`, as written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtAuthzGrpcSpec {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u64,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default)]
    pub status_on_error: Option<String>,
    #[serde(default)]
    pub clear_route_cache: bool,
    #[serde(default)]
    pub include_request_body_in_check: Option<RequestBodySpec>,
}

/// `envoyExtAuthzHttp`, as written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtAuthzHttpSpec {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u64,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default)]
    pub status_on_error: Option<String>,
    #[serde(default)]
    pub clear_route_cache: bool,
    #[serde(default)]
    pub include_request_headers_in_check: Vec<String>,
    /// Deprecated by Istio; read only when `includeRequestHeadersInCheck` is empty.
    #[serde(default)]
    pub include_headers_in_check: Vec<String>,
    #[serde(default)]
    pub include_additional_headers_in_check: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub headers_to_upstream_on_allow: Vec<String>,
    #[serde(default)]
    pub headers_to_downstream_on_deny: Vec<String>,
    #[serde(default)]
    pub headers_to_downstream_on_allow: Vec<String>,
    #[serde(default)]
    pub include_request_body_in_check: Option<RequestBodySpec>,
}

/// `includeRequestBodyInCheck`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestBodySpec {
    #[serde(default)]
    pub max_request_bytes: u32,
    #[serde(default)]
    pub allow_partial_message: bool,
    #[serde(default)]
    pub pack_as_bytes: bool,
}

/// An ext_authz provider, checked as istiod checks it: what a CUSTOM policy naming it
/// (`provider.name`) makes the proxy ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtAuthzProvider {
    pub name: String,
    /// A host name or an IP address (`[<namespace>/]` of a Kubernetes service name removed).
    pub service: String,
    pub port: u16,
    /// Istio's default is 600 s.
    pub timeout: Duration,
    /// `failOpen`: an error or timeout lets the request go on (Envoy's `failure_mode_allow`).
    pub fail_open: bool,
    /// `statusOnError` (default 403): the status of the reply when the provider cannot be
    /// asked and `failOpen` is false.
    pub status_on_error: u16,
    pub kind: ExtAuthzKind,
    /// `includeRequestBodyInCheck`.
    pub body: Option<RequestBodySpec>,
}

/// gRPC (`envoy.service.auth.v3.Authorization/Check`) or the HTTP variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtAuthzKind {
    Grpc,
    Http(ExtAuthzHttp),
}

/// The HTTP variant's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtAuthzHttp {
    /// Prepended to the request's path; empty or starting with `/`.
    pub path_prefix: String,
    /// `includeRequestHeadersInCheck` (or the deprecated `includeHeadersInCheck`).
    pub request_headers: Vec<HeaderPattern>,
    /// `includeAdditionalHeadersInCheck`, sorted by name as istiod sorts them.
    pub additional_headers: Vec<(String, String)>,
    pub upstream_on_allow: Vec<HeaderPattern>,
    pub downstream_on_deny: Vec<HeaderPattern>,
    pub downstream_on_allow: Vec<HeaderPattern>,
}

/// A header name pattern of the HTTP provider's lists, compared ignoring case (istiod sets
/// `ignore_case: true`): `name`, `prefix*` or `*suffix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderPattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl HeaderPattern {
    fn parse(s: &str) -> Result<HeaderPattern, String> {
        if s == "*" {
            return Err(
                "a single wildcard (\"*\") is not supported, change it to either prefix or suffix match"
                    .into(),
            );
        }
        let lower = s.to_ascii_lowercase();
        Ok(if let Some(rest) = lower.strip_prefix('*') {
            HeaderPattern::Suffix(rest.to_string())
        } else if let Some(rest) = lower.strip_suffix('*') {
            HeaderPattern::Prefix(rest.to_string())
        } else {
            HeaderPattern::Exact(lower)
        })
    }

    /// Whether the (lower-case) header `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        match self {
            HeaderPattern::Exact(e) => name == *e,
            HeaderPattern::Prefix(p) => name.starts_with(p.as_str()),
            HeaderPattern::Suffix(p) => name.ends_with(p.as_str()),
        }
    }
}

/// Whether any of `patterns` matches `name`.
pub fn any_matches(patterns: &[HeaderPattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name))
}

/// Istio's default ext_authz timeout (`timeoutOrDefault`).
pub const DEFAULT_EXT_AUTHZ_TIMEOUT: Duration = Duration::from_secs(600);

/// The values of Envoy's `type.v3.StatusCode` (what istiod accepts for `statusOnError`),
/// without `Empty` (0), which Envoy's validation refuses.
const ENVOY_STATUS_CODES: &[u16] = &[
    100, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307, 308,
    400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421,
    422, 423, 424, 426, 428, 429, 431, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
];

/// A provider name istiod accepts: a DNS-1123 label (lower-case letters, digits, `-`, at most
/// 63 characters, no `-` at either end).
fn check_provider_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 63 {
        return Err(format!("too long (max 63 characters): {}", name.len()));
    }
    if let Some((i, c)) = name
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    {
        return Err(format!(
            "invalid character {c:?} at position {i} (only lowercase letters, digits, and hyphens allowed)"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("cannot start or end with hyphen".into());
    }
    Ok(())
}

fn check_port(port: u64) -> Result<u16, String> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| format!("port must be in the range [1, 65535], found: {port}"))
}

/// `[<namespace>/]<host>`: the host part (Istio looks the service up in its registry; there is
/// none here, so the name is resolved by DNS or is an address).
fn check_service(service: &str) -> Result<String, String> {
    let host = match service.split_once('/') {
        Some((_ns, host)) => host,
        None => service,
    };
    if host.is_empty() {
        return Err("service must not be empty".into());
    }
    if host.contains(['/', ' ', ':']) && host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(format!(
            "expected a host name or an address (the port goes in `port`), found: {service:?}"
        ));
    }
    Ok(host.to_string())
}

fn check_status(status: Option<&str>) -> Result<u16, String> {
    let Some(s) = status else {
        return Ok(403);
    };
    let code: u16 = s
        .parse()
        .map_err(|_| format!("invalid statusOnError {s:?}: not a number"))?;
    if ENVOY_STATUS_CODES.contains(&code) {
        Ok(code)
    } else {
        Err(format!(
            "unsupported statusOnError {s}, supported values: {ENVOY_STATUS_CODES:?}"
        ))
    }
}

fn check_timeout(t: Option<&str>) -> Result<Duration, String> {
    match t {
        None => Ok(DEFAULT_EXT_AUTHZ_TIMEOUT),
        Some(t) => {
            let d = crate::parse_duration(t).map_err(|e| format!("timeout {t:?}: {e}"))?;
            if d.is_zero() {
                Err(format!("timeout {t:?}: must be more than 0"))
            } else {
                Ok(d)
            }
        }
    }
}

/// `includeRequestBodyInCheck`: Envoy refuses a `max_request_bytes` of 0.
fn check_body(body: Option<RequestBodySpec>) -> Result<Option<RequestBodySpec>, String> {
    match body {
        Some(b) if b.max_request_bytes == 0 => {
            Err("maxRequestBytes must be more than 0, found: 0".into())
        }
        other => Ok(other),
    }
}

fn patterns(field: &str, list: &[String]) -> Result<Vec<HeaderPattern>, String> {
    list.iter()
        .map(|h| HeaderPattern::parse(h).map_err(|e| format!("{field}: {e}")))
        .collect()
}

impl MeshConfig {
    /// Reads a MeshConfig YAML file; either the bare MeshConfig or a ConfigMap `istio` whose
    /// `data.mesh` holds it (as Istio stores it).
    pub fn load(path: &Path) -> Result<MeshConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let value: serde_json::Value = serde_saphyr::from_str(&text)
            .map_err(|e| format!("{}: invalid YAML: {e}", path.display()))?;
        let mesh = match value
            .get("data")
            .and_then(|d| d.get("mesh"))
            .and_then(|m| m.as_str())
        {
            Some(inner) => serde_saphyr::from_str(inner)
                .map_err(|e| format!("{}: data.mesh: invalid YAML: {e}", path.display()))?,
            None => value,
        };
        serde_json::from_value(mesh).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `pathNormalization.normalization`, parsed.
    pub fn path_normalization(&self) -> Result<Option<PathNormalization>, String> {
        match self
            .path_normalization
            .as_ref()
            .and_then(|p| p.normalization.as_deref())
        {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|e| format!("pathNormalization.normalization: {e}")),
        }
    }

    /// The ext_authz providers (`envoyExtAuthzGrpc`, `envoyExtAuthzHttp`), checked as istiod
    /// checks them. An error names the provider, the field and the value; `file` is put in
    /// front of it.
    pub fn ext_authz_providers(&self, file: &Path) -> Result<Vec<ExtAuthzProvider>, String> {
        let mut out: Vec<ExtAuthzProvider> = Vec::new();
        for (i, p) in self.extension_providers.iter().enumerate() {
            let at = |field: &str, e: String| {
                format!(
                    "{}: extensionProviders[{i}] ({:?}): {field}: {e}",
                    file.display(),
                    p.name
                )
            };
            let (grpc, http) = (&p.envoy_ext_authz_grpc, &p.envoy_ext_authz_http);
            if grpc.is_none() && http.is_none() {
                // Another kind of provider (tracing, logging): not an authorizer.
                continue;
            }
            check_provider_name(&p.name).map_err(|e| at("name", e))?;
            if out.iter().any(|o| o.name == p.name) {
                return Err(at(
                    "name",
                    format!(
                        "extension provider name must be unique, found duplicate: {}",
                        p.name
                    ),
                ));
            }
            let provider = match (grpc, http) {
                (Some(g), None) => ExtAuthzProvider {
                    name: p.name.clone(),
                    service: check_service(&g.service)
                        .map_err(|e| at("envoyExtAuthzGrpc.service", e))?,
                    port: check_port(g.port).map_err(|e| at("envoyExtAuthzGrpc.port", e))?,
                    timeout: check_timeout(g.timeout.as_deref())
                        .map_err(|e| at("envoyExtAuthzGrpc.timeout", e))?,
                    fail_open: g.fail_open,
                    status_on_error: check_status(g.status_on_error.as_deref())
                        .map_err(|e| at("envoyExtAuthzGrpc.statusOnError", e))?,
                    kind: ExtAuthzKind::Grpc,
                    body: check_body(g.include_request_body_in_check)
                        .map_err(|e| at("envoyExtAuthzGrpc.includeRequestBodyInCheck", e))?,
                },
                (None, Some(h)) => {
                    let f = |name: &str| format!("envoyExtAuthzHttp.{name}");
                    let path_prefix = h.path_prefix.clone().unwrap_or_default();
                    if !path_prefix.is_empty() && !path_prefix.starts_with('/') {
                        return Err(at(
                            &f("pathPrefix"),
                            format!("pathPrefix must begin with `/`, found: {path_prefix:?}"),
                        ));
                    }
                    if path_prefix.contains(|c: char| {
                        c.is_ascii_control() || c == ' ' || c == '?' || c == '#'
                    }) {
                        return Err(at(
                            &f("pathPrefix"),
                            format!("invalid pathPrefix {path_prefix:?}"),
                        ));
                    }
                    let request = if h.include_request_headers_in_check.is_empty() {
                        patterns("includeHeadersInCheck", &h.include_headers_in_check)
                    } else {
                        patterns(
                            "includeRequestHeadersInCheck",
                            &h.include_request_headers_in_check,
                        )
                    }
                    .map_err(|e| at(&f("include(Request)HeadersInCheck"), e))?;
                    for (k, v) in &h.include_additional_headers_in_check {
                        if !k.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                            || v.bytes().any(|b| b.is_ascii_control())
                        {
                            return Err(at(
                                &f("includeAdditionalHeadersInCheck"),
                                format!("not a valid header: {k:?}: {v:?}"),
                            ));
                        }
                    }
                    ExtAuthzProvider {
                        name: p.name.clone(),
                        service: check_service(&h.service).map_err(|e| at(&f("service"), e))?,
                        port: check_port(h.port).map_err(|e| at(&f("port"), e))?,
                        timeout: check_timeout(h.timeout.as_deref())
                            .map_err(|e| at(&f("timeout"), e))?,
                        fail_open: h.fail_open,
                        status_on_error: check_status(h.status_on_error.as_deref())
                            .map_err(|e| at(&f("statusOnError"), e))?,
                        kind: ExtAuthzKind::Http(ExtAuthzHttp {
                            path_prefix,
                            request_headers: request,
                            additional_headers: h
                                .include_additional_headers_in_check
                                .iter()
                                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                                .collect(),
                            upstream_on_allow: patterns(
                                "headersToUpstreamOnAllow",
                                &h.headers_to_upstream_on_allow,
                            )
                            .map_err(|e| at(&f("headersToUpstreamOnAllow"), e))?,
                            downstream_on_deny: patterns(
                                "headersToDownstreamOnDeny",
                                &h.headers_to_downstream_on_deny,
                            )
                            .map_err(|e| at(&f("headersToDownstreamOnDeny"), e))?,
                            downstream_on_allow: patterns(
                                "headersToDownstreamOnAllow",
                                &h.headers_to_downstream_on_allow,
                            )
                            .map_err(|e| at(&f("headersToDownstreamOnAllow"), e))?,
                        }),
                        body: check_body(h.include_request_body_in_check)
                            .map_err(|e| at(&f("includeRequestBodyInCheck"), e))?,
                    }
                }
                _ => {
                    return Err(at(
                        "envoyExtAuthzGrpc, envoyExtAuthzHttp",
                        "a provider has one kind, found both".into(),
                    ));
                }
            };
            out.push(provider);
        }
        Ok(out)
    }

    /// `defaultConfig.gatewayTopology.numTrustedProxies`.
    pub fn trusted_proxies(&self) -> Option<usize> {
        self.default_config
            .as_ref()
            .and_then(|d| d.gateway_topology.as_ref())
            .and_then(|g| g.num_trusted_proxies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bare_mesh_config_and_the_istio_config_map() {
        let dir = std::env::temp_dir().join(format!("meshguard-meshcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bare = dir.join("mesh.yaml");
        std::fs::write(
            &bare,
            "rootNamespace: mesh-root\npathNormalization: {normalization: MERGE_SLASHES}\ndefaultConfig:\n  gatewayTopology: {numTrustedProxies: 2}\nextensionProviders: [{name: ext, envoyExtAuthzHttp: {service: x}}]\n",
        )
        .unwrap();
        let m = MeshConfig::load(&bare).unwrap();
        assert_eq!(m.root_namespace.as_deref(), Some("mesh-root"));
        assert_eq!(
            m.path_normalization().unwrap(),
            Some(PathNormalization::MergeSlashes)
        );
        assert_eq!(m.trusted_proxies(), Some(2));
        assert_eq!(m.extension_providers[0].name, "ext");
        let cm = dir.join("cm.yaml");
        std::fs::write(&cm, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio}\ndata:\n  mesh: |\n    rootNamespace: other\n").unwrap();
        assert_eq!(
            MeshConfig::load(&cm).unwrap().root_namespace.as_deref(),
            Some("other")
        );
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "pathNormalization: {normalization: SOMETIMES}\n").unwrap();
        assert!(
            MeshConfig::load(&bad)
                .unwrap()
                .path_normalization()
                .unwrap_err()
                .contains("SOMETIMES")
        );
    }

    fn providers(yaml: &str) -> Result<Vec<ExtAuthzProvider>, String> {
        let m: MeshConfig = serde_saphyr::from_str(yaml).unwrap();
        m.ext_authz_providers(Path::new("mesh.yaml"))
    }

    #[test]
    fn ext_authz_providers_are_read_as_istiod_reads_them() {
        let p = providers(
            "extensionProviders:\n\
             - {name: tracing, zipkin: {service: z, port: 9411}}\n\
             - name: grpc-authz\n  envoyExtAuthzGrpc: {service: authz.foo.svc.cluster.local, port: 9000}\n\
             - name: http-authz\n  envoyExtAuthzHttp:\n    service: foo/authz.foo.svc.cluster.local\n    port: 8000\n    timeout: 0.5s\n    failOpen: true\n    statusOnError: \"503\"\n    pathPrefix: /check\n    includeRequestHeadersInCheck: [X-Ext-Authz, \"x-b3-*\", \"*-token\"]\n    includeAdditionalHeadersInCheck: {X-Added: yes}\n    headersToUpstreamOnAllow: [x-user]\n    headersToDownstreamOnDeny: [x-reason]\n",
        )
        .unwrap();
        assert_eq!(p.len(), 2, "the zipkin provider is not an authorizer");
        assert_eq!(p[0].name, "grpc-authz");
        assert_eq!(p[0].kind, ExtAuthzKind::Grpc);
        assert_eq!(p[0].timeout, DEFAULT_EXT_AUTHZ_TIMEOUT);
        assert_eq!(p[0].status_on_error, 403);
        assert!(!p[0].fail_open);
        assert_eq!(p[1].service, "authz.foo.svc.cluster.local");
        assert_eq!(p[1].timeout, Duration::from_millis(500));
        assert_eq!(p[1].status_on_error, 503);
        assert!(p[1].fail_open);
        let ExtAuthzKind::Http(h) = &p[1].kind else {
            panic!("{:?}", p[1].kind)
        };
        assert_eq!(h.path_prefix, "/check");
        assert!(any_matches(&h.request_headers, "x-ext-authz"));
        assert!(any_matches(&h.request_headers, "X-B3-TraceId"));
        assert!(any_matches(&h.request_headers, "my-token"));
        assert!(!any_matches(&h.request_headers, "cookie"));
        assert_eq!(
            h.additional_headers,
            [("x-added".to_string(), "yes".to_string())]
        );
    }

    #[test]
    fn ext_authz_provider_errors_name_the_file_the_field_and_the_value() {
        let cases = [
            (
                "extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: s, port: 0}}]",
                "mesh.yaml: extensionProviders[0] (\"a\"): envoyExtAuthzGrpc.port: port must be in the range [1, 65535], found: 0",
            ),
            (
                "extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: s, port: 1, statusOnError: \"999\"}}]",
                "envoyExtAuthzGrpc.statusOnError: unsupported statusOnError 999",
            ),
            (
                "extensionProviders: [{name: a, envoyExtAuthzHttp: {service: s, port: 1, pathPrefix: check}}]",
                "envoyExtAuthzHttp.pathPrefix: pathPrefix must begin with `/`, found: \"check\"",
            ),
            (
                "extensionProviders: [{name: a, envoyExtAuthzHttp: {service: s, port: 1, headersToUpstreamOnAllow: [\"*\"]}}]",
                "a single wildcard",
            ),
            (
                "extensionProviders: [{name: My_Authz, envoyExtAuthzGrpc: {service: s, port: 1}}]",
                "(\"My_Authz\"): name: invalid character 'M' at position 0",
            ),
            (
                "extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: s, port: 1, timeout: soon}}]",
                "envoyExtAuthzGrpc.timeout: timeout \"soon\"",
            ),
            (
                "extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: s, port: 1}}, {name: a, envoyExtAuthzGrpc: {service: s, port: 1}}]",
                "extensionProviders[1] (\"a\"): name: extension provider name must be unique",
            ),
            (
                "extensionProviders: [{name: a, envoyExtAuthzGrpc: {port: 1}}]",
                "envoyExtAuthzGrpc.service: service must not be empty",
            ),
            (
                "extensionProviders: [{name: a, envoyExtAuthzHttp: {service: s, port: 1, includeRequestBodyInCheck: {allowPartialMessage: true}}}]",
                "envoyExtAuthzHttp.includeRequestBodyInCheck: maxRequestBytes must be more than 0, found: 0",
            ),
        ];
        for (yaml, want) in cases {
            let e = providers(yaml).unwrap_err();
            assert!(e.contains(want), "{yaml}\n{e}\nwants {want}");
        }
    }
}
