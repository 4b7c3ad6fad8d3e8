//! The command line's side of the Kubernetes source (`--kubernetes`): its flags, the
//! workload's namespace and labels when read from Kubernetes, and what `proxy`, `check` and
//! `validate` read from the API server.
//!
//! Owns the flags shared by the commands and turning them into a `meshguard_kube` client,
//! source or one-shot read. Built without the cargo feature `kubernetes`, the flags still
//! parse and `--kubernetes` is refused with a message that says so.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::CliError;

/// Which namespaces the Kubernetes source reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// The workload's namespace and the root namespace (a Role in each is enough).
    #[default]
    Namespaces,
    /// Every namespace (needs a ClusterRole): for a gateway, or to see every object.
    Cluster,
}

/// Where the policies come from and the workload they are selected for: the flags `proxy`,
/// `check` and `ext-authz` share.
#[derive(Clone, Debug, Args)]
pub struct SourceArgs {
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
    /// The workload's namespace; also the namespace of resources that do not set one
    /// [default: default; with --kubernetes, $POD_NAMESPACE, else the kubeconfig's namespace].
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
}

impl SourceArgs {
    /// `--labels`, parsed.
    pub fn labels(&self) -> Result<BTreeMap<String, String>, CliError> {
        meshguard_model::parse_labels(&self.labels)
            .map_err(|e| CliError::Usage(format!("--labels: {e}")))
    }
}

/// The flags of the Kubernetes source (part of [`SourceArgs`]).
#[derive(Clone, Debug, Args)]
pub struct KubeArgs {
    /// Read the policies from the Kubernetes API server (RequestAuthentication,
    /// AuthorizationPolicy and PeerAuthentication of security.istio.io, in the workload's
    /// namespace and the root namespace) instead of --policies; the proxy watches them and
    /// applies each change.
    #[arg(long, conflicts_with = "policies")]
    pub kubernetes: bool,
    /// The kubeconfig to use [default: $KUBECONFIG, then ~/.kube/config, then the in-cluster
    /// service account].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// `namespaces`: watch the workload's namespace and the root namespace (least privilege:
    /// a Role in each); `cluster`: watch every namespace (needs a ClusterRole; for a gateway)
    /// [default: namespaces].
    #[arg(long, value_name = "SCOPE", value_enum)]
    pub kubernetes_scope: Option<ScopeArg>,
    /// Process only objects without the `istio.io/rev` label or with this value, as an istiod
    /// of this revision does [default: every object].
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// The workload's Pod: its labels are the workload's, followed as they change (needs
    /// `get`, `list`, `watch` on pods). Without NAME, `$POD_NAME`; the namespace is
    /// --namespace, else `$POD_NAMESPACE`.
    #[arg(long, value_name = "NAME", num_args = 0..=1)]
    pub pod: Option<Option<String>>,
}

impl KubeArgs {
    /// Refuses the Kubernetes flags without `--kubernetes` (clap's `requires` is satisfied by
    /// a flag's default value, so it cannot say this).
    pub fn check(&self) -> Result<(), CliError> {
        if self.kubernetes {
            return Ok(());
        }
        for (flag, given) in [
            ("--kubeconfig", self.kubeconfig.is_some()),
            ("--kubernetes-scope", self.kubernetes_scope.is_some()),
            ("--revision", self.revision.is_some()),
            ("--pod", self.pod.is_some()),
        ] {
            if given {
                return Err(CliError::Usage(format!(
                    "{flag} reads from the Kubernetes API server: it needs --kubernetes"
                )));
            }
        }
        Ok(())
    }
}

/// Reads `--labels-file` (the downward API's labels file); the error names the file.
pub fn labels_file(path: &std::path::Path) -> Result<BTreeMap<String, String>, CliError> {
    meshguard_runtime::reload::read_labels_file(path)
        .map_err(|e| CliError::Usage(format!("--labels-file: {e}")))
}

/// Starts a watched source once the front end's policy state exists.
pub type Starter = Box<
    dyn FnOnce(
            std::sync::Arc<meshguard_runtime::PolicyState>,
            std::sync::Arc<meshguard_runtime::Metrics>,
        ) + Send,
>;

/// The policy source, the workload it is read for, and what starts a watched source.
pub type Sourced = (
    meshguard_runtime::PolicySource,
    meshguard_model::Workload,
    Option<Starter>,
);

