//! Runs scenarios: starts the two proxies and their recording upstreams, sends every request
//! to both, compares, and classifies each difference as explained (a deliberate difference of
//! [`crate::differences`]) or not.
//!
//! Every process a run starts is stopped when its handle is dropped, whatever happens; temporary
//! files live in a directory removed the same way.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meshguard_model::{LoadOptions, PolicySet, load_str};

use crate::client::{self, Answer};
use crate::compare::{Mismatch, Observation, compare};
use crate::differences::{self, Case, KnownDifference};
use crate::envoy::Envoy;
use crate::meshguard::Meshguard;
use crate::scenario::Scenario;
use crate::translate::{self, Endpoints};
use crate::upstream::Recorder;

/// The two binaries under comparison.
#[derive(Clone, Debug)]
pub struct Tools {
    pub meshguard: PathBuf,
    pub envoy: PathBuf,
}

/// The verdict on one request.
#[derive(Clone, Debug)]
pub enum Verdict {
    Same,
    /// Different, as documented.
    Expected(&'static KnownDifference, Vec<Mismatch>),
    /// Different, and nothing explains it: a failure.
    Unexplained(Vec<Mismatch>),
}

/// One request's observations and verdict.
#[derive(Clone, Debug)]
pub struct RequestResult {
    pub index: usize,
    pub meshguard: Observation,
    pub envoy: Observation,
    pub verdict: Verdict,
}

/// One scenario's results.
#[derive(Debug)]
pub struct ScenarioReport {
    pub scenario: Scenario,
    pub port: u16,
    /// The scenario could not be set up (translation, a proxy refusing to start).
    pub setup_error: Option<String>,
    pub results: Vec<RequestResult>,
    pub meshguard_log: String,
    pub envoy_log: String,
}

impl ScenarioReport {
    /// The unexplained results.
    pub fn unexplained(&self) -> impl Iterator<Item = (&RequestResult, &[Mismatch])> {
        self.results.iter().filter_map(|r| match &r.verdict {
            Verdict::Unexplained(m) => Some((r, m.as_slice())),
            _ => None,
        })
    }

    pub fn failed(&self) -> bool {
        self.setup_error.is_some() || self.unexplained().next().is_some()
    }

