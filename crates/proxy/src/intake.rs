//! Request intake: what a request is before the engine sees it, and the headers the upstream
//! gets that describe it.
//!
//! Owns, in this order ([`admit`]): the method check, the scheme of an HTTP/1 absolute-form
//! target, the `Transfer-Encoding` check, the
//! `Connection` header's nominations, the one authority of the request ([`Authority`]) and the
//! `Upgrade` header (which upgrades are forwarded, which are ignored, which refused); then
//! `remote.ip` from `X-Forwarded-For` ([`remote_ip`]) and, when forwarding, the `host`,
//! `x-request-id`, `x-forwarded-for` and `x-forwarded-proto` headers
//! ([`set_forwarding_headers`]). Each refusal is a [`Refusal`]; its status, body and details are
//! built in [`crate::response`]. Does not evaluate policies, normalize paths (the engine does) or
//! remove hop-by-hop headers at forwarding time ([`crate::handler`]).
//!
//! The rule that ties it together: the request the policies are evaluated on is the request the
//! upstream receives. So a header that the client nominates in `Connection` is removed before
//! evaluation (as Envoy's HTTP/1 codec does), and the authority the policies match is the one
//! sent upstream as `host`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};

use crate::client::ConnInfo;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Why a request is answered locally before (or instead of) being forwarded. The replies are in
/// [`crate::response`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No authority at all: no `Host` (HTTP/1), neither `:authority` nor `host` (HTTP/2).
    MissingHost,
    /// More than one `Host` header (RFC 9112 §3.2).
    DuplicateHost,
    /// The authority holds a byte that no authority may hold (a space, a control or a
    /// non-ASCII byte).
    InvalidAuthority,
    /// A method outside the standard list. The protocol decides the details string.
    UnknownMethod(Version),
    /// An HTTP/1 absolute-form target whose scheme is not `http` or `https` (`ftp://a/x`).
    InvalidScheme,
    /// A `Transfer-Encoding` other than exactly `chunked`.
    TransferEncoding,
    /// `Connection` nominates a forwarding header or a pseudo-header, or ten or more names.
    ConnectionHeader,
    /// `CONNECT` with a target that is not `host:port`.
    ConnectTarget,
    /// `CONNECT` that the policies allow: there is no route for tunnels.
    ConnectNotRouted,
    /// An HTTP/1.1 upgrade to a protocol other than WebSocket (`Upgrade: foo`): Istio
    /// configures only `websocket` upgrades, and Envoy refuses any other before the filters run.
    UpgradeFailed,
}

/// The request's authority: what the policies match as `hosts` and what the upstream receives
/// as `host`. Both forms are shared byte buffers, so keeping one costs no copy.
#[derive(Clone, Debug)]
pub enum Authority {
    /// From the request target (absolute-form, `CONNECT`'s authority-form) or HTTP/2's
    /// `:authority`. Any `Host` header has been removed; the upstream gets this one.
    Target(http::uri::Authority),
    /// The one `Host` header (HTTP/1 origin-form, or HTTP/2 without `:authority`). It stays in
    /// the headers as it came.
    Host(HeaderValue),
}

impl Authority {
    /// The authority as the policies see it. A target's `userinfo@` is not part of it (Envoy
    /// forwards only host and port).
    pub fn as_str(&self) -> &str {
        match self {
            Authority::Target(a) => a.as_str().rsplit_once('@').map_or(a.as_str(), |(_, h)| h),
            // `admit` has checked that it is visible ASCII.
            Authority::Host(h) => h.to_str().unwrap_or(""),
        }
    }
}

/// Envoy's HTTP/1 method list (the `http-parser` list its codec accepts; sorted, for the binary
/// search). Envoy answers anything else with 400 before any filter runs.
pub const METHODS: [&str; 34] = [
    "ACL",
    "BIND",
    "CHECKOUT",
    "CONNECT",
    "COPY",
    "DELETE",
    "GET",
    "HEAD",
    "LINK",
    "LOCK",
    "MERGE",
    "MKACTIVITY",
    "MKCALENDAR",
    "MKCOL",
    "MOVE",
    "MSEARCH",
    "NOTIFY",
    "OPTIONS",
    "PATCH",
    "POST",
    "PROPFIND",
    "PROPPATCH",
    "PURGE",
    "PUT",
    "REBIND",
    "REPORT",
    "SEARCH",
    "SOURCE",
    "SUBSCRIBE",
    "TRACE",
    "UNBIND",
    "UNLINK",
    "UNLOCK",
    "UNSUBSCRIBE",
];

/// Whether `method` is one of [`METHODS`]. Methods are case-sensitive: `delete` is not
/// `DELETE`, and a policy on `DELETE` would not see it, so it never reaches the upstream.
pub fn known_method(method: &Method) -> bool {
    // hyper's own constants are all in the list; only extension methods need the search.
    matches!(
        *method,
        Method::GET
            | Method::POST
            | Method::PUT
            | Method::DELETE
            | Method::HEAD
            | Method::OPTIONS
            | Method::PATCH
            | Method::TRACE
            | Method::CONNECT
    ) || METHODS.binary_search(&method.as_str()).is_ok()
}

