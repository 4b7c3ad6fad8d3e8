//! Prints the Envoy bootstrap (JSON) that the differential harness runs for a set of Istio YAML
//! files, for `bench/run`: Envoy benchmarked beside meshguard with the configuration istiod
//! would give a sidecar ([`meshguard_envoy_diff::translate::bootstrap`]), not one written by hand.
//!
//! ```sh
//! cargo run -q -p meshguard-envoy-diff --example envoy_bootstrap -- \
//!     --listen 127.0.0.1:15006 --upstream 127.0.0.1:8080 [--upstream-protocol http1|h2c|downstream] \
//!     [--ext-authz-grpc ADDR] [FILE_OR_DIR...]
//! ```
//!
//! No file: no policies, the plain hop (connection manager + router). The workload is the
//! walkthrough's (`foo`, `app=httpbin`), the mesh options istiod's defaults.
//!
//! Two things are added to the translator's output, both as istiod sets them on an inbound
//! cluster and both about the upstream leg only:
//! * the default connection pool of a cluster without a DestinationRule
//!   (`getDefaultCircuitBreakerThresholds`: every threshold at 2^32-1, `track_remaining`), so
//!   Envoy's own default of 1,024 connections/requests does not bound a benchmark that istiod's
//!   configuration would not bound;
//! * `--upstream-protocol`: `http1` (the translator's, the default); `h2c` (a port declared
//!   `grpc`/`http2`: `explicit_http_config` with HTTP/2); `downstream` (a sniffed port:
//!   `use_downstream_protocol_config`, HTTP/2 upstream for an HTTP/2 client).
//!
//! `--ext-authz-grpc ADDR`: Envoy with `meshguard ext-authz` at ADDR as its authorizer instead
//! of its own `jwt_authn` + `rbac` ([`translate::delegate_to_ext_authz`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use meshguard_envoy_diff::translate::{self, Endpoints};
use meshguard_envoy_diff::{MeshOptions, WorkloadSpec};
use serde_json::{Value, json};

const USAGE: &str = "usage: envoy_bootstrap --listen ADDR --upstream ADDR \
[--upstream-protocol http1|h2c|downstream] [--ext-authz-grpc ADDR] [FILE_OR_DIR...]";

fn main() -> ExitCode {
    match run() {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("envoy_bootstrap: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<String, String> {
    let mut listen = None;
    let mut upstream = None;
    let mut protocol = String::from("http1");
    let mut ext_authz = None;
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--listen" => listen = Some(parse_addr(&value("--listen")?)?),
            "--upstream" => upstream = Some(parse_addr(&value("--upstream")?)?),
            "--upstream-protocol" => protocol = value("--upstream-protocol")?,
            "--ext-authz-grpc" => ext_authz = Some(parse_addr(&value("--ext-authz-grpc")?)?),
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ => paths.push(PathBuf::from(a)),
        }
    }
    let endpoints = Endpoints {
        listen: listen.ok_or("--listen is required")?,
        upstream: upstream.ok_or("--upstream is required")?,
    };
    let mut policies = String::new();
    for p in &paths {
        for file in yaml_files(p)? {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            policies.push_str("\n---\n");
            policies.push_str(&text);
        }
    }
    let mut bootstrap = translate::bootstrap(
        &policies,
        &WorkloadSpec::default(),
        &MeshOptions::default(),
        &endpoints,
    )
    .map_err(|e| e.to_string())?;
    let cluster = bootstrap
        .pointer_mut("/static_resources/clusters/0")
        .and_then(Value::as_object_mut)
        .ok_or("the bootstrap has no cluster")?;
    let max = u64::from(u32::MAX);
    cluster.insert(
        "circuit_breakers".into(),
        json!({"thresholds": [{
            "max_connections": max,
            "max_pending_requests": max,
            "max_requests": max,
            "max_retries": max,
            "track_remaining": true,
        }]}),
    );
    let http_options = match protocol.as_str() {
        "http1" => None,
        "h2c" => Some(json!({"explicit_http_config": {"http2_protocol_options": {}}})),
        "downstream" => Some(json!({"use_downstream_protocol_config": {
            "http_protocol_options": {},
            "http2_protocol_options": {},
        }})),
        other => return Err(format!("unknown upstream protocol {other}")),
    };
    if let Some(mut options) = http_options {
        options["@type"] =
            json!("type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
        cluster.insert(
            "typed_extension_protocol_options".into(),
            json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options}),
        );
    }
    if let Some(authz) = ext_authz {
        translate::delegate_to_ext_authz(&mut bootstrap, authz, true);
    }
    serde_json::to_string_pretty(&bootstrap).map_err(|e| e.to_string())
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|e| format!("{s}: {e}"))
}

/// `path` itself, or the `.yaml`/`.yml` files of a directory in name order.
fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}
