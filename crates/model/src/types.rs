//! The Istio resource types, field for field as the CRDs spell them.
//!
//! These are plain data: no matching, no defaults beyond what the CRD says. Unknown fields are
//! rejected (`deny_unknown_fields`) so that a typo such as `requestPrincipal` is an error that
//! names the field instead of a silently wider policy. `Option<Vec<_>>` is used wherever Istio
//! gives an absent list and an empty list different meanings (`rules`, `from`, `to`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a resource came from: the file and the document's position in it (0-based, counting
/// `kind: List` items as their own documents), or, for an object read from the Kubernetes API
/// server, that object ([`Origin::object`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// The file; empty for an object read from the API server.
    pub file: PathBuf,
    /// The document in the file; 0 for an object read from the API server.
    pub document: usize,
    /// The object, when the resource was read from the Kubernetes API server: messages then
    /// name `namespace/name` and its `resourceVersion` instead of a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRef>,
}

impl Origin {
    /// Document `document` of `file`.
    pub fn file(file: impl Into<PathBuf>, document: usize) -> Origin {
        Origin {
            file: file.into(),
            document,
            object: None,
        }
    }

    /// An object read from the Kubernetes API server.
    pub fn object(object: ObjectRef) -> Origin {
        Origin {
            file: PathBuf::new(),
            document: 0,
            object: Some(object),
        }
    }
}

/// One version of an object read from the Kubernetes API server.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
    /// `metadata.resourceVersion`: which version of the object this is.
    pub resource_version: String,
}

impl ObjectRef {
    /// `namespace/name`, the way Istio names a resource in messages.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl std::fmt::Display for ObjectRef {
    /// `namespace/name (resourceVersion 1234)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} (resourceVersion {})",
            self.namespace, self.name, self.resource_version
        )
    }
}

/// The part of `metadata` meshguard reads. Everything else in `metadata` is accepted and ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Metadata {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A loaded resource: its identity, where it came from and its spec.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Resource<S> {
    pub api_version: String,
    pub name: String,
    /// Always set after loading: the document's `metadata.namespace`, or the default namespace
    /// given to the loader (as `kubectl apply -n` does).
    pub namespace: String,
    pub annotations: BTreeMap<String, String>,
    pub origin: Origin,
    pub spec: S,
}

impl<S> Resource<S> {
    /// `namespace/name`, the way Istio names a resource in messages.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// `istio.io/api/type/v1beta1.WorkloadSelector`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// `istio.io/api/type/v1beta1.PolicyTargetReference`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyTargetReference {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
}

/// `RequestAuthentication.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestAuthenticationSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default)]
    pub jwt_rules: Vec<JwtRule>,
}

/// `JWTRule`: one issuer's token locations, keys and side effects.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtRule {
    #[serde(default)]
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default, alias = "jwks_uri")]
    pub jwks_uri: String,
    #[serde(default)]
    pub jwks: String,
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default)]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    #[serde(default)]
    pub output_payload_to_header: String,
    #[serde(default)]
    pub forward_original_token: bool,
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// A Go/protobuf duration string such as `5s` or `1.5s`; see [`crate::parse_duration`].
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub space_delimited_claims: Vec<String>,
    #[serde(default)]
    pub presence: Option<Presence>,
}

/// `JWTHeader`: a header to read a token from, with an optional prefix such as `Bearer `.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtHeader {
    pub name: String,
    #[serde(default)]
    pub prefix: String,
}

/// `ClaimToHeader`: copy a (dot-path) claim into a request header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

/// `JWTRule.presence`: whether a request without a token is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Presence {
    Optional,
    Required,
}

/// `AuthorizationPolicy.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default)]
    pub action: Action,
    #[serde(default)]
    pub provider: Option<ExtensionProvider>,
    /// Absent (`None`) and `[]` both mean "no rules" (the policy never matches); `[{}]` matches
    /// everything. A `null` entry is kept as `None` so validation can point at it.
    #[serde(default)]
    pub rules: Option<Vec<Option<Rule>>>,
}

/// `AuthorizationPolicy.Action`. Istio's default (enum value 0) is ALLOW.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Audit,
    Custom,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
            Action::Custom => "CUSTOM",
        }
    }
}

/// `AuthorizationPolicy.ExtensionProvider`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionProvider {
    #[serde(default)]
    pub name: String,
}

/// `Rule`: `to` AND `from` AND every `when`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub from: Option<Vec<Option<RuleFrom>>>,
    #[serde(default)]
    pub to: Option<Vec<Option<RuleTo>>>,
    #[serde(default)]
    pub when: Option<Vec<Option<Condition>>>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFrom {
    #[serde(default)]
    pub source: Option<Source>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTo {
    #[serde(default)]
    pub operation: Option<Operation>,
}

/// `Source`: who sent the request. Every field is optional; set fields are ANDed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Source {
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    #[serde(default)]
    pub request_principals: Vec<String>,
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    #[serde(default)]
    pub service_accounts: Vec<String>,
    #[serde(default)]
    pub not_service_accounts: Vec<String>,
    #[serde(default)]
    pub trust_domains: Vec<String>,
    #[serde(default)]
    pub not_trust_domains: Vec<String>,
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_remote_ip_blocks: Vec<String>,
}

/// `Operation`: what the request does. Every field is optional; set fields are ANDed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Operation {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub not_hosts: Vec<String>,
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub not_ports: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub not_methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub not_paths: Vec<String>,
}

/// `Condition`: one `when` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Condition {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub not_values: Vec<String>,
}
