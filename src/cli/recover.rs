//! `salve run` jobs that a stopped process left behind: each run writes
//! what its rollback needs (`journal/JOB.run.json` and a copy of the
//! artifact, `journal/JOB.wasm`) before `apply` starts, and removes them
//! once the job's outcome is recorded. The next `salve run` in the data
//! directory, or `salve recover`, rolls back every job whose outcome never
//! reached the audit log, from its durable journal.

use super::artifact::load_trust;
use super::{DataDirArg, Exit};
use salve::artifact::VersionFloor;
use salve::audit::Phase;
use salve::audit::outcome::last_run_outcome;
use salve::control::{Checks, Floor, SignedPlaybook, admit};
use salve::data_dir::DataDir;
use salve::grant::{Grant, GrantSpec};
use salve::keys::PrivateKey;
use salve::run::{Cause, CauseKind, JobContext, Outcome, Runner, Untracked};
use salve::sandbox::{Catalog, Playbook};
use salve::text::printable;
use salve::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What rolling back a `salve run` job needs, kept until its outcome is
/// recorded. With a runner key, tagged with it (over the record and the
/// artifact's digest), so that someone who can write the data directory
/// cannot have a rollback run with a grant or artifact of their choosing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    pub job: String,
    pub environment: String,
    pub target: String,
    pub parameters: Vec<(String, String)>,
    /// The artifact's name as given (for messages); its bytes are copied.
    pub artifact: String,
    /// The grant file's text as it was read.
    pub grant: String,
    /// The trust store given with --trust, if any.
    pub trust: Option<PathBuf>,
    /// Run with --dangerous-unsigned.
    pub unsigned: bool,
    /// When the job started: its artifact is checked as of then.
    pub started_at: Timestamp,
    /// SHA-256 of the artifact copied next to the record.
    pub artifact_sha256: String,
    /// The runner key's tag over the rest (none without a runner key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// The extension of a record or artifact copy being written: renamed into
/// place once durable, so a file under it never started a job.
const STAGED: &str = "partial";

/// What a record's tag is keyed for.
const TAG_PURPOSE: &str = "salve run record";

impl RunRecord {
    fn path(layout: &DataDir, job: &str) -> PathBuf {
        layout.journal().join(format!("{job}.run.json"))
    }

    fn artifact_path(layout: &DataDir, job: &str) -> PathBuf {
        layout.journal().join(format!("{job}.wasm"))
    }

    /// The tag the runner `key` puts on the record.
    fn tag(&self, key: &PrivateKey) -> anyhow::Result<String> {
        let untagged = RunRecord { mac: None, ..self.clone() };
        Ok(key.mac(TAG_PURPOSE, &serde_json::to_vec(&untagged)?))
    }

    /// Writes the record (tagged with `key`, if any) and the artifact
    /// durably, before `apply` starts.
    pub fn write(mut self, layout: &DataDir, artifact: &[u8], key: Option<&PrivateKey>) -> anyhow::Result<()> {
        self.artifact_sha256 = salve::artifact::digest(artifact);
        self.mac = key.map(|key| self.tag(key)).transpose()?;
        let write = |path: &Path, bytes: &[u8]| -> std::io::Result<()> {
            let staged = path.with_extension(STAGED);
            let written = std::fs::File::create(&staged).and_then(|mut file| {
                file.write_all(bytes)?;
                file.sync_all()
            });
            if let Err(e) = written.and_then(|()| std::fs::rename(&staged, path)) {
                let _ = std::fs::remove_file(&staged);
                return Err(e);
            }
            Ok(())
        };
        let record = serde_json::to_vec(&self)?;
        write(&RunRecord::artifact_path(layout, &self.job), artifact)
            .and_then(|()| write(&RunRecord::path(layout, &self.job), &record))
            .and_then(|()| std::fs::File::open(layout.journal())?.sync_all())
            .map_err(|e| {
                // Nothing ran yet: leave nothing behind (a full disk, a
                // file size limit).
                RunRecord::remove(layout, &self.job);
                anyhow::anyhow!(
                    "cannot record what the job's rollback needs in {}: {e}; nothing was changed",
                    layout.journal().display()
                )
            })
    }

