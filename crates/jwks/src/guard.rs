//! Which destinations a JWKS fetch may reach: the SSRF guard.
//!
//! Owns: the list of refused addresses (link-local, and the cloud-metadata addresses that
//! are not link-local), the URL check run before every request and every redirect hop, and
//! the DNS resolver that drops refused addresses from every lookup, so a hostname cannot
//! smuggle a metadata address past the URL check and the connector only ever dials what was
//! checked (no second lookup to rebind). Does not own: issuing requests (`fetch`).
//!
//! Loopback and private ranges are allowed on purpose: in-cluster issuers (Keycloak,
//! Dex) live there, and so do the tests.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::dns::Name;

/// Why a fetch must not connect to `ip`, or `None` if it may.
///
/// Refused: link-local (169.254.0.0/16, fe80::/10), and the cloud instance-metadata
/// addresses 169.254.169.254 (AWS, GCP, Azure, ...), fd00:ec2::254 (AWS IPv6),
/// 100.100.100.200 (Alibaba Cloud) and 192.0.0.192 (Oracle Cloud). IPv6 forms that embed an
/// IPv4 address (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`) are
/// judged by that address, since they reach it.
pub fn refused_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    match ip.octets() {
        [169, 254, 169, 254] => Some("cloud metadata address"),
        [100, 100, 100, 200] => Some("cloud metadata address (Alibaba Cloud)"),
        [192, 0, 0, 192] => Some("cloud metadata address (Oracle Cloud)"),
        [169, 254, _, _] => Some("link-local address"),
        _ => None,
    }
}

const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip == AWS_METADATA_V6 {
        return Some("cloud metadata address (AWS)");
    }
    let seg = ip.segments();
    if seg[0] & 0xffc0 == 0xfe80 {
        return Some("link-local address");
    }
    // `to_ipv4` covers mapped and compatible forms; `::1` becomes 0.0.0.1, which is allowed.
    if let Some(v4) = ip.to_ipv4() {
        return refused_v4(v4);
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = seg[6].to_be_bytes();
        let [c, d] = seg[7].to_be_bytes();
        return refused_v4(Ipv4Addr::new(a, b, c, d));
    }
    None
}

/// Parses `url` and checks it may be fetched: scheme `http` or `https`, a host, and, when the
/// host is an IP literal, an address [`refused_reason`] allows. Hostnames are checked later,
/// by the resolver, against every address they resolve to.
pub fn check_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
        Some(s) => return Err(format!("URL scheme {s:?} is not http or https")),
        None => return Err(format!("URL {url:?} has no scheme (http or https)")),
    }
    let host = match uri.host() {
        Some(h) if !h.is_empty() => h,
        _ => return Err(format!("URL {url:?} has no host")),
    };
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>()
        && let Some(reason) = refused_reason(ip)
    {
        return Err(format!("refused to fetch from {ip}: {reason}"));
    }
    Ok(uri)
}

/// Keeps the addresses `host` resolved to that [`refused_reason`] allows; fails when none is
/// left (or none was found), naming what was refused.
pub fn filter_resolved(host: &str, addrs: Vec<SocketAddr>) -> io::Result<Vec<SocketAddr>> {
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} resolved to no address"),
        ));
    }
    let (allowed, refused): (Vec<_>, Vec<_>) = addrs
        .into_iter()
        .partition(|a| refused_reason(a.ip()).is_none());
    if allowed.is_empty() {
        let list = refused
            .iter()
            .map(|a| {
                format!(
                    "{} ({})",
                    a.ip(),
                    refused_reason(a.ip()).unwrap_or("refused")
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("refused to connect to {host}: it resolves only to refused addresses: {list}"),
        ));
    }
    if !refused.is_empty() {
        tracing::warn!(host, refused = ?refused, "JWKS host resolves to refused addresses too; skipping them");
    }
    Ok(allowed)
}

/// DNS resolver for the fetch client's `HttpConnector`: the system resolver
/// (`tokio::net::lookup_host`) followed by [`filter_resolved`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GuardedResolver;

