//! Invalid values are refused at load time with Istio's message, the field and the value.

use std::collections::BTreeMap;
use std::path::Path;

use meshguard_model::{LoadOptions, Workload, load_str};

fn compile_err(spec_kind: &str, spec: &str) -> String {
    let text = format!(
        "apiVersion: security.istio.io/v1\nkind: {spec_kind}\nmetadata: {{name: p, namespace: foo}}\nspec:\n{spec}"
    );
    let set = load_str(Path::new("p.yaml"), &text, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("load: {e}"));
    let wl = Workload::new("foo", BTreeMap::new());
    match meshguard_policy::compile(&set, &wl) {
        Ok(_) => panic!("compiled without error: {spec}"),
        Err(e) => e.to_string(),
    }
}

const JWKS: &str = r#"'{"keys":[]}'"#;

#[test]
fn request_authentication_errors() {
    let cases = [
        ("  jwtRules: [{audiences: [x]}]\n".to_string(), "spec.jwtRules[0]: issuer or jwksUri must be non-empty string"),
        (format!("  jwtRules: [{{issuer: a, jwks: {JWKS}, jwksUri: 'https://x'}}]\n"), "spec.jwtRules[0].jwks: only one of jwks or jwksUri can be set"),
        ("  jwtRules: [{issuer: a, jwksUri: 'ftp://x/keys'}]\n".to_string(), "= \"ftp://x/keys\": url must have scheme http:// or https://"),
        ("  jwtRules: [{issuer: a, jwks: 'not json'}]\n".to_string(), "spec.jwtRules[0].jwks: jwks parse error"),
        ("  jwtRules: [{issuer: a, timeout: 0.5ms}]\n".to_string(), "field spec.jwtRules[0].timeout = \"0.5ms\": duration must be greater than 1ms"),
        ("  jwtRules: [{issuer: a, timeout: 1500us}]\n".to_string(), "only durations to ms precision are supported"),
        ("  jwtRules: [{issuer: a, fromHeaders: [{name: ''}]}]\n".to_string(), "spec.jwtRules[0].fromHeaders[0].name: location header name must be non-empty string"),
        ("  jwtRules: [{issuer: a, outputClaimToHeaders: [{header: ':authority', claim: sub}]}]\n".to_string(), "header name :authority is not a valid header name"),
        ("  jwtRules: [{issuer: a, audiences: ['']}]\n".to_string(), "audience must be non-empty string"),
    ];
    for (spec, want) in cases {
        let got = compile_err("RequestAuthentication", &spec);
        assert!(got.contains(want), "{spec}\n got: {got}\nwant: {want}");
        assert!(
            got.contains("p.yaml: document 0 (RequestAuthentication foo/p)"),
            "{got}"
        );
    }
}

#[test]
fn authorization_policy_errors() {
    let cases = [
        (
            "  action: DENY\n",
            "DENY action without `rules` is meaningless",
        ),
        (
            "  action: CUSTOM\n  rules: [{}]\n",
            "`provider.name` must not be empty",
        ),
        (
            "  provider: {name: x}\n  rules: [{}]\n",
            "`provider` must not be with non CUSTOM action, found ALLOW",
        ),
        (
            "  rules: [{from: []}]\n",
            "spec.rules[0].from = \"[]\": `from` must not be empty",
        ),
        (
            "  rules: [{to: [{operation: {}}]}]\n",
            "spec.rules[0].to[0].operation = \"{}\": `to.operation` must not be empty",
        ),
        (
            "  rules: [{to: [{operation: {ports: ['99999']}}]}]\n",
            "spec.rules[0].to[0].operation.ports[0] = \"99999\": bad port (99999)",
        ),
        (
            "  rules: [{to: [{operation: {paths: ['']}}]}]\n",
            "empty value not allowed, found in paths",
        ),
        (
            "  rules: [{to: [{operation: {paths: ['/a/{**}/b/{*}']}}]}]\n",
            "{**} is not the last operator",
        ),
        (
            "  rules: [{from: [{source: {remoteIpBlocks: ['10.0.0.0/33']}}]}]\n",
            "bad CIDR range (10.0.0.0/33)",
        ),
        (
            "  rules: [{from: [{source: {serviceAccounts: [a], namespaces: [b]}}]}]\n",
            "cannot set serviceAccounts with namespaces or principals",
        ),
        (
            "  rules: [{when: [{key: 'request.auth.claim[groups]', values: [a]}]}]\n",
            "unknown attribute request.auth.claim[groups]; did you mean request.auth.claims[groups]?",
        ),
        (
            "  rules: [{when: [{key: destination.namespace, values: [a]}]}]\n",
            "attribute destination.namespace is replaced by the metadata.namespace",
        ),
        (
            "  rules: [{when: [{key: 'request.headers[]', values: [a]}]}]\n",
            "must be of the form request.headers[<name>]",
        ),
        (
            "  rules: [{when: [{key: source.ip}]}]\n",
            "at least one of `values` or `notValues` must be set for key source.ip",
        ),
        (
            "  action: CUSTOM\n  provider: {name: x}\n  rules: [{from: [{source: {requestPrincipals: ['*']}}]}]\n",
            "requestPrincipals is currently not supported with CUSTOM action",
        ),
    ];
    for (spec, want) in cases {
        let got = compile_err("AuthorizationPolicy", spec);
        assert!(got.contains(want), "{spec}\n got: {got}\nwant: {want}");
    }
}

