//! The data directory's layout: where each piece of a runner's
//! configuration and state lives. Every path into a data directory is
//! spelled here, and nowhere else.
//!
//! ```text
//! DATA_DIR/
//!   trust.toml      trust store: keys, roles, environments, revocations
//!   policy.cedar    the Cedar policy
//!   salve.toml      the runner's config: change windows, budgets, scopes
//!   secrets.toml    credentials (mode 0600)
//!   keys/           runner.key, dev-author.key (`salve init`)
//!   salve.db        the job store (SQLite)
//!   audit.jsonl     the audit log; audit.head its durable anchor
//!   journal/        rollback journals of jobs in flight
//!   artifacts/      installed artifacts, by digest
//!   versions.json   the version floor (rollback protection)
//!   cache/          compiled components
//!   webhooks.jsonl  every webhook delivery attempt (`salve serve`)
//! ```

use std::path::{Path, PathBuf};

/// File name of the trust store.
pub const TRUST_FILE: &str = "trust.toml";
/// File name of the policy.
pub const POLICY_FILE: &str = "policy.cedar";
/// File name of the runner's config.
pub const CONFIG_FILE: &str = "salve.toml";
/// File name of the credentials.
pub const SECRETS_FILE: &str = "secrets.toml";
/// File name of the job store.
pub const STORE_FILE: &str = "salve.db";
/// File name of the audit log.
pub const AUDIT_LOG_FILE: &str = "audit.jsonl";
/// File name of the audit log's anchor.
pub const AUDIT_HEAD_FILE: &str = "audit.head";
/// File name of the version floor.
pub const VERSIONS_FILE: &str = "versions.json";

/// One data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn trust(&self) -> PathBuf {
        self.root.join(TRUST_FILE)
    }

    pub fn policy(&self) -> PathBuf {
        self.root.join(POLICY_FILE)
    }

    pub fn config(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }

    pub fn secrets(&self) -> PathBuf {
        self.root.join(SECRETS_FILE)
    }

    pub fn keys(&self) -> PathBuf {
        self.root.join("keys")
    }

    /// The runner's key, as `salve init` writes it.
    pub fn runner_key(&self) -> PathBuf {
        self.keys().join("runner.key")
    }

    /// The dev author key, as `salve init` writes it.
    pub fn dev_author_key(&self) -> PathBuf {
        self.keys().join("dev-author.key")
    }

    pub fn store(&self) -> PathBuf {
        self.root.join(STORE_FILE)
    }

    pub fn audit_log(&self) -> PathBuf {
        self.root.join(AUDIT_LOG_FILE)
    }

    pub fn audit_head(&self) -> PathBuf {
        self.root.join(AUDIT_HEAD_FILE)
    }

    pub fn journal(&self) -> PathBuf {
        self.root.join("journal")
    }

    pub fn artifacts(&self) -> PathBuf {
        self.root.join("artifacts")
    }

    /// Every policy text decisions were made with, by hash
    /// (`policies/SHA256.cedar`), for evidence bundles.
    pub fn policies(&self) -> PathBuf {
        self.root.join("policies")
    }

    pub fn versions(&self) -> PathBuf {
        self.root.join(VERSIONS_FILE)
    }

    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }

    pub fn webhooks(&self) -> PathBuf {
        self.root.join("webhooks.jsonl")
    }
}
