//! Writes one gRPC-framed `CheckRequest` to stdout, as Envoy 1.40's `ext_authz` filter sends it
//! for `GET /headers` on the walkthrough's workload, for `bench/run`'s `meshguard-extauthz-check`
//! row (`h2load -d` posts it to `/envoy.service.auth.v3.Authorization/Check`).
//!
//! ```sh
//! cargo run -q -p meshguard-extauthz --example check_request -- [TOKEN] > check.bin
//! ```
//!
//! With TOKEN, the request carries `authorization: Bearer TOKEN`.

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use prost::Message;
use std::io::Write;

fn addr(ip: &str, port: u32) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    })
}

fn main() -> std::io::Result<()> {
    let token = std::env::args().nth(1);
    let mut headers: Vec<(String, String)> = [
        (":authority", "httpbin.foo:8000"),
        (":method", "GET"),
        (":path", "/headers"),
        (":scheme", "http"),
        ("accept", "*/*"),
        ("user-agent", "h2load"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "0b1c9b5e-6c1a-4a47-9d0e-5f2f2f0c8e11"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(t) = token {
        headers.push(("authorization".into(), format!("Bearer {t}")));
    }
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: addr("10.0.0.7", 40000),
                ..Default::default()
            }),
            destination: Some(Peer {
                address: addr("10.0.0.9", 8000),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "13356296484758237461".into(),
                    method: "GET".into(),
                    path: "/headers".into(),
                    host: "httpbin.foo:8000".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers: headers.into_iter().collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let body = request.encode_to_vec();
    let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    // gRPC framing: not compressed, then the length, big-endian.
    let mut out = vec![0u8];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    std::io::stdout().write_all(&out)
}
