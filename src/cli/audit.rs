//! `salve audit verify`.

use super::{DataDirArg, Exit};
use salve::audit::HEAD_FILE;
use salve::audit::verify::{Anchor, VerifyError, verify_log};
use salve::trust::TrustStore;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain of an audit log, its end against its anchor, and
    /// every seal; name the first bad record.
    Verify(VerifyArgs),
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// A log file to check [default: the data directory's, whose anchor is then required]
    file: Option<PathBuf>,
    /// The head anchor to check the end of the log against [default:
    /// audit.head beside the log]
    #[arg(long, value_name = "FILE")]
    anchor: Option<PathBuf>,
    /// The trust store whose runner keys check the seals [default:
    /// DATA_DIR/trust.toml, if present]
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    #[command(flatten)]
    data_dir: DataDirArg,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

pub fn main(command: AuditCommand) -> anyhow::Result<super::Exit> {
    match command {
        AuditCommand::Verify(args) => verify(args),
    }
}

fn verify(args: VerifyArgs) -> anyhow::Result<Exit> {
    let data_dir = match &args.file {
        Some(_) => None,
        None => Some(args.data_dir.layout()?),
    };
    let path = match (&args.file, &data_dir) {
        (Some(file), _) => file.clone(),
        (None, Some(dir)) => dir.audit_log(),
        (None, None) => unreachable!("a data directory when no file is given"),
    };
    let anchor = match (&args.anchor, &data_dir) {
        (Some(file), _) => Anchor::Required(file.clone()),
        (None, Some(dir)) => Anchor::Required(dir.audit_head()),
        (None, None) => Anchor::beside(&path),
    };
    let trust_path = args.trust.clone().or_else(|| {
        let dir = data_dir.clone().or_else(|| args.data_dir.layout().ok())?;
        Some(dir.trust()).filter(|p| p.exists())
    });
    let trust = trust_path.as_deref().map(TrustStore::load).transpose().map_err(super::refused)?;
    match verify_log(&path, anchor, trust.as_ref()) {
        Ok(report) => {
            if args.json {
                let value = serde_json::json!({
                    "ok": true, "records": report.records, "head": report.head,
                    "anchor": report.anchor, "seals": report.seals,
                });
                println!("{value}");
            } else {
                println!("{}: {} records, chain intact", path.display(), report.records);
                println!("  head: record {} ({})", report.head.seq, report.head.hash);
                match report.anchor {
                    Some(anchor) => println!("  end checked against {HEAD_FILE} (record {})", anchor.seq),
                    None => println!("  no {HEAD_FILE}: records cut off the end at a record boundary would go unseen"),
                }
                match trust {
                    Some(_) => {
                        println!("  {} job seal(s) verified against the trust store's runner keys", report.seals)
                    }
                    None => println!("  no trust store: seals not checked"),
                }
            }
            Ok(Exit::Succeeded)
        }
        Err(VerifyError::Bad { path, bad }) => {
            if args.json {
                let value = serde_json::json!({
                    "ok": false, "file": path, "line": bad.line, "problem": bad.problem.to_string(),
                });
                println!("{value}");
            }
            eprintln!("salve: the audit log {} does not verify: {bad}", path.display());
            Ok(Exit::AuditInvalid)
        }
        Err(e @ VerifyError::Io { .. }) => Err(super::refused(e)),
    }
}
