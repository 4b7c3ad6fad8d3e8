//! The HTTP front end: meshguard's decisions on live HTTP traffic.
//!
//! [`server::start`] builds the shared runtime (`meshguard-runtime`: policies, reloads, keys,
//! metrics, admin pages), binds the proxy and admin listeners, starts the built-in echo
//! upstream (`meshguard-echo`) when no upstream is given, and serves until told to stop. Each
//! request goes through [`handler::handle`] in named phases: intake, the runtime's one
//! decision, then a local reply ([`response`]) or a forwarded request ([`upstream`], or
//! [`upgrade`] for an allowed WebSocket handshake).
#![forbid(unsafe_code)]
// No panics on the request path: index with `get`, no unwrap/expect/panic!/unreachable!.
// An allowed site says why it cannot panic (docs/architecture.md, Panics). Tests may use
// them (clippy.toml; `string_slice` has no such option, hence the `cfg_attr`).
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]
#![cfg_attr(not(test), deny(clippy::string_slice))]

pub mod client;
pub mod config;
pub mod connection;
pub mod custom;
pub mod handler;
pub mod inbound;
pub mod intake;
pub mod response;
pub mod server;
pub mod tls;
pub mod tls_rotation;
pub mod upgrade;
pub mod upstream;

pub use config::{Limits, ProxyConfig, UpstreamProtocol, UpstreamTls};
pub use server::{Running, StartError, shutdown_signal, start};
