//! The Kubernetes policy source: `security.istio.io` resources watched on the API server.
#![forbid(unsafe_code)]
