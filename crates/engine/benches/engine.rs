//! Micro-benchmarks of the engine's hot paths and of loading:
//! - token verification per algorithm, beside the raw aws-lc-rs signature cost;
//! - a verified-token cache hit;
//! - a decision with 1, 100 and 1,000 applicable rules;
//! - loading and compiling 10,000 policies across 1,000 namespaces.
//!
//! Run: `cargo bench -p meshguard-engine --bench engine` (results in target/criterion).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::signature::{self, KeyPair, UnparsedPublicKey};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use meshguard_engine::{
    EvalOptions, HttpRequest, KeyStore, NoRemoteKeys, PathNormalization, VerifiedCache, evaluate,
};
use meshguard_jwt::{Algorithm, Jwks, KeyKind, SigningKey, Validation, sign, verify};
use meshguard_model::{LoadOptions, Workload, load_str};
use meshguard_policy::{CompiledWorkload, RemoteKeySource};
use serde_json::{Map, json};

const NOW: u64 = 1_700_000_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn claims() -> Map<String, serde_json::Value> {
    json!({"iss": "bench", "sub": "alice", "exp": NOW + 3600, "groups": ["group1"]})
        .as_object()
        .unwrap()
        .clone()
}

fn verification(c: &mut Criterion) {
    let mut g = c.benchmark_group("verify");
    g.measurement_time(Duration::from_secs(3)).sample_size(30);
    let cases = [
        (Algorithm::RS256, KeyKind::Rsa(2048)),
        (Algorithm::PS256, KeyKind::Rsa(2048)),
        (Algorithm::ES256, KeyKind::EcP256),
        (Algorithm::ES384, KeyKind::EcP384),
        (Algorithm::EdDSA, KeyKind::Ed25519),
        (Algorithm::HS256, KeyKind::Hmac(32)),
    ];
    for (alg, kind) in cases {
        let key = SigningKey::generate(kind).unwrap();
        let mut header = Map::new();
        header.insert("kid".into(), json!("k"));
        let token = sign(alg, &key, &header, &claims()).unwrap();
        let jwks = Jwks::parse(&json!({"keys": [key.public_jwk(Some("k"))]}).to_string()).unwrap();
        let validation = Validation {
            issuer: Some("bench".into()),
            ..Validation::default()
        };
        assert!(verify(&token, &validation, &jwks, NOW).is_ok());
        g.bench_function(format!("{}/meshguard", alg.as_str()), |b| {
            b.iter(|| verify(black_box(&token), &validation, &jwks, NOW).unwrap())
        });
    }
    // The floor: aws-lc-rs verifying one RS256 and one ES256 signature, key already parsed.
    let rsa = signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let msg = b"header.payload";
    let mut sig = vec![0; rsa.public_modulus_len()];
    rsa.sign(
        &signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        msg,
        &mut sig,
    )
    .unwrap();
    let rsa_pub = signature::ParsedPublicKey::new(
        &signature::RSA_PKCS1_2048_8192_SHA256,
        rsa.public_key().as_ref(),
    )
    .unwrap();
    g.bench_function("RS256/raw-aws-lc-rs", |b| {
        b.iter(|| rsa_pub.verify_sig(black_box(msg), &sig).unwrap())
    });
    let ec =
        signature::EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let ec_sig = ec.sign(&aws_lc_rs::rand::SystemRandom::new(), msg).unwrap();
    let ec_pub = UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_FIXED,
        ec.public_key().as_ref().to_vec(),
    );
    g.bench_function("ES256/raw-aws-lc-rs", |b| {
        b.iter(|| ec_pub.verify(black_box(msg), ec_sig.as_ref()).unwrap())
    });
    g.finish();
}

/// A key store with the demo keys under a remote source and a verified-token cache.
struct Store {
    jwks: Jwks,
    cache: VerifiedCache,
}

impl KeyStore for Store {
    fn remote(&self, _: &RemoteKeySource) -> Option<Jwks> {
        Some(self.jwks.clone())
    }
    fn verified_cache(&self) -> Option<&VerifiedCache> {
        Some(&self.cache)
    }
}

fn compile(text: &str) -> CompiledWorkload {
    let set = load_str(Path::new("bench.yaml"), text, &LoadOptions::default()).unwrap();
    let labels = BTreeMap::from([("app".to_string(), "httpbin".to_string())]);
    meshguard_policy::compile(&set, &Workload::new("foo", labels)).unwrap()
}

