//! The mapping between Envoy's ext_authz messages and meshguard's decision: a `CheckRequest`'s
//! attributes to the facts and headers [`Runtime::decide`](meshguard_runtime::Runtime::decide)
//! takes, and the [`Outcome`] back to a `CheckResponse` (gRPC) or to the answer of the HTTP
//! variant.
//!
//! Owns what each attribute means to the policies and which header changes Envoy is asked to
//! make. Does not decide (the runtime does), listen or log ([`crate::server`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use envoy_types::ext_authz::v3::pb::{
    CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue,
    HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::address;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::google::rpc::Status;
use http::header::{HeaderMap, HeaderName};
use meshguard_engine::{HeaderOp, Outcome};

/// What a Check carries besides its headers, owned (the `RequestFacts` borrow from it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckFacts {
    pub method: String,
    /// Path with query, as Envoy sends it.
    pub path: String,
    pub host: String,
    pub scheme: String,
    /// `HTTP/1.1`, `HTTP/2`: the client's protocol, for the access log.
    pub protocol: String,
    /// The client of the sidecar (`source.address`).
    pub source: SocketAddr,
    /// The address the client connected to (`destination.address`).
    pub destination: SocketAddr,
    /// `source.principal`: the client certificate's identity (empty without mutual TLS).
    pub principal: Option<String>,
    /// `destination.principal`: the sidecar's own certificate identity (the workload's, with
    /// `--workload-from-request` the namespace when no Pod has the destination address).
    pub destination_principal: Option<String>,
    pub sni: Option<String>,
}

const UNSPECIFIED: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

fn socket_address(a: Option<&envoy_types::pb::envoy::config::core::v3::Address>) -> SocketAddr {
    let Some(address::Address::SocketAddress(s)) = a.and_then(|a| a.address.as_ref()) else {
        return UNSPECIFIED;
    };
    let port = match s.port_specifier {
        Some(PortSpecifier::PortValue(p)) => u16::try_from(p).unwrap_or(0),
        _ => 0,
    };
    s.address
        .parse::<IpAddr>()
        .map_or(UNSPECIFIED, |ip| SocketAddr::new(ip, port))
}

/// Reads a `CheckRequest`: the facts, and the request's headers as the engine sees them.
///
/// Envoy's map holds the pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`), whose
/// values are in the facts already, and joins repeated headers with `,`; with
/// `encode_raw_headers` it sends `header_map` instead, one entry per header line, which is
/// kept as it is. Names or values that are not valid HTTP are left out (Envoy does not send
/// them).
pub fn read_check(req: &CheckRequest) -> (CheckFacts, HeaderMap) {
    let attrs = req.attributes.as_ref();
    let http = attrs
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    let source = attrs.and_then(|a| a.source.as_ref());
    let destination = attrs.and_then(|a| a.destination.as_ref());
    let mut headers = HeaderMap::new();
    if let Some(h) = http {
        let mut put = |k: &str, v: &[u8]| {
            if k.starts_with(':') {
                return;
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_bytes(v),
            ) {
                headers.append(name, value);
            }
        };
        match &h.header_map {
            Some(map) if h.headers.is_empty() => {
                for hv in &map.headers {
                    let v = if hv.raw_value.is_empty() {
                        hv.value.as_bytes()
                    } else {
                        &hv.raw_value
                    };
                    put(&hv.key, v);
                }
            }
            _ => {
                for (k, v) in &h.headers {
                    put(k, v.as_bytes());
                }
            }
        }
    }
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let facts = CheckFacts {
        method: http.map_or_else(String::new, |h| h.method.clone()),
        path: http.map_or_else(|| "/".into(), |h| h.path.clone()),
        host: http.map_or_else(String::new, |h| h.host.clone()),
        scheme: http
            .and_then(|h| non_empty(&h.scheme))
            .unwrap_or_else(|| "http".into()),
        protocol: http.map_or_else(String::new, |h| h.protocol.clone()),
        source: socket_address(source.and_then(|p| p.address.as_ref())),
        destination: socket_address(destination.and_then(|p| p.address.as_ref())),
        principal: source.and_then(|p| non_empty(&p.principal)),
        destination_principal: destination.and_then(|p| non_empty(&p.principal)),
        sni: attrs
            .and_then(|a| a.tls_session.as_ref())
            .and_then(|t| non_empty(&t.sni)),
    };
    (facts, headers)
}

/// The header changes meshguard's proxy would make to an allowed request, as Envoy applies
/// them: headers to set (the first value of a name overwrites the client's copies, later
/// values of the same name are appended) and headers to remove (a token header unless
/// `forwardOriginalToken`, client copies of output headers no token replaced).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub set: Vec<(HeaderName, http::HeaderValue, bool)>,
    pub remove: Vec<HeaderName>,
    /// Query parameters a verified token came in (removed unless `forwardOriginalToken`).
    pub remove_params: Vec<String>,
}

