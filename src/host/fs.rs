//! The `fs` capability: files in the directories a grant names, through the
//! cap-std `Dir` handles the grant opened.
//!
//! A guest path is `MOUNT/relative/path`. Before anything touches the disk,
//! [`resolve`] refuses absolute paths, `.`/`..`/empty components, unknown
//! mounts and writes under read-only mounts. cap-std then refuses any path
//! that would leave the directory through a symlink. On top of that, the
//! contents of a file with more than one hard link are never read or changed
//! in place (the other link may be outside the grant), and only regular
//! files are opened (a FIFO would block the host).
//!
//! # Errors
//! Refusals are `denied` (the grant does not allow it) or `invalid` (the
//! request is malformed or past a bound); both are audited like every call.
//!
//! # Security
//! The audit log records paths, offsets and sizes, and the SHA-256 of data
//! written, never the data itself.

use super::{Calls, CapError, Effect};
use crate::bindings::Error as GuestError;
use crate::bindings::salve::playbook::fs::{DirEntry, Host, Kind, Metadata};
use crate::grant::{BeneathError, Mount, escapes, or_root};
use crate::scope::Access;
use cap_std::fs::{Dir, MetadataExt, OpenOptions, OpenOptionsExt, PermissionsExt};
use serde_json::{Value, json};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::component::HasData;

/// Longest path a guest may pass, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Most bytes one `read` returns; the guest reads larger files in pieces.
pub const MAX_READ_BYTES: u32 = 16 << 20;
/// Most bytes one `write` or `append` takes (also the most `truncate` may
/// extend a file by).
pub const MAX_WRITE_BYTES: usize = 16 << 20;
/// Most entries one `list-dir` returns.
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// Longest path recorded in full (Linux's PATH_MAX); a longer one, which no
/// call can open, is recorded by its digest.
const AUDITED_PATH_BYTES: usize = 4096;

const INTERFACE: &str = "fs";

/// Marker for linking `fs` with [`FsView`] as the host data.
pub struct Fs;

impl HasData for Fs {
    type Data<'a> = FsView<'a>;
}

/// What `fs` host functions see of the store.
pub struct FsView<'a> {
    pub mounts: &'a [Mount],
    pub calls: &'a Calls,
}

/// A guest path, resolved: the mount's handle and the path inside it.
struct Target {
    mount: String,
    dir: Arc<Dir>,
    /// Relative to the mount; empty for the mount's root.
    rel: PathBuf,
}

impl Target {
    /// The path to hand cap-std (`.` for the root).
    fn path(&self) -> &Path {
        if self.rel.as_os_str().is_empty() { Path::new(".") } else { &self.rel }
    }

    fn not_root(self, what: &str) -> Result<Target, CapError> {
        if self.rel.as_os_str().is_empty() {
            return Err(CapError::Denied(format!("cannot {what} the root of mount {}", self.mount)));
        }
        Ok(self)
    }
}

/// Checks a guest path against the grant, without touching the disk.
fn resolve(mounts: &[Mount], path: &str, access: Access) -> Result<Target, CapError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(CapError::Invalid(format!("the path is {} bytes; the bound is {MAX_PATH_BYTES}", path.len())));
    }
    if path.contains('\0') {
        return Err(CapError::Invalid("the path contains a NUL byte".into()));
    }
    if path.starts_with('/') {
        return Err(CapError::Denied("absolute paths are refused; address files as MOUNT/relative/path".into()));
    }
    let mut components = path.split('/');
    let name = components.next().unwrap_or_default();
    let mut rel = PathBuf::new();
    for component in std::iter::once(name).chain(components.clone()) {
        match component {
            "" => return Err(CapError::Denied("empty path components are refused".into())),
            "." | ".." => return Err(CapError::Denied("`.` and `..` path components are refused".into())),
            _ => {}
        }
    }
    rel.extend(components);
    let mount = mounts.iter().find(|m| m.name == name).ok_or_else(|| {
        let granted: Vec<&str> = mounts.iter().map(|m| m.name.as_str()).collect();
        CapError::Denied(format!("no directory named {name:?} is granted to this task (granted: {granted:?})"))
    })?;
    if access == Access::Rw && mount.access == Access::Ro {
        return Err(CapError::Denied(format!("{name} is granted read-only")));
    }
    Ok(Target { mount: mount.name.clone(), dir: Arc::clone(&mount.dir), rel })
}

