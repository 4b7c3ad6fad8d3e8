//! The inbound listener's TLS material and rustls configuration, as Istio's sidecar sets up
//! its inbound `DownstreamTlsContext`.
//!
//! Owns: reading `--tls-dir` (`cert-chain.pem`, `key.pem`, `root-cert.pem`, istio-agent's
//! layout), the client-certificate verifier (the chain must lead to the mesh root, and some
//! URI SAN must be `spiffe://<td>/...` for the trust domain or one of its aliases), the
//! `ServerConfig`s (TLS 1.2 and 1.3, Istio's cipher list where rustls has it, ALPN `h2` and
//! `http/1.1`), reading the peer's identity from its certificate, and naming why a handshake
//! failed. Does not own when a connection gets TLS (the filter-chain match in
//! [`crate::inbound`]) or serving HTTP on it ([`crate::connection`]).
//!
//! ALPN: the server offers `h2`, `http/1.1` in that order, as Envoy does for Istio's HTTP
//! chains. rustls ends a handshake with `no_application_protocol` when the client offered
//! ALPN and none is common, where Envoy carries on without ALPN (Istio clients offer
//! `istio-peer-exchange,istio` on TCP clusters): so a connection whose ClientHello offers
//! neither protocol gets a configuration without ALPN, and HTTP/1 or HTTP/2 is then told apart
//! from the first bytes, as over plaintext.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::client::PeerIdentity;

/// The files of `--tls-dir`.
pub const CERT_CHAIN: &str = "cert-chain.pem";
pub const KEY: &str = "key.pem";
pub const ROOT_CERT: &str = "root-cert.pem";

/// Istio's default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// What `meshguard proxy --tls-dir` serves with.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub dir: PathBuf,
    /// The mesh's trust domain.
    pub trust_domain: String,
    /// Other trust domains whose peers are accepted (`trustDomainAliases`).
    pub trust_domain_aliases: Vec<String>,
}

impl TlsSettings {
    /// The trust domains a peer's SPIFFE ID may have: the mesh's and its aliases.
    pub fn trust_domains(&self) -> Vec<String> {
        let mut v = vec![self.trust_domain.clone()];
        for a in &self.trust_domain_aliases {
            if !v.contains(a) {
                v.push(a.clone());
            }
        }
        v
    }
}

/// Why a TLS handshake ended (the `result` of the handshake metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeResult {
    Ok,
    /// The client sent no certificate (Envoy: `ssl.fail_verify_no_cert`).
    NoCert,
    /// The chain does not lead to the mesh root, or a certificate is expired or malformed
    /// (Envoy: `ssl.fail_verify_error`).
    Untrusted,
    /// No URI SAN in the trust domain or an alias (Envoy: `ssl.fail_verify_san`).
    WrongTrustDomain,
    /// Plaintext, or TLS, where the port's mode has no chain for it (Envoy:
    /// `no_filter_chain_match`): the connection is reset.
    PlaintextRefused,
    /// Anything else: a protocol error, a timeout, a client that went away.
    Failed,
}

impl HandshakeResult {
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeResult::Ok => "ok",
            HandshakeResult::NoCert => "no_cert",
            HandshakeResult::Untrusted => "untrusted",
            HandshakeResult::WrongTrustDomain => "wrong_trust_domain",
            HandshakeResult::PlaintextRefused => "plaintext_refused",
            HandshakeResult::Failed => "failed",
        }
    }

    /// Names a failed handshake from the error tokio-rustls returned.
    pub fn of_error(e: &std::io::Error) -> HandshakeResult {
        let Some(err) = e.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
            return HandshakeResult::Failed;
        };
        match err {
            Error::NoCertificatesPresented => HandshakeResult::NoCert,
            Error::InvalidCertificate(CertificateError::Other(o))
                if o.0.downcast_ref::<NotInTrustDomain>().is_some() =>
            {
                HandshakeResult::WrongTrustDomain
            }
            Error::InvalidCertificate(_) => HandshakeResult::Untrusted,
            _ => HandshakeResult::Failed,
        }
    }
}

/// The verifier's error for a certificate with no SPIFFE ID in the trust domains.
#[derive(Debug)]
struct NotInTrustDomain;

