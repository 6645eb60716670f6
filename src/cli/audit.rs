//! `salve audit verify`.

use super::{DataDir, Exit};
use salve::audit::verify::{Anchor, VerifyError, verify_log};
use salve::audit::{HEAD_FILE, LOG_FILE};
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain of an audit log; name the first bad record.
    Verify(VerifyArgs),
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The log to check [default: the data directory's audit.jsonl]
    file: Option<PathBuf>,
    /// The head anchor to check the end of the log against [default:
    /// audit.head beside the log, if present]
    #[arg(long, value_name = "FILE")]
    anchor: Option<PathBuf>,
    #[command(flatten)]
    data_dir: DataDir,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

pub fn main(command: AuditCommand) -> anyhow::Result<Exit> {
    match command {
        AuditCommand::Verify(args) => verify(args),
    }
}

fn verify(args: VerifyArgs) -> anyhow::Result<Exit> {
    let path = match &args.file {
        Some(file) => file.clone(),
        None => args.data_dir.resolve()?.join(LOG_FILE),
    };
    let anchor = match &args.anchor {
        Some(file) => Anchor::File(file.clone()),
        None => Anchor::Beside,
    };
    match verify_log(&path, anchor) {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": true, "records": report.records, "head": report.head, "anchor": report.anchor })
                );
            } else {
                println!("{}: {} records, chain intact", path.display(), report.records);
                println!("  head: record {} ({})", report.head.seq, report.head.hash);
                match report.anchor {
                    Some(anchor) => println!("  end checked against {HEAD_FILE} (record {})", anchor.seq),
                    None => println!("  no {HEAD_FILE}: records cut off the end at a record boundary would go unseen"),
                }
            }
            Ok(Exit::Succeeded)
        }
        Err(VerifyError::Bad { path, bad }) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "file": path, "line": bad.line, "problem": bad.problem.to_string() })
                );
            }
            eprintln!("salve: the audit log {} does not verify: {bad}", path.display());
            Ok(Exit::AuditInvalid)
        }
        Err(e @ VerifyError::Io { .. }) => Err(super::refused(e)),
    }
}