/// The host path of a guest path, for a program `exec` starts to open: its
/// symlinks resolved, and still inside its mount (else `denied`). The path
/// itself may not exist yet; its parent must.
pub(crate) fn host_path(mounts: &[Mount], path: &str) -> Result<PathBuf, CapError> {
    let target = resolve(mounts, path, Access::Ro)?;
    let mount = mounts.iter().find(|m| m.name == target.mount).expect("resolve found it");
    let resolved = mount.resolve_beneath(&target.rel).map_err(|e| match e {
        BeneathError::Escapes | BeneathError::Dangling => CapError::Denied(e.to_string()),
        BeneathError::NotFound => CapError::NotFound,
        BeneathError::Io(e) => io_error(e),
    })?;
    if let Ok(meta) = target.dir.metadata(or_root(&resolved))
        && meta.is_file()
        && meta.nlink() > 1
    {
        return Err(CapError::Denied("the file has more than one hard link".into()));
    }
    // The program opens the path after this check: a local user who can
    // swap it for a symlink in between is outside what salve defends.
    Ok(mount.host_path(&resolved))
}

/// Maps an OS error to what the guest sees, without host paths in it.
fn io_error(error: std::io::Error) -> CapError {
    use std::io::ErrorKind as K;
    match error.kind() {
        K::NotFound => CapError::NotFound,
        K::PermissionDenied if escapes(&error) => CapError::Denied(BeneathError::Escapes.to_string()),
        K::PermissionDenied => CapError::Denied("the operating system refused access".into()),
        K::AlreadyExists => CapError::Failed("it already exists".into()),
        K::IsADirectory => CapError::Invalid("it is a directory".into()),
        K::NotADirectory => CapError::Invalid("a component of the path is not a directory".into()),
        K::DirectoryNotEmpty => CapError::Failed("the directory is not empty".into()),
        K::StorageFull => CapError::Failed("no space left on the device".into()),
        _ if error.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            CapError::Denied("too many levels of symlinks".into())
        }
        // OS error texts name no host path.
        _ => CapError::Failed(format!("the operation failed: {error}")),
    }
}

/// Opens a regular file with exactly one link; anything else is refused.
/// Opens non-blocking, so a FIFO swapped in cannot hang the host.
fn open_regular(target: &Target, options: &mut OpenOptions, create: bool) -> Result<cap_std::fs::File, CapError> {
    // Refuse devices, FIFOs and sockets before opening (opening one can have
    // effects); then check again on the open file, which cannot be swapped.
    match target.dir.metadata(target.path()) {
        Ok(meta) if !meta.is_file() => return Err(CapError::Invalid("not a regular file".into())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {}
        Err(e) => return Err(io_error(e)),
    }
    options.custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32);
    let file = target.dir.open_with(target.path(), options).map_err(io_error)?;
    let meta = file.metadata().map_err(io_error)?;
    if !meta.is_file() {
        return Err(CapError::Invalid("not a regular file".into()));
    }
    if meta.nlink() > 1 {
        return Err(CapError::Denied(format!(
            "the file has {} hard links, and the others may be outside the grant",
            meta.nlink()
        )));
    }
    Ok(file)
}

fn kind_of(file_type: cap_std::fs::FileType) -> Kind {
    if file_type.is_file() {
        Kind::File
    } else if file_type.is_dir() {
        Kind::Directory
    } else if file_type.is_symlink() {
        Kind::Symlink
    } else {
        Kind::Other
    }
}

fn audited(path: &str) -> serde_json::Value {
    super::audited(path, AUDITED_PATH_BYTES)
}

