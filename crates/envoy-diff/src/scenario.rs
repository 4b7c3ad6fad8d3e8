//! What one differential run is made of: the Istio YAML, the workload, the mesh options and the
//! requests. Plain data, serializable, so that a failing case can be written out as a file and
//! replayed (`MESHGUARD_DIFF_REPLAY=FILE`, see `docs/differential-testing.md`).
//!
//! Addresses: meshguard listens on `127.0.0.1:P` and Envoy on `127.0.0.2:P`, the same port `P`,
//! so that a policy on `ports` or `destination.port` reads the same for both. The placeholder
//! `${PORT}` in [`Scenario::policies`] and in a request's `host` is replaced by `P` before either
//! proxy sees it. Clients connect from [`Request::source_ip`], any address in `127.0.0.0/8`, so
//! `ipBlocks` and `source.ip` can be aimed at. `destination.ip` differs between the two
//! (`127.0.0.1` and `127.0.0.2`): policies on it must use ranges holding both or neither.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The placeholder for the listener port in policies and hosts.
pub const PORT_PLACEHOLDER: &str = "${PORT}";

/// One scenario: resources, workload, mesh options, requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scenario {
    /// A name that says where the scenario comes from (`walkthrough step 3`,
    /// `conformance authz.yaml: operation fields`, `generated seed 42`).
    pub name: String,
    /// The generator's seed, when the scenario was generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    pub workload: WorkloadSpec,
    #[serde(default)]
    pub mesh: MeshOptions,
    /// Kubernetes YAML, several documents separated by `---`, exactly as a user would apply it.
    pub policies: String,
    pub requests: Vec<Request>,
}

/// The workload the policies are applied to (`--namespace`, `--labels`; a selector matches these).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            namespace: "foo".into(),
            labels: BTreeMap::from([("app".to_string(), "httpbin".to_string())]),
        }
    }
}

/// The MeshConfig settings that change answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshOptions {
    /// `meshConfig.rootNamespace`.
    pub root_namespace: String,
    /// `meshConfig.pathNormalization.normalization`.
    pub path_normalization: PathNormalization,
    /// `defaultConfig.gatewayTopology.numTrustedProxies` (meshguard's `--trusted-proxies`).
    pub trusted_proxies: u32,
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            root_namespace: "istio-system".into(),
            path_normalization: PathNormalization::Base,
            trusted_proxies: 0,
        }
    }
}

/// `meshConfig.pathNormalization.normalization`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathNormalization {
    None,
    #[default]
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

impl PathNormalization {
    pub const ALL: [PathNormalization; 4] = [
        PathNormalization::None,
        PathNormalization::Base,
        PathNormalization::MergeSlashes,
        PathNormalization::DecodeAndMergeSlashes,
    ];

    /// The spelling of meshguard's `--path-normalization` and of the MeshConfig.
    pub fn as_str(self) -> &'static str {
        match self {
            PathNormalization::None => "NONE",
            PathNormalization::Base => "BASE",
            PathNormalization::MergeSlashes => "MERGE_SLASHES",
            PathNormalization::DecodeAndMergeSlashes => "DECODE_AND_MERGE_SLASHES",
        }
    }
}

/// How the client speaks to the proxy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 written byte for byte on a TCP connection: the request-target, the header
    /// lines and their order are exactly as given (no client library tidies them).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    H2c,
}

/// One request, sent the same way to both proxies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Request {
    /// What the request aims at, e.g. `paths /admin: %2F variant`.
    pub name: String,
    #[serde(default = "default_method")]
    pub method: String,
    /// The request-target exactly as sent (HTTP/1.1) or the `:path` (HTTP/2): `/a/../b?x=1`.
    #[serde(default = "default_target")]
    pub target: String,
    /// The `Host` header (HTTP/1.1) or `:authority` (HTTP/2). `None` sends none.
    #[serde(default = "default_host")]
    pub host: Option<String>,
    /// Further header lines, in order; a name may repeat. Tokens are sent here
    /// (`authorization: Bearer …`, a custom header, a `cookie`), or in `target`'s query.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The client's address, in `127.0.0.0/8`.
    #[serde(default = "default_source_ip")]
    pub source_ip: Ipv4Addr,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub protocol: Protocol,
}

fn default_method() -> String {
    "GET".into()
}
fn default_target() -> String {
    "/".into()
}
fn default_host() -> Option<String> {
    Some("httpbin.foo:8000".into())
}
fn default_source_ip() -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 1)
}

impl Request {
    /// `GET target` with the default host and source.
    pub fn get(name: impl Into<String>, target: impl Into<String>) -> Request {
        Request {
            name: name.into(),
            method: default_method(),
            target: target.into(),
            host: default_host(),
            headers: Vec::new(),
            source_ip: default_source_ip(),
            body: String::new(),
            protocol: Protocol::Http1,
        }
    }

    /// Adds a header line.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds `authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Request {
        self.header("authorization", format!("Bearer {token}"))
    }
}

impl Scenario {
    /// The scenario cut down to one request, as YAML: what a failure prints, and what
    /// `MESHGUARD_DIFF_REPLAY=FILE` reads back.
    pub fn replay(&self, request: usize) -> String {
        let mut one = self.clone();
        one.requests = self.requests.get(request).cloned().into_iter().collect();
        serde_saphyr::to_string(&one).unwrap_or_else(|e| format!("# cannot serialize: {e}\n"))
    }

    /// The policies with `${PORT}` replaced.
    pub fn policies_for_port(&self, port: u16) -> String {
        self.policies.replace(PORT_PLACEHOLDER, &port.to_string())
    }
}

/// `text` cut before each `---` line: each piece is one document (or several, or none).
pub fn yaml_documents(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let is_marker = line.starts_with("---")
            && line[3..]
                .chars()
                .next()
                .is_none_or(|c| c.is_ascii_whitespace());
        if is_marker && at > start {
            out.push(&text[start..at]);
            start = at;
        }
        at += line.len();
    }
    if at > start {
        out.push(&text[start..at]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_markers_so_any_can_be_left_out() {
        let text = "a: 1\n---\nb: 2\n--- # c\nc: 3\n";
        let docs = yaml_documents(text);
        assert_eq!(docs, ["a: 1\n", "---\nb: 2\n", "--- # c\nc: 3\n"]);
        assert_eq!(docs.concat(), text);
        let without_first: String = docs[1..].concat();
        let values: Vec<serde_json::Value> = serde_saphyr::from_multiple(&without_first).unwrap();
        assert_eq!(values.len(), 2);
    }
}
