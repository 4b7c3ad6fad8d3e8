//! The conformance suites as differential scenarios (`conformance::convert`): every case is
//! accounted for, every converted scenario loads and compiles in meshguard, and every converted
//! case, evaluated in-process the way the proxy evaluates it over sockets (mapped addresses,
//! `${PORT}` replaced, `remote.ip` read from `x-forwarded-for`, `destination.ip` the listener's
//! address), still gets the status its suite expects: the mapping kept each case's meaning.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use meshguard_engine::{EvalOptions, HttpRequest, NoRemoteKeys, evaluate};
use meshguard_envoy_diff::conformance::{self, Conversion, ConvertedSuite, DESTINATIONS};
use meshguard_envoy_diff::scenario::PORT_PLACEHOLDER;
use meshguard_envoy_diff::tokens;
use meshguard_model::{LoadOptions, Workload, load_str};
use meshguard_policy::CompiledWorkload;

/// Two listener ports, neither a literal port of the suites, and different from each other so
/// that a `${PORT}` in the wrong place shows.
const PORTS: [u16; 2] = [41_017, 52_333];

/// The cases that are not converted (file, suite, case). None today: every case of the
/// suites keeps its meaning over sockets.
const NOT_CONVERTED: &[(&str, &str, &str)] = &[];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance")
}

fn suite_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no suites in {}", dir().display());
    files
}

fn convert() -> (Conversion, Instant) {
    let at = Instant::now();
    (
        conformance::convert(&dir()).expect("the suites convert"),
        at,
    )
}

fn compile(suite: &ConvertedSuite, port: u16) -> Result<CompiledWorkload, String> {
    let s = &suite.scenario;
    let text = s.policies_for_port(port);
    let opts = LoadOptions {
        default_namespace: s.workload.namespace.clone(),
    };
    let set = load_str(Path::new(&s.name), &text, &opts).map_err(|e| format!("load: {e}"))?;
    let wl = Workload::new(s.workload.namespace.clone(), s.workload.labels.clone());
    meshguard_policy::compile(&set, &wl).map_err(|e| format!("compile: {e}"))
}

/// A change to the conversion, to show that the check notices a broken mapping.
#[derive(Clone, Copy, PartialEq)]
enum Tweak {
    None,
    /// The request arrives on another port than the one `${PORT}` was replaced with.
    OtherPort,
    /// The client's address as the suite wrote it, not mapped.
    UnmappedSource,
    /// No trusted proxy: `x-forwarded-for` is not read.
    NoTrustedProxy,
}

/// Each converted case evaluated as the proxy would over sockets, on both listener addresses
/// and both ports; the cases whose answer is not the suite's, with what differs.
fn check(conversion: &Conversion, converted_at: Instant, tweak: Tweak) -> Vec<String> {
    let mut failures = Vec::new();
    for suite in &conversion.suites {
        let s = &suite.scenario;
        for port in PORTS {
            assert!(!suite.literal_ports.contains(&port), "{}", s.name);
            let cw = compile(suite, port).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            let arrives_on = if tweak == Tweak::OtherPort {
                PORTS.into_iter().find(|p| *p != port).unwrap()
            } else {
                port
            };
            let trusted = if tweak == Tweak::NoTrustedProxy {
                0
            } else {
                s.mesh.trusted_proxies as usize
            };
            let mode: meshguard_engine::PathNormalization =
                s.mesh.path_normalization.as_str().parse().unwrap();
            for (req, case) in s.requests.iter().zip(&suite.cases) {
                for destination in DESTINATIONS {
                    let mut headers = HeaderMap::new();
                    for (n, v) in &req.headers {
                        headers.append(
                            HeaderName::from_bytes(n.as_bytes()).unwrap(),
                            HeaderValue::from_str(v).unwrap(),
                        );
                    }
                    let peer = if tweak == Tweak::UnmappedSource {
                        case.suite_source_ip
                    } else {
                        IpAddr::V4(req.source_ip)
                    };
                    let remote = meshguard_proxy::intake::remote_ip(&headers, peer, trusted);
                    let out = evaluate(
                        &cw,
                        HttpRequest {
                            method: &req.method,
                            path: &req.target,
                            host: req.host.as_deref().unwrap_or_default(),
                            scheme: "http",
                            headers: &mut headers,
                            source_ip: Some(peer),
                            remote_ip: Some(remote),
                            destination_ip: Some(IpAddr::V4(destination)),
                            destination_port: Some(arrives_on),
                            sni: None,
                            peer_identity: None,
                        },
                        &EvalOptions {
                            path_normalization: mode,
                            now: tokens::now() as u64,
                            keys: &NoRemoteKeys,
                            explain: false,
                        },
                    );
                    let mut problems = Vec::new();
                    let e = &case.expect;
                    if out.status() != e.status {
                        problems.push(format!("status {} (want {})", out.status(), e.status));
                    }
                    let d = out.denial.as_ref();
                    if let Some(body) = &e.body
                        && d.map(|d| &d.reply.body) != Some(body)
                    {
                        problems.push(format!(
                            "body {:?} (want {body:?})",
                            d.map(|d| &d.reply.body)
                        ));
                    }
                    if let Some(details) = &e.details
                        && d.map(|d| &d.reply.details) != Some(details)
                    {
                        problems.push(format!(
                            "details {:?} (want {details:?})",
                            d.map(|d| &d.reply.details)
                        ));
                    }
                    if let Some(fresh) = case.fresh_for
                        && converted_at.elapsed() >= fresh
                    {
                        problems.push(format!("evaluated after its {fresh:?} of freshness"));
                    }
                    if !problems.is_empty() {
                        failures.push(format!(
                            "{} / {} (port {port}, destination {destination}): {}",
                            s.name,
                            req.name,
                            problems.join("; ")
                        ));
                    }
                }
            }
        }
    }
    failures
}

