//! The scenario generator: the same seed gives the same scenario, every scenario loads and
//! compiles in meshguard, and over a few hundred seeds every field, key, action, mode, token
//! kind, token location and request variant occurs.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use meshguard_envoy_diff::generate::{self, Generated, TokenKind, TokenLocation, Variant};
use meshguard_envoy_diff::{PathNormalization, Protocol, Scenario};
use meshguard_model::{
    Action, AuthorizationPolicySpec, LoadOptions, PolicySet, Resource, Workload, load_str,
};

/// Any fixed time: tokens minted at the same `now` are byte for byte the same.
const NOW: i64 = 1_750_000_000;
/// What `${PORT}` becomes for loading.
const PORT: u16 = 18_080;

fn load(s: &Scenario) -> PolicySet {
    let opts = LoadOptions {
        default_namespace: s.workload.namespace.clone(),
    };
    let set = load_str(
        Path::new("generated.yaml"),
        &s.policies_for_port(PORT),
        &opts,
    )
    .unwrap_or_else(|e| panic!("{} does not load: {:?}\n{}", s.name, e.errors, s.policies));
    let workload = Workload::new(s.workload.namespace.clone(), s.workload.labels.clone())
        .with_root_namespace(s.mesh.root_namespace.clone());
    if let Err(e) = meshguard_policy::compile(&set, &workload) {
        panic!("{} does not compile: {e:?}\n{}", s.name, s.policies);
    }
    set
}

#[test]
fn the_same_seed_gives_the_same_scenario() {
    for seed in [0, 1, 2, 42, 1234, u64::MAX] {
        let a = generate::generate(seed, NOW);
        let b = generate::generate(seed, NOW);
        assert_eq!(a.scenario, b.scenario, "seed {seed}");
        assert_eq!(a.tokens, b.tokens, "seed {seed}");
        assert_eq!(a.variants, b.variants, "seed {seed}");
        // With the clock, only tokens may differ: policies, names and the rest do not.
        let c = generate::scenario(seed);
        assert_eq!(c.name, format!("generated seed {seed}"));
        assert_eq!(c.seed, Some(seed));
        assert_eq!(c.policies, a.scenario.policies, "seed {seed}");
        assert_eq!(c.workload, a.scenario.workload);
        assert_eq!(c.mesh, a.scenario.mesh);
        let names = |s: &Scenario| {
            s.requests
                .iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&c), names(&a.scenario), "seed {seed}");
    }
    assert_ne!(
        generate::generate(1, NOW).scenario.policies,
        generate::generate(2, NOW).scenario.policies
    );
    let many = generate::scenarios(7, 3);
    assert_eq!(
        many.iter().map(|s| s.seed).collect::<Vec<_>>(),
        [Some(7), Some(8), Some(9)]
    );
}

#[test]
fn five_hundred_seeds_load_and_compile() {
    for seed in 0..500 {
        let s = generate::generate(seed, NOW).scenario;
        load(&s);
        assert!(
            (10..=30).contains(&s.requests.len()),
            "seed {seed}: {} requests",
            s.requests.len()
        );
        for r in &s.requests {
            assert!(!r.name.is_empty(), "seed {seed}");
            assert!(r.target.starts_with('/'), "seed {seed}: {}", r.target);
            assert_eq!(r.source_ip.octets()[0], 127, "seed {seed}: {}", r.name);
            assert_ne!(r.source_ip, Ipv4Addr::new(127, 0, 0, 0));
            assert!(
                // Envoy's list, as meshguard's intake holds it (a lowercase variant is sent
                // on purpose: both proxies refuse it).
                http::Method::from_bytes(r.method.to_ascii_uppercase().as_bytes())
                    .is_ok_and(|m| meshguard_proxy::intake::known_method(&m)),
                "seed {seed}: {}",
                r.method
            );
            if r.protocol == Protocol::H2c {
                assert!(
                    http::Method::from_bytes(r.method.as_bytes())
                        .is_ok_and(|m| meshguard_proxy::intake::known_method(&m)),
                    "seed {seed}: {}",
                    r.name
                );
                assert!(!r.target.contains(['#', '\\']), "seed {seed}: {}", r.name);
                assert!(r.host.is_some(), "seed {seed}: {}", r.name);
                for (n, _) in &r.headers {
                    assert_eq!(*n, n.to_ascii_lowercase(), "seed {seed}: {}", r.name);
                }
            }
        }
    }
}

