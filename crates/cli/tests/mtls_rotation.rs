//! Rotation of the inbound TLS files and what the proxy shows of its mutual TLS, through the
//! real binary: new files in `--tls-dir` apply to new handshakes without a restart and
//! without a failed request, a broken set keeps the last good one (logged and counted),
//! `/config_dump` shows the serving certificate, and `/metrics` counts handshakes by result.
//! The client is rustls, which reports the certificate the server presented.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod support;

use support::fs::tmp;
use support::proxy::{Proxy, Stdout, meshguard, spawn};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `meshguard cert ARGS`, which must succeed.
fn cert(args: &[&str]) {
    let out = meshguard().arg("cert").args(args).output().unwrap();
    assert!(out.status.success(), "meshguard cert {args:?}: {out:?}");
}

/// A workload certificate of the CA in `dir/CA` for `ns`/`sa` in `dir/NAME`.
fn issue(dir: &Path, ca: &str, name: &str, ns: &str, sa: &str) {
    cert(&[
        "issue",
        "--ca",
        path(&dir.join(ca)),
        "--namespace",
        ns,
        "--service-account",
        sa,
        "--out",
        path(&dir.join(name)),
    ]);
}

/// A mesh: CA `ca` (cluster.local), the server's files `httpbin` and, of the same identity,
/// `httpbin-new`; the client `sleep`; `other-td` (same CA, trust domain other.td); CA `ca2`
/// and its `foreign` client. `tls` is the `--tls-dir`, a copy of `httpbin`.
struct Mesh {
    dir: PathBuf,
}

impl Mesh {
    fn new(name: &str) -> Mesh {
        let dir = tmp(name);
        cert(&["ca", "--out", path(&dir.join("ca"))]);
        issue(&dir, "ca", "httpbin", "foo", "httpbin");
        issue(&dir, "ca", "httpbin-new", "foo", "httpbin");
        issue(&dir, "ca", "sleep", "bar", "sleep");
        cert(&[
            "issue",
            "--ca",
            path(&dir.join("ca")),
            "--namespace",
            "bar",
            "--service-account",
            "sleep",
            "--trust-domain",
            "other.td",
            "--out",
            path(&dir.join("other-td")),
        ]);
        cert(&["ca", "--out", path(&dir.join("ca2"))]);
        issue(&dir, "ca2", "foreign", "bar", "sleep");
        std::fs::create_dir_all(dir.join("tls")).unwrap();
        for f in ["cert-chain.pem", "key.pem", "root-cert.pem"] {
            std::fs::copy(dir.join("httpbin").join(f), dir.join("tls").join(f)).unwrap();
        }
        std::fs::create_dir_all(dir.join("policies")).unwrap();
        std::fs::write(
            dir.join("policies/pa.yaml"),
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: foo}\nspec: {mtls: {mode: STRICT}}\n",
        )
        .unwrap();
        Mesh { dir }
    }

    fn proxy(&self) -> Proxy {
        spawn(
            meshguard()
                .args(["proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
                .args(["--no-access-log", "--namespace", "foo"])
                .args(["--labels", "app=httpbin"])
                .arg("--policies")
                .arg(self.dir.join("policies"))
                .arg("--tls-dir")
                .arg(self.dir.join("tls")),
            Stdout::Null,
        )
    }

    fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }

    /// Replaces `--tls-dir`'s FILE with `from`'s, as a writer that renames into place does.
    fn replace(&self, file: &str, from: &Path) {
        let tmp = self.tls_dir().join(format!(".{file}.tmp"));
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, self.tls_dir().join(file)).unwrap();
    }

    /// Serves `name`'s certificate and key.
    fn rotate_to(&self, name: &str) {
        self.replace(
            "cert-chain.pem",
            &self.dir.join(name).join("cert-chain.pem"),
        );
        self.replace("key.pem", &self.dir.join(name).join("key.pem"));
    }
}

/// The serial (hex, as `/config_dump` shows it), `notBefore` and `notAfter` of the first
/// certificate of a PEM file.
fn cert_facts(pem_file: &Path) -> (String, i64, i64) {
    let pem = std::fs::read(pem_file).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    (
        cert.raw_serial_as_string().replace(':', ""),
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    )
}

fn serial_of(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial_as_string().replace(':', "")
}

/// A client configuration presenting `client`'s files (none: no certificate), offering
/// Istio's ALPN for HTTP/1.1.
fn client_config(client: Option<&Path>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject as _;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(support::certs::AnyServer(provider)));
    let mut config = match client {
        Some(dir) => {
            let chain =
                rustls::pki_types::CertificateDer::pem_file_iter(dir.join("cert-chain.pem"))
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![
        b"istio-http/1.1".to_vec(),
        b"istio".to_vec(),
        b"http/1.1".to_vec(),
    ];
    Arc::new(config)
}

/// One `GET /headers` on a new TLS connection: the status and the serial of the server's
/// certificate, or the error.
fn get(addr: &str, config: &Arc<rustls::ClientConfig>) -> Result<(u16, String), String> {
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), "httpbin.foo".try_into().unwrap())
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET /headers HTTP/1.1\r\nHost: httpbin\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let read = tls.read_to_end(&mut out);
    if out.is_empty() {
        return Err(format!("{read:?}"));
    }
    let serial = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| serial_of(c))
        .unwrap_or_default();
    Ok((support::http::parse(&out).status, serial))
}