/// The checks of the request head, in Envoy's order (codec first, then the connection
/// manager's `Host` check). On success the headers are as the policies must see them and the
/// authority is known.
pub fn admit(parts: &mut http::request::Parts) -> Result<Authority, Refusal> {
    let fields = Fields::scan(&parts.headers);
    admit_scanned(parts, fields)
}

/// [`admit`], with the fields already scanned (by a caller that needs [`Fields::grpc`] too).
pub fn admit_scanned(
    parts: &mut http::request::Parts,
    mut fields: Fields,
) -> Result<Authority, Refusal> {
    if !known_method(&parts.method) {
        return Err(Refusal::UnknownMethod(parts.version));
    }
    check_scheme(&parts.uri, parts.version)?;
    if fields.transfer_encoding {
        check_transfer_encoding(&parts.headers)?;
    }
    let (te, te_trailers) = (fields.te, fields.te_trailers);
    if fields.connection && remove_nominated(&mut parts.headers)? {
        // `Connection` may have nominated `Host`.
        fields = Fields::scan(&parts.headers);
    }
    // `TE` as Envoy's connection manager leaves it before any filter: `te: trailers` when the
    // client listed it (even if `Connection` nominated `TE`), otherwise no `TE` at all.
    if te_trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    } else if te {
        parts.headers.remove(header::TE);
    }
    if fields.cookie_crumbs && parts.version == Version::HTTP_2 {
        join_cookie_crumbs(&mut parts.headers);
    }
    if fields.client_cert {
        // Only a proxy that verified a client certificate may write this header (Istio's
        // `forward_client_cert_details: APPEND_FORWARD` with `set_current_client_cert_details`);
        // on a plaintext connection Envoy removes a client's copy before any filter, so that
        // neither the policies nor the upstream believe a forged identity.
        parts.headers.remove(&X_FORWARDED_CLIENT_CERT);
    }
    if parts.method == Method::CONNECT && parts.uri.path_and_query().is_some() {
        // `CONNECT /x`: Envoy's codec refuses a CONNECT target that is not `host:port`.
        return Err(Refusal::ConnectTarget);
    }
    let authority = authority(parts, fields.host)?;
    if fields.upgrade {
        check_upgrade(parts)?;
    }
    Ok(authority)
}

/// The upgrade protocol Istio configures (`upgrade_configs: [{upgrade_type: websocket}]`).
const WEBSOCKET: &str = "websocket";

/// What becomes of an `Upgrade` header, as Envoy's HTTP/1 codec and connection manager decide
/// it. Only a request that carries both `Upgrade` and the `upgrade` option of `Connection` asks
/// for an upgrade; then:
/// - `Upgrade: websocket` (any case, one value) stays: the request is evaluated as any other
///   and, when allowed, forwarded as an upgrade ([`crate::upgrade`]);
/// - `Upgrade: h2c` is removed with `HTTP2-Settings` and both options of `Connection`, and the
///   request is served as HTTP/1.1;
/// - anything else (`foo`, `websocket, foo`, two `Upgrade` lines) is refused with 403
///   ([`Refusal::UpgradeFailed`]) before evaluation.
///
/// `Upgrade` without the `Connection` option, and any `Upgrade` on HTTP/1.0 (which RFC 9110
/// §7.8 says to ignore; Envoy refuses HTTP/1.0 altogether, docs/differences.md), is removed:
/// neither the policies nor the upstream see an upgrade that will not happen.
fn check_upgrade(parts: &mut http::request::Parts) -> Result<(), Refusal> {
    let asked = parts.version == Version::HTTP_11
        && parts.headers.get_all(header::CONNECTION).iter().any(|v| {
            connection_tokens(v).is_ok_and(|mut t| t.any(|t| t.eq_ignore_ascii_case("upgrade")))
        });
    if !asked {
        parts.headers.remove(header::UPGRADE);
        return Ok(());
    }
    let mut values = parts.headers.get_all(header::UPGRADE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Refusal::UpgradeFailed);
    };
    let value = value.as_bytes().trim_ascii();
    if value.eq_ignore_ascii_case(WEBSOCKET.as_bytes()) {
        return Ok(());
    }
    if !value.eq_ignore_ascii_case(b"h2c") {
        return Err(Refusal::UpgradeFailed);
    }
    parts.headers.remove(header::UPGRADE);
    parts.headers.remove(HTTP2_SETTINGS.clone());
    let mut options = Vec::new();
    for v in parts.headers.get_all(header::CONNECTION) {
        for token in connection_tokens(v)?.filter(|t| {
            !t.eq_ignore_ascii_case("upgrade") && !t.eq_ignore_ascii_case("http2-settings")
        }) {
            if !options.is_empty() {
                options.push(b',');
            }
            options.extend_from_slice(token.as_bytes());
        }
    }
    match HeaderValue::from_bytes(&options) {
        Ok(v) if !options.is_empty() => {
            parts.headers.insert(header::CONNECTION, v);
        }
        _ => {
            parts.headers.remove(header::CONNECTION);
        }
    }
    Ok(())
}

