//! `meshguard cert`: a mesh CA and SPIFFE workload certificates in Istio's file layout, for
//! tests, demos and small deployments.
//!
//! Owns: the `cert` flags, making keys (ECDSA P-256 through rcgen on aws-lc-rs), building the
//! certificates and writing the files. Does not own reading them for serving: the proxy's
//! `--tls-dir` does that (`meshguard_proxy::tls`).
//!
//! Layouts, as Istio names its files:
//! * `cert ca --out DIR`: `ca-cert.pem`, `ca-key.pem`, `root-cert.pem` and `cert-chain.pem`,
//!   the files of Istio's plugged-in CA (`cacerts`); the root is self-signed, so
//!   `ca-cert.pem`, `root-cert.pem` and `cert-chain.pem` hold the same certificate.
//! * `cert issue --ca DIR --out DIR`: `cert-chain.pem` (the workload certificate, then the
//!   CA's chain), `key.pem` and `root-cert.pem`, what istio-agent writes with
//!   `OUTPUT_CERTS` and what `--tls-dir` reads.
//!
//! Private keys are written with mode 0600 and never printed. Existing files are kept unless
//! `--force` is given.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::CliError;

/// `unix` as rcgen's time type (whose crate this one does not name).
macro_rules! at {
    ($unix:expr) => {
        rcgen::date_time_ymd(1970, 1, 1) + $unix
    };
}

/// Istio's default trust domain.
const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// Istio's self-signed root lives ten years.
const DEFAULT_CA_TTL: &str = "87600h";

/// Istio's default workload certificate lifetime (`DEFAULT_WORKLOAD_CERT_TTL`).
const DEFAULT_WORKLOAD_TTL: &str = "24h";

/// Workload certificates start a minute in the past, so that a peer whose clock is slightly
/// behind accepts a certificate issued a moment ago.
const BACKDATE: Duration = Duration::from_secs(60);

#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  # A mesh CA for the trust domain cluster.local
  meshguard cert ca --out ca

  # The certificate of workload httpbin in namespace foo:
  #   URI SAN spiffe://cluster.local/ns/foo/sa/httpbin, valid 24 hours
  meshguard cert issue --ca ca --namespace foo --service-account httpbin --out httpbin

  # Serve it: clients must present a certificate of the same CA
  meshguard proxy --policies policies/ --tls-dir httpbin

Files: `cert ca` writes ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem (Istio's
cacerts layout); `cert issue` writes cert-chain.pem, key.pem, root-cert.pem (istio-agent's
layout). Private keys get mode 0600.")]
pub struct CertArgs {
    #[command(subcommand)]
    command: CertCommand,
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Make a self-signed mesh root CA (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem).
    Ca(CaArgs),
    /// Issue a workload certificate with URI SAN spiffe://TD/ns/NS/sa/SA (cert-chain.pem, key.pem, root-cert.pem).
    Issue(IssueArgs),
}

#[derive(Debug, Args)]
struct CaArgs {
    /// Directory to write the CA's files to (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The mesh's trust domain, recorded as the CA's organization (O=) and used by
    /// `cert issue` when it is given no --trust-domain.
    #[arg(long, value_name = "TD", default_value = DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// How long the CA is valid (Go duration: 87600h, 30m, ...).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_CA_TTL)]
    ttl: String,
    /// Overwrite files that already exist.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct IssueArgs {
    /// Directory of a CA made by `meshguard cert ca` (or any ca-cert.pem and ca-key.pem pair,
    /// with root-cert.pem and cert-chain.pem if the CA is an intermediate).
    #[arg(long, value_name = "DIR")]
    ca: PathBuf,
    /// The workload's namespace (the `ns` of its SPIFFE ID).
    #[arg(long, value_name = "NS")]
    namespace: String,
    /// The workload's service account (the `sa` of its SPIFFE ID).
    #[arg(long, value_name = "SA")]
    service_account: String,
    /// Trust domain of the SPIFFE ID [default: the CA's organization, else cluster.local].
    #[arg(long, value_name = "TD")]
    trust_domain: Option<String>,
    /// How long the certificate is valid (Go duration: 24h, 90m, ...).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_WORKLOAD_TTL)]
    ttl: String,
    /// Directory to write cert-chain.pem, key.pem and root-cert.pem to (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Overwrite files that already exist.
    #[arg(long)]
    force: bool,
}

