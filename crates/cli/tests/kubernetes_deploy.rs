//! What a Kubernetes deployment of meshguard rests on, against a real API server
//! (`support::k8s`, docs/kubernetes.md): Istio's security CRDs (`tests/k8s/istio-security-crds.yaml`)
//! install, serve the walkthrough's policies as v1 whichever version they were written in, and
//! reject what Istio's schema rejects; every manifest of `deploy/kubernetes/` is accepted by the
//! server; and the RBAC there gives the workload's ServiceAccount exactly the reads meshguard
//! needs: its namespace and the root namespace with the namespace Roles, every namespace with
//! the ClusterRole, the pods of its namespace with the pods Role, pods and policies of every
//! namespace to `meshguard ext-authz` with ext-authz-cluster.yaml's ClusterRole, and nothing
//! more.
//!
//! Each test starts its own API server (a few seconds); without one (tests/k8s/build.sh not run)
//! they pass after a `SKIPPED` line, and fail under `MESHGUARD_REQUIRE_K8S=1`.

use std::path::PathBuf;
use std::process::Output;

mod support;

use support::fs::root;
use support::k8s::{ApiServer, KINDS, text};

/// The ServiceAccount the manifests bind: the httpbin pod's, which meshguard runs as.
const SA: &str = "system:serviceaccount:foo:httpbin";

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    stdout(&out)
}

/// Asserts failure with `message` on stderr.
#[track_caller]
fn refused(out: Output, message: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains(message),
        "expected {message:?} in\n{}",
        text(&out)
    );
}

fn path(relative: &str) -> String {
    root().join(relative).to_str().unwrap().to_string()
}

/// `authorizationpolicy` for `authorizationpolicies.security.istio.io`: how kubectl names
/// one object.
fn singular(kind: &str) -> &'static str {
    match kind.split('.').next().unwrap() {
        "authorizationpolicies" => "authorizationpolicy",
        "requestauthentications" => "requestauthentication",
        "peerauthentications" => "peerauthentication",
        other => panic!("{other}"),
    }
}

fn deploy_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// `kubectl create namespace` for each.
fn namespaces(k8s: &ApiServer, names: &[&str]) {
    for ns in names {
        ok(k8s.kubectl(&["create", "namespace", ns]));
    }
}

/// `kubectl apply -f` each file of `deploy/kubernetes/` named.
fn apply_deploy(k8s: &ApiServer, files: &[&str]) {
    for f in files {
        ok(k8s.kubectl(&["apply", "-f", &path(&format!("deploy/kubernetes/{f}"))]));
    }
}

/// One policy of each kind in `namespace`, named `NAME`.
fn policies(k8s: &ApiServer, namespace: &str, name: &str) {
    let yaml = format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {namespace}}}
