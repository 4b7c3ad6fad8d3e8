//! `meshguard validate` on a corpus of broken and surprising policies (tests/validate/*.yaml):
//! each file's first line names the finding it must produce.

use std::path::PathBuf;
use std::process::Command;

mod support;

use support::fs::{copy_dir, root, tmp};
use support::http::curl_status;
use support::proxy::{Proxy, Stdout, proxy_command, spawn};

fn validate(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshguard"))
        .current_dir(root())
        .arg("validate")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn corpus_each_file_produces_its_finding() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("tests/validate"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 15);
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expect = text
            .lines()
            .next()
            .unwrap()
            .strip_prefix("# expect: ")
            .unwrap();
        let (severity, needle) = expect.split_once(": ").unwrap();
        let (code, out) = validate(&[file.to_str().unwrap(), "--output", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let want_code = if severity == "error" { 3 } else { 0 };
        let found = v["findings"].as_array().unwrap().iter().any(|f| {
            f["severity"] == severity && {
                let line = format!(
                    "{}{}: {}",
                    f["field"].as_str().unwrap_or(""),
                    f["value"]
                        .as_str()
                        .map(|v| format!(" = {v:?}"))
                        .unwrap_or_default(),
                    f["message"].as_str().unwrap_or("")
                );
                line.contains(needle) || f["message"].as_str().unwrap_or("").contains(needle)
            }
        });
        if code != Some(want_code) || !found {
            failures.push(format!(
                "{}: exit {code:?} (want {want_code}), {severity} {needle:?} found: {found}\n{out}",
                file.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn text_output_and_the_seed_examples() {
    let (code, out) = validate(&["examples/"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out,
        "warning: examples/README.md: skipped: only names ending in .yaml, .yml or .json, or without extension, are read\n\
valid: 0 error(s), 1 warning(s) in 5 resource(s) from 5 file(s)\n"
    );
    let (code, out) = validate(&["tests/validate/bad-cidr.yaml"]);
    assert_eq!(code, Some(3));
    assert!(out.starts_with("error: tests/validate/bad-cidr.yaml: document 0 (AuthorizationPolicy foo/p): field spec.rules[0].from[0].source.ipBlocks[0] = \"10.0.0.0/40\": bad CIDR range"), "{out}");
    assert!(
        out.ends_with("invalid: 1 error(s), 0 warning(s) in 1 resource(s) from 1 file(s)\n"),
        "{out}"
    );
}

#[test]
fn selectors_that_miss_the_workload_are_warned_about() {
    let (code, out) = validate(&[
        "examples/step3-require-jwt",
        "--namespace",
        "foo",
        "--labels",
        "app=sleep",
    ]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains(
            "does not select the workload (namespace foo, labels {app=sleep}): it will not apply"
        ),
        "{out}"
    );
    let (_, out) = validate(&[
        "examples/step3-require-jwt",
        "--namespace",
        "foo",
        "--labels",
        "app=httpbin",
    ]);
    assert!(!out.contains("does not select"), "{out}");
}

#[test]
fn unreadable_paths_exit_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshguard"))
        .args(["validate", "/nonexistent/policies"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn every_error_of_a_resource_is_reported() {
    let (code, out) = validate(&["tests/validate/several-errors.yaml"]);
    assert_eq!(code, Some(3), "{out}");
    for needle in [
        "(AuthorizationPolicy foo/deny-bad): field spec.rules[0].from[0].source.ipBlocks[1] = \"192.168.1.300\": bad IP address (192.168.1.300)\n",
        "(AuthorizationPolicy foo/deny-bad): field spec.rules[0].to[0].operation.ports[0] = \"99999\": bad port (99999): must be an integer between 0 and 65535\n",
        "(AuthorizationPolicy foo/two-keys): field spec.rules[0].when[0].key = \"request.auth.claim.role\": unknown attribute request.auth.claim.role; did you mean request.auth.claims[role]?\n",
        "(AuthorizationPolicy foo/two-keys): field spec.rules[0].when[1].key = \"request.auth.claims.role\": request.auth.claims.role must be of the form request.auth.claims[<name>]; did you mean request.auth.claims[role]?\n",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    assert!(
        out.ends_with("invalid: 4 error(s), 0 warning(s) in 2 resource(s) from 1 file(s)\n"),
        "{out}"
    );
}

#[test]
fn a_workload_that_nothing_applies_to_is_warned_about() {
    // The README's policies with the namespace left at `default`: a proxy would enforce nothing.
    let (code, out) = validate(&[
        "examples/step4-require-claim",
        "--namespace",
        "default",
        "--labels",
        "app=httpbin",
    ]);
    assert_eq!(code, Some(0), "warnings keep exit 0: {out}");
    assert_eq!(
        out,
        "warning: examples/step4-require-claim: none of the 2 resource(s) applies to the workload (namespace default, labels {app=httpbin}): a proxy started with these flags enforces nothing; \
the loaded resources are in namespace(s) foo, neither default nor the root namespace istio-system; --namespace names the workload's namespace\n\
valid: 0 error(s), 1 warning(s) in 2 resource(s) from 2 file(s)\n"
    );
    // --namespace alone names a workload without labels: the selectors miss it.
    let (_, out) = validate(&["examples/step4-require-claim", "--namespace", "foo"]);
    assert!(
        out.contains(
            "; AuthorizationPolicy foo/require-jwt does not apply: its selector app=httpbin is not a subset of the workload's labels\n"
        ),
        "{out}"
    );
    let (_, out) = validate(&[
        "examples/step4-require-claim",
        "--namespace",
        "foo",
        "--labels",
        "app=httpbin",
    ]);
    assert_eq!(
        out,
        "valid: 0 error(s), 0 warning(s) in 2 resource(s) from 2 file(s)\n"
    );
}

#[test]
fn empty_paths_and_skipped_files_are_warned_about() {
    let empty = tmp("validate-empty");
    let (code, out) = validate(&[empty.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out,
        format!(
            "warning: {0}: no resources found in {0} (no RequestAuthentication or AuthorizationPolicy): a proxy started on it enforces nothing\n\
valid: 0 error(s), 1 warning(s) in 0 resource(s) from 0 file(s)\n",
            empty.display()
        )
    );

    // A ConfigMap mounted as a volume: the key `policies` has no extension and is a link
    // into `..data`; next to it, files that are not read must be named.
    let dir = tmp("validate-configmap");
    let stamp = dir.join("..2024_01_02_03_04_05.1");
    std::fs::create_dir_all(&stamp).unwrap();
    let example = |f: &str| {
        std::fs::read_to_string(root().join("examples/step4-require-claim").join(f)).unwrap()
    };
    let policy = format!(
        "{}\n---\n{}",
        example("request-authentication.yaml"),
        example("authorization-policy.yaml")
    );
    std::fs::write(stamp.join("policies"), policy).unwrap();
    std::os::unix::fs::symlink("..2024_01_02_03_04_05.1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/policies", dir.join("policies")).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a policy").unwrap();
    std::fs::write(dir.join("policies~"), "an editor's backup").unwrap();
    std::fs::write(dir.join(".policies.swp"), "an editor's swap file").unwrap();
    let (code, out) = validate(&[dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    let d = dir.display();
    assert_eq!(
        out,
        format!(
            "warning: {d}/.policies.swp: skipped: its name starts with '.'\n\
warning: {d}/notes.txt: skipped: only names ending in .yaml, .yml or .json, or without extension, are read\n\
warning: {d}/policies~: skipped: only names ending in .yaml, .yml or .json, or without extension, are read\n\
valid: 0 error(s), 3 warning(s) in 2 resource(s) from 1 file(s)\n"
        )
    );
}

/// `n` AuthorizationPolicies named `p0`.. in `namespace`, each selecting `app=<name>`.
fn policies(namespace: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p{i}\n  namespace: {namespace}\nspec:\n  selector:\n    matchLabels:\n      app: svc{i}\n  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"*\"]\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

#[test]
fn the_nothing_applies_warning_is_bounded_and_names_near_misses_before_other_namespaces() {
    // A mesh-wide directory: 25 policies in the root namespace select other workloads, 40 are
    // in namespaces that are not the workload's. Not 65 reasons on one line: the first ten
    // near misses, a count, and the other namespaces.
    let dir = tmp("validate-nothing-applies-many");
    std::fs::write(dir.join("root.yaml"), policies("istio-system", 25)).unwrap();
    std::fs::write(dir.join("shop.yaml"), policies("shop", 30)).unwrap();
    std::fs::write(dir.join("bar.yaml"), policies("bar", 10)).unwrap();
    let d = dir.display();
    let (code, out) = validate(&[&d.to_string(), "-n", "default", "-l", "app=web"]);
    assert_eq!(code, Some(0), "{out}");
    let near: Vec<String> = (0..10)
        .map(|i| format!("AuthorizationPolicy istio-system/p{i} does not apply: its selector app=svc{i} is not a subset of the workload's labels"))
        .collect();
    assert_eq!(
        out,
        format!(
            "warning: {d}: none of the 65 resource(s) applies to the workload (namespace default, labels {{app=web}}): a proxy started with these flags enforces nothing; \
{}; and 15 more that do not apply; \
the other 40 resource(s) are in namespace(s) bar, shop, neither default nor the root namespace istio-system; --namespace names the workload's namespace\n\
valid: 0 error(s), 1 warning(s) in 65 resource(s) from 3 file(s)\n",
            near.join("; ")
        )
    );
}

/// The errors of tests/validate/every-file, in file and document order, as `error: ...` lines
/// with the files under `dir`: compile errors of a file that decodes (a.yaml), a document that
/// does not decode (b.yaml), and one whose metadata does not decode, next to a good one (c.yaml).
fn every_file_errors(dir: &str) -> Vec<String> {
    [
        "a.yaml: document 0 (AuthorizationPolicy foo/deny-bad): field spec.rules[0].from[0].source.ipBlocks[1] = \"192.168.1.300\": bad IP address (192.168.1.300)",
        "a.yaml: document 0 (AuthorizationPolicy foo/deny-bad): field spec.rules[0].to[0].operation.ports[0] = \"99999\": bad port (99999): must be an integer between 0 and 65535",
        "a.yaml: document 0 (AuthorizationPolicy foo/deny-bad): field spec.rules[0].when[0].key = \"request.auth.claim.role\": unknown attribute request.auth.claim.role; did you mean request.auth.claims[role]?",
        "a.yaml: document 0 (AuthorizationPolicy foo/deny-bad): field spec.rules[0].when[1].key = \"request.auth.claims.role\": request.auth.claims.role must be of the form request.auth.claims[<name>]; did you mean request.auth.claims[role]?",
        "a.yaml: document 0 (AuthorizationPolicy foo/deny-bad): field spec.rules[1].from[0].source.ipBlocks[0] = \"10.0.0.0/33\": bad CIDR range (10.0.0.0/33): the prefix length \"33\" must be an integer from 0 to 32 for an IPv4 address",
        "b.yaml: document 0 (RequestAuthentication foo/jwt): field spec.jwtRule = []: unknown field `jwtRule`, expected one of `selector`, `targetRef`, `targetRefs`, `jwtRules`; did you mean `jwtRules`?",
        "c.yaml: document 0 (AuthorizationPolicy foo/labelled): field metadata.labels = [\"app\"]: invalid type: sequence, expected a map",
    ]
    .iter()
    .map(|e| format!("{dir}/{e}"))
    .collect()
}

const EVERY_FILE: &str = "tests/validate/every-file";

#[test]
fn every_error_of_every_file_is_reported_not_only_those_of_files_that_decode() {
    let (code, out) = validate(&[EVERY_FILE]);
    let mut want: Vec<String> = every_file_errors(EVERY_FILE)
        .iter()
        .map(|e| format!("error: {e}\n"))
        .collect();
    // The resources that decoded (deny-bad, deny-admin) and the files read, not the paths given.
    want.push("invalid: 7 error(s), 0 warning(s) in 2 resource(s) from 3 file(s)\n".into());
    assert_eq!(out, want.concat());
    assert_eq!(code, Some(3));

    let (code, out) = validate(&[EVERY_FILE, "--output", "json"]);
    assert_eq!(code, Some(3));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            &v["valid"],
            &v["errors"],
            &v["warnings"],
            &v["resources"],
            &v["files"]
        ),
        (&false.into(), &7.into(), &0.into(), &2.into(), &3.into()),
        "{out}"
    );

    // A file named alone that does not decode has resources: no "no resources found" warning.
    let (code, out) = validate(&[&format!("{EVERY_FILE}/b.yaml"), "-n", "foo", "-l", "app=x"]);
    assert_eq!(code, Some(3));
    assert_eq!(
        out,
        format!(
            "error: {}\ninvalid: 1 error(s), 0 warning(s) in 0 resource(s) from 1 file(s)\n",
            every_file_errors(EVERY_FILE)[5]
        )
    );
}

/// Waits for `child` to exit (bounded) and returns its exit code and stderr.
fn exit_of(mut child: std::process::Child) -> (Option<i32>, String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running: it started on a set with errors");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.code(), err)
}

#[test]
fn check_and_proxy_print_every_error_and_load_nothing() {
    let mut want: Vec<String> = every_file_errors(EVERY_FILE)
        .iter()
        .map(|e| format!("error: {e}\n"))
        .collect();
    want.push("error: 7 problem(s) in the policies; nothing was loaded\n".into());
    let want = want.concat();

    let out = Command::new(env!("CARGO_BIN_EXE_meshguard"))
        .current_dir(root())
        .args(["check", "--policies", EVERY_FILE, "--namespace", "foo"])
        .args(["--path", "/admin"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), want);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(out.status.code(), Some(1));

    let child = Command::new(env!("CARGO_BIN_EXE_meshguard"))
        .current_dir(root())
        .args(["proxy", "--policies", EVERY_FILE, "--namespace", "foo"])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (code, err) = exit_of(child);
    assert_eq!(err, want);
    assert_eq!(code, Some(1));
}

fn start_proxy(args: &[&str]) -> Proxy {
    spawn(proxy_command().args(args), Stdout::Null)
}

/// The status and body curl saw.
fn get(url: &str) -> (u16, String) {
    curl_status(&[url])
}

#[test]
fn a_reload_reports_every_error_and_keeps_the_last_good_set_whole() {
    let dir = tmp("validate-reload-every-error");
    let deny = |path: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: keep, namespace: foo}}\nspec:\n  action: DENY\n  rules: [{{to: [{{operation: {{paths: [\"{path}\"]}}}}]}}]\n"
        )
    };
    std::fs::write(dir.join("0-keep.yaml"), deny("/admin")).unwrap();
    let d = dir.to_str().unwrap();
    let p = start_proxy(&["--policies", d, "--namespace", "foo", "--no-watch"]);
    assert_eq!(get(&format!("{}/admin", p.base)).0, 403);
    assert_eq!(get(&format!("{}/other", p.base)).0, 200);

    // The good file changes too: applying the part that decodes would deny /other.
    std::fs::write(dir.join("0-keep.yaml"), deny("/other")).unwrap();
    for f in ["a.yaml", "b.yaml", "c.yaml"] {
        std::fs::copy(root().join(EVERY_FILE).join(f), dir.join(f)).unwrap();
    }
    p.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let dump = loop {
        let dump: serde_json::Value =
            serde_json::from_str(&get(&format!("{}/config_dump", p.admin)).1).unwrap();
        if !dump["last_reload_error"].is_null() {
            break dump;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reload was never reported"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(
        dump["last_reload_error"]["errors"],
        serde_json::json!(every_file_errors(d))
    );
    assert_eq!(dump["generation"], 1, "{dump}");
    assert_eq!(get(&format!("{}/admin", p.base)).0, 403);
    assert_eq!(get(&format!("{}/other", p.base)).0, 200);
}

#[test]
fn a_workload_that_only_request_authentications_apply_to_is_warned_about() {
    // The walkthrough's step 3 with the AuthorizationPolicy's selector edited away from the
    // workload: tokens are still checked, but none is required. The proxy warns at start-up
    // in these words; validate says the same before the proxy starts.
    let dir = tmp("validate-no-authz");
    copy_dir(&root().join("examples/step3-require-jwt"), &dir);
    let ap = dir.join("authorization-policy.yaml");
    let text = std::fs::read_to_string(&ap).unwrap();
    std::fs::write(&ap, text.replace("app: httpbin", "app: httpbin-v2")).unwrap();
    let d = dir.display().to_string();
    let (code, out) = validate(&[&d, "--namespace", "foo", "--labels", "app=httpbin"]);
    assert_eq!(code, Some(0), "warnings keep exit 0: {out}");
    assert_eq!(
        out,
        format!(
            "warning: {d}/authorization-policy.yaml: document 0 (AuthorizationPolicy foo/require-jwt): field spec.selector.matchLabels: does not select the workload (namespace foo, labels {{app=httpbin}}): it will not apply\n\
warning: {d}: no AuthorizationPolicy applies to namespace foo, labels app=httpbin: requests without a token, and with any valid token, are allowed; a RequestAuthentication alone rejects only invalid tokens (401), as Istio does; \
AuthorizationPolicy foo/require-jwt does not apply: its selector app=httpbin-v2 is not a subset of the workload's labels\n\
valid: 0 error(s), 2 warning(s) in 2 resource(s) from 2 file(s)\n"
        )
    );
    // The walkthrough's step 2 has no AuthorizationPolicy at all: the warning alone.
    let (code, out) = validate(&[
        "examples/step2-request-authentication",
        "--namespace",
        "foo",
        "--labels",
        "app=httpbin",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out,
        "warning: examples/step2-request-authentication: no AuthorizationPolicy applies to namespace foo, labels app=httpbin: requests without a token, and with any valid token, are allowed; a RequestAuthentication alone rejects only invalid tokens (401), as Istio does\n\
valid: 0 error(s), 1 warning(s) in 1 resource(s) from 1 file(s)\n"
    );
    // Without a workload, nothing is said of one.
    let (_, out) = validate(&[&d]);
    assert!(!out.contains("no AuthorizationPolicy applies"), "{out}");
}