/// What [`admit`] needs to know of the header fields, and whether the request is gRPC, found
/// in one pass over them: most requests carry no `Transfer-Encoding` and no `Connection`, and
/// one `Host`, and a pass compares names without hashing them, where a lookup per name
/// hashes each.
#[derive(Debug)]
pub struct Fields {
    transfer_encoding: bool,
    connection: bool,
    host: Hosts,
    content_type: bool,
    /// `x-forwarded-client-cert` is present.
    pub(crate) client_cert: bool,
    /// More than one `cookie` field.
    cookie_crumbs: bool,
    /// `TE` lists `trailers` (case-sensitive, in any of its elements and lines): the policies
    /// and the upstream see `te: trailers` and nothing else of it, as Envoy leaves it (gRPC
    /// needs it).
    pub te_trailers: bool,
    /// Some `TE` field is present.
    te: bool,
    /// Some `Upgrade` field is present.
    upgrade: bool,
    /// [`crate::response::is_grpc`] of the headers as received (before `Connection`
    /// nominations are removed), for the replies.
    pub grpc: bool,
}

/// The `Host` fields of a request.
#[derive(Debug)]
enum Hosts {
    None,
    One(HeaderValue),
    Several,
}

impl Fields {
    pub fn scan(headers: &HeaderMap) -> Fields {
        let mut fields = Fields {
            transfer_encoding: false,
            connection: false,
            host: Hosts::None,
            content_type: false,
            client_cert: false,
            cookie_crumbs: false,
            te_trailers: false,
            te: false,
            upgrade: false,
            grpc: false,
        };
        let mut cookies = 0u8;
        for (name, value) in headers {
            if name == header::COOKIE {
                cookies = cookies.saturating_add(1);
            } else if name == header::HOST {
                fields.host = match fields.host {
                    Hosts::None => Hosts::One(value.clone()),
                    _ => Hosts::Several,
                };
            } else if name == header::TRANSFER_ENCODING {
                fields.transfer_encoding = true;
            } else if name == header::CONNECTION {
                fields.connection = true;
            } else if name == header::TE {
                fields.te = true;
                // Envoy compares each whole list element, trimmed: `trailers;q=0.5` is not it.
                fields.te_trailers |= value
                    .as_bytes()
                    .split(|&b| b == b',')
                    .any(|e| e.trim_ascii() == b"trailers");
            } else if name == header::UPGRADE {
                fields.upgrade = true;
            } else if name == X_FORWARDED_CLIENT_CERT {
                fields.client_cert = true;
            } else if name == header::CONTENT_TYPE && !fields.content_type {
                // The first value, as `HeaderMap::get` gives it.
                fields.content_type = true;
                fields.grpc = crate::response::is_grpc_content_type(Some(value));
            }
        }
        fields.cookie_crumbs = cookies > 1;
        fields
    }
}

/// An HTTP/1 absolute-form target names `http` or `https` (in any case, which the URI parser
/// has made `http` or `https`), as Envoy's HTTP/1 codec requires: `ftp://a/x` would otherwise
/// be forwarded as `GET /x`. `https` on this plaintext listener is accepted, as in Envoy.
/// HTTP/2's `:scheme` is not checked: Envoy forwards any value, and meshguard sets
/// `x-forwarded-proto` itself.
fn check_scheme(uri: &http::Uri, version: Version) -> Result<(), Refusal> {
    match uri.scheme() {
        Some(s)
            if version != Version::HTTP_2
                && *s != http::uri::Scheme::HTTP
                && *s != http::uri::Scheme::HTTPS =>
        {
            Err(Refusal::InvalidScheme)
        }
        _ => Ok(()),
    }
}

/// Only `chunked` is a transfer coding meshguard can forward as it came: hyper decodes the
/// chunks and the upstream request is chunked again, so any other coding would reach the
/// upstream silently removed. Envoy answers 501 for the same requests.
fn check_transfer_encoding(headers: &HeaderMap) -> Result<(), Refusal> {
    let mut codings = 0;
    for v in headers.get_all(header::TRANSFER_ENCODING) {
        for coding in v
            .to_str()
            .map_err(|_| Refusal::TransferEncoding)?
            .split(',')
        {
            let coding = coding.trim_matches([' ', '\t']);
            codings += 1;
            if codings > 1 || !coding.eq_ignore_ascii_case("chunked") {
                return Err(Refusal::TransferEncoding);
            }
        }
    }
    Ok(())
}

