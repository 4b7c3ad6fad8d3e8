//! Providers with remote keys: the engine asks a key store, reports unknown kids so that the
//! caller can refetch, and fails closed without keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderValue};
use meshguard_engine::{EvalOptions, HttpRequest, KeyStore, Outcome, PathNormalization, evaluate};
use meshguard_jwt::{Algorithm, Jwks, SigningKey, sign};
use meshguard_model::{LoadOptions, Workload, load_str};
use meshguard_policy::{CompiledWorkload, RemoteKeySource};
use serde_json::{Map, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Store(Option<Jwks>);

impl KeyStore for Store {
    fn remote(&self, source: &RemoteKeySource) -> Option<Jwks> {
        assert_eq!(
            source,
            &RemoteKeySource::JwksUri("https://issuer.example/jwks.json".into())
        );
        self.0.clone()
    }
}

fn compiled() -> CompiledWorkload {
    let text = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: ra, namespace: foo}\nspec:\n  jwtRules:\n  - issuer: testing@secure.istio.io\n    jwksUri: https://issuer.example/jwks.json\n    timeout: 2s\n  - issuer: other@example.com\n    jwksUri: https://issuer.example/jwks.json\n";
    let set = load_str(Path::new("ra.yaml"), text, &LoadOptions::default()).unwrap();
    meshguard_policy::compile(&set, &Workload::new("foo", BTreeMap::new())).unwrap()
}

fn run(cw: &CompiledWorkload, token: &str, store: &dyn KeyStore) -> Outcome {
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    evaluate(
        cw,
        HttpRequest {
            method: "GET",
            path: "/",
            host: "h",
            scheme: "http",
            headers: &mut headers,
            source_ip: None,
            remote_ip: None,
            destination_ip: None,
            destination_port: None,
            sni: None,
        },
        &EvalOptions {
            path_normalization: PathNormalization::Base,
            now: 1_700_000_000,
            keys: store,
            explain: false,
        },
    )
}

fn token(kid: &str) -> String {
    let key = SigningKey::from_pem(
        &std::fs::read_to_string(root().join("testdata/istio-demo/key.pem")).unwrap(),
    )
    .unwrap();
    let mut header = Map::new();
    header.insert("kid".into(), json!(kid));
    let claims = json!({"iss": "testing@secure.istio.io", "sub": "a", "exp": 1_800_000_000u64});
    sign(Algorithm::RS256, &key, &header, claims.as_object().unwrap()).unwrap()
}

#[test]
fn remote_keys_verify_report_unknown_kids_and_fail_closed() {
    let cw = compiled();
    assert_eq!(
        cw.remote_sources(),
        vec![(
            &RemoteKeySource::JwksUri("https://issuer.example/jwks.json".into()),
            std::time::Duration::from_secs(5)
        )],
        "one source for two rules, the longest timeout"
    );
    let jwks = Jwks::parse(
        &std::fs::read_to_string(root().join("testdata/istio-demo/jwks.json")).unwrap(),
    )
    .unwrap();
    let demo_kid = "DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ";

    let ok = run(&cw, &token(demo_kid), &Store(Some(jwks.clone())));
    assert_eq!(ok.status(), 200);
    assert!(ok.unknown_kid.is_empty());

    let rotated = run(&cw, &token("new-key"), &Store(Some(jwks)));
    assert_eq!(rotated.status(), 401);
    assert_eq!(
        rotated.denial.unwrap().body,
        "Jwks doesn't have key to match kid or alg from Jwt"
    );
    assert_eq!(
        rotated.unknown_kid,
        vec![RemoteKeySource::JwksUri(
            "https://issuer.example/jwks.json".into()
        )]
    );

    let none = run(&cw, &token(demo_kid), &Store(None));
    assert_eq!(none.denial.unwrap().body, "Jwks remote fetch is failed");
}
