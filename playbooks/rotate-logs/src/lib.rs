//! rotate-logs: compresses every `*.log` above `max_bytes` in the granted
//! directory into `NAME.1.gz`, shifting older generations (`NAME.2.gz`, ...)
//! and keeping `keep` of them, then truncates the original in place (its
//! inode is kept, so a process that holds it open keeps logging to it).
//!
//! Parameters: `dir` (mount name, optionally with a subdirectory; default
//! `logs`), `max_bytes` (default 1048576), `keep` (1..=99, default 5),
//! `level` (gzip level 0..=9, default 6).
//!
//! Every step is journaled before it is made, so `rollback` restores the
//! directory byte for byte from any point, also after a crash: each undo
//! step checks what is on disk and is skipped when its change never happened.

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use salve_playbook::{Change, Context, Error, Playbook, exists, fs, journal, read_all};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

/// Bytes per `fs.read` / `fs.append` host call.
const CHUNK: u32 = 1 << 20;

struct RotateLogs;

struct Settings {
    dir: String,
    max_bytes: u64,
    keep: u32,
    level: u32,
}

impl Settings {
    fn from(ctx: &Context) -> Result<Self, Error> {
        let settings = Settings {
            dir: ctx.param("dir").unwrap_or("logs").trim_end_matches('/').to_string(),
            max_bytes: ctx.param_or("max_bytes", 1 << 20)?,
            keep: ctx.param_or("keep", 5)?,
            level: ctx.param_or("level", 6)?,
        };
        if !(1..=99).contains(&settings.keep) {
            return Err(Error::Invalid(format!("keep={} is outside 1..=99", settings.keep)));
        }
        if settings.level > 9 {
            return Err(Error::Invalid(format!("level={} is outside 0..=9", settings.level)));
        }
        Ok(settings)
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }

    fn generation(&self, name: &str, n: u32) -> String {
        format!("{}/{name}.{n}.gz", self.dir)
    }

    /// `*.log` files in the directory, sorted, with their sizes.
    fn logs(&self) -> Result<Vec<(String, u64)>, Error> {
        let mut logs = Vec::new();
        for entry in fs::list_dir(&self.dir)? {
            if entry.kind == fs::Kind::File && entry.name.ends_with(".log") {
                let size = fs::stat(&self.path(&entry.name))?.size;
                logs.push((entry.name, size));
            }
        }
        logs.sort();
        Ok(logs)
    }

    fn oversized(&self) -> Result<Vec<(String, u64)>, Error> {
        Ok(self.logs()?.into_iter().filter(|(_, size)| *size > self.max_bytes).collect())
    }
}

/// One undoable step, as recorded in the journal before it is made.
#[derive(Debug, PartialEq)]
enum Step {
    /// The oldest generation was deleted; its bytes are kept here.
    Removed {
        path: String,
        content: Vec<u8>,
    },
    Renamed {
        from: String,
        to: String,
    },
    Created {
        path: String,
    },
    /// `path` held `len` bytes with this digest; they are now in `gz`.
    Truncated {
        path: String,
        gz: String,
        len: u64,
        sha256: [u8; 32],
    },
}

impl Step {
    fn encode(&self) -> Vec<u8> {
        fn put(out: &mut Vec<u8>, bytes: &[u8]) {
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        let mut out = Vec::new();
        match self {
            Step::Removed { path, content } => {
                out.push(1);
                put(&mut out, path.as_bytes());
                put(&mut out, content);
            }
            Step::Renamed { from, to } => {
                out.push(2);
                put(&mut out, from.as_bytes());
                put(&mut out, to.as_bytes());
            }
            Step::Created { path } => {
                out.push(3);
                put(&mut out, path.as_bytes());
            }
            Step::Truncated { path, gz, len, sha256 } => {
                out.push(4);
                put(&mut out, path.as_bytes());
                put(&mut out, gz.as_bytes());
                put(&mut out, &len.to_le_bytes());
                put(&mut out, sha256);
            }
        }
        out
    }

    fn decode(entry: &[u8]) -> Result<Step, Error> {
        let bad = || Error::Invalid("journal entry is not a rotate-logs step".into());
        let (&tag, mut rest) = entry.split_first().ok_or_else(bad)?;
        let mut take = || -> Result<Vec<u8>, Error> {
            let len_bytes: [u8; 8] = rest.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?;
            let len = usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|_| bad())?;
            let bytes = rest.get(8..8 + len).ok_or_else(bad)?.to_vec();
            rest = &rest[8 + len..];
            Ok(bytes)
        };
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).map_err(|_| bad());
        let step = match tag {
            1 => Step::Removed { path: text(take()?)?, content: take()? },
            2 => Step::Renamed { from: text(take()?)?, to: text(take()?)? },
            3 => Step::Created { path: text(take()?)? },
            4 => Step::Truncated {
                path: text(take()?)?,
                gz: text(take()?)?,
                len: u64::from_le_bytes(take()?.try_into().map_err(|_| bad())?),
                sha256: take()?.try_into().map_err(|_| bad())?,
            },
            _ => return Err(bad()),
        };
        Ok(step)
    }

    /// Records the step durably; only then may it be made.
    fn record(&self) -> Result<(), Error> {
        journal::record(&self.encode())
    }

    /// Undoes the step if it was made; does nothing if it was not.
    fn undo(&self) -> Result<(), Error> {
        match self {
            Step::Removed { path, content } => {
                if !exists(path)? {
                    fs::write(path, content)?;
                }
            }
            Step::Renamed { from, to } => {
                if !exists(from)? && exists(to)? {
                    fs::rename(to, from)?;
                }
            }
            Step::Created { path } => {
                if exists(path)? {
                    fs::remove_file(path)?;
                }
            }
            Step::Truncated { path, gz, len, sha256 } => {
                let current = read_all(path, CHUNK)?;
                if begins_with(&current, *len, sha256) {
                    return Ok(());
                }
                let original = gunzip(&read_all(gz, CHUNK)?)
                    .map_err(|e| Error::failed(format!("{gz} does not decompress: {e}")))?;
                if original.len() as u64 != *len || sha(&original) != *sha256 {
                    return Err(Error::failed(format!(
                        "{gz} does not hold the {len} bytes {path} had; not restoring from it"
                    )));
                }
                // Whatever was logged after the truncation is kept after the
                // original content, in place, so the inode stays the same.
                fs::truncate(path, 0)?;
                append_all(path, &original)?;
                append_all(path, &current)?;
            }
        }
        Ok(())
    }
}