/// HTTP/2 splits `cookie` into crumbs, one field each; they are one header again, joined with
/// `; `, before anything else reads them (RFC 9113 §8.2.3), as Envoy's HTTP/2 codec does: the
/// policies and an HTTP/1.1 upstream see the one `cookie` header the client meant.
fn join_cookie_crumbs(headers: &mut HeaderMap) {
    let mut joined: Vec<u8> = Vec::new();
    for v in headers
        .get_all(header::COOKIE)
        .iter()
        .filter(|v| !v.is_empty())
    {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// Removes the headers that `Connection` nominates, before the policies see the request (RFC
/// 9110 §7.6.1; Envoy's HTTP/1 codec does the same). A client that could hide a header from
/// the upstream but not from the policies could satisfy a rule with a header the upstream never
/// gets. As in Envoy, nominating `x-forwarded-for`, `x-forwarded-host`, `x-forwarded-proto` or a
/// pseudo-header, or ten or more names, is refused: removing them would hide where the request
/// came from. `Connection` keeps only its connection options (`close`, `keep-alive`, ...).
///
/// Returns whether `Connection` nominated any header (which may then have been removed).
fn remove_nominated(headers: &mut HeaderMap) -> Result<bool, Refusal> {
    // The usual `Connection: keep-alive` or `close` allocates nothing: names are collected
    // only when there are some, and the value is rewritten only then.
    let mut nominated: Vec<HeaderName> = Vec::new();
    let mut tokens = 0;
    for v in headers.get_all(header::CONNECTION) {
        for token in connection_tokens(v)? {
            tokens += 1;
            if tokens >= 10 || token.starts_with(':') {
                return Err(Refusal::ConnectionHeader);
            }
            // The connection header itself stays; only the nomination goes.
            if connection_option(token) || token.eq_ignore_ascii_case("connection") {
                continue;
            }
            let Ok(name) = HeaderName::from_bytes(token.as_bytes()) else {
                continue;
            };
            if name == X_FORWARDED_FOR || name == X_FORWARDED_HOST || name == X_FORWARDED_PROTO {
                return Err(Refusal::ConnectionHeader);
            }
            nominated.push(name);
        }
    }
    if nominated.is_empty() {
        return Ok(false);
    }
    for name in &nominated {
        headers.remove(name);
    }
    // Only the options stay, so that a header added later (a JWT output) with a nominated name
    // is not removed at forwarding.
    let mut options = Vec::new();
    for v in headers.get_all(header::CONNECTION) {
        for token in connection_tokens(v)?.filter(|t| connection_option(t)) {
            if !options.is_empty() {
                options.push(b',');
            }
            options.extend_from_slice(token.as_bytes());
        }
    }
    match HeaderValue::from_bytes(&options) {
        Ok(v) if !options.is_empty() => {
            headers.insert(header::CONNECTION, v);
        }
        _ => {
            headers.remove(header::CONNECTION);
        }
    }
    Ok(true)
}

/// The non-empty, trimmed tokens of one `Connection` value.
fn connection_tokens(v: &HeaderValue) -> Result<impl Iterator<Item = &str>, Refusal> {
    let v = v.to_str().map_err(|_| Refusal::ConnectionHeader)?;
    Ok(v.split(',')
        .map(|t| t.trim_matches([' ', '\t']))
        .filter(|t| !t.is_empty()))
}

/// A connection option rather than a header name (Envoy's list).
fn connection_option(token: &str) -> bool {
    ["close", "keep-alive", "upgrade", "http2-settings"]
        .iter()
        .any(|o| token.eq_ignore_ascii_case(o))
}

/// The one authority of the request. The request target's authority (absolute-form,
/// authority-form, HTTP/2 `:authority`) wins over `Host` (RFC 9112 §3.2.2, RFC 9113 §8.3.1),
/// as in Envoy, and the `Host` header is removed so that the upstream gets the target's. Two
/// `Host` headers are refused (RFC 9112 §3.2) rather than joined, in either protocol.
fn authority(parts: &mut http::request::Parts, host: Hosts) -> Result<Authority, Refusal> {
    let host = match host {
        Hosts::Several => return Err(Refusal::DuplicateHost),
        Hosts::One(h) => Some(h),
        Hosts::None => None,
    };
    let authority = match (parts.uri.authority(), host) {
        (Some(a), _) => Authority::Target(a.clone()),
        (None, Some(h)) => Authority::Host(h),
        (None, None) => return Err(Refusal::MissingHost),
    };
    let bytes = match &authority {
        Authority::Target(_) => authority.as_str().as_bytes(),
        Authority::Host(h) => h.as_bytes(),
    };
    if !bytes.iter().copied().all(authority_byte) {
        return Err(Refusal::InvalidAuthority);
    }
    if let Authority::Target(_) = authority {
        parts.headers.remove(header::HOST);
    }
    Ok(authority)
}

/// The bytes an authority may hold (RFC 3986 §3.2: unreserved, sub-delims, `:`, `@`, `[`, `]`
/// and `%`), as Envoy checks them.
fn authority_byte(b: u8) -> bool {
    // A table lookup per byte, not a scan of the punctuation list.
    AUTHORITY_BYTES
        .get(usize::from(b))
        .copied()
        .unwrap_or(false)
}

/// [`authority_byte`]'s answer for every byte.
#[expect(
    clippy::indexing_slicing,
    reason = "a const loop over the 256 entries of a 256-entry table"
)]
static AUTHORITY_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
                    | b'['
                    | b']'
                    | b'%'
            );
        b += 1;
    }
    table
};

