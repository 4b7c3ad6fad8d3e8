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
    run_at(cw, token, store, 1_700_000_000)
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
        rotated.denial.unwrap().reply.body,
        "Jwks doesn't have key to match kid or alg from Jwt"
    );
    assert_eq!(
        rotated.unknown_kid,
        vec![RemoteKeySource::JwksUri(
            "https://issuer.example/jwks.json".into()
        )]
    );

    let none = run(&cw, &token(demo_kid), &Store(None));
    assert_eq!(
        none.denial.unwrap().reply.body,
        "Jwks remote fetch is failed"
    );
}

/// A store with a cache and a keys generation the test controls.
struct CachingStore {
    jwks: Option<Jwks>,
    generation: u64,
    cache: meshguard_engine::VerifiedCache,
}

impl KeyStore for CachingStore {
    fn remote(&self, _: &RemoteKeySource) -> Option<Jwks> {
        self.jwks.clone()
    }
    fn remote_generation(&self, _: &RemoteKeySource) -> u64 {
        self.generation
    }
    fn verified_cache(&self) -> Option<&meshguard_engine::VerifiedCache> {
        Some(&self.cache)
    }
}

fn run_at(cw: &CompiledWorkload, token: &str, store: &dyn KeyStore, now: u64) -> Outcome {
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    eval_request(cw, &mut headers, "/", store, now)
}

/// `GET path` with these headers, at `now`.
fn eval_request(
    cw: &CompiledWorkload,
    headers: &mut HeaderMap,
    path: &str,
    store: &dyn KeyStore,
    now: u64,
) -> Outcome {
    evaluate(
        cw,
        HttpRequest {
            method: "GET",
            path,
            host: "h",
            scheme: "http",
            headers,
            source_ip: None,
            remote_ip: None,
            destination_ip: None,
            destination_port: None,
            sni: None,
            peer_identity: None,
        },
        &EvalOptions {
            path_normalization: PathNormalization::Base,
            now,
            keys: store,
            explain: false,
        },
    )
}

#[test]
fn verified_tokens_are_cached_but_time_and_key_changes_still_apply() {
    let cw = compiled();
    let jwks = Jwks::parse(
        &std::fs::read_to_string(root().join("testdata/istio-demo/jwks.json")).unwrap(),
    )
    .unwrap();
    let demo_kid = "DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ";
    let t = token(demo_kid); // exp 1_800_000_000
    let mut store = CachingStore {
        jwks: Some(jwks),
        generation: 1,
        cache: meshguard_engine::VerifiedCache::new(100),
    };
    assert_eq!(run_at(&cw, &t, &store, 1_700_000_000).status(), 200);
    assert_eq!(store.cache.len(), 1, "the verified token is remembered");
    let hit = run_at(&cw, &t, &store, 1_700_000_001);
    assert_eq!(hit.status(), 200);
    assert_eq!(hit.principal.as_deref(), Some("testing@secure.istio.io/a"));
    assert_eq!(store.cache.len(), 1);
    // The clock is checked on every hit: past exp + 60 s the cached token is expired.
    let late = run_at(&cw, &t, &store, 1_800_000_061);
    assert_eq!(late.denial.unwrap().reply.body, "Jwt is expired");
    // New keys (a new generation) without the token's key: the cache is not consulted.
    store.generation = 2;
    store.jwks = Some(Jwks::parse(r#"{"keys":[]}"#).unwrap());
    let rotated = run_at(&cw, &t, &store, 1_700_000_002);
    assert_eq!(
        rotated.status(),
        401,
        "a token cached under old keys must not pass"
    );
    // Tampered tokens are never cached.
    let mut bad = t.clone();
    bad.pop();
    bad.push(if t.ends_with('A') { 'B' } else { 'A' });
    store.generation = 1;
    store.jwks = Some(
        Jwks::parse(
            &std::fs::read_to_string(root().join("testdata/istio-demo/jwks.json")).unwrap(),
        )
        .unwrap(),
    );
    let before = store.cache.len();
    assert_eq!(run_at(&cw, &bad, &store, 1_700_000_003).status(), 401);
    assert_eq!(store.cache.len(), before);
}

/// One request with these headers and path: (status, body, principal, headers forwarded).
fn outcome_of(
    cw: &CompiledWorkload,
    headers: &[(&str, String)],
    path: &str,
    store: &dyn KeyStore,
) -> (u16, String, Option<String>, Vec<(String, String)>) {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let out = eval_request(cw, &mut map, path, store, 1_700_000_000);
    let forwarded = map
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    (
        out.status(),
        out.denial.map(|d| d.reply.body).unwrap_or_default(),
        out.principal.as_deref().map(str::to_string),
        forwarded,
    )
}

#[test]
fn cached_answers_equal_uncached_answers_however_the_token_is_sent() {
    // The cache may be keyed by the whole Authorization value when that header alone can
    // carry the token. Whatever the request looks like, a warm cache must answer exactly as
    // no cache does.
    let cw = compiled();
    let jwks = Jwks::parse(
        &std::fs::read_to_string(root().join("testdata/istio-demo/jwks.json")).unwrap(),
    )
    .unwrap();
    let t = token("DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ");
    let bearer = format!("Bearer {t}");
    let auth = |v: &str| ("authorization", v.to_string());
    let variants: Vec<(Vec<(&str, String)>, String)> = vec![
        (vec![auth(&bearer)], "/".into()),
        (vec![auth(&format!("Bearer  \"{t}\""))], "/".into()),
        (vec![auth(&bearer), auth(&bearer)], "/".into()),
        (vec![auth(&format!("{bearer}, {bearer}"))], "/".into()),
        (vec![auth(&format!("Bearer {t}x!"))], "/".into()),
        (vec![auth(&bearer)], format!("/?access_token={t}")),
        (vec![auth(&bearer)], "/?other=1".into()),
        (vec![], format!("/?access_token={t}")),
        (vec![auth("Bearer ")], "/".into()),
        (vec![auth(&t)], "/".into()),
    ];
    let cache = CachingStore {
        jwks: Some(jwks.clone()),
        generation: 1,
        cache: meshguard_engine::VerifiedCache::new(100),
    };
    for (headers, path) in &variants {
        let want = outcome_of(&cw, headers, path, &Store(Some(jwks.clone())));
        for round in 0..2 {
            let got = outcome_of(&cw, headers, path, &cache);
            assert_eq!(got, want, "round {round}: {headers:?} {path}");
        }
    }
    // And in the other order: every variant once more against the now warm cache.
    for (headers, path) in &variants {
        let want = outcome_of(&cw, headers, path, &Store(Some(jwks.clone())));
        assert_eq!(
            outcome_of(&cw, headers, path, &cache),
            want,
            "{headers:?} {path}"
        );
    }
    assert!(!cache.cache.is_empty(), "something was cached");
}