/// Where a front end's policies come from, the one place `proxy` and `ext-authz` decide it:
/// the `--policies` files, or with `--kubernetes` the API server (the workload's namespace
/// then defaults to `$POD_NAMESPACE` or the kubeconfig's), and for a watched source what
/// starts its watches once the state exists.
pub async fn policy_source(
    source: &SourceArgs,
    labels: BTreeMap<String, String>,
    root: String,
) -> Result<Sourced, CliError> {
    let (kube, namespace) = (&source.kube, source.namespace.as_deref());
    if !kube.kubernetes {
        let workload = meshguard_model::Workload::new(namespace.unwrap_or("default"), labels)
            .with_root_namespace(root);
        return Ok((
            meshguard_runtime::PolicySource::Files(source.policies.clone()),
            workload,
            None,
        ));
    }
    watched_source(kube, namespace, labels, root).await
}

#[cfg(feature = "kubernetes")]
async fn watched_source(
    kube: &KubeArgs,
    namespace: Option<&str>,
    labels: BTreeMap<String, String>,
    root: String,
) -> Result<Sourced, CliError> {
    let pod = pod_name(&kube.pod)?;
    let connection = connect(kube.kubeconfig.as_deref()).await?;
    let namespace = self::namespace(namespace, &connection);
    let workload = meshguard_model::Workload::new(namespace, labels).with_root_namespace(root);
    let source = self::source(&connection, &workload, kube, pod);
    tracing::info!(
        "policies from the Kubernetes API server {} (configuration: {})",
        connection.server,
        connection.from
    );
    let watched = source.clone();
    let start: Starter = Box::new(move |state, metrics| {
        tokio::spawn(watched.run(state, metrics, std::future::pending()));
    });
    Ok((
        meshguard_runtime::PolicySource::Watched(source),
        workload,
        Some(start),
    ))
}

#[cfg(not(feature = "kubernetes"))]
async fn watched_source(
    _: &KubeArgs,
    _: Option<&str>,
    _: BTreeMap<String, String>,
    _: String,
) -> Result<Sourced, CliError> {
    Err(unavailable())
}

#[cfg(not(feature = "kubernetes"))]
pub fn unavailable() -> CliError {
    CliError::Usage(
        "--kubernetes: this meshguard was built without the Kubernetes source (the cargo \
         feature `kubernetes` of the meshguard crate, on by default); read the policies from \
         files with --policies"
            .into(),
    )
}

#[cfg(feature = "kubernetes")]
pub use enabled::*;

#[cfg(feature = "kubernetes")]
mod enabled {
    use std::sync::Arc;

    use meshguard_kube::kinds::{SecurityKind, WatchId, WatchKind, security_watches};
    use meshguard_kube::store::{Refusal, Store};
    use meshguard_kube::{Connection, KubeSource, Options, Scope};
    use meshguard_model::{LoadError, PolicySet, Workload, load_object};

    use super::*;

    impl KubeArgs {
        /// The scope, its default applied.
        pub fn scope(&self) -> ScopeArg {
            self.kubernetes_scope.unwrap_or_default()
        }
    }

    /// `--pod` as given: the name, `$POD_NAME` when given without one.
    pub fn pod_name(pod: &Option<Option<String>>) -> Result<Option<String>, CliError> {
        match pod {
            None => Ok(None),
            Some(Some(name)) => Ok(Some(name.clone())),
            Some(None) => match std::env::var("POD_NAME") {
                Ok(name) if !name.is_empty() => Ok(Some(name)),
                _ => Err(CliError::Usage(
                    "--pod without a name needs $POD_NAME (set it from the downward API: \
                     fieldRef metadata.name), or give the name: --pod NAME"
                        .into(),
                )),
            },
        }
    }

    impl From<ScopeArg> for Scope {
        fn from(s: ScopeArg) -> Scope {
            match s {
                ScopeArg::Namespaces => Scope::Namespaces,
                ScopeArg::Cluster => Scope::Cluster,
            }
        }
    }

    /// A client for `--kubeconfig` (or the default lookup).
    pub async fn connect(kubeconfig: Option<&std::path::Path>) -> Result<Connection, CliError> {
        meshguard_kube::connect(kubeconfig)
            .await
            .map_err(|e| CliError::Usage(e.to_string()))
    }