/// Whether `content` begins with the `len` bytes whose digest is `sha256`.
fn begins_with(content: &[u8], len: u64, sha256: &[u8; 32]) -> bool {
    usize::try_from(len).is_ok_and(|len| content.len() >= len && sha(&content[..len]) == *sha256)
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn gunzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    GzDecoder::new(bytes).read_to_end(&mut out)?;
    Ok(out)
}

fn append_all(path: &str, bytes: &[u8]) -> Result<(), Error> {
    for chunk in bytes.chunks(CHUNK as usize) {
        fs::append(path, chunk)?;
    }
    Ok(())
}

/// Rotates one log: drop the oldest generation, shift the rest up by one,
/// compress the log into generation 1, truncate the log.
fn rotate(settings: &Settings, name: &str) -> Result<(), Error> {
    let log = settings.path(name);
    let content = read_all(&log, CHUNK)?;

    let oldest = settings.generation(name, settings.keep);
    if exists(&oldest)? {
        let content = read_all(&oldest, CHUNK)?;
        Step::Removed { path: oldest.clone(), content }.record()?;
        fs::remove_file(&oldest)?;
    }
    for n in (1..settings.keep).rev() {
        let from = settings.generation(name, n);
        if exists(&from)? {
            let to = settings.generation(name, n + 1);
            Step::Renamed { from: from.clone(), to: to.clone() }.record()?;
            fs::rename(&from, &to)?;
        }
    }

    let gz = settings.generation(name, 1);
    if exists(&gz)? {
        return Err(Error::failed(format!("{gz} appeared while rotating; stopping")));
    }
    let mut encoder = GzEncoder::new(Vec::new(), Compression::new(settings.level));
    encoder.write_all(&content).map_err(|e| Error::failed(format!("compressing {log}: {e}")))?;
    let compressed = encoder.finish().map_err(|e| Error::failed(format!("compressing {log}: {e}")))?;
    Step::Created { path: gz.clone() }.record()?;
    append_all(&gz, &compressed)?;

    Step::Truncated { path: log.clone(), gz, len: content.len() as u64, sha256: sha(&content) }.record()?;
    fs::truncate(&log, 0)
}

impl Playbook for RotateLogs {
    fn plan(ctx: Context) -> Result<Vec<Change>, Error> {
        let settings = Settings::from(&ctx)?;
        let mut changes = Vec::new();
        for (name, size) in settings.oversized()? {
            changes.push(Change {
                action: "rotate".into(),
                target: settings.path(&name),
                detail: format!(
                    "{size} bytes > {}: compress into {name}.1.gz, shift older generations, keep {}",
                    settings.max_bytes, settings.keep
                ),
                reversible: true,
            });
        }
        Ok(changes)
    }

    fn apply(ctx: Context) -> Result<(), Error> {
        let settings = Settings::from(&ctx)?;
        let targets = settings.oversized()?;
        for (name, _) in &targets {
            rotate(&settings, name)?;
        }
        salve_playbook::info(&format!("rotated {} log(s) in {}", targets.len(), settings.dir));
        Ok(())
    }

    fn verify(ctx: Context) -> Result<(), Error> {
        let settings = Settings::from(&ctx)?;
        for (name, size) in settings.logs()? {
            if size > settings.max_bytes {
                return Err(Error::failed(format!("{name} is still {size} bytes (> {})", settings.max_bytes)));
            }
            let gz = settings.generation(&name, 1);
            if exists(&gz)? {
                gunzip(&read_all(&gz, CHUNK)?)
                    .map_err(|e| Error::failed(format!("{gz} is not a valid gzip file: {e}")))?;
            }
        }
        Ok(())
    }

    fn rollback(_ctx: Context, journal: Vec<Vec<u8>>) -> Result<(), Error> {
        let steps = journal.iter().map(|entry| Step::decode(entry)).collect::<Result<Vec<_>, _>>()?;
        for step in steps.iter().rev() {
            step.undo()?;
        }
        Ok(())
    }
}

salve_playbook::export_playbook!(RotateLogs);

#[cfg(test)]
mod tests {
    use super::Step;

    #[test]
    fn steps_round_trip_through_the_journal_encoding() {
        let steps = [
            Step::Removed { path: "logs/a.log.5.gz".into(), content: vec![1, 2, 3] },
            Step::Renamed { from: "logs/a.log.1.gz".into(), to: "logs/a.log.2.gz".into() },
            Step::Created { path: "logs/a.log.1.gz".into() },
            Step::Truncated { path: "logs/a.log".into(), gz: "logs/a.log.1.gz".into(), len: 9, sha256: [7; 32] },
        ];
        for step in steps {
            assert_eq!(Step::decode(&step.encode()).unwrap(), step);
        }
        assert!(Step::decode(&[4, 1]).is_err());
        assert!(Step::decode(&[]).is_err());
    }
}