spec: {{action: DENY, rules: [{{to: [{{operation: {{paths: [/admin]}}}}]}}]}}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: {name}, namespace: {namespace}}}
spec: {{jwtRules: [{{issuer: https://issuer.example}}]}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: {name}, namespace: {namespace}}}
spec: {{mtls: {{mode: STRICT}}}}
"
    );
    ok(k8s.kubectl_stdin(&["apply", "-f", "-"], &yaml));
}

/// `kubectl auth can-i VERB RESOURCE [-n NS | -A] --as SA`: the answer line and the exit code.
fn can_i(k8s: &ApiServer, verb: &str, resource: &str, namespace: Option<&str>) -> (String, i32) {
    can_i_as(k8s, SA, verb, resource, namespace)
}

/// [`can_i`] as the user `user`.
fn can_i_as(
    k8s: &ApiServer,
    user: &str,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
) -> (String, i32) {
    let mut args = vec!["auth", "can-i", verb, resource, "--as", user];
    match namespace {
        Some(ns) => args.extend(["-n", ns]),
        None => args.push("--all-namespaces"),
    }
    let out = k8s.kubectl(&args);
    (stdout(&out).trim().to_string(), out.status.code().unwrap())
}

// ---------------------------------------------------------------------------------------------
// The CRDs

#[test]
fn istio_security_crds_install_and_serve_v1_as_storage_and_v1beta1() {
    let Some(k8s) = ApiServer::start_without_crds("istio_security_crds_install") else {
        return;
    };
    // Applied as they are, kubectl's own schema check on: nothing left that a 1.20 server
    // does not know.
    let out = ok(k8s.install_crds());
    for kind in KINDS {
        assert!(
            out.contains(&format!(
                "customresourcedefinition.apiextensions.k8s.io/{kind} created"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "customresourcedefinition.apiextensions.k8s.io/{kind} condition met"
            )),
            "{out}"
        );
        let versions = ok(k8s.kubectl(&[
            "get",
            "crd",
            kind,
            "-o",
            "jsonpath={range .spec.versions[*]}{.name} served={.served} storage={.storage};{end}",
        ]));
        assert_eq!(
            versions, "v1 served=true storage=true;v1beta1 served=true storage=false;",
            "{kind}"
        );
    }
    let resources = ok(k8s.kubectl(&[
        "api-resources",
        "--api-group=security.istio.io",
        "-o",
        "name",
    ]));
    let mut names: Vec<&str> = resources.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "authorizationpolicies.security.istio.io",
            "peerauthentications.security.istio.io",
            "requestauthentications.security.istio.io"
        ]
    );
}

#[test]
fn walkthrough_policies_apply_as_v1beta1_and_v1_and_are_listed_as_v1_unchanged() {
    let Some(k8s) = ApiServer::start("walkthrough_policies_apply") else {
        return;
    };
    namespaces(&k8s, &["foo"]);
    // The walkthrough's step 4 as written (v1beta1), and its AuthorizationPolicy again as v1
    // under another name.
    let step4 = path("examples/step4-require-claim");
    let out = ok(k8s.kubectl(&["apply", "-f", &step4]));
    assert_eq!(
        out,
        "authorizationpolicy.security.istio.io/require-jwt created\n\
         requestauthentication.security.istio.io/jwt-example created\n"
    );
    let policy_yaml = std::fs::read_to_string(
        root().join("examples/step4-require-claim/authorization-policy.yaml"),
    )
    .unwrap();
    let v1 = policy_yaml
        .replace("security.istio.io/v1beta1", "security.istio.io/v1")
        .replace("name: require-jwt", "name: require-jwt-v1");
    assert_ne!(v1, policy_yaml);
    let out = ok(k8s.kubectl_stdin(&["apply", "-f", "-"], &v1));
    assert_eq!(
        out,
        "authorizationpolicy.security.istio.io/require-jwt-v1 created\n"
    );

    // Listed through v1 (what meshguard watches): both, as v1.
    let listed = ok(k8s.kubectl(&[
        "get",
        "authorizationpolicies.v1.security.istio.io",
        "-n",
        "foo",
        "-o",
        "jsonpath={range .items[*]}{.apiVersion} {.metadata.name}{\"\\n\"}{end}",
    ]));
    assert_eq!(
        listed,
        "security.istio.io/v1 require-jwt\nsecurity.istio.io/v1 require-jwt-v1\n"
    );
    // And through v1beta1 as well (istioctl and older clients).
    let raw = ok(k8s.kubectl(&[
        "get",
        "--raw",
        "/apis/security.istio.io/v1beta1/namespaces/foo/requestauthentications",
    ]));
    let list: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(list["items"][0]["apiVersion"], "security.istio.io/v1beta1");
    assert_eq!(list["items"][0]["metadata"]["name"], "jwt-example");

    // Every field of the walkthrough's specs is kept: nothing pruned by the schema.
    for (kind, name, file) in [
        (
            "authorizationpolicies",
            "require-jwt",
            "authorization-policy.yaml",
        ),
        (
            "authorizationpolicies",
            "require-jwt-v1",
            "authorization-policy.yaml",
        ),
        (
            "requestauthentications",
            "jwt-example",
            "request-authentication.yaml",
        ),
    ] {
        let written: serde_json::Value = serde_saphyr::from_str(
            &std::fs::read_to_string(root().join("examples/step4-require-claim").join(file))
                .unwrap(),
        )
        .unwrap();
        let stored = ok(k8s.kubectl(&[
            "get",
            &format!("{kind}.v1.security.istio.io"),
            name,
            "-n",
            "foo",
            "-o",
            "json",
        ]));
        let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(stored["spec"], written["spec"], "{kind} {name}");
    }
}

#[test]
fn the_crd_schemas_reject_wrong_types_and_values_on_the_server() {
    let Some(k8s) = ApiServer::start("crd_schemas_reject") else {
        return;
    };
    namespaces(&k8s, &["foo"]);
    // --validate=false: the server's verdict, not kubectl's (which depends on its version).
    let apply = |yaml: &str| k8s.kubectl_stdin(&["apply", "--validate=false", "-f", "-"], yaml);

    refused(
        apply(
            "apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {name: wrong-types, namespace: foo}
spec:
  jwtRules:
  - issuer: 42
    forwardOriginalToken: \"yes\"
",
        ),
        "spec.jwtRules.issuer in body must be of type string",
    );
    refused(
        apply(
            "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: wrong-action, namespace: foo}
spec: {action: PERMIT}
",
        ),
        "spec.action: Unsupported value: \"PERMIT\": supported values: \"ALLOW\", \"DENY\", \"AUDIT\", \"CUSTOM\"",
    );
    refused(
        apply(
            "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: rules-not-a-list, namespace: foo}
spec: {rules: {from: []}}
",
        ),
        "spec.rules in body must be of type array",
    );
    refused(
        apply(
            "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: STRICTEST}}
",
        ),
        "spec.mtls.mode: Unsupported value: \"STRICTEST\"",
    );
    // Nothing of the above was stored.
    let out = k8s.kubectl(&[
        "get",
        "authorizationpolicies,requestauthentications,peerauthentications",
        "-n",
        "foo",
    ]);
    assert_eq!(stderr(&out), "No resources found in foo namespace.\n");

    // A field the schema does not know is dropped, as by any server with Istio's CRDs
    // (meshguard never sees it).
    ok(apply(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: misspelt, namespace: foo}
spec: {action: DENY, actoin: ALLOW}
",
    ));
    let spec = ok(k8s.kubectl(&[
        "get",
        "authorizationpolicy",
        "misspelt",
        "-n",
        "foo",
        "-o",
        "jsonpath={.spec}",
    ]));
    assert_eq!(spec, r#"{"action":"DENY"}"#);
}

// ---------------------------------------------------------------------------------------------
// deploy/kubernetes/

#[test]
fn every_deploy_manifest_passes_a_server_side_dry_run() {
    let Some(k8s) = ApiServer::start("deploy_manifests_dry_run") else {
        return;
    };
    namespaces(&k8s, &["foo", "istio-system", "meshguard-system"]);
    let files = deploy_files();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "ext-authz-cluster.yaml",
            "ext-authz.yaml",
            "httpbin.yaml",
            "rbac-cluster.yaml",
            "rbac-namespace.yaml",
            "rbac-pods.yaml"
        ]
    );
    for file in &files {
        let yaml = std::fs::read_to_string(file).unwrap();
        let objects = yaml.lines().filter(|l| l.starts_with("kind: ")).count();
        // kubectl's schema check (on by default), then the server's validation and admission.
        let out = ok(k8s.kubectl(&["apply", "--dry-run=server", "-f", file.to_str().unwrap()]));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), objects, "{}: {out}", file.display());
        for line in lines {
            assert!(
                line.ends_with(" created (server dry run)"),
                "{}: {line}",
                file.display()
            );
        }
    }
    // A dry run stores nothing.
    let out = ok(k8s.kubectl(&[
        "get",
        "deployments,serviceaccounts,roles",
        "-n",
        "foo",
        "-o",
        "name",
    ]));
    assert_eq!(out, "");
}

