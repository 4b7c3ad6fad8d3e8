//! The harness the end-to-end tests share: the paths and scratch directories (`fs`), a
//! running `meshguard proxy` (`proxy`), raw HTTP/1.1 and curl clients with one response parser
//! (`http`), upstreams that record or misbehave (`upstream`), test certificates (`certs`), and the Python of the test
//! oracles (`python`). Each test file includes it with `mod support;`.
//!
//! Every file under `tests/` is its own test binary and uses only part of this module, so the
//! rest would be dead code in that binary: hence the `allow(dead_code)` below, for this module
//! only. A helper no test uses at all is still removed by hand.
#![allow(dead_code)]

pub mod certs;
pub mod fs;
pub mod http;
pub mod k8s;
pub mod proxy;
pub mod python;
pub mod upstream;