    /// What a failure prints: each unexplained request with its mismatches, both answers, the
    /// replay YAML, then the tails of both logs.
    pub fn render_failure(&self) -> String {
        let mut out = String::new();
        let s = &self.scenario;
        let seed = s.seed.map(|n| format!(" (seed {n})")).unwrap_or_default();
        let _ = writeln!(out, "=== scenario {:?}{seed}, port {}", s.name, self.port);
        if let Some(e) = &self.setup_error {
            let _ = writeln!(out, "setup failed: {e}");
        }
        for (r, mismatches) in self.unexplained() {
            let req = &s.requests[r.index];
            let _ = writeln!(
                out,
                "--- request {} {:?}: unexplained difference",
                r.index, req.name
            );
            for m in mismatches {
                let _ = writeln!(out, "  {m}");
            }
            let _ = writeln!(out, "  meshguard: {}", summary(&r.meshguard));
            let _ = writeln!(out, "  envoy:     {}", summary(&r.envoy));
            let _ = writeln!(
                out,
                "  replay: save the YAML below as FILE, then\n    MESHGUARD_DIFF_REPLAY=FILE cargo test -p meshguard --test envoy_diff replay -- --nocapture"
            );
            for line in s.replay(r.index).lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
        let _ = writeln!(
            out,
            "--- meshguard log (tail)\n{}",
            tail(&self.meshguard_log, 30)
        );
        let _ = writeln!(out, "--- envoy log (tail)\n{}", tail(&self.envoy_log, 30));
        out
    }
}

fn summary(o: &Observation) -> String {
    let answer = match &o.answer {
        Answer::Response(r) => format!(
            "{} {:?}{}",
            r.status,
            String::from_utf8_lossy(&r.body),
            r.header("www-authenticate")
                .map(|w| format!(" www-authenticate: {w}"))
                .unwrap_or_default()
        ),
        Answer::NoResponse(why) => format!("no response ({why})"),
    };
    match o.upstream.first() {
        Some(u) => {
            let headers: Vec<String> = u
                .headers
                .iter()
                .map(|(n, v)| format!("{n}: {}", crate::compare::elide(v)))
                .collect();
            format!(
                "{answer}; upstream got {} {} {headers:?}",
                u.method, u.target
            )
        }
        None => format!("{answer}; upstream not reached"),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Totals over many scenarios.
#[derive(Debug, Default)]
pub struct Totals {
    pub scenarios: usize,
    pub requests: usize,
    pub same: usize,
    /// Explained differences by [`KnownDifference::id`].
    pub expected: BTreeMap<&'static str, usize>,
    pub unexplained: usize,
    pub setup_failures: usize,
}

impl Totals {
    pub fn add(&mut self, r: &ScenarioReport) {
        self.scenarios += 1;
        if r.setup_error.is_some() {
            self.setup_failures += 1;
        }
        for res in &r.results {
            self.requests += 1;
            match &res.verdict {
                Verdict::Same => self.same += 1,
                Verdict::Expected(d, _) => *self.expected.entry(d.id).or_default() += 1,
                Verdict::Unexplained(_) => self.unexplained += 1,
            }
        }
    }
}

impl Totals {
    /// Adds another run's totals.
    pub fn merge(&mut self, other: Totals) {
        self.scenarios += other.scenarios;
        self.requests += other.requests;
        self.same += other.same;
        self.unexplained += other.unexplained;
        self.setup_failures += other.setup_failures;
        for (id, n) in other.expected {
            *self.expected.entry(id).or_default() += n;
        }
    }
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} scenarios, {} requests: {} same, {} expected differences {:?}, {} unexplained, {} scenarios failed to start",
            self.scenarios,
            self.requests,
            self.same,
            self.expected.values().sum::<usize>(),
            self.expected,
            self.unexplained,
            self.setup_failures
        )
    }
}

/// Runs every scenario, `parallel` at a time, in order of the input.
pub async fn run_all(
    scenarios: Vec<Scenario>,
    tools: &Tools,
    parallel: usize,
) -> Vec<ScenarioReport> {
    let tools = Arc::new(tools.clone());
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut handles = Vec::new();
    for s in scenarios {
        let tools = tools.clone();
        let gate = gate.clone();
        handles.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            run_scenario(s, &tools).await
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        match h.await {
            Ok(r) => out.push(r),
            Err(e) => panic!("a scenario task panicked: {e}"),
        }
    }
    out
}

/// Runs one scenario.
pub async fn run_scenario(scenario: Scenario, tools: &Tools) -> ScenarioReport {
    let mut report = ScenarioReport {
        scenario,
        port: 0,
        setup_error: None,
        results: Vec::new(),
        meshguard_log: String::new(),
        envoy_log: String::new(),
    };
    let (mg_up, envoy_up) = match (Recorder::start().await, Recorder::start().await) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            report.setup_error = Some(format!("recording upstream: {e}"));
            return report;
        }
    };
    let started = {
        let scenario = report.scenario.clone();
        let tools = tools.clone();
        let (mg_addr, envoy_addr) = (mg_up.addr(), envoy_up.addr());
        tokio::task::spawn_blocking(move || start_both(&scenario, &tools, mg_addr, envoy_addr))
            .await
            .unwrap_or_else(|e| Err(format!("set-up task: {e}")))
    };
    let (dir, mg, envoy, lease) = match started {
        Ok(s) => s,
        Err(e) => {
            report.setup_error = Some(e);
            return report;
        }
    };
    let port = lease.0;
    report.port = port;
    let policies = load_str(
        Path::new("policies.yaml"),
        &report.scenario.policies_for_port(port),
        &LoadOptions {
            default_namespace: report.scenario.workload.namespace.clone(),
        },
    )
    .unwrap_or_else(|_| PolicySet::default());
    for (index, template) in report.scenario.requests.iter().enumerate() {
        let mut req = template.clone();
        if let Some(h) = &mut req.host {
            *h = h.replace(crate::scenario::PORT_PLACEHOLDER, &port.to_string());
        }
        mg_up.take();
        envoy_up.take();
        let m_answer = client::send(mg.listen, &req).await;
        let m = Observation {
            answer: m_answer,
            upstream: mg_up.take(),
        };
        let e_answer = client::send(envoy.listen, &req).await;
        let e = Observation {
            answer: e_answer,
            upstream: envoy_up.take(),
        };
        let mismatches = compare(&req, &m, &e);
        let verdict = if mismatches.is_empty() {
            Verdict::Same
        } else {
            let case = Case {
                policies: &policies,
                request: &req,
                meshguard: &m,
                envoy: &e,
                mismatches: &mismatches,
            };
            match differences::explain(&case) {
                Some(d) => Verdict::Expected(d, mismatches),
                None => Verdict::Unexplained(mismatches),
            }
        };
        report.results.push(RequestResult {
            index,
            meshguard: m,
            envoy: e,
            verdict,
        });
    }
    report.meshguard_log = mg.log();
    report.envoy_log = envoy.log();
    drop((mg, envoy, dir, lease));
    report
}

