//! `meshguard validate`: Istio's validation of both kinds, plus warnings users need.
//!
//! Owns the flags, the output (text or JSON) and the exit codes: 0 valid (warnings allowed),
//! 3 invalid, 1 when the files (or the API server, with `--kubernetes`) cannot be read at
//! all. The rules live in `meshguard_policy::validate`.

use std::path::PathBuf;

use clap::Args;
use meshguard_model::{
    LoadError, LoadOptions, PolicySet, Workload, load_paths, parse_labels, summarize,
};
use meshguard_policy::validate::{Finding, Severity, validate};
use serde::Serialize;

use crate::{CliError, OutputFormat};

#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  meshguard validate examples/
  # also warn about selectors that do not select this workload
  meshguard validate policies/ --namespace foo --labels app=httpbin
  meshguard validate policies/ --output json
  # every RequestAuthentication and AuthorizationPolicy in the cluster (or one namespace)
  meshguard validate --kubernetes
  meshguard validate --kubernetes --kubeconfig ~/.kube/config --namespace foo

Errors are what Istio (its CRD schema and istiod's webhook) would refuse, and what meshguard
refuses to load. Warnings are policies that load but will surprise: issuers no
RequestAuthentication configures, ALLOW policies that allow nothing, hosts without a port
variant, subjects containing '/', mTLS-only fields, selectors that select nothing, files
skipped in directories, paths without resources, and (with --namespace/--labels) a workload
that none of the resources applies to, or that RequestAuthentications apply to but no
AuthorizationPolicy (then no token is required).

Exit status: 0 valid (warnings allowed), 3 invalid, 1 unreadable files or bad flags.")]
pub struct ValidateArgs {
    /// Files or directories of Kubernetes YAML. Or --kubernetes.
    #[arg(required_unless_present = "kubernetes", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Validate the RequestAuthentications and AuthorizationPolicies stored in the
    /// Kubernetes API server: in every namespace, or in --namespace.
    #[arg(long, conflicts_with = "paths")]
    pub kubernetes: bool,
    /// The kubeconfig to use [default: $KUBECONFIG, then ~/.kube/config, then the in-cluster
    /// service account].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of resources that set none (with --kubernetes: the namespace to read,
    /// every one without it); with --labels, the workload to check selectors against.
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// The workload's labels: warn about selectors in its namespace that do not select it.
    #[arg(long, short = 'l', value_name = "k=v,k=v")]
    pub labels: Option<String>,
    /// Istio's root namespace.
    #[arg(long, default_value = meshguard_model::DEFAULT_ROOT_NAMESPACE, value_name = "NS")]
    pub root_namespace: String,
    /// An Istio MeshConfig YAML: its ext_authz providers are checked, and a CUSTOM policy
    /// naming a provider it does not define is reported (its matching requests are denied).
    #[arg(long, value_name = "FILE")]
    pub mesh_config: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', default_value = "text", value_name = "FORMAT")]
    pub output: OutputFormat,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    valid: bool,
    errors: usize,
    warnings: usize,
    resources: usize,
    files: usize,
    findings: &'a [Finding],
}

pub fn run(args: ValidateArgs) -> Result<i32, CliError> {
    if args.kubeconfig.is_some() && !args.kubernetes {
        return Err(CliError::Usage(
            "--kubeconfig reads from the Kubernetes API server: it needs --kubernetes".into(),
        ));
    }
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let labels = match &args.labels {
        Some(l) => Some(parse_labels(l).map_err(|e| CliError::Usage(format!("--labels: {e}")))?),
        None => None,
    };
    // Selector warnings need the labels; "nothing applies" needs only a workload to be named.
    let workload = labels.as_ref().map(|labels| {
        Workload::new(namespace.clone(), labels.clone())
            .with_root_namespace(args.root_namespace.clone())
    });
    let named_workload = (args.namespace.is_some() || args.labels.is_some()).then(|| {
        Workload::new(namespace.clone(), labels.clone().unwrap_or_default())
            .with_root_namespace(args.root_namespace.clone())
    });
    let opts = LoadOptions {
        default_namespace: namespace,
    };
    if args.kubernetes {
        let (set, load_errors, server) = from_kubernetes(&args)?;
        return report(
            &args,
            set,
            load_errors,
            named_workload.as_ref(),
            workload.as_ref(),
            &format!("the Kubernetes API server {server}"),
            Some(&server),
        );
    }
    // A set that does not decode whole is still validated as far as it decodes: every error
    // of every file at once, not the first file's only.
    let (set, load_errors) = match load_paths(&args.paths, &opts) {
        Ok(set) => (set, Vec::new()),
        Err(failure) => {
            // Files that cannot be read at all are a usage problem, not invalid policies.
            if let Some(io) = failure
                .errors
                .0
                .iter()
                .find(|e| e.document.is_none() && e.message.starts_with("cannot read"))
            {
                return Err(CliError::Usage(io.to_string()));
            }
            (*failure.partial, failure.errors.0)
        }
    };
    let from = format!("{} file(s)", set.files.len());
    report(
        &args,
        set,
        load_errors,
        named_workload.as_ref(),
        workload.as_ref(),
        &from,
        None,
    )
}

/// Every RequestAuthentication and AuthorizationPolicy in --namespace (or every namespace),
/// decoded as the documents of files are, the problems of those that do not decode, and the
/// API server's URL.
#[cfg(feature = "kubernetes")]
fn from_kubernetes(args: &ValidateArgs) -> Result<(PolicySet, Vec<LoadError>, String), CliError> {
    crate::proxy::runtime()?.block_on(async {
        let connection = crate::kubernetes::connect(args.kubeconfig.as_deref()).await?;
        let (set, errors) =
            crate::kubernetes::read_for_validation(&connection, args.namespace.as_deref()).await?;
        Ok((set, errors, connection.server))
    })
}

#[cfg(not(feature = "kubernetes"))]
fn from_kubernetes(_: &ValidateArgs) -> Result<(PolicySet, Vec<LoadError>, String), CliError> {
    Err(crate::kubernetes::unavailable())
}

/// The findings for `set` (and the problems of what did not decode), printed; the exit code.
/// `from`: where the resources were read, for the verdict line; `server`: the API server's
/// URL, for `--kubernetes`.
fn report(
    args: &ValidateArgs,
    set: PolicySet,
    load_errors: Vec<LoadError>,
    named_workload: Option<&Workload>,
    workload: Option<&Workload>,
    from: &str,
    server: Option<&str>,
) -> Result<i32, CliError> {
    let mut findings: Vec<Finding> = load_errors.iter().map(Finding::from_error).collect();
    findings.extend(validate(&set, &args.root_namespace, workload));
    if let Some(file) = &args.mesh_config {
        findings.extend(undefined_providers(&set, file)?);
    }
    // File and document order (stable: a document's findings keep theirs). Objects read from
    // the API server are in the order they were listed.
    let file_names: Vec<String> = set.files.iter().map(|f| f.display().to_string()).collect();
    findings.sort_by_cached_key(|f| (file_names.iter().position(|n| *n == f.file), f.document));
    findings.extend(loading_warnings(
        &args.paths,
        server,
        &set,
        &load_errors,
        named_workload,
    ));
    let resources = set.request_authentications.len()
        + set.authorization_policies.len()
        + set.peer_authentications.len();
    let files = set.files.len();
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    match args.output {
        OutputFormat::Json => {
            let report = Report {
                valid: errors == 0,
                errors,
                warnings,
                resources,
                files,
                findings: &findings,
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&report)
                    .map_err(|e| CliError::Internal(e.to_string()))?
            );
        }
        OutputFormat::Text => {
            for f in &findings {
                println!("{f}");
            }
            let verdict = if errors == 0 { "valid" } else { "invalid" };
            println!(
                "{verdict}: {errors} error(s), {warnings} warning(s) in {resources} resource(s) from {from}"
            );
        }
    }
    Ok(if errors == 0 { 0 } else { 3 })
}

