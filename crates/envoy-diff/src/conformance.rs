//! The conformance suites of `tests/conformance/*.yaml` as differential scenarios.
//!
//! Each suite becomes a [`Scenario`] named `conformance <file>: <suite>`, and each of its cases
//! a [`Request`] named as the case. The policies are the files of the suite's `policies` paths
//! (read as meshguard reads a directory) followed by its `inline` YAML.
//!
//! The suites were written for in-process evaluation (`crates/engine/tests/conformance.rs`),
//! where a case may come from any address and arrive on any port. Over real sockets the client
//! connects from `127.0.0.0/8` and both proxies listen on `${PORT}`, so addresses and ports are
//! rewritten, in the policies and in the requests alike, such that each case keeps its meaning:
//!
//! * **IPv4 addresses** `a.b.c.d` become `127.a.c.d`: the second octet is dropped, so `10.1.2.3`
//!   is `127.10.2.3` and `203.0.113.7` is `127.203.113.7` ([`map_ipv4`]). A range `/0` becomes
//!   `127.0.0.0/8`, a range `a.0.0.0/8` becomes `127.a.0.0/16`, and a range of length 16 to 32
//!   keeps its length (`203.0.113.0/24` is `127.203.113.0/24`, a single address stays one).
//!   Other lengths have no counterpart, and a suite using one is not converted. The mapping is
//!   not one-to-one (it forgets the second octet), so every case is checked: for each address
//!   the case uses and each range of the policies, the address is inside the range before the
//!   mapping exactly when it is inside after it; a case where that fails is not converted.
//!   IPv6 ranges and remote addresses stay as written (no loopback client address is IPv6, so
//!   they never meet one); a case whose source is IPv6 is not converted.
//! * **remoteIp**: sent as the last `x-forwarded-for` value, mapped like any address; a suite
//!   with such a case runs with one trusted proxy (`mesh.trustedProxies: 1`), under which both
//!   meshguard (`intake::remote_ip`) and Envoy (`xff_num_trusted_hops: 1`) read `remote.ip` as
//!   the last element of `x-forwarded-for`, and the peer when there is none.
//! * **Ports**: a case's `port` (default 8000) is the port its request arrives on. Over sockets
//!   every request arrives on `${PORT}`, so the cases of a suite are grouped by port, one
//!   scenario per group (the first group keeps the suite's name, the others are named
//!   `… (listener port N)`). In a group, each `ports`, `notPorts` and `destination.port` value
//!   equal to the group's port becomes `${PORT}`; other values stay literal and denote "another
//!   port" ([`ConvertedSuite::literal_ports`]: the listener must be none of them).
//! * **destination.ip** is absent in-process and is the proxy's own address over sockets
//!   (`127.0.0.1`, `127.0.0.2`): every mapped range on it must hold neither, so that it reads as
//!   "absent" did.
//! * **Hosts, paths, methods, headers** are sent as written; `token` (`demo`, `groups`, or a
//!   raw token) and `mint` (the demo key, `typ: JWT`, times `"+N"`/`"-N"` relative to the moment
//!   of conversion) as the conformance runner does.
//!
//! A policy document that changes is written out again (keys in order, every string quoted so
//! that `${PORT}` stays a string once replaced); the other documents are kept as written,
//! comments included.
//!
//! Minted tokens carry times relative to the moment of conversion:
//! [`ConvertedCase::fresh_for`] says how long a case keeps its meaning (a token that expired
//! 30 s ago is accepted within the 60 s clock skew for 30 more seconds).
//!
//! Every case is accounted for: converted ([`Conversion::suites`]) or not, with the reason
//! ([`Conversion::not_converted`]). This module converts; it runs and compares nothing.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshguard_jwt::Algorithm;
use meshguard_model::load::{EntryRule, EntryType, entry_rule};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use crate::scenario::{
    MeshOptions, PORT_PLACEHOLDER, PathNormalization, Protocol, Request, Scenario, WorkloadSpec,
};
use crate::tokens;

/// The port a case arrives on when it names none.
pub const SUITE_PORT: u16 = 8000;
/// The source address of a case that names none.
pub const SUITE_SOURCE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The `Host` of a case that names none.
pub const SUITE_HOST: &str = "httpbin.foo:8000";
/// The addresses `destination.ip` reads over sockets: meshguard's and Envoy's listeners.
pub const DESTINATIONS: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)];
/// Envoy's `clock_skew_seconds` as istiod leaves it, and meshguard's: the slack on `exp`/`nbf`.
const CLOCK_SKEW_SECS: i64 = 60;
/// How long a token minted without an `exp` of its own lives (`tokens::mint`).
const MINTED_LIFETIME_SECS: i64 = 3600;

