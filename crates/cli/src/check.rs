//! `meshguard check`: what would happen to one request, and why.
//!
//! Owns: turning flags into one request, running the engine once, and printing the outcome as
//! text or JSON (field names documented in docs/check.md and kept stable). Does not decide
//! anything itself.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;
use http::{HeaderMap, HeaderName, HeaderValue};
use meshguard_engine::{
    Custom, EvalOptions, HttpRequest, Outcome, PathNormalization, evaluate_with,
};
use meshguard_model::{LoadOptions, PolicySet, Workload, load_paths, summarize};
use serde::Serialize;

use crate::kubernetes::SourceArgs;
use crate::{CliError, OutputFormat};

#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  # The seed walkthrough, step 3: a request without a token is refused
  meshguard check --policies examples/step3-require-jwt --namespace foo --labels app=httpbin

  # The same request with Istio's demo token (read from a file with @)
  meshguard check --policies examples/step3-require-jwt --namespace foo --labels app=httpbin \\
      --token @testdata/istio-demo/demo.jwt

  # Machine-readable output
  meshguard check --policies examples/ --namespace foo --labels app=httpbin --path /admin --output json

  # Against the cluster's policies, as the proxy would read them now (one list, no watch)
  meshguard check --kubernetes --namespace foo --labels app=httpbin --token @demo.jwt
  # The labels of a running Pod
  meshguard check --kubernetes --namespace foo --pod httpbin-5d8f7c9b4-x2x7q --path /admin

Exit status: 0 allowed, 2 denied (400/401/403), 1 error (bad flags or policies).")]
pub struct CheckArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Istio's root namespace, whose policies apply to every workload.
    #[arg(long, default_value = meshguard_model::DEFAULT_ROOT_NAMESPACE, value_name = "NS")]
    pub root_namespace: String,
    /// HTTP method.
    #[arg(long, short = 'X', default_value = "GET", value_name = "M")]
    pub method: String,
    /// Request path as sent, query included.
    #[arg(long, default_value = "/", value_name = "P")]
    pub path: String,
    /// The Host / :authority header.
    #[arg(long, default_value = "localhost", value_name = "H")]
    pub host: String,
    /// A request header, `Name: value` (repeatable; repeat a name to send it twice).
    #[arg(long = "header", short = 'H', value_name = "'Name: value'")]
    pub headers: Vec<String>,
    /// A JWT sent as `Authorization: Bearer <T>`; `@file` reads it from a file. A leading
    /// `Bearer ` (or `Authorization: Bearer `) is removed, so a header value can be pasted.
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
    /// The client address (`source.ip`, `ipBlocks`, and `remote.ip` unless --remote-ip).
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub source_ip: IpAddr,
    /// The original client address (`remote.ip`, `remoteIpBlocks`).
    #[arg(long, value_name = "IP")]
    pub remote_ip: Option<IpAddr>,
    /// The peer's SPIFFE ID, as a client certificate proves it over mutual TLS
    /// (`principals`, `namespaces`, `source.principal`, ...), e.g.
    /// spiffe://cluster.local/ns/bar/sa/sleep. Without it the request is plaintext.
    #[arg(long, value_name = "SPIFFE_ID")]
    pub peer_principal: Option<String>,
    /// The TLS server name the client sent (`connection.sni`); needs --peer-principal.
    #[arg(long, value_name = "NAME", requires = "peer_principal")]
    pub sni: Option<String>,
    /// The port the request arrives on (`ports`, `destination.port`).
    #[arg(long, default_value_t = 8080, value_name = "PORT")]
    pub port: u16,
    /// Path normalization: NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES.
    #[arg(long, default_value = "BASE", value_name = "MODE")]
    pub path_normalization: PathNormalization,
    /// Evaluate at this Unix time (seconds) instead of now, e.g. to test expiry.
    #[arg(long, value_name = "SECONDS")]
    pub now: Option<u64>,
    /// A PEM bundle of CA certificates trusted for https JWKS, in addition to the system's.
    #[arg(long, value_name = "FILE")]
    pub jwks_ca_file: Option<PathBuf>,
    /// List every applicable rule in evaluation order, whether it matched and why not.
    #[arg(long)]
    pub explain: bool,
    /// An Istio MeshConfig YAML: its ext_authz providers (extensionProviders). A CUSTOM rule
    /// of one of them makes the answer "provider X would be asked" (exit code 3) instead of
    /// the denial a provider without a definition gets.
    #[arg(long, value_name = "FILE")]
    pub mesh_config: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', default_value = "text", value_name = "FORMAT")]
    pub output: OutputFormat,
}