/// CUSTOM policies naming a provider the mesh config does not define (or defines as something
/// other than an ext_authz service): Istio accepts them, and denies every request their rules
/// match (meshguard's proxy does the same).
fn undefined_providers(set: &PolicySet, mesh: &std::path::Path) -> Result<Vec<Finding>, CliError> {
    let providers = meshguard_model::MeshConfig::load(mesh)
        .and_then(|m| m.ext_authz_providers(mesh))
        .map_err(CliError::Usage)?;
    let mut out = Vec::new();
    for p in &set.authorization_policies {
        if p.spec.action != meshguard_model::Action::Custom {
            continue;
        }
        let Some(name) = p.spec.provider.as_ref().map(|x| x.name.as_str()) else {
            continue;
        };
        if providers.iter().any(|d| d.name == name) {
            continue;
        }
        let defined: Vec<&str> = providers.iter().map(|d| d.name.as_str()).collect();
        out.push(Finding {
            severity: Severity::Warning,
            file: p.origin.file.display().to_string(),
            document: Some(p.origin.document),
            resource: Some(format!("AuthorizationPolicy {}/{}", p.namespace, p.name)),
            field: Some("spec.provider.name".into()),
            value: Some(name.to_string()),
            message: format!(
                "no ext_authz provider {name:?} in {} (defined: {defined:?}): every request this policy's rules match is denied (403)",
                mesh.display()
            ),
            object: p.origin.object.clone(),
        });
    }
    Ok(out)
}