/// Every suite of `dir` (the repository's `tests/conformance`) as scenarios: the converted
/// cases only. [`convert`] also says which cases were not converted, and why.
pub fn scenarios(dir: &Path) -> Result<Vec<Scenario>, ConformanceError> {
    Ok(convert(dir)?.scenarios())
}

/// Every suite of `dir` (the repository's `tests/conformance`; `policies` paths are read from
/// the directory two levels up, the repository root), converted.
pub fn convert(dir: &Path) -> Result<Conversion, ConformanceError> {
    let root = dir.join("..").join("..");
    let now = tokens::now();
    let mut out = Conversion::default();
    for file in suite_files(dir)? {
        let text = std::fs::read_to_string(&file).map_err(|e| ConformanceError::Read {
            path: file.clone(),
            source: e,
        })?;
        let suites: Vec<SuiteSpec> =
            serde_saphyr::from_multiple(&text).map_err(|e| ConformanceError::Parse {
                path: file.clone(),
                message: e.to_string(),
            })?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for suite in &suites {
            convert_suite(&root, &name, suite, now, &mut out)?;
        }
    }
    Ok(out)
}

/// The result of [`convert`].
#[derive(Clone, Debug, Default)]
pub struct Conversion {
    pub suites: Vec<ConvertedSuite>,
    pub not_converted: Vec<NotConverted>,
}

impl Conversion {
    /// The scenarios, in the order of the files and suites.
    pub fn scenarios(&self) -> Vec<Scenario> {
        self.suites.iter().map(|s| s.scenario.clone()).collect()
    }

    /// How many cases were converted.
    pub fn converted_cases(&self) -> usize {
        self.suites.iter().map(|s| s.cases.len()).sum()
    }
}

/// One scenario made of (some of) the cases of one suite.
#[derive(Clone, Debug)]
pub struct ConvertedSuite {
    /// The suite's file name (`authz.yaml`).
    pub file: String,
    /// The suite's `suite:` name.
    pub suite: String,
    /// The port the cases of this scenario arrived on in the suite; `${PORT}` stands for it.
    pub suite_port: u16,
    pub scenario: Scenario,
    /// One per request of [`Self::scenario`], in the same order.
    pub cases: Vec<ConvertedCase>,
    /// Port numbers left literal in the policies because they denote another port than the
    /// listener. `${PORT}` must be none of them.
    pub literal_ports: BTreeSet<u16>,
    /// What differs, for every case of the scenario, from the in-process evaluation.
    pub notes: Vec<String>,
}

/// What the suite says about one converted case.
#[derive(Clone, Debug)]
pub struct ConvertedCase {
    /// The suite's expectation, as the engine answers in-process.
    pub expect: Expectation,
    /// The case's source address before the mapping.
    pub suite_source_ip: IpAddr,
    /// The case's `remoteIp` before the mapping.
    pub suite_remote_ip: Option<IpAddr>,
    /// How long after the conversion the case keeps its meaning, when a minted token's
    /// `exp` or `nbf` will cross the clock skew; `None`: forever.
    pub fresh_for: Option<Duration>,
    /// What a client sees differently from the in-process evaluation, if anything.
    pub notes: Vec<String>,
}

/// The part of a case's `expect` that a client can see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    pub status: u16,
    /// The local reply's body, when the suite names it.
    pub body: Option<String>,
    /// Envoy's `response_code_details`, when the suite names it.
    pub details: Option<String>,
}

/// A case that is not part of any scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotConverted {
    pub file: String,
    pub suite: String,
    pub case: String,
    pub reason: String,
}

/// A suite file that cannot be read or does not follow `tests/conformance/README.md`.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    #[error("{path}: {source}", path = path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}", path = path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{file}: {suite}: {message}")]
    Suite {
        file: String,
        suite: String,
        message: String,
    },
}

/// `a.b.c.d` → `127.a.c.d`.
pub fn map_ipv4(ip: Ipv4Addr) -> Ipv4Addr {
    let [a, _, c, d] = ip.octets();
    Ipv4Addr::new(127, a, c, d)
}

/// An address as a case uses it: IPv4 mapped, IPv6 as it is.
pub fn map_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(map_ipv4(v4)),
        v6 => v6,
    }
}

/// A policy's address or range (`10.0.0.0/8`, `10.9.9.9`) mapped; `Err` says why it cannot
/// be. What is not an IPv4 address or range stays as written.
pub fn map_pattern(pattern: &str) -> Result<String, String> {
    let (addr, prefix) = match pattern.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (pattern, None),
    };
    let Ok(IpAddr::V4(v4)) = addr.trim().parse::<IpAddr>() else {
        return Ok(pattern.to_string());
    };
    let Some(prefix) = prefix else {
        return Ok(map_ipv4(v4).to_string());
    };
    let Ok(len) = prefix.trim().parse::<u8>() else {
        return Ok(pattern.to_string());
    };
    let [a, _, c, d] = v4.octets();
    match len {
        0 => Ok("127.0.0.0/8".to_string()),
        8 => Ok(format!("127.{a}.0.0/16")),
        16..=32 => Ok(format!("127.{a}.{c}.{d}/{len}")),
        33.. => Ok(pattern.to_string()),
        _ => Err(format!(
            "the range {pattern} has no counterpart inside 127.0.0.0/8 (only prefix lengths 0, 8 \
             and 16 to 32 are mapped)"
        )),
    }
}