/// Remote keys fetched once for this check.
#[derive(Debug, Default)]
struct FetchedKeys(
    std::collections::HashMap<meshguard_policy::RemoteKeySource, meshguard_jwt::Jwks>,
);

impl meshguard_engine::KeyStore for FetchedKeys {
    fn remote(&self, source: &meshguard_policy::RemoteKeySource) -> Option<meshguard_jwt::Jwks> {
        self.0.get(source).cloned()
    }
}

/// Fetches every remote key source once (each bounded by its rule's timeout). Returns the keys
/// and, per source that failed, a note saying why.
fn fetch_remote_keys(
    compiled: &meshguard_policy::CompiledWorkload,
    ca: Option<PathBuf>,
) -> Result<(FetchedKeys, Vec<String>), CliError> {
    let sources = compiled.remote_sources();
    if sources.is_empty() {
        return Ok((FetchedKeys::default(), Vec::new()));
    }
    let rt = crate::proxy::runtime()?;
    rt.block_on(async {
        let settings = meshguard_jwks::JwksSettings {
            extra_ca: ca,
            ..Default::default()
        };
        let manager = meshguard_jwks::JwksManager::new(settings, Default::default())
            .map_err(|e| CliError::Usage(format!("--jwks-ca-file: {e}")))?;
        let mut keys = FetchedKeys::default();
        let mut notes = Vec::new();
        for (src, timeout) in sources {
            let handle = manager.source(src, timeout);
            match handle.wait_first_fetch(timeout).await {
                Some(jwks) => {
                    keys.0.insert(src.clone(), jwks);
                }
                None => notes.push(format!("fetching keys from {src} failed")),
            }
        }
        // The reasons, from the fetchers' status.
        for st in manager.status() {
            if let Some(err) = serde_json::to_value(&st)
                .ok()
                .and_then(|v| v.get("last_error").cloned())
                .filter(|e| !e.is_null())
            {
                let msg = err
                    .get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| err.to_string());
                notes.push(format!("JWKS: {msg}"));
            }
        }
        manager.shutdown();
        Ok((keys, notes))
    })
}

/// The JSON document `check --output json` prints.
#[derive(Debug, Serialize)]
struct Report<'a> {
    allowed: bool,
    /// A CUSTOM rule of a configured provider matched: the provider's answer decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    ext_authz: Option<&'a meshguard_engine::AskProvider>,
    status: u16,
    body: Option<&'a str>,
    response_code_details: Option<&'a str>,
    www_authenticate: Option<&'a str>,
    principal: Option<&'a str>,
    request: RequestEcho<'a>,
    workload: WorkloadEcho<'a>,
    applied: &'a [String],
    skipped: Vec<String>,
    accepted_by: Option<&'a str>,
    cors_preflight: bool,
    jwt: &'a [meshguard_engine::ProviderReport],
    header_ops: &'a [meshguard_engine::HeaderOp],
    authz: &'a meshguard_engine::AuthzReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    explanation: Option<&'a [meshguard_engine::RuleExplanation]>,
}

#[derive(Debug, Serialize)]
struct RequestEcho<'a> {
    method: &'a str,
    host: &'a str,
    path: &'a str,
    normalized_path: Option<&'a str>,
    port: u16,
    source_ip: IpAddr,
    peer_principal: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct WorkloadEcho<'a> {
    namespace: &'a str,
    labels: &'a BTreeMap<String, String>,
    root_namespace: &'a str,
}