fn warning(file: String, message: String) -> Finding {
    Finding {
        severity: Severity::Warning,
        file,
        document: None,
        resource: None,
        field: None,
        value: None,
        message,
        object: None,
    }
}

/// Warnings about what was loaded rather than about one resource: files skipped in
/// directories, paths that hold no resource, a workload that nothing applies to, and one that
/// RequestAuthentications apply to but no AuthorizationPolicy (no token is required). Each of
/// them, left unnoticed, starts a proxy that enforces less than intended (or nothing).
///
/// With `load_errors`, the set is what decoded: a path whose files have errors is not said to
/// hold no resources, and "nothing applies" is not claimed of a set that is partly unknown.
fn loading_warnings(
    paths: &[PathBuf],
    server: Option<&str>,
    set: &PolicySet,
    load_errors: &[LoadError],
    workload: Option<&Workload>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in &set.skipped_files {
        out.push(warning(
            s.path.display().to_string(),
            format!("skipped: {}", s.reason.as_str()),
        ));
    }
    let origins = set
        .request_authentications
        .iter()
        .map(|r| &r.origin.file)
        .chain(set.authorization_policies.iter().map(|r| &r.origin.file))
        .chain(set.peer_authentications.iter().map(|r| &r.origin.file))
        .chain(load_errors.iter().map(|e| &e.file));
    let origins: Vec<&PathBuf> = origins.collect();
    for path in paths {
        if !origins.iter().any(|f| f.starts_with(path)) {
            out.push(warning(
                path.display().to_string(),
                format!(
                    "no resources found in {} (no RequestAuthentication or AuthorizationPolicy): a proxy started on it enforces nothing",
                    path.display()
                ),
            ));
        }
    }
    // Where the resources were read: the paths, or the API server.
    let location = if paths.is_empty() {
        server.unwrap_or_default().to_string()
    } else {
        let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        paths.join(" ")
    };
    if let Some(w) = workload.filter(|_| load_errors.is_empty()) {
        let summary = summarize(set, w);
        if summary.nothing_applies() {
            // The reasons are the proxy's start-up warning lines, word for word.
            out.push(warning(
                location.clone(),
                format!(
                    "none of the {} resource(s) applies to the workload (namespace {}, labels {{{}}}): a proxy started with these flags enforces nothing; {}",
                    summary.resources.len(),
                    w.namespace,
                    w.labels_text(),
                    summary.why_nothing_applies().join("; ")
                ),
            ));
        } else if summary.no_authorization_policy_applies() {
            // The proxy's start-up warning, then why each AuthorizationPolicy does not apply.
            let mut message = summary.no_authorization_policy_warning();
            for why in summary.why_no_authorization_policy_applies() {
                message.push_str("; ");
                message.push_str(&why);
            }
            out.push(warning(location.clone(), message));
        }
    }
    out
}