fn admin_get(p: &Proxy, page: &str) -> String {
    support::http::exchange(
        p.admin_addr(),
        &format!("GET {page} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"),
    )
    .body
}

/// The `meshguard_tls_*` sample lines of `/metrics` (OpenMetrics), sorted.
fn tls_metrics(p: &Proxy) -> Vec<String> {
    let mut v: Vec<String> = admin_get(p, "/metrics")
        .lines()
        .filter(|l| l.starts_with("meshguard_tls_"))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Waits (20 s at most) until `cond` holds of the `meshguard_tls_*` lines; returns them.
fn wait_metrics(p: &Proxy, cond: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = tls_metrics(p);
        if cond(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "metrics never matched:\n{m:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tls_dump(p: &Proxy) -> serde_json::Value {
    let dump: serde_json::Value = serde_json::from_str(&admin_get(p, "/config_dump")).unwrap();
    dump["tls"].clone()
}

#[test]
fn rotation_under_traffic_serves_the_new_certificate_without_a_failed_request() {
    let mesh = Mesh::new("mtls-rotation-traffic");
    let p = mesh.proxy();
    let addr = p.addr().to_string();
    let (old, _, _) = cert_facts(&mesh.dir.join("httpbin/cert-chain.pem"));
    let (new, new_nb, new_na) = cert_facts(&mesh.dir.join("httpbin-new/cert-chain.pem"));
    assert_ne!(old, new);

    // A client sending one request per new connection, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let client = {
        let (stop, seen, addr) = (stop.clone(), seen.clone(), addr.clone());
        let config = client_config(Some(&mesh.dir.join("sleep")));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = get(&addr, &config);
                seen.lock().unwrap().push(r);
            }
        })
    };
    let count_with = |serial: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|r| matches!(r, Ok((_, s)) if s == serial))
            .count()
    };
    let wait = |serial: &str, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while count_with(serial) < n {
            assert!(Instant::now() < deadline, "{:?}", seen.lock().unwrap());
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait(&old, 5);
    mesh.rotate_to("httpbin-new");
    wait(&new, 5);
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();

    // Every request answered 200; the serial changed once, from old to new, never back.
    let seen = seen.lock().unwrap().clone();
    let serials: Vec<&str> = seen
        .iter()
        .map(|r| match r {
            Ok((200, s)) => s.as_str(),
            other => panic!("a request failed during the rotation: {other:?}"),
        })
        .collect();
    let switch = serials.iter().position(|s| *s == new).unwrap();
    assert!(serials[..switch].iter().all(|s| *s == old), "{serials:?}");
    assert!(serials[switch..].iter().all(|s| *s == new), "{serials:?}");

    p.wait_stderr(&format!(
        "TLS file change: TLS certificate rotated: serving spiffe://cluster.local/ns/foo/sa/httpbin (serial {new}, valid until {new_na}) to new connections"
    ));
    assert_eq!(
        tls_metrics(&p),
        vec![
            format!(
                "meshguard_tls_certificate_expiry_timestamp_seconds{{identity=\"spiffe://cluster.local/ns/foo/sa/httpbin\"}} {new_na}"
            ),
            "meshguard_tls_certificate_rotations_total{result=\"success\"} 1".to_string(),
            format!(
                "meshguard_tls_handshakes_total{{result=\"ok\"}} {}",
                seen.len()
            ),
        ]
    );
    let dump = tls_dump(&p);
    assert_eq!(
        dump["serving_certificate"],
        serde_json::json!({
            "identity": "spiffe://cluster.local/ns/foo/sa/httpbin",
            "serial": new,
            "not_before": new_nb,
            "not_after": new_na,
        })
    );
    assert_eq!(dump["trust_domain"], "cluster.local");
    assert_eq!(dump["trust_domain_aliases"], serde_json::json!([]));
    assert_eq!(dump["dir"], path(&mesh.tls_dir()));
    assert_eq!(dump["last_rotation_error"], serde_json::Value::Null);
}