    /// Removes the record: the job's outcome is recorded.
    pub fn remove(layout: &DataDir, job: &str) {
        for path in [RunRecord::path(layout, job), RunRecord::artifact_path(layout, job)] {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), "could not remove: {e}");
            }
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct RecoverArgs {
    /// The key that seals each job in the audit log [default:
    /// DATA_DIR/keys/runner.key, if present]
    #[arg(long, value_name = "KEY")]
    runner_key: Option<PathBuf>,
    #[command(flatten)]
    data_dir: DataDirArg,
}

/// `salve recover`: rolls back the `salve run` jobs a stopped process left.
pub async fn recover(args: RecoverArgs) -> anyhow::Result<Exit> {
    let layout = args.data_dir.layout()?;
    let key = super::run::runner_key(&layout, args.runner_key.as_deref())?;
    let audit = super::run::open_audit(layout.root(), key.as_ref())?;
    let sandbox = super::job_sandbox(&layout, 8)?;
    let runner = super::run::runner(sandbox, audit, &layout, key.clone())?;
    let recovered = recover_runs(&runner, key.as_deref(), &layout, &args.data_dir).await?;
    runner.audit().sync_blocking()?;
    if recovered.is_empty() {
        println!("no salve run job was left behind");
    }
    let failed = recovered.iter().any(|(_, outcome)| matches!(outcome, Outcome::RollbackFailed { .. }));
    Ok(if failed { Exit::RollbackFailed } else { Exit::Succeeded })
}

/// Rolls back every `salve run` job in `layout` whose outcome the audit log
/// does not hold, printing each; removes the records of jobs that ended.
pub async fn recover_runs(
    runner: &Runner,
    key: Option<&PrivateKey>,
    layout: &DataDir,
    data_dir: &DataDirArg,
) -> anyhow::Result<Vec<(String, Outcome)>> {
    let mut recovered = Vec::new();
    let Ok(entries) = std::fs::read_dir(layout.journal()) else { return Ok(recovered) };
    let paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    // Debris of a process stopped while it staged a record: its job never
    // started (the audit log's lock keeps another run from staging now).
    for staged in paths.iter().filter(|p| p.extension().is_some_and(|e| e == STAGED)) {
        if let Err(e) = std::fs::remove_file(staged) {
            tracing::warn!(path = %staged.display(), "could not remove: {e}");
        }
    }
    let mut records: Vec<PathBuf> =
        paths.into_iter().filter(|p| p.to_str().is_some_and(|s| s.ends_with(".run.json"))).collect();
    records.sort();
    for path in records {
        let record: RunRecord =
            match std::fs::read(&path).map_err(anyhow::Error::from).and_then(|b| Ok(serde_json::from_slice(&b)?)) {
                Ok(record) => record,
                Err(e) => {
                    return Err(super::refused(anyhow::anyhow!(
                        "{} is unreadable ({e}); a salve run job may be half-done: restore its target by hand \
                     from the journal next to it, then remove the file",
                        path.display()
                    )));
                }
            };
        check(&record, &path, key)?;
        if last_run_outcome(runner.audit().path(), &record.job)?.is_some() {
            RunRecord::remove(layout, &record.job);
            continue;
        }
        tracing::warn!(job = %record.job, "rolling back a salve run job a stopped process left behind");
        let cause = Cause::new(
            Phase::Apply,
            CauseKind::Interrupted,
            "the salve run process stopped before the job ended; rolled back at the next start",
        );
        let job = JobContext {
            id: record.job.clone(),
            environment: record.environment.clone(),
            target: record.target.clone(),
            parameters: record.parameters.clone(),
        };
        let outcome = match load(runner, layout, data_dir, &record) {
            Ok((playbook, grant)) => runner.recover(&playbook, &grant, &job, cause, &Untracked).await?.outcome,
            Err(why) => {
                let outcome = Outcome::RollbackFailed {
                    cause,
                    rollback_cause: Cause::new(
                        Phase::Rollback,
                        CauseKind::Instantiate,
                        format!("cannot load the job's playbook and grant to roll back: {why:#}"),
                    ),
                };
                runner.record_outcome(&record.job, &outcome).await?;
                outcome
            }
        };
        if matches!(outcome, Outcome::RollbackFailed { .. }) {
            // The artifact copy stays with the journal, for the person who
            // must finish the job; the outcome is recorded, so it is not
            // tried again.
            let _ = std::fs::remove_file(RunRecord::path(layout, &record.job));
        } else {
            RunRecord::remove(layout, &record.job);
        }
        println!("recovered salve run job {} ({}): {}", record.job, printable(&record.artifact), outcome.name());
        if let Some(cause) = outcome.rollback_cause() {
            println!("  rollback cause: {}", printable(&cause.to_string()));
        }
        recovered.push((record.job, outcome));
    }
    Ok(recovered)
}