#[test]
fn dry_run_annotation_is_validated() {
    let text = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo, annotations: {istio.io/dry-run: 'yes'}}\nspec: {}\n";
    let set = load_str(Path::new("p.yaml"), text, &LoadOptions::default()).unwrap();
    let err = meshguard_policy::compile(&set, &Workload::new("foo", BTreeMap::new()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("metadata.annotations[istio.io/dry-run] = \"yes\": invalid value"),
        "{err}"
    );
}

#[test]
fn providers_are_sorted_by_issuer_and_named_origins() {
    let text = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: a, namespace: foo}}\nspec:\n  jwtRules: [{{issuer: zeta, jwks: {JWKS}}}, {{issuer: alpha, jwks: {JWKS}, fromCookies: [s], fromHeaders: [{{name: X-B}}, {{name: x-a, prefix: 'T '}}]}}]\n"
    );
    let set = load_str(Path::new("p.yaml"), &text, &LoadOptions::default()).unwrap();
    let cw = meshguard_policy::compile(&set, &Workload::new("foo", BTreeMap::new())).unwrap();
    let names: Vec<(&str, &str)> = cw
        .providers
        .iter()
        .map(|p| (&*p.name, &*p.issuer))
        .collect();
    assert_eq!(names, vec![("origins-0", "alpha"), ("origins-1", "zeta")]);
    let alpha = &cw.providers[0];
    let headers: Vec<&str> = alpha.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(headers, vec!["x-a", "x-b"], "lowercased and sorted");
    assert!(
        alpha.params.is_empty(),
        "explicit locations replace the defaults"
    );
    assert_eq!(cw.providers[1].params, vec!["access_token"]);
    assert_eq!(
        cw.providers[1].space_delimited_claims,
        vec!["permission", "scope"]
    );
}

#[test]
fn every_error_of_a_resource_is_reported() {
    // Two bad jwtRules: both are named.
    let got = compile_err(
        "RequestAuthentication",
        "  jwtRules: [{audiences: [x]}, {issuer: a, jwksUri: 'ftp://x/keys'}]\n",
    );
    assert!(
        got.contains("spec.jwtRules[0]: issuer or jwksUri must be non-empty string"),
        "{got}"
    );
    assert!(
        got.contains("spec.jwtRules[1].jwksUri = \"ftp://x/keys\""),
        "{got}"
    );
    // Bad values in several fields, rules and clauses of one policy: all of them.
    let got = compile_err(
        "AuthorizationPolicy",
        "  action: DENY
  rules:
  - from: [{source: {ipBlocks: ['1.2.3.4', '1.2.3.400'], notIpBlocks: ['x/8']}}]
    to: [{operation: {ports: ['99999', '-1'], paths: ['/a/{**}/{*}']}}]
  - when: [{key: source.ip, values: ['1.2.3']}, {key: 'request.header[x]', values: [a]}]
",
    );
    let lines: Vec<&str> = got.lines().collect();
    for want in [
        "ipBlocks[1] = \"1.2.3.400\": bad IP address",
        "notIpBlocks[0] = \"x/8\": bad CIDR range",
        "ports[0] = \"99999\": bad port",
        "ports[1] = \"-1\": bad port",
        "paths[0] = \"/a/{**}/{*}\": invalid or unsupported path",
        "spec.rules[1].when[0].values[0] = \"1.2.3\": bad IP address",
        "spec.rules[1].when[1].key = \"request.header[x]\": unknown attribute",
    ] {
        assert_eq!(
            lines.iter().filter(|l| l.contains(want)).count(),
            1,
            "{want}\n{got}"
        );
    }
    assert_eq!(lines.len(), 7, "{got}");
}