impl std::fmt::Display for NotInTrustDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no URI SAN in the trust domain or its aliases")
    }
}

impl std::error::Error for NotInTrustDomain {}

/// The serving certificate, as `/config_dump` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingCert {
    /// Its first URI SAN (the workload's SPIFFE ID), empty without one.
    pub identity: String,
    /// The serial number in hex.
    pub serial: String,
    /// `notBefore`, in seconds since the Unix epoch.
    pub not_before: i64,
    /// `notAfter`, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// What reading `--tls-dir` again did ([`ServerTls::check`]).
#[derive(Debug)]
pub enum Rotation {
    /// The files are the ones read last time (or fail the same way): nothing to do.
    Unchanged,
    /// New files, now served to new handshakes.
    Rotated(Arc<Material>),
    /// New files that cannot be served: the error names the file and what is wrong; the
    /// last good material stays.
    Failed(String),
}

/// A rotation that failed, kept for `/config_dump` until the next success.
#[derive(Clone, Debug)]
struct RotationError {
    at: u64,
    error: String,
}

/// The contents of the three files, read once so that what is checked is what is served.
struct Files {
    chain: Vec<u8>,
    key: Vec<u8>,
    root: Vec<u8>,
}

impl Files {
    fn read(dir: &Path) -> Result<Files, String> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
        };
        Ok(Files {
            chain: read(CERT_CHAIN)?,
            key: read(KEY)?,
            root: read(ROOT_CERT)?,
        })
    }

    /// SHA-256 over the three files (each preceded by its length).
    fn fingerprint(&self) -> Vec<u8> {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in [&self.chain, &self.key, &self.root] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        ctx.finish().as_ref().to_vec()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One set of files, ready to serve.
#[derive(Debug)]
pub struct Material {
    /// ALPN `h2`, `http/1.1`.
    with_alpn: Arc<ServerConfig>,
    /// No ALPN: for a client that offered neither protocol.
    without_alpn: Arc<ServerConfig>,
    pub serving: ServingCert,
}

/// The inbound TLS state: the current material, replaced whole when the files change.
#[derive(Debug)]
pub struct ServerTls {
    pub settings: TlsSettings,
    current: ArcSwap<Material>,
    /// What the last read of the files found: their fingerprint, or the read error. A check
    /// that finds the same does nothing (the periodic check must not count or log again).
    last_seen: std::sync::Mutex<Result<Vec<u8>, String>>,
    /// When the material in use was read.
    loaded_at: std::sync::atomic::AtomicU64,
    last_error: std::sync::Mutex<Option<RotationError>>,
}

impl ServerTls {
    /// Reads the files of `settings.dir`; the error names the file at fault.
    pub fn load(settings: TlsSettings) -> Result<ServerTls, String> {
        let files = Files::read(&settings.dir)?;
        let material = Material::load(&files, &settings.dir, &settings.trust_domains())?;
        Ok(ServerTls {
            settings,
            current: ArcSwap::from_pointee(material),
            last_seen: std::sync::Mutex::new(Ok(files.fingerprint())),
            loaded_at: std::sync::atomic::AtomicU64::new(unix_now()),
            last_error: std::sync::Mutex::new(None),
        })
    }

    /// Reads the files again and serves them to new handshakes if they changed and can be
    /// used; otherwise the current material stays (connections already open keep theirs).
    pub fn check(&self) -> Rotation {
        let dir = &self.settings.dir;
        let read = Files::read(dir);
        let seen = match &read {
            Ok(f) => Ok(f.fingerprint()),
            Err(e) => Err(e.clone()),
        };
        {
            let mut last = self.last_seen.lock().unwrap_or_else(|e| e.into_inner());
            if *last == seen {
                return Rotation::Unchanged;
            }
            *last = seen;
        }
        let loaded = read.and_then(|f| Material::load(&f, dir, &self.settings.trust_domains()));
        let mut last_error = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        match loaded {
            Ok(m) => {
                let m = Arc::new(m);
                self.current.store(m.clone());
                self.loaded_at
                    .store(unix_now(), std::sync::atomic::Ordering::Relaxed);
                *last_error = None;
                Rotation::Rotated(m)
            }
            Err(error) => {
                *last_error = Some(RotationError {
                    at: unix_now(),
                    error: error.clone(),
                });
                Rotation::Failed(error)
            }
        }
    }

    /// The `tls` section of `/config_dump`: the directory, the trust domains, the serving
    /// certificate (identity, serial, validity in Unix seconds), when it was read, and the
    /// last rotation error (until the next success).
    pub fn status(&self) -> serde_json::Value {
        let m = self.current();
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        serde_json::json!({
            "dir": self.settings.dir,
            "trust_domain": self.settings.trust_domain,
            "trust_domain_aliases": self.settings.trust_domain_aliases,
            "serving_certificate": {
                "identity": m.serving.identity,
                "serial": m.serving.serial,
                "not_before": m.serving.not_before,
                "not_after": m.serving.not_after,
            },
            "loaded_at": self.loaded_at.load(std::sync::atomic::Ordering::Relaxed),
            "last_rotation_error": last_error.map(|e| serde_json::json!({"at": e.at, "error": e.error})),
        })
    }

    pub fn current(&self) -> Arc<Material> {
        self.current.load_full()
    }

    /// The configuration for a client: with ALPN unless the client offered ALPN without
    /// `h2` or `http/1.1` (module docs).
    pub fn config_for(&self, hello: &ClientHello<'_>) -> Arc<ServerConfig> {
        let m = self.current.load();
        let offers_http = hello
            .alpn()
            .is_none_or(|mut protos| protos.any(|p| p == b"h2" || p == b"http/1.1"));
        if offers_http {
            m.with_alpn.clone()
        } else {
            m.without_alpn.clone()
        }
    }
}

impl Material {
    /// Checks the files as a whole: PEM that parses, a key that matches the leaf, and a chain
    /// that leads to the root and is valid now (what a client checks of us); each error
    /// names the file at fault.
    fn load(files: &Files, dir: &Path, trust_domains: &[String]) -> Result<Material, String> {
        let chain_path = dir.join(CERT_CHAIN);
        let key_path = dir.join(KEY);
        let root_path = dir.join(ROOT_CERT);
        let chain = parse_certs(&files.chain, &chain_path)?;
        let key = PrivateKeyDer::from_pem_slice(&files.key)
            .map_err(|e| format!("{}: no private key in PEM: {e}", key_path.display()))?;
        let mut roots = RootCertStore::empty();
        for c in parse_certs(&files.root, &root_path)? {
            roots.add(c).map_err(|e| {
                format!("{}: not a usable CA certificate: {e}", root_path.display())
            })?;
        }
        let leaf = chain
            .first()
            .ok_or_else(|| format!("{}: no certificate", chain_path.display()))?;
        let serving = serving_cert(leaf)
            .map_err(|e| format!("{}: not an X.509 certificate: {e}", chain_path.display()))?;
        let provider = Arc::new(provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("{}: {e}", root_path.display()))?;
        // Our own chain must lead to the root our peers trust: a certificate of another CA
        // (or one not yet valid, or expired) would fail every client's handshake.
        verifier
            .verify_client_cert(leaf, chain.get(1..).unwrap_or_default(), UnixTime::now())
            .map_err(|e| {
                format!(
                    "{}: does not lead to the root in {}: {e}",
                    chain_path.display(),
                    root_path.display()
                )
            })?;
        let verifier: Arc<dyn ClientCertVerifier> = Arc::new(SpiffeVerifier {
            inner: verifier,
            trust_domains: trust_domains.to_vec(),
        });
        let build = |alpn: bool| -> Result<Arc<ServerConfig>, String> {
            let mut c = ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| e.to_string())?
                .with_client_cert_verifier(verifier.clone())
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(|e| match e {
                    Error::InconsistentKeys(_) => format!(
                        "{}: does not match the certificate in {}",
                        key_path.display(),
                        chain_path.display()
                    ),
                    e => format!("{} and {}: {e}", chain_path.display(), key_path.display()),
                })?;
            if alpn {
                c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            }
            Ok(Arc::new(c))
        };
        Ok(Material {
            with_alpn: build(true)?,
            without_alpn: build(false)?,
            serving,
        })
    }
}

