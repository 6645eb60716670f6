//! The verified-artifact cache, and rollback protection.
//!
//! [`Catalog`] verifies and compiles an artifact once per digest per
//! process. The digest is taken from the bytes every time they are read, so
//! a cached entry only ever stands for those exact bytes; the signers are
//! checked against the trust store again on every use (keys expire and are
//! revoked while a runner lives). Compiled code is also cached on disk, by
//! wasmtime's compilation cache (see [`crate::sandbox::SandboxConfig`]), so
//! a second `salve run` of the same artifact does not compile it again.
//!
//! [`VersionFloor`] remembers the highest version of each playbook run in a
//! data directory and refuses anything lower, unless explicitly overridden.

use super::{ArtifactError, VerifiedArtifact, digest, verify};
use crate::sandbox::{Playbook, Sandbox};
use crate::trust::TrustStore;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Verified, compiled playbooks of this process, by artifact digest.
pub struct Catalog {
    sandbox: Sandbox,
    loaded: Mutex<HashMap<String, (VerifiedArtifact, Arc<Playbook>)>>,
}

impl Catalog {
    pub fn new(sandbox: Sandbox) -> Catalog {
        Catalog { sandbox, loaded: Mutex::default() }
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Verifies `bytes` as an artifact for `environment` and returns the
    /// compiled playbook, from this process's cache when the same bytes were
    /// loaded before.
    pub fn load(
        &self,
        bytes: &[u8],
        trust: &TrustStore,
        environment: &str,
        now: SystemTime,
    ) -> Result<Arc<Playbook>, ArtifactError> {
        let key = digest(bytes);
        if let Some(found) = self.get(&key, trust, environment, now) {
            return found;
        }
        let verified = verify(bytes, trust, environment, now)?;
        self.insert(key, verified)
    }

    /// A playbook loaded before, by its artifact digest, its signers checked
    /// against the trust store again: what a runner does for each job that
    /// names an artifact it already holds. `None` if this process has not
    /// loaded it.
    pub fn get(
        &self,
        digest: &str,
        trust: &TrustStore,
        environment: &str,
        now: SystemTime,
    ) -> Option<Result<Arc<Playbook>, ArtifactError>> {
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let (verified, playbook) = loaded.get(digest)?;
        Some(verified.recheck(trust, environment, now).map(|()| Arc::clone(playbook)))
    }

    fn insert(&self, key: String, verified: VerifiedArtifact) -> Result<Arc<Playbook>, ArtifactError> {
        let playbook = Arc::new(self.sandbox.load_verified(&verified)?);
        self.loaded.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (verified, Arc::clone(&playbook)));
        Ok(playbook)
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VersionError {
    #[error(
        "{name} {version} is older than {highest}, which already ran here; rollback protection refuses it \
         (pass --allow-downgrade to run it anyway; the override is audited)"
    )]
    Downgrade { name: String, version: semver::Version, highest: semver::Version },
    #[error("cannot read or write the version record {path}: {reason}")]
    Store { path: PathBuf, reason: String },
}

/// The highest version of each playbook that ran in a data directory.
pub struct VersionFloor {
    path: PathBuf,
}

/// What [`VersionFloor::admit`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Not lower than anything that ran before.
    Current,
    /// Lower than `highest`, allowed by an explicit override.
    Downgrade { highest: semver::Version },
}

impl VersionFloor {
    pub fn new(data_dir: &Path) -> VersionFloor {
        VersionFloor { path: data_dir.join("versions.json") }
    }

    fn read(&self) -> Result<BTreeMap<String, semver::Version>, VersionError> {
        let err = |reason: String| VersionError::Store { path: self.path.clone(), reason };
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| err(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Refuses a version lower than the highest that ran, unless
    /// `allow_downgrade`.
    pub fn admit(
        &self,
        name: &str,
        version: &semver::Version,
        allow_downgrade: bool,
    ) -> Result<Admission, VersionError> {
        match self.read()?.get(name) {
            Some(highest) if version < highest => {
                if allow_downgrade {
                    Ok(Admission::Downgrade { highest: highest.clone() })
                } else {
                    Err(VersionError::Downgrade {
                        name: name.into(),
                        version: version.clone(),
                        highest: highest.clone(),
                    })
                }
            }
            _ => Ok(Admission::Current),
        }
    }

    /// Records that `version` of `name` ran (raising the floor if higher).
    /// Written atomically; callers hold the data directory's audit lock, so
    /// there is one writer.
    pub fn record(&self, name: &str, version: &semver::Version) -> Result<(), VersionError> {
        let err = |reason: String| VersionError::Store { path: self.path.clone(), reason };
        let mut versions = self.read()?;
        if versions.get(name).is_some_and(|highest| highest >= version) {
            return Ok(());
        }
        versions.insert(name.to_string(), version.clone());
        let temp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&versions).map_err(|e| err(e.to_string()))?;
        std::fs::write(&temp, text).map_err(|e| err(e.to_string()))?;
        std::fs::File::open(&temp).and_then(|f| f.sync_all()).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&temp, &self.path).map_err(|e| err(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_only_go_up_unless_overridden() {
        let dir = tempfile::tempdir().unwrap();
        let floor = VersionFloor::new(dir.path());
        let v = |s: &str| semver::Version::parse(s).unwrap();
        assert_eq!(floor.admit("p", &v("1.0.0"), false).unwrap(), Admission::Current);
        floor.record("p", &v("1.2.0")).unwrap();
        floor.record("p", &v("1.1.0")).unwrap();
        assert!(matches!(floor.admit("p", &v("1.1.9"), false), Err(VersionError::Downgrade { .. })));
        assert_eq!(floor.admit("p", &v("1.1.9"), true).unwrap(), Admission::Downgrade { highest: v("1.2.0") });
        assert_eq!(floor.admit("p", &v("1.2.0"), false).unwrap(), Admission::Current);
        assert_eq!(floor.admit("q", &v("0.1.0"), false).unwrap(), Admission::Current);
    }
}
