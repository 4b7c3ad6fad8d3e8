//! The Kubernetes source against a mocked API server: a tower service given to
//! `kube::Client::new` answers the watcher's list and watch requests with JSON written here
//! (as kube-rs tests itself). Covers what only the wire shows: a watch that ends (EOF), a
//! bookmark, `410 Gone` and the re-list it causes, a watch that fails to start, and a
//! namespace the service account may not read (403).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Ready;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Frame;
use meshguard_kube::{KubeSource, Options};
use meshguard_model::Workload;
use meshguard_runtime::{PolicySource, PolicyState, Runtime, RuntimeConfig};
use serde_json::{Value, json};

/// What the mock answers one request with.
#[derive(Clone, Debug)]
enum Reply {
    /// A list: its resourceVersion and items.
    List(&'static str, Vec<Value>),
    /// Watch events, then the end of the stream (`end`) or a stream that stays open.
    Watch { events: Vec<Value>, end: bool },
    /// An error status.
    Status(u16, &'static str, String),
}

#[derive(Default)]
struct State {
    /// Scripted replies per (path, watch?), used in order; then the default.
    script: HashMap<(String, bool), VecDeque<Reply>>,
    /// Namespaces whose requests get 403.
    forbidden: Vec<String>,
    /// Every request, `path?query`.
    requests: Vec<String>,
}

#[derive(Clone, Default)]
struct Mock(Arc<Mutex<State>>);

impl Mock {
    fn script(&self, path: &str, watch: bool, replies: Vec<Reply>) {
        self.0
            .lock()
            .unwrap()
            .script
            .insert((path.to_string(), watch), replies.into());
    }

    fn requests(&self, path: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.starts_with(path))
            .cloned()
            .collect()
    }
}

fn body(text: String, end: bool) -> BoxBody<Bytes, Infallible> {
    let frames = futures::stream::iter(vec![Ok::<_, Infallible>(Frame::data(Bytes::from(text)))]);
    if end {
        http_body_util::StreamBody::new(frames).boxed()
    } else {
        // A watch that stays open, as the API server's does until its timeout.
        http_body_util::StreamBody::new(futures::StreamExt::chain(
            frames,
            futures::stream::pending(),
        ))
        .boxed()
    }
}

fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

impl tower_service::Service<Request<kube::client::Body>> for Mock {
    type Response = Response<BoxBody<Bytes, Infallible>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let watch = query.split('&').any(|p| p == "watch=true");
        let mut state = self.0.lock().unwrap();
        state.requests.push(format!("{path}?{query}"));
        let forbidden = state
            .forbidden
            .iter()
            .any(|ns| path.contains(&format!("/namespaces/{ns}/")));
        let reply = if forbidden {
            Reply::Status(
                403,
                "Forbidden",
                format!(
                    "{} is forbidden: User \"system:serviceaccount:foo:httpbin\" cannot list resource in the namespace",
                    path.rsplit('/').next().unwrap_or("")
                ),
            )
        } else {
            let queue = state.script.entry((path.clone(), watch)).or_default();
            match queue.pop_front() {
                Some(r) => r,
                // Defaults: an empty list; a watch with nothing to say.
                None if watch => Reply::Watch {
                    events: vec![],
                    end: false,
                },
                None => Reply::List("1", vec![]),
            }
        };
        drop(state);
        let (status, text, end) = match reply {
            Reply::List(rv, items) => (
                200,
                json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": rv}, "items": items})
                    .to_string(),
                true,
            ),
            Reply::Watch { events, end } => (
                200,
                events.iter().map(|e| format!("{e}\n")).collect::<String>(),
                end,
            ),
            Reply::Status(code, reason, message) => {
                (code, status_json(code, reason, &message).to_string(), true)
            }
        };
        let resp = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(body(text, end))
            .unwrap();
        std::future::ready(Ok(resp))
    }
}

fn ap(name: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": "foo", "resourceVersion": rv},
        "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": [format!("/{name}")]}}]}]},
    })
}

const AP_FOO: &str = "/apis/security.istio.io/v1/namespaces/foo/authorizationpolicies";

fn options() -> Options {
    Options {
        restart_backoff: (Duration::from_millis(50), Duration::from_millis(200)),
        ..Options::default()
    }
}

/// The source and a runtime it publishes to, the source running.
fn start(mock: &Mock, options: Options) -> (Arc<KubeSource>, Runtime) {
    let workload = Workload::new("foo", Default::default());
    let client = kube::Client::new(mock.clone(), "foo");
    let source = KubeSource::new(client, "https://mock", &workload, options);
    let rt = Runtime::load(RuntimeConfig {
        policies: PolicySource::Watched(source.clone()),
        workload,
        path_normalization: Default::default(),
        token_cache: 0,
        jwks: Default::default(),
    })
    .unwrap();
    tokio::spawn(source.clone().run(
        rt.state().clone(),
        rt.metrics().clone(),
        std::future::pending(),
    ));
    (source, rt)
}

