//! Connecting to the API server: which kubeconfig, and errors that name it.
//!
//! Owns the order in which the client's configuration is found: `--kubeconfig FILE` when
//! given, else the files `$KUBECONFIG` lists, else `~/.kube/config`, else the in-cluster
//! service account (kube's `Config::infer` order, an explicit file first). Does not own what
//! is read with the client.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};

/// A client, and where its configuration came from.
#[derive(Clone)]
pub struct Connection {
    pub client: Client,
    /// The API server's URL.
    pub server: String,
    /// Where the configuration came from, for messages: `--kubeconfig /etc/kube.yaml`,
    /// `$KUBECONFIG /root/.kube/a:/root/.kube/b`, `the in-cluster service account`.
    pub from: String,
}

impl fmt::Debug for Connection {
    // The client's configuration holds credentials: only say where it came from.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

/// Why no client could be made; the message names the configuration and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectError(pub String);

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

/// What is wrong with a kubeconfig, in words (kube's own message names the path in Rust's
/// debug quoting; ours is named by the caller).
fn kubeconfig_problem(e: &KubeconfigError) -> String {
    match e {
        KubeconfigError::ReadConfig(io, _) => format!("cannot read: {io}"),
        other => other.to_string(),
    }
}

/// Where the configuration is looked for, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Lookup {
    /// `--kubeconfig FILE`.
    Flag(PathBuf),
    /// `$KUBECONFIG`: a list of files, merged.
    Env(OsString),
    /// `~/.kube/config`, then the in-cluster service account.
    Infer,
}

fn lookup(flag: Option<&Path>) -> Lookup {
    match (flag, std::env::var_os("KUBECONFIG")) {
        (Some(p), _) => Lookup::Flag(p.to_path_buf()),
        (None, Some(v)) if !v.is_empty() => Lookup::Env(v),
        (None, _) => Lookup::Infer,
    }
}

/// Makes a client from `--kubeconfig FILE` (`kubeconfig`), else `$KUBECONFIG`, else
/// `~/.kube/config`, else the in-cluster service account. Must run inside a tokio runtime.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Connection, ConnectError> {
    let options = KubeConfigOptions::default();
    let (config, from) = match lookup(kubeconfig) {
        Lookup::Flag(path) => {
            let from = format!("--kubeconfig {}", path.display());
            let kc = Kubeconfig::read_from(&path)
                .map_err(|e| ConnectError(format!("{from}: {}", kubeconfig_problem(&e))))?;
            let config = Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| ConnectError(format!("{from}: {}", kubeconfig_problem(&e))))?;
            (config, from)
        }
        Lookup::Env(value) => {
            let from = format!("$KUBECONFIG {}", value.to_string_lossy());
            let kc = Kubeconfig::from_env()
                .map_err(|e| ConnectError(format!("{from}: {}", kubeconfig_problem(&e))))?
                .unwrap_or_default();
            let config = Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| ConnectError(format!("{from}: {}", kubeconfig_problem(&e))))?;
            (config, from)
        }
        Lookup::Infer => match Config::from_kubeconfig(&options).await {
            Ok(config) => (config, "~/.kube/config".to_string()),
            Err(kubeconfig) => match Config::incluster() {
                Ok(config) => (config, "the in-cluster service account".to_string()),
                Err(in_cluster) => {
                    return Err(ConnectError(format!(
                        "no Kubernetes configuration: no --kubeconfig, no $KUBECONFIG, \
                         ~/.kube/config: {}, and not in a cluster: {in_cluster}",
                        kubeconfig_problem(&kubeconfig)
                    )));
                }
            },
        },
    };
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config)
        .map_err(|e| ConnectError(format!("{from}: cannot make a client for {server}: {e}")))?;
    Ok(Connection {
        client,
        server: server.trim_end_matches('/').to_string(),
        from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_kubeconfig_wins_over_the_environment() {
        // (The environment is the process's: only the flag's precedence is checked here.)
        assert_eq!(
            lookup(Some(Path::new("/etc/k.yaml"))),
            Lookup::Flag("/etc/k.yaml".into())
        );
    }
}
