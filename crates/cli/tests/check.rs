//! `meshguard check` as a user runs it: real binary, real files, exit codes and output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshguard"))
        .current_dir(root())
        .arg("check")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const WL: [&str; 4] = ["--namespace", "foo", "--labels", "app=httpbin"];

#[test]
fn step3_without_token_is_denied_with_exit_2() {
    let o = check(&[&["--policies", "examples/step3-require-jwt"][..], &WL].concat());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("DENIED 403 Forbidden\n"), "{out}");
    assert!(out.contains("  body:       RBAC: access denied\n"), "{out}");
    assert!(
        out.contains("  details:    rbac_access_denied_matched_policy[none]\n"),
        "{out}"
    );
    assert!(out.contains("no token at its locations"), "{out}");
}

#[test]
fn step3_with_demo_token_is_allowed_with_exit_0() {
    let o = check(
        &[
            &[
                "--policies",
                "examples/step3-require-jwt",
                "--token",
                "@testdata/istio-demo/demo.jwt",
            ][..],
            &WL,
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("ALLOWED 200 OK\n"), "{out}");
    assert!(
        out.contains("  principal:  testing@secure.istio.io/testing@secure.istio.io\n"),
        "{out}"
    );
    assert!(
        out.contains("allowed by ALLOW ns[foo]-policy[require-jwt]-rule[0]"),
        "{out}"
    );
    assert!(
        out.contains("  header:     removed authorization\n"),
        "{out}"
    );
}

#[test]
fn invalid_token_is_401_with_www_authenticate() {
    let o = check(
        &[
            &[
                "--policies",
                "examples/step3-require-jwt",
                "--token",
                "invalidtoken",
                "--host",
                "httpbin.foo:8000",
                "--path",
                "/headers?x=1",
            ][..],
            &WL,
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    assert!(out.starts_with("DENIED 401 Unauthorized\n"), "{out}");
    assert!(
        out.contains("www-authenticate: Bearer realm=\"http://httpbin.foo:8000/headers?x=1\", error=\"invalid_token\""),
        "{out}"
    );
}

#[test]
fn json_output_has_stable_fields() {
    let o = check(
        &[
            &[
                "--policies",
                "examples/step4-require-claim",
                "--token",
                "@testdata/istio-demo/demo.jwt",
                "--output",
                "json",
            ][..],
            &WL,
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["allowed"], false);
    assert_eq!(v["status"], 403);
    assert_eq!(v["body"], "RBAC: access denied");
    assert_eq!(
        v["response_code_details"],
        "rbac_access_denied_matched_policy[none]"
    );
    assert_eq!(
        v["principal"],
        "testing@secure.istio.io/testing@secure.istio.io"
    );
    assert_eq!(v["workload"]["namespace"], "foo");
    assert_eq!(v["jwt"][0]["provider"], "origins-0");
    assert_eq!(v["jwt"][0]["result"], "ok");
    assert_eq!(
        v["header_ops"][0],
        serde_json::json!({"op": "remove", "name": "authorization"})
    );
    assert_eq!(v["applied"][1], "AuthorizationPolicy foo/require-jwt");
    // The token never appears in the output.
    let token = std::fs::read_to_string(root().join("testdata/istio-demo/demo.jwt")).unwrap();
    assert!(!stdout(&o).contains(token.trim().split('.').nth(2).unwrap()));
}

#[test]
fn now_flag_pins_the_clock() {
    // demo.jwt expires at 4685989700; 100 s later is past the 60 s skew.
    let o = check(
        &[
            &[
                "--policies",
                "examples/step2-request-authentication",
                "--token",
                "@testdata/istio-demo/demo.jwt",
                "--now",
                "4685989800",
                "-o",
                "json",
            ][..],
            &WL,
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status"], 401);
    assert_eq!(v["body"], "Jwt is expired");
    assert_eq!(v["jwt"][0]["status"], "JwtExpired");
}

#[test]
fn broken_policy_exits_1_and_names_file_field_and_value() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-broken");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: bad, namespace: foo}\nspec:\n  rules:\n  - from:\n    - source: {ipBlocks: [10.0.0.300]}\n",
    )
    .unwrap();
    let o = check(&[&["--policies", file.to_str().unwrap()][..], &WL].concat());
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("bad.yaml: document 0 (AuthorizationPolicy foo/bad): field spec.rules[0].from[0].source.ipBlocks[0] = \"10.0.0.300\": bad IP address (10.0.0.300)"),
        "{err}"
    );
    assert!(err.contains("nothing was loaded"), "{err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn usage_errors_exit_1_not_2() {
    let o = check(&["--policies", "examples", "--labels", "novalue"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--labels: label \"novalue\" is not of the form key=value"),
        "{}",
        stderr(&o)
    );
    let o = check(&["--policies", "examples", "--frobnicate"]);
    assert_eq!(o.status.code(), Some(1));
    let o = check(&[
        "--policies",
        "examples",
        "--path-normalization",
        "SOMETIMES",
    ]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn help_teaches_with_examples() {
    let o = check(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(out.contains("Exit status: 0 allowed, 2 denied"), "{out}");
    assert!(
        out.contains("--token @testdata/istio-demo/demo.jwt"),
        "{out}"
    );
}

#[test]
fn headers_root_namespace_and_skipped_kinds() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-headers");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mesh.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata: {name: httpbin}\n---\n\
         apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-admin, namespace: mesh-root}\n\
         spec:\n  action: DENY\n  rules: [{when: [{key: 'request.headers[x-role]', values: [admin]}]}]\n",
    )
    .unwrap();
    let policies = ["--policies", file.to_str().unwrap()];
    // Not in the default root namespace: the policy does not apply.
    let o = check(&[&policies[..], &WL, &["-H", "x-role: admin"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(
        out.contains("  applies:    nothing (no policy selects this workload)\n"),
        "{out}"
    );
    assert!(
        out.contains("  note:       ") && out.contains("skipped Service \"httpbin\""),
        "{out}"
    );
    // With --root-namespace it applies mesh-wide, and each header value is matched on its own.
    let root = ["--root-namespace", "mesh-root"];
    let o = check(
        &[
            &policies[..],
            &WL,
            &root,
            &["-H", "x-role: user", "-H", "X-Role: admin"],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("  details:    rbac_access_denied_matched_policy[ns[mesh-root]-policy[deny-admin]-rule[0]]\n"),
        "{}",
        stdout(&o)
    );
    let o = check(&[&policies[..], &WL, &root, &["-H", "x-role: user"]].concat());
    assert_eq!(o.status.code(), Some(0));
    let o = check(&[&policies[..], &WL, &["-H", "no colon"]].concat());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("expected 'Name: value'"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn explain_lists_every_rule_and_why() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-explain");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("p.yaml");
    std::fs::write(
        &file,
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-admin, namespace: foo}\nspec:\n  action: DENY\n  rules:\n  - to: [{operation: {paths: ['/admin*'], methods: [POST, DELETE]}}]\n  - when: [{key: 'request.headers[x-role]', notValues: [admin, ops]}]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-get, namespace: foo}\nspec:\n  rules:\n  - to: [{operation: {methods: [GET]}}]\n",
    )
    .unwrap();
    let args = [
        "--policies",
        file.to_str().unwrap(),
        "--namespace",
        "foo",
        "-H",
        "x-role: admin",
        "--path",
        "/admin/x",
        "--explain",
    ];
    let o = check(&args);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    for want in [
        "  1. JWT: no RequestAuthentication applies; the request has no verified identity\n",
        "     DENY foo/deny-admin ns[foo]-policy[deny-admin]-rule[0]: no match: to[0] methods: method \"GET\" matches none of [\"POST\", \"DELETE\"]\n",
        "     DENY foo/deny-admin ns[foo]-policy[deny-admin]-rule[1]: no match: when[0] request.headers[x-role] notValues: header x-role [\"admin\"] matches \"admin\"\n",
        "     ALLOW foo/allow-get ns[foo]-policy[allow-get]-rule[0]: MATCHES\n",
        "  3. decision: allowed: ALLOW rule ns[foo]-policy[allow-get]-rule[0] matched\n",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // A user role that is not admin: the DENY rule[1] matches.
    let o = check(
        &[
            &args[..4],
            &[
                "-H",
                "x-role: user",
                "--path",
                "/x",
                "--explain",
                "-o",
                "json",
            ],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["explanation"][1]["rule"],
        "ns[foo]-policy[deny-admin]-rule[1]"
    );
    assert_eq!(v["explanation"][1]["matched"], true);
    assert_eq!(
        v["explanation"][0]["why"],
        "to[0] methods: method \"GET\" matches none of [\"POST\", \"DELETE\"]"
    );
    // Without --explain there is no explanation field.
    let o = check(&[&args[..4], &["-o", "json"]].concat());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v.get("explanation").is_none());
}

#[test]
fn explain_stops_at_a_rejected_token() {
    let o = check(
        &[
            &[
                "--policies",
                "examples/step3-require-jwt",
                "--token",
                "a.b.c",
                "--explain",
            ][..],
            &WL,
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    assert!(out.contains("  1. JWT: rejected (Jwt header is an invalid Base64url encoded), so authorization never runs\n"), "{out}");
    assert!(!out.contains("  2. authorization"), "{out}");
}

/// With several providers and none accepting, Envoy's requires_all branch runs each provider
/// again; `check` says what each did there, and the request is accepted with the payload of
/// the token verified on the way (docs/semantics.md, "Requirement logic").
#[test]
fn several_providers_show_the_requires_all_branch() {
    let dir = std::env::temp_dir().join(format!("meshguard-check-branch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = std::fs::read_to_string(root().join("testdata/istio-demo/jwks.json")).unwrap();
    let jwks = jwks.trim();
    std::fs::write(
        dir.join("ra.yaml"),
        format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: two, namespace: foo}}\nspec:\n  jwtRules:\n  - issuer: https://a.example\n    jwks: '{jwks}'\n  - issuer: testing@secure.istio.io\n    jwks: '{jwks}'\n    fromHeaders: [{{name: authorization, prefix: \"Bearer \"}}, {{name: authorization, prefix: \"Token \"}}]\n"
        ),
    )
    .unwrap();
    let token = std::fs::read_to_string(root().join("testdata/istio-demo/demo.jwt")).unwrap();
    let o = check(&[
        "--policies",
        dir.to_str().unwrap(),
        "--namespace",
        "foo",
        "--header",
        &format!("authorization: Bearer garbage Token {}", token.trim()),
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(
        out.contains("then, in the requires_all branch: missing"),
        "{out}"
    );
    assert!(
        out.contains("principal:  testing@secure.istio.io/testing@secure.istio.io"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
