//! `salve evidence export` and `verify`.

use super::jobs::TrustArg;
use super::{DataDirArg, Exit, classified, refused};
use anyhow::Context as _;
use salve::evidence::{Refused, Verified};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand, Debug)]
pub enum EvidenceCommand {
    /// Write one file with everything an auditor needs about one job: the
    /// signed request, the artifact's manifest and signatures, the keys,
    /// the policy texts and decisions, the plans, the votes, lease ids,
    /// the job's audit records with inclusion proofs against a signed
    /// checkpoint, and the outcome.
    Export(Box<ExportArgs>),
    /// Check a bundle offline, with no data directory: every signature,
    /// every proof, the approvals bound to the plan that ran, and each
    /// policy decision recomputed. Exit 5, naming the check, if any fails.
    Verify(VerifyArgs),
    /// Write a bundle as one self-contained HTML page for people (inline
    /// CSS, no script, nothing fetched): the request and its evidence, each
    /// decision and why, the plans, the votes, a timeline of every host
    /// call with denials marked, the outcome, and whether it verified.
    Report(ReportArgs),
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The bundle
    file: PathBuf,
    /// Where to write the page
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// The runner's public key (runner.pub), as for `evidence verify`
    #[arg(long, value_name = "KEY.pub")]
    runner_key: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The job
    job: String,
    /// Where to write the bundle (a tar archive)
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Include the artifact itself, so that its digest is checked too
    #[arg(long)]
    with_artifact: bool,
    #[command(flatten)]
    trust: TrustArg,
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    server: super::remote::ServerArg,
    /// The key that signs the request, with --server (agent, approver or auditor)
    #[arg(long, value_name = "KEY")]
    key: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The bundle
    file: PathBuf,
    /// The runner's public key (runner.pub): the checkpoint must be signed
    /// by it. Without it, the key the bundle names is used, and said so.
    #[arg(long, value_name = "KEY.pub")]
    runner_key: Option<PathBuf>,
}

pub fn main(command: EvidenceCommand) -> anyhow::Result<Exit> {
    match command {
        EvidenceCommand::Export(args) => export(*args),
        EvidenceCommand::Verify(args) => verify(args),
        EvidenceCommand::Report(args) => report(args),
    }
}

/// Reads and verifies a bundle: `Err` only when it cannot be read.
fn check(file: &Path, runner_key: Option<&Path>) -> anyhow::Result<Result<Verified, Refused>> {
    let pinned = match runner_key {
        Some(path) => Some(salve::keys::PublicKeyFile::load(path).map_err(refused)?),
        None => None,
    };
    let metadata =
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display())).map_err(refused)?;
    if metadata.len() > salve::evidence::MAX_BUNDLE as u64 {
        let reason = format!("it is {} bytes, more than a bundle may be", metadata.len());
        return Ok(Err(Refused { check: salve::evidence::Check::Bundle, reason }));
    }
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display())).map_err(refused)?;
    Ok(salve::evidence::verify(&bytes, pinned.as_ref()))
}

/// Writes `bytes` to `path` whole or not at all: beside it, then renamed.
fn write_whole(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let staged = path.with_extension(format!("partial.{}", std::process::id()));
    std::fs::write(&staged, bytes)
        .and_then(|()| std::fs::File::open(&staged)?.sync_all())
        .and_then(|()| std::fs::rename(&staged, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&staged);
        })
        .with_context(|| format!("cannot write {}", path.display()))
}

fn report(args: ReportArgs) -> anyhow::Result<Exit> {
    let checked = check(&args.file, args.runner_key.as_deref())?;
    let html = salve::evidence::report::render(&args.file.display().to_string(), &checked);
    write_whole(&args.output, html.as_bytes())?;
    match checked {
        Ok(verified) => {
            println!("{}: the evidence of job {}, which verifies", args.output.display(), verified.job);
            Ok(Exit::Succeeded)
        }
        Err(refused) => {
            eprintln!(
                "salve: {}: {} ({} says so and shows nothing else)",
                args.file.display(),
                salve::text::printable(&refused.to_string()),
                args.output.display()
            );
            Ok(Exit::AuditInvalid)
        }
    }
}

fn export(args: ExportArgs) -> anyhow::Result<Exit> {
    let bundle = match super::remote::Remote::of(&args.server)? {
        Some(server) => {
            let id = url::form_urlencoded::byte_serialize(args.job.as_bytes()).collect::<String>();
            let path = format!("/v1/jobs/{id}/evidence?artifact={}", args.with_artifact);
            server.get(&path, args.key.as_deref())?
        }
        None => {
            let control = super::jobs::open(&args.trust, &args.data_dir)?;
            salve::evidence::export(&control, &args.job, args.with_artifact).map_err(classified)?
        }
    };
    write_whole(&args.output, &bundle)?;
    println!("{}: evidence of job {} ({} bytes)", args.output.display(), args.job, bundle.len());
    Ok(Exit::Succeeded)
}

fn verify(args: VerifyArgs) -> anyhow::Result<Exit> {
    let verified = match check(&args.file, args.runner_key.as_deref())? {
        Ok(verified) => verified,
        Err(refused) => {
            eprintln!("salve: {}: {}", args.file.display(), salve::text::printable(&refused.to_string()));
            return Ok(Exit::AuditInvalid);
        }
    };
    println!("{}: evidence of job {} verifies", args.file.display(), verified.job);
    println!(
        "  checkpoint: {} records, signed by runner key {}{}",
        verified.checkpoint_size,
        verified.runner_key,
        if verified.runner_key_pinned { " (the key given)" } else { "" }
    );
    println!("  {} records of the job, each proven included, none left out", verified.records.len());
    println!(
        "  {} seal(s), {} decision(s) recomputed, {} vote(s) checked",
        verified.seals, verified.decisions, verified.votes
    );
    println!(
        "  artifact {}: signed by {}{}",
        verified.artifact.digest,
        verified.artifact.signatures.iter().map(|s| s.key_id.as_str()).collect::<Vec<_>>().join(", "),
        if verified.artifact_checked { "; its bytes checked" } else { "" }
    );
    println!("  its records end with the job {}", salve::text::printable(&verified.state));
    for caveat in &verified.caveats {
        println!("  note: {}", salve::text::printable(caveat));
    }
    Ok(Exit::Succeeded)
}
