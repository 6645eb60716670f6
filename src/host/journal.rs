//! The `journal` capability: a job's rollback journal, one file per job in
//! `DATA_DIR/journal/`.
//!
//! `record` appends one entry and returns only once it is on disk
//! (`fdatasync`), so every entry `apply` was told
//! about reaches `rollback`, also after a trap, and is still on disk if the
//! runner crashes (rolling such a job back at the next start is the job
//! store's work). Rollback always reads the journal back from its file: one
//! code path for every case.
//!
//! # Format
//! `SALVEJ1\n`, then per entry: length (u32, little endian), SHA-256 of the
//! entry, the entry. A frame cut short at the end (a crash in the middle of
//! a write, never acknowledged) is ignored; a complete frame whose digest
//! does not match is corruption and stops the rollback.
//!
//! # Errors
//! Entries past [`MAX_ENTRY_BYTES`], journals past [`MAX_JOURNAL_BYTES`] or
//! [`MAX_ENTRIES`] get `invalid`; `record` outside `apply` gets `denied`.

use super::{Calls, CapError};
use crate::audit::Event;
use crate::bindings::Error as GuestError;
use crate::bindings::salve::playbook::journal::Host;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::HasData;

/// Largest single journal entry.
pub const MAX_ENTRY_BYTES: usize = 4 << 20;
/// Largest journal, all entries together. Rollback receives all of it in
/// its linear memory, so this stays well below the default memory cap.
pub const MAX_JOURNAL_BYTES: u64 = 16 << 20;
/// Most entries in one journal.
pub const MAX_ENTRIES: u32 = 10_000;

const MAGIC: &[u8] = b"SALVEJ1\n";
const FRAME_HEADER: usize = 4 + 32;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    #[error("cannot read the journal {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the journal {path} is not a salve journal")]
    NotAJournal { path: PathBuf },
    #[error("entry {index} of the journal {path} is corrupt (its digest does not match)")]
    Corrupt { path: PathBuf, index: usize },
}

/// The journal of one job, for appending. The file is created by the first
/// entry: a job that records nothing costs no file and no `fsync`.
pub struct Journal {
    path: PathBuf,
    file: Option<Arc<File>>,
    entries: u32,
    bytes: u64,
}

impl Journal {
    /// The path of `job`'s journal under `dir`.
    pub fn path_for(dir: &Path, job: &str) -> PathBuf {
        dir.join(format!("{job}.journal"))
    }

    /// The journal of a new job; nothing is written until its first entry.
    pub fn new(dir: &Path, job: &str) -> Journal {
        Journal { path: Journal::path_for(dir, job), file: None, entries: 0, bytes: 0 }
    }

    /// Creates the file (never reusing one: a job id is unique) and makes
    /// its existence durable.
    fn create(path: &Path) -> std::io::Result<File> {
        let mut file = OpenOptions::new().append(true).create_new(true).mode(0o600).open(path)?;
        file.write_all(MAGIC)?;
        file.sync_all()?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks an entry against the bounds; returns its index.
    fn admit(&self, entry: &[u8]) -> Result<u32, CapError> {
        if entry.len() > MAX_ENTRY_BYTES {
            return Err(CapError::Invalid(format!(
                "the entry is {} bytes; the bound is {MAX_ENTRY_BYTES}",
                entry.len()
            )));
        }
        if self.bytes + entry.len() as u64 > MAX_JOURNAL_BYTES {
            return Err(CapError::Invalid(format!("the journal would exceed {MAX_JOURNAL_BYTES} bytes")));
        }
        if self.entries >= MAX_ENTRIES {
            return Err(CapError::Invalid(format!("the journal already holds {MAX_ENTRIES} entries")));
        }
        Ok(self.entries)
    }

    /// Reads every complete entry, in order; none if the job never recorded
    /// one.
    pub fn read(path: &Path) -> Result<Vec<Vec<u8>>, JournalError> {
        let mut bytes = Vec::new();
        match File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(JournalError::Read { path: path.to_path_buf(), source }),
        }
        if MAGIC.starts_with(&bytes) {
            return Ok(Vec::new()); // created, and cut short by a crash before its first entry
        }
        let mut rest = bytes.strip_prefix(MAGIC).ok_or_else(|| JournalError::NotAJournal { path: path.into() })?;
        let mut entries = Vec::new();
        while rest.len() >= FRAME_HEADER {
            let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            let Some(entry) = rest.get(FRAME_HEADER..FRAME_HEADER + len) else {
                break; // cut short by a crash: never acknowledged
            };
            if Sha256::digest(entry)[..] != rest[4..FRAME_HEADER] {
                return Err(JournalError::Corrupt { path: path.into(), index: entries.len() });
            }
            entries.push(entry.to_vec());
            rest = &rest[FRAME_HEADER + len..];
        }
        Ok(entries)
    }
}

