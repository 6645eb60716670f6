//! The control plane: it keeps apart the identity that proposes (an agent),
//! the one that approves (a person) and the one that executes (the
//! runner).
//!
//! ```text
//! submit: SignedJob ─verify─▶ VerifiedJob ─admit─▶ installed, trusted artifact + grant
//!         ─policy(apply)─▶ Decision ─▶ store: submitted | denied
//! worker: submitted ─policy(plan)─▶ plan (read-only grant) ─▶ waiting-approval | approved
//! vote:   approval signed over (job, job hash, plan hash, vote) ─▶ approved | rejected
//! worker: approved ─▶ admit again, re-plan, policy(apply) again, approvals, budgets
//!         ─▶ applying ─▶ verifying ─▶ succeeded | rolling-back ─▶ rolled-back | rollback-failed
//! start:  applying | verifying | rolling-back ─▶ rollback from the journal
//! ```
//!
//! One file per step: `submission` takes signed jobs, `votes` records
//! approvals and rejections, [`admission`] is the one place a job is
//! admitted to run (for `salve run` too), `worker` plans and applies,
//! `pool` runs several at once, `recovery` rolls back what a stopped
//! runner left, `lifecycle` keeps
//! the store in step with the runner's phases, `facts` is what the policy
//! is asked, `review` what an approver reviews, `install` puts artifacts
//! where jobs can name them.
//!
//! [`ControlPlane`] holds what every command needs (the store, the trust
//! store, the policy, the runner's config). [`Worker`] adds the runner and
//! is the only writer of the audit log: steps taken by other processes
//! (submissions, votes) wait in the store's outbox until the worker relays
//! them into the log, before it acts on their job.
//!
//! # Errors
//! [`ControlError`] says which check refused a job or a vote, and what to
//! do; [`crate::fault::Classify`] says whose fault it is.

pub mod admission;
mod error;
mod facts;
mod install;
mod lifecycle;
mod plan;
mod pool;
mod recovery;
mod review;
mod submission;
mod votes;
mod worker;

pub use admission::{Admitted, Checks, Floor, Signed, SignedPlaybook, admit};
pub use error::ControlError;
pub use lifecycle::OnMove;
pub use plan::{plan_hash, plan_json};
pub use pool::Pool;
pub use review::Review;
pub use submission::Submitted;
pub use votes::{Ballot, NO_PLAN, voted_plan};
pub use worker::{Step, Worker};

use crate::data_dir::DataDir;
use crate::policy::{Policy, RunnerConfig};
use crate::store::{JobRecord, JobStore, SqliteStore};
use crate::trust::TrustStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The trust store, policy and config as read again.
pub struct Loaded {
    trust: TrustStore,
    policy: Policy,
    config: RunnerConfig,
}

/// What every control-plane command shares. Cheap to clone: the store is
/// shared, the trust store, policy and config are copied.
#[derive(Clone)]
pub struct ControlPlane {
    /// The state directory.
    pub data_dir: PathBuf,
    layout: DataDir,
    pub store: Arc<dyn JobStore>,
    pub trust: TrustStore,
    pub policy: Policy,
    pub config: RunnerConfig,
    trust_path: PathBuf,
}

impl ControlPlane {
    /// Opens the control plane of a data directory: its store, the trust
    /// store at `trust_path`, its policy and config.
    pub fn open(data_dir: &Path, trust_path: &Path) -> Result<ControlPlane, ControlError> {
        ControlPlane::open_in(&DataDir::new(data_dir), trust_path)
    }

    /// [`ControlPlane::open`] of a layout whose configuration may be apart
    /// from its state.
    pub fn open_in(layout: &DataDir, trust_path: &Path) -> Result<ControlPlane, ControlError> {
        let store = Arc::new(SqliteStore::open(layout.root())?);
        ControlPlane::with_store_in(layout, trust_path, store)
    }

    /// [`ControlPlane::open`] with a job store of the caller's.
    pub fn with_store(
        data_dir: &Path,
        trust_path: &Path,
        store: Arc<dyn JobStore>,
    ) -> Result<ControlPlane, ControlError> {
        ControlPlane::with_store_in(&DataDir::new(data_dir), trust_path, store)
    }

    fn with_store_in(
        layout: &DataDir,
        trust_path: &Path,
        store: Arc<dyn JobStore>,
    ) -> Result<ControlPlane, ControlError> {
        let (trust, policy, config) = ControlPlane::read(layout, trust_path)?;
        Ok(ControlPlane {
            data_dir: layout.root().to_path_buf(),
            layout: layout.clone(),
            store,
            trust,
            policy,
            config,
            trust_path: trust_path.into(),
        })
    }

    fn read(layout: &DataDir, trust_path: &Path) -> Result<(TrustStore, Policy, RunnerConfig), ControlError> {
        let trust = TrustStore::load(trust_path)?;
        let policy_path = layout.policy();
        if !policy_path.exists() {
            return Err(ControlError::NoPolicy { path: policy_path });
        }
        let policy = Policy::load(&policy_path)?;
        let kept = layout.policies();
        crate::policy::keep(&kept, &policy_path, policy.hash())
            .map_err(|source| ControlError::Write { path: kept, source })?;
        let config = RunnerConfig::load(&layout.config())?;
        Ok((trust, policy, config))
    }

    /// Reads the trust store, the policy and the config again, so that a
    /// revoked key, a new policy or a new change window count from the next
    /// decision on. On an error, nothing changes.
    pub fn reload(&mut self) -> Result<(), ControlError> {
        let loaded = self.load_again()?;
        self.take(loaded);
        Ok(())
    }

    /// [`ControlPlane::reload`] in two steps, so that a shared control
    /// plane is locked only to swap: read the files (this), then
    /// [`ControlPlane::take`] what was read.
    pub fn load_again(&self) -> Result<Loaded, ControlError> {
        let (trust, policy, config) = ControlPlane::read(&self.layout, &self.trust_path)?;
        Ok(Loaded { trust, policy, config })
    }

    /// A control plane on the same store with what `loaded` holds.
    pub fn with(&self, loaded: Loaded) -> ControlPlane {
        let Loaded { trust, policy, config } = loaded;
        ControlPlane {
            data_dir: self.data_dir.clone(),
            layout: self.layout.clone(),
            store: Arc::clone(&self.store),
            trust,
            policy,
            config,
            trust_path: self.trust_path.clone(),
        }
    }

    pub fn take(&mut self, loaded: Loaded) {
        let Loaded { trust, policy, config } = loaded;
        self.trust = trust;
        self.policy = policy;
        self.config = config;
    }

    /// Where the configuration and the state are.
    pub fn layout(&self) -> &DataDir {
        &self.layout
    }

    /// The job `id`, or an error that says there is none.
    pub fn job(&self, id: &str) -> Result<JobRecord, ControlError> {
        self.store.job(id)?.ok_or_else(|| ControlError::UnknownJob { id: id.into() })
    }
}