#[test]
fn every_case_is_converted_or_listed_with_a_reason() {
    // The cases as the files list them, read without the converter's types.
    let mut want = Vec::new();
    for file in suite_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for doc in docs {
            let suite = doc["suite"].as_str().expect("a suite name").to_string();
            let cases = doc["cases"].as_array().expect("a list of cases");
            assert!(!cases.is_empty(), "{name}: {suite}: no cases");
            for case in cases {
                let case = case["name"].as_str().expect("a case name").to_string();
                want.push((name.clone(), suite.clone(), case));
            }
        }
    }

    let (c, _) = convert();
    let mut got = Vec::new();
    let mut names = BTreeSet::new();
    for s in &c.suites {
        assert!(names.insert(s.scenario.name.clone()), "{}", s.scenario.name);
        assert!(
            s.scenario
                .name
                .starts_with(&format!("conformance {}: {}", s.file, s.suite)),
            "{}",
            s.scenario.name
        );
        assert_eq!(
            s.scenario.requests.len(),
            s.cases.len(),
            "{}",
            s.scenario.name
        );
        assert!(!s.scenario.requests.is_empty(), "{}", s.scenario.name);
        for r in &s.scenario.requests {
            got.push((s.file.clone(), s.suite.clone(), r.name.clone()));
        }
    }
    for n in &c.not_converted {
        assert!(!n.reason.trim().is_empty(), "{n:?}");
        println!(
            "not converted: {} / {} / {}: {}",
            n.file, n.suite, n.case, n.reason
        );
        got.push((n.file.clone(), n.suite.clone(), n.case.clone()));
    }
    assert_eq!(c.converted_cases() + c.not_converted.len(), want.len());
    // A case is dropped on purpose or not at all: the mapping's own checks turn a case whose
    // meaning would change into a "not converted" entry, which must then be listed here.
    let dropped: Vec<(&str, &str, &str)> = c
        .not_converted
        .iter()
        .map(|n| (n.file.as_str(), n.suite.as_str(), n.case.as_str()))
        .collect();
    assert_eq!(dropped, NOT_CONVERTED, "the cases not converted changed");
    got.sort();
    want.sort();
    assert_eq!(got, want, "each case exactly once, converted or not");
    println!(
        "{} cases: {} converted into {} scenarios, {} not converted",
        want.len(),
        c.converted_cases(),
        c.suites.len(),
        c.not_converted.len()
    );
}

#[test]
fn converted_scenarios_load_and_compile_in_meshguard() {
    let (c, _) = convert();
    assert!(!c.suites.is_empty());
    for suite in &c.suites {
        let s = &suite.scenario;
        for port in PORTS {
            let text = s.policies_for_port(port);
            assert!(!text.contains(PORT_PLACEHOLDER), "{}: {text}", s.name);
            compile(suite, port).unwrap_or_else(|e| panic!("{}: {e}\n{text}", s.name));
        }
        for r in &s.requests {
            assert_eq!(r.source_ip.octets()[0], 127, "{} / {}", s.name, r.name);
        }
        // A scenario is plain data: it survives its own replay format.
        for i in 0..s.requests.len() {
            let back: meshguard_envoy_diff::Scenario =
                serde_saphyr::from_str(&s.replay(i)).unwrap();
            assert_eq!(back.requests, vec![s.requests[i].clone()], "{}", s.name);
            assert_eq!(back.policies, s.policies, "{}", s.name);
        }
    }
}