/// The token of `--token T` / `--token @FILE`. A pasted header value (`Bearer <jwt>`, or the
/// whole `Authorization: Bearer <jwt>` line) is reduced to the token, as `token decode` does;
/// anything else with whitespace in it is refused with the reason, rather than sent and
/// answered with a misleading `Found multiple Jwt tokens`. To send a malformed header on
/// purpose, `--header 'Authorization: ...'` sends it as written.
fn read_token(t: &str) -> Result<String, CliError> {
    let text = match t.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| CliError::Usage(format!("--token @{file}: cannot read: {e}")))?,
        None => t.to_string(),
    };
    let mut token = text.trim();
    if let Some(head) = token.get(..14)
        && head.eq_ignore_ascii_case("authorization:")
    {
        token = token[14..].trim_start();
    }
    if let Some(rest) = token.strip_prefix("Bearer ") {
        token = rest.trim_start();
    } else if token == "Bearer" {
        // `Bearer ` with nothing after it (its space trimmed above): no token, not the token
        // "Bearer".
        token = "";
    } else if token
        .get(..7)
        .is_some_and(|h| h.eq_ignore_ascii_case("bearer "))
    {
        return Err(CliError::Usage(format!(
            "--token: starts with {:?}; Istio takes a token only after \"Bearer \" (case-sensitive), \
             so a request with this header has no token. Give the token alone, or send the header \
             as written with --header 'Authorization: ...'",
            &token[..7]
        )));
    }
    if token.is_empty() {
        return Err(CliError::Usage("--token: the token is empty".into()));
    }
    if token.contains(char::is_whitespace) {
        return Err(CliError::Usage(
            "--token: a JWT has no whitespace, and this value has some after any leading \
             \"Bearer \"; give one token (or send a header as written with --header \
             'Authorization: ...')"
                .into(),
        ));
    }
    Ok(token.to_string())
}

fn parse_header(h: &str) -> Result<(HeaderName, HeaderValue), CliError> {
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| CliError::Usage(format!("--header {h:?}: expected 'Name: value'")))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
        CliError::Usage(format!(
            "--header {h:?}: {:?} is not a valid header name",
            name.trim()
        ))
    })?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| {
        CliError::Usage(format!(
            "--header {h:?}: the value is not a valid header value"
        ))
    })?;
    Ok((name, value))
}

/// The policies from the API server, read once, and the workload (its labels from --pod);
/// notes for objects refused or of another revision.
#[cfg(feature = "kubernetes")]
fn from_kubernetes(
    args: &CheckArgs,
    labels: std::collections::BTreeMap<String, String>,
) -> Result<(PolicySet, Workload, Vec<String>), CliError> {
    let pod = crate::kubernetes::pod_name(&args.source.kube.pod)?;
    crate::proxy::runtime()?.block_on(async {
        let connection = crate::kubernetes::connect(args.source.kube.kubeconfig.as_deref()).await?;
        let namespace = crate::kubernetes::namespace(args.source.namespace.as_deref(), &connection);
        let labels = match &pod {
            Some(name) => crate::kubernetes::pod_labels(&connection, &namespace, name).await?,
            None => labels,
        };
        let workload =
            Workload::new(namespace, labels).with_root_namespace(args.root_namespace.clone());
        let (set, notes) =
            crate::kubernetes::read_once(&connection, &workload, &args.source.kube).await?;
        Ok((set, workload, notes))
    })
}

#[cfg(not(feature = "kubernetes"))]
fn from_kubernetes(
    _: &CheckArgs,
    _: std::collections::BTreeMap<String, String>,
) -> Result<(PolicySet, Workload, Vec<String>), CliError> {
    Err(crate::kubernetes::unavailable())
}

