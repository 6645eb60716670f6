//! Admission: the one place that decides whether a job may run its
//! playbook under its grant. Every caller (`salve run`, a submission, the
//! worker before plan and apply, recovery before a rollback) goes through
//! [`admit`], which checks in one order:
//!
//! 1. the parameters against the signed manifest's schema;
//! 2. the version floor (rollback protection), as [`Checks::floor`] says;
//! 3. the grant, opened within what the manifest declares, capped by the
//!    runner's mutation budget ([`Checks::mutations_at_most`]);
//! 4. the environment's scopes from the runner's config
//!    ([`Checks::scopes`]).
//!
//! Its result, [`Admitted`], can only be built here, so holding one means
//! every check passed. Where the signed playbook comes from differs by
//! caller (a file, the store's installed copy, this process's catalog);
//! the functions that find it are here too, and each yields a value whose
//! manifest is not optional ([`Signed`]).

use super::{ControlError, ControlPlane};
use crate::artifact::floor::{Admission, VersionFloor};
use crate::artifact::manifest::Manifest;
use crate::artifact::{VerifiedArtifact, digest};
use crate::grant::{Grant, GrantSpec};
use crate::job::JobRequest;
use crate::policy::RunnerConfig;
use crate::sandbox::Catalog;
use crate::sandbox::Playbook;
use crate::store::{InstalledArtifact, JobRecord};
use crate::time::Timestamp;
use crate::trust::TrustStore;
use std::sync::Arc;
use std::time::SystemTime;

/// A playbook that came from a verified, signed artifact: its manifest is
/// there by construction.
pub trait Signed {
    fn manifest(&self) -> &Manifest;
}

impl Signed for VerifiedArtifact {
    fn manifest(&self) -> &Manifest {
        VerifiedArtifact::manifest(self)
    }
}

/// A compiled playbook whose artifact verified (signers and manifest).
#[derive(Clone)]
pub struct SignedPlaybook {
    playbook: Arc<Playbook>,
}

impl SignedPlaybook {
    /// Verifies `bytes` as an artifact for `environment` and compiles it
    /// (through `catalog`'s cache). `name` says which playbook in errors.
    pub fn load(
        catalog: &Catalog,
        name: &str,
        bytes: &[u8],
        trust: &TrustStore,
        environment: &str,
        now: SystemTime,
    ) -> Result<SignedPlaybook, ControlError> {
        let loaded = catalog.load(bytes, trust, environment, now);
        SignedPlaybook::checked(name, environment, loaded)
    }

    fn checked(
        name: &str,
        environment: &str,
        loaded: Result<Arc<Playbook>, crate::artifact::ArtifactError>,
    ) -> Result<SignedPlaybook, ControlError> {
        let artifact = |source| ControlError::Artifact {
            name: name.to_string(),
            environment: environment.to_string(),
            source: Box::new(source),
        };
        let playbook = loaded.map_err(artifact)?;
        // The catalog compiles verified artifacts only, and those always
        // carry their manifest.
        assert!(playbook.manifest().is_some(), "a verified artifact has a manifest");
        Ok(SignedPlaybook { playbook })
    }

    pub fn playbook(&self) -> &Playbook {
        &self.playbook
    }

    /// The compiled playbook, shared.
    pub fn shared(&self) -> Arc<Playbook> {
        Arc::clone(&self.playbook)
    }
}

impl Signed for SignedPlaybook {
    fn manifest(&self) -> &Manifest {
        self.playbook.manifest().expect("checked when built")
    }
}

/// What the version floor does at admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    /// Refuse a version older than one that ran here.
    Enforce,
    /// Let an older version run (`salve run --allow-downgrade`); the
    /// caller audits [`Admitted::downgrade`].
    AllowDowngrade,
    /// Do not look: rolling back what ran must not be stopped by a floor
    /// raised since.
    Skip,
}

/// The checks that differ between callers of [`admit`], each named.
#[derive(Debug, Clone, Copy)]
pub struct Checks<'a> {
    pub floor: Floor,
    /// The runner's config, whose per-environment scopes the grant must
    /// stay within; `None` where no runner config applies.
    pub scopes: Option<&'a RunnerConfig>,
    /// The most mutating host calls one job may make, if capped.
    pub mutations_at_most: Option<u64>,
}