/// `remote.ip`: with N trusted proxies, the N-th address from the right of `X-Forwarded-For`
/// (every `X-Forwarded-For` header, in order, read as one list), trimmed; the peer when N is 0,
/// when the list has fewer than N elements, or when that element is not an IP address. This is
/// Envoy's `xff_num_trusted_hops` (`getLastAddressFromXFF`): empty elements count, so
/// `1.2.3.4 ,` with one trusted proxy falls back to the peer.
pub fn remote_ip(headers: &HeaderMap, peer: IpAddr, trusted: usize) -> IpAddr {
    if trusted == 0 {
        return peer;
    }
    // Walk the elements from the right without collecting them: the headers right to left,
    // each header's elements right to left.
    let mut from_right = 0;
    for v in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(v) = v.to_str() else {
            return peer;
        };
        for element in v.rsplit(',') {
            from_right += 1;
            if from_right == trusted {
                return element.trim_matches([' ', '\t']).parse().unwrap_or(peer);
            }
        }
    }
    peer
}

/// Sets the headers that describe the request to the upstream, after hop-by-hop removal, so
/// that nothing the client nominated can remove them: `host` (the authority the policies saw),
/// `x-request-id` (the id of the access log line), `x-forwarded-for` (the received list, then
/// the peer) and `x-forwarded-proto`.
pub fn set_forwarding_headers(
    headers: &mut HeaderMap,
    authority: &Authority,
    request_id: &HeaderValue,
    conn: &ConnInfo,
) {
    if let Authority::Target(_) = authority
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, v);
    }
    // Usually still the one value the intake set (a JWT output or a `Connection` nomination
    // could have changed it): then there is nothing to replace, and a lookup is cheaper than
    // an insert.
    let mut ids = headers.get_all(&X_REQUEST_ID).iter();
    if ids.next() != Some(request_id) || ids.next().is_some() {
        headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    }
    match headers.entry(&X_FORWARDED_FOR) {
        header::Entry::Occupied(mut e) => {
            // One list: every value received, in order (as `remote_ip` reads them), then
            // the peer, joined with a bare `,` as Envoy appends (`Utility::appendXff`).
            let mut list = Vec::new();
            // Empty lines are left out, as Envoy joins them.
            for v in e.iter().filter(|v| !v.is_empty()) {
                list.extend_from_slice(v.as_bytes());
                list.push(b',');
            }
            list.extend_from_slice(conn.peer_ip.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&list) {
                e.insert(v);
            }
        }
        header::Entry::Vacant(e) => {
            e.insert(conn.peer_ip.clone());
        }
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(conn.scheme.as_str()),
    );
}

/// Appends `ours` to the client's `x-forwarded-client-cert` (every line joined with `,`, as
/// Envoy's APPEND_FORWARD does): only the last element is this proxy's word.
pub fn append_client_cert(headers: &mut HeaderMap, ours: &str) {
    let mut v = Vec::new();
    for line in headers.get_all(&X_FORWARDED_CLIENT_CERT) {
        v.extend_from_slice(line.as_bytes());
        v.push(b',');
    }
    v.extend_from_slice(ours.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&v) {
        headers.insert(X_FORWARDED_CLIENT_CERT.clone(), v);
    } else {
        headers.remove(&X_FORWARDED_CLIENT_CERT);
    }
}

