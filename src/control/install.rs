//! Installing an artifact in the data directory, where jobs can name it.

use super::{ControlError, ControlPlane};
use crate::data_dir::DataDir;
use crate::store::InstalledArtifact;
use std::io::Write as _;
use std::path::Path;
use std::time::SystemTime;

impl ControlPlane {
    /// Verifies `bytes` (named `name` in errors) as an artifact for
    /// `environment` and copies it into
    /// the data directory (atomically, durably), then records it. The same
    /// bytes installed again are a no-op; other bytes under a name and
    /// version already installed are refused.
    pub fn install(
        &self,
        name: &str,
        bytes: &[u8],
        environment: &str,
        now: SystemTime,
    ) -> Result<InstalledArtifact, ControlError> {
        let verified = crate::artifact::verify(bytes, &self.trust, environment, now).map_err(|source| {
            ControlError::Artifact { name: name.into(), environment: environment.into(), source: Box::new(source) }
        })?;
        let manifest = verified.manifest();
        let dir = DataDir::new(&self.data_dir).artifacts();
        let path = dir.join(format!("{}.wasm", verified.digest()));
        write_atomically(&dir, &path, bytes).map_err(|source| ControlError::Write { path: path.clone(), source })?;
        let installed = InstalledArtifact {
            digest: verified.digest().to_string(),
            name: manifest.name.clone(),
            version: manifest.version.to_string(),
            path,
        };
        self.store.install(&installed)?;
        Ok(installed)
    }
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}
