//! The Kubernetes policy source: `security.istio.io` resources watched on the API server, as
//! istiod watches them, turned into the same `PolicySet` the file loader makes.
//!
//! [`connect`] makes a client (`--kubeconfig`, `$KUBECONFIG`, `~/.kube/config`, the in-cluster
//! service account). A [`KubeSource`] runs one watch per kind (RequestAuthentication,
//! AuthorizationPolicy, PeerAuthentication) in the workload's namespace and the root
//! namespace, or cluster-wide ([`Scope`]), plus one on the workload's Pod with `--pod`; each
//! object is decoded by the model's strict types and compiled on its own ([`store`]), and
//! each complete set is published to the runtime (`meshguard_runtime::PolicySource::Watched`
//! is the seam). [`list`] reads once, for `check` and `validate`.
//!
//! Modules: [`kinds`] (the kinds and watches), [`store`] (events into the set: the semantics),
//! [`watch`] (the watch tasks and the publishing loop), [`client`] (the kubeconfig), [`list`]
//! (one-shot reads). Does not own compiling, deciding or serving: those are the runtime's and
//! the proxy's.
#![forbid(unsafe_code)]
// A panic would stop the whole process (the release profile aborts), and these tasks run
// beside the request path: no index, unwrap, expect, panic! or unreachable! in library code
// (docs/architecture.md, Panics). Tests may (clippy.toml).
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]
#![cfg_attr(not(test), deny(clippy::string_slice))]

pub mod client;
pub mod kinds;
pub mod list;
pub mod pods;
pub mod store;
pub mod watch;

pub use client::{ConnectError, Connection, connect};
pub use kinds::Scope;
pub use watch::{KubeSource, Options};
