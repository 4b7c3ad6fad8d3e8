//! The Kubernetes policy source: `security.istio.io` resources watched on the API server, as
//! istiod watches them, turned into the same `PolicySet` the file loader makes.
#![forbid(unsafe_code)]

pub mod kinds;
pub mod store;
