//! Certificates the mutual-TLS tests make beyond what `meshguard cert` issues (expired ones,
//! several URI SANs, a subject and DNS names), and a client verifier that accepts any server
//! certificate, for tests that read which one was presented.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};

/// What a client certificate holds besides its key: URI SANs (in that order), DNS SANs, the
/// subject's fields, and whether it expired an hour ago.
#[derive(Default)]
pub struct Client<'a> {
    pub uris: &'a [&'a str],
    pub dns: &'a [&'a str],
    pub subject: &'a [(DnType, &'a str)],
    pub expired: bool,
}

/// Signs `client` with the CA `meshguard cert ca` wrote to `ca` (`ca-cert.pem`,
/// `ca-key.pem`), and writes `cert-chain.pem` and `key.pem` to `out`.
pub fn client(ca: &Path, out: &Path, client: Client<'_>) {
    let read = |f: &str| std::fs::read_to_string(ca.join(f)).unwrap();
    let issuer = Issuer::from_ca_cert_pem(
        &read("ca-cert.pem"),
        KeyPair::from_pem(&read("ca-key.pem")).unwrap(),
    )
    .unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    for (ty, value) in client.subject {
        params.distinguished_name.push(ty.clone(), *value);
    }
    params.subject_alt_names = client
        .uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().unwrap()))
        .chain(
            client
                .dns
                .iter()
                .map(|d| SanType::DnsName((*d).try_into().unwrap())),
        )
        .collect();
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    if client.expired {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        params.not_before = rcgen::date_time_ymd(1970, 1, 1) + (now - Duration::from_secs(7200));
        params.not_after = rcgen::date_time_ymd(1970, 1, 1) + (now - Duration::from_secs(3600));
    }
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(out.join("cert-chain.pem"), cert.pem()).unwrap();
    std::fs::write(out.join("key.pem"), key.serialize_pem()).unwrap();
}

/// Accepts any server certificate (signatures are still checked).
#[derive(Debug)]
pub struct AnyServer(pub Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
