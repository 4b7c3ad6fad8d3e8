//! Mutual TLS on the inbound side, through the real binary: `meshguard cert` (a mesh CA and
//! SPIFFE workload certificates in Istio's layout) and `meshguard proxy --tls-dir`, checked
//! with real clients (curl, `openssl s_client`) on loopback.

use std::path::Path;
use std::process::Output;

mod support;

use support::fs::tmp;
use support::proxy::meshguard;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `meshguard cert ARGS`, which must succeed.
fn cert(args: &[&str]) -> String {
    let out = meshguard().arg("cert").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "meshguard cert {args:?}:\n{}",
        text(&out)
    );
    text(&out)
}

fn openssl(args: &[&str]) -> Output {
    std::process::Command::new("openssl")
        .args(args)
        .output()
        .unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A CA in `dir/ca` and a workload certificate for `ns`/`sa` in `dir/NAME`.
fn ca_and_workload(dir: &Path, td: &str, name: &str, ns: &str, sa: &str) {
    cert(&["ca", "--out", path(&dir.join("ca")), "--trust-domain", td]);
    issue(dir, "ca", name, ns, sa, &[]);
}

fn issue(dir: &Path, ca: &str, name: &str, ns: &str, sa: &str, extra: &[&str]) {
    let mut args = vec![
        "issue",
        "--ca",
        path(&dir.join(ca)).to_owned().leak(),
        "--namespace",
        ns,
        "--service-account",
        sa,
        "--out",
        path(&dir.join(name)).to_owned().leak(),
    ];
    args.extend_from_slice(extra);
    cert(&args);
}

#[test]
fn cert_ca_and_issue_write_istios_layout_with_the_spiffe_id() {
    let dir = tmp("mtls-cert");
    let out = cert(&["ca", "--out", path(&dir.join("ca"))]);
    assert!(
        out.contains("CA for trust domain cluster.local written to"),
        "{out}"
    );
    for f in [
        "ca-cert.pem",
        "ca-key.pem",
        "root-cert.pem",
        "cert-chain.pem",
    ] {
        assert!(dir.join("ca").join(f).is_file(), "{f}");
    }
    let out = cert(&[
        "issue",
        "--ca",
        path(&dir.join("ca")),
        "--namespace",
        "foo",
        "--service-account",
        "httpbin",
        "--out",
        path(&dir.join("httpbin")),
    ]);
    assert!(
        out.starts_with("spiffe://cluster.local/ns/foo/sa/httpbin written to"),
        "{out}"
    );
    let w = dir.join("httpbin");
    // The chain leads to the root, with the client and server EKUs.
    let v = openssl(&[
        "verify",
        "-purpose",
        "sslclient",
        "-CAfile",
        path(&w.join("root-cert.pem")),
        path(&w.join("cert-chain.pem")),
    ]);
    assert!(v.status.success(), "{}", text(&v));
    let x = text(&openssl(&[
        "x509",
        "-in",
        path(&w.join("cert-chain.pem")),
        "-noout",
        "-text",
    ]));
    assert!(
        x.contains("URI:spiffe://cluster.local/ns/foo/sa/httpbin"),
        "{x}"
    );
    assert!(
        x.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{x}"
    );
    // Istio's workload certificates have an empty subject.
    assert!(x.contains("Subject: \n") || x.contains("Subject:\n"), "{x}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for key in [dir.join("ca/ca-key.pem"), w.join("key.pem")] {
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }
}

#[test]
fn cert_issue_takes_the_cas_trust_domain_and_a_ttl() {
    let dir = tmp("mtls-cert-td");
    cert(&[
        "ca",
        "--out",
        path(&dir.join("ca")),
        "--trust-domain",
        "example.org",
    ]);
    issue(&dir, "ca", "w", "bar", "sleep", &["--ttl", "90m"]);
    let x = text(&openssl(&[
        "x509",
        "-in",
        path(&dir.join("w/cert-chain.pem")),
        "-noout",
        "-text",
    ]));
    assert!(
        x.contains("URI:spiffe://example.org/ns/bar/sa/sleep"),
        "{x}"
    );
    issue(
        &dir,
        "ca",
        "w2",
        "bar",
        "sleep",
        &["--trust-domain", "alias.td"],
    );
    let x = text(&openssl(&[
        "x509",
        "-in",
        path(&dir.join("w2/cert-chain.pem")),
        "-noout",
        "-ext",
        "subjectAltName",
    ]));
    assert!(x.contains("URI:spiffe://alias.td/ns/bar/sa/sleep"), "{x}");
    // 90 minutes: valid in 80, expired in 100.
    let check = |secs: &str| {
        openssl(&[
            "x509",
            "-in",
            path(&dir.join("w/cert-chain.pem")),
            "-noout",
            "-checkend",
            secs,
        ])
        .status
        .success()
    };
    assert!(check("4800"));
    assert!(!check("6000"));
}

#[test]
fn cert_errors_name_the_file_and_keep_existing_files() {
    let dir = tmp("mtls-cert-err");
    let missing = dir.join("nope");
    let out = meshguard()
        .args(["cert", "issue", "--ca", path(&missing), "--namespace", "a"])
        .args(["--service-account", "b", "--out", path(&dir.join("x"))])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains(&format!(
            "error: {}/ca-cert.pem: cannot read",
            missing.display()
        )),
        "{}",
        text(&out)
    );
    ca_and_workload(&dir, "cluster.local", "w", "a", "b");
    let before = std::fs::read(dir.join("w/key.pem")).unwrap();
    let out = meshguard()
        .args([
            "cert",
            "issue",
            "--ca",
            path(&dir.join("ca")),
            "--namespace",
            "a",
        ])
        .args(["--service-account", "b", "--out", path(&dir.join("w"))])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("already exists (pass --force to overwrite it)"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(dir.join("w/key.pem")).unwrap(), before);
    // A bad namespace would make a bad SPIFFE ID.
    let out = meshguard()
        .args([
            "cert",
            "issue",
            "--ca",
            path(&dir.join("ca")),
            "--namespace",
            "a/b",
        ])
        .args(["--service-account", "b", "--out", path(&dir.join("y"))])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--namespace \"a/b\""), "{}", text(&out));
    // A key that is not the CA's.
    std::fs::copy(dir.join("w/key.pem"), dir.join("ca/ca-key.pem")).unwrap();
    let out = meshguard()
        .args([
            "cert",
            "issue",
            "--ca",
            path(&dir.join("ca")),
            "--namespace",
            "a",
        ])
        .args(["--service-account", "b", "--out", path(&dir.join("z"))])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("ca-key.pem does not belong to the certificate in"),
        "{}",
        text(&out)
    );
}

#[test]
fn cert_help_shows_an_example() {
    let out = meshguard().args(["cert", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = text(&out);
    assert!(
        help.contains(
            "meshguard cert issue --ca ca --namespace foo --service-account httpbin --out httpbin"
        ),
        "{help}"
    );
}