#[test]
fn namespace_roles_let_the_workload_read_its_namespace_and_the_root_namespace_only() {
    let Some(k8s) = ApiServer::start("namespace_roles") else {
        return;
    };
    namespaces(&k8s, &["foo", "istio-system", "bar"]);
    apply_deploy(&k8s, &["httpbin.yaml", "rbac-namespace.yaml"]);
    for ns in ["foo", "istio-system", "bar"] {
        policies(&k8s, ns, &format!("{ns}-policy"));
    }
    let sa = k8s.service_account_kubeconfig("foo", "httpbin");
    let as_sa = |args: &[&str]| k8s.kubectl_as(&sa, args, None);

    for kind in KINDS {
        // Its own namespace and the root namespace: list, get, watch.
        for ns in ["foo", "istio-system"] {
            let out = ok(as_sa(&["get", kind, "-n", ns, "-o", "name"]));
            assert_eq!(
                out,
                format!("{}.security.istio.io/{ns}-policy\n", singular(kind)),
                "{kind} in {ns}"
            );
            ok(as_sa(&["get", kind, &format!("{ns}-policy"), "-n", ns]));
            // A watch that ends by itself after a second: allowed, exit 0.
            ok(as_sa(&[
                "get",
                "--raw",
                &format!(
                    "/apis/security.istio.io/v1/namespaces/{ns}/{}?watch=true&timeoutSeconds=1",
                    kind.split('.').next().unwrap()
                ),
            ]));
            for verb in ["get", "list", "watch"] {
                assert_eq!(can_i(&k8s, verb, kind, Some(ns)), ("yes".into(), 0));
            }
            for verb in ["create", "update", "patch", "delete"] {
                assert_eq!(can_i(&k8s, verb, kind, Some(ns)), ("no".into(), 1));
            }
        }
        // Another namespace, and the whole cluster: refused.
        let resource = kind.split('.').next().unwrap();
        refused(
            as_sa(&["get", kind, "-n", "bar"]),
            &format!(
                "User \"{SA}\" cannot list resource \"{resource}\" in API group \"security.istio.io\" in the namespace \"bar\""
            ),
        );
        refused(
            as_sa(&["get", kind, "--all-namespaces"]),
            &format!(
                "User \"{SA}\" cannot list resource \"{resource}\" in API group \"security.istio.io\" at the cluster scope"
            ),
        );
        refused(
            as_sa(&[
                "get",
                "--raw",
                &format!("/apis/security.istio.io/v1/{resource}?watch=true&timeoutSeconds=1"),
            ]),
            "Error from server (Forbidden)",
        );
        assert_eq!(can_i(&k8s, "watch", kind, None), ("no".into(), 1));
        assert_eq!(can_i(&k8s, "list", kind, Some("bar")), ("no".into(), 1));
    }
    // Without rbac-pods.yaml, no pods.
    assert_eq!(can_i(&k8s, "get", "pods", Some("foo")), ("no".into(), 1));
    // RBAC is enforced: the user `meshguard`, bound to nothing, reads nothing.
    refused(
        k8s.kubectl_as(
            k8s.user_kubeconfig(),
            &[
                "get",
                "authorizationpolicies.security.istio.io",
                "-n",
                "foo",
            ],
            None,
        ),
        "User \"meshguard\" cannot list resource \"authorizationpolicies\"",
    );
}