/// Atomically replaces `target` with `data`: a temporary file in the same
/// directory, `fsync`, `rename` over the target, `fsync` of the directory.
/// An existing file's permissions are kept. Returns the size of the file
/// it replaced (0 if none).
fn replace(target: &Target, data: &[u8]) -> Result<u64, CapError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = target.rel.file_name().ok_or_else(|| CapError::Invalid("no file name".into()))?;
    let parent_rel = target.rel.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let parent = target.dir.open_dir(parent_rel).map_err(io_error)?;
    // Keep an existing file's permission bits (never setuid, setgid or
    // sticky) and owner; refuse to replace anything but a regular file.
    let existing = match parent.symlink_metadata(file_name) {
        Ok(meta) if meta.is_file() => Some((meta.permissions().mode() & 0o777, meta.uid(), meta.gid(), meta.len())),
        Ok(meta) if meta.is_dir() => return Err(CapError::Invalid("it is a directory".into())),
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(CapError::Denied("the path is a symlink; write does not replace or follow symlinks".into()));
        }
        Ok(_) => return Err(CapError::Invalid("not a regular file".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error(e)),
    };
    let mode = existing.map_or(0o644, |(mode, _, _, _)| mode);
    let temp = format!(
        ".{}.salve-{}-{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let written = (|| {
        let mut file =
            parent.open_with(&temp, OpenOptions::new().write(true).create_new(true).mode(mode)).map_err(io_error)?;
        if let Some((_, uid, gid, _)) = existing {
            let current = file.metadata().map_err(io_error)?;
            if (current.uid(), current.gid()) != (uid, gid) {
                let std_file = file.try_clone().map_err(io_error)?.into_std();
                std::os::unix::fs::fchown(&std_file, Some(uid), Some(gid)).map_err(|e| {
                    CapError::Failed(format!("cannot keep the file's owner {uid}:{gid} ({e}); not replacing it"))
                })?;
            }
        }
        file.write_all(data).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
        parent.rename(&temp, &parent, file_name).map_err(io_error)
    })();
    if let Err(e) = written {
        let _ = parent.remove_file(&temp);
        return Err(e);
    }
    // cap-std opens directories with O_PATH, which cannot be synced; open
    // the directory itself for reading to make the rename durable.
    parent.open(".").and_then(|d| d.sync_all()).map_err(io_error)?;
    Ok(existing.map_or(0, |(_, _, _, len)| len))
}

/// The size of the regular file at `rel` in `dir`, if there is one: what a
/// call that replaces or removes it destroys.
fn file_size(dir: &cap_std::fs::Dir, rel: &Path) -> u64 {
    dir.symlink_metadata(rel).ok().filter(|m| m.is_file()).map_or(0, |m| m.len())
}

impl FsView<'_> {
    fn resolve(&self, path: &str, access: Access) -> Result<Target, CapError> {
        resolve(self.mounts, path, access)
    }
}