#[test]
fn converted_cases_keep_their_expected_status() {
    let (c, at) = convert();
    let failures = check(&c, at, Tweak::None);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!(
        "{} converted cases keep their status on ports {PORTS:?} and both listener addresses",
        c.converted_cases()
    );
}

/// The check above is able to fail: with the port, the addresses or the trusted proxy wrong,
/// the cases that depend on them get another answer.
#[test]
fn the_check_notices_a_broken_mapping() {
    let (c, at) = convert();
    let failing = |tweak| {
        let failures = check(&c, at, tweak);
        move |case: &str| failures.iter().any(|f| f.contains(&format!(" / {case} (")))
    };
    let other_port = failing(Tweak::OtherPort);
    assert!(other_port("port is the listener port"));
    assert!(other_port("destination.port"));
    assert!(!other_port("exact path"));
    let unmapped = failing(Tweak::UnmappedSource);
    assert!(unmapped("ipBlocks"));
    assert!(unmapped("source.ip and remote.ip"));
    assert!(unmapped("remoteIpBlocks fall back to the peer"));
    assert!(!unmapped("exact path"));
    let untrusted = failing(Tweak::NoTrustedProxy);
    assert!(untrusted("remoteIpBlocks read remote.ip"));
    assert!(untrusted("remote.ip excluded"));
    assert!(!untrusted("ipBlocks"));
}

#[test]
fn ports_and_addresses_are_rewritten_as_documented() {
    let (c, _) = convert();
    let find = |name: &str| {
        c.suites
            .iter()
            .find(|s| s.scenario.name == name)
            .unwrap_or_else(|| panic!("no scenario {name:?}"))
    };

    // One case of "operation fields" arrives on 9090: a scenario of its own, where 9090 is
    // the listener; in the main one 9090 stays, another port than the listener.
    let main = find("conformance authz.yaml: operation fields");
    assert_eq!(main.suite_port, 8000);
    assert_eq!(main.literal_ports, BTreeSet::from([9090]));
    assert!(main.scenario.policies.contains("9090"));
    assert!(
        main.scenario
            .requests
            .iter()
            .any(|r| r.name == "other port")
    );
    let on_9090 = find("conformance authz.yaml: operation fields (listener port 9090)");
    assert_eq!(on_9090.suite_port, 9090);
    assert!(on_9090.literal_ports.is_empty());
    assert!(!on_9090.scenario.policies.contains("9090"));
    assert!(on_9090.scenario.policies.contains(PORT_PLACEHOLDER));
    let names: Vec<&str> = on_9090
        .scenario
        .requests
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["port is the listener port"]);

    // Addresses: 10.0.0.0/8 → 127.10.0.0/16, 10.9.9.9 → 127.10.9.9, 203.0.113.0/24 →
    // 127.203.113.0/24; remoteIp is the last x-forwarded-for, with one trusted proxy.
    let src = find("conformance authz.yaml: source fields and the negative-match truth table");
    assert_eq!(src.scenario.mesh.trusted_proxies, 1);
    for range in ["127.10.0.0/16", "127.10.9.9", "127.203.113.0/24"] {
        assert!(src.scenario.policies.contains(range), "{range}");
    }
    assert!(!src.scenario.policies.contains("10.0.0.0/8"));
    let req = |name: &str| {
        src.scenario
            .requests
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no request {name:?}"))
    };
    assert_eq!(req("ipBlocks").source_ip.to_string(), "127.10.2.3");
    assert_eq!(req("ipBlocks outside").source_ip.to_string(), "127.192.1.1");
    assert_eq!(req("ipBlocks").headers, []);
    let remote = req("remoteIpBlocks read remote.ip");
    assert_eq!(remote.source_ip.to_string(), "127.10.0.1");
    assert_eq!(
        remote.headers,
        [("x-forwarded-for".to_string(), "127.203.113.7".to_string())]
    );

    // A suite without remoteIp keeps the default: x-forwarded-for is not read.
    let seed = find("conformance seed.yaml: step 2, RequestAuthentication");
    assert_eq!(seed.scenario.mesh.trusted_proxies, 0);
    // The examples directory, as files: the RequestAuthentication's comment is kept.
    assert!(
        seed.scenario
            .policies
            .contains("# Step 2 of the walkthrough")
    );

    // Tokens: a token 30 s past its exp keeps its meaning for at most 30 more seconds.
    let jwt = find("conformance jwt.yaml: default locations, time, issuer, signature");
    let skew = jwt
        .scenario
        .requests
        .iter()
        .position(|r| r.name == "expired thirty seconds ago is within the 60 s skew")
        .unwrap();
    let fresh = jwt.cases[skew].fresh_for.unwrap();
    assert!(
        fresh <= Duration::from_secs(30) && fresh >= Duration::from_secs(25),
        "{fresh:?}"
    );
}