/// Counts of what occurs, by a readable key.
#[derive(Default)]
struct Tally(BTreeMap<String, usize>);

impl Tally {
    fn add(&mut self, key: impl Into<String>) {
        *self.0.entry(key.into()).or_default() += 1;
    }

    fn count(&self, key: &str) -> usize {
        self.0.get(key).copied().unwrap_or(0)
    }
}

fn tally_source(t: &mut Tally, s: &meshguard_model::Source) {
    let fields: [(&str, &Vec<String>); 14] = [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ];
    for (name, values) in fields {
        if !values.is_empty() {
            t.add(format!("source.{name}"));
        }
        for v in values {
            if name.ends_with("equestPrincipals") {
                let form = if v == "*" {
                    "*"
                } else if v.starts_with('*') {
                    "*x"
                } else if v.ends_with('*') {
                    "x*"
                } else if v.contains('/') {
                    "iss/sub"
                } else {
                    "no slash"
                };
                t.add(format!("requestPrincipals form {form}"));
            }
        }
    }
}

fn value_form(v: &str) -> &'static str {
    if v == "*" {
        "*"
    } else if v.contains("{*}") || v.contains("{**}") {
        "template"
    } else if v.starts_with('*') {
        "suffix"
    } else if v.ends_with('*') {
        "prefix"
    } else {
        "exact"
    }
}

fn tally_operation(t: &mut Tally, o: &meshguard_model::Operation) {
    let fields: [(&str, &Vec<String>); 8] = [
        ("hosts", &o.hosts),
        ("notHosts", &o.not_hosts),
        ("ports", &o.ports),
        ("notPorts", &o.not_ports),
        ("methods", &o.methods),
        ("notMethods", &o.not_methods),
        ("paths", &o.paths),
        ("notPaths", &o.not_paths),
    ];
    for (name, values) in fields {
        if !values.is_empty() {
            t.add(format!("operation.{name}"));
        }
        for v in values {
            let base = name.trim_start_matches("not").to_ascii_lowercase();
            t.add(format!("{base} {}", value_form(v)));
            if base == "hosts" && v.contains(':') {
                t.add("hosts with a port");
            }
            if base == "ports" && *v == PORT.to_string() {
                t.add("ports the listener's");
            }
            if *v != v.to_ascii_lowercase() && *v != v.to_ascii_uppercase() {
                t.add(format!("{base} mixed case"));
            }
        }
    }
}

/// The key as `CONDITION_KEYS` spells it (`request.headers[]`), plus the claim depth.
fn tally_condition(t: &mut Tally, c: &meshguard_model::Condition) {
    let key = &c.key;
    let general = if key.starts_with("request.headers[") {
        "request.headers[]".to_string()
    } else if let Some(rest) = key.strip_prefix("request.auth.claims") {
        t.add(format!(
            "request.auth.claims depth {}",
            rest.matches('[').count()
        ));
        "request.auth.claims[]".to_string()
    } else if key.starts_with("experimental.envoy.filters.") {
        "experimental.envoy.filters.".to_string()
    } else {
        key.clone()
    };
    t.add(format!("when {general}"));
    if !c.values.is_empty() {
        t.add("when values");
    }
    if !c.not_values.is_empty() {
        t.add("when notValues");
    }
    if key == "destination.ip" {
        for v in c.values.iter().chain(&c.not_values) {
            let holds = |ip: &str| cidr_holds(v, ip.parse().unwrap());
            assert_eq!(
                holds("127.0.0.1"),
                holds("127.0.0.2"),
                "destination.ip {v} holds one proxy's address and not the other's"
            );
            t.add(format!("destination.ip holds both: {}", holds("127.0.0.1")));
        }
    }
}

fn cidr_holds(v: &str, ip: Ipv4Addr) -> bool {
    let (net, len) = v.split_once('/').unwrap_or((v, "32"));
    let net = u32::from(net.parse::<Ipv4Addr>().unwrap());
    let len: u32 = len.parse().unwrap();
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == net & mask
}