/// A request without a body is forwarded with `content-length: 0`, except for the methods
/// whose requests have no body by definition (GET, HEAD, DELETE, TRACE, CONNECT), as Envoy's
/// HTTP/1 encoder does (`HeaderUtility::requestShouldHaveNoBody`): an upstream that requires
/// a length on a `POST` (411 Length Required otherwise) gets the same request from either.
pub fn set_empty_body_length(headers: &mut HeaderMap, method: &http::Method) {
    use http::Method;
    let bodiless = matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::TRACE | Method::CONNECT
    );
    if !bodiless && !headers.contains_key(header::CONTENT_LENGTH) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    #[test]
    fn http2_cookie_crumbs_become_one_header_and_http1_cookies_stay() {
        let request = |version| {
            http::Request::builder()
                .version(version)
                .uri("http://a/x")
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .body(())
                .unwrap()
        };
        let mut p = parts(request(Version::HTTP_2));
        admit(&mut p).unwrap();
        let v: Vec<_> = p.headers.get_all("cookie").iter().collect();
        assert_eq!(v, ["a=1; b=2"]);
        let mut p = parts(request(Version::HTTP_11));
        p.headers.insert("host", HeaderValue::from_static("a"));
        admit(&mut p).unwrap();
        assert_eq!(p.headers.get_all("cookie").iter().count(), 2);
    }

    #[test]
    fn policies_see_te_as_envoy_leaves_it() {
        let admitted = |te: &'static str, connection: Option<&'static str>| {
            let mut b = http::Request::builder()
                .uri("/x")
                .header("host", "a")
                .header("te", te);
            if let Some(c) = connection {
                b = b.header("connection", c);
            }
            let mut p = parts(b.body(()).unwrap());
            admit(&mut p).unwrap();
            p.headers
                .get_all("te")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(admitted("trailers, gzip", None), ["trailers"]);
        assert_eq!(admitted("gzip, trailers", None), ["trailers"]);
        assert_eq!(admitted("trailers, gzip", Some("te")), ["trailers"]);
        assert!(admitted("gzip", None).is_empty());
        assert!(admitted("trailers;q=0.5", None).is_empty());
    }

    #[test]
    fn te_keeps_only_trailers_as_envoy() {
        let te = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("te", HeaderValue::from_static(v));
            }
            Fields::scan(&h).te_trailers
        };
        assert!(te(&["trailers"]));
        assert!(te(&["trailers, deflate"]));
        assert!(te(&["deflate;q=0.5, trailers"]));
        assert!(
            !te(&["trailers;q=0.5"]),
            "a whole element, as Envoy compares it"
        );
        assert!(te(&["gzip", "trailers"]));
        assert!(!te(&["Trailers"]), "case-sensitive, as Envoy");
        assert!(!te(&["gzip"]));
        assert!(!te(&[]));
    }

    #[test]
    fn a_client_sent_client_certificate_header_is_removed_before_evaluation() {
        let mut p = parts(
            http::Request::builder()
                .uri("/x")
                .header("host", "a")
                .header(
                    "x-forwarded-client-cert",
                    "By=spiffe://cluster.local/ns/foo/sa/admin",
                )
                .header("X-Forwarded-Client-Cert", "Hash=1")
                .body(())
                .unwrap(),
        );
        admit(&mut p).unwrap();
        assert!(!p.headers.contains_key("x-forwarded-client-cert"));
    }

    #[test]
    fn bodiless_requests_get_a_zero_length_except_where_no_body_is_defined() {
        for (method, expect) in [
            ("POST", Some("0")),
            ("PUT", Some("0")),
            ("PATCH", Some("0")),
            ("OPTIONS", Some("0")),
            ("PROPFIND", Some("0")),
            ("GET", None),
            ("HEAD", None),
            ("DELETE", None),
            ("TRACE", None),
            ("CONNECT", None),
        ] {
            let mut h = HeaderMap::new();
            set_empty_body_length(
                &mut h,
                &http::Method::from_bytes(method.as_bytes()).unwrap(),
            );
            assert_eq!(
                h.get("content-length").map(|v| v.to_str().unwrap()),
                expect,
                "{method}"
            );
        }
        let mut h = HeaderMap::new();
        h.insert("content-length", HeaderValue::from_static("0"));
        set_empty_body_length(&mut h, &http::Method::POST);
        assert_eq!(h.get_all("content-length").iter().count(), 1);
    }

    #[test]
    fn remote_ip_takes_the_nth_element_from_the_right_as_envoy() {
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.7, 10.0.0.2"),
        );
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.3"));
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(remote_ip(&h, peer, 0), peer);
        assert_eq!(remote_ip(&h, peer, 1).to_string(), "10.0.0.3");
        assert_eq!(remote_ip(&h, peer, 3).to_string(), "203.0.113.7");
        assert_eq!(
            remote_ip(&h, peer, 4),
            peer,
            "shorter than the trusted hops: the peer"
        );

        let xff = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", HeaderValue::from_static(v));
            h
        };
        // Envoy's getLastAddressFromXFF: the element after the last comma, trimmed. An empty
        // element is not skipped: it is not an address, so the peer is used.
        assert_eq!(remote_ip(&xff("1.2.3.4 ,"), peer, 1), peer);
        assert_eq!(remote_ip(&xff("1.2.3.4, "), peer, 1), peer);
        assert_eq!(remote_ip(&xff("1.2.3.4 ,"), peer, 2).to_string(), "1.2.3.4");
        assert_eq!(
            remote_ip(&xff(" 1.2.3.4\t"), peer, 1).to_string(),
            "1.2.3.4"
        );
        assert_eq!(remote_ip(&xff("1.2.3.4,,5.6.7.8"), peer, 2), peer);
        assert_eq!(remote_ip(&xff("unknown"), peer, 1), peer);
        assert_eq!(
            remote_ip(&xff("2001:db8::1"), peer, 1).to_string(),
            "2001:db8::1"
        );
        assert_eq!(remote_ip(&xff("[2001:db8::1]"), peer, 1), peer);
        assert_eq!(remote_ip(&xff("1.2.3.4:80"), peer, 1), peer);
    }

    #[test]
    fn methods_are_envoys_list_and_case_sensitive() {
        for m in [
            "GET",
            "DELETE",
            "PROPFIND",
            "MSEARCH",
            "UNSUBSCRIBE",
            "ACL",
            "CONNECT",
        ] {
            assert!(
                known_method(&Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
        for m in [
            "delete", "Delete", "get", "POS", "FOO", "M-SEARCH", "GETS", "PRI",
        ] {
            assert!(
                !known_method(&Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
        assert!(METHODS.is_sorted(), "binary search needs the list sorted");
    }

    #[test]
    fn transfer_encoding_is_chunked_or_refused() {
        let te = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("transfer-encoding", HeaderValue::from_static(v));
            }
            check_transfer_encoding(&h)
        };
        assert_eq!(te(&[]), Ok(()));
        assert_eq!(te(&["chunked"]), Ok(()));
        assert_eq!(te(&["CHUNKED"]), Ok(()));
        for bad in [
            &["gzip, chunked"][..],
            &["identity, chunked"],
            &["gzip"],
            &["gzip", "chunked"],
            &["chunked, chunked"],
        ] {
            assert_eq!(te(bad), Err(Refusal::TransferEncoding), "{bad:?}");
        }
    }

    #[test]
    fn connection_nominations_are_removed_before_evaluation() {
        let mut p = parts(
            http::Request::get("/x")
                .header("host", "a")
                .header(
                    "connection",
                    "keep-alive, X-Secret, x-request-id, connection",
                )
                .header("x-secret", "1")
                .header("x-request-id", "abc")
                .header("x-kept", "1")
                .body(())
                .unwrap(),
        );
        assert!(admit(&mut p).is_ok());
        assert!(!p.headers.contains_key("x-secret"));
        assert!(!p.headers.contains_key("x-request-id"));
        assert_eq!(p.headers["connection"], "keep-alive");
        assert!(p.headers.contains_key("x-kept"));

        for refused in [
            "x-forwarded-for",
            "X-Forwarded-Proto",
            "x-forwarded-host",
            ":path",
            "a1,a2,a3,a4,a5,a6,a7,a8,a9,a10",
        ] {
            let mut p = parts(
                http::Request::get("/x")
                    .header("host", "a")
                    .header("connection", refused)
                    .body(())
                    .unwrap(),
            );
            assert_eq!(
                admit(&mut p).unwrap_err(),
                Refusal::ConnectionHeader,
                "{refused}"
            );
        }
        // Nine names are accepted, as in Envoy.
        let mut p = parts(
            http::Request::get("/x")
                .header("host", "a")
                .header("connection", "a1,a2,a3,a4,a5,a6,a7,a8,close")
                .body(())
                .unwrap(),
        );
        assert!(admit(&mut p).is_ok());
        // Nominating `host` removes it, and then there is no authority (as in Envoy).
        let mut p = parts(
            http::Request::get("/x")
                .header("host", "a")
                .header("connection", "host")
                .body(())
                .unwrap(),
        );
        assert_eq!(admit(&mut p).unwrap_err(), Refusal::MissingHost);
    }

    #[test]
    fn the_target_authority_wins_and_replaces_host() {
        let mut p = parts(
            http::Request::get("http://u@a:8080/x")
                .header("host", "internal.example")
                .body(())
                .unwrap(),
        );
        let a = admit(&mut p).unwrap();
        assert_eq!(
            a.as_str(),
            "a:8080",
            "userinfo is not part of the authority"
        );
        assert!(!p.headers.contains_key("host"));

        let mut p = parts(
            http::Request::get("/x")
                .header("host", "a")
                .header("host", "internal.example")
                .body(())
                .unwrap(),
        );
        assert_eq!(admit(&mut p).unwrap_err(), Refusal::DuplicateHost);

        let mut p = parts(http::Request::get("/x").body(()).unwrap());
        assert_eq!(admit(&mut p).unwrap_err(), Refusal::MissingHost);

        // An empty Host is an authority (RFC 9112 §3.2 lets clients send one); Envoy forwards it.
        let mut p = parts(
            http::Request::get("/x")
                .header("host", "")
                .body(())
                .unwrap(),
        );
        assert_eq!(admit(&mut p).unwrap().as_str(), "");

        for bad in ["a b", "a\tb", "a\"b", "a/b"] {
            let mut p = parts(
                http::Request::get("/x")
                    .header("host", HeaderValue::from_str(bad).unwrap())
                    .body(())
                    .unwrap(),
            );
            assert_eq!(
                admit(&mut p).unwrap_err(),
                Refusal::InvalidAuthority,
                "{bad}"
            );
        }
        let mut p = parts(
            http::Request::get("/x")
                .header("host", HeaderValue::from_bytes(b"a\x80b").unwrap())
                .body(())
                .unwrap(),
        );
        assert_eq!(admit(&mut p).unwrap_err(), Refusal::InvalidAuthority);
        let mut p = parts(
            http::Request::get("/x")
                .header("host", "[::1]:80")
                .body(())
                .unwrap(),
        );
        assert_eq!(admit(&mut p).unwrap().as_str(), "[::1]:80");
    }

    #[test]
    fn only_websocket_upgrades_pass_h2c_and_unasked_upgrades_are_removed() {
        let admitted = |version, upgrade: &[&'static str], connection: Option<&'static str>| {
            let mut b = http::Request::get("/ws")
                .version(version)
                .header("host", "a");
            for u in upgrade {
                b = b.header("upgrade", *u);
            }
            if let Some(c) = connection {
                b = b.header("connection", c);
            }
            let mut p = parts(b.header("http2-settings", "AAMAAABk").body(()).unwrap());
            admit(&mut p).map(|_| {
                let get = |n: &str| p.headers.get(n).map(|v| v.to_str().unwrap().to_string());
                (get("upgrade"), get("connection"), get("http2-settings"))
            })
        };
        let v11 = Version::HTTP_11;
        let s = |v: &str| Some(v.to_string());
        // WebSocket, in any case, stays as it came.
        assert_eq!(
            admitted(v11, &["websocket"], Some("Upgrade")),
            Ok((s("websocket"), s("Upgrade"), s("AAMAAABk")))
        );
        assert_eq!(
            admitted(v11, &["WebSocket"], Some("keep-alive, upgrade")),
            Ok((s("WebSocket"), s("keep-alive, upgrade"), s("AAMAAABk")))
        );
        // Any other protocol, a list, or two lines: refused before evaluation, as Envoy does.
        for bad in [
            &["foo"][..],
            &["websocket, foo"],
            &["websocket", "websocket"],
        ] {
            assert_eq!(
                admitted(v11, bad, Some("upgrade")),
                Err(Refusal::UpgradeFailed),
                "{bad:?}"
            );
        }
        // h2c: removed with its settings and both connection options; served as HTTP/1.1.
        assert_eq!(
            admitted(v11, &["h2c"], Some("Upgrade, HTTP2-Settings")),
            Ok((None, None, None))
        );
        assert_eq!(
            admitted(v11, &["H2C"], Some("keep-alive, Upgrade, HTTP2-Settings")),
            Ok((None, s("keep-alive"), None))
        );
        // Not asked for (no `upgrade` option), or HTTP/1.0: `Upgrade` is removed, whatever it
        // names.
        assert_eq!(
            admitted(v11, &["foo"], None),
            Ok((None, None, s("AAMAAABk")))
        );
        assert_eq!(
            admitted(Version::HTTP_10, &["foo"], Some("upgrade")),
            Ok((None, s("upgrade"), s("AAMAAABk")))
        );
    }

    #[test]
    fn connect_needs_an_authority_target() {
        let mut p = parts(
            http::Request::connect("a:443")
                .header("host", "a:443")
                .body(())
                .unwrap(),
        );
        assert_eq!(admit(&mut p).unwrap().as_str(), "a:443");
        let mut p = parts(
            http::Request::connect("/x")
                .header("host", "a")
                .body(())
                .unwrap(),
        );
        assert_eq!(admit(&mut p).unwrap_err(), Refusal::ConnectTarget);
    }

    #[test]
    fn the_forwarded_request_id_is_the_one_value_of_x_request_id() {
        let conn = ConnInfo::plain(
            "10.0.0.9:5000".parse().unwrap(),
            "10.0.0.1:8080".parse().unwrap(),
        );
        let host = Authority::Host(HeaderValue::from_static("a"));
        let id = HeaderValue::from_static("id-1");
        let forwarded = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-request-id", HeaderValue::from_static(v));
            }
            set_forwarding_headers(&mut h, &host, &id, &conn);
            h.get_all("x-request-id")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(forwarded(&[]), ["id-1"]);
        assert_eq!(forwarded(&["id-1"]), ["id-1"]);
        assert_eq!(forwarded(&["other"]), ["id-1"]);
        assert_eq!(forwarded(&["id-1", "other"]), ["id-1"]);
        assert_eq!(forwarded(&["other", "id-1"]), ["id-1"]);
    }

    #[test]
    fn the_authority_byte_table_is_the_rfc_3986_set() {
        for b in 0..=255u8 {
            let listed = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@[]%".contains(&b);
            assert_eq!(authority_byte(b), listed, "byte {b}");
        }
    }
}
