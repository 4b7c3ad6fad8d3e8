//! `meshguard ext-authz`: meshguard as the external authorizer of Envoy's `ext_authz` filter
//! (an Istio extension provider), deciding with the same policies and runtime as the proxy.
//!
//! Owns the flags and where the policies and the workload come from (files or the Kubernetes
//! API server; `--namespace/--labels`, or with `--workload-from-request` the Pod watch that
//! tells each Check's workload). The server is `meshguard-extauthz`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use meshguard_engine::PathNormalization;
use meshguard_proxy::Limits;
use meshguard_runtime::RuntimeConfig;

use crate::CliError;
use crate::kubernetes::{self, SourceArgs};
use crate::proxy::{duration, listen_addr, proxy_runtime};

#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  # Envoy's ext_authz filter (grpc_service, h2c) asks on 9191; the HTTP variant on 9192:
  meshguard ext-authz --policies examples/step4-require-claim --namespace foo --labels app=httpbin \\
      --grpc-listen 127.0.0.1:9191 --http-listen 127.0.0.1:9192
  # Policies watched on the Kubernetes API server, for the workload foo/app=httpbin:
  meshguard ext-authz --kubernetes -n foo -l app=httpbin --grpc-listen :9191
  # Every workload of namespace foo, each Check decided for the Pod its destination address is:
  meshguard ext-authz --kubernetes --workload-from-request -n foo --grpc-listen :9191
  # Every workload of the cluster (a ClusterRole on pods and the three policy kinds):
  meshguard ext-authz --kubernetes --workload-from-request --kubernetes-scope cluster --grpc-listen :9191