fn tally_policy(t: &mut Tally, s: &Scenario, ap: &Resource<AuthorizationPolicySpec>) {
    let spec = &ap.spec;
    t.add(format!("action {}", spec.action.as_str()));
    if ap.annotations.contains_key("istio.io/dry-run") {
        t.add(format!("dry-run {}", spec.action.as_str()));
    }
    if spec.action == Action::Custom {
        assert_eq!(
            spec.provider.as_ref().map(|p| p.name.as_str()),
            Some("unknown-ext")
        );
    }
    t.add(match &spec.rules {
        None => "rules absent",
        Some(r) if r.is_empty() => "rules []",
        Some(r) if r.len() == 1 && r[0].as_ref().is_some_and(|r| *r == Default::default()) => {
            "rules [{}]"
        }
        Some(r) if r.len() > 1 => "rules several",
        Some(_) => "rules one",
    });
    t.add(match &spec.selector {
        None => "selector absent",
        Some(sel) if sel.match_labels.is_empty() => "selector empty",
        Some(sel)
            if sel
                .match_labels
                .iter()
                .all(|(k, v)| s.workload.labels.get(k) == Some(v)) =>
        {
            "selector matching"
        }
        Some(_) => "selector not matching",
    });
    if ap.namespace == s.mesh.root_namespace {
        t.add("policy in the root namespace");
    }
    for rule in spec.rules.iter().flatten().flatten() {
        for f in rule.from.iter().flatten().flatten() {
            if let Some(src) = &f.source {
                tally_source(t, src);
            }
        }
        for to in rule.to.iter().flatten().flatten() {
            if let Some(op) = &to.operation {
                tally_operation(t, op);
            }
        }
        for c in rule.when.iter().flatten().flatten() {
            tally_condition(t, c);
        }
    }
}

fn tally_scenario(t: &mut Tally, g: &Generated) {
    let s = &g.scenario;
    let set = load(s);
    t.add(format!("mode {}", s.mesh.path_normalization.as_str()));
    t.add(format!("trusted proxies {}", s.mesh.trusted_proxies));
    t.add(format!(
        "request authentications {}",
        set.request_authentications.len()
    ));
    for ra in &set.request_authentications {
        if ra.namespace == s.mesh.root_namespace {
            t.add("ra in the root namespace");
        }
        if let Some(sel) = &ra.spec.selector
            && sel
                .match_labels
                .iter()
                .any(|(k, v)| s.workload.labels.get(k) != Some(v))
        {
            t.add("ra selector not matching");
        }
        for r in &ra.spec.jwt_rules {
            assert_eq!(r.jwks, meshguard_envoy_diff::tokens::DEMO_JWKS);
            t.add(format!("issuer {}", r.issuer));
            let set = [
                ("audiences", !r.audiences.is_empty()),
                ("fromParams", !r.from_params.is_empty()),
                ("fromCookies", !r.from_cookies.is_empty()),
                (
                    "outputPayloadToHeader",
                    !r.output_payload_to_header.is_empty(),
                ),
                (
                    "outputClaimToHeaders",
                    !r.output_claim_to_headers.is_empty(),
                ),
                (
                    "outputClaimToHeaders dotted",
                    r.output_claim_to_headers
                        .iter()
                        .any(|c| c.claim.contains('.')),
                ),
                ("forwardOriginalToken true", r.forward_original_token),
                ("spaceDelimitedClaims", !r.space_delimited_claims.is_empty()),
                (
                    "fromHeaders with a prefix",
                    r.from_headers.iter().any(|h| !h.prefix.is_empty()),
                ),
                (
                    "fromHeaders without a prefix",
                    r.from_headers.iter().any(|h| h.prefix.is_empty()),
                ),
            ];
            for (name, on) in set {
                if on {
                    t.add(format!("jwt {name}"));
                }
            }
        }
    }
    for ap in &set.authorization_policies {
        tally_policy(t, s, ap);
    }
    for r in &s.requests {
        t.add(format!("protocol {:?}", r.protocol));
        if r.method != r.method.to_ascii_uppercase() {
            t.add("method lowercase");
        }
        if r.source_ip != Ipv4Addr::new(127, 0, 0, 1) {
            t.add("source other than 127.0.0.1");
        }
        if r.headers.iter().any(|(n, _)| n == "x-forwarded-for") {
            t.add("x-forwarded-for");
        }
    }
    for (_, kind, location) in &g.tokens {
        t.add(format!("token {}", kind.as_str()));
        t.add(format!("location {}", location.as_str()));
    }
    for (_, v) in &g.variants {
        t.add(format!("variant {}", v.as_str()));
    }
}