/// The smallest case that still shows an unexplained difference: `scenario` cut down to
/// request `index`, then, one at a time, without each policy document and without each of the
/// request's header lines, keeping every removal after which the difference remains. About
/// one run (two proxies started) per document and header line.
pub async fn minimize(scenario: &Scenario, index: usize, tools: &Tools) -> Scenario {
    let mut best = scenario.clone();
    best.requests = scenario.requests.get(index).cloned().into_iter().collect();
    if best.requests.is_empty() {
        return best;
    }
    let still_differs = |candidate: Scenario| async move {
        let report = run_scenario(candidate, tools).await;
        report.setup_error.is_none() && report.unexplained().next().is_some()
    };
    // Each piece keeps its own `---` line, so any of them can go and the rest still reads.
    let mut docs: Vec<String> = crate::scenario::yaml_documents(&best.policies)
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut i = 0;
    while i < docs.len() {
        let mut fewer = docs.clone();
        fewer.remove(i);
        let mut candidate = best.clone();
        candidate.policies = fewer.concat();
        if still_differs(candidate.clone()).await {
            docs = fewer;
            best = candidate;
        } else {
            i += 1;
        }
    }
    let mut h = 0;
    while h < best.requests[0].headers.len() {
        let mut candidate = best.clone();
        candidate.requests[0].headers.remove(h);
        if still_differs(candidate.clone()).await {
            best = candidate;
        } else {
            h += 1;
        }
    }
    best
}

type Started = (TempDir, Meshguard, Envoy, PortLease);

/// Reserves a port free on both 127.0.0.1 and 127.0.0.2 and starts both proxies on it; tries
/// again with another port if one of them loses the port to someone else.
fn start_both(
    scenario: &Scenario,
    tools: &Tools,
    mg_upstream: SocketAddr,
    envoy_upstream: SocketAddr,
) -> Result<Started, String> {
    let mut last = String::new();
    for _ in 0..3 {
        let lease = reserve_port().map_err(|e| format!("no free port: {e}"))?;
        let port = lease.0;
        let dir = TempDir::new().map_err(|e| format!("temporary directory: {e}"))?;
        let policies = scenario.policies_for_port(port);
        let envoy_listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), port);
        let mg_listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let bootstrap = translate::bootstrap(
            &policies,
            &scenario.workload,
            &scenario.mesh,
            &Endpoints {
                listen: envoy_listen,
                upstream: envoy_upstream,
            },
        )
        .map_err(|e| format!("translation: {e}"))?;
        let envoy = match Envoy::start(&tools.envoy, &bootstrap, &dir, envoy_listen) {
            Ok(e) => e,
            Err(e) => {
                last = format!("envoy: {e}");
                continue;
            }
        };
        let mg = match Meshguard::start(
            &tools.meshguard,
            &policies,
            &scenario.workload,
            &scenario.mesh,
            &dir,
            mg_listen,
            mg_upstream,
        ) {
            Ok(m) => m,
            Err(e) => {
                last = format!("meshguard: {e}");
                continue;
            }
        };
        return Ok((dir, mg, envoy, lease));
    }
    Err(last)
}

/// A port free on both 127.0.0.1 and 127.0.0.2 that no other scenario of this process holds:
/// the kernel may hand the same free port to two scenarios that ask at nearly the same time.
/// Released when the [`PortLease`] is dropped.
fn reserve_port() -> std::io::Result<PortLease> {
    for _ in 0..50 {
        let a = StdListener::bind("127.0.0.1:0")?;
        let port = a.local_addr()?.port();
        if StdListener::bind(("127.0.0.2", port)).is_ok()
            && LEASED.lock().is_ok_and(|mut l| l.insert(port))
        {
            return Ok(PortLease(port));
        }
    }
    Err(std::io::Error::other(
        "no port free on both 127.0.0.1 and 127.0.0.2",
    ))
}

static LEASED: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A port this process's scenarios will not be given again until dropped.
#[derive(Debug)]
struct PortLease(u16);

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Ok(mut l) = LEASED.lock() {
            l.remove(&self.0);
        }
    }
}

/// A child process killed and reaped when dropped, with the file its output goes to.
#[derive(Debug)]
pub struct Child {
    child: std::process::Child,
    name: &'static str,
    log: PathBuf,
}

impl Child {
    pub fn spawn(mut cmd: Command, name: &'static str, log: PathBuf) -> Result<Child, String> {
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        Ok(Child { child, name, log })
    }

    /// The log file's content so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `Some(status)` once the process has exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `addr` accepts a connection, failing early if `child` exits, and at `deadline`.
pub fn wait_for_port(child: &mut Child, addr: SocketAddr, deadline: Instant) -> Result<(), String> {
    loop {
        if let Some(status) = child.exited() {
            return Err(format!(
                "{} exited ({status}) before listening on {addr}:\n{}",
                child.name,
                tail(&child.log(), 40)
            ));
        }
        if StdStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not listen on {addr} in time:\n{}",
                child.name,
                tail(&child.log(), 40)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `ready(child)`, failing early if `child` exits, and at `deadline`.
pub fn wait_until(
    child: &mut Child,
    deadline: Instant,
    ready: impl Fn(&Child) -> bool,
) -> Result<(), String> {
    loop {
        if ready(child) {
            return Ok(());
        }
        if let Some(status) = child.exited() {
            return Err(format!(
                "{} exited ({status}) before it was ready:\n{}",
                child.name,
                tail(&child.log(), 40)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} was not ready in time:\n{}",
                child.name,
                tail(&child.log(), 40)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A fresh directory under the system's temporary directory, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> std::io::Result<TempDir> {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "meshguard-envoy-diff-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
