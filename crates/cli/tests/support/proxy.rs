//! A running `meshguard proxy` on `127.0.0.1:0`: started from a command the test builds, its
//! listen and admin URLs read from the start-up line on stderr, its stderr (and, when asked,
//! its stdout) collected line by line, killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::fs::root;

/// The binary under test, run from the repository root (so that `examples/...` resolves):
/// the one cargo built for the tests, or `$MESHGUARD_TEST_BIN` when set (a release build, for
/// the measurements of docs/operations.md).
pub fn meshguard() -> Command {
    let bin = std::env::var_os("MESHGUARD_TEST_BIN")
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_meshguard").into());
    let mut c = Command::new(bin);
    c.current_dir(root());
    c
}

/// `meshguard proxy --listen 127.0.0.1:0 --admin 127.0.0.1:0`; the test adds the rest.
pub fn proxy_command() -> Command {
    let mut c = meshguard();
    c.arg("proxy")
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    c
}

/// `meshguard proxy` in front of `http://{upstream}` with the walkthrough's step 2 (requests
/// without a token pass) for namespace `foo`, labels `app=httpbin`, plus `extra`.
pub fn step2_in_front_of(upstream: &str, extra: &[&str], stdout: Stdout) -> Proxy {
    spawn(
        proxy_command()
            .args(["--policies", "examples/step2-request-authentication"])
            .args(["--namespace", "foo", "--labels", "app=httpbin"])
            .args(["--upstream", &format!("http://{upstream}")])
            .args(extra),
        stdout,
    )
}

/// What becomes of the proxy's stdout (the access log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stdout {
    /// `/dev/null`.
    Null,
    /// Read line by line into [`Proxy::stdout_lines`].
    Collect,
    /// A pipe nobody reads, kept open in [`Proxy::stdout_pipe`].
    Unread,
}

/// A running `meshguard proxy`; killed on drop.
pub struct Proxy {
    pub child: Child,
    /// The proxy listener as the start-up line prints it: `http://127.0.0.1:PORT` (with
    /// `--tls-dir`: `https://` or `https+http://`, by the port's mode).
    pub base: String,
    /// The admin listener: `http://127.0.0.1:PORT`.
    pub admin: String,
    /// The stdout pipe, open and unread, with [`Stdout::Unread`].
    pub stdout_pipe: Option<ChildStdout>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Whether the proxy was still running, and what it said: a failed test shows both.
        let exited = self.child.try_wait().ok().flatten();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let stderr = self.stderr.lock().map(|l| l.join("\n")).unwrap_or_default();
            eprintln!(
                "--- the proxy's stderr ({}):\n{stderr}\n---",
                match exited {
                    Some(status) => format!("it had exited: {status}"),
                    None => "it was still running".to_string(),
                }
            );
        }
    }
}

/// Spawns `cmd` (stderr piped, stdout as `stdout` says) and reads stderr until the start-up
/// line `meshguard: proxy on http://ADDR -> UPSTREAM, admin on http://ADMIN`; stderr goes on
/// being collected by a thread. Panics, with the stderr so far, when the proxy exits first.
pub fn spawn(cmd: &mut Command, stdout: Stdout) -> Proxy {
    cmd.stderr(Stdio::piped()).stdout(match stdout {
        Stdout::Null => Stdio::null(),
        Stdout::Collect | Stdout::Unread => Stdio::piped(),
    });
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let (base, admin) = loop {
        assert!(Instant::now() < deadline, "proxy did not start");
        let line = lines
            .next()
            .unwrap_or_else(|| {
                panic!(
                    "proxy exited before listening:\n{}",
                    stderr.lock().unwrap().join("\n")
                )
            })
            .unwrap();
        stderr.lock().unwrap().push(line.clone());
        if let Some(rest) = line.strip_prefix("meshguard: proxy on ") {
            let base = rest.split(' ').next().unwrap().to_string();
            let admin = rest.rsplit(' ').next().unwrap().to_string();
            break (base, admin);
        }
    };
    collect(lines, stderr.clone());
    let collected = Arc::new(Mutex::new(Vec::new()));
    let mut stdout_pipe = None;
    match stdout {
        Stdout::Null => {}
        Stdout::Collect => collect(
            BufReader::new(child.stdout.take().unwrap()).lines(),
            collected.clone(),
        ),
        Stdout::Unread => stdout_pipe = child.stdout.take(),
    }
    Proxy {
        child,
        base,
        admin,
        stdout_pipe,
        stdout: collected,
        stderr,
    }
}

fn collect<R: BufRead + Send + 'static>(lines: std::io::Lines<R>, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            into.lock().unwrap().push(line);
        }
    });
}

impl Proxy {
    /// `127.0.0.1:PORT` of the proxy listener (`base` without its scheme: `http`, `https` or
    /// `https+http`).
    pub fn addr(&self) -> &str {
        self.base.split_once("://").map_or(&*self.base, |(_, a)| a)
    }

    /// `127.0.0.1:PORT` of the admin listener.
    pub fn admin_addr(&self) -> &str {
        self.admin.trim_start_matches("http://")
    }

    /// The proxy listener's socket address.
    pub fn socket(&self) -> SocketAddr {
        self.addr().parse().unwrap()
    }

    /// The admin listener's socket address.
    pub fn admin_socket(&self) -> SocketAddr {
        self.admin_addr().parse().unwrap()
    }

    /// The admin `/metrics` page (Prometheus text).
    pub fn metrics(&self) -> String {
        super::http::exchange(
            self.admin_addr(),
            "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        )
        .body
    }

    /// The value of one series of `/metrics`, named as the page writes it (`name` or
    /// `name{label="value",...}`); `None` when the page has no such series.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.trim().parse().expect("a sample value"))
    }

    /// Sends the proxy the signal `sig` (`"HUP"`, `"TERM"`, ...) with `kill`; panics when
    /// `kill` fails.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig}: {status}");
    }

    /// The stdout lines so far ([`Stdout::Collect`]).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// The stdout so far, each line ending in `\n`.
    pub fn stdout_text(&self) -> String {
        self.stdout_lines()
            .iter()
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// The stderr lines so far, the start-up line and those before it included.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// The stderr so far, each line ending in `\n`.
    pub fn stderr_text(&self) -> String {
        self.stderr_lines()
            .iter()
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// Waits (20 s at most) until a stderr line contains `needle`; returns it.
    pub fn wait_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self.stderr_lines().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no stderr line with {needle:?}:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first access-log line (stdout, as JSON) that satisfies `pred`, waiting 10 s at
    /// most for it.
    pub fn log_where(&self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for line in self.stdout_lines() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && pred(&v)
                {
                    return v;
                }
            }
            assert!(Instant::now() < deadline, "no such access log line");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The resident memory of process `pid` (VmRSS), in KiB; panics when it cannot be read, so a
/// memory check never passes on a zero.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}"))
}
