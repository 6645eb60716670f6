//! Command-line parsing, dispatch and exit codes. One file per command.

mod artifact;
mod audit;
mod author;
mod evidence;
mod jobs;
mod recover;
mod remote;
mod run;
mod serve;
mod setup;
mod token;
mod worker;

use clap::{Parser, Subcommand};
use salve::fault::{Classify, Fault};
use std::path::PathBuf;
use std::process::ExitCode;

const EXIT_CODES: &str = "\
Exit codes:
  0  succeeded (for `audit verify`: the log verifies)
  1  internal error: salve itself failed; see the message
  2  refused: bad input or a load-time check failed; nothing ran
  3  rolled back: the playbook failed and rollback restored the target
  4  ROLLBACK FAILED: the target may be half-changed; a person is needed
  5  the audit log does not verify (`audit verify`)
  6  the playbook's plan failed; nothing was changed (`plan`)
  7  the policy denied the job (`submit`)";

#[derive(Parser)]
#[command(name = "salve", version, about = "Runs signed, sandboxed, audited remediation playbooks", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory with a runner key, a dev author key and a trust store.
    Init(setup::InitArgs),
    /// Edit the trust store.
    Trust {
        #[command(subcommand)]
        command: setup::TrustCommand,
    },
    /// Write a new key pair with one role.
    Keygen(setup::KeygenArgs),
    /// Create a playbook crate that builds.
    New(author::NewArgs),
    /// Build a playbook crate for wasm32-wasip2.
    Build(author::BuildArgs),
    /// Sign a component with its manifest, or co-sign an artifact.
    Sign(author::SignArgs),
    /// Check an artifact as the runner would before running it.
    Verify(artifact::VerifyArgs),
    /// Show what an artifact is, declares, imports, and who signed it.
    Inspect(artifact::InspectArgs),
    /// Run a playbook: apply, verify, and rollback if either fails.
    Run(run::RunArgs),
    /// Ask a playbook what it would change, with every directory read-only.
    Plan(run::RunArgs),
    /// Verify a signed artifact and install it in the data directory, where jobs can name it.
    Install(jobs::InstallArgs),
    /// Submit a job signed by an agent key.
    Submit(jobs::SubmitArgs),
    /// List jobs, or show one in full.
    Jobs {
        #[command(subcommand)]
        command: jobs::JobsCommand,
    },
    /// Approve a job's current plan with an approver key.
    Approve(jobs::ApproveArgs),
    /// Reject a job with an approver key.
    Reject(jobs::RejectArgs),
    /// Plan submitted jobs and run approved ones until stopped; recover jobs a stopped runner left behind.
    Worker(worker::WorkerArgs),
    /// Serve the control plane over HTTP (signed requests only) and run the worker.
    Serve(serve::ServeArgs),
    /// Export a job's evidence bundle, or verify one offline.
    Evidence {
        #[command(subcommand)]
        command: evidence::EvidenceCommand,
    },
    /// Roll back the `salve run` jobs a stopped process left half-done (`salve run` does this first too).
    Recover(recover::RecoverArgs),
    /// Print the JSON Schema of a job request.
    Schema,
    /// Check tokens salve minted for a credential.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// Work with the audit log.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
}

/// Where salve keeps its configuration and state: one data directory, or
/// (for a service) a configuration directory only read and a state
/// directory.
#[derive(clap::Args, Debug, Clone)]
pub struct DataDirArg {
    /// Data directory, for configuration and state [default:
    /// $XDG_DATA_HOME/salve or ~/.local/share/salve]
    #[arg(long, env = "SALVE_DATA_DIR", value_name = "DIR", conflicts_with_all = ["config_dir", "state_dir"])]
    data_dir: Option<PathBuf>,
    /// Configuration, only read: trust store, policy, salve.toml, secrets,
    /// keys [default with --state-dir: /etc/salve]
    #[arg(long, env = "SALVE_CONFIG_DIR", value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// State: job store, audit log, journals, artifacts, cache [default
    /// with --config-dir: /var/lib/salve]
    #[arg(long, env = "SALVE_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

impl DataDirArg {
    /// The data directory's layout. Under systemd (`$CREDENTIALS_DIRECTORY`
    /// set), `secrets.toml` and `runner.key` are taken from its
    /// credentials when there.
    fn layout(&self) -> anyhow::Result<salve::data_dir::DataDir> {
        let absolute = |dir: &std::path::Path, what: &str| {
            std::path::absolute(dir).map_err(|e| refused(anyhow::anyhow!("{what} {}: {e}", dir.display())))
        };
        let layout = match (&self.config_dir, &self.state_dir) {
            (None, None) => salve::data_dir::DataDir::new(self.resolve()?),
            (config, state) => salve::data_dir::DataDir::split(
                absolute(config.as_deref().unwrap_or("/etc/salve".as_ref()), "configuration directory")?,
                absolute(state.as_deref().unwrap_or("/var/lib/salve".as_ref()), "state directory")?,
            ),
        };
        Ok(match std::env::var_os("CREDENTIALS_DIRECTORY").filter(|v| !v.is_empty()) {
            Some(credentials) => layout.with_credentials(credentials),
            None => layout,
        })
    }

    fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.data_dir {
            // Absolute: the compile cache and recovery records need it (a
            // relative one was refused deep in the sandbox's set-up).
            return std::path::absolute(dir)
                .map_err(|e| refused(anyhow::anyhow!("data directory {}: {e}", dir.display())));
        }
        if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(xdg).join("salve"));
        }
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => Ok(PathBuf::from(home).join(".local/share/salve")),
            None => Err(refused(anyhow::anyhow!("no data directory: pass --data-dir or set SALVE_DATA_DIR"))),
        }
    }
}

/// How a command ended, as an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Succeeded = 0,
    RolledBack = 3,
    RollbackFailed = 4,
    AuditInvalid = 5,
    PlanFailed = 6,
    Denied = 7,
}

/// An error with whose fault it is, which gives the exit code. An error
/// without one is salve's own failure (exit 1).
#[derive(Debug)]
struct Classified {
    fault: Fault,
    error: anyhow::Error,
}

impl std::fmt::Display for Classified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&chain_text(&self.error))
    }
}

/// An error and its causes, `: `-separated, leaving out a cause whose text
/// is already said (an error that quotes its source, as `cannot read
/// FILE: {source}` does, would otherwise say it twice).
fn chain_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text == part || text.ends_with(&format!(": {part}")) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

impl std::error::Error for Classified {}

/// The sandbox of a command that runs jobs: compiled code cached in the
/// data directory, `max_instances` at once, and every `exec` command under
/// this binary as its reaper.
fn job_sandbox(layout: &salve::data_dir::DataDir, max_instances: u32) -> anyhow::Result<salve::sandbox::Sandbox> {
    // The running binary itself, even once a package upgrade has replaced
    // the file on disk.
    let reaper = PathBuf::from("/proc/self/exe");
    let config = salve::sandbox::SandboxConfig {
        cache_dir: Some(layout.cache()),
        max_instances,
        reaper: Some(reaper.into()),
        ..salve::sandbox::SandboxConfig::default()
    };
    Ok(salve::sandbox::Sandbox::new(config)?)
}

/// An error with the exit code `fault` gives it.
fn faulted(fault: Fault, error: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(Classified { fault, error })
}

/// Marks an error as a refusal of the input (exit 2).
fn refused(error: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(Classified { fault: Fault::Input, error: error.into() })
}

/// A library error, with the exit code its fault gives it.
fn classified<E: Classify + std::error::Error + Send + Sync + 'static>(error: E) -> anyhow::Error {
    anyhow::Error::new(Classified { fault: error.fault(), error: error.into() })
}

pub fn main() -> ExitCode {
    // salve's exec runs each command under itself as the reaper: before
    // anything else (no runtime, no logging).
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|verb| verb == salve::reaper::VERB) {
        return salve::reaper::main(args.collect());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SALVE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("salve: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        // A file past RLIMIT_FSIZE: by default SIGXFSZ kills the process in
        // the middle of a job. With a handler, the write fails with EFBIG,
        // the audit log refuses every call after it, and the job stops
        // closed (its rollback is the next start's, `salve recover`).
        // A handler, not SIG_IGN: commands `exec` runs get the default.
        let file_too_large = tokio::signal::unix::SignalKind::from_raw(rustix::process::Signal::XFSZ.as_raw());
        if let Err(e) = tokio::signal::unix::signal(file_too_large) {
            tracing::warn!("cannot handle SIGXFSZ ({e}); a file past RLIMIT_FSIZE will stop salve");
        }
        match cli.command {
            Command::Init(args) => setup::init(args),
            Command::Keygen(args) => setup::keygen(args),
            Command::Trust { command } => setup::trust(command),
            Command::New(args) => author::new(args),
            Command::Build(args) => author::build(args),
            Command::Sign(args) => author::sign(args),
            Command::Verify(args) => artifact::verify(args),
            Command::Inspect(args) => artifact::inspect(args),
            Command::Run(args) => run::run(args).await,
            Command::Plan(args) => run::plan(args).await,
            Command::Audit { command } => audit::main(command),
            Command::Evidence { command } => evidence::main(command),
            Command::Install(args) => jobs::install(args),
            Command::Submit(args) => jobs::submit(args),
            Command::Jobs { command } => jobs::jobs(command),
            Command::Approve(args) => jobs::approve(args),
            Command::Reject(args) => jobs::reject(args),
            Command::Worker(args) => worker::worker(args).await,
            Command::Serve(args) => serve::serve(args).await,
            Command::Recover(args) => recover::recover(args).await,
            Command::Schema => jobs::schema(),
            Command::Token { command } => token::main(command),
        }
    });
    match result {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(error) => {
            // Errors quote what they refused, which may have come from outside.
            eprintln!("salve: {}", salve::text::printable(&chain_text(&error)));
            let fault = error.downcast_ref::<Classified>().map_or(Fault::Infrastructure, |c| c.fault);
            ExitCode::from(fault.exit_code())
        }
    }
}