#[test]
fn a_broken_set_keeps_serving_the_last_good_one_logged_and_counted() {
    let mesh = Mesh::new("mtls-rotation-broken");
    let p = mesh.proxy();
    let addr = p.addr();
    let sleep = client_config(Some(&mesh.dir.join("sleep")));
    let (old, _, old_na) = cert_facts(&mesh.dir.join("httpbin/cert-chain.pem"));
    let dir = mesh.tls_dir();
    let (chain, key, root) = (
        dir.join("cert-chain.pem"),
        dir.join("key.pem"),
        dir.join("root-cert.pem"),
    );
    let failures = |n: usize| {
        move |m: &[String]| {
            m.contains(&format!(
                "meshguard_tls_certificate_rotations_total{{result=\"failure\"}} {n}"
            ))
        }
    };
    let expect_old = |n: usize, error: &str| {
        let m = wait_metrics(&p, failures(n));
        assert!(
            !m.iter().any(|l| l.contains("result=\"success\"")),
            "{m:#?}"
        );
        assert!(
            m.contains(&format!(
                "meshguard_tls_certificate_expiry_timestamp_seconds{{identity=\"spiffe://cluster.local/ns/foo/sa/httpbin\"}} {old_na}"
            )),
            "{m:#?}"
        );
        p.wait_stderr(&format!(
            "TLS files not used, still serving serial {old}: {error}"
        ));
        assert_eq!(get(addr, &sleep), Ok((200, old.clone())));
        let dump = tls_dump(&p);
        assert_eq!(dump["serving_certificate"]["serial"], old.as_str());
        assert_eq!(dump["last_rotation_error"]["error"], error);
    };

    // A key of another certificate.
    mesh.replace("key.pem", &mesh.dir.join("sleep/key.pem"));
    expect_old(
        1,
        &format!(
            "{}: does not match the certificate in {}",
            key.display(),
            chain.display()
        ),
    );
    // A consistent pair of another CA.
    mesh.rotate_to("foreign");
    let m = wait_metrics(&p, failures(2));
    let line = p.wait_stderr(&format!(
        "still serving serial {old}: {}: does not lead to the root in {}: ",
        chain.display(),
        root.display()
    ));
    // Both CAs are named alike: webpki finds the issuer by name and the signature fails.
    assert!(
        line.contains("invalid peer certificate: BadSignature"),
        "{line}"
    );
    assert!(!m.iter().any(|l| l.contains("result=\"success\"")));
    assert_eq!(get(addr, &sleep), Ok((200, old.clone())));
    // A file that cannot be read.
    std::fs::remove_file(&key).unwrap();
    expect_old(
        3,
        &format!(
            "{}: cannot read: No such file or directory (os error 2)",
            key.display()
        ),
    );
    // Good files again: served, and the error is gone.
    mesh.rotate_to("httpbin-new");
    let (new, _, new_na) = cert_facts(&mesh.dir.join("httpbin-new/cert-chain.pem"));
    let m = wait_metrics(&p, |m| {
        m.contains(&"meshguard_tls_certificate_rotations_total{result=\"success\"} 1".to_string())
    });
    assert!(
        m.contains(&format!(
            "meshguard_tls_certificate_expiry_timestamp_seconds{{identity=\"spiffe://cluster.local/ns/foo/sa/httpbin\"}} {new_na}"
        )),
        "{m:#?}"
    );
    assert_eq!(get(addr, &sleep), Ok((200, new.clone())));
    let dump = tls_dump(&p);
    assert_eq!(dump["serving_certificate"]["serial"], new.as_str());
    assert_eq!(dump["last_rotation_error"], serde_json::Value::Null);
}

#[test]
fn handshakes_are_counted_by_result() {
    let mesh = Mesh::new("mtls-handshake-metrics");
    let p = mesh.proxy();
    let addr = p.addr();
    let ok = get(addr, &client_config(Some(&mesh.dir.join("sleep"))));
    assert!(matches!(ok, Ok((200, _))), "{ok:?}");
    for client in [None, Some("foreign"), Some("other-td"), Some("foreign")] {
        let config = client_config(client.map(|c| mesh.dir.join(c)).as_deref());
        assert!(get(addr, &config).is_err(), "{client:?}");
    }
    // Plaintext on a STRICT port: reset.
    let mut s = TcpStream::connect(addr).unwrap();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let _ = s.read_to_end(&mut Vec::new());
    // A connection closed before sending anything is no handshake.
    drop(TcpStream::connect(addr).unwrap());

    let want = [
        "meshguard_tls_handshakes_total{result=\"no_cert\"} 1",
        "meshguard_tls_handshakes_total{result=\"ok\"} 1",
        "meshguard_tls_handshakes_total{result=\"plaintext_refused\"} 1",
        "meshguard_tls_handshakes_total{result=\"untrusted\"} 2",
        "meshguard_tls_handshakes_total{result=\"wrong_trust_domain\"} 1",
    ];
    let m = wait_metrics(&p, |m| {
        want.iter().all(|w| m.contains(&w.to_string()))
            && m.iter().filter(|l| l.contains("handshakes")).count() == want.len()
    });
    // Before any rotation: the expiry of the serving certificate, no rotation counted.
    let (_, _, na) = cert_facts(&mesh.dir.join("httpbin/cert-chain.pem"));
    assert_eq!(
        m.iter()
            .filter(|l| !l.contains("handshakes"))
            .collect::<Vec<_>>(),
        vec![&format!(
            "meshguard_tls_certificate_expiry_timestamp_seconds{{identity=\"spiffe://cluster.local/ns/foo/sa/httpbin\"}} {na}"
        )]
    );
}