pub fn run(args: CertArgs) -> Result<i32, CliError> {
    match args.command {
        CertCommand::Ca(a) => ca(a),
        CertCommand::Issue(a) => issue(a),
    }
}

fn usage(m: String) -> CliError {
    CliError::Usage(m)
}

fn ca(a: CaArgs) -> Result<i32, CliError> {
    check_trust_domain(&a.trust_domain)?;
    let ttl = parse_ttl(&a.ttl)?;
    let key = KeyPair::generate().map_err(|e| CliError::Internal(format!("CA key: {e}")))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // Istio's self-signed root carries the trust domain as its organization.
    dn.push(DnType::OrganizationName, a.trust_domain.as_str());
    dn.push(DnType::CommonName, "meshguard root CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = unix_now();
    params.not_before = at!(now);
    params.not_after = at!(now + ttl);
    let cert = params
        .self_signed(&key)
        .map_err(|e| CliError::Internal(format!("CA certificate: {e}")))?;
    let pem = cert.pem();
    create_dir(&a.out)?;
    check_absent(
        &a.out,
        &[
            "ca-cert.pem",
            "ca-key.pem",
            "root-cert.pem",
            "cert-chain.pem",
        ],
        a.force,
    )?;
    write_file(&a.out.join("ca-key.pem"), &key.serialize_pem(), true)?;
    for name in ["ca-cert.pem", "root-cert.pem", "cert-chain.pem"] {
        write_file(&a.out.join(name), &pem, false)?;
    }
    println!(
        "CA for trust domain {} written to {} (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem), valid until {}",
        a.trust_domain,
        a.out.display(),
        crate::token::utc((now + ttl).as_secs())
    );
    Ok(0)
}

fn issue(a: IssueArgs) -> Result<i32, CliError> {
    check_segment("--namespace", &a.namespace)?;
    check_segment("--service-account", &a.service_account)?;
    let ttl = parse_ttl(&a.ttl)?;
    let ca_cert_path = a.ca.join("ca-cert.pem");
    let ca_key_path = a.ca.join("ca-key.pem");
    let ca_cert_pem = read(&ca_cert_path)?;
    let ca_key_pem = read(&ca_key_path)?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| {
        usage(format!(
            "{}: not a private key in PEM (PKCS#8, SEC1 or PKCS#1): {e}",
            ca_key_path.display()
        ))
    })?;
    let ca_der = first_pem_cert(&ca_cert_pem, &ca_cert_path)?;
    let (ca_org, ca_key_matches) = inspect_ca(&ca_der, &ca_key, &ca_cert_path)?;
    if !ca_key_matches {
        return Err(usage(format!(
            "{} does not belong to the certificate in {}",
            ca_key_path.display(),
            ca_cert_path.display()
        )));
    }
    let trust_domain = a
        .trust_domain
        .or(ca_org)
        .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.to_string());
    check_trust_domain(&trust_domain)?;
    let issuer = Issuer::from_ca_cert_der(&ca_der, &ca_key).map_err(|e| {
        usage(format!(
            "{}: cannot be used as an issuer: {e}",
            ca_cert_path.display()
        ))
    })?;
    // The rest of the CA's chain and its root: from the files `cert ca` writes, else the CA
    // certificate itself (a self-signed root).
    let chain_pem = read_optional(&a.ca.join("cert-chain.pem"))?.unwrap_or(ca_cert_pem.clone());
    let root_pem = read_optional(&a.ca.join("root-cert.pem"))?.unwrap_or(ca_cert_pem.clone());

    let spiffe_id = format!(
        "spiffe://{trust_domain}/ns/{}/sa/{}",
        a.namespace, a.service_account
    );
    let key = KeyPair::generate().map_err(|e| CliError::Internal(format!("key: {e}")))?;
    let mut params = CertificateParams::default();
    // Istio's workload certificates have an empty subject; the identity is the URI SAN.
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(
        spiffe_id
            .as_str()
            .try_into()
            .map_err(|e| usage(format!("SPIFFE ID {spiffe_id}: {e}")))?,
    )];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = unix_now();
    params.not_before = at!(now.saturating_sub(BACKDATE));
    params.not_after = at!(now + ttl);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| CliError::Internal(format!("certificate: {e}")))?;
    let mut chain = cert.pem();
    if !chain.ends_with('\n') {
        chain.push('\n');
    }
    chain.push_str(&chain_pem);
    create_dir(&a.out)?;
    check_absent(
        &a.out,
        &["cert-chain.pem", "key.pem", "root-cert.pem"],
        a.force,
    )?;
    write_file(&a.out.join("key.pem"), &key.serialize_pem(), true)?;
    write_file(&a.out.join("cert-chain.pem"), &chain, false)?;
    write_file(&a.out.join("root-cert.pem"), &root_pem, false)?;
    println!(
        "{spiffe_id} written to {} (cert-chain.pem, key.pem, root-cert.pem), valid until {}",
        a.out.display(),
        crate::token::utc((now + ttl).as_secs())
    );
    Ok(0)
}