/// Runs `check`; returns the process exit code.
pub fn run(args: CheckArgs) -> Result<i32, CliError> {
    let providers: Vec<std::sync::Arc<str>> = match &args.mesh_config {
        Some(file) => meshguard_model::MeshConfig::load(file)
            .and_then(|m| m.ext_authz_providers(file))
            .map_err(CliError::Usage)?
            .into_iter()
            .map(|p| p.name.into())
            .collect(),
        None => Vec::new(),
    };
    args.source.kube.check()?;
    let labels = args.source.labels()?;
    let (set, compiled, workload, source_notes) = if args.source.kube.kubernetes {
        let (set, workload, notes) = from_kubernetes(&args, labels)?;
        let compiled = meshguard_policy::compile(&set, &workload).map_err(CliError::Policies)?;
        (set, compiled, workload, notes)
    } else {
        let namespace = args
            .source
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let workload = Workload::new(namespace.clone(), labels)
            .with_root_namespace(args.root_namespace.clone());
        let opts = LoadOptions {
            default_namespace: namespace,
        };
        let (set, compiled) =
            meshguard_policy::compile_loaded(load_paths(&args.source.policies, &opts), &workload)
                .map_err(CliError::Policies)?;
        (set, compiled, workload, Vec::new())
    };
    // What applies, as the proxy's start-up line and `/config_dump` say it.
    let applied: Vec<String> = summarize(&set, &workload)
        .applied()
        .map(|r| format!("{} {}", r.kind.as_str(), r.key))
        .collect();

    let (remote_keys, fetch_notes) = fetch_remote_keys(&compiled, args.jwks_ca_file.clone())?;
    let mut headers = HeaderMap::new();
    for h in &args.headers {
        let (n, v) = parse_header(h)?;
        headers.append(n, v);
    }
    if let Some(t) = &args.token {
        let token = read_token(t)?;
        let v = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| CliError::Usage("--token: not a valid header value".into()))?;
        headers.append(http::header::AUTHORIZATION, v);
    }
    let now = args.now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    let req = HttpRequest {
        method: &args.method,
        path: &args.path,
        host: &args.host,
        scheme: if args.peer_principal.is_some() {
            "https"
        } else {
            "http"
        },
        headers: &mut headers,
        source_ip: Some(args.source_ip),
        remote_ip: args.remote_ip,
        destination_ip: None,
        destination_port: Some(args.port),
        sni: args.sni.as_deref(),
        peer_identity: args
            .peer_principal
            .as_deref()
            .map(meshguard_policy::PeerUris::One),
    };
    let outcome = evaluate_with(
        &compiled,
        req,
        &EvalOptions {
            path_normalization: args.path_normalization,
            now,
            keys: &remote_keys,
            explain: args.explain,
        },
        Custom {
            providers: &providers,
            after: None,
        },
    );
    let mut skipped: Vec<String> = set.skipped.iter().map(|s| s.to_string()).collect();
    skipped.extend(source_notes);
    skipped.extend(fetch_notes);
    match args.output {
        OutputFormat::Json => {
            let d = outcome.denial.as_ref();
            let report = Report {
                allowed: outcome.allowed(),
                ext_authz: outcome.ext_authz.as_ref(),
                status: outcome.status(),
                body: d.map(|d| d.reply.body.as_str()),
                response_code_details: d.map(|d| d.reply.details.as_str()),
                www_authenticate: d.and_then(|d| d.reply.www_authenticate.as_deref()),
                principal: outcome.principal.as_deref(),
                request: RequestEcho {
                    method: &args.method,
                    host: &args.host,
                    path: &args.path,
                    normalized_path: outcome.path.as_deref(),
                    port: args.port,
                    source_ip: args.source_ip,
                    peer_principal: args.peer_principal.as_deref(),
                },
                workload: WorkloadEcho {
                    namespace: &workload.namespace,
                    labels: &workload.labels,
                    root_namespace: &workload.root_namespace,
                },
                applied: &applied,
                skipped,
                accepted_by: outcome.accepted_by.as_deref(),
                cors_preflight: outcome.cors_preflight,
                jwt: &outcome.jwt,
                header_ops: &outcome.header_ops,
                authz: &outcome.authz,
                explanation: outcome.explanation.as_deref(),
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&report)
                    .map_err(|e| CliError::Internal(e.to_string()))?
            );
        }
        OutputFormat::Text => print_text(&args, &workload, &applied, &skipped, &outcome),
    }
    Ok(if outcome.ext_authz.is_some() {
        3
    } else if outcome.allowed() {
        0
    } else {
        2
    })
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        _ => "",
    }
}

