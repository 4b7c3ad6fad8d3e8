//! Remote JWKS through the real binary: `jwksUri` and discovery, key rotation on the first
//! request, an issuer that is down at start and recovers, readiness, `/config_dump`, and
//! `meshguard check` fetching once. The JWKS server is a small HTTP server started here.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use meshguard_jwt::{Algorithm, KeyKind, SigningKey, sign};
use serde_json::{Map, json};

mod support;

use support::fs::tmp;
use support::http::curl_status;
use support::proxy::{Proxy, Stdout, proxy_command, spawn};

/// An HTTP server answering every GET with the current body (or 503 while "down"). While
/// held, requests are counted in `hits` but not answered until `release`.
#[derive(Clone)]
struct JwksServer {
    addr: String,
    body: Arc<Mutex<String>>,
    down: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    held: Arc<(Mutex<bool>, Condvar)>,
}

impl JwksServer {
    fn start(body: String) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = JwksServer {
            addr: listener.local_addr().unwrap().to_string(),
            body: Arc::new(Mutex::new(body)),
            down: Arc::new(AtomicBool::new(false)),
            hits: Arc::new(AtomicUsize::new(0)),
            held: Arc::new((Mutex::new(false), Condvar::new())),
        };
        let s = server.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let n = stream.read(&mut buf).unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let path = req.split(' ').nth(1).unwrap_or("/").to_string();
                    s.hits.fetch_add(1, Ordering::SeqCst);
                    let (held, cv) = &*s.held;
                    drop(cv.wait_while(held.lock().unwrap(), |h| *h).unwrap());
                    let (status, body) = if s.down.load(Ordering::SeqCst) {
                        ("503 Service Unavailable", "down".to_string())
                    } else if path.ends_with("/.well-known/openid-configuration") {
                        (
                            "200 OK",
                            format!(
                                "{{\"issuer\":\"http://{}\",\"jwks_uri\":\"http://{}/keys\"}}",
                                s.addr, s.addr
                            ),
                        )
                    } else {
                        ("200 OK", s.body.lock().unwrap().clone())
                    };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        server
    }

    fn hold(&self) {
        *self.held.0.lock().unwrap() = true;
    }

    fn release(&self) {
        *self.held.0.lock().unwrap() = false;
        self.held.1.notify_all();
    }

    /// Waits (bounded) until the server has received at least `n` requests.
    fn wait_for_hits(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.hits.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "no request {n} within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn key() -> SigningKey {
    SigningKey::generate(KeyKind::EcP256).unwrap()
}

fn jwks_of(keys: &[(&SigningKey, &str)]) -> String {
    json!({"keys": keys.iter().map(|(k, kid)| k.public_jwk(Some(kid))).collect::<Vec<_>>()})
        .to_string()
}

fn token(key: &SigningKey, kid: &str, iss: &str) -> String {
    let mut header = Map::new();
    header.insert("kid".into(), json!(kid));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": iss, "sub": "alice", "exp": now + 600});
    sign(Algorithm::ES256, key, &header, claims.as_object().unwrap()).unwrap()
}

fn policy(dir: &Path, rule: &str) {
    std::fs::write(
        dir.join("ra.yaml"),
        format!("apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: remote, namespace: foo}}\nspec:\n  jwtRules:\n  - {rule}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: require, namespace: foo}}\nspec:\n  rules: [{{from: [{{source: {{requestPrincipals: ['*']}}}}]}}]\n"),
    )
    .unwrap();
}

/// Starts the proxy for namespace `foo` on the policies in `dir`, without an access log.
fn start(dir: &Path, extra: &[&str]) -> Proxy {
    spawn(
        proxy_command()
            .args(["--no-access-log", "--namespace", "foo", "--policies"])
            .arg(dir)
            .args(extra),
        Stdout::Null,
    )
}

