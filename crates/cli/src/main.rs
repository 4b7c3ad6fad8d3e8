//! The `meshguard` command: Istio RequestAuthentication and AuthorizationPolicy outside Istio.
//!
//! This file owns the command-line surface and the exit codes; each subcommand lives in its own
//! module and calls the library crates. Nothing here decides a request.
#![forbid(unsafe_code)]

mod check;
mod proxy;
mod token;
mod validate;

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: the proxy allocates and frees small objects on every
/// request, and after a burst of connections glibc kept the freed memory resident, about 7 MB
/// more with 1,000 idle connections (BENCHMARKS.md). Built without transparent huge pages
/// (`no_thp`): with them, mimalloc's first arena alone added 7 MB to an idle proxy.
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

#[derive(Debug, Subcommand)]
enum Command {
    /// Enforce the policies on live HTTP traffic in front of an upstream.
    Proxy(proxy::ProxyArgs),
    /// Decide one request offline: status, body, matched policy, JWT outcome and why.
    Check(check::CheckArgs),
    /// Check policy files: Istio's validation errors, plus warnings for policies that will surprise.
    Validate(validate::ValidateArgs),
    /// Serve the built-in echo upstream (an httpbin work-alike) on its own.
    Echo(proxy::EchoArgs),
    /// Make keys, sign, decode and verify JWTs (replaces Istio's gen-jwt.py and jwt.io).
    Token(token::TokenArgs),
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
    // Diagnostics go to stderr; stdout is for command output and access-log lines.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a terminal: logs collected from a pipe stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let result = match cli.command {
        Command::Proxy(args) => proxy::run(args),
        Command::Check(args) => check::run(args),
        Command::Echo(args) => proxy::run_echo(args),
        Command::Validate(args) => validate::run(args),
        Command::Token(args) => token::run(args),
    };
    match result {
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