fn request(cw: &CompiledWorkload, token: Option<&str>, keys: &dyn KeyStore, path: &str) -> u16 {
    let mut headers = HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
    }
    headers.insert("user-agent", HeaderValue::from_static("bench"));
    evaluate(
        cw,
        HttpRequest {
            method: "GET",
            path,
            host: "httpbin.foo:8000",
            scheme: "http",
            headers: &mut headers,
            source_ip: Some("10.0.0.1".parse().unwrap()),
            remote_ip: None,
            destination_ip: None,
            destination_port: Some(8000),
            sni: None,
            peer_identity: None,
        },
        &EvalOptions {
            path_normalization: PathNormalization::Base,
            now: NOW,
            keys,
            explain: false,
        },
    )
    .status()
}

fn seed_step4() -> String {
    let dir = root().join("examples/step4-require-claim");
    let ra = std::fs::read_to_string(dir.join("request-authentication.yaml")).unwrap();
    let ap = std::fs::read_to_string(dir.join("authorization-policy.yaml")).unwrap();
    format!("{ra}\n---\n{ap}")
}

fn decisions(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide");
    g.measurement_time(Duration::from_secs(3)).sample_size(30);
    let token =
        std::fs::read_to_string(root().join("testdata/istio-demo/groups-scope.jwt")).unwrap();
    let token = token.trim();
    let cw = compile(&seed_step4());
    let cached = Store {
        jwks: Jwks::empty(),
        cache: VerifiedCache::new(1000),
    };
    assert_eq!(request(&cw, Some(token), &cached, "/headers"), 200);
    g.bench_function("step4/verify-every-time", |b| {
        b.iter(|| request(&cw, Some(token), &NoRemoteKeys, "/headers"))
    });
    g.bench_function("step4/cache-hit", |b| {
        b.iter(|| request(&cw, Some(token), &cached, "/headers"))
    });
    g.bench_function("step4/no-token", |b| {
        b.iter(|| request(&cw, None, &NoRemoteKeys, "/headers"))
    });

    // N ALLOW rules that do not match, then the one that does: the worst case walks them all.
    for n in [1usize, 100, 1000] {
        let mut rules = String::new();
        for i in 0..n.saturating_sub(1) {
            rules.push_str(&format!(
                "  - to: [{{operation: {{paths: [\"/api/{i}/*\"], methods: [POST]}}}}]\n    when: [{{key: \"request.headers[x-team]\", values: [team{i}]}}]\n"
            ));
        }
        rules.push_str("  - to: [{operation: {paths: [\"/headers\"]}}]\n");
        let text = format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: many, namespace: foo}}\nspec:\n  rules:\n{rules}"
        );
        let cw = compile(&text);
        assert_eq!(cw.rule_count(), n);
        assert_eq!(request(&cw, None, &NoRemoteKeys, "/headers"), 200);
        g.bench_function(format!("rules/{n}"), |b| {
            b.iter(|| request(&cw, None, &NoRemoteKeys, "/headers"))
        });
    }
    g.finish();
}

fn loading(c: &mut Criterion) {
    let mut g = c.benchmark_group("load");
    g.measurement_time(Duration::from_secs(10)).sample_size(10);
    let mut docs = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        docs.push(format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{i}, namespace: ns{}}}\nspec:\n  selector: {{matchLabels: {{app: a{}}}}}\n  rules:\n  - from: [{{source: {{requestPrincipals: [\"iss/sub{i}\"]}}}}]\n    to: [{{operation: {{paths: [\"/api/{i}/*\"], methods: [GET]}}}}]\n    when: [{{key: \"request.auth.claims[groups]\", values: [g{i}]}}]\n",
            i % 1000,
            i % 7
        ));
    }
    let text = docs.join("---\n");
    g.bench_function("10k-policies-1k-namespaces", |b| {
        b.iter(|| {
            let set = load_str(
                Path::new("mesh.yaml"),
                black_box(&text),
                &LoadOptions::default(),
            )
            .unwrap();
            let wl = Workload::new(
                "ns1",
                BTreeMap::from([("app".to_string(), "a1".to_string())]),
            );
            meshguard_policy::compile(&set, &wl).unwrap().rule_count()
        })
    });
    g.finish();
}

criterion_group!(benches, verification, decisions, loading);
criterion_main!(benches);
