//! End-to-end tests of the manager against real servers on 127.0.0.1.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use meshguard_jwks::{
    FetchLabels, JwksManager, JwksMetrics, JwksSettings, RemoteKeySource, SourceStatus,
};
use support::{
    Reply, TempFile, TestServer, eventually, free_addr, jwks_json, kids, tls_acceptor_and_ca_pem,
};

/// Rule timeout used unless a test is about timeouts.
const T: Duration = Duration::from_secs(2);

/// Short retry delays; no periodic refresh during a test unless it asks for one.
fn settings() -> JwksSettings {
    JwksSettings {
        refresh_interval: Duration::from_secs(60),
        max_staleness: Duration::from_secs(3600),
        unknown_kid_min_interval: Duration::from_secs(30),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..JwksSettings::default()
    }
}

fn manager(settings: JwksSettings) -> JwksManager {
    JwksManager::new(settings, JwksMetrics::default()).unwrap()
}

fn uri(u: String) -> RemoteKeySource {
    RemoteKeySource::JwksUri(u)
}

fn status_of(m: &JwksManager, uri: &str) -> SourceStatus {
    m.status()
        .into_iter()
        .find(|s| s.uri == uri)
        .expect("source in status")
}

fn last_error(m: &JwksManager, uri: &str) -> String {
    status_of(m, uri)
        .last_error
        .map(|e| e.message)
        .unwrap_or_default()
}

#[tokio::test]
async fn fetches_a_valid_jwks() {
    let server = TestServer::start().await;
    server.set("/jwks", Reply::json(jwks_json(&["k1"])));
    let metrics = JwksMetrics::default();
    let m = JwksManager::new(settings(), metrics.clone()).unwrap();
    let url = server.url("/jwks");
    assert!(m.ready(), "no source yet: ready");

    let keys = m.source(&uri(url.clone()), T);
    let jwks = keys.wait_first_fetch(T).await.expect("keys");
    assert_eq!(kids(&jwks), ["k1"]);
    assert_eq!(kids(&keys.current().unwrap()), ["k1"]);
    assert_eq!(keys.generation(), 1);
    assert!(m.ready());
    m.first_fetches_done().await;

    let st = status_of(&m, &url);
    assert_eq!(st.kind, "jwks_uri");
    assert_eq!(st.source, url);
    assert_eq!(st.jwks_uri.as_deref(), Some(url.as_str()));
    assert_eq!(st.key_ids, [Some("k1".to_owned())]);
    assert!(st.last_success_unix.is_some() && st.last_error.is_none());
    assert!(st.keys_in_use && !st.stale && st.first_fetch_done);
    assert_eq!((st.fetches, st.failures), (1, 0));
    assert!(st.next_refresh_unix.unwrap() >= st.last_success_unix.unwrap() + 59);
    assert_eq!(st.timeout_ms, 2000);
    // config_dump shape.
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["key_ids"][0], "k1");

    let ok = FetchLabels {
        uri: url.clone(),
        result: "success".into(),
    };
    assert_eq!(metrics.fetches.get_or_create(&ok).get(), 1);
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("meshguard_jwks_fetches_total{uri="), "{text}");
    assert!(
        text.contains("meshguard_jwks_key_age_seconds{uri="),
        "{text}"
    );
    assert_eq!(server.hits("/jwks"), 1);
}

#[tokio::test]
async fn https_with_extra_ca_and_without() {
    let (acceptor, ca_pem) = tls_acceptor_and_ca_pem();
    let server = TestServer::start_tls(acceptor).await;
    server.set("/jwks", Reply::json(jwks_json(&["tls-key"])));
    let url = server.url("/jwks");
    assert!(url.starts_with("https://localhost:"));

    let ca = TempFile::new("ca.pem", &ca_pem);
    let trusted = manager(JwksSettings {
        extra_ca: Some(ca.path().to_owned()),
        ..settings()
    });
    let jwks = trusted
        .source(&uri(url.clone()), T)
        .wait_first_fetch(T)
        .await
        .unwrap_or_else(|| panic!("https fetch failed: {}", last_error(&trusted, &url)));
    assert_eq!(kids(&jwks), ["tls-key"]);

    // Same server, system roots only: the test CA is unknown.
    let untrusted = manager(settings());
    let keys = untrusted.source(&uri(url.clone()), T);
    assert!(keys.wait_first_fetch(T).await.is_none());
    let e = last_error(&untrusted, &url);
    assert!(e.contains("certificate"), "{e}");
}