/// The CA certificate's organization (its trust domain when `cert ca` made it), and whether
/// `key` is the certificate's key.
fn inspect_ca(
    der: &rustls_pki_types::CertificateDer<'static>,
    key: &KeyPair,
    path: &Path,
) -> Result<(Option<String>, bool), CliError> {
    use rcgen::PublicKeyData as _;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| usage(format!("{}: not an X.509 certificate: {e}", path.display())))?;
    if !cert.is_ca() {
        return Err(usage(format!(
            "{}: not a CA certificate (no basicConstraints CA:TRUE)",
            path.display()
        )));
    }
    let org = cert
        .subject()
        .iter_organization()
        .next()
        .and_then(|o| o.as_str().ok())
        .map(str::to_string);
    let matches = cert.public_key().subject_public_key.data.as_ref() == key.der_bytes();
    Ok((org, matches))
}

fn first_pem_cert(
    pem: &str,
    path: &Path,
) -> Result<rustls_pki_types::CertificateDer<'static>, CliError> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| usage(format!("{}: no CERTIFICATE in PEM", path.display())))?
        .map_err(|e| usage(format!("{}: bad PEM: {e}", path.display())))
}

fn parse_ttl(s: &str) -> Result<Duration, CliError> {
    let d = meshguard_model::parse_duration(s).map_err(|e| usage(format!("--ttl: {e}")))?;
    if d.is_zero() {
        return Err(usage("--ttl: must be more than zero".into()));
    }
    Ok(d)
}

/// SPIFFE trust domains: lowercase letters, digits, `.`, `-` and `_`.
fn check_trust_domain(td: &str) -> Result<(), CliError> {
    let ok = !td.is_empty()
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(usage(format!(
            "--trust-domain {td:?}: a SPIFFE trust domain is lowercase letters, digits, '.', '-' and '_'"
        )))
    }
}

/// A path segment of the SPIFFE ID: Kubernetes names (letters, digits, `.`, `-`, `_`).
fn check_segment(flag: &str, v: &str) -> Result<(), CliError> {
    let ok = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(usage(format!(
            "{flag} {v:?}: use letters, digits, '.', '-' and '_' (it becomes a segment of the SPIFFE ID)"
        )))
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn create_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        usage(format!(
            "--out {}: cannot create the directory: {e}",
            dir.display()
        ))
    })
}

fn check_absent(dir: &Path, names: &[&str], force: bool) -> Result<(), CliError> {
    if force {
        return Ok(());
    }
    for name in names {
        let path = dir.join(name);
        if path.exists() {
            return Err(usage(format!(
                "{}: already exists (pass --force to overwrite it)",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Writes `text` to `path`; a private file gets mode 0600 before anything is written to it.
fn write_file(path: &Path, text: &str, private: bool) -> Result<(), CliError> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut file = opts
        .open(path)
        .map_err(|e| usage(format!("{}: cannot create: {e}", path.display())))?;
    #[cfg(unix)]
    if private {
        // A file that existed keeps its old mode through `open`.
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| usage(format!("{}: cannot chmod 0600: {e}", path.display())))?;
    }
    file.write_all(text.as_bytes())
        .map_err(|e| usage(format!("{}: cannot write: {e}", path.display())))
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| usage(format!("{}: cannot read: {e}", path.display())))
}

fn read_optional(path: &Path) -> Result<Option<String>, CliError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(usage(format!("{}: cannot read: {e}", path.display()))),
    }
}
