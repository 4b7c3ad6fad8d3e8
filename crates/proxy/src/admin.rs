//! The admin listener: `/healthz/ready`, `/metrics`, `/config_dump`.
//!
//! Owns those three pages. Does not own what they report (state and metrics live elsewhere).

use std::future::Future;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::response::{Body, full};
use crate::state::PolicyState;

fn page(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
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
        // Policies load before the listeners open; remote keys must have had their first
        // fetch (success or failure) before traffic is sent our way.
        "/healthz/ready" | "/ready" if state.jwks().ready() => {
            page(StatusCode::OK, "text/plain", "LIVE\n".into())
        }
        "/healthz/ready" | "/ready" => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "NOT READY: first JWKS fetch in progress\n".into(),
        ),
        "/metrics" => page(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.encode(),
        ),
        "/config_dump" => {
            let body = serde_json::to_string_pretty(&state.dump()).unwrap_or_default() + "\n";
            page(StatusCode::OK, "application/json", body)
        }
        _ => page(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /healthz/ready, /metrics or /config_dump\n".into(),
        ),
    }
}

/// Serves the admin pages until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<PolicyState>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            () = &mut shutdown => break,
        };
        let (state, metrics) = (state.clone(), metrics.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let resp = route(&req, &state, &metrics);
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
