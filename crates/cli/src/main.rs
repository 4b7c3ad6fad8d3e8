//! The `meshguard` command: Istio RequestAuthentication and AuthorizationPolicy outside Istio.
//!
//! This file owns the command-line surface, the exit codes and how output reaches stdout; each
//! subcommand lives in its own module and calls the library crates. Nothing here decides a
//! request.
//!
//! `println!` and `print!` in this crate are the two macros below, not std's: a reader that
//! stops early (`meshguard check ... | head -1`) closes the pipe, and std's macros then panic
//! (an abort, exit 134, in release builds). Ours stop writing quietly and the command ends with
//! the exit code it would have had.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout has failed; later output is dropped.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
/// Set when stdout failed for another reason than a closed pipe (a full disk): exit 1.
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Writes command output to stdout. A closed pipe (`EPIPE`; Rust ignores SIGPIPE) ends the
/// output silently; any other write error is reported once and makes the exit status 1.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            STDOUT_FAILED.store(true, Ordering::Relaxed);
            eprintln!("error: cannot write to stdout: {e}");
        }
    }
}

/// Shadows std's `println!` in every module declared below (see the module docs).
macro_rules! println {
    () => {
        $crate::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Shadows std's `print!` in every module declared below (see the module docs).
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*))
    };
}

mod cert;
mod check;
mod ext_authz;
mod kubernetes;
mod proxy;
mod token;
mod validate;

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: the proxy allocates and frees small objects on every
/// request, and after a burst of connections glibc kept the freed memory resident, about 7 MB
/// more with 1,000 idle connections (BENCHMARKS.md). Built without transparent huge pages
/// (`no_thp`): with them, mimalloc's first arena alone added 7 MB to an idle proxy. mimalloc 2
/// (the `v2` feature), not 3: under 1,000 busy connections it kept about 4 MB less resident,
/// and it runs 60 to 80 fewer instructions per forwarded request (BENCHMARKS.md, "Memory under
/// load").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand, ValueEnum};

/// Enforce Istio RequestAuthentication (JWT) and AuthorizationPolicy on HTTP traffic,
/// answering exactly as an Istio sidecar would.
#[derive(Debug, Parser)]
#[command(name = "meshguard", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Enforce the policies on live HTTP traffic in front of an upstream.
    Proxy(Box<proxy::ProxyArgs>),
    /// Answer Envoy's ext_authz checks (gRPC and HTTP) with meshguard's decisions.
    ExtAuthz(Box<ext_authz::ExtAuthzArgs>),
    /// Decide one request offline: status, body, matched policy, JWT outcome and why.
    Check(check::CheckArgs),
    /// Check policy files: Istio's validation errors, plus warnings for policies that will surprise.
    Validate(validate::ValidateArgs),
    /// Serve the built-in echo upstream (an httpbin work-alike) on its own.
    Echo(proxy::EchoArgs),
    /// Make keys, sign, decode and verify JWTs (replaces Istio's gen-jwt.py and jwt.io).
    Token(token::TokenArgs),
    /// Make a mesh CA and SPIFFE workload certificates in Istio's file layout (for --tls-dir).
    Cert(cert::CertArgs),
}

/// `--output` of the subcommands that report.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Errors that end a command with exit status 1.
#[derive(Debug)]
pub enum CliError {
    /// A flag's value is unusable.
    Usage(String),
    /// The policies could not be loaded or compiled; every problem is listed.
    Policies(meshguard_model::LoadErrors),
    /// A bug or an environment failure.
    Internal(String),
}

fn main() -> ExitCode {
    // clap exits with 2 on a usage error, which would read as "denied": map it to 1.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // Diagnostics go to stderr; stdout is for command output and access-log lines. The proxy
    // logs its start-up and reload summaries, draining and JWKS fetches at INFO (nothing per
    // request: per-request detail is DEBUG); the one-shot commands show warnings only.
    // kube's watcher and client log each failed request in their own words; the Kubernetes
    // source logs every watch error itself (one line naming the watch and the API server's
    // answer), so theirs are left to RUST_LOG.
    let default_filter = match cli.command {
        Command::Proxy(_) | Command::Echo(_) | Command::ExtAuthz(_) => {
            "warn,meshguard=info,kube_runtime::watcher=error,kube_client::client::builder=off"
        }
        _ => "warn,kube_runtime::watcher=error,kube_client::client::builder=off",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        // Colour only for a terminal: logs collected from a pipe stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let result = match cli.command {
        Command::Proxy(args) => proxy::run(*args),
        Command::ExtAuthz(args) => ext_authz::run(*args),
        Command::Check(args) => check::run(args),
        Command::Echo(args) => proxy::run_echo(args),
        Command::Validate(args) => validate::run(args),
        Command::Token(args) => token::run(args),
        Command::Cert(args) => cert::run(args),
    };
    match result {
        Ok(_) if STDOUT_FAILED.load(Ordering::Relaxed) => ExitCode::from(1),
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            match e {
                CliError::Usage(m) => eprintln!("error: {m}"),
                CliError::Policies(errs) => {
                    for e in &errs.0 {
                        eprintln!("error: {e}");
                    }
                    eprintln!(
                        "error: {} problem(s) in the policies; nothing was loaded",
                        errs.0.len()
                    );
                }
                CliError::Internal(m) => eprintln!("error: internal: {m}"),
            }
            ExitCode::from(1)
        }
    }
}