#[test]
fn three_hundred_seeds_cover_every_field_key_action_mode_token_and_variant() {
    let mut t = Tally::default();
    for seed in 1000..1300 {
        tally_scenario(&mut t, &generate::generate(seed, NOW));
    }
    for (k, n) in &t.0 {
        println!("{n:6}  {k}");
    }
    let mut wanted: Vec<String> = Vec::new();
    for f in [
        "principals",
        "requestPrincipals",
        "namespaces",
        "serviceAccounts",
        "trustDomains",
        "ipBlocks",
        "remoteIpBlocks",
    ] {
        wanted.push(format!("source.{f}"));
        wanted.push(format!("source.not{}{}", f[..1].to_uppercase(), &f[1..]));
    }
    for f in ["hosts", "ports", "methods", "paths"] {
        wanted.push(format!("operation.{f}"));
        wanted.push(format!("operation.not{}{}", f[..1].to_uppercase(), &f[1..]));
    }
    for k in meshguard_policy::authz::CONDITION_KEYS {
        wanted.push(format!("when {k}"));
    }
    wanted.extend(
        [
            "when values",
            "when notValues",
            "request.auth.claims depth 1",
            "request.auth.claims depth 2",
            "destination.ip holds both: true",
            "destination.ip holds both: false",
            "rules absent",
            "rules []",
            "rules [{}]",
            "rules one",
            "rules several",
            "selector absent",
            "selector empty",
            "selector matching",
            "selector not matching",
            "policy in the root namespace",
            "dry-run ALLOW",
            "dry-run DENY",
            "requestPrincipals form *",
            "requestPrincipals form *x",
            "requestPrincipals form x*",
            "requestPrincipals form iss/sub",
            "requestPrincipals form no slash",
            "paths exact",
            "paths prefix",
            "paths suffix",
            "paths template",
            "paths *",
            "paths mixed case",
            "hosts exact",
            "hosts prefix",
            "hosts suffix",
            "hosts *",
            "hosts with a port",
            "hosts mixed case",
            "methods prefix",
            "methods suffix",
            "methods *",
            "ports the listener's",
            "ra in the root namespace",
            "ra selector not matching",
            "request authentications 0",
            "request authentications 1",
            "request authentications 2",
            "issuer testing@secure.istio.io",
            "issuer https://issuer.example.com",
            "issuer issuer-2@example.com",
            "jwt audiences",
            "jwt fromParams",
            "jwt fromCookies",
            "jwt outputPayloadToHeader",
            "jwt outputClaimToHeaders",
            "jwt outputClaimToHeaders dotted",
            "jwt forwardOriginalToken true",
            "jwt spaceDelimitedClaims",
            "jwt fromHeaders with a prefix",
            "jwt fromHeaders without a prefix",
            "trusted proxies 0",
            "trusted proxies 1",
            "trusted proxies 2",
            "protocol Http1",
            "protocol H2c",
            "method lowercase",
            "source other than 127.0.0.1",
            "x-forwarded-for",
        ]
        .map(String::from),
    );
    for a in [Action::Allow, Action::Deny, Action::Audit, Action::Custom] {
        wanted.push(format!("action {}", a.as_str()));
    }
    for m in PathNormalization::ALL {
        wanted.push(format!("mode {}", m.as_str()));
    }
    for k in TokenKind::ALL {
        wanted.push(format!("token {}", k.as_str()));
    }
    for l in TokenLocation::ALL {
        wanted.push(format!("location {}", l.as_str()));
    }
    for v in Variant::ALL {
        wanted.push(format!("variant {}", v.as_str()));
    }
    let missing: Vec<&String> = wanted.iter().filter(|w| t.count(w) == 0).collect();
    assert!(
        missing.is_empty(),
        "never generated over 300 seeds: {missing:?}"
    );
}
