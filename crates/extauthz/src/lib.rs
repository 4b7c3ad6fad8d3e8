//! meshguard as Envoy's external authorizer (`meshguard ext-authz`): Envoy's `ext_authz` filter
//! (an Istio `AuthorizationPolicy` with `action: CUSTOM` naming meshguard's extension
//! provider) asks meshguard about each request, and meshguard answers with the same decision
//! its proxy makes, from the same policies, so that the client sees what Envoy's own
//! `jwt_authn` + `rbac` would answer.
//!
//! Modules: [`check`] (the ext_authz messages to and from the runtime's decision),
//! [`server`] (the gRPC and HTTP listeners, the admin pages, the access log), and [`client`]
//! (the other way round: meshguard's proxy asking the external authorizers of CUSTOM
//! policies, as Envoy's `ext_authz` filter does). The decision
//! is the runtime's ([`meshguard_runtime::Runtime::decide`]); the listeners run the proxy's
//! accept loop; the proxy's request path is not used.
#![forbid(unsafe_code)]
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

pub mod check;
pub mod client;
pub mod server;
pub mod workload;

pub use server::{ExtAuthzConfig, Running, WorkloadMode, start};