/// Whether `ip` is inside `pattern` (an address or a CIDR range); `None` when `pattern` is
/// neither.
pub fn contains(pattern: &str, ip: IpAddr) -> Option<bool> {
    let (addr, prefix) = match pattern.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (pattern, None),
    };
    let net: IpAddr = addr.trim().parse().ok()?;
    let bits = if net.is_ipv4() { 32 } else { 128 };
    let len = match prefix {
        None => bits,
        Some(p) => p.trim().parse::<u32>().ok()?,
    };
    if len > bits {
        return None;
    }
    // Both as 128-bit numbers, an IPv4 address in the top 32 bits.
    let (net, ip) = match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (
            u128::from(u32::from(n)) << 96,
            u128::from(u32::from(i)) << 96,
        ),
        (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i)),
        _ => return Some(false),
    };
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    Some(net & mask == ip & mask)
}

// --- The suite format (tests/conformance/README.md) ---

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SuiteSpec {
    suite: String,
    workload: WorkloadSpec,
    #[serde(default)]
    policies: Vec<String>,
    #[serde(default)]
    inline: Option<String>,
    #[serde(default)]
    path_normalization: Option<String>,
    cases: Vec<CaseSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSpec {
    name: String,
    #[serde(default)]
    request: RequestSpec,
    expect: ExpectSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RequestSpec {
    method: Option<String>,
    path: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    source_ip: Option<String>,
    remote_ip: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    token: Option<String>,
    mint: Option<MintSpec>,
    token_header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MintSpec {
    #[serde(default)]
    claims: Map<String, Value>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    header: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExpectSpec {
    status: u16,
    body: Option<String>,
    details: Option<String>,
    principal: Option<String>,
    /// Headers after authentication: a client does not see them, the upstream does.
    #[serde(default, rename = "headers")]
    _headers: Option<IgnoredAny>,
    dry_run: Option<IgnoredAny>,
}

fn suite_files(dir: &Path) -> Result<Vec<PathBuf>, ConformanceError> {
    let read = |e| ConformanceError::Read {
        path: dir.to_path_buf(),
        source: e,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The files of `path` as meshguard's loader picks them (a directory: its policy files,
/// sorted, descending into subdirectories).
fn policy_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if !std::fs::metadata(path)?.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut children = Vec::new();
    for entry in std::fs::read_dir(path)? {
        children.push(entry?.path());
    }
    children.sort();
    for child in children {
        let name = child
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ty = EntryType::of(std::fs::metadata(&child).ok().as_ref());
        if let EntryRule::Read | EntryRule::Descend = entry_rule(&name, ty) {
            policy_files(&child, out)?;
        }
    }
    Ok(())
}

/// The suite's policy files, then its inline YAML, as one multi-document stream.
fn suite_policies(root: &Path, suite: &SuiteSpec) -> Result<String, ConformanceError> {
    let mut files = Vec::new();
    for p in &suite.policies {
        let path = root.join(p);
        policy_files(&path, &mut files).map_err(|e| ConformanceError::Read { path, source: e })?;
    }
    let mut parts = Vec::new();
    for f in files {
        parts.push(
            std::fs::read_to_string(&f)
                .map_err(|e| ConformanceError::Read { path: f, source: e })?,
        );
    }
    parts.extend(suite.inline.clone());
    let mut text = String::new();
    for part in parts {
        if !text.is_empty() {
            text.push_str("---\n");
        }
        text.push_str(&part);
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }
    Ok(text)
}

fn convert_suite(
    root: &Path,
    file: &str,
    suite: &SuiteSpec,
    now: i64,
    out: &mut Conversion,
) -> Result<(), ConformanceError> {
    let suite_error = |message: String| ConformanceError::Suite {
        file: file.to_string(),
        suite: suite.suite.clone(),
        message,
    };
    let policies = suite_policies(root, suite)?;
    let path_normalization = match suite.path_normalization.as_deref() {
        None => PathNormalization::Base,
        Some(s) => PathNormalization::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| suite_error(format!("unknown pathNormalization {s:?}")))?,
    };
    let trusted_proxies = u32::from(suite.cases.iter().any(|c| c.request.remote_ip.is_some()));
    let mesh = MeshOptions {
        path_normalization,
        trusted_proxies,
        ..MeshOptions::default()
    };

    // The cases grouped by the port they arrive on, in order of first appearance.
    let mut groups: Vec<(u16, Vec<&CaseSpec>)> = Vec::new();
    for case in &suite.cases {
        let port = case.request.port.unwrap_or(SUITE_PORT);
        match groups.iter_mut().find(|(p, _)| *p == port) {
            Some((_, cases)) => cases.push(case),
            None => groups.push((port, vec![case])),
        }
    }

    let base = format!("conformance {file}: {}", suite.suite);
    for (i, (port, cases)) in groups.into_iter().enumerate() {
        let not_converted = |case: &CaseSpec, reason: String| NotConverted {
            file: file.to_string(),
            suite: suite.suite.clone(),
            case: case.name.clone(),
            reason,
        };
        let rewritten = match rewrite_policies(&policies, port) {
            Ok(r) => r,
            Err(RewriteError::Yaml(message)) => {
                return Err(suite_error(format!("the policies do not parse: {message}")));
            }
            Err(RewriteError::Unmappable(reason)) => {
                out.not_converted
                    .extend(cases.iter().map(|c| not_converted(c, reason.clone())));
                continue;
            }
        };
        let mut requests = Vec::new();
        let mut converted = Vec::new();
        for case in cases {
            match convert_case(case, &rewritten, trusted_proxies, now) {
                Ok((request, cc)) => {
                    requests.push(request);
                    converted.push(cc);
                }
                Err(reason) => out.not_converted.push(not_converted(case, reason)),
            }
        }
        if requests.is_empty() {
            continue;
        }
        let mut notes = Vec::new();
        if trusted_proxies > 0 {
            notes.push(
                "one trusted proxy: remote.ip is the last x-forwarded-for element, or the peer"
                    .to_string(),
            );
        }
        if rewritten
            .ips
            .iter()
            .any(|r| r.attribute == Attribute::Destination)
        {
            notes.push(
                "destination.ip is the proxy's own address over sockets (127.0.0.1 or \
                 127.0.0.2), never absent; the mapped ranges hold neither, as the absent \
                 address was in none"
                    .to_string(),
            );
        }
        for uri in &rewritten.jwks_uris {
            notes.push(format!(
                "jwksUri {uri} is fetched for real: the cases assume the fetch fails, as it does \
                 without access to that host"
            ));
        }
        let name = if i == 0 {
            base.clone()
        } else {
            format!("{base} (listener port {port})")
        };
        out.suites.push(ConvertedSuite {
            file: file.to_string(),
            suite: suite.suite.clone(),
            suite_port: port,
            scenario: Scenario {
                name,
                seed: None,
                workload: suite.workload.clone(),
                mesh: mesh.clone(),
                policies: rewritten.text.clone(),
                requests,
            },
            cases: converted,
            literal_ports: rewritten.literal_ports.clone(),
            notes,
        });
    }
    Ok(())
}

fn convert_case(
    case: &CaseSpec,
    rewritten: &Rewritten,
    trusted_proxies: u32,
    now: i64,
) -> Result<(Request, ConvertedCase), String> {
    let r = &case.request;
    let source: IpAddr = match r.source_ip.as_deref() {
        None => IpAddr::V4(SUITE_SOURCE_IP),
        Some(s) => s
            .parse()
            .map_err(|_| format!("sourceIp {s:?} is not an IP address"))?,
    };
    let IpAddr::V4(source_v4) = source else {
        return Err(format!(
            "the source {source} is IPv6: a loopback client connects from 127.0.0.0/8"
        ));
    };
    let mapped_source = map_ipv4(source_v4);
    if mapped_source.octets()[1..] == [0, 0, 0] || mapped_source.octets()[1..] == [255; 3] {
        return Err(format!(
            "the source {source} maps to {mapped_source}, which a client cannot bind"
        ));
    }
    let remote: Option<IpAddr> = match r.remote_ip.as_deref() {
        None => None,
        Some(s) => Some(
            s.parse()
                .map_err(|_| format!("remoteIp {s:?} is not an IP address"))?,
        ),
    };
    let mapped_remote = remote.map(map_ip);
    let effective_remote = remote.unwrap_or(source);
    let mapped_effective_remote = mapped_remote.unwrap_or(IpAddr::V4(mapped_source));
    for rule in &rewritten.ips {
        let (before, after) = match rule.attribute {
            Attribute::Source => (source, IpAddr::V4(mapped_source)),
            Attribute::Remote => (effective_remote, mapped_effective_remote),
            Attribute::Destination => continue,
        };
        if contains(&rule.original, before) != contains(&rule.mapped, after) {
            return Err(format!(
                "mapping {before} to {after} and {} to {} changes whether the {} address is \
                 inside",
                rule.original,
                rule.mapped,
                rule.attribute.name()
            ));
        }
    }

    let mut headers = r.headers.clone();
    let (token, fresh_for) = match (&r.token, &r.mint) {
        (Some(t), None) => (Some(named_token(t)), None),
        (None, Some(m)) => {
            let (t, fresh) = mint(m, now)?;
            (Some(t), fresh)
        }
        (None, None) => (None, None),
        (Some(_), Some(_)) => return Err("both token and mint are given".into()),
    };
    if let Some(t) = token {
        match r.token_header.as_deref() {
            None => headers.push(("authorization".into(), format!("Bearer {t}"))),
            Some(h) => headers.push((h.to_string(), t)),
        }
    }
    let has_xff = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"));
    match mapped_remote {
        Some(ip) => headers.push(("x-forwarded-for".into(), ip.to_string())),
        // In-process, remote.ip is the source unless remoteIp is given: with a trusted
        // proxy, the case's own x-forwarded-for must not change that.
        None if trusted_proxies > 0 && has_xff => {
            headers.push(("x-forwarded-for".into(), mapped_source.to_string()))
        }
        None => {}
    }

    let method = r.method.clone().unwrap_or_else(|| "GET".into());
    let mut notes = Vec::new();
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        notes.push(format!(
            "over HTTP/1.1, meshguard and Envoy refuse the method {method:?} with 400 before \
             any policy; {} is the engine's answer",
            case.expect.status
        ));
    }
    if case.expect.principal.is_some() {
        notes.push("the principal is not visible to a client".into());
    }
    if case.expect.dry_run.is_some() {
        notes.push("dry-run results are not visible to a client; the status is".into());
    }
    let request = Request {
        name: case.name.clone(),
        method,
        target: r.path.clone().unwrap_or_else(|| "/".into()),
        host: Some(r.host.clone().unwrap_or_else(|| SUITE_HOST.into())),
        headers,
        source_ip: mapped_source,
        body: String::new(),
        protocol: Protocol::Http1,
    };
    let converted = ConvertedCase {
        expect: Expectation {
            status: case.expect.status,
            body: case.expect.body.clone(),
            details: case.expect.details.clone(),
        },
        suite_source_ip: source,
        suite_remote_ip: remote,
        fresh_for,
        notes,
    };
    Ok((request, converted))
}

/// `demo` and `groups` are the walkthrough's tokens; anything else is the token itself.
fn named_token(name: &str) -> String {
    match name {
        "demo" => tokens::demo().to_string(),
        "groups" => tokens::groups().to_string(),
        raw => raw.to_string(),
    }
}

/// A token minted as the conformance runner mints it, and how long its times keep their
/// meaning.
fn mint(m: &MintSpec, now: i64) -> Result<(String, Option<Duration>), String> {
    let alg_name = m.alg.as_deref().unwrap_or("RS256");
    let alg = Algorithm::from_name(alg_name)
        .filter(|a| a.as_str().starts_with("RS") || a.as_str().starts_with("PS"))
        .ok_or_else(|| format!("alg {alg_name:?} cannot be signed with the demo RSA key"))?;
    let mut claims = Map::new();
    for (k, v) in &m.claims {
        let v = match v {
            Value::String(s)
                if matches!(k.as_str(), "iat" | "nbf" | "exp")
                    && (s.starts_with('+') || s.starts_with('-')) =>
            {
                let delta: i64 = s
                    .parse()
                    .map_err(|_| format!("claim {k}: {s:?} is not a relative time"))?;
                Value::from(now + delta)
            }
            v => v.clone(),
        };
        claims.insert(k.clone(), v);
    }
    let mut header = Map::new();
    header.insert("typ".into(), "JWT".into());
    for (k, v) in &m.header {
        header.insert(k.clone(), v.clone());
    }
    let token = tokens::mint_with(alg, &claims, &header);

    // When does the answer change? An accepted exp stops being accepted once it is more than
    // the skew in the past; a refused nbf becomes accepted once it is less than the skew ahead.
    let exp = match claims.get("exp") {
        None => Some(now + MINTED_LIFETIME_SECS),
        Some(v) => v.as_f64().map(|f| f.floor() as i64),
    };
    let mut fresh: Option<i64> = None;
    if let Some(exp) = exp
        && exp + CLOCK_SKEW_SECS > now
    {
        fresh = Some(exp + CLOCK_SKEW_SECS - now);
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_f64).map(|f| f as i64)
        && nbf - CLOCK_SKEW_SECS > now
    {
        let d = nbf - CLOCK_SKEW_SECS - now;
        fresh = Some(fresh.map_or(d, |f| f.min(d)));
    }
    Ok((token, fresh.map(|s| Duration::from_secs(s.max(0) as u64))))
}

// --- Rewriting the policies ---

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attribute {
    Source,
    Remote,
    Destination,
}

impl Attribute {
    fn name(self) -> &'static str {
        match self {
            Attribute::Source => "source",
            Attribute::Remote => "remote",
            Attribute::Destination => "destination",
        }
    }
}

/// One address or range of the policies, before and after the mapping.
#[derive(Debug)]
struct IpRule {
    attribute: Attribute,
    original: String,
    mapped: String,
}

#[derive(Debug, Default)]
struct Rewritten {
    text: String,
    ips: Vec<IpRule>,
    literal_ports: BTreeSet<u16>,
    jwks_uris: Vec<String>,
}

#[derive(Debug)]
enum RewriteError {
    Yaml(String),
    Unmappable(String),
}

/// The policies with addresses mapped and `port` written `${PORT}`. Documents that change are
/// written out again; the others are kept as they are, comments included.
fn rewrite_policies(text: &str, port: u16) -> Result<Rewritten, RewriteError> {
    let mut out = Rewritten::default();
    for chunk in crate::scenario::yaml_documents(text) {
        let mut docs: Vec<Value> =
            serde_saphyr::from_multiple(chunk).map_err(|e| RewriteError::Yaml(e.to_string()))?;
        let mut changed = false;
        for doc in &mut docs {
            changed |= rewrite_document(doc, port, &mut out)?;
        }
        if !changed {
            out.text.push_str(chunk);
            continue;
        }
        if chunk.starts_with("---") {
            out.text.push_str("---\n");
        }
        for (i, doc) in docs.iter().enumerate() {
            if i > 0 {
                out.text.push_str("---\n");
            }
            // Every string quoted: `${PORT}` must stay a string once the port replaces it.
            let options = serde_saphyr::ser_options! { quote_all: true };
            let yaml = serde_saphyr::to_string_with_options(doc, options)
                .map_err(|e| RewriteError::Yaml(e.to_string()))?;
            out.text.push_str(&yaml);
            if !out.text.ends_with('\n') {
                out.text.push('\n');
            }
        }
    }
    for rule in &out.ips {
        if rule.attribute == Attribute::Destination
            && DESTINATIONS
                .iter()
                .any(|d| contains(&rule.mapped, IpAddr::V4(*d)) == Some(true))
        {
            return Err(RewriteError::Unmappable(format!(
                "destination.ip {} maps to {}, which holds a proxy's own address: over sockets \
                 destination.ip is never absent",
                rule.original, rule.mapped
            )));
        }
    }
    Ok(out)
}

fn rewrite_document(doc: &mut Value, port: u16, out: &mut Rewritten) -> Result<bool, RewriteError> {
    match doc.get("kind").and_then(Value::as_str) {
        Some("RequestAuthentication") => {
            let rules = doc.pointer("/spec/jwtRules").and_then(Value::as_array);
            for rule in rules.into_iter().flatten() {
                if let Some(uri) = rule.get("jwksUri").and_then(Value::as_str) {
                    out.jwks_uris.push(uri.to_string());
                }
            }
            return Ok(false);
        }
        Some("AuthorizationPolicy") => {}
        _ => return Ok(false),
    }
    let Some(rules) = doc.pointer_mut("/spec/rules").and_then(Value::as_array_mut) else {
        return Ok(false);
    };
    let mut changed = false;
    for rule in rules {
        for from in list_mut(rule, "from") {
            let Some(source) = from.get_mut("source").and_then(Value::as_object_mut) else {
                continue;
            };
            for (field, attribute) in [
                ("ipBlocks", Attribute::Source),
                ("notIpBlocks", Attribute::Source),
                ("remoteIpBlocks", Attribute::Remote),
                ("notRemoteIpBlocks", Attribute::Remote),
            ] {
                if let Some(values) = source.get_mut(field).and_then(Value::as_array_mut) {
                    for v in values {
                        changed |= rewrite_ip(v, attribute, out)?;
                    }
                }
            }
        }
        for to in list_mut(rule, "to") {
            let Some(operation) = to.get_mut("operation").and_then(Value::as_object_mut) else {
                continue;
            };
            for field in ["ports", "notPorts"] {
                if let Some(values) = operation.get_mut(field).and_then(Value::as_array_mut) {
                    for v in values {
                        changed |= rewrite_port(v, port, out);
                    }
                }
            }
        }
        for condition in list_mut(rule, "when") {
            let key = condition
                .get("key")
                .and_then(Value::as_str)
                .map(str::to_string);
            let attribute = match key.as_deref() {
                Some("source.ip") => Some(Attribute::Source),
                Some("remote.ip") => Some(Attribute::Remote),
                Some("destination.ip") => Some(Attribute::Destination),
                Some("destination.port") => None,
                _ => continue,
            };
            for field in ["values", "notValues"] {
                let Some(values) = condition.get_mut(field).and_then(Value::as_array_mut) else {
                    continue;
                };
                for v in values {
                    changed |= match attribute {
                        Some(a) => rewrite_ip(v, a, out)?,
                        None => rewrite_port(v, port, out),
                    };
                }
            }
        }
    }
    Ok(changed)
}

fn list_mut<'a>(v: &'a mut Value, field: &str) -> impl Iterator<Item = &'a mut Value> {
    v.get_mut(field)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

fn rewrite_ip(
    v: &mut Value,
    attribute: Attribute,
    out: &mut Rewritten,
) -> Result<bool, RewriteError> {
    let Value::String(s) = v else {
        return Ok(false);
    };
    let mapped = map_pattern(s).map_err(RewriteError::Unmappable)?;
    out.ips.push(IpRule {
        attribute,
        original: s.clone(),
        mapped: mapped.clone(),
    });
    if mapped == *s {
        return Ok(false);
    }
    *s = mapped;
    Ok(true)
}

fn rewrite_port(v: &mut Value, port: u16, out: &mut Rewritten) -> bool {
    let n = match v {
        Value::String(s) => s.trim().parse::<u16>().ok(),
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        _ => None,
    };
    match n {
        Some(n) if n == port => {
            *v = Value::String(PORT_PLACEHOLDER.into());
            true
        }
        Some(n) => {
            out.literal_ports.insert(n);
            false
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ranges_map_into_loopback() {
        assert_eq!(
            map_ipv4(Ipv4Addr::new(10, 1, 2, 3)),
            Ipv4Addr::new(127, 10, 2, 3)
        );
        assert_eq!(map_pattern("10.0.0.0/8").unwrap(), "127.10.0.0/16");
        assert_eq!(map_pattern("203.0.113.0/24").unwrap(), "127.203.113.0/24");
        assert_eq!(map_pattern("10.9.9.9").unwrap(), "127.10.9.9");
        assert_eq!(map_pattern("10.9.9.9/32").unwrap(), "127.10.9.9/32");
        assert_eq!(map_pattern("0.0.0.0/0").unwrap(), "127.0.0.0/8");
        assert_eq!(map_pattern("2001:db8::/32").unwrap(), "2001:db8::/32");
        assert_eq!(map_pattern("not an ip").unwrap(), "not an ip");
        assert!(map_pattern("10.0.0.0/12").is_err());
        assert!(map_pattern("10.0.0.0/7").is_err());
    }

    #[test]
    fn containment() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(contains("10.0.0.0/8", ip("10.1.2.3")), Some(true));
        assert_eq!(contains("10.0.0.0/8", ip("11.1.2.3")), Some(false));
        assert_eq!(contains("127.10.0.0/16", ip("127.10.2.3")), Some(true));
        assert_eq!(contains("127.10.0.0/16", ip("127.11.2.3")), Some(false));
        assert_eq!(contains("10.9.9.9", ip("10.9.9.9")), Some(true));
        assert_eq!(contains("10.9.9.9", ip("10.9.9.8")), Some(false));
        assert_eq!(contains("0.0.0.0/0", ip("1.2.3.4")), Some(true));
        assert_eq!(contains("0.0.0.0/0", ip("::1")), Some(false));
        assert_eq!(contains("::/0", ip("::1")), Some(true));
        assert_eq!(contains("2001:db8::/32", ip("2001:db8::1")), Some(true));
        assert_eq!(contains("10.0.0.0/33", ip("10.0.0.1")), None);
        assert_eq!(contains("x", ip("10.0.0.1")), None);
    }

    #[test]
    fn documents_are_cut_at_markers_only() {
        let text = "a: 1\n---\nb: '---'\n--- # c\nc: 1\n----\n";
        assert_eq!(
            crate::scenario::yaml_documents(text),
            vec!["a: 1\n", "---\nb: '---'\n", "--- # c\nc: 1\n----\n"]
        );
    }

    #[test]
    fn a_second_octet_that_matters_is_not_converted() {
        // 10.1.0.0/16 holds 10.1.2.3 but not 10.2.2.3; both map to 127.10.2.3.
        let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
                      metadata: {name: p, namespace: foo}\n\
                      spec: {rules: [{from: [{source: {ipBlocks: [10.1.0.0/16]}}]}]}\n";
        let rewritten = rewrite_policies(policy, SUITE_PORT).unwrap();
        assert!(
            rewritten.text.contains("127.10.0.0/16"),
            "{}",
            rewritten.text
        );
        let case = |ip: &str| CaseSpec {
            name: ip.into(),
            request: RequestSpec {
                source_ip: Some(ip.into()),
                ..RequestSpec::default()
            },
            expect: ExpectSpec {
                status: 200,
                body: None,
                details: None,
                principal: None,
                _headers: None,
                dry_run: None,
            },
        };
        assert!(convert_case(&case("10.1.2.3"), &rewritten, 0, 0).is_ok());
        let err = convert_case(&case("10.2.2.3"), &rewritten, 0, 0).unwrap_err();
        assert!(err.contains("10.1.0.0/16"), "{err}");
    }

    fn convert_text(yaml: &str) -> Conversion {
        let suite: SuiteSpec = serde_saphyr::from_str(yaml).unwrap();
        let mut out = Conversion::default();
        convert_suite(Path::new("."), "t.yaml", &suite, tokens::now(), &mut out).unwrap();
        out
    }

    fn reasons(c: &Conversion) -> Vec<(&str, &str)> {
        c.not_converted
            .iter()
            .map(|n| (n.case.as_str(), n.reason.as_str()))
            .collect()
    }

    #[test]
    fn cases_that_would_change_meaning_are_listed_with_a_reason() {
        let c = convert_text(
            r#"
suite: s
workload: {namespace: foo}
inline: |
  apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: p, namespace: foo}
  spec: {rules: [{from: [{source: {ipBlocks: [10.0.0.0/8]}}]}]}
cases:
- {name: v4, request: {sourceIp: 10.1.2.3}, expect: {status: 200}}
- {name: v6, request: {sourceIp: "2001:db8::1"}, expect: {status: 403}}
- {name: v6 remote, request: {remoteIp: "2001:db8::1"}, expect: {status: 200}}
"#,
        );
        let r = reasons(&c);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].0, "v6");
        assert!(r[0].1.contains("IPv6"), "{}", r[0].1);
        let s = &c.suites[0].scenario;
        assert_eq!(s.mesh.trusted_proxies, 1);
        assert!(s.policies.contains("'127.10.0.0/16'"), "{}", s.policies);
        assert_eq!(
            s.requests[1].headers,
            [("x-forwarded-for".into(), "2001:db8::1".into())]
        );

        // A range with no counterpart: every case of the suite is listed.
        let c = convert_text(
            r#"
suite: s
workload: {namespace: foo}
inline: |
  apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: p, namespace: foo}
  spec: {rules: [{from: [{source: {ipBlocks: [10.0.0.0/12]}}]}]}
cases:
- {name: a, expect: {status: 200}}
- {name: b, request: {port: 9090}, expect: {status: 200}}
"#,
        );
        assert!(c.suites.is_empty());
        let r = reasons(&c);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(
            r.iter().all(|(_, why)| why.contains("10.0.0.0/12")),
            "{r:?}"
        );

        // destination.ip must read as absent: a range holding the listeners cannot.
        let c = convert_text(
            r#"
suite: s
workload: {namespace: foo}
inline: |
  apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: p, namespace: foo}
  spec: {rules: [{when: [{key: destination.ip, values: [0.0.0.0/0]}]}]}