/// (status, body)
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    match token {
        Some(t) => curl_status(&[url, "-H", &format!("Authorization: Bearer {t}")]),
        None => curl_status(&[url]),
    }
}

#[test]
fn jwks_uri_rotation_on_first_request() {
    let (k1, k2) = (key(), key());
    let server = JwksServer::start(jwks_of(&[(&k1, "k1")]));
    let dir = tmp("remote-rotation");
    policy(
        &dir,
        &format!(
            "{{issuer: https://issuer.example, jwksUri: 'http://{}/keys', timeout: 2s}}",
            server.addr
        ),
    );
    // The first fetch runs after the listeners open: until it has ended, the proxy is not
    // ready. Hold the issuer's answer to see that state for sure, then wait for readiness.
    server.hold();
    let p = start(&dir, &[]);
    let url = format!("{}/headers", p.base);
    let ready = format!("{}/healthz/ready", p.admin);
    server.wait_for_hits(1);
    assert_eq!(
        get(&ready, None),
        (503, "NOT READY: first JWKS fetch in progress\n".to_string())
    );
    server.release();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match get(&ready, None) {
            (200, body) => {
                assert_eq!(body, "LIVE\n");
                break;
            }
            (503, _) => assert!(Instant::now() < deadline, "not ready within 10 s"),
            other => panic!("readiness: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 1, "one fetch at start");
    assert_eq!(
        get(&url, Some(&token(&k1, "k1", "https://issuer.example"))).0,
        200
    );
    // The issuer rotates: the new kid is accepted on its first request.
    *server.body.lock().unwrap() = jwks_of(&[(&k1, "k1"), (&k2, "k2")]);
    assert_eq!(
        get(&url, Some(&token(&k2, "k2", "https://issuer.example"))).0,
        200
    );
    // The old key keeps working while it is in the set...
    assert_eq!(
        get(&url, Some(&token(&k1, "k1", "https://issuer.example"))).0,
        200
    );
    // ...and unknown kids do not cause a fetch per request (at most one per 30 s per URI).
    let before = server.hits.load(Ordering::SeqCst);
    for i in 0..20 {
        let (status, body) = get(
            &url,
            Some(&token(
                &k2,
                &format!("random-{i}"),
                "https://issuer.example",
            )),
        );
        assert_eq!(status, 401);
        assert_eq!(body, "Jwks doesn't have key to match kid or alg from Jwt");
    }
    assert!(
        server.hits.load(Ordering::SeqCst) - before <= 1,
        "unknown kids caused {} fetches",
        server.hits.load(Ordering::SeqCst) - before
    );
    let dump: serde_json::Value =
        serde_json::from_str(&get(&format!("{}/config_dump", p.admin), None).1).unwrap();
    let text = dump["jwks"].to_string();
    assert!(text.contains("k1") && text.contains("k2"), "{text}");
    let metrics = get(&format!("{}/metrics", p.admin), None).1;
    assert!(
        metrics.contains("meshguard_jwks_fetches_total"),
        "{metrics}"
    );
}

#[test]
fn issuer_down_at_start_then_recovers_without_restart() {
    let k = key();
    let server = JwksServer::start(jwks_of(&[(&k, "k")]));
    server.down.store(true, Ordering::SeqCst);
    let dir = tmp("remote-down");
    policy(
        &dir,
        &format!(
            "{{issuer: https://issuer.example, jwksUri: 'http://{}/keys', timeout: 1s}}",
            server.addr
        ),
    );
    let p = start(&dir, &[]);
    let url = format!("{}/headers", p.base);
    let t = token(&k, "k", "https://issuer.example");
    let (status, body) = get(&url, Some(&t));
    assert_eq!(
        (status, body.as_str()),
        (401, "Jwks remote fetch is failed")
    );
    // No token: still refused by the AuthorizationPolicy, not by JWT.
    assert_eq!(get(&url, None).0, 403);
    server.down.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(&url, Some(&t)).0 != 200 {
        assert!(Instant::now() < deadline, "never recovered");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn openid_discovery_from_the_issuer() {
    let k = key();
    let server = JwksServer::start(jwks_of(&[(&k, "k")]));
    let issuer = format!("http://{}", server.addr);
    let dir = tmp("remote-discovery");
    policy(&dir, &format!("{{issuer: '{issuer}'}}"));
    let p = start(&dir, &[]);
    assert_eq!(
        get(&format!("{}/get", p.base), Some(&token(&k, "k", &issuer))).0,
        200
    );
}

#[test]
fn check_fetches_remote_keys_once() {
    let k = key();
    let server = JwksServer::start(jwks_of(&[(&k, "k")]));
    let dir = tmp("remote-check");
    policy(
        &dir,
        &format!(
            "{{issuer: https://issuer.example, jwksUri: 'http://{}/keys'}}",
            server.addr
        ),
    );
    let t = token(&k, "k", "https://issuer.example");
    let out = Command::new(env!("CARGO_BIN_EXE_meshguard"))
        .args([
            "check",
            "--namespace",
            "foo",
            "--token",
            t.as_str(),
            "--policies",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    server.down.store(true, Ordering::SeqCst);
    let out = Command::new(env!("CARGO_BIN_EXE_meshguard"))
        .args([
            "check",
            "--namespace",
            "foo",
            "--token",
            t.as_str(),
            "--policies",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Jwks remote fetch is failed"), "{text}");
    assert!(text.contains("JWKS:"), "the fetch error is shown: {text}");
}

#[test]
fn readiness_waits_for_the_first_fetch_and_requests_wait_bounded() {
    // An issuer that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().flatten() {
            held.push(s);
        }
    });
    let dir = tmp("remote-ready");
    policy(
        &dir,
        &format!("{{issuer: https://issuer.example, jwksUri: 'http://{addr}/keys', timeout: 2s}}"),
    );
    let p = start(&dir, &[]);
    let (status, body) = get(&format!("{}/healthz/ready", p.admin), None);
    assert_eq!(
        (status, body.trim()),
        (503, "NOT READY: first JWKS fetch in progress")
    );
    let k = key();
    let t = Instant::now();
    let (status, body) = get(
        &format!("{}/get", p.base),
        Some(&token(&k, "k", "https://issuer.example")),
    );
    assert_eq!(
        (status, body.as_str()),
        (401, "Jwks remote fetch is failed")
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the request waited {:?}",
        t.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&format!("{}/healthz/ready", p.admin), None).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready after the first fetch failed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn unreadable_ca_file_is_a_start_up_error() {
    let dir = tmp("remote-ca");
    policy(
        &dir,
        "{issuer: https://issuer.example, jwksUri: 'https://127.0.0.1:1/keys'}",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_meshguard"))
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--jwks-ca-file",
            "/nonexistent/ca.pem",
            "--policies",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

#[test]
fn a_retired_key_stops_working_after_the_next_refresh() {
    let (k1, k2) = (key(), key());
    let server = JwksServer::start(jwks_of(&[(&k1, "k1"), (&k2, "k2")]));
    let dir = tmp("remote-retire");
    policy(
        &dir,
        &format!(
            "{{issuer: https://issuer.example, jwksUri: 'http://{}/keys'}}",
            server.addr
        ),
    );
    let p = start(&dir, &["--jwks-refresh-interval", "1s"]);
    let url = format!("{}/headers", p.base);
    let old = token(&k1, "k1", "https://issuer.example");
    assert_eq!(get(&url, Some(&old)).0, 200);
    // The issuer retires k1: after the next periodic refresh its tokens are refused.
    *server.body.lock().unwrap() = jwks_of(&[(&k2, "k2")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&url, Some(&old)).0 != 401 {
        assert!(Instant::now() < deadline, "the retired key kept working");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        get(&url, Some(&token(&k2, "k2", "https://issuer.example"))).0,
        200
    );
}