    /// The workload's namespace with `--kubernetes`: `--namespace`, else `$POD_NAMESPACE`, else
    /// the kubeconfig's (its context's namespace, or the in-cluster service account's).
    pub fn namespace(flag: Option<&str>, connection: &Connection) -> String {
        if let Some(ns) = flag {
            return ns.to_string();
        }
        match std::env::var("POD_NAMESPACE") {
            Ok(ns) if !ns.is_empty() => ns,
            _ => connection.client.default_namespace().to_string(),
        }
    }

    /// The source `proxy --kubernetes` watches with.
    pub fn source(
        connection: &Connection,
        workload: &Workload,
        args: &KubeArgs,
        pod: Option<String>,
    ) -> Arc<KubeSource> {
        KubeSource::new(
            connection.client.clone(),
            connection.server.clone(),
            workload,
            Options {
                scope: args.scope().into(),
                revision: args.revision.clone(),
                pod,
                ..Options::default()
            },
        )
    }

    /// The labels of Pod `namespace/name`, read once (`check --pod`).
    pub async fn pod_labels(
        connection: &Connection,
        namespace: &str,
        name: &str,
    ) -> Result<BTreeMap<String, String>, CliError> {
        let watch = WatchId {
            kind: WatchKind::Pod(name.to_string()),
            namespace: Some(namespace.to_string()),
        };
        let pods = meshguard_kube::list::list_objects(&connection.client, &watch)
            .await
            .map_err(CliError::Usage)?;
        let pod = pods.into_iter().next().ok_or_else(|| {
            CliError::Usage(format!(
                "--pod: Pod {namespace}/{name} not found on {}",
                connection.server
            ))
        })?;
        Ok(pod.metadata.labels.unwrap_or_default())
    }

    /// What `check --kubernetes` decides against: the objects of the namespaces the proxy would
    /// watch, read once, each as the proxy takes it in (invalid ones refused, their last good
    /// version unknown here, so not in effect); with a note per refused or ignored object.
    pub async fn read_once(
        connection: &Connection,
        workload: &Workload,
        args: &KubeArgs,
    ) -> Result<(PolicySet, Vec<String>), CliError> {
        let watches: Vec<WatchId> = security_watches(
            args.scope().into(),
            &workload.namespace,
            &workload.root_namespace,
        );
        let store: Store = meshguard_kube::list::list_into_store(
            &connection.client,
            &watches,
            args.revision.clone(),
        )
        .await
        .map_err(CliError::Usage)?;
        let mut notes = Vec::new();
        for e in store.entries() {
            match &e.refused {
                Some(Refusal::Invalid(errors)) => {
                    for err in errors {
                        notes.push(format!("refused (not in effect): {err}"));
                    }
                }
                Some(Refusal::OtherRevision(rev)) => notes.push(format!(
                    "ignored {} {}: istio.io/rev={rev} is another revision",
                    e.kind.as_str(),
                    e.latest.key()
                )),
                None => {}
            }
        }
        Ok((store.policy_set_for(workload), notes))
    }

    /// What `validate --kubernetes` validates: every RequestAuthentication, AuthorizationPolicy
    /// and PeerAuthentication in `namespace` (or every namespace), decoded as files' documents are,
    /// and the problems of those that do not decode.
    pub async fn read_for_validation(
        connection: &Connection,
        namespace: Option<&str>,
    ) -> Result<(PolicySet, Vec<LoadError>), CliError> {
        let mut set = PolicySet::default();
        let mut errors = Vec::new();
        for kind in SecurityKind::ALL {
            let watch = WatchId {
                kind: WatchKind::Security(kind),
                namespace: namespace.map(str::to_string),
            };
            let objects = meshguard_kube::list::list_objects(&connection.client, &watch)
                .await
                .map_err(CliError::Usage)?;
            for obj in objects {
                let object = meshguard_kube::store::object_ref(&obj);
                let value = meshguard_kube::store::object_value(kind, &obj);
                match load_object(value, object) {
                    Ok(one) => {
                        set.request_authentications
                            .extend(one.request_authentications);
                        set.authorization_policies
                            .extend(one.authorization_policies);
                        set.peer_authentications.extend(one.peer_authentications);
                    }
                    Err(failure) => errors.extend(failure.errors.0),
                }
            }
        }
        Ok((set, errors))
    }
}