fn print_text(
    args: &CheckArgs,
    workload: &Workload,
    applied: &[String],
    skipped: &[String],
    o: &Outcome,
) {
    if let Some(ask) = &o.ext_authz {
        println!(
            "CUSTOM: provider {} would be asked (rule {})",
            ask.provider, ask.policy
        );
        println!(
            "  its answer decides: a denial is the reply; an allow goes on to JWT validation, \
             DENY and ALLOW"
        );
    }
    let verdict = if o.allowed() { "ALLOWED" } else { "DENIED" };
    if o.ext_authz.is_none() {
        println!("{verdict} {} {}", o.status(), reason_phrase(o.status()));
    }
    if let Some(d) = o.denial.as_ref().filter(|_| o.ext_authz.is_none()) {
        println!("  body:       {}", d.reply.body);
        println!("  details:    {}", d.reply.details);
        if let Some(w) = &d.reply.www_authenticate {
            println!("  www-authenticate: {w}");
        }
    }
    let labels: Vec<String> = workload
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "  request:    {} {} {} (port {})",
        args.method, args.host, args.path, args.port
    );
    if let Some(p) = o.path.as_deref().filter(|p| *p != args.path) {
        println!("  normalized: {p}");
    }
    match &args.peer_principal {
        Some(p) => println!("  peer:       {p} (mutual TLS)"),
        None => println!(
            "  peer:       {} (plaintext: no peer principal)",
            args.source_ip
        ),
    }
    println!(
        "  workload:   namespace {} labels {{{}}}",
        workload.namespace,
        labels.join(",")
    );
    if applied.is_empty() {
        println!("  applies:    nothing (no policy selects this workload)");
    } else {
        println!("  applies:    {}", applied.join(", "));
    }
    for s in skipped {
        println!("  note:       {s}");
    }
    if o.cors_preflight {
        println!("  jwt:        skipped (CORS preflight)");
    }
    for r in &o.jwt {
        let what = match (r.result, r.message) {
            ("failed", Some(m)) => format!("rejected the token: {m}"),
            ("ok", _) => format!(
                "accepted the token from {}",
                r.locations
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ("missing", _) => "no token at its locations".to_string(),
            (other, _) => other.to_string(),
        };
        let iss = if r.issuer.is_empty() {
            "any issuer".to_string()
        } else {
            format!("issuer {}", r.issuer)
        };
        println!("  jwt:        {} ({}, {iss}): {what}", r.provider, r.rule);
        if let Some(second) = &r.second_pass {
            // Envoy's requires_all branch ran this provider again (docs/semantics.md).
            match second.status {
                Some(status) => {
                    println!("              then, in the requires_all branch: failed ({status})")
                }
                None => println!(
                    "              then, in the requires_all branch: {}",
                    second.result
                ),
            }
        }
    }
    match &o.principal {
        Some(p) => println!("  principal:  {p}"),
        None if o.denial.is_none() || o.authz.denied.is_some() => {
            println!("  principal:  none (no verified token)")
        }
        None => {}
    }
    for op in &o.header_ops {
        match op {
            meshguard_engine::HeaderOp::Remove { name } => println!("  header:     removed {name}"),
            meshguard_engine::HeaderOp::RemoveParam { name } => {
                println!("  query:      removed parameter {name}")
            }
            meshguard_engine::HeaderOp::Add { name, value } => {
                println!(
                    "  header:     added {name}: {}",
                    String::from_utf8_lossy(value.as_bytes())
                )
            }
        }
    }
    let a = &o.authz;
    if let Some(id) = &a.audit {
        println!("  audit:      {id}");
    }
    match (&a.matched_policy, &a.denied) {
        (Some(id), Some(_)) if o.ext_authz.is_some() => {
            println!("  authz:      CUSTOM rule {id} matched: the provider is asked")
        }
        (Some(id), Some(_)) => println!(
            "  authz:      denied by {} {id}",
            a.matched_action.unwrap_or("")
        ),
        (Some(id), None) => println!(
            "  authz:      allowed by {} {id}",
            a.matched_action.unwrap_or("")
        ),
        (None, Some(_)) => {
            println!("  authz:      denied: ALLOW policies apply and no rule matched")
        }
        (None, None) if o.denial.is_none() => {
            println!("  authz:      allowed: no DENY matched and no ALLOW policy applies")
        }
        (None, None) => {}
    }
    for d in &a.dry_run {
        println!(
            "  dry-run:    {} policies would have {} this request{}",
            d.action,
            d.result,
            d.policy
                .as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        );
    }
    if args.explain {
        // A rejected token ends evaluation before authorization: no rules to list then.
        print_explanation(o, o.explanation.as_deref().unwrap_or_default());
    }
}