#[tokio::test]
async fn extra_ca_problems_fail_new_naming_the_file() {
    let missing = std::env::temp_dir().join("meshguard-jwks-test-missing-ca.pem");
    let e = JwksManager::new(
        JwksSettings {
            extra_ca: Some(missing),
            ..settings()
        },
        JwksMetrics::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("meshguard-jwks-test-missing-ca.pem"), "{e}");

    let empty = TempFile::new("empty-ca.pem", "");
    let e = JwksManager::new(
        JwksSettings {
            extra_ca: Some(empty.path().to_owned()),
            ..settings()
        },
        JwksMetrics::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("empty-ca.pem") && e.contains("no certificate"),
        "{e}"
    );
}

#[tokio::test]
async fn unknown_kid_refetch_picks_up_rotation_once_per_interval() {
    let server = TestServer::start().await;
    server.set("/jwks", Reply::json(jwks_json(&["old"])));
    let m = manager(settings());
    let keys = m.source(&uri(server.url("/jwks")), T);
    assert_eq!(kids(&keys.wait_first_fetch(T).await.unwrap()), ["old"]);
    assert_eq!(server.hits("/jwks"), 1);

    // The IdP rotates: the very first request with the new kid gets the new keys, although
    // the last (periodic) fetch was just now.
    server.set("/jwks", Reply::json(jwks_json(&["new", "old"])));
    let jwks = keys.refetch_for_unknown_kid(T).await.unwrap();
    assert_eq!(kids(&jwks), ["new", "old"]);
    assert_eq!(server.hits("/jwks"), 2);
    assert_eq!(keys.generation(), 2);

    // Within the minimum interval: no fetch, the current keys.
    server.set("/jwks", Reply::json(jwks_json(&["newer"])));
    let jwks = keys.refetch_for_unknown_kid(T).await.unwrap();
    assert_eq!(kids(&jwks), ["new", "old"]);
    assert_eq!(server.hits("/jwks"), 2);
    assert_eq!(keys.generation(), 2);
}

