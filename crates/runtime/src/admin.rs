//! The admin listener's pages: `/healthz/ready`, `/metrics` (also `/stats/prometheus`, the path
//! Istio's scrape configuration uses), `/config_dump`.
//!
//! Owns those pages and choosing the metrics format from `Accept`. Does not own what they
//! report (state and metrics live elsewhere) or the listener (the accept loop in
//! the front end's listener serves it with the proxy's connection limits and timeouts).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::{Service, service_fn};

use crate::metrics::{Format, Metrics};
use crate::state::PolicyState;

/// The body of every admin page.
pub type Body = Full<Bytes>;

fn page(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

fn route(req: &Request<Incoming>, state: &PolicyState, metrics: &Metrics) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return page(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".into(),
        );
    }
    match req.uri().path() {
        // Files load before the listeners open; a watched source must have delivered its
        // first complete set, and remote keys must have had their first fetch (success or
        // failure), before traffic is sent our way.
        "/healthz/ready" | "/ready" => match state.policies_ready() {
            Err(why) => page(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("NOT READY: {why}\n"),
            ),
            Ok(()) if state.jwks().ready() => page(StatusCode::OK, "text/plain", "LIVE\n".into()),
            Ok(()) => page(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "NOT READY: first JWKS fetch in progress\n".into(),
            ),
        },
        "/metrics" | "/stats/prometheus" => {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let format = Format::negotiate(accept);
            let mut r = page(
                StatusCode::OK,
                format.content_type(),
                metrics.encode_as(format),
            );
            r.headers_mut()
                .insert(header::VARY, http::HeaderValue::from_static("accept"));
            r
        }
        "/config_dump" => {
            let body = serde_json::to_string_pretty(&state.dump()).unwrap_or_default() + "\n";
            page(StatusCode::OK, "application/json", body)
        }
        _ => page(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /healthz/ready, /metrics, /stats/prometheus or /config_dump\n".into(),
        ),
    }
}

/// The admin pages as a service for one connection (served by the listeners' accept loop).
pub fn service(
    state: Arc<PolicyState>,
    metrics: Arc<Metrics>,
) -> impl Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<Body>, Infallible>>,
> + Send
+ Unpin
+ 'static {
    service_fn(move |req| std::future::ready(Ok(route(&req, &state, &metrics))))
}
