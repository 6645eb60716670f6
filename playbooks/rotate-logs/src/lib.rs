//! rotate-logs: compresses every `*.log` above `max_bytes` in the granted
//! directory into `NAME.1.gz`, shifting older generations (`NAME.2.gz`, ...)
//! and keeping `keep` of them, then truncates the original in place (its
//! inode is kept, so a process that holds it open keeps logging to it).
//!
//! Parameters: `dir` (mount name, optionally with a subdirectory; default
//! `logs`), `max_bytes` (default 1048576), `keep` (1..=99, default 5),
//! `level` (gzip level 0..=9, default 6).
//!
//! Rotations are journaled in batches (one entry: everything each will
//! change, and the bytes it will drop) before any of their changes, so
//! `rollback` restores the
//! directory byte for byte from any point, also after a crash: each part of
//! the undo checks what is on disk and is skipped when its change never
//! happened.

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

/// Everything one rotation will do, journaled (one entry, one `fsync`)
/// before any of it happens. Undoing it checks the disk for each part, so
/// it is right whatever point apply reached.
#[derive(Debug, Clone, PartialEq)]
struct Rotation {
    log: String,
    /// Length and digest of the log's content when it was rotated.
    len: u64,
    sha256: [u8; 32],
    /// The new generation 1, and the digest of its compressed bytes.
    gz: String,
    gz_sha256: [u8; 32],
    level: u32,
    /// Generations shifted up, in the order they are renamed.
    renames: Vec<(String, String)>,
    /// The oldest generation, dropped, with its bytes.
    removed: Option<(String, Vec<u8>)>,
}

/// Length-prefixed fields, for the journal.
struct Writer(Vec<u8>);

impl Writer {
    fn put(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.0.extend_from_slice(bytes);
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self) -> Result<Vec<u8>, Error> {
        let bad = || Error::Invalid("journal entry is not a rotate-logs rotation".into());
        let len_bytes: [u8; 8] = self.0.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?;
        let len = usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|_| bad())?;
        let bytes = self.0.get(8..8 + len).ok_or_else(bad)?.to_vec();
        self.0 = &self.0[8 + len..];
        Ok(bytes)
    }

    fn text(&mut self) -> Result<String, Error> {
        String::from_utf8(self.take()?)
            .map_err(|_| Error::Invalid("journal entry holds a path that is not UTF-8".into()))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        self.take()?.try_into().map_err(|_| Error::Invalid("journal entry has a field of the wrong size".into()))
    }
}

/// A journal entry: the rotations of one batch, in the order they are made.
fn encode_batch(rotations: &[Rotation]) -> Vec<u8> {
    let mut w = Writer(vec![2]);
    w.put(&(rotations.len() as u64).to_le_bytes());
    for rotation in rotations {
        w.put(&rotation.encode());
    }
    w.0
}

fn decode_batch(entry: &[u8]) -> Result<Vec<Rotation>, Error> {
    let Some((&2, rest)) = entry.split_first() else {
        return Err(Error::Invalid("journal entry is not a batch of rotate-logs rotations".into()));
    };
    let mut r = Reader(rest);
    let count = u64::from_le_bytes(r.array()?);
    (0..count).map(|_| Rotation::decode(&r.take()?)).collect()
}

