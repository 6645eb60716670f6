//! `salve audit verify`, `checkpoint`, `show` and `tail`.

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
    /// Show records, one line each (or JSON Lines), filtered by job, time,
    /// phase or refusal. Checks nothing: `audit verify` does.
    Show(ShowArgs),
    /// Show the last records; with --follow, keep showing new ones.
    Tail(TailArgs),
}

#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// Only this job's records
    #[arg(long, value_name = "ID")]
    job: Option<String>,
    /// Only records at or after this time (RFC 3339, with a zone)
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only records at or before this time (RFC 3339, with a zone)
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only refusals: denied host calls, refused jobs, suppressed refusals
    #[arg(long)]
    denied: bool,
    /// Only records of this phase
    #[arg(long, value_name = "PHASE", value_parser = ["plan", "apply", "verify", "rollback"])]
    phase: Option<String>,
    /// Print the records as they are (JSON Lines)
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data_dir: DataDirArg,
}

#[derive(clap::Args, Debug)]
pub struct TailArgs {
    /// How many of the last records to show
    #[arg(short = 'n', long, default_value_t = 20)]
    lines: usize,
    /// Keep showing records as they are appended, until interrupted
    #[arg(short, long)]
    follow: bool,
    /// Print the records as they are (JSON Lines)
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data_dir: DataDirArg,
}

#[derive(clap::Args, Debug)]
pub struct CheckpointArgs {
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
    /// A checkpoint saved earlier (`salve audit checkpoint`, or a witness
    /// file, whose last one is taken): the log must extend it
    /// (consistency proof)
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
        AuditCommand::Show(args) => show(args),
        AuditCommand::Tail(args) => tail(args),
    }
}

fn time(flag: &str, text: &Option<String>) -> anyhow::Result<Option<salve::time::Timestamp>> {
    text.as_deref()
        .map(|t| {
            salve::time::Timestamp::parse_rfc3339(t)
                .map_err(|e| refused(anyhow::anyhow!("--{flag} {t:?}: {e}; write it like 2026-12-02T10:00:00Z")))
        })
        .transpose()
}

/// Prints `line` (a whole record) as asked: as it is, or told in one line.
fn print_record(line: &str, json: bool) {
    match serde_json::from_str::<serde_json::Value>(line) {
        // As it is, but never raw control characters (JSON escapes them;
        // a line that is not JSON is escaped here).
        Ok(_) if json => println!("{line}"),
        Ok(record) => println!("{}", salve::audit::read::describe(&record)),
        Err(_) => println!("{}", salve::text::printable(&format!("(not a record) {line}"))),
    }
}

fn show(args: ShowArgs) -> anyhow::Result<Exit> {
    let filter = salve::audit::read::Filter {
        job: args.job.clone(),
        since: time("since", &args.since)?,
        until: time("until", &args.until)?,
        denied: args.denied,
        phase: args.phase.clone(),
    };
    let path = args.data_dir.layout()?.audit_log();
    let file = std::fs::File::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = salve::audit::read::Reader::new(filter);
    for line in std::io::BufRead::lines(std::io::BufReader::new(file)) {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        let matches = serde_json::from_str(&line).is_ok_and(|record| reader.matches(&record));
        if matches {
            print_record(&line, args.json);
        }
    }
    Ok(Exit::Succeeded)
}

fn tail(args: TailArgs) -> anyhow::Result<Exit> {
    use std::io::{Read, Seek};
    let path = args.data_dir.layout()?.audit_log();
    let mut file = std::fs::File::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut last = std::collections::VecDeque::with_capacity(args.lines);
    let mut offset = 0u64;
    for line in std::io::BufRead::split(std::io::BufReader::new(&file), b'\n') {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        offset += line.len() as u64 + 1;
        if last.len() == args.lines {
            last.pop_front();
        }
        if args.lines > 0 {
            last.push_back(line);
        }
    }
    for line in &last {
        print_record(&String::from_utf8_lossy(line), args.json);
    }
    if !args.follow {
        return Ok(Exit::Succeeded);
    }
    // A torn last line (a write in progress) waits for the rest of it.
    let mut partial: Vec<u8> = Vec::new();
    loop {
        std::io::Write::flush(&mut std::io::stdout())?;
        std::thread::sleep(std::time::Duration::from_millis(200));
        let len = file.metadata()?.len();
        if len < offset {
            anyhow::bail!("{} got shorter while it was followed: it was cut or replaced", path.display());
        }
        if len == offset {
            continue;
        }
        file.seek(std::io::SeekFrom::Start(offset))?;
        let mut added = Vec::new();
        (&mut file).take(len - offset).read_to_end(&mut added)?;
        offset += added.len() as u64;
        partial.extend_from_slice(&added);
        while let Some(end) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            print_record(&String::from_utf8_lossy(&line[..line.len() - 1]), args.json);
        }
    }
}

fn checkpoint(args: CheckpointArgs) -> anyhow::Result<Exit> {
    if let Some(server) = super::remote::Remote::of(&args.server)? {
        let note = server.get("/v1/audit/checkpoint", args.key.as_deref())?;
        for line in String::from_utf8_lossy(&note).lines() {
            println!("{}", salve::text::printable(line));
        }
        return Ok(Exit::Succeeded);
    }
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

/// The checkpoint in a saved file: a signed note as `audit checkpoint`
/// prints it, or the last of a witness file (JSON Lines of `note`s).
fn saved_note(text: &str) -> Option<String> {
    if !text.starts_with('{') {
        return Some(text.to_string());
    }
    let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
    serde_json::from_str::<serde_json::Value>(last).ok()?["note"].as_str().map(str::to_string)
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
        Some(file) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            Some(saved_note(&text).ok_or_else(|| {
                refused(anyhow::anyhow!(
                    "{} is neither a signed checkpoint nor a witness file with one",
                    file.display()
                ))
            })?)
        }
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
