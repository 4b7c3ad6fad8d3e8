//! Istio's `MeshConfig`: the parts meshguard reads (root namespace, path normalization,
//! trusted proxies, extension providers), from a bare MeshConfig file or the `istio`
//! ConfigMap that holds one; and `meshConfig.pathNormalization` as a type.
//!
//! Plain data and its parsing: what the settings do is for the crates that use them.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

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

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ExtensionProvider {
    #[serde(default)]
    pub name: String,
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
}