impl<'a> Checks<'a> {
    /// For a submission, a plan or an apply by the worker.
    pub fn to_run(config: &'a RunnerConfig) -> Checks<'a> {
        Checks {
            floor: Floor::Enforce,
            scopes: Some(config),
            mutations_at_most: Some(config.budgets.mutations_per_job),
        }
    }

    /// To roll back what ran: a floor raised or a scope narrowed since
    /// must not stop the target from being restored.
    pub fn to_roll_back(config: &'a RunnerConfig) -> Checks<'a> {
        Checks { floor: Floor::Skip, scopes: None, mutations_at_most: Some(config.budgets.mutations_per_job) }
    }
}

/// A job admitted to run: its signed playbook and the grant opened for it.
pub struct Admitted<P> {
    pub playbook: P,
    pub grant: Grant,
    /// Set when an older version was let run ([`Floor::AllowDowngrade`]):
    /// the highest version that ran before.
    pub downgrade: Option<semver::Version>,
}

/// Admits `playbook` to run in `environment` with `parameters` under
/// `spec`: every check of the module docs, in that order.
pub fn admit<P: Signed>(
    playbook: P,
    parameters: &[(String, String)],
    spec: &GrantSpec,
    environment: &str,
    floor: &VersionFloor,
    checks: Checks<'_>,
) -> Result<Admitted<P>, ControlError> {
    let manifest = playbook.manifest();
    manifest.check_parameters(parameters)?;
    let downgrade = match checks.floor {
        Floor::Skip => None,
        Floor::Enforce | Floor::AllowDowngrade => {
            match floor.admit(&manifest.name, &manifest.version, checks.floor == Floor::AllowDowngrade)? {
                Admission::Current => None,
                Admission::Downgrade { highest } => Some(highest),
            }
        }
    };
    let mut grant = Grant::open(spec, manifest)?;
    if let Some(max) = checks.mutations_at_most {
        grant = grant.with_mutations_at_most(max);
    }
    if let Some(config) = checks.scopes {
        config.check_scope(environment, &grant)?;
    }
    Ok(Admitted { playbook, grant, downgrade })
}

impl ControlPlane {
    /// The installed artifact a job names.
    pub fn resolve(&self, request: &JobRequest) -> Result<InstalledArtifact, ControlError> {
        let reference = &request.playbook;
        let wanted = match (&reference.name, &reference.version, &reference.digest) {
            (Some(n), Some(v), _) => format!("{n} {v}"),
            (_, _, Some(d)) => format!("with digest {d}"),
            _ => "(none named)".into(),
        };
        let name_version = reference.name.as_deref().zip(reference.version.as_deref());
        let found = self.store.artifact(name_version, None)?;
        let found = match (&found, &reference.digest) {
            (Some(found), Some(digest)) if &found.digest != digest => {
                return Err(ControlError::RefMismatch {
                    asked: wanted,
                    digest: digest.clone(),
                    name: found.name.clone(),
                    version: found.version.clone(),
                });
            }
            (Some(_), _) => found,
            (None, Some(digest)) if name_version.is_none() => self.store.artifact(None, Some(digest))?,
            (None, _) => None,
        };
        found.ok_or(ControlError::NotInstalled { wanted })
    }

    /// Reads an installed artifact and verifies it for `environment`: its
    /// bytes must still have the digest it was installed with.
    pub fn verify_installed(
        &self,
        installed: &InstalledArtifact,
        environment: &str,
        now: SystemTime,
    ) -> Result<(Vec<u8>, VerifiedArtifact), ControlError> {
        let bytes = self.installed_bytes(installed)?;
        let verified = crate::artifact::verify(&bytes, &self.trust, environment, now).map_err(|source| {
            ControlError::Artifact {
                name: installed.name.clone(),
                environment: environment.into(),
                source: Box::new(source),
            }
        })?;
        Ok((bytes, verified))
    }

    fn installed_bytes(&self, installed: &InstalledArtifact) -> Result<Vec<u8>, ControlError> {
        let bytes = std::fs::read(&installed.path)
            .map_err(|e| ControlError::Installed { path: installed.path.clone(), reason: e.to_string() })?;
        if digest(&bytes) != installed.digest {
            return Err(ControlError::Installed {
                path: installed.path.clone(),
                reason: format!("its bytes changed since it was installed (digest {})", installed.digest),
            });
        }
        Ok(bytes)
    }

    /// The compiled playbook of a stored job, its signers checked again at
    /// `now`: from `catalog` when this process compiled it before, else
    /// from the installed artifact.
    pub fn compiled(
        &self,
        catalog: &Catalog,
        job: &JobRecord,
        now: SystemTime,
    ) -> Result<SignedPlaybook, ControlError> {
        let installed = self.store.artifact(None, Some(&job.digest))?.ok_or_else(|| ControlError::NotInstalled {
            wanted: format!("{} {} ({})", job.playbook, job.playbook_version, job.digest),
        })?;
        if let Some(found) = catalog.get(&job.digest, &self.trust, &job.environment, now) {
            return SignedPlaybook::checked(&job.playbook, &job.environment, found);
        }
        let bytes = self.installed_bytes(&installed)?;
        SignedPlaybook::load(catalog, &job.playbook, &bytes, &self.trust, &job.environment, now)
    }

    /// Job `job` as its agent signed it, checked again at `at`: the stored
    /// envelope must hash to the job hash and verify under a key that is
    /// still a trusted agent key for the environment, and the columns the
    /// store keeps beside it (id, agent, environment, system, expiry,
    /// playbook and artifact) must say what the envelope says. What runs
    /// and what approvers review is taken from the envelope, never from the
    /// columns.
    pub fn signed_job(&self, job: &JobRecord, at: SystemTime) -> Result<JobRecord, ControlError> {
        let request = job.envelope.reopen(&self.trust, &job.job_hash, at)?;
        let tampered = |what: String| ControlError::Tampered { id: job.id.clone(), what };
        if job.envelope.key_id != job.agent {
            return Err(tampered(format!("agent {} in the store, {} in the envelope", job.agent, job.envelope.key_id)));
        }
        let columns = [
            ("id", &job.id, &request.id),
            ("environment", &job.environment, &request.target.environment),
            ("system", &job.system, &request.target.system),
        ];
        if let Some((what, stored, signed)) = columns.iter().find(|(_, stored, signed)| stored != signed) {
            return Err(tampered(format!("{what} {stored:?} in the store, {signed:?} signed")));
        }
        let signed_expiry = Timestamp::parse_rfc3339(&request.expires_at).ok().map(Timestamp::unix_secs);
        if signed_expiry != Some(job.expires_at.unix_secs()) {
            return Err(tampered(format!("expiry {} in the store, {} signed", job.expires_at, request.expires_at)));
        }
        let installed = self.resolve(&request)?;
        if (&installed.digest, &installed.name, &installed.version)
            != (&job.digest, &job.playbook, &job.playbook_version)
        {
            return Err(tampered(format!(
                "playbook {} {} ({}) in the store, {} {} ({}) named",
                job.playbook, job.playbook_version, job.digest, installed.name, installed.version, installed.digest
            )));
        }
        Ok(JobRecord { request, ..job.clone() })
    }

    /// A stored job as signed, and its playbook and grant, all checked
    /// again at `at` with `checks`.
    pub fn admit_stored(
        &self,
        catalog: &Catalog,
        job: &JobRecord,
        at: SystemTime,
        checks: Checks<'_>,
    ) -> Result<(JobRecord, Admitted<SignedPlaybook>), ControlError> {
        let job = self.signed_job(job, at)?;
        let admitted = self.admit_job(catalog, &job, at, checks)?;
        Ok((job, admitted))
    }

    /// The playbook and grant of a job already checked as signed.
    pub(super) fn admit_job(
        &self,
        catalog: &Catalog,
        job: &JobRecord,
        at: SystemTime,
        checks: Checks<'_>,
    ) -> Result<Admitted<SignedPlaybook>, ControlError> {
        let playbook = self.compiled(catalog, job, at)?;
        let floor = VersionFloor::new(&self.data_dir);
        admit(playbook, &job.request.parameter_list(), &job.request.grant, &job.environment, &floor, checks)
    }
}
