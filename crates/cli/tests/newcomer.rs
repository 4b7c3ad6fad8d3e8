//! What a first-time user runs into, end to end with the real binary: the start-up and reload
//! summaries (and the warning when no policy applies), a file watch that ignores its
//! neighbours, output piped into a reader that stops early, a pasted `Bearer` header value, and
//! the listen address forms.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::fs::{copy_dir, root, tmp};
use support::http::until_closed;
use support::proxy::{Proxy, Stdout, spawn};

fn meshguard() -> Command {
    let mut c = support::proxy::meshguard();
    // The default log level is under test.
    c.env_remove("RUST_LOG");
    c
}

/// Starts the proxy on `127.0.0.1:0` with `args`; its stderr is collected line by line.
fn start(args: &[&str]) -> Proxy {
    spawn(
        meshguard()
            .arg("proxy")
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(args),
        Stdout::Null,
    )
}

/// Starts the proxy for the walkthrough's workload (namespace `foo`, labels `app=httpbin`) with
/// the policies at `policies` (a file or a directory).
fn start_httpbin(policies: &std::path::Path) -> Proxy {
    start(&[
        "--policies",
        policies.to_str().unwrap(),
        "-n",
        "foo",
        "-l",
        "app=httpbin",
    ])
}

/// A copy of `examples/<example>` in a fresh temporary directory named after `name`.
fn example_copy(example: &str, name: &str) -> std::path::PathBuf {
    let dir = tmp(name);
    copy_dir(&root().join("examples").join(example), &dir);
    dir
}

/// The policy generation `/config_dump` reports.
fn generation(p: &Proxy) -> u64 {
    let dump = get(&p.admin, "/config_dump").1;
    let v: serde_json::Value = serde_json::from_str(&dump).unwrap();
    v["generation"].as_u64().unwrap()
}

