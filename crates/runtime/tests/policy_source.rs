//! The policy-source seam: a watched source serves nothing (503, not ready) until its first
//! set, then its sets are compiled and swapped like file reloads; and the workload's labels
//! can change under either source.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use meshguard_model::{LoadOptions, PolicySet, Workload, load_str};
use meshguard_runtime::{
    PolicySource, RequestFacts, Runtime, RuntimeConfig, WatchedSource, reload,
};

/// A watched source that only reports: the test publishes its sets by hand.
#[derive(Debug)]
struct Fake;

impl WatchedSource for Fake {
    fn describe(&self) -> String {
        "the test's source".into()
    }
    fn pending(&self) -> Vec<String> {
        vec!["AuthorizationPolicy in istio-system: not listed yet: 403 forbidden".into()]
    }
    fn dump(&self) -> serde_json::Value {
        serde_json::json!({"type": "fake"})
    }
    fn resync(&self) {}
}

fn runtime(policies: PolicySource, labels: &str) -> Runtime {
    Runtime::load(RuntimeConfig {
        policies,
        workload: Workload::new("foo", meshguard_model::parse_labels(labels).unwrap()),
        path_normalization: Default::default(),
        token_cache: 0,
        jwks: Default::default(),
    })
    .unwrap()
}

fn set(yaml: &str) -> PolicySet {
    load_str(
        std::path::Path::new("test.yaml"),
        yaml,
        &LoadOptions {
            default_namespace: "foo".into(),
        },
    )
    .unwrap()
}

const DENY_ADMIN: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
";

async fn status(rt: &Runtime, path: &str) -> (u16, String, String) {
    let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let facts = RequestFacts {
        method: "GET",
        path,
        host: "localhost",
        scheme: "http",
        peer: addr,
        local: addr,
        remote_ip: addr.ip(),
        sni: None,
        peer_identity: None,
        now: 1_800_000_000,
        custom_after: None,
        request_id: "test",
    };
    let d = rt.decide(facts, &mut HeaderMap::new()).await;
    let reply = d.outcome.denial.as_ref().map(|d| d.reply.clone());
    (
        d.outcome.status(),
        reply.as_ref().map(|r| r.body.clone()).unwrap_or_default(),
        reply.map(|r| r.details).unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_watched_source_refuses_every_request_with_503_until_its_first_set() {
    let rt = runtime(PolicySource::Watched(Arc::new(Fake)), "app=httpbin");
    let state = rt.state();
    // Not an empty set that allows everything: a refusal, for any request.
    for path in ["/", "/admin", "/headers"] {
        assert_eq!(
            status(&rt, path).await,
            (
                503,
                "no policies loaded yet".to_string(),
                "policies_not_loaded".to_string()
            )
        );
    }
    let why = state.policies_ready().unwrap_err();
    assert_eq!(
        why,
        "waiting for the first complete list from the test's source: AuthorizationPolicy in istio-system: not listed yet: 403 forbidden"
    );
    let dump = state.dump();
    assert_eq!(dump["policies_loaded"], false);
    assert_eq!(dump["generation"], 0);
    assert_eq!(dump["source"]["type"], "fake");
    assert_eq!(rt.metrics().config_generation.get(), 0);

    // The first set: generation 1, decided as a file set would be.
    let out = reload::publish_now(state, rt.metrics(), set(DENY_ADMIN));
    assert!(matches!(
        out,
        meshguard_runtime::state::ReloadOutcome::Applied { generation: 1 }
    ));
    assert!(state.policies_ready().is_ok());
    assert_eq!(status(&rt, "/").await.0, 200);
    assert_eq!(status(&rt, "/admin").await.0, 403);
    assert_eq!(rt.metrics().config_generation.get(), 1);
    // An empty set later is a set like any other: everything allowed, as Istio does.
    reload::publish_now(state, rt.metrics(), PolicySet::default());
    assert_eq!(status(&rt, "/admin").await.0, 200);
    assert_eq!(state.snapshot().generation, 2);
}

#[tokio::test]
async fn a_published_set_that_does_not_compile_keeps_the_last_good_one() {
    let rt = runtime(PolicySource::Watched(Arc::new(Fake)), "app=httpbin");
    let state = rt.state();
    reload::publish_now(state, rt.metrics(), set(DENY_ADMIN));
    let mut bad = set(DENY_ADMIN);
    bad.authorization_policies[0]
        .spec
        .rules
        .as_mut()
        .unwrap()
        .push(
            serde_json::from_value(
                serde_json::json!({"to": [{"operation": {"ports": ["99999"]}}]}),
            )
            .unwrap(),
        );
    let out = reload::publish_now(state, rt.metrics(), bad);
    assert!(matches!(
        out,
        meshguard_runtime::state::ReloadOutcome::Failed(_)
    ));
    assert_eq!(state.snapshot().generation, 1);
    assert_eq!(status(&rt, "/admin").await.0, 403);
    let dump = state.dump();
    assert!(
        dump["last_reload_error"]["errors"][0]
            .as_str()
            .unwrap()
            .contains("bad port (99999)"),
        "{dump}"
    );
}

#[tokio::test]
async fn new_labels_recompile_the_files_for_them() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("labels-change");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("p.yaml"), DENY_ADMIN).unwrap();
    let rt = runtime(PolicySource::Files(vec![dir.clone()]), "app=other");
    assert_eq!(
        status(&rt, "/admin").await.0,
        200,
        "the selector does not select app=other"
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    rt.spawn_reload(false, async move {
        let _ = stopped.await;
    });
    let mut changes = rt.state().subscribe_workload();
    assert!(
        rt.state()
            .set_labels(meshguard_model::parse_labels("app=httpbin").unwrap())
    );
    assert!(
        !rt.state()
            .set_labels(meshguard_model::parse_labels("app=httpbin").unwrap()),
        "no change"
    );
    assert_eq!(changes.borrow_and_update().labels["app"], "httpbin");
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt.state().snapshot().generation < 2 {
        assert!(Instant::now() < deadline, "no reload for the new labels");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status(&rt, "/admin").await.0, 403);
    let _ = stop.send(());
}

#[tokio::test]
async fn a_followed_labels_file_changes_the_workload() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("labels-file");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("labels");
    std::fs::write(&file, "app=\"other\"\npod-template-hash=\"abc\"").unwrap();
    let rt = runtime(PolicySource::Watched(Arc::new(Fake)), "");
    let state = rt.state().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let follow = reload::follow_labels_file(state.clone(), file.clone(), async move {
        let _ = stopped.await;
    });
    // Read once when set up.
    assert_eq!(state.workload().labels["app"], "other");
    let task = tokio::spawn(follow);
    // kubelet writes the new file beside the old one and swaps it in.
    std::fs::write(dir.join(".tmp"), "app=\"httpbin\"").unwrap();
    std::fs::rename(dir.join(".tmp"), &file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while state.workload().labels.get("app").map(String::as_str) != Some("httpbin") {
        assert!(Instant::now() < deadline, "the new labels were not read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A file that does not parse is refused with its name and line (the follower then keeps
    // the labels in use).
    std::fs::write(dir.join("bad"), "app=httpbin-unquoted").unwrap();
    let e = reload::read_labels_file(&dir.join("bad")).unwrap_err();
    assert_eq!(
        e,
        format!(
            "labels file {}: line 1: \"app=httpbin-unquoted\": the value is not a double-quoted string",
            dir.join("bad").display()
        )
    );
    let _ = stop.send(());
    task.await.unwrap();
}