type ResolveFuture =
    Pin<Box<dyn Future<Output = io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = ResolveFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        Box::pin(async move {
            let host = name.as_str();
            // Port 0: the connector sets the URL's port on each address afterwards.
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
            Ok(filter_resolved(host, addrs)?.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refused_addresses() {
        for s in [
            "169.254.169.254",
            "169.254.0.1",
            "169.254.170.2",
            "169.254.255.255",
            "100.100.100.200",
            "192.0.0.192",
            "fd00:ec2::254",
            "fe80::1",
            "febf:ffff::1",
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::ffff:100.100.100.200",
        ] {
            assert!(refused_reason(ip(s)).is_some(), "{s} should be refused");
        }
    }

    #[test]
    fn allowed_addresses() {
        for s in [
            "127.0.0.1",
            "::1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "100.100.100.201",
            "192.0.0.193",
            "169.253.255.255",
            "169.255.0.0",
            "8.8.8.8",
            "fd00:ec2::253",
            "fec0::1",
            "fc00::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "64:ff9b::808:808",
            "::",
            "0.0.0.0",
        ] {
            assert_eq!(refused_reason(ip(s)), None, "{s} should be allowed");
        }
    }

    #[test]
    fn metadata_reason_is_specific() {
        assert_eq!(
            refused_reason(ip("169.254.169.254")),
            Some("cloud metadata address")
        );
        assert_eq!(
            refused_reason(ip("169.254.1.1")),
            Some("link-local address")
        );
    }

    #[test]
    fn url_checks() {
        assert!(check_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_url("https://localhost/jwks").is_ok());
        assert!(check_url("HTTPS://issuer.example/jwks").is_ok());
        assert!(check_url("http://[::1]:80/").is_ok());
        assert!(check_url("http://10.1.2.3/keys").is_ok());

        let e = check_url("http://169.254.169.254/latest/meta-data").unwrap_err();
        assert!(e.contains("refused") && e.contains("metadata"), "{e}");
        let e = check_url("http://[fe80::1]:8080/").unwrap_err();
        assert!(e.contains("link-local"), "{e}");
        let e = check_url("http://[::ffff:169.254.169.254]/").unwrap_err();
        assert!(e.contains("refused"), "{e}");
        let e = check_url("http://[fd00:ec2::254]/").unwrap_err();
        assert!(e.contains("AWS"), "{e}");
        let e = check_url("ftp://example.com/jwks").unwrap_err();
        assert!(e.contains("not http or https"), "{e}");
        let e = check_url("file:///etc/passwd").unwrap_err();
        assert!(e.contains("scheme") || e.contains("invalid"), "{e}");
        let e = check_url("/relative/only").unwrap_err();
        assert!(e.contains("no scheme"), "{e}");
        let e = check_url("not a url").unwrap_err();
        assert!(e.contains("invalid URL"), "{e}");
    }

    fn sa(s: &str) -> SocketAddr {
        SocketAddr::new(ip(s), 0)
    }

    #[test]
    fn resolver_filter() {
        // localhost (both families) is allowed.
        let ok = filter_resolved("localhost", vec![sa("::1"), sa("127.0.0.1")]).unwrap();
        assert_eq!(ok.len(), 2);

        // Only link-local / metadata answers: refused, naming them.
        let e = filter_resolved(
            "metadata.internal",
            vec![sa("169.254.169.254"), sa("fe80::1")],
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        let msg = e.to_string();
        assert!(
            msg.contains("metadata.internal") && msg.contains("169.254.169.254"),
            "{msg}"
        );

        // Mixed: the refused ones are dropped, the rest kept.
        let ok = filter_resolved("mixed", vec![sa("169.254.1.1"), sa("10.0.0.7")]).unwrap();
        assert_eq!(ok, vec![sa("10.0.0.7")]);

        assert!(filter_resolved("nothing", vec![]).is_err());
    }

    #[tokio::test]
    async fn resolver_allows_localhost() {
        use tower_service::Service;
        let mut r = GuardedResolver;
        let addrs: Vec<_> = r
            .call("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