/// Marker for linking `journal` with [`JournalView`] as the host data.
pub struct JournalHost;

impl HasData for JournalHost {
    type Data<'a> = JournalView<'a>;
}

/// What `journal` host functions see of the store: the journal, in `apply`
/// only.
pub struct JournalView<'a> {
    pub journal: Option<&'a mut Journal>,
    pub calls: &'a Calls,
}

impl Host for JournalView<'_> {
    async fn record(&mut self, entry: Vec<u8>) -> wasmtime::Result<Result<(), GuestError>> {
        let sha256 = super::digest(&entry);
        let args = serde_json::json!({ "bytes": entry.len(), "sha256": sha256 });
        let JournalView { journal, calls } = self;
        let Some(journal) = journal.as_deref_mut() else {
            let refusal = CapError::Denied(format!("the journal can be written in apply only, not in {}", calls.phase));
            return calls.refuse("journal", "record", &args, refusal);
        };
        let index = match journal.admit(&entry) {
            Ok(index) => index,
            Err(refusal) => return calls.refuse("journal", "record", &args, refusal),
        };
        let file = journal.file.clone();
        let path = journal.path.clone();
        let len = entry.len();
        let written = calls
            .blocking(move || {
                let file = match file {
                    Some(file) => file,
                    None => Arc::new(
                        Journal::create(&path)
                            .map_err(|e| CapError::Failed(format!("the journal could not be created: {e}")))?,
                    ),
                };
                let mut frame = Vec::with_capacity(FRAME_HEADER + len);
                frame.extend_from_slice(&(len as u32).to_le_bytes());
                frame.extend_from_slice(&Sha256::digest(&entry));
                frame.extend_from_slice(&entry);
                (&*file)
                    .write_all(&frame)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| CapError::Failed(format!("the journal could not be written: {e}")))?;
                Ok(file)
            })
            .await;
        match written {
            Some(Ok(file)) => journal.file = Some(file),
            // A journal that may hold a partial frame cannot take more
            // entries: stop the guest. Rollback reads back what landed.
            Some(Err(error)) => return Err(wasmtime::Error::msg(format!("journal write failed: {error}"))),
            None => {
                return Err(super::HostCallTimedOut {
                    interface: "journal",
                    function: "record",
                    timeout: calls.timeout,
                }
                .into());
            }
        }
        journal.entries += 1;
        journal.bytes += len as u64;
        // The entry itself is durable (the journal file was synced). Its
        // audit record rides on the next group commit: the next mutating
        // call's intent is synced before that call's effect, and carries
        // this record with it.
        calls.record(&Event::Journal { index, bytes: len as u64, sha256: &sha256 })?;
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_in_order_and_a_torn_frame_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path(), "job");
        assert_eq!(Journal::read(journal.path()).unwrap(), Vec::<Vec<u8>>::new(), "no entry, no file");
        let mut file = Journal::create(journal.path()).unwrap();
        for entry in [&b"first"[..], b"", b"third"] {
            let mut frame = (entry.len() as u32).to_le_bytes().to_vec();
            frame.extend_from_slice(&Sha256::digest(entry));
            frame.extend_from_slice(entry);
            file.write_all(&frame).unwrap();
        }
        file.write_all(&[9, 0, 0, 0, 1, 2]).unwrap(); // torn
        let entries = Journal::read(journal.path()).unwrap();
        assert_eq!(entries, vec![b"first".to_vec(), vec![], b"third".to_vec()]);
        assert!(Journal::create(journal.path()).is_err(), "a job id is never reused");
    }

    #[test]
    fn a_corrupt_entry_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path(), "job");
        let mut frame = 3u32.to_le_bytes().to_vec();
        frame.extend_from_slice(&[0; 32]);
        frame.extend_from_slice(b"abc");
        Journal::create(journal.path()).unwrap().write_all(&frame).unwrap();
        assert!(matches!(Journal::read(journal.path()), Err(JournalError::Corrupt { index: 0, .. })));
    }
}