impl Rotation {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer(vec![1]);
        w.put(self.log.as_bytes());
        w.put(&self.len.to_le_bytes());
        w.put(&self.sha256);
        w.put(self.gz.as_bytes());
        w.put(&self.gz_sha256);
        w.put(&self.level.to_le_bytes());
        w.put(&(self.renames.len() as u64).to_le_bytes());
        for (from, to) in &self.renames {
            w.put(from.as_bytes());
            w.put(to.as_bytes());
        }
        match &self.removed {
            None => w.put(&[0]),
            Some((path, content)) => {
                w.put(&[1]);
                w.put(path.as_bytes());
                w.put(content);
            }
        }
        w.0
    }

    fn decode(entry: &[u8]) -> Result<Rotation, Error> {
        let Some((&1, rest)) = entry.split_first() else {
            return Err(Error::Invalid("journal entry is not a rotate-logs rotation".into()));
        };
        let mut r = Reader(rest);
        let log = r.text()?;
        let len = u64::from_le_bytes(r.array()?);
        let sha256 = r.array()?;
        let gz = r.text()?;
        let gz_sha256 = r.array()?;
        let level = u32::from_le_bytes(r.array()?);
        let count = u64::from_le_bytes(r.array()?);
        let mut renames = Vec::new();
        for _ in 0..count.min(100) {
            renames.push((r.text()?, r.text()?));
        }
        let removed = match r.take()?.as_slice() {
            [1] => Some((r.text()?, r.take()?)),
            _ => None,
        };
        Ok(Rotation { log, len, sha256, gz, gz_sha256, level, renames, removed })
    }

    /// Undoes whatever part of the rotation happened.
    fn undo(&self) -> Result<(), Error> {
        // 1. The log: if it was truncated, its content is in the new
        //    generation; whatever was logged since goes after it, in place,
        //    so the inode stays the same.
        let current = read_all(&self.log, CHUNK)?;
        let original = if begins_with(&current, self.len, &self.sha256) {
            current[..self.len as usize].to_vec()
        } else {
            let original = gunzip(&read_all(&self.gz, CHUNK)?)
                .map_err(|e| Error::failed(format!("{} does not decompress: {e}", self.gz)))?;
            if original.len() as u64 != self.len || sha(&original) != self.sha256 {
                return Err(Error::failed(format!(
                    "{} does not hold the {} bytes {} had; not restoring from it",
                    self.gz, self.len, self.log
                )));
            }
            fs::truncate(&self.log, 0)?;
            append_all(&self.log, &original)?;
            append_all(&self.log, &current)?;
            original
        };
        // 2. The new generation: complete, or cut short by a crash (then a
        //    prefix of what compressing the original gives, byte for byte).
        if exists(&self.gz)? {
            let packed = read_all(&self.gz, CHUNK)?;
            let ours = sha(&packed) == self.gz_sha256 || gzip(&original, self.level)?.starts_with(&packed);
            if ours {
                fs::remove_file(&self.gz)?;
            }
        }
        // 3. Shifted generations go back down.
        for (from, to) in self.renames.iter().rev() {
            if !exists(from)? && exists(to)? {
                fs::rename(to, from)?;
            }
        }
        // 4. The dropped oldest generation comes back.
        if let Some((path, content)) = &self.removed
            && !exists(path)?
        {
            fs::write(path, content)?;
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

/// Deterministic: the same bytes and level always give the same output.
fn gzip(bytes: &[u8], level: u32) -> Result<Vec<u8>, Error> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::new(level));
    encoder.write_all(bytes).map_err(|e| Error::failed(format!("compressing: {e}")))?;
    encoder.finish().map_err(|e| Error::failed(format!("compressing: {e}")))
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

/// Memory a batch of prepared rotations may hold (their compressed bytes
/// and dropped generations) before it is journaled and carried out.
const BATCH_BYTES: usize = 8 << 20;

/// Reads and compresses one log and works out its rotation; changes nothing.
fn prepare(settings: &Settings, name: &str) -> Result<(Rotation, Vec<u8>), Error> {
    let log = settings.path(name);
    let content = read_all(&log, CHUNK)?;
    let gz = settings.generation(name, 1);
    let compressed = gzip(&content, settings.level)?;

    let oldest = settings.generation(name, settings.keep);
    let removed = if exists(&oldest)? { Some((oldest.clone(), read_all(&oldest, CHUNK)?)) } else { None };
    let mut renames = Vec::new();
    for n in (1..settings.keep).rev() {
        let from = settings.generation(name, n);
        if exists(&from)? {
            renames.push((from, settings.generation(name, n + 1)));
        }
    }
    let gz_moves = removed.as_ref().is_some_and(|(path, _)| *path == gz) || renames.iter().any(|(from, _)| *from == gz);
    if exists(&gz)? && !gz_moves {
        return Err(Error::failed(format!("{gz} exists but would not be shifted; stopping before any change")));
    }
    let rotation = Rotation {
        log,
        len: content.len() as u64,
        sha256: sha(&content),
        gz,
        gz_sha256: sha(&compressed),
        level: settings.level,
        renames,
        removed,
    };
    Ok((rotation, compressed))
}

/// Makes one prepared rotation: drop the oldest generation, shift the rest
/// up by one, write the new generation 1, truncate the log.
fn carry_out(rotation: &Rotation, compressed: &[u8]) -> Result<(), Error> {
    if let Some((path, _)) = &rotation.removed {
        fs::remove_file(path)?;
    }
    for (from, to) in &rotation.renames {
        fs::rename(from, to)?;
    }
    append_all(&rotation.gz, compressed)?;
    fs::truncate(&rotation.log, 0)
}

/// Journals a batch (one entry, one `fsync`), then carries it out.
fn flush(batch: &mut Vec<(Rotation, Vec<u8>)>) -> Result<(), Error> {
    if batch.is_empty() {
        return Ok(());
    }
    let rotations: Vec<Rotation> = batch.iter().map(|(r, _)| r.clone()).collect();
    journal::record(&encode_batch(&rotations))?;
    for (rotation, compressed) in batch.drain(..) {
        carry_out(&rotation, &compressed)?;
    }
    Ok(())
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
        // Rotations are prepared (read, compressed) in batches, each batch
        // journaled as one entry before any of its changes: one fsync per
        // batch rather than per log.
        let mut batch = Vec::new();
        let mut held = 0;
        for (name, _) in &targets {
            let prepared = prepare(&settings, name)?;
            held += prepared.1.len() + prepared.0.removed.as_ref().map_or(0, |(_, c)| c.len());
            batch.push(prepared);
            if held >= BATCH_BYTES {
                flush(&mut batch)?;
                held = 0;
            }
        }
        flush(&mut batch)?;
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
        for entry in journal.iter().rev() {
            for rotation in decode_batch(entry)?.iter().rev() {
                rotation.undo()?;
            }
        }
        Ok(())
    }
}

salve_playbook::export_playbook!(RotateLogs);

#[cfg(test)]
mod tests {
    use super::Rotation;

    #[test]
    fn rotations_round_trip_through_the_journal_encoding() {
        let rotation = Rotation {
            log: "logs/a.log".into(),
            len: 9,
            sha256: [7; 32],
            gz: "logs/a.log.1.gz".into(),
            gz_sha256: [8; 32],
            level: 6,
            renames: vec![("logs/a.log.1.gz".into(), "logs/a.log.2.gz".into())],
            removed: Some(("logs/a.log.5.gz".into(), vec![1, 2, 3])),
        };
        assert_eq!(Rotation::decode(&rotation.encode()).unwrap(), rotation);
        let bare = Rotation { renames: vec![], removed: None, ..rotation.clone() };
        assert_eq!(Rotation::decode(&bare.encode()).unwrap(), bare);
        let batch = vec![rotation, bare];
        assert_eq!(super::decode_batch(&super::encode_batch(&batch)).unwrap(), batch);
        assert!(Rotation::decode(&[1, 4]).is_err());
        assert!(Rotation::decode(&[]).is_err());
    }

    #[test]
    fn compression_is_deterministic() {
        let text = b"2026-11-23 INFO the same line, again and again\n".repeat(100);
        assert_eq!(super::gzip(&text, 6).unwrap(), super::gzip(&text, 6).unwrap());
    }
}