Which workload: --namespace/--labels (or --pod) fix one for every Check. With
--workload-from-request each Check names its own: the destination address (in a sidecar, the
Pod's IP) is looked up among the Pods meshguard watches, and that Pod's namespace and labels
select the policies, as --namespace/--labels would. When no Pod has the address, the
destination principal (spiffe://TD/ns/NS/sa/SA) gives the namespace, without labels: only
namespace-wide and root-namespace policies apply. Neither: the Check is denied, 403 `no
workload for destination IP`. Needs --kubernetes (pods get/list/watch) and the gRPC variant.

Allowed: OK with the header changes meshguard's proxy would make (claim and payload headers to
set; the token header to remove unless forwardOriginalToken). Denied: Envoy's own status, body
and www-authenticate (401 `Jwt is missing`, 403 `RBAC: access denied`, ...). The HTTP variant
answers 200 (with x-envoy-auth-headers-to-remove) or the denial. docs/ext-authz.md has the
Istio extensionProviders + CUSTOM policy and the Envoy configuration.

Addresses: IP:PORT, HOST:PORT, :PORT (every interface) or PORT (127.0.0.1).
Access log: one JSON line per Check on stdout; diagnostics on stderr.")]
pub struct ExtAuthzArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Decide each Check for the workload it is addressed to: the Pod whose IP is the
    /// destination address (a Pod watch; needs --kubernetes), else the destination principal's
    /// namespace without labels. --namespace then names the namespace served (with
    /// --kubernetes-scope cluster: every namespace).
    #[arg(long, conflicts_with_all = ["labels", "pod", "http_listen"])]
    pub workload_from_request: bool,
    /// With --workload-from-request: compiled workloads (distinct namespace and labels) kept;
    /// the least recently used goes first.
    #[arg(long, default_value_t = 1024, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub workload_cache_size: u32,
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
    args.source.kube.check()?;
    let labels = args.source.labels()?;
    if args.workload_from_request && !args.source.kube.kubernetes {
        return Err(CliError::Usage(
            "--workload-from-request finds each Check's workload through a Pod watch: it needs \
             --kubernetes (policy files give one workload: --namespace and --labels)"
                .into(),
        ));
    }
    proxy_runtime(args.workers)?.block_on(async move {
        let root = args.root_namespace.clone();
        let (policies, workload, watched, workloads) = if args.workload_from_request {
            per_request_source(&args, root).await?
        } else {
            let (policies, workload, watched) =
                kubernetes::policy_source(&args.source, labels, root).await?;
            (
                policies,
                workload,
                watched,
                meshguard_extauthz::WorkloadMode::Fixed,
            )
        };
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
            workloads,
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

/// What `--workload-from-request` runs on: the Kubernetes source with its Pod watch, the
/// served namespace as the runtime's own workload (no labels: `/config_dump` and the start-up
/// lines show what applies namespace-wide), and the directory the Checks look up.
#[cfg(feature = "kubernetes")]
async fn per_request_source(
    args: &ExtAuthzArgs,
    root: String,
) -> Result<
    (
        meshguard_runtime::PolicySource,
        meshguard_model::Workload,
        Option<kubernetes::Starter>,
        meshguard_extauthz::WorkloadMode,
    ),
    CliError,
> {
    use std::sync::Arc;

    let connection = kubernetes::connect(args.source.kube.kubeconfig.as_deref()).await?;
    let namespace = kubernetes::namespace(args.source.namespace.as_deref(), &connection);
    let workload = meshguard_model::Workload::new(namespace.clone(), Default::default())
        .with_root_namespace(root.clone());
    let scope: meshguard_kube::Scope = args.source.kube.scope().into();
    let source = meshguard_kube::KubeSource::new(
        connection.client.clone(),
        connection.server.clone(),
        &workload,
        meshguard_kube::Options {
            scope,
            revision: args.source.kube.revision.clone(),
            pods: true,
            ..meshguard_kube::Options::default()
        },
    );
    let served = match scope {
        meshguard_kube::Scope::Namespaces => format!("namespace {namespace}"),
        meshguard_kube::Scope::Cluster => "every namespace".to_string(),
    };
    tracing::info!(
        "policies and Pods from the Kubernetes API server {} (configuration: {}); a workload per Check, in {served}",
        connection.server,
        connection.from
    );
    let directory = Arc::new(KubeDirectory {
        pods: source.pods(),
        source: source.clone(),
        served: match scope {
            meshguard_kube::Scope::Namespaces => Some((namespace, root)),
            meshguard_kube::Scope::Cluster => None,
        },
    });
    let watched = source.clone();
    let start: kubernetes::Starter = Box::new(move |state, metrics| {
        tokio::spawn(watched.run(state, metrics, std::future::pending()));
    });
    Ok((
        meshguard_runtime::PolicySource::Watched(source),
        workload,
        Some(start),
        meshguard_extauthz::WorkloadMode::PerRequest {
            directory,
            cache: usize::try_from(args.workload_cache_size).unwrap_or(usize::MAX),
        },
    ))
}

#[cfg(not(feature = "kubernetes"))]
async fn per_request_source(
    _: &ExtAuthzArgs,
    _: String,
) -> Result<
    (
        meshguard_runtime::PolicySource,
        meshguard_model::Workload,
        Option<kubernetes::Starter>,
        meshguard_extauthz::WorkloadMode,
    ),
    CliError,
> {
    Err(kubernetes::unavailable())
}

/// The Kubernetes source as the Checks' directory: Pods by IP from its Pod watch, policies
/// from its store.
#[cfg(feature = "kubernetes")]
#[derive(Debug)]
struct KubeDirectory {
    source: std::sync::Arc<meshguard_kube::KubeSource>,
    pods: std::sync::Arc<meshguard_kube::pods::PodIndex>,
    /// The namespace served and the root namespace; `None`: every namespace.
    served: Option<(String, String)>,
}

#[cfg(feature = "kubernetes")]
impl meshguard_extauthz::workload::Directory for KubeDirectory {
    fn pod_by_ip(&self, ip: std::net::IpAddr) -> meshguard_extauthz::workload::PodLookup {
        use meshguard_extauthz::workload::PodLookup;
        use meshguard_kube::pods::PodMatch;
        match self.pods.by_ip(ip) {
            PodMatch::One(r) => PodLookup::One {
                namespace: r.namespace,
                name: r.name,
                labels: r.labels,
            },
            PodMatch::None => PodLookup::None,
            PodMatch::Many(pods) => PodLookup::Many(pods),
        }
    }

    fn policy_set_for(&self, workload: &meshguard_model::Workload) -> meshguard_model::PolicySet {
        self.source.policy_set_for(workload)
    }

    fn serves(&self, namespace: &str) -> bool {
        self.served
            .as_ref()
            .is_none_or(|(ns, root)| namespace == ns || namespace == root)
    }
}
