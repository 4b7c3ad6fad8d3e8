//! The proxy: meshguard's engine on live HTTP traffic.
#![forbid(unsafe_code)]

pub mod echo;