impl Changes {
    pub fn of(ops: &[HeaderOp]) -> Changes {
        let mut c = Changes::default();
        for op in ops {
            match op {
                HeaderOp::Add { name, value } => {
                    let append = c.set.iter().any(|(n, _, _)| n == name);
                    c.set.push((name.clone(), value.clone(), append));
                }
                HeaderOp::Remove { name } => {
                    if !c.remove.contains(name) {
                        c.remove.push(name.clone());
                    }
                }
                HeaderOp::RemoveParam { name } => c.remove_params.push(name.clone()),
            }
        }
        // A header set after its client copy was removed is overwritten, not removed: Envoy
        // applies removals after the headers it sets.
        let set = &c.set;
        c.remove.retain(|r| !set.iter().any(|(n, _, _)| n == r));
        c
    }
}

/// The gRPC status a denial carries (Envoy's own mapping of HTTP statuses to gRPC codes).
pub fn grpc_code(status: u16) -> i32 {
    match status {
        400 => 3,  // INVALID_ARGUMENT
        401 => 16, // UNAUTHENTICATED
        403 => 7,  // PERMISSION_DENIED
        429 | 502..=504 => 14,
        _ => 7,
    }
}

/// The `CheckResponse` for an outcome: OK with the proxy's header changes, or the denial with
/// Envoy's status, body and `www-authenticate`.
pub fn check_response(outcome: &Outcome) -> CheckResponse {
    let header = |key: &str, value: &[u8], action: HeaderAppendAction| HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            value: String::from_utf8_lossy(value).into_owned(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    };
    match &outcome.denial {
        None => {
            let changes = Changes::of(&outcome.header_ops);
            let headers = changes
                .set
                .iter()
                .map(|(n, v, append)| {
                    let action = if *append {
                        HeaderAppendAction::AppendIfExistsOrAdd
                    } else {
                        HeaderAppendAction::OverwriteIfExistsOrAdd
                    };
                    header(n.as_str(), v.as_bytes(), action)
                })
                .collect();
            CheckResponse {
                status: Some(Status {
                    code: 0,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers,
                    headers_to_remove: changes.remove.iter().map(|n| n.to_string()).collect(),
                    query_parameters_to_remove: changes.remove_params,
                    ..Default::default()
                })),
                ..Default::default()
            }
        }
        Some(d) => {
            let reply = &d.reply;
            let headers = reply
                .www_authenticate
                .iter()
                .map(|w| {
                    header(
                        "www-authenticate",
                        w.as_bytes(),
                        HeaderAppendAction::OverwriteIfExistsOrAdd,
                    )
                })
                .collect();
            CheckResponse {
                status: Some(Status {
                    code: grpc_code(reply.status),
                    message: reply.details.clone(),
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: i32::from(reply.status),
                    }),
                    headers,
                    body: reply.body.clone(),
                })),
                ..Default::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };

    fn addr(ip: &str, port: u32) -> Option<Address> {
        Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        })
    }

    #[test]
    fn a_check_request_as_envoy_sends_it() {
        let req = CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    address: addr("10.0.0.7", 40000),
                    principal: "spiffe://cluster.local/ns/bar/sa/sleep".into(),
                    ..Default::default()
                }),
                destination: Some(Peer {
                    address: addr("10.0.0.9", 8000),
                    ..Default::default()
                }),
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: "GET".into(),
                        path: "/headers?a=1".into(),
                        host: "httpbin.foo:8000".into(),
                        scheme: "http".into(),
                        protocol: "HTTP/1.1".into(),
                        headers: [
                            (":path", "/headers?a=1"),
                            (":method", "GET"),
                            (":authority", "httpbin.foo:8000"),
                            ("authorization", "Bearer x"),
                            ("x-forwarded-proto", "http"),
                        ]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let (facts, headers) = read_check(&req);
        assert_eq!(facts.method, "GET");
        assert_eq!(facts.path, "/headers?a=1");
        assert_eq!(facts.host, "httpbin.foo:8000");
        assert_eq!(facts.source, "10.0.0.7:40000".parse().unwrap());
        assert_eq!(facts.destination, "10.0.0.9:8000".parse().unwrap());
        assert_eq!(
            facts.principal.as_deref(),
            Some("spiffe://cluster.local/ns/bar/sa/sleep")
        );
        assert_eq!(
            headers.len(),
            2,
            "pseudo-headers are not headers: {headers:?}"
        );
        assert_eq!(headers["authorization"], "Bearer x");
    }

    #[test]
    fn removing_a_client_copy_then_setting_the_header_is_a_set() {
        let claim = HeaderName::from_static("x-jwt-claim-group");
        let v = http::HeaderValue::from_static("a");
        let c = Changes::of(&[
            HeaderOp::Remove {
                name: claim.clone(),
            },
            HeaderOp::Add {
                name: claim.clone(),
                value: v.clone(),
            },
            HeaderOp::Add {
                name: claim.clone(),
                value: v.clone(),
            },
            HeaderOp::Remove {
                name: http::header::AUTHORIZATION,
            },
        ]);
        assert_eq!(
            c.set,
            vec![(claim.clone(), v.clone(), false), (claim, v, true)]
        );
        assert_eq!(c.remove, vec![http::header::AUTHORIZATION]);
    }
}
