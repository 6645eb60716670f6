//! `salve evidence export` and `verify`.

use super::jobs::TrustArg;
use super::{DataDirArg, Exit, classified, refused};
use anyhow::Context as _;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum EvidenceCommand {
    /// Write one file with everything an auditor needs about one job: the
    /// signed request, the artifact's manifest and signatures, the keys,
    /// the policy texts and decisions, the plans, the votes, lease ids,
    /// the job's audit records with inclusion proofs against a signed
    /// checkpoint, and the outcome.
    Export(ExportArgs),
    /// Check a bundle offline, with no data directory: every signature,
    /// every proof, the approvals bound to the plan that ran, and each
    /// policy decision recomputed. Exit 5, naming the check, if any fails.
    Verify(VerifyArgs),
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
        EvidenceCommand::Export(args) => export(args),
        EvidenceCommand::Verify(args) => verify(args),
    }
}

fn export(args: ExportArgs) -> anyhow::Result<Exit> {
    let control = super::jobs::open(&args.trust, &args.data_dir)?;
    let bundle = salve::evidence::export(&control, &args.job, args.with_artifact).map_err(classified)?;
    // Whole or not at all: written beside, then renamed.
    let staged = args.output.with_extension(format!("partial.{}", std::process::id()));
    std::fs::write(&staged, &bundle)
        .and_then(|()| std::fs::File::open(&staged)?.sync_all())
        .and_then(|()| std::fs::rename(&staged, &args.output))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&staged);
        })
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!("{}: evidence of job {} ({} bytes)", args.output.display(), args.job, bundle.len());
    Ok(Exit::Succeeded)
}

fn verify(args: VerifyArgs) -> anyhow::Result<Exit> {
    let pinned = match &args.runner_key {
        Some(path) => Some(salve::keys::PublicKeyFile::load(path).map_err(refused)?),
        None => None,
    };
    let metadata = std::fs::metadata(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))
        .map_err(refused)?;
    if metadata.len() > salve::evidence::MAX_BUNDLE as u64 {
        eprintln!(
            "salve: {}: the bundle check failed: it is {} bytes, more than a bundle may be",
            args.file.display(),
            metadata.len()
        );
        return Ok(Exit::AuditInvalid);
    }
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display())).map_err(refused)?;
    let verified = match salve::evidence::verify(&bytes, pinned.as_ref()) {
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