#[test]
fn the_pods_role_lets_the_workload_read_pods_of_its_namespace_and_nothing_else() {
    let Some(k8s) = ApiServer::start("pods_role") else {
        return;
    };
    namespaces(&k8s, &["foo", "bar"]);
    apply_deploy(&k8s, &["httpbin.yaml", "rbac-pods.yaml"]);
    // A Pod object (stored only: nothing runs pods here), as meshguard's own pod would be.
    for ns in ["foo", "bar"] {
        ok(k8s.kubectl(&[
            "run",
            "httpbin-0",
            "-n",
            ns,
            "--image=registry.example.com/httpbin:test",
            "--labels=app=httpbin,version=v1",
        ]));
    }
    let sa = k8s.service_account_kubeconfig("foo", "httpbin");
    let labels = ok(k8s.kubectl_as(
        &sa,
        &[
            "get",
            "pod",
            "httpbin-0",
            "-n",
            "foo",
            "-o",
            "jsonpath={.metadata.labels}",
        ],
        None,
    ));
    assert_eq!(labels, r#"{"app":"httpbin","version":"v1"}"#);
    // List and watch, which `--pod` does (by a field selector on the name).
    let listed = ok(k8s.kubectl_as(
        &sa,
        &[
            "get",
            "pods",
            "-n",
            "foo",
            "--field-selector",
            "metadata.name=httpbin-0",
            "-o",
            "name",
        ],
        None,
    ));
    assert_eq!(listed, "pod/httpbin-0\n");
    assert_eq!(can_i(&k8s, "watch", "pods", Some("foo")), ("yes".into(), 0));
    refused(
        k8s.kubectl_as(&sa, &["get", "pod", "httpbin-0", "-n", "bar"], None),
        &format!(
            "User \"{SA}\" cannot get resource \"pods\" in API group \"\" in the namespace \"bar\""
        ),
    );
    assert_eq!(can_i(&k8s, "watch", "pods", Some("bar")), ("no".into(), 1));
    // And no policies: rbac-pods.yaml is an addition to the policy Roles, not a replacement.
    assert_eq!(can_i(&k8s, "list", KINDS[0], Some("foo")), ("no".into(), 1));
}

#[test]
fn the_cluster_role_lets_the_workload_read_policies_in_every_namespace() {
    let Some(k8s) = ApiServer::start("cluster_role") else {
        return;
    };
    namespaces(&k8s, &["foo", "istio-system", "bar"]);
    apply_deploy(&k8s, &["httpbin.yaml", "rbac-cluster.yaml"]);
    for ns in ["foo", "istio-system", "bar"] {
        policies(&k8s, ns, &format!("{ns}-policy"));
    }
    let sa = k8s.service_account_kubeconfig("foo", "httpbin");
    for kind in KINDS {
        let out = ok(k8s.kubectl_as(
            &sa,
            &[
                "get",
                kind,
                "--all-namespaces",
                "-o",
                "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {end}",
            ],
            None,
        ));
        assert_eq!(
            out, "bar/bar-policy foo/foo-policy istio-system/istio-system-policy ",
            "{kind}"
        );
        let resource = kind.split('.').next().unwrap();
        ok(k8s.kubectl_as(
            &sa,
            &[
                "get",
                "--raw",
                &format!("/apis/security.istio.io/v1/{resource}?watch=true&timeoutSeconds=1"),
            ],
            None,
        ));
        for verb in ["get", "list", "watch"] {
            assert_eq!(can_i(&k8s, verb, kind, None), ("yes".into(), 0));
        }
        for verb in ["create", "delete"] {
            assert_eq!(can_i(&k8s, verb, kind, Some("foo")), ("no".into(), 1));
        }
    }
    // Policies only: not pods, not secrets.
    assert_eq!(can_i(&k8s, "get", "pods", Some("foo")), ("no".into(), 1));
    assert_eq!(can_i(&k8s, "list", "secrets", None), ("no".into(), 1));
}

#[test]
fn the_ext_authz_cluster_role_lets_meshguard_read_pods_and_policies_in_every_namespace() {
    let Some(k8s) = ApiServer::start("ext_authz_cluster_role") else {
        return;
    };
    namespaces(&k8s, &["foo", "istio-system", "bar", "meshguard-system"]);
    apply_deploy(&k8s, &["ext-authz-cluster.yaml"]);
    let user = "system:serviceaccount:meshguard-system:meshguard-ext-authz";
    for resource in KINDS.iter().copied().chain(["pods"]) {
        for verb in ["get", "list", "watch"] {
            assert_eq!(
                can_i_as(&k8s, user, verb, resource, None),
                ("yes".into(), 0),
                "{verb} {resource}"
            );
        }
        for verb in ["create", "update", "delete"] {
            assert_eq!(
                can_i_as(&k8s, user, verb, resource, Some("bar")),
                ("no".into(), 1),
                "{verb} {resource}"
            );
        }
    }
    // Nothing else: not secrets, not configmaps, not nodes.
    for (resource, namespace) in [
        ("secrets", None),
        ("configmaps", Some("foo")),
        ("nodes", None),
    ] {
        assert_eq!(
            can_i_as(&k8s, user, "list", resource, namespace),
            ("no".into(), 1),
            "{resource}"
        );
    }
}
