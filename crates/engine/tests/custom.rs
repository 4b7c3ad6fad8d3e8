//! CUSTOM through the whole engine: which provider a request makes the front end ask, in
//! istiod's order (one filter pair per provider, by name, before JWT validation), and the
//! denial of a provider that cannot be asked.

use std::path::Path;
use std::sync::Arc;

use http::HeaderMap;
use meshguard_engine::{
    Custom, EvalOptions, HttpRequest, NoRemoteKeys, Outcome, PathNormalization, evaluate,
    evaluate_with,
};
use meshguard_model::{LoadOptions, Workload, load_str};
use meshguard_policy::CompiledWorkload;

const POLICIES: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-b, namespace: foo}
spec:
  action: CUSTOM
  provider: {name: b-authz}
  rules: [{to: [{operation: {paths: [/b/*, /both]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-a, namespace: foo}
spec:
  action: CUSTOM
  provider: {name: a-authz}
  rules: [{to: [{operation: {paths: [/a/*, /both]}}]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  jwtRules: [{issuer: issuer-1, jwks: '{\"keys\": []}'}]
";

fn compile() -> CompiledWorkload {
    let set = load_str(Path::new("inline.yaml"), POLICIES, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let workload = Workload::new("foo", [("app".to_string(), "web".to_string())].into());
    meshguard_policy::compile(&set, &workload).unwrap_or_else(|e| panic!("{e}"))
}

fn run(cw: &CompiledWorkload, path: &str, custom: Custom<'_>) -> Outcome {
    let mut headers = HeaderMap::new();
    // An invalid token: JWT validation would refuse it with 401 if it ran.
    headers.insert("authorization", "Bearer not-a-jwt".parse().unwrap());
    let req = HttpRequest {
        method: "GET",
        path,
        host: "web.foo",
        scheme: "http",
        headers: &mut headers,
        source_ip: None,
        remote_ip: None,
        destination_ip: None,
        destination_port: None,
        sni: None,
        peer_identity: None,
    };
    let opts = EvalOptions {
        path_normalization: PathNormalization::Base,
        now: 1_700_000_000,
        keys: &NoRemoteKeys,
        explain: false,
    };
    evaluate_with(cw, req, &opts, custom)
}

#[test]
fn a_configured_provider_is_asked_before_jwt_validation_in_the_order_of_names() {
    let cw = compile();
    let providers: Vec<Arc<str>> = vec!["a-authz".into(), "b-authz".into()];
    let custom = Custom {
        providers: &providers,
        after: None,
    };
    // Both providers' rules match: a-authz first (names sorted), before the invalid token is
    // looked at.
    let out = run(&cw, "/both", custom);
    let ask = out.ext_authz.as_ref().expect("asks a provider");
    assert_eq!(&*ask.provider, "a-authz");
    assert_eq!(&*ask.policy, "ns[foo]-policy[ext-a]-rule[0]");
    assert!(
        out.jwt.is_empty(),
        "JWT validation has not run: {:?}",
        out.jwt
    );
    // Failing closed for a front end that cannot ask: the denial of the rule.
    assert_eq!(out.status(), 403);
    // a-authz allowed: b-authz next.
    let out = run(
        &cw,
        "/both",
        Custom {
            after: Some("a-authz"),
            ..custom
        },
    );
    assert_eq!(out.ext_authz.unwrap().provider.as_ref(), "b-authz");
    // Both allowed: JWT validation, which refuses the token.
    let out = run(
        &cw,
        "/both",
        Custom {
            after: Some("b-authz"),
            ..custom
        },
    );
    assert!(out.ext_authz.is_none());
    assert_eq!(out.status(), 401);
    // Only b-authz's rule matches: a-authz is not asked.
    assert_eq!(
        run(&cw, "/b/x", custom)
            .ext_authz
            .unwrap()
            .provider
            .as_ref(),
        "b-authz"
    );
    // No CUSTOM rule matches: nobody is asked (Istio's shadow-RBAC gating).
    let out = run(&cw, "/c", custom);
    assert!(out.ext_authz.is_none());
    assert_eq!(out.status(), 401);
}

#[test]
fn a_provider_that_cannot_be_asked_denies_what_its_rules_match() {
    let cw = compile();
    let providers: Vec<Arc<str>> = vec!["b-authz".into()];
    let out = run(
        &cw,
        "/a/x",
        Custom {
            providers: &providers,
            after: None,
        },
    );
    assert!(out.ext_authz.is_none());
    let d = out.denial.unwrap();
    assert_eq!(d.reply.status, 403);
    assert_eq!(d.reply.body, "RBAC: access denied");
    assert_eq!(
        d.reply.details,
        "rbac_access_denied_matched_policy[ns[foo]-policy[ext-a]-rule[0]]"
    );
    // `evaluate` asks no one.
    let mut headers = HeaderMap::new();
    let out = evaluate(
        &cw,
        HttpRequest {
            method: "GET",
            path: "/b/x",
            host: "web.foo",
            scheme: "http",
            headers: &mut headers,
            source_ip: None,
            remote_ip: None,
            destination_ip: None,
            destination_port: None,
            sni: None,
            peer_identity: None,
        },
        &EvalOptions {
            path_normalization: PathNormalization::Base,
            now: 0,
            keys: &NoRemoteKeys,
            explain: false,
        },
    );
    assert!(out.ext_authz.is_none());
    assert_eq!(out.status(), 403);
}
