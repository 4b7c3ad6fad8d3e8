//! Data-driven conformance: every `tests/conformance/*.yaml` suite, each case evaluated the way
//! the proxy will evaluate it, compared on what a client sees (status, body, details,
//! principal, headers after authentication, dry-run results).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use meshguard_engine::{EvalOptions, HttpRequest, PathNormalization, evaluate};
use meshguard_jwt::{Algorithm, SigningKey, sign};
use meshguard_model::{LoadOptions, PolicySet, Workload, load_paths, load_str};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Suite {
    suite: String,
    workload: WorkloadSpec,
    #[serde(default)]
    policies: Vec<String>,
    #[serde(default)]
    inline: Option<String>,
    #[serde(default)]
    path_normalization: Option<String>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadSpec {
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    request: RequestSpec,
    expect: Expect,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RequestSpec {
    method: Option<String>,
    path: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    source_ip: Option<String>,
    remote_ip: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    token: Option<String>,
    mint: Option<Mint>,
    token_header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mint {
    #[serde(default)]
    claims: Map<String, Value>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    header: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Expect {
    status: u16,
    body: Option<String>,
    details: Option<String>,
    principal: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    dry_run: Option<Vec<DryRun>>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct DryRun {
    action: String,
    result: String,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn demo_token(name: &str) -> String {
    let file = match name {
        "demo" => "demo.jwt",
        "groups" => "groups-scope.jwt",
        _ => return name.to_string(),
    };
    std::fs::read_to_string(root().join("testdata/istio-demo").join(file))
        .unwrap()
        .trim()
        .to_string()
}

/// Mints a token with Istio's demo key; string claims `"+N"`/`"-N"` for iat/nbf/exp are
/// relative to now, `null` removes a claim.
fn mint(m: &Mint) -> String {
    let pem = std::fs::read_to_string(root().join("testdata/istio-demo/key.pem")).unwrap();
    let key = SigningKey::from_pem(&pem).unwrap();
    let t = now() as i64;
    let mut claims = Map::new();
    claims.insert("iss".into(), "testing@secure.istio.io".into());
    claims.insert("sub".into(), "testing@secure.istio.io".into());
    claims.insert("iat".into(), t.into());
    claims.insert("exp".into(), (t + 3600).into());
    for (k, v) in &m.claims {
        match v {
            Value::Null => {
                claims.remove(k);
            }
            Value::String(s)
                if matches!(k.as_str(), "iat" | "nbf" | "exp")
                    && (s.starts_with('+') || s.starts_with('-')) =>
            {
                let delta: i64 = s.parse().unwrap();
                claims.insert(k.clone(), (t + delta).into());
            }
            _ => {
                claims.insert(k.clone(), v.clone());
            }
        }
    }
    let mut header = Map::new();
    header.insert("typ".into(), "JWT".into());
    header.insert(
        "kid".into(),
        "DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ".into(),
    );
    for (k, v) in &m.header {
        if v.is_null() {
            header.remove(k);
        } else {
            header.insert(k.clone(), v.clone());
        }
    }
    let alg = Algorithm::from_name(m.alg.as_deref().unwrap_or("RS256")).unwrap();
    sign(alg, &key, &header, &claims).unwrap()
}

fn load_suite(file: &Path, suite: &Suite) -> PolicySet {
    let opts = LoadOptions {
        default_namespace: suite.workload.namespace.clone(),
    };
    let mut set = PolicySet::default();
    if !suite.policies.is_empty() {
        let paths: Vec<PathBuf> = suite.policies.iter().map(|p| root().join(p)).collect();
        set = load_paths(&paths, &opts).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    if let Some(text) = &suite.inline {
        let more = load_str(file, text, &opts).unwrap_or_else(|e| panic!("{e}"));
        set.request_authentications
            .extend(more.request_authentications);
        set.authorization_policies
            .extend(more.authorization_policies);
    }
    set
}

fn run_case(
    suite: &Suite,
    cw: &meshguard_policy::CompiledWorkload,
    case: &Case,
) -> Result<(), String> {
    let r = &case.request;
    let mut headers = HeaderMap::new();
    for (n, v) in &r.headers {
        headers.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let token = match (&r.token, &r.mint) {
        (Some(t), None) => Some(demo_token(t)),
        (None, Some(m)) => Some(mint(m)),
        (None, None) => None,
        (Some(_), Some(_)) => return Err("both token and mint".into()),
    };
    if let Some(t) = token {
        match r.token_header.as_deref() {
            None => headers.append(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
            ),
            Some(h) => headers.append(
                HeaderName::from_bytes(h.as_bytes()).unwrap(),
                HeaderValue::from_str(&t).unwrap(),
            ),
        };
    }
    let source_ip = r
        .source_ip
        .as_deref()
        .unwrap_or("10.0.0.1")
        .parse()
        .unwrap();
    let mode: PathNormalization = suite
        .path_normalization
        .as_deref()
        .unwrap_or("BASE")
        .parse()
        .unwrap();
    let req = HttpRequest {
        method: r.method.as_deref().unwrap_or("GET"),
        path: r.path.as_deref().unwrap_or("/"),
        host: r.host.as_deref().unwrap_or("httpbin.foo:8000"),
        scheme: "http",
        headers: &mut headers,
        source_ip: Some(source_ip),
        remote_ip: r.remote_ip.as_deref().map(|ip| ip.parse().unwrap()),
        destination_ip: None,
        destination_port: Some(r.port.unwrap_or(8000)),
        sni: None,
        peer_identity: None,
    };
    let out = evaluate(
        cw,
        req,
        &EvalOptions {
            path_normalization: mode,
            now: now(),
            keys: &meshguard_engine::NoRemoteKeys,
            explain: false,
        },
    );
    let e = &case.expect;
    let mut problems = Vec::new();
    if out.status() != e.status {
        problems.push(format!("status {} (want {})", out.status(), e.status));
    }
    let d = out.denial.as_ref();
    if let Some(body) = &e.body
        && d.map(|d| &d.reply.body) != Some(body)
    {
        problems.push(format!(
            "body {:?} (want {body:?})",
            d.map(|d| &d.reply.body)
        ));
    }
    if let Some(details) = &e.details
        && d.map(|d| &d.reply.details) != Some(details)
    {
        problems.push(format!(
            "details {:?} (want {details:?})",
            d.map(|d| &d.reply.details)
        ));
    }
    if let Some(p) = &e.principal {
        let got = out.principal.as_deref().unwrap_or_default();
        if got != p {
            problems.push(format!("principal {got:?} (want {p:?})"));
        }
    }
    for (name, want) in &e.headers {
        let got: Vec<&str> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        let got = got.join(",");
        if &got != want {
            problems.push(format!("header {name}: {got:?} (want {want:?})"));
        }
    }
    if let Some(want) = &e.dry_run {
        let got: Vec<DryRun> = out
            .authz
            .dry_run
            .iter()
            .map(|d| DryRun {
                action: d.action.into(),
                result: d.result.into(),
            })
            .collect();
        if &got != want {
            problems.push(format!("dry-run {got:?} (want {want:?})"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}; jwt: {:?}; authz: {:?}",
            problems.join("; "),
            out.jwt,
            out.authz
        ))
    }
}

#[test]
fn conformance_suites() {
    let dir = root().join("tests/conformance");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no suites in {}", dir.display());
    let mut failures = Vec::new();
    let mut total = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let suites: Vec<Suite> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for suite in &suites {
            let set = load_suite(file, suite);
            let wl = Workload::new(
                suite.workload.namespace.clone(),
                suite.workload.labels.clone(),
            );
            let cw = meshguard_policy::compile(&set, &wl)
                .unwrap_or_else(|e| panic!("{}: {}: {e}", file.display(), suite.suite));
            for case in &suite.cases {
                total += 1;
                if let Err(msg) = run_case(suite, &cw, case) {
                    failures.push(format!(
                        "{} / {} / {}: {msg}",
                        file.file_name().unwrap().to_string_lossy(),
                        suite.suite,
                        case.name
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{total} conformance cases passed");
}
