//! Runs `meshguard proxy` for a scenario: the policies written to a directory as they are,
//! the workload and mesh options as flags; stopped when dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::run::{Child, TempDir, wait_for_port, wait_until};
use crate::scenario::{MeshOptions, WorkloadSpec};

/// A running meshguard.
#[derive(Debug)]
pub struct Meshguard {
    child: Child,
    pub listen: SocketAddr,
}

impl Meshguard {
    /// Starts `binary` with `policies` (YAML, `${PORT}` already replaced) in `dir`.
    pub fn start(
        binary: &Path,
        policies: &str,
        workload: &WorkloadSpec,
        mesh: &MeshOptions,
        dir: &TempDir,
        listen: SocketAddr,
        upstream: SocketAddr,
    ) -> Result<Meshguard, String> {
        let policy_dir = dir.path().join("policies");
        std::fs::create_dir_all(&policy_dir).map_err(|e| e.to_string())?;
        std::fs::write(policy_dir.join("policies.yaml"), policies).map_err(|e| e.to_string())?;
        let labels = workload
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let log = dir.path().join("meshguard.log");
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(binary);
        cmd.arg("proxy")
            .arg("--policies")
            .arg(&policy_dir)
            .args(["--namespace", &workload.namespace])
            .args(["--labels", &labels])
            .args(["--listen", &listen.to_string()])
            .args(["--upstream", &format!("http://{upstream}")])
            // Its own loopback address, as the recorders and Envoy's admin: no port the kernel
            // picks there can be a proxy's port.
            .args(["--admin", "127.0.0.4:0"])
            .args(["--root-namespace", &mesh.root_namespace])
            .args(["--path-normalization", mesh.path_normalization.as_str()])
            .args(["--trusted-proxies", &mesh.trusted_proxies.to_string()])
            .args(["--workers", "1", "--no-watch"])
            .stdin(Stdio::null())
            // The access log (stdout) and the messages (stderr) in one file, shown on a failure.
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file);
        let mut child = Child::spawn(cmd, "meshguard", log)?;
        // Its start-up line, printed once the listener is bound: proof that what accepts on
        // `listen` is this meshguard and not a process of another scenario.
        let line = format!("proxy on http://{listen} ");
        wait_until(&mut child, Instant::now() + Duration::from_secs(20), |c| {
            c.log().contains(&line)
        })?;
        wait_for_port(&mut child, listen, Instant::now() + Duration::from_secs(20))?;
        Ok(Meshguard { child, listen })
    }

    /// meshguard's standard error so far.
    pub fn log(&self) -> String {
        self.child.log()
    }
}