fn parse_certs(text: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE in PEM", path.display()));
    }
    Ok(certs)
}

/// aws-lc-rs with the TLS 1.2 suites Istio configures (`ECDHE-{ECDSA,RSA}-AES{256,128}-GCM`;
/// its static-RSA suites rustls does not have) and every TLS 1.3 suite, as BoringSSL has.
fn provider() -> rustls::crypto::CryptoProvider {
    use rustls::CipherSuite as C;
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites.retain(|s| {
        matches!(s, rustls::SupportedCipherSuite::Tls13(_))
            || matches!(
                s.suite(),
                C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                    | C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                    | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                    | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            )
    });
    p
}

fn serving_cert(der: &CertificateDer<'_>) -> Result<ServingCert, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let identity = uri_sans(&cert).into_iter().next().unwrap_or_default();
    Ok(ServingCert {
        identity,
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

fn uri_sans(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_string()),
            _ => None,
        })
        .collect()
}

fn dns_sans(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(u) => Some((*u).to_string()),
            _ => None,
        })
        .collect()
}

/// A subject as Envoy writes it (OpenSSL's `XN_FLAG_RFC2253`): the RDNs last first, joined
/// with `,`, the attributes of one RDN with `+`.
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|a| {
                    let key = x509_parser::objects::oid2abbrev(a.attr_type(), registry)
                        .map(str::to_string)
                        .unwrap_or_else(|_| a.attr_type().to_id_string());
                    let value = a.as_str().unwrap_or_default();
                    format!("{key}={}", escape_rfc2253(value))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_rfc2253(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i + 1 == v.chars().count() && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The identity a verified client certificate proves: its SANs, subject and hash;
/// `local_uri` is this proxy's own SPIFFE ID on the connection.
pub fn peer_identity(leaf: &CertificateDer<'_>, local_uri: &str) -> Option<PeerIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf.as_ref());
    let sha256_hex = digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let uri_sans: Vec<Arc<str>> = uri_sans(&cert).into_iter().map(Arc::from).collect();
    let xfcc = xfcc(
        local_uri,
        &sha256_hex,
        &rfc2253(cert.subject()),
        uri_sans.first().map_or("", |u| &**u),
        &dns_sans(&cert),
    );
    Some(PeerIdentity {
        uri_sans,
        xfcc: Arc::from(xfcc),
    })
}

/// The client-certificate entry Istio's sidecar appends (`forward_client_cert_details:
/// APPEND_FORWARD` with subject, URI and DNS), in Envoy's order: `By` (this proxy's own
/// SPIFFE ID on the connection), `Hash` (lowercase hex SHA-256 of the leaf's DER), `Subject`
/// (RFC 2253, quoted, also when empty), `URI` (the first URI SAN, empty without one), then
/// one `DNS` per DNS SAN.
fn xfcc(by: &str, hash: &str, subject: &str, uri: &str, dns_sans: &[String]) -> String {
    let mut v = format!("By={by};Hash={hash};Subject=\"{subject}\";URI={uri}");
    for d in dns_sans {
        v.push_str(";DNS=");
        v.push_str(d);
    }
    v
}

/// WebPKI chain validation to the mesh root, then Istio's SAN check: some URI SAN with the
/// prefix `spiffe://<td>/` for a trust domain of the mesh. A failure of the latter is sent as
/// `certificate_unknown`, the alert Envoy sends for `fail_verify_san`.
#[derive(Debug)]
struct SpiffeVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domains: Vec<String>,
}

impl ClientCertVerifier for SpiffeVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| match e {
                // An issuer found by name whose signature does not verify (a CA named as the
                // mesh root): BoringSSL's chain check answers `unknown_ca` there, and so does
                // Envoy; rustls would send `decrypt_error`.
                Error::InvalidCertificate(CertificateError::BadSignature) => {
                    Error::InvalidCertificate(CertificateError::UnknownIssuer)
                }
                e => e,
            })?;
        let (_, cert) = x509_parser::parse_x509_certificate(end_entity)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let in_domain = uri_sans(&cert).iter().any(|u| {
            u.strip_prefix("spiffe://").is_some_and(|rest| {
                self.trust_domains.iter().any(|td| {
                    rest.strip_prefix(td.as_str())
                        .is_some_and(|r| r.starts_with('/'))
                })
            })
        });
        if in_domain {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(NotInTrustDomain)),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