#[tokio::test]
async fn unchanged_keys_keep_the_generation() {
    let server = TestServer::start().await;
    server.set("/jwks", Reply::json(jwks_json(&["same"])));
    let m = manager(JwksSettings {
        unknown_kid_min_interval: Duration::ZERO,
        ..settings()
    });
    let keys = m.source(&uri(server.url("/jwks")), T);
    keys.wait_first_fetch(T).await.unwrap();
    keys.refetch_for_unknown_kid(T).await.unwrap();
    assert_eq!(server.hits("/jwks"), 2);
    assert_eq!(keys.generation(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_unknown_kid_refetches_makes_one_fetch() {
    let server = TestServer::start().await;
    server.set("/jwks", Reply::json(jwks_json(&["k1"])));
    let m = manager(settings());
    let keys = m.source(&uri(server.url("/jwks")), T);
    keys.wait_first_fetch(T).await.unwrap();

    // Slow answer, so every caller arrives while the one refetch is in flight.
    server.set(
        "/jwks",
        Reply::json(jwks_json(&["k2"])).delayed(Duration::from_millis(200)),
    );
    let mut calls = Vec::new();
    for _ in 0..50 {
        let keys = keys.clone();
        calls.push(tokio::spawn(async move {
            keys.refetch_for_unknown_kid(T).await
        }));
    }
    for call in calls {
        let jwks = call.await.unwrap().expect("keys");
        assert_eq!(kids(&jwks), ["k2"]);
    }
    assert_eq!(server.hits("/jwks"), 2);
}

#[tokio::test]
async fn server_down_at_start_then_recovers_without_restart() {
    let addr = free_addr().await;
    let url = format!("http://{addr}/jwks");
    let m = manager(settings());
    let keys = m.source(&uri(url.clone()), T);

    assert!(keys.wait_first_fetch(T).await.is_none());
    assert!(keys.current().is_none());
    assert!(
        m.ready(),
        "ready once the first attempt finished, even failed"
    );
    let st = status_of(&m, &url);
    assert!(st.first_fetch_done && !st.keys_in_use && st.failures >= 1);
    let e = st.last_error.unwrap().message;
    assert!(
        e.contains(&url) && e.to_lowercase().contains("connect"),
        "{e}"
    );

    // The IdP comes up: picked up by the backoff retries (50..200 ms), no restart.
    let server = TestServer::start_on(addr, None).await;
    server.set("/jwks", Reply::json(jwks_json(&["late"])));
    let start = Instant::now();
    eventually(Duration::from_secs(2), "keys after recovery", || {
        keys.current().is_some()
    })
    .await;
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(kids(&keys.current().unwrap()), ["late"]);
    assert_eq!(status_of(&m, &url).consecutive_failures, 0);
}

#[tokio::test]
async fn server_down_later_keeps_the_last_keys() {
    let server = TestServer::start().await;
    server.set("/jwks", Reply::json(jwks_json(&["k1"])));
    let url = server.url("/jwks");
    let m = manager(JwksSettings {
        refresh_interval: Duration::from_millis(100),
        ..settings()
    });
    let keys = m.source(&uri(url.clone()), T);
    keys.wait_first_fetch(T).await.unwrap();

    server.stop();
    eventually(Duration::from_secs(2), "a failed refresh", || {
        status_of(&m, &url).last_error.is_some()
    })
    .await;
    assert_eq!(kids(&keys.current().expect("last good keys")), ["k1"]);
    let st = status_of(&m, &url);
    assert!(st.keys_in_use && !st.stale && st.consecutive_failures >= 1);
    assert_eq!(st.key_ids, [Some("k1".to_owned())]);
}

#[tokio::test]
async fn invalid_refresh_keeps_the_previous_keys() {
    let server = TestServer::start().await;
    server.set("/jwks", Reply::json(jwks_json(&["good"])));
    let url = server.url("/jwks");
    let m = manager(JwksSettings {
        unknown_kid_min_interval: Duration::ZERO,
        ..settings()
    });
    let keys = m.source(&uri(url.clone()), T);
    keys.wait_first_fetch(T).await.unwrap();

    for bad in [r#"{"keys": []}"#, r#"{"keys": [{"kty": "EC"}]}"#, "oops"] {
        server.set("/jwks", Reply::json(bad));
        let jwks = keys
            .refetch_for_unknown_kid(T)
            .await
            .expect("previous keys");
        assert_eq!(kids(&jwks), ["good"]);
    }
    assert_eq!(keys.generation(), 1);
    assert!(last_error(&m, &url).contains("not a JSON object"));
}

#[tokio::test]
async fn max_staleness_fails_closed_then_recovers() {
    let server = TestServer::start().await;
    server.set("/jwks", Reply::json(jwks_json(&["k1"])));
    let url = server.url("/jwks");
    let m = manager(JwksSettings {
        refresh_interval: Duration::from_millis(50),
        max_staleness: Duration::from_millis(300),
        ..settings()
    });
    let keys = m.source(&uri(url.clone()), T);
    keys.wait_first_fetch(T).await.unwrap();

    server.stop();
    eventually(Duration::from_secs(2), "keys to go stale", || {
        keys.current().is_none()
    })
    .await;
    let st = status_of(&m, &url);
    assert!(st.stale && !st.keys_in_use);
    assert_eq!(st.key_ids, [Some("k1".to_owned())], "still shown");
    assert!(st.last_error.is_some());

    server.restart().await;
    eventually(Duration::from_secs(2), "fresh keys", || {
        keys.current().is_some()
    })
    .await;
    assert!(!status_of(&m, &url).stale);
}

#[tokio::test]
async fn slow_server_is_bounded_by_the_timeouts() {
    let server = TestServer::start().await;
    server.set(
        "/slow",
        Reply::json(jwks_json(&["k"])).delayed(Duration::from_secs(5)),
    );
    let url = server.url("/slow");
    let m = manager(settings());
    let keys = m.source(&uri(url.clone()), Duration::from_millis(400));

    // The caller's wait is bounded by its own timeout...
    let start = Instant::now();
    assert!(
        keys.wait_first_fetch(Duration::from_millis(100))
            .await
            .is_none()
    );
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(90), "{waited:?}");
    assert!(
        !keys.first_fetch_done() && !m.ready(),
        "first fetch still in flight"
    );

    // ...and the fetch by the rule timeout.
    assert!(
        keys.wait_first_fetch(Duration::from_secs(5))
            .await
            .is_none()
    );
    let total = start.elapsed();
    assert!(
        total >= Duration::from_millis(350) && total < Duration::from_millis(1500),
        "{total:?}"
    );
    assert!(m.ready());
    let e = last_error(&m, &url);
    assert!(e.contains("timed out after 400ms"), "{e}");
}

#[tokio::test]
async fn bad_responses_are_failures_with_clear_messages() {
    let server = TestServer::start().await;
    let big = jwks_json(&["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]);
    assert!(big.len() > 1024);
    let cases = [
        (
            "/garbage",
            Reply::json("<html>502 Bad Gateway</html>"),
            "not a JSON object",
        ),
        ("/no-keys", Reply::json("{}"), "no \"keys\" member"),
        (
            "/keys-object",
            Reply::json(r#"{"keys": {}}"#),
            "\"keys\" is not an array",
        ),
        ("/empty", Reply::json(""), "empty response body"),
        (
            "/no-usable",
            Reply::json(r#"{"keys": [{"kty": "RSA", "kid": "x"}]}"#),
            "no usable key",
        ),
        (
            "/big",
            Reply::json(big.clone()),
            "response larger than 1024 bytes",
        ),
        (
            "/big-chunked",
            Reply::json(big).chunked(),
            "response larger than 1024 bytes",
        ),
        ("/missing", Reply::status(404), "HTTP status 404"),
        ("/error", Reply::status(503), "HTTP status 503"),
    ];
    let m = manager(JwksSettings {
        max_body_bytes: 1024,
        ..settings()
    });
    let mut all = Vec::new();
    for (path, reply, _) in &cases {
        server.set(path, reply.clone());
        all.push(m.source(&uri(server.url(path)), T));
    }
    m.first_fetches_done().await;
    for ((path, _, want), keys) in cases.iter().zip(&all) {
        assert!(keys.current().is_none(), "{path}");
        let e = last_error(&m, &server.url(path));
        assert!(e.contains(want), "{path}: got {e:?}, want {want:?}");
        assert!(e.contains(path), "{path}: the message names the URL: {e}");
    }
}

#[tokio::test]
async fn discovery_finds_the_jwks_uri() {
    let server = TestServer::start().await;
    let jwks_url = server.url("/protocol/certs");
    server.set(
        "/realms/r/.well-known/openid-configuration",
        Reply::json(
            serde_json::json!({"issuer": server.url("/realms/r"), "jwks_uri": jwks_url})
                .to_string(),
        ),
    );
    server.set("/protocol/certs", Reply::json(jwks_json(&["disc"])));
    let m = manager(settings());
    // One trailing '/' on the issuer is dropped, as istiod does.
    let source = RemoteKeySource::Discovery {
        issuer: server.url("/realms/r/"),
    };
    let keys = m.source(&source, T);
    assert_eq!(kids(&keys.wait_first_fetch(T).await.unwrap()), ["disc"]);
    let st = &m.status()[0];
    assert_eq!(st.kind, "discovery");
    assert_eq!(st.source, server.url("/realms/r/"));
    assert_eq!(
        st.uri,
        server.url("/realms/r/.well-known/openid-configuration")
    );
    assert_eq!(st.jwks_uri.as_deref(), Some(jwks_url.as_str()));

    // Discovery runs again on each refresh; if only it fails, the known JWKS URI is used.
    server.set(
        "/realms/r/.well-known/openid-configuration",
        Reply::status(500),
    );
    server.set("/protocol/certs", Reply::json(jwks_json(&["disc2"])));
    let jwks = keys.refetch_for_unknown_kid(T).await.unwrap();
    assert_eq!(kids(&jwks), ["disc2"]);
    assert_eq!(server.hits("/realms/r/.well-known/openid-configuration"), 2);
}

#[tokio::test]
async fn discovery_errors() {
    let server = TestServer::start().await;
    server.set(
        "/a/.well-known/openid-configuration",
        Reply::json(r#"{"issuer": "x"}"#),
    );
    server.set(
        "/b/.well-known/openid-configuration",
        Reply::json(r#"{"jwks_uri": "http://169.254.169.254/latest/meta-data/"}"#),
    );
    let m = manager(settings());
    for issuer in ["/a", "/b", "/c"] {
        m.source(
            &RemoteKeySource::Discovery {
                issuer: server.url(issuer),
            },
            T,
        );
    }
    m.first_fetches_done().await;
    let errors: Vec<String> = m
        .status()
        .into_iter()
        .map(|s| s.last_error.unwrap().message)
        .collect();
    assert!(
        errors[0].contains("discovery document") && errors[0].contains("no \"jwks_uri\""),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("refused") && errors[1].contains("metadata"),
        "{}",
        errors[1]
    );
    assert!(errors[2].contains("HTTP status 404"), "{}", errors[2]);
}

#[tokio::test]
async fn redirects_are_followed_and_loops_refused() {
    let server = TestServer::start().await;
    server.set("/jwks", Reply::json(jwks_json(&["moved"])));
    server.set("/old", Reply::redirect(301, "/older"));
    server.set("/older", Reply::redirect(307, &server.url("/jwks")));
    server.set("/loop-a", Reply::redirect(302, "/loop-b"));
    server.set("/loop-b", Reply::redirect(308, "loop-a"));
    server.set(
        "/evil",
        Reply::redirect(302, "http://169.254.169.254/latest/meta-data/"),
    );
    let m = manager(settings());

    let moved = m.source(&uri(server.url("/old")), T);
    assert_eq!(kids(&moved.wait_first_fetch(T).await.unwrap()), ["moved"]);
    assert_eq!(
        status_of(&m, &server.url("/old")).jwks_uri.as_deref(),
        Some(server.url("/old").as_str()),
        "the configured URI, not the redirect target"
    );

    let looping = m.source(&uri(server.url("/loop-a")), T);
    assert!(looping.wait_first_fetch(T).await.is_none());
    let e = last_error(&m, &server.url("/loop-a"));
    assert!(e.contains("too many redirects (more than 3)"), "{e}");
    assert_eq!(server.hits("/loop-a") + server.hits("/loop-b"), 4);

    let evil = m.source(&uri(server.url("/evil")), T);
    assert!(evil.wait_first_fetch(T).await.is_none());
    let e = last_error(&m, &server.url("/evil"));
    assert!(e.contains("refused to fetch from 169.254.169.254"), "{e}");
}

#[tokio::test]
async fn metadata_and_link_local_destinations_are_refused() {
    let m = manager(settings());
    let cases = [
        (
            "http://169.254.169.254/latest/meta-data/",
            "cloud metadata address",
        ),
        ("http://[fe80::1]:8080/jwks", "link-local"),
        ("http://[::ffff:169.254.169.254]/", "cloud metadata address"),
        ("http://100.100.100.200/latest/meta-data/", "Alibaba"),
        // A hostname (the decimal form of 169.254.169.254) that the system resolver turns
        // into the metadata address: refused after resolution, before connecting.
        (
            "http://2852039166/latest/meta-data/",
            "resolves only to refused addresses",
        ),
        ("ftp://127.0.0.1/jwks", "not http or https"),
    ];
    let start = Instant::now();
    for (url, _) in &cases {
        m.source(&uri(url.to_string()), T);
    }
    m.first_fetches_done().await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "no connection was attempted"
    );
    for (url, want) in cases {
        let e = last_error(&m, url);
        assert!(e.contains(want), "{url}: {e}");
    }
}

#[tokio::test]
async fn localhost_is_allowed() {
    let server = TestServer::start().await;
    server.set("/jwks", Reply::json(jwks_json(&["local"])));
    let url = format!("http://localhost:{}/jwks", server.addr().port());
    let m = manager(settings());
    let keys = m.source(&uri(url.clone()), T);
    let jwks = keys
        .wait_first_fetch(T)
        .await
        .unwrap_or_else(|| panic!("{}", last_error(&m, &url)));
    assert_eq!(kids(&jwks), ["local"]);
}

#[tokio::test]
async fn one_fetcher_per_distinct_source() {
    let server = TestServer::start().await;
    server.set("/jwks", Reply::json(jwks_json(&["k"])));
    server.set("/other", Reply::json(jwks_json(&["o"])));
    let m = manager(settings());
    let a = m.source(&uri(server.url("/jwks")), Duration::from_secs(1));
    let b = m.source(&uri(server.url("/jwks")), Duration::from_secs(3));
    let c = m
        .clone()
        .source(&uri(server.url("/jwks")), Duration::from_secs(2));
    let other = m.source(&uri(server.url("/other")), T);
    assert!(Arc::ptr_eq(&a, &b) && Arc::ptr_eq(&a, &c));
    assert!(!Arc::ptr_eq(&a, &other));
    m.first_fetches_done().await;
    assert!(a.current().is_some() && other.current().is_some());
    assert_eq!(server.hits("/jwks"), 1);
    assert_eq!(m.status().len(), 2);
    assert_eq!(
        status_of(&m, &server.url("/jwks")).timeout_ms,
        3000,
        "largest timeout wins"
    );
}

#[tokio::test]
async fn periodic_refresh_shutdown_and_retain() {
    let server = TestServer::start().await;
    server.set("/jwks", Reply::json(jwks_json(&["k"])));
    server.set("/other", Reply::json(jwks_json(&["o"])));
    let m = manager(JwksSettings {
        refresh_interval: Duration::from_millis(30),
        ..settings()
    });
    let keys = m.source(&uri(server.url("/jwks")), T);
    m.source(&uri(server.url("/other")), T);
    eventually(Duration::from_secs(2), "periodic refreshes", || {
        server.hits("/jwks") >= 3
    })
    .await;

    // A reload dropped the rule using /other: its task stops.
    let other = server.url("/other");
    assert_eq!(m.retain(|s| s.first_url() != other), 1);
    assert_eq!(m.status().len(), 1);
    // A request already handed to the connection before the abort may still land.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = server.hits("/other");
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(server.hits("/other"), before);

    m.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = server.hits("/jwks");
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(server.hits("/jwks"), before, "no fetch after shutdown");
    assert!(keys.current().is_some(), "handles keep their keys");
}

#[tokio::test]
async fn dropping_the_last_manager_stops_the_tasks() {
    let server = TestServer::start().await;
    server.set("/jwks", Reply::json(jwks_json(&["k"])));
    let m = manager(JwksSettings {
        refresh_interval: Duration::from_millis(30),
        ..settings()
    });
    let keys = m.source(&uri(server.url("/jwks")), T);
    keys.wait_first_fetch(T).await.unwrap();
    drop(m);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = server.hits("/jwks");
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(server.hits("/jwks"), before);
    assert!(keys.current().is_some());
}