/// `--explain`: the JWT outcome, then every rule in evaluation order, then the decision.
fn print_explanation(o: &Outcome, rules: &[meshguard_engine::RuleExplanation]) {
    println!("explanation:");
    if let Some(ask) = &o.ext_authz {
        // CUSTOM runs first: JWT and the other actions wait for the provider's answer.
        println!(
            "  1. CUSTOM: rule {} matched: provider {} would be asked; JWT validation, DENY and ALLOW run only if it allows",
            ask.policy, ask.provider
        );
        for r in rules.iter().filter(|r| r.action == "CUSTOM") {
            match &r.why {
                None => println!("     CUSTOM {} {}: MATCHES", r.policy, r.rule),
                Some(why) => println!("     CUSTOM {} {}: no match: {why}", r.policy, r.rule),
            }
        }
        return;
    }
    if o.jwt.is_empty() && !o.cors_preflight {
        println!(
            "  1. JWT: no RequestAuthentication applies; the request has no verified identity"
        );
    } else if o.cors_preflight {
        println!("  1. JWT: skipped for a CORS preflight");
    } else {
        let verdict = match (&o.principal, o.denial.as_ref().map(|d| &d.reason)) {
            (_, Some(meshguard_engine::DenyReason::Jwt(s))) => {
                format!("rejected ({}), so authorization never runs", s.message())
            }
            (Some(p), _) => format!("accepted, principal {p}"),
            (None, _) => "no token found: the request continues without identity".into(),
        };
        println!("  1. JWT: {verdict}");
    }
    if matches!(
        o.denial.as_ref().map(|d| &d.reason),
        Some(meshguard_engine::DenyReason::Jwt(_))
    ) {
        return;
    }
    if rules.is_empty() {
        println!("  2. authorization: no AuthorizationPolicy applies: allowed");
        return;
    }
    println!("  2. authorization, in Istio's order (CUSTOM, AUDIT, DENY, ALLOW; rules by id):");
    for r in rules {
        let dry = if r.dry_run { " (dry-run)" } else { "" };
        match &r.why {
            None => println!("     {} {}{} {}: MATCHES", r.action, r.policy, dry, r.rule),
            Some(why) => println!(
                "     {} {}{} {}: no match: {why}",
                r.action, r.policy, dry, r.rule
            ),
        }
    }
    let decision = match (&o.denial, &o.authz.matched_policy) {
        (None, Some(id)) => format!("allowed: ALLOW rule {id} matched"),
        (None, None) => "allowed: no DENY rule matched and no enforced ALLOW policy applies".into(),
        (Some(_), Some(id)) => format!(
            "denied: {} rule {id} matched",
            o.authz.matched_action.unwrap_or("DENY")
        ),
        (Some(_), None) => "denied: ALLOW policies apply and none of their rules matched".into(),
    };
    println!("  3. decision: {decision}");
}
