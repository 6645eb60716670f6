//! Reading a job's outcome back from the audit log, typed: what recovery
//! asks when the runner stopped after recording how a job ended but before
//! the job store heard of it.
//!
//! # Errors
//! Only a log that exists and cannot be read is an error; a line that is
//! not a record (a torn end) is passed over, as the writer drops it.

use super::{Ending, Mode};
use serde::Deserialize;
use std::io::BufRead;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cannot read the audit log {path}: {source}")]
pub struct ReadError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The fields of a record this reader needs; everything else is ignored.
#[derive(Deserialize)]
struct Line {
    job: Option<String>,
    #[serde(flatten)]
    kind: Kind,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum Kind {
    Job {
        mode: Mode,
    },
    Outcome {
        outcome: Ending,
    },
    #[serde(other)]
    Other,
}

/// How job `id` ended after its last `run` or `recover` started, as the
/// audit log at `path` records it: `None` if that run has no outcome yet
/// (or the log does not exist).
pub fn last_run_outcome(path: &Path, id: &str) -> Result<Option<Ending>, ReadError> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ReadError { path: path.into(), source }),
    };
    // Most records are of other jobs: parse only the lines that name this one.
    let needle = format!("\"job\":{}", serde_json::Value::from(id));
    let mut outcome = None;
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|source| ReadError { path: path.into(), source })?;
        if !line.contains(&needle) {
            continue;
        }
        let Ok(record) = serde_json::from_str::<Line>(&line) else { continue };
        if record.job.as_deref() != Some(id) {
            continue;
        }
        match record.kind {
            Kind::Job { mode: Mode::Run | Mode::Recover } => outcome = None,
            Kind::Outcome { outcome: ending } if ending.ends_a_run() => outcome = Some(ending),
            Kind::Job { mode: Mode::Plan } | Kind::Outcome { .. } | Kind::Other => {}
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_outcome_is_the_one_after_the_last_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let lines = [
            r#"{"seq":1,"job":"a","kind":"job","mode":"plan"}"#,
            r#"{"seq":2,"job":"a","kind":"outcome","outcome":"planned"}"#,
            r#"{"seq":3,"job":"a","kind":"job","mode":"run"}"#,
            r#"{"seq":4,"job":"b","kind":"outcome","outcome":"succeeded"}"#,
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        assert_eq!(last_run_outcome(&path, "a").unwrap(), None);
        std::fs::write(
            &path,
            format!("{}\n{}", lines.join("\n"), r#"{"seq":5,"job":"a","kind":"outcome","outcome":"succeeded"}"#),
        )
        .unwrap();
        assert_eq!(last_run_outcome(&path, "a").unwrap(), Some(Ending::Succeeded));
        assert_eq!(last_run_outcome(&dir.path().join("none"), "a").unwrap(), None);
    }

    #[test]
    fn a_record_that_only_mentions_the_job_elsewhere_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        // Job b's record holds `"job":"a"` in a nested value: it is b's.
        let lines = [
            r#"{"seq":1,"job":"a","kind":"job","mode":"run"}"#,
            r#"{"seq":2,"job":"b","kind":"outcome","outcome":"succeeded","detail":{"job":"a"}}"#,
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        assert_eq!(last_run_outcome(&path, "a").unwrap(), None);
    }
}