impl Host for FsView<'_> {
    async fn read(&mut self, path: String, offset: u64, length: u32) -> wasmtime::Result<Result<Vec<u8>, GuestError>> {
        let args = json!({ "path": audited(&path), "offset": offset, "length": length });
        let prepared = self.resolve(&path, Access::Ro).and_then(|target| {
            if length > MAX_READ_BYTES {
                return Err(CapError::Invalid(format!("length {length} is past the bound of {MAX_READ_BYTES} bytes")));
            }
            // A program the grant runs may have written a credential to a
            // file: the piece is read with enough around it to see any form
            // of one that overlaps it, and masked (keeping its length, so a
            // file read in pieces reads the same as read whole).
            let redactor = Arc::clone(self.calls.redactor_shared());
            Ok(move || {
                let mut file = open_regular(&target, OpenOptions::new().read(true), false)?;
                let slack = redactor.slack() as u64;
                let start = if redactor.is_empty() { offset } else { offset.saturating_sub(slack) };
                file.seek(SeekFrom::Start(start)).map_err(io_error)?;
                let mut window = Vec::new();
                let wanted = u64::from(length) + (offset - start) + if redactor.is_empty() { 0 } else { slack };
                file.take(wanted).read_to_end(&mut window).map_err(io_error)?;
                let at_end = (window.len() as u64) < wanted;
                let from = ((offset - start) as usize).min(window.len());
                let to = (from + length as usize).min(window.len());
                Ok(redactor.mask(&window, from..to, at_end))
            })
        });
        self.calls
            .perform(INTERFACE, "read", args, Effect::Read, prepared, |d: &Vec<u8>| json!({ "bytes": d.len() }))
            .await
    }

    async fn write(&mut self, path: String, data: Vec<u8>) -> wasmtime::Result<Result<(), GuestError>> {
        let args = json!({ "path": audited(&path), "bytes": data.len(), "sha256": super::digest(&data) });
        let prepared = self.resolve(&path, Access::Rw).and_then(|t| t.not_root("write")).and_then(|target| {
            if data.len() > MAX_WRITE_BYTES {
                return Err(CapError::Invalid(format!("{} bytes is past the bound of {MAX_WRITE_BYTES}", data.len())));
            }
            self.calls.budget.spend(data.len() as u64)?;
            let budget = Arc::clone(&self.calls.budget);
            Ok(move || replace(&target, &data).map(|replaced| budget.destroyed(replaced)))
        });
        self.calls.perform(INTERFACE, "write", args, Effect::Mutate, prepared, |_| Value::Null).await
    }

    async fn append(&mut self, path: String, data: Vec<u8>) -> wasmtime::Result<Result<(), GuestError>> {
        let args = json!({ "path": audited(&path), "bytes": data.len(), "sha256": super::digest(&data) });
        let prepared = self.resolve(&path, Access::Rw).and_then(|t| t.not_root("append to")).and_then(|target| {
            if data.len() > MAX_WRITE_BYTES {
                return Err(CapError::Invalid(format!("{} bytes is past the bound of {MAX_WRITE_BYTES}", data.len())));
            }
            self.calls.budget.spend(data.len() as u64)?;
            Ok(move || {
                let mut file = open_regular(&target, OpenOptions::new().append(true).create(true), true)?;
                file.write_all(&data).map_err(io_error)
            })
        });
        self.calls.perform(INTERFACE, "append", args, Effect::Mutate, prepared, |_| Value::Null).await
    }

    async fn truncate(&mut self, path: String, size: u64) -> wasmtime::Result<Result<(), GuestError>> {
        let args = json!({ "path": audited(&path), "size": size });
        let budget = Arc::clone(&self.calls.budget);
        let prepared = self.resolve(&path, Access::Rw).and_then(|t| t.not_root("truncate")).map(|target| {
            move || {
                let file = open_regular(&target, OpenOptions::new().write(true), false)?;
                let current = file.metadata().map_err(io_error)?.len();
                if size > current.saturating_add(MAX_WRITE_BYTES as u64) {
                    return Err(CapError::Invalid(format!(
                        "extending the file from {current} to {size} bytes is past the bound of {MAX_WRITE_BYTES}"
                    )));
                }
                budget.spend(size.saturating_sub(current))?;
                file.set_len(size).map_err(io_error)?;
                budget.destroyed(current.saturating_sub(size));
                Ok(())
            }
        });
        self.calls.perform(INTERFACE, "truncate", args, Effect::Mutate, prepared, |_| Value::Null).await
    }

    async fn list_dir(&mut self, path: String) -> wasmtime::Result<Result<Vec<DirEntry>, GuestError>> {
        let args = json!({ "path": audited(&path) });
        let prepared = self.resolve(&path, Access::Ro).map(|target| {
            move || {
                let mut entries = Vec::new();
                for entry in target.dir.read_dir(target.path()).map_err(io_error)? {
                    let entry = entry.map_err(io_error)?;
                    if entries.len() == MAX_LIST_ENTRIES {
                        return Err(CapError::Invalid(format!(
                            "the directory has more than {MAX_LIST_ENTRIES} entries"
                        )));
                    }
                    let kind = kind_of(entry.file_type().map_err(io_error)?);
                    entries.push(DirEntry { name: entry.file_name().to_string_lossy().into_owned(), kind });
                }
                entries.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(entries)
            }
        });
        self.calls
            .perform(
                INTERFACE,
                "list-dir",
                args,
                Effect::Read,
                prepared,
                |e: &Vec<DirEntry>| json!({ "entries": e.len() }),
            )
            .await
    }

    async fn stat(&mut self, path: String) -> wasmtime::Result<Result<Metadata, GuestError>> {
        let args = json!({ "path": audited(&path) });
        let prepared = self.resolve(&path, Access::Ro).map(|target| {
            move || {
                let meta = target.dir.metadata(target.path()).map_err(io_error)?;
                let modified_ns = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.into_std().duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos() as u64);
                Ok(Metadata { kind: kind_of(meta.file_type()), size: meta.len(), modified_ns })
            }
        });
        self.calls
            .perform(INTERFACE, "stat", args, Effect::Read, prepared, |m: &Metadata| json!({ "size": m.size }))
            .await
    }

    async fn rename(&mut self, source: String, destination: String) -> wasmtime::Result<Result<(), GuestError>> {
        let args = json!({ "source": audited(&source), "destination": audited(&destination) });
        let from = self.resolve(&source, Access::Rw).and_then(|t| t.not_root("rename"));
        let to = self.resolve(&destination, Access::Rw).and_then(|t| t.not_root("replace"));
        let prepared = from.and_then(|from| {
            let to = to?;
            if from.mount != to.mount {
                return Err(CapError::Denied(format!(
                    "renames across mounts ({} to {}) are refused",
                    from.mount, to.mount
                )));
            }
            let budget = Arc::clone(&self.calls.budget);
            Ok(move || {
                let replaced = file_size(&to.dir, &to.rel);
                from.dir.rename(&from.rel, &to.dir, &to.rel).map_err(io_error)?;
                budget.destroyed(replaced);
                Ok(())
            })
        });
        self.calls.perform(INTERFACE, "rename", args, Effect::Mutate, prepared, |_| Value::Null).await
    }

    async fn remove_file(&mut self, path: String) -> wasmtime::Result<Result<(), GuestError>> {
        let args = json!({ "path": audited(&path) });
        let prepared = self.resolve(&path, Access::Rw).and_then(|t| t.not_root("remove")).map(|target| {
            let budget = Arc::clone(&self.calls.budget);
            move || {
                let removed = file_size(&target.dir, &target.rel);
                target.dir.remove_file(&target.rel).map_err(io_error)?;
                budget.destroyed(removed);
                Ok(())
            }
        });
        self.calls.perform(INTERFACE, "remove-file", args, Effect::Mutate, prepared, |_| Value::Null).await
    }

    async fn create_dir(&mut self, path: String) -> wasmtime::Result<Result<(), GuestError>> {
        let args = json!({ "path": audited(&path) });
        let prepared = self
            .resolve(&path, Access::Rw)
            .and_then(|t| t.not_root("create"))
            .map(|target| move || target.dir.create_dir(&target.rel).map_err(io_error));
        self.calls.perform(INTERFACE, "create-dir", args, Effect::Mutate, prepared, |_| Value::Null).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::{FsEntry, Grant, GrantSpec};

    fn mounts(dir: &Path) -> Vec<Mount> {
        let spec = GrantSpec {
            fs: vec![
                FsEntry { name: "logs".into(), path: dir.join("rw"), access: Access::Rw },
                FsEntry { name: "ro".into(), path: dir.join("ro"), access: Access::Ro },
            ],
            ..Default::default()
        };
        std::fs::create_dir_all(dir.join("rw")).unwrap();
        std::fs::create_dir_all(dir.join("ro")).unwrap();
        Grant::open_unbounded(&spec).unwrap().mounts().to_vec()
    }

    #[test]
    fn paths_are_refused_before_the_disk_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let mounts = mounts(dir.path());
        let denied = |path: &str, access| matches!(resolve(&mounts, path, access), Err(CapError::Denied(_)));
        for path in ["/etc/passwd", "logs/../x", "../x", "logs/./x", "logs//x", "logs/", "elsewhere/x", ".."] {
            assert!(denied(path, Access::Ro), "{path} should be denied");
        }
        assert!(denied("ro/x", Access::Rw), "writes under a read-only mount");
        assert!(matches!(resolve(&mounts, "logs/a\0b", Access::Ro), Err(CapError::Invalid(_))));
        let long = format!("logs/{}", "a".repeat(MAX_PATH_BYTES));
        assert!(matches!(resolve(&mounts, &long, Access::Ro), Err(CapError::Invalid(_))));
        let target = resolve(&mounts, "logs/sub/app.log", Access::Rw).unwrap();
        assert_eq!(target.rel, Path::new("sub/app.log"));
        assert_eq!(resolve(&mounts, "ro", Access::Ro).unwrap().path(), Path::new("."));
    }

    #[tokio::test]
    async fn renames_across_mounts_are_denied_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let spec = GrantSpec {
            fs: ["one", "two"]
                .iter()
                .map(|name| {
                    std::fs::create_dir_all(dir.path().join(name)).unwrap();
                    FsEntry { name: name.to_string(), path: dir.path().join(name), access: Access::Rw }
                })
                .collect(),
            ..Default::default()
        };
        std::fs::write(dir.path().join("one/file"), b"x").unwrap();
        let grant = Grant::open_unbounded(&spec).unwrap();
        let audit = crate::audit::AuditLog::open(&dir.path().join("data")).unwrap();
        let calls = Calls::new(audit.clone(), "job".into(), crate::audit::Phase::Apply, {
            std::time::Instant::now() + std::time::Duration::from_secs(60)
        })
        .with_timeout(std::time::Duration::from_secs(5))
        .with_budget(Arc::new(crate::host::Budget::new(1 << 20, 1000)))
        .with_inline_reads(false);
        let mut view = FsView { mounts: grant.mounts(), calls: &calls };

        let result = view.rename("one/file".into(), "two/file".into()).await.unwrap();

        assert!(matches!(result, Err(GuestError::Denied(reason)) if reason.contains("across mounts")));
        assert!(dir.path().join("one/file").exists() && !dir.path().join("two/file").exists());
        audit.sync_blocking().unwrap();
        let log = std::fs::read_to_string(dir.path().join("data/audit.jsonl")).unwrap();
        let call: serde_json::Value = serde_json::from_str(log.lines().nth(1).unwrap()).unwrap();
        assert_eq!(call["function"], "rename", "{log}");
        assert_eq!(call["args"], serde_json::json!({ "source": "one/file", "destination": "two/file" }));
        assert!(call["outcome"]["denied"].is_string(), "{log}");
    }

    #[test]
    fn atomic_replace_keeps_permissions_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let mounts = mounts(dir.path());
        let file = dir.path().join("rw/app.conf");
        std::fs::write(&file, b"old").unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
        replace(&resolve(&mounts, "logs/app.conf", Access::Rw).unwrap(), b"new").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(std::fs::read_dir(dir.path().join("rw")).unwrap().count(), 1);
    }

    #[test]
    fn paths_handed_to_programs_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let mounts = mounts(dir.path());
        let rw = dir.path().join("rw").canonicalize().unwrap();
        assert_eq!(host_path(&mounts, "logs/new.txt").unwrap(), rw.join("new.txt"), "a file still to be made");
        std::os::unix::fs::symlink("/etc/cron.d/planted", dir.path().join("rw/dangling")).unwrap();
        assert!(matches!(host_path(&mounts, "logs/dangling"), Err(CapError::Denied(_))), "a symlink to nowhere");
        std::os::unix::fs::symlink("/etc", dir.path().join("rw/etc")).unwrap();
        assert!(matches!(host_path(&mounts, "logs/etc/passwd"), Err(CapError::Denied(_))), "through a symlink");
        std::fs::write(dir.path().join("outside"), b"x").unwrap();
        std::fs::hard_link(dir.path().join("outside"), dir.path().join("rw/linked")).unwrap();
        assert!(matches!(host_path(&mounts, "logs/linked"), Err(CapError::Denied(_))), "a hard link");
    }

    #[test]
    fn paths_handed_to_programs_resolve_beneath_the_mount() {
        let dir = tempfile::tempdir().unwrap();
        let mounts = mounts(dir.path());
        let rw = dir.path().join("rw").canonicalize().unwrap();
        std::fs::create_dir(rw.join("sub")).unwrap();
        std::os::unix::fs::symlink("sub", rw.join("in")).unwrap();
        assert_eq!(host_path(&mounts, "logs/in/x").unwrap(), rw.join("sub/x"), "a symlink that stays inside");
        assert_eq!(host_path(&mounts, "logs").unwrap(), rw, "the mount itself");
        std::os::unix::fs::symlink("..", rw.join("up")).unwrap();
        let escaped = host_path(&mounts, "logs/up/outside").unwrap_err();
        assert!(matches!(&escaped, CapError::Denied(r) if r.contains("leaves the granted directory")), "{escaped:?}");
        std::os::unix::fs::symlink("../..", rw.join("sub/upup")).unwrap();
        assert!(matches!(host_path(&mounts, "logs/sub/upup"), Err(CapError::Denied(_))), "an escape to make");
        std::os::unix::fs::symlink(rw.join("sub"), rw.join("absolute")).unwrap();
        assert!(
            matches!(host_path(&mounts, "logs/absolute/x"), Err(CapError::Denied(_))),
            "an absolute symlink, even to inside: cap-std resolves none"
        );
        std::os::unix::fs::symlink("missing", rw.join("dangling-here")).unwrap();
        let dangling = host_path(&mounts, "logs/dangling-here").unwrap_err();
        assert!(matches!(&dangling, CapError::Denied(r) if r.contains("symlink to nowhere")), "{dangling:?}");
        assert!(matches!(host_path(&mounts, "logs/nowhere/x"), Err(CapError::NotFound)), "a missing parent");
    }

    #[test]
    fn only_cap_std_escapes_read_as_leaving_the_directory() {
        let refused = io_error(std::io::Error::from_raw_os_error(rustix::io::Errno::ACCESS.raw_os_error()));
        assert!(matches!(&refused, CapError::Denied(r) if r.contains("operating system refused")), "{refused:?}");
        let dir = tempfile::tempdir().unwrap();
        let mounts = mounts(dir.path());
        std::os::unix::fs::symlink("/etc", dir.path().join("rw/etc")).unwrap();
        let error = mounts[0].dir.open("etc/passwd").unwrap_err();
        assert!(escapes(&error), "{error:?}");
        assert!(matches!(io_error(error), CapError::Denied(r) if r.contains("leaves the granted directory")));
    }

    #[test]
    fn fifos_and_hard_links_are_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let mounts = mounts(dir.path());
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, b"secret").unwrap();
        std::fs::hard_link(&outside, dir.path().join("rw/link.txt")).unwrap();
        let target = resolve(&mounts, "logs/link.txt", Access::Ro).unwrap();
        assert!(matches!(open_regular(&target, OpenOptions::new().read(true), false), Err(CapError::Denied(_))));

        let status = std::process::Command::new("mkfifo").arg(dir.path().join("rw/fifo")).status().unwrap();
        assert!(status.success());
        let target = resolve(&mounts, "logs/fifo", Access::Ro).unwrap();
        assert!(matches!(open_regular(&target, OpenOptions::new().read(true), false), Err(CapError::Invalid(_))));
    }
}