cases:
- {name: a, expect: {status: 403}}
"#,
        );
        assert!(c.suites.is_empty());
        assert!(
            reasons(&c)[0].1.contains("destination.ip"),
            "{:?}",
            reasons(&c)
        );
    }

    #[test]
    fn each_listener_port_gets_its_scenario() {
        let c = convert_text(
            r#"
suite: s
workload: {namespace: foo}
inline: |
  apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: p, namespace: foo}
  spec:
    rules:
    - to: [{operation: {ports: ["9090"], notPorts: [8000]}}]
    - when: [{key: destination.port, notValues: ["8000", "7000"]}]
cases:
- {name: a, expect: {status: 403}}
- {name: b, request: {port: 9090}, expect: {status: 200}}
- {name: c, expect: {status: 403}}
"#,
        );
        assert!(c.not_converted.is_empty(), "{:?}", c.not_converted);
        let names: Vec<&str> = c.suites.iter().map(|s| s.scenario.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "conformance t.yaml: s",
                "conformance t.yaml: s (listener port 9090)"
            ]
        );
        let (on_8000, on_9090) = (&c.suites[0], &c.suites[1]);
        assert_eq!(on_8000.scenario.requests.len(), 2);
        assert_eq!(on_8000.literal_ports, BTreeSet::from([7000, 9090]));
        assert_eq!(on_9090.literal_ports, BTreeSet::from([7000, 8000]));
        let text = on_8000.scenario.policies_for_port(1234);
        assert!(
            text.contains("- '9090'") && text.contains("- '1234'"),
            "{text}"
        );
        assert!(!text.contains("8000"), "{text}");
        let text = on_9090.scenario.policies_for_port(1234);
        assert!(!text.contains("9090") && text.contains("8000"), "{text}");
    }
}
