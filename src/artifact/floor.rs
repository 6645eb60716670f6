//! Rollback protection: [`VersionFloor`] remembers the highest version of
//! each playbook run in a data directory and refuses anything lower, unless
//! explicitly overridden.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
