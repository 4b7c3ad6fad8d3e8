//! `meshguard ext-authz`: meshguard as the external authorizer of Envoy's `ext_authz` filter
//! (an Istio extension provider), deciding with the same policies and runtime as the proxy.
//!
//! Owns the flags and where the policies and the workload come from (files or the Kubernetes
//! API server, `--namespace/--labels`). The server is `meshguard-extauthz`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use meshguard_engine::PathNormalization;
use meshguard_model::parse_labels;
use meshguard_proxy::Limits;
use meshguard_runtime::RuntimeConfig;

use crate::CliError;
use crate::kubernetes::{self, KubeArgs};
use crate::proxy::{duration, listen_addr, proxy_runtime};

#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  # Envoy's ext_authz filter (grpc_service, h2c) asks on 9191; the HTTP variant on 9192:
  meshguard ext-authz --policies examples/step4-require-claim --namespace foo --labels app=httpbin \\
      --grpc-listen 127.0.0.1:9191 --http-listen 127.0.0.1:9192
  # Policies watched on the Kubernetes API server, for the workload foo/app=httpbin:
  meshguard ext-authz --kubernetes -n foo -l app=httpbin --grpc-listen :9191

Allowed: OK with the header changes meshguard's proxy would make (claim and payload headers to
set; the token header to remove unless forwardOriginalToken). Denied: Envoy's own status, body
and www-authenticate (401 `Jwt is missing`, 403 `RBAC: access denied`, ...). The HTTP variant
answers 200 (with x-envoy-auth-headers-to-remove) or the denial. docs/ext-authz.md has the
Istio extensionProviders + CUSTOM policy and the Envoy configuration.

Addresses: IP:PORT, HOST:PORT, :PORT (every interface) or PORT (127.0.0.1).
Access log: one JSON line per Check on stdout; diagnostics on stderr.")]
pub struct ExtAuthzArgs {
    /// Policy files or directories of Kubernetes YAML (repeatable). Or --kubernetes.
    #[arg(
        long,
        short = 'p',
        required_unless_present = "kubernetes",
        num_args = 1..,
        value_name = "PATH"
    )]
    pub policies: Vec<PathBuf>,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// The workload the policies are selected for: its namespace [default: default; with
    /// --kubernetes, $POD_NAMESPACE, else the kubeconfig's namespace].
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// The workload's labels, matched against `selector.matchLabels`.
    #[arg(
        long,
        short = 'l',
        default_value = "",
        value_name = "k=v,k=v",
        conflicts_with = "pod"
    )]
    pub labels: String,
    /// Envoy's gRPC ext_authz (`envoy.service.auth.v3.Authorization/Check`, h2c).
    #[arg(long, value_parser = listen_addr, value_name = "ADDR")]
    pub grpc_listen: SocketAddr,
    /// Envoy's HTTP ext_authz (`http_service`).
    #[arg(long, value_parser = listen_addr, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// The HTTP provider's `pathPrefix`, removed from the check request's path.
    #[arg(long, default_value = "", value_name = "PREFIX")]
    pub http_path_prefix: String,
    /// Admin listener (/healthz/ready, /metrics, /config_dump).
    #[arg(long, default_value = "127.0.0.1:15000", value_parser = listen_addr, value_name = "ADDR")]
    pub admin: SocketAddr,
    /// Istio's root namespace, whose policies apply to every workload.
    #[arg(long, default_value = "istio-system", value_name = "NS")]
    pub root_namespace: String,
    /// NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES [default: BASE].
    #[arg(long, value_name = "MODE")]
    pub path_normalization: Option<PathNormalization>,
    /// How often remote JWKS are fetched again.
    #[arg(long, default_value = "5m", value_parser = duration, value_name = "DURATION")]
    pub jwks_refresh_interval: Duration,
    /// How long the last good remote keys stay in use while fetches fail.
    #[arg(long, default_value = "24h", value_parser = duration, value_name = "DURATION")]
    pub jwks_max_staleness: Duration,
    /// Verified tokens to remember; 0 disables the cache.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub token_cache_size: usize,
    /// Do not reload when policy files change (SIGHUP still reloads).
    #[arg(long)]
    pub no_watch: bool,
    /// Do not write access-log lines.
    #[arg(long)]
    pub no_access_log: bool,
    /// Threads serving Checks [default: the CPUs this process may run on].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
}

/// Runs `meshguard ext-authz` until SIGTERM/SIGINT.
pub fn run(args: ExtAuthzArgs) -> Result<i32, CliError> {
    args.kube.check()?;
    let labels =
        parse_labels(&args.labels).map_err(|e| CliError::Usage(format!("--labels: {e}")))?;
    proxy_runtime(args.workers)?.block_on(async move {
        let root = args.root_namespace.clone();
        let (policies, workload, watched) = kubernetes::policy_source(
            &args.kube,
            &args.policies,
            args.namespace.as_deref(),
            labels,
            root,
        )
        .await?;
        let config = meshguard_extauthz::ExtAuthzConfig {
            runtime: RuntimeConfig {
                policies,
                workload,
                path_normalization: args.path_normalization.unwrap_or_default(),
                token_cache: args.token_cache_size,
                jwks: meshguard_jwks::JwksSettings {
                    refresh_interval: args.jwks_refresh_interval,
                    max_staleness: args.jwks_max_staleness,
                    ..Default::default()
                },
            },
            grpc_listen: args.grpc_listen,
            http_listen: args.http_listen,
            http_path_prefix: args.http_path_prefix.clone(),
            admin: args.admin,
            limits: Limits::default(),
            watch: !args.no_watch,
            access_log: !args.no_access_log,
        };
        let running = meshguard_extauthz::start(config, meshguard_proxy::shutdown_signal())
            .await
            .map_err(|e| match e {
                meshguard_proxy::StartError::Policies(errs) => CliError::Policies(errs),
                other => CliError::Usage(other.to_string()),
            })?;
        if let Some(start) = watched {
            start(running.state.clone(), running.metrics.clone());
        }
        meshguard_runtime::reload::log_loaded(&running.state);
        let http = running
            .http
            .map(|a| format!(", HTTP on http://{a}"))
            .unwrap_or_default();
        eprintln!(
            "meshguard: ext_authz gRPC on {}{http}, admin on http://{}",
            running.grpc, running.admin
        );
        running.wait().await;
        eprintln!("meshguard: stopped");
        Ok(0)
    })
}