/// The names of the AuthorizationPolicies in effect.
fn in_effect(state: &PolicyState) -> Vec<String> {
    let mut names: Vec<String> = state
        .snapshot()
        .compiled
        .policies()
        .map(|p| p.name.to_string())
        .collect();
    names.sort();
    names
}

/// Waits (10 s at most) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_bookmark_moves_the_watch_on_an_eof_resumes_it_and_410_gone_lists_again() {
    let mock = Mock::default();
    mock.script(
        AP_FOO,
        false,
        vec![
            Reply::List("11", vec![ap("a", "10"), ap("b", "11")]),
            // After 410 Gone: `b` was deleted while the watch was away.
            Reply::List("30", vec![ap("a", "10"), ap("c", "21")]),
        ],
    );
    mock.script(
        AP_FOO,
        true,
        vec![
            // A bookmark, then the API server ends the watch (its timeout).
            Reply::Watch {
                events: vec![json!({"type": "BOOKMARK", "object": {
                    "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                    "metadata": {"resourceVersion": "20"}}})],
                end: true,
            },
            // Resumed from the bookmark: a new object, then the window is gone.
            Reply::Watch {
                events: vec![
                    json!({"type": "ADDED", "object": ap("c", "21")}),
                    json!({"type": "ERROR", "object": status_json(410, "Expired", "too old resource version: 20 (25)")}),
                ],
                end: false,
            },
        ],
    );
    let (_source, rt) = start(&mock, options());
    let state = rt.state().clone();
    until("the first set", || state.snapshot().loaded).await;
    until("c added by the watch", || {
        in_effect(&state).contains(&"c".to_string())
    })
    .await;
    until("the re-list after 410 Gone", || {
        in_effect(&state) == ["a", "c"]
    })
    .await;
    let requests = mock.requests(AP_FOO);
    let watch_versions: Vec<&str> = requests
        .iter()
        .filter(|r| r.contains("watch=true"))
        .filter_map(|r| {
            r.split('&')
                .find_map(|p| p.strip_prefix("resourceVersion="))
        })
        .collect();
    // The first watch from the list's version, the second from the bookmark's (not the
    // list's: the bookmark moved it on), the third from the re-list's.
    assert_eq!(&watch_versions[..3], ["11", "20", "30"], "{requests:#?}");
    let lists = requests
        .iter()
        .filter(|r| !r.contains("watch=true"))
        .count();
    assert_eq!(lists, 2, "one list, one re-list after 410: {requests:#?}");
    let dump = state.dump();
    let ap_watch = dump["source"]["watches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["kind"] == "AuthorizationPolicy" && w["namespace"] == "foo")
        .unwrap()
        .clone();
    assert_eq!(ap_watch["errors"], 1, "{ap_watch}");
    assert!(
        ap_watch["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("Expired (410)"),
        "{ap_watch}"
    );
    // After the re-list the watch is synced again.
    assert_eq!(ap_watch["synced"], true);
}

#[tokio::test]
async fn a_root_namespace_the_service_account_may_not_read_keeps_readiness_false() {
    let mock = Mock::default();
    mock.0.lock().unwrap().forbidden.push("istio-system".into());
    mock.script(AP_FOO, false, vec![Reply::List("5", vec![ap("a", "5")])]);
    let (_source, rt) = start(&mock, options());
    let state = rt.state().clone();
    // The workload's namespace lists; the root namespace answers 403 and is retried.
    until("403s from istio-system", || {
        mock.requests("/apis/security.istio.io/v1/namespaces/istio-system/")
            .len()
            >= 6
    })
    .await;
    until("the errors recorded", || {
        state.dump()["source"]["watches"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["namespace"] == "istio-system")
            .all(|w| w["errors"].as_u64() >= Some(1))
    })
    .await;
    let why = state.policies_ready().unwrap_err();
    assert!(
        why.contains(
            "AuthorizationPolicy in istio-system: not listed yet: list failed: Forbidden (403)"
        ),
        "{why}"
    );
    assert!(
        !why.contains("in foo"),
        "the workload's namespace listed: {why}"
    );
    assert!(
        !state.snapshot().loaded,
        "nothing published with a namespace missing"
    );
    let text = rt
        .metrics()
        .encode_as(meshguard_runtime::metrics::Format::Prometheus);
    assert!(
        text.contains(
            "meshguard_policy_source_synced{kind=\"AuthorizationPolicy\",namespace=\"istio-system\"} 0"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "meshguard_policy_source_synced{kind=\"AuthorizationPolicy\",namespace=\"foo\"} 1"
        ),
        "{text}"
    );
    // The Role is added: the next retry lists, and the policies become ready.
    mock.0.lock().unwrap().forbidden.clear();
    until("ready once the root namespace lists", || {
        state.policies_ready().is_ok()
    })
    .await;
    assert_eq!(in_effect(&state), ["a"]);
}

#[tokio::test]
async fn a_watch_that_fails_after_its_list_is_started_over_with_a_list() {
    let mock = Mock::default();
    mock.script(
        AP_FOO,
        false,
        vec![
            Reply::List("5", vec![ap("a", "5")]),
            Reply::List("9", vec![ap("a", "5"), ap("b", "9")]),
        ],
    );
    mock.script(
        AP_FOO,
        true,
        vec![Reply::Status(
            500,
            "InternalError",
            "etcdserver: leader changed".into(),
        )],
    );
    let (_source, rt) = start(&mock, options());
    let state = rt.state().clone();
    until("the re-list after the failed watch", || {
        in_effect(&state) == ["a", "b"]
    })
    .await;
    let requests: Vec<String> = mock.requests(AP_FOO);
    assert!(!requests[0].contains("watch=true"), "{requests:#?}");
    assert!(requests[1].contains("watch=true"), "{requests:#?}");
    assert!(
        !requests[2].contains("watch=true"),
        "listed again: {requests:#?}"
    );
    let text = rt
        .metrics()
        .encode_as(meshguard_runtime::metrics::Format::Prometheus);
    assert!(
        text.contains(
            "meshguard_policy_source_errors_total{kind=\"AuthorizationPolicy\",namespace=\"foo\"} 1"
        ),
        "{text}"
    );
    until("synced again", || {
        rt.metrics()
            .encode_as(meshguard_runtime::metrics::Format::Prometheus)
            .contains(
                "meshguard_policy_source_synced{kind=\"AuthorizationPolicy\",namespace=\"foo\"} 1",
            )
    })
    .await;
}

#[tokio::test]
async fn a_re_list_that_changes_nothing_publishes_nothing() {
    let mock = Mock::default();
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "httpbin-1", "namespace": "foo", "resourceVersion": "3",
                     "labels": {"app": "httpbin"}}});
    let pods = "/api/v1/namespaces/foo/pods";
    mock.script(pods, false, vec![Reply::List("3", vec![pod.clone()]); 3]);
    mock.script(
        AP_FOO,
        false,
        vec![
            Reply::List("5", vec![ap("a", "5")]),
            Reply::List("5", vec![ap("a", "5")]),
            Reply::List("6", vec![ap("a", "5"), ap("b", "6")]),
        ],
    );
    let options = Options {
        pod: Some("httpbin-1".into()),
        ..options()
    };
    let (source, rt) = start(&mock, options);
    let state = rt.state().clone();
    until("the first set", || state.snapshot().loaded).await;
    assert_eq!(state.workload().labels["app"], "httpbin");
    assert_eq!(state.snapshot().generation, 1);
    // SIGHUP: every watch lists again, the Pod's included: the same objects, the same labels.
    meshguard_runtime::WatchedSource::resync(&*source);
    // Each watch asks to watch once its list is done, after handing its `InitDone` on.
    until("the re-lists", || {
        mock.requests(pods).len() >= 4 && mock.requests(AP_FOO).len() >= 4
    })
    .await;
    // Another re-list, in which `b` is new: taken in after the first (one queue, in order).
    meshguard_runtime::WatchedSource::resync(&*source);
    until("b", || in_effect(&state) == ["a", "b"]).await;
    assert_eq!(
        state.snapshot().generation,
        2,
        "the re-list that changed nothing published nothing; the one with b did"
    );
}

#[tokio::test]
async fn new_labels_from_outside_the_source_reselect_its_policies() {
    let mock = Mock::default();
    let selective = json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-httpbin", "namespace": "foo", "resourceVersion": "5"},
        "spec": {"selector": {"matchLabels": {"app": "httpbin"}}, "action": "DENY", "rules": [{}]},
    });
    mock.script(AP_FOO, false, vec![Reply::List("5", vec![selective])]);
    let (_source, rt) = start(&mock, options());
    let state = rt.state().clone();
    until("the first set", || state.snapshot().loaded).await;
    assert!(
        in_effect(&state).is_empty(),
        "no labels: the selector selects nothing"
    );
    // What a followed labels file does.
    assert!(state.set_labels([("app".to_string(), "httpbin".to_string())].into()));
    until("the set compiled for the new labels", || {
        in_effect(&state) == ["deny-httpbin"]
    })
    .await;
    assert_eq!(state.snapshot().generation, 2);
}
