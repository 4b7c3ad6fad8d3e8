//! The proxy listener's filter-chain match, as Istio's sidecar builds it for an HTTP port:
//! which connections get TLS, which are served in plaintext and which are reset, by the
//! port's PeerAuthentication mode.
//!
//! Owns: telling a TLS ClientHello from plaintext (the first byte, `0x16`, a TLS handshake
//! record, as Envoy's `tls_inspector` decides), choosing the chain, running the handshake with
//! [`tokio_rustls::LazyConfigAcceptor`] (the configuration is chosen after the ClientHello is
//! read: [`crate::tls`] explains the ALPN), resetting refused connections (`SO_LINGER` 0, so
//! the client sees a reset and no HTTP answer, as with Envoy's `no_filter_chain_match`), and
//! the [`ConnInfo`] of a TLS connection (scheme `https`, SNI, the peer's identity). Does not
//! own composing the mode ([`meshguard_model::peer_authn`]) or serving HTTP.
//!
//! The chains (mode: transport → result):
//! * STRICT: TLS → mutual TLS; plaintext → reset.
//! * PERMISSIVE: TLS whose ClientHello offers an Istio ALPN (`istio`, `istio-peer-exchange`,
//!   `istio-http/1.0`, `istio-http/1.1`, `istio-h2`) → mutual TLS; other TLS → reset;
//!   plaintext → plaintext without identity.
//! * DISABLE: plaintext → plaintext; TLS → reset.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meshguard_model::peer_authn::MtlsMode;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::LazyConfigAcceptor;

use crate::client::{ClientStream, ConnInfo, Scheme};
use crate::tls::{HandshakeResult, ServerTls};

/// The ALPN values of Istio's client sidecars that PERMISSIVE's TLS chain matches.
const ISTIO_ALPNS: [&[u8]; 5] = [
    b"istio",
    b"istio-peer-exchange",
    b"istio-http/1.0",
    b"istio-http/1.1",
    b"istio-h2",
];

/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE: u8 = 0x16;

/// How a connection ended up.
#[derive(Debug)]
pub enum Accepted {
    /// Serve HTTP on it.
    Serve(ClientStream, ConnInfo),
    /// Closed: refused (reset) or a failed handshake; `result` says which.
    Closed(HandshakeResult),
    /// Closed by the client, or silent until the deadline, before sending a byte: neither
    /// TLS nor plaintext (a TCP health check), so not counted as a handshake.
    Silent,
}

/// Decides and sets up one connection to the proxy listener. `mode` is the PeerAuthentication
/// mode of the listening port; `deadline` bounds the wait for the first bytes and the
/// handshake (the header read timeout).
pub async fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    tls: &ServerTls,
    mode: MtlsMode,
    deadline: Instant,
) -> Accepted {
    let mut first = [0u8; 1];
    let is_tls = match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1..)) => first[0] == TLS_HANDSHAKE,
        // Closed, failed or silent before sending anything.
        _ => return Accepted::Silent,
    };
    if !is_tls {
        return match mode {
            MtlsMode::Strict => {
                reset(stream);
                Accepted::Closed(HandshakeResult::PlaintextRefused)
            }
            _ => Accepted::Serve(ClientStream::Plain(stream), ConnInfo::plain(peer, local)),
        };
    }
    if mode == MtlsMode::Disable {
        reset(stream);
        return Accepted::Closed(HandshakeResult::PlaintextRefused);
    }
    let start = match tokio::time::timeout_at(
        deadline,
        LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream),
    )
    .await
    {
        Ok(Ok(start)) => start,
        _ => return Accepted::Closed(HandshakeResult::Failed),
    };
    let hello = start.client_hello();
    if mode == MtlsMode::Permissive {
        let istio = hello
            .alpn()
            .is_some_and(|mut protos| protos.any(|p| ISTIO_ALPNS.contains(&p)));
        if !istio {
            // No chain matches: Envoy closes the connection without a TLS alert.
            reset(start.io);
            return Accepted::Closed(HandshakeResult::PlaintextRefused);
        }
    }
    let sni: Option<Arc<str>> = hello.server_name().map(Arc::from);
    let config = tls.config_for(&hello);
    let local_uri = tls.current().serving.identity.clone();
    let stream = match tokio::time::timeout_at(deadline, start.into_stream(config)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Accepted::Closed(HandshakeResult::of_error(&e)),
        Err(_) => return Accepted::Closed(HandshakeResult::Failed),
    };
    let (_, conn) = stream.get_ref();
    let identity = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| crate::tls::peer_identity(leaf, &local_uri))
        .map(Arc::new);
    let mut info = ConnInfo::plain(peer, local);
    info.scheme = Scheme::Https;
    info.sni = sni;
    info.peer_identity = identity;
    Accepted::Serve(ClientStream::Tls(Box::new(stream)), info)
}

/// Closes with a TCP reset: `SO_LINGER` 0 makes `close(2)` drop unsent data and send RST.
pub(crate) fn reset(stream: TcpStream) {
    // A zero linger does not block on close (the reason tokio deprecates `set_linger`).
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}
