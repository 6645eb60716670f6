//! `salve audit verify`.

use super::{DataDirArg, Exit, refused};
use anyhow::Context as _;
use salve::audit::verify::{Anchor, BadRecord, Coverage, Problem, VerifyError, verify_checkpoint, verify_log};
use salve::audit::{HEAD_FILE, checkpoint_note};
use salve::trust::TrustStore;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain of an audit log, its end against its anchor, and
    /// (with a trust store) every seal and the signed checkpoint; name the
    /// first bad record.
    Verify(VerifyArgs),
    /// Print the log's latest signed checkpoint (a C2SP signed note), to
    /// keep where the data directory's owner cannot rewrite it.
    Checkpoint(CheckpointArgs),
}

#[derive(clap::Args, Debug)]
pub struct CheckpointArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// A log file to check [default: the data directory's, whose anchor is then required]
    file: Option<PathBuf>,
    /// The head anchor to check the end of the log against [default:
    /// audit.head beside the log]
    #[arg(long, value_name = "FILE")]
    anchor: Option<PathBuf>,
    /// The trust store whose runner keys check the seals and checkpoints
    /// [default: DATA_DIR/trust.toml, if present]
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    /// A checkpoint saved earlier (`salve audit checkpoint`, or a
    /// witness's copy): the log must extend it (consistency proof)
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    #[command(flatten)]
    data_dir: DataDirArg,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

pub fn main(command: AuditCommand) -> anyhow::Result<super::Exit> {
    match command {
        AuditCommand::Verify(args) => verify(args),
        AuditCommand::Checkpoint(args) => checkpoint(args),
    }
}

fn checkpoint(args: CheckpointArgs) -> anyhow::Result<Exit> {
    let head = args.data_dir.layout()?.audit_head();
    let text = std::fs::read_to_string(&head).with_context(|| format!("cannot read {}", head.display()))?;
    let note = checkpoint_note(&text).ok_or_else(|| {
        refused(anyhow::anyhow!(
            "{} holds no signed checkpoint yet: a runner with a runner key writes one",
            head.display()
        ))
    })?;
    // A note is lines; each is escaped on its own (a parsed note holds no
    // control characters, but this one is read as it lies in the file).
    for line in note.lines() {
        println!("{}", salve::text::printable(line));
    }
    Ok(Exit::Succeeded)
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
    let head_path = match &anchor {
        Anchor::Required(p) | Anchor::IfPresent(p) => Some(p.clone()),
        Anchor::None => None,
    };
    let saved = match &args.checkpoint {
        None => None,
        Some(_) if trust.is_none() => {
            return Err(refused(anyhow::anyhow!(
                "--checkpoint needs a trust store (--trust FILE) to check its signature"
            )));
        }
        Some(file) => Some(std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?),
    };
    let checked = verify_log(&path, anchor, trust.as_ref()).and_then(|report| {
        let Some(trust) = &trust else { return Ok((report, None, None)) };
        let note = head_path.and_then(|p| std::fs::read_to_string(p).ok());
        let note = note.as_deref().and_then(checkpoint_note).ok_or_else(|| VerifyError::Bad {
            path: path.clone(),
            bad: BadRecord { line: 0, problem: Problem::NoCheckpoint },
        })?;
        let latest = verify_checkpoint(&path, note, trust, Coverage::Whole)?;
        let earlier =
            saved.as_deref().map(|note| verify_checkpoint(&path, note, trust, Coverage::Prefix)).transpose()?;
        Ok((report, Some(latest), earlier))
    });
    match checked {
        Ok((report, latest, earlier)) => {
            if args.json {
                let value = serde_json::json!({
                    "ok": true, "records": report.records, "head": report.head,
                    "anchor": report.anchor, "seals": report.seals,
                    "checkpoint": latest.as_ref().map(|c| serde_json::json!({ "size": c.size, "key_id": c.key_id })),
                    "extends": earlier.as_ref().map(|c| serde_json::json!({ "size": c.size, "key_id": c.key_id })),
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
                    None => println!("  no trust store: seals and checkpoints not checked"),
                }
                if let Some(latest) = &latest {
                    println!("  signed checkpoint by runner key {} covers all {} records", latest.key_id, latest.size);
                }
                if let Some(earlier) = &earlier {
                    println!(
                        "  extends the earlier checkpoint of {} records by {} (consistency proof)",
                        earlier.size, earlier.key_id
                    );
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
            let bad = salve::text::printable(&bad.to_string()).into_owned();
            eprintln!("salve: the audit log {} does not verify: {bad}", path.display());
            Ok(Exit::AuditInvalid)
        }
        Err(e @ VerifyError::Io { .. }) => Err(super::refused(e)),
    }
}
