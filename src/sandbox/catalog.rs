//! The verified-artifact cache.
//!
//! [`Catalog`] verifies and compiles an artifact once per digest per
//! process. The digest is taken from the bytes every time they are read, so
//! a cached entry only ever stands for those exact bytes; the signers are
//! checked against the trust store again on every use (keys expire and are
//! revoked while a runner lives). Compiled code is also cached on disk, by
//! wasmtime's compilation cache (see [`SandboxConfig`](super::SandboxConfig)),
//! so a second `salve run` of the same artifact does not compile it again.
//!
//! It lives in the sandbox, not in [`crate::artifact`], because it compiles:
//! verifying is the artifact's job, compiling the sandbox's.

use super::{Playbook, Sandbox};
use crate::artifact::{ArtifactError, VerifiedArtifact, digest, verify};
use crate::trust::TrustStore;
use std::collections::HashMap;
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
        let playbook = Arc::new(self.sandbox.load(&verified)?);
        self.loaded.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (verified, Arc::clone(&playbook)));
        Ok(playbook)
    }
}
