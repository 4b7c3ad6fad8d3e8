//! TLS toward an `https://` upstream (rustls with aws-lc-rs), and the stream type both pools
//! read and write.
//!
//! Owns: the trusted roots (the system's and `--upstream-ca-file`), the server name sent and
//! verified (`--upstream-sni`, default the URL's host), the ALPN offer, and the handshake with
//! its timeout. Does not own which protocol a request goes out with ([`super`]).

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::SendError;
use crate::config::UpstreamTls;

/// A connection to the upstream, with or without TLS.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The protocols offered by ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alpn {
    /// `http/1.1` only: the HTTP/1.1 pool, once the upstream chose it.
    Http1,
    /// `h2` then `http/1.1`: the upstream chooses.
    Both,
}

/// Makes TLS connections to one upstream.
#[derive(Clone)]
pub(crate) struct Handshake {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// TLS toward `host` (the URL's host, unless `settings.sni` names another), trusting the
    /// system's roots and `settings.ca_file`, offering `alpn`.
    pub(crate) fn new(host: &str, settings: &UpstreamTls, alpn: Alpn) -> Result<Handshake, String> {
        let roots =
            meshguard_jwks::trusted_roots(settings.ca_file.as_deref()).map_err(|reason| {
                let path = settings.ca_file.as_deref().unwrap_or(Path::new(""));
                format!("--upstream-ca-file {}: {reason}", path.display())
            })?;
        if roots.is_empty() {
            tracing::warn!("no trusted CA certificates: the https upstream cannot be verified");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = match alpn {
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::Both => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        };
        // The URL's host as written: an IP address is verified against the certificate's IP
        // addresses, a name against its DNS names.
        let name_text = settings
            .sni
            .as_deref()
            .unwrap_or_else(|| host.trim_start_matches('[').trim_end_matches(']'));
        let name =
            ServerName::try_from(name_text.to_string()).map_err(|e| match &settings.sni {
                Some(sni) => format!("--upstream-sni {sni}: not a DNS name or IP address: {e}"),
                None => format!("--upstream {host}: not a DNS name or IP address: {e}"),
            })?;
        Ok(Handshake {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// The handshake on `tcp`, within `timeout`; whether ALPN chose h2.
    pub(crate) async fn connect(
        &self,
        tcp: TcpStream,
        timeout: Duration,
    ) -> Result<(Stream, bool), SendError> {
        let handshake = self.connector.connect(self.name.clone(), tcp);
        let tls = match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::Tls(tls_error(&e))),
            Err(_) => {
                return Err(SendError::Tls(format!(
                    "TLS handshake timeout after {timeout:?}"
                )));
            }
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok((Stream::Tls(Box::new(tls)), h2))
    }
}

/// The handshake's failure: rustls's own error when there is one, a certificate that did not
/// verify named as BoringSSL names it (`CERTIFICATE_VERIFY_FAILED`, what Envoy reports).
fn tls_error(e: &io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(r @ rustls::Error::InvalidCertificate(_)) => format!("CERTIFICATE_VERIFY_FAILED:{r}"),
        Some(r) => r.to_string(),
        None => e.to_string(),
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_failures_are_named_as_envoy_names_them() {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(
            tls_error(&e),
            "CERTIFICATE_VERIFY_FAILED:invalid peer certificate: UnknownIssuer"
        );
    }
}
