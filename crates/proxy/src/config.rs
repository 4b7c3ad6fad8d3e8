//! Proxy settings: flags, the Istio `MeshConfig` file, and their defaults.
//!
//! Owns the settings that do not come from policies (addresses, limits, timeouts, mesh
//! settings) and reading a `MeshConfig`-shaped YAML file. Does not own the policies themselves
//! ([`crate::state`] loads those).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshguard_engine::PathNormalization;
use meshguard_model::Workload;
use serde::Deserialize;

/// Bounds on what one client may cost.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request head (request line and headers) accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// How long a client may take to send its request head.
    pub header_read_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Time to establish an upstream connection.
    pub upstream_connect_timeout: Duration,
    /// Time from the end of the request (its last body byte sent upstream) to the upstream's
    /// response head; also the longest wait for a free upstream connection.
    pub upstream_timeout: Duration,
    /// Upstream connections open at once (Envoy's circuit breaker `max_connections`); as many
    /// requests again may wait for one, further ones get 503 at once.
    pub max_upstream_connections: usize,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 60 * 1024,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(15),
            max_upstream_connections: 1024,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything `meshguard proxy` runs with.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub policies: Vec<PathBuf>,
    pub workload: Workload,
    pub listen: SocketAddr,
    /// `None`: the built-in echo upstream.
    pub upstream: Option<http::Uri>,
    pub admin: SocketAddr,
    pub path_normalization: PathNormalization,
    /// `X-Forwarded-For` hops to trust when deciding `remote.ip`.
    pub trusted_proxies: usize,
    pub limits: Limits,
    /// Reload when a policy file changes (SIGHUP always reloads).
    pub watch: bool,
    /// One JSON line per request on stdout.
    pub access_log: bool,
    /// Verified tokens remembered (docs/decisions.md, decision 9); 0 disables the cache.
    pub token_cache: usize,
    /// Remote JWKS fetching: refresh, staleness, extra CA.
    pub jwks: meshguard_jwks::JwksSettings,
}

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