/// GET over raw TCP; (status line, body).
fn get(base: &str, path: &str) -> (String, String) {
    let hostport = base.trim_start_matches("http://").trim_end_matches('/');
    let resp = until_closed(
        hostport,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(10),
    );
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

fn step4() -> String {
    root()
        .join("examples/step4-require-claim")
        .display()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Start-up and reload summaries

#[test]
fn startup_names_what_was_loaded_what_applies_and_the_jwt_providers() {
    let p = start(&[
        "--policies",
        &step4(),
        "--namespace",
        "foo",
        "--labels",
        "app=httpbin",
    ]);
    let log = p.stderr_lines().join("\n");
    assert!(
        log.contains(
            " INFO meshguard_runtime::reload: policies loaded (generation 1): 1 RequestAuthentication, 1 AuthorizationPolicy from 2 file(s)\n"
        ),
        "{log}"
    );
    assert!(
        log.contains(
            " INFO meshguard_runtime::reload: 2 of 2 resource(s) apply to namespace foo, labels app=httpbin: RequestAuthentication foo/jwt-example, AuthorizationPolicy foo/require-jwt\n"
        ),
        "{log}"
    );
    assert!(
        log.contains(
            " INFO meshguard_runtime::reload: JWT providers: testing@secure.istio.io (inline JWKS, 1 key(s))\n"
        ),
        "{log}"
    );
    assert!(!log.contains("WARN"), "{log}");
    // The banner stays the last start-up line, and the listening address is given once.
    assert!(
        log.lines()
            .last()
            .unwrap()
            .starts_with("meshguard: proxy on "),
        "{log}"
    );
    assert!(!log.contains("meshguard proxy listening"), "{log}");
}

#[test]
fn when_no_policy_applies_start_up_warns_and_requests_are_allowed_as_in_istio() {
    let empty = tmp("newcomer-empty");
    // Not a policy file: the loader does not read it.
    std::fs::write(empty.join("notes.txt"), "kind: AuthorizationPolicy\n").unwrap();
    let empty = empty.display().to_string();
    let cases: [(&[&str], &str, &str); 3] = [
        (
            &["--policies", &step4()],
            "no policy applies to namespace default, no labels: every request is allowed, as Istio does",
            "the loaded resources are in namespace(s) foo, neither default nor the root namespace istio-system; --namespace names the workload's namespace",
        ),
        (
            &["--policies", &step4(), "-n", "foo", "-l", "app=htpbin"],
            "no policy applies to namespace foo, labels app=htpbin: every request is allowed, as Istio does",
            "AuthorizationPolicy foo/require-jwt does not apply: its selector app=httpbin is not a subset of the workload's labels",
        ),
        (
            &["--policies", &empty, "-n", "foo", "-l", "app=httpbin"],
            "no policy applies to namespace foo, labels app=httpbin: every request is allowed, as Istio does",
            &format!("no policy file was read from {empty}; skipped: {empty}/notes.txt"),
        ),
    ];
    for (args, warning, hint) in cases {
        let p = start(args);
        let log = p.stderr_lines().join("\n");
        assert!(
            log.contains(&format!(" WARN meshguard_runtime::reload: {warning}\n")),
            "{args:?}:\n{log}"
        );
        assert!(
            log.contains(&format!(" WARN meshguard_runtime::reload: {hint}\n")),
            "{args:?}:\n{log}"
        );
        assert!(
            log.contains(" INFO meshguard_runtime::reload: JWT providers: none\n"),
            "{args:?}:\n{log}"
        );
        // Istio's semantics are kept: nothing applies, so everything is allowed.
        assert_eq!(get(&p.base, "/headers").0, "HTTP/1.1 200 OK", "{args:?}");
    }
}

#[test]
fn reloads_are_logged_at_the_default_level_including_recovery_and_a_policy_set_that_stops_applying()
{
    let dir = example_copy("step4-require-claim", "newcomer-reload");
    let ap = dir.join("authorization-policy.yaml");
    let good = std::fs::read_to_string(&ap).unwrap();
    let p = start_httpbin(&dir);

    // A broken file: ERROR, the old set stays.
    std::fs::write(&ap, good.replace("action: ALLOW", "action: ALOW")).unwrap();
    let err = p.wait_stderr("policy reload failed; keeping the last good policies");
    assert!(err.contains(" ERROR "), "{err}");

    // Fixed: one INFO line says so, with the summary.
    std::fs::write(&ap, &good).unwrap();
    let ok = p.wait_stderr("policies reloaded (generation 2");
    assert!(
        ok.ends_with(
            " INFO meshguard_runtime::reload: policies reloaded (generation 2, file change); recovered from the last failure: 1 RequestAuthentication, 1 AuthorizationPolicy from 2 file(s)"
        ),
        "{ok}"
    );
    p.wait_stderr("2 of 2 resource(s) apply to namespace foo, labels app=httpbin");

    // A change that leaves nothing applying warns again on reload.
    for f in ["authorization-policy.yaml", "request-authentication.yaml"] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        std::fs::write(
            dir.join(f),
            text.replace("namespace: foo", "namespace: bar"),
        )
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while generation(&p) < 3 || !p.stderr_lines().iter().any(|l| l.contains("neither foo")) {
        assert!(Instant::now() < deadline, "{}", p.stderr_lines().join("\n"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = p.stderr_lines().join("\n");
    assert!(
        log.contains(" WARN meshguard_runtime::reload: no policy applies to namespace foo, labels app=httpbin: every request is allowed, as Istio does"),
        "{log}"
    );
    // No "recovered" for a reload that follows a success.
    let last = p
        .stderr_lines()
        .into_iter()
        .rfind(|l| l.contains("policies reloaded"))
        .unwrap();
    assert!(!last.contains("recovered"), "{last}");
}

#[test]
fn watching_a_file_ignores_other_files_written_beside_it() {
    let dir = example_copy("step4-require-claim", "newcomer-watch-file");
    let ap = dir.join("authorization-policy.yaml");
    let p = start_httpbin(&ap);
    assert_eq!(generation(&p), 1);
    // A log file, another YAML file and an editor backup change beside the watched file for a
    // second (five debounce windows); none of them is the policy file.
    let until = Instant::now() + Duration::from_secs(1);
    let mut n = 0;
    while Instant::now() < until {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("access.log"))
            .unwrap();
        writeln!(log, "line {n}").unwrap();
        std::fs::write(dir.join("request-authentication.yaml"), format!("# {n}\n")).unwrap();
        std::fs::write(dir.join("authorization-policy.yaml~"), format!("# {n}\n")).unwrap();
        n += 1;
        assert_eq!(
            generation(&p),
            1,
            "after {n} writes beside the watched file"
        );
    }
    assert_eq!(generation(&p), 1);
    // The watched file itself still reloads.
    let text = std::fs::read_to_string(&ap).unwrap();
    std::fs::write(&ap, text.replace("group1", "group2")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while generation(&p) != 2 {
        assert!(Instant::now() < deadline, "{}", p.stderr_lines().join("\n"));
        std::thread::sleep(Duration::from_millis(20));
    }
    p.wait_stderr("policies reloaded (generation 2, file change)");
}

#[test]
fn files_skipped_in_a_policy_directory_are_warned_about_at_start_up_and_on_reload() {
    let dir = example_copy("step4-require-claim", "newcomer-skipped-files");
    // Meant to be read, but not: the loader reads only .yaml, .yml, .json and names without
    // an extension.
    std::fs::rename(
        dir.join("authorization-policy.yaml"),
        dir.join("authorization-policy.yaml.txt"),
    )
    .unwrap();
    let d = dir.display().to_string();
    let p = start_httpbin(&dir);
    let skipped = format!(
        " WARN meshguard_runtime::reload: {d}/authorization-policy.yaml.txt: skipped: only names ending in .yaml, .yml or .json, or without extension, are read"
    );
    let log = p.stderr_lines().join("\n");
    assert_eq!(log.matches(&skipped).count(), 1, "{log}");
    assert!(
        log.contains(" INFO meshguard_runtime::reload: policies loaded (generation 1): 1 RequestAuthentication, 0 AuthorizationPolicy from 1 file(s)\n"),
        "{log}"
    );
    // The same words as `meshguard validate`.
    let v = meshguard().args(["validate", &d]).output().unwrap();
    let v = String::from_utf8_lossy(&v.stdout);
    assert!(
        v.contains(&format!("warning: {d}/authorization-policy.yaml.txt: skipped: only names ending in .yaml, .yml or .json, or without extension, are read\n")),
        "{v}"
    );

    // Each reload says it again. (A README.md alone does not reload: it is not read.)
    std::fs::write(dir.join("README.md"), "# notes\n").unwrap();
    let ra = dir.join("request-authentication.yaml");
    std::fs::write(&ra, std::fs::read(&ra).unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while generation(&p) < 2 {
        assert!(Instant::now() < deadline, "{}", p.stderr_lines().join("\n"));
        std::thread::sleep(Duration::from_millis(20));
    }
    p.wait_stderr(&format!("{d}/README.md: skipped: "));
    let log = p.stderr_lines().join("\n");
    assert_eq!(log.matches(&skipped).count(), 2, "{log}");
    let dump: serde_json::Value = serde_json::from_str(&get(&p.admin, "/config_dump").1).unwrap();
    assert_eq!(dump["skipped_files"].as_array().unwrap().len(), 2, "{dump}");
}

#[test]
fn proxy_and_validate_give_the_same_reasons_when_nothing_applies() {
    // The workload's namespace forgotten, and a mesh-wide policy in the root namespace whose
    // selector names another workload: both reasons are given, by both commands.
    let dir = example_copy("step4-require-claim", "newcomer-same-reasons");
    let root_policy = std::fs::read_to_string(dir.join("authorization-policy.yaml"))
        .unwrap()
        .replace("namespace: foo", "namespace: istio-system")
        .replace("app: httpbin", "app: sleep");
    std::fs::write(dir.join("root-policy.yaml"), root_policy).unwrap();
    let d = dir.display().to_string();
    let flags = ["-n", "default", "-l", "app=httpbin"];
    let reasons = [
        "AuthorizationPolicy istio-system/require-jwt does not apply: its selector app=sleep is not a subset of the workload's labels",
        "the other 2 resource(s) are in namespace(s) foo, neither default nor the root namespace istio-system; --namespace names the workload's namespace",
    ];
    let p = start(&[&["--policies", d.as_str()][..], &flags[..]].concat());
    let log = p.stderr_lines().join("\n");
    assert!(
        log.contains(" WARN meshguard_runtime::reload: no policy applies to namespace default, labels app=httpbin: every request is allowed, as Istio does\n"),
        "{log}"
    );
    for r in reasons {
        assert!(
            log.contains(&format!(" WARN meshguard_runtime::reload: {r}\n")),
            "{r}\n{log}"
        );
    }
    let v = meshguard()
        .args(["validate", &d])
        .args(flags)
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&v.stdout);
    assert!(
        v.contains(&format!(
            "warning: {d}: none of the 3 resource(s) applies to the workload (namespace default, labels {{app=httpbin}}): a proxy started with these flags enforces nothing; {}\n",
            reasons.join("; ")
        )),
        "{v}"
    );
}

#[test]
fn header_read_timeout_help_names_the_pause_inside_a_request_body() {
    let o = meshguard().args(["proxy", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    let flag = help
        .split("--header-read-timeout <DURATION>")
        .nth(1)
        .and_then(|rest| rest.split("\n      --").next())
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        flag.contains("408 `stream timeout`"),
        "--header-read-timeout help: {flag}"
    );
}

// ---------------------------------------------------------------------------------------------
// Output into a closed pipe (`| head -1`)

#[test]
fn a_closed_stdout_ends_the_output_quietly_with_the_usual_exit_code() {
    let demo = root().join("testdata/istio-demo/demo.jwt");
    let demo = format!("@{}", demo.display());
    let key = root().join("testdata/istio-demo/key.pem");
    let cases: [(&[&str], i32); 4] = [
        (
            &[
                "check",
                "--policies",
                &step4(),
                "-n",
                "foo",
                "-l",
                "app=httpbin",
                "--token",
                &demo,
                "--explain",
            ],
            2,
        ),
        (&["validate", &step4(), "-n", "foo", "-l", "app=httpbin"], 0),
        (&["token", "decode", &demo], 0),
        (&["token", "jwks", "--key", key.to_str().unwrap()], 0),
    ];
    for (args, code) in cases {
        for _ in 0..20 {
            let mut child = meshguard()
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // The reader goes away before the first line is written.
            drop(child.stdout.take());
            let out: Output = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains("panicked"), "{args:?}: {err}");
            assert_eq!(err, "", "{args:?}");
            assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        }
    }
}

#[test]
fn a_stdout_that_cannot_be_written_is_reported_once_with_exit_1() {
    // A full disk, not a reader gone away: the output is lost, so the command fails.
    let out = meshguard()
        .args(["validate", &step4(), "-n", "foo", "-l", "app=httpbin"])
        .stdout(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err, "error: cannot write to stdout: No space left on device (os error 28)\n",
        "{err}"
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
}

// ---------------------------------------------------------------------------------------------
// check --token with a pasted header value

fn check_step4(token: &str) -> Output {
    meshguard()
        .args([
            "check",
            "--policies",
            &step4(),
            "-n",
            "foo",
            "-l",
            "app=httpbin",
        ])
        .args(["--token", token])
        .output()
        .unwrap()
}

#[test]
fn check_token_takes_a_pasted_bearer_header_value() {
    let groups = std::fs::read_to_string(root().join("testdata/istio-demo/groups-scope.jwt"))
        .unwrap()
        .trim()
        .to_string();
    for pasted in [
        format!("Bearer {groups}"),
        format!("Authorization: Bearer {groups}"),
    ] {
        let o = check_step4(&pasted);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{out}");
        assert!(out.starts_with("ALLOWED 200 OK\n"), "{out}");
    }
    // A Bearer prefix in a token file too.
    let dir = tmp("newcomer-token");
    std::fs::write(dir.join("header.txt"), format!("Bearer {groups}\n")).unwrap();
    let o = check_step4(&format!("@{}", dir.join("header.txt").display()));
    assert_eq!(o.status.code(), Some(0));

    // What cannot be one token is refused with the reason, not sent.
    let o = check_step4(&format!("bearer {groups}"));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).starts_with(
            "error: --token: starts with \"bearer \"; Istio takes a token only after \"Bearer \" (case-sensitive)"
        ),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = check_step4(&format!("Bearer {groups} {groups}"));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("error: --token: a JWT has no whitespace"),
        "{err}"
    );
    assert!(!err.contains("Found multiple Jwt tokens"), "{err}");
    assert!(o.stdout.is_empty());
    // A header value pasted without its token is empty, not the token "Bearer".
    for pasted in ["", "Bearer ", "Authorization: Bearer "] {
        let o = check_step4(pasted);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err, "error: --token: the token is empty\n", "{pasted:?}");
        assert_eq!(o.status.code(), Some(1), "{pasted:?}: {err}");
        assert!(o.stdout.is_empty(), "{pasted:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Listen address forms

#[test]
fn listen_and_admin_take_port_colon_port_and_localhost_forms() {
    for (listen, admin, shown) in [
        ("0", "localhost:0", "http://127.0.0.1:"),
        (":0", "0", "http://0.0.0.0:"),
        ("localhost:0", ":0", "http://127.0.0.1:"),
    ] {
        let p = spawn(
            meshguard()
                .args([
                    "proxy",
                    "--policies",
                    &step4(),
                    "-n",
                    "foo",
                    "-l",
                    "app=httpbin",
                ])
                .args(["--listen", listen, "--admin", admin]),
            Stdout::Null,
        );
        let (base, admin_url) = (&p.base, &p.admin);
        assert!(base.starts_with(shown), "--listen {listen}: {base}");
        let port = base.rsplit(':').next().unwrap();
        // Reached on loopback in every form.
        assert_eq!(
            get(&format!("http://127.0.0.1:{port}"), "/get").0,
            "HTTP/1.1 403 Forbidden",
            "--listen {listen}"
        );
        assert_eq!(
            get(admin_url, "/healthz/ready").0,
            "HTTP/1.1 200 OK",
            "--admin {admin}"
        );
    }

    let mut echo = meshguard()
        .args(["echo", "--listen", "localhost:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = BufReader::new(echo.stderr.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let _ = echo.kill();
    let _ = echo.wait();
    assert!(
        first.starts_with("meshguard: echo upstream on http://127.0.0.1:"),
        "{first}"
    );

    for (cmd, flag) in [
        (&["proxy", "--policies", "examples"][..], "--listen"),
        (&["proxy", "--policies", "examples"][..], "--admin"),
        (&["echo"][..], "--listen"),
    ] {
        let o = meshguard()
            .args(cmd)
            .args([flag, "http://localhost:8080"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{cmd:?} {flag}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.starts_with(&format!(
                "error: invalid value 'http://localhost:8080' for '{flag} <ADDR>': "
            )),
            "{err}"
        );
        assert!(
            err.contains("expected PORT, :PORT, HOST:PORT or IP:PORT, e.g. 8080 (= 127.0.0.1:8080), :8080 (= 0.0.0.0:8080, every interface), localhost:8080"),
            "{err}"
        );
    }
}

#[test]
fn a_reload_that_leaves_only_request_authentications_applying_warns_that_no_token_is_required() {
    let dir = example_copy("step3-require-jwt", "newcomer-no-authz");
    let ap = dir.join("authorization-policy.yaml");
    let good = std::fs::read_to_string(&ap).unwrap();
    let p = start_httpbin(&dir);
    assert!(
        !p.stderr_lines().join("\n").contains("WARN"),
        "{:?}",
        p.stderr_lines()
    );
    // Step 3: a request without a token gets 403.
    assert_eq!(get(&p.base, "/headers").0, "HTTP/1.1 403 Forbidden");

    // The AuthorizationPolicy's selector stops matching: only the RequestAuthentication applies.
    std::fs::write(&ap, good.replace("app: httpbin", "app: httpbin-v2")).unwrap();
    let warning = p.wait_stderr("no AuthorizationPolicy applies");
    assert!(
        warning.ends_with(
            " WARN meshguard_runtime::reload: no AuthorizationPolicy applies to namespace foo, labels app=httpbin: requests without a token, and with any valid token, are allowed; a RequestAuthentication alone rejects only invalid tokens (401), as Istio does"
        ),
        "{warning}"
    );
    let log = p.stderr_lines().join("\n");
    assert!(
        log.contains(" INFO meshguard_runtime::reload: 1 of 2 resource(s) apply to namespace foo, labels app=httpbin: RequestAuthentication foo/jwt-example\n"),
        "{log}"
    );
    assert!(
        log.contains(" WARN meshguard_runtime::reload: AuthorizationPolicy foo/require-jwt does not apply: its selector app=httpbin-v2 is not a subset of the workload's labels\n"),
        "{log}"
    );
    // What the warning says: the request without a token is allowed now, an invalid one is not.
    assert_eq!(get(&p.base, "/headers").0, "HTTP/1.1 200 OK");
    let hostport = p.base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(hostport).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /headers HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer not.a.token\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{resp}");

    // The same at start-up (the walkthrough's step 2), without a near miss to name.
    let step2 = root().join("examples/step2-request-authentication");
    let p = start_httpbin(&step2);
    let log = p.stderr_lines().join("\n");
    assert!(
        log.contains(" WARN meshguard_runtime::reload: no AuthorizationPolicy applies to namespace foo, labels app=httpbin: requests without a token"),
        "{log}"
    );
    assert_eq!(log.matches(" WARN ").count(), 1, "{log}");
}
