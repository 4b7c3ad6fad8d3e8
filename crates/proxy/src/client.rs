//! The client's side of a connection: the byte stream it arrived on and what is known of it.
//!
//! Owns [`ClientStream`] (one enum for every transport a listener accepts, so that the HTTP
//! serving in [`crate::connection`] is written once) and [`ConnInfo`] (addresses, scheme, the
//! TLS server name and the peer's proven identity, read by the handler for the engine's
//! `source.*`, `destination.*` and `connection.sni` attributes and for `x-forwarded-proto`).
//! Plaintext TCP, or TLS terminated by the inbound listener ([`crate::inbound`]), which then
//! fills `scheme`, `sni` and `peer_identity`. Does not accept connections (the accept loop in
//! [`crate::server`] does) or parse HTTP.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A client connection's byte stream.
#[derive(Debug)]
pub enum ClientStream {
    /// Plaintext TCP.
    Plain(TcpStream),
    /// TLS over TCP, after the handshake. Boxed: rustls's connection state is large, and a
    /// plaintext connection should not carry its size.
    Tls(Box<TlsStream<TcpStream>>),
}

impl ClientStream {
    /// Ready when the client has sent bytes (or closed): lets an idle connection wait holding
    /// no read buffer. Over TLS also ready when rustls holds decrypted bytes or the peer's
    /// close_notify (its `wants_read` is then false), which the socket would not signal.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            ClientStream::Plain(s) => s.poll_read_ready(cx),
            ClientStream::Tls(s) => {
                let (tcp, conn) = s.get_ref();
                if !conn.wants_read() {
                    return Poll::Ready(Ok(()));
                }
                tcp.poll_read_ready(cx)
            }
        }
    }
}

impl ClientStream {
    /// Reads what the stream holds now without waiting; `WouldBlock` when nothing is there.
    /// Over TLS always `WouldBlock`: decrypting needs the stream mutably, and the caller reads
    /// normally next.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.try_read(buf),
            ClientStream::Tls(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(s) => s.is_write_vectored(),
            ClientStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How the client reached the listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// As in `x-forwarded-proto` and the `www-authenticate` realm.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// What a client proved with its certificate: the URI SANs of its leaf (SPIFFE IDs in a
/// mesh), and the `x-forwarded-client-cert` entry the connection's requests carry. Only a
/// TLS listener that verified the chain makes one, once per connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    pub uri_sans: Vec<Arc<str>>,
    /// `By=...;Hash=...;Subject="...";URI=...[;DNS=...]` (`crate::tls::xfcc`).
    pub xfcc: Arc<str>,
}

impl PeerIdentity {
    /// The first URI SAN: the peer as the access log names it (`downstream_peer_uri_san`, as
    /// Envoy's). Policies match every URI SAN (`meshguard_policy::PeerUris`).
    pub fn principal(&self) -> Option<&str> {
        self.uri_sans.first().map(|s| &**s)
    }
}

/// The two ends of the client's connection and what the transport told about it.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The peer's address as a header value, made once per connection for `x-forwarded-for`.
    pub peer_ip: HeaderValue,
    pub scheme: Scheme,
    /// The server name of the client's TLS ClientHello; `None` over plaintext.
    pub sni: Option<Arc<str>>,
    /// `None` over plaintext and for TLS without a verified client certificate.
    pub peer_identity: Option<Arc<PeerIdentity>>,
}

impl ConnInfo {
    /// A plaintext connection from `peer` to `local`.
    pub fn plain(peer: SocketAddr, local: SocketAddr) -> ConnInfo {
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ConnInfo {
            peer,
            local,
            peer_ip,
            scheme: Scheme::Http,
            sni: None,
            peer_identity: None,
        }
    }
}