/// A record is used only if it is what this runner wrote: its name, its
/// job id, its tag and its artifact's digest agree.
fn check(record: &RunRecord, path: &Path, key: Option<&PrivateKey>) -> anyhow::Result<()> {
    let refuse = |why: String| {
        super::refused(anyhow::anyhow!(
            "{} is not what salve run wrote ({why}); nothing was rolled back from it. Investigate, then remove it",
            path.display()
        ))
    };
    if uuid::Uuid::parse_str(&record.job).is_err()
        || path.file_name().and_then(|n| n.to_str()) != Some(&format!("{}.run.json", record.job))
    {
        return Err(refuse("its job id is not a salve run job id or not its file name".into()));
    }
    if record.unsigned && record.environment != super::run::UNSIGNED_ENVIRONMENT {
        return Err(refuse(format!("an unsigned component in environment {:?}", record.environment)));
    }
    if let Some(key) = key {
        let tagged = record.mac.as_deref().is_some_and(|mac| record.tag(key).is_ok_and(|tag| tag == mac));
        if !tagged {
            return Err(refuse(format!("it does not carry runner key {}'s tag", key.id)));
        }
    }
    Ok(())
}

/// The job's playbook and grant, checked as they were when it started.
fn load(
    runner: &Runner,
    layout: &DataDir,
    data_dir: &DataDirArg,
    record: &RunRecord,
) -> anyhow::Result<(Arc<Playbook>, Grant)> {
    let bytes = std::fs::read(RunRecord::artifact_path(layout, &record.job))?;
    if salve::artifact::digest(&bytes) != record.artifact_sha256 {
        anyhow::bail!("the artifact copy's digest is not the one the record names: it was changed");
    }
    let spec = GrantSpec::parse(&record.grant)?;
    if record.unsigned {
        let playbook = runner.sandbox().load_unverified(&record.artifact, &bytes)?;
        return Ok((Arc::new(playbook), Grant::open_unbounded(&spec)?));
    }
    let trust = load_trust(record.trust.as_deref(), data_dir)?;
    let catalog = Catalog::new(runner.sandbox().clone());
    let playbook = SignedPlaybook::load(
        &catalog,
        &record.artifact,
        &bytes,
        &trust,
        &record.environment,
        record.started_at.system(),
    )?;
    // Restoring the target: a floor raised since must not stop it.
    let checks = Checks { floor: Floor::Skip, scopes: None, mutations_at_most: None };
    let floor = VersionFloor::new(layout.root());
    let admitted = admit(playbook, &record.parameters, &spec, &record.environment, &floor, checks)?;
    Ok((admitted.playbook.shared(), admitted.grant))
}
