//! The data directory's layout: where each piece of a runner's
//! configuration and state lives. Every path into a data directory is
//! spelled here, and nowhere else.
//!
//! For local use, one directory holds both. A service keeps them apart
//! ([`DataDir::split`]): the configuration (the first five lines below,
//! `/etc/salve` say) only read, the state (the rest, `/var/lib/salve`)
//! written. Under systemd, `secrets.toml` and `runner.key` may come from
//! its credentials directory instead ([`DataDir::with_credentials`]).
//!
//! ```text
//! DATA_DIR/
//!   trust.toml      trust store: keys, roles, environments, revocations
//!   policy.cedar    the Cedar policy
//!   salve.toml      the runner's config: change windows, budgets, scopes
//!   secrets.toml    credentials (mode 0600)
//!   keys/           runner.key, dev-author.key (`salve init`)
//!   ──────────────  (state from here on)
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

/// One data directory, or a configuration directory and a state
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    /// The state.
    root: PathBuf,
    /// The configuration (the same directory, unless split).
    config: PathBuf,
    /// A directory whose `secrets.toml` and `runner.key`, when there, are
    /// taken before the configuration's (systemd's `LoadCredential=`).
    credentials: Option<PathBuf>,
}

/// File name of the runner's key, in `keys/` or a credentials directory.
const RUNNER_KEY_FILE: &str = "runner.key";

impl DataDir {
    /// One directory for configuration and state.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        let root = root.into();
        DataDir { config: root.clone(), root, credentials: None }
    }

    /// Configuration in `config` (only read), state in `state`.
    pub fn split(config: impl Into<PathBuf>, state: impl Into<PathBuf>) -> DataDir {
        DataDir { root: state.into(), config: config.into(), credentials: None }
    }

    /// Takes `secrets.toml` and `runner.key` from `dir` when they are there
    /// (systemd sets `$CREDENTIALS_DIRECTORY` to the files of
    /// `LoadCredential=`).
    pub fn with_credentials(self, dir: impl Into<PathBuf>) -> DataDir {
        DataDir { credentials: Some(dir.into()), ..self }
    }

    /// The state directory (the data directory, unless split).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The configuration directory (the data directory, unless split).
    pub fn config_root(&self) -> &Path {
        &self.config
    }

    /// `name` in the credentials directory, if it is there.
    fn credential(&self, name: &str) -> Option<PathBuf> {
        self.credentials.as_ref().map(|dir| dir.join(name)).filter(|path| path.exists())
    }

    pub fn trust(&self) -> PathBuf {
        self.config.join(TRUST_FILE)
    }

    pub fn policy(&self) -> PathBuf {
        self.config.join(POLICY_FILE)
    }

    pub fn config(&self) -> PathBuf {
        self.config.join(CONFIG_FILE)
    }

    pub fn secrets(&self) -> PathBuf {
        self.credential(SECRETS_FILE).unwrap_or_else(|| self.config.join(SECRETS_FILE))
    }

    pub fn keys(&self) -> PathBuf {
        self.config.join("keys")
    }

    /// The runner's key: from the credentials directory, or as `salve
    /// init` writes it.
    pub fn runner_key(&self) -> PathBuf {
        self.credential(RUNNER_KEY_FILE).unwrap_or_else(|| self.keys().join(RUNNER_KEY_FILE))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_layout_reads_configuration_from_one_place_and_keeps_state_in_another() {
        let layout = DataDir::split("/etc/salve", "/var/lib/salve");
        for config in [layout.trust(), layout.policy(), layout.config(), layout.secrets(), layout.runner_key()] {
            assert!(config.starts_with("/etc/salve"), "{}", config.display());
        }
        for state in [layout.store(), layout.audit_log(), layout.journal(), layout.cache(), layout.versions()] {
            assert!(state.starts_with("/var/lib/salve"), "{}", state.display());
        }
        let one = DataDir::new("/d");
        assert_eq!((one.root(), one.config_root()), (Path::new("/d"), Path::new("/d")));
    }

    #[test]
    fn credentials_are_taken_from_their_directory_only_when_there() {
        let dir = tempfile::tempdir().unwrap();
        let layout = DataDir::split("/etc/salve", "/var/lib/salve").with_credentials(dir.path());
        assert_eq!(layout.secrets(), Path::new("/etc/salve/secrets.toml"));
        std::fs::write(dir.path().join("secrets.toml"), "").unwrap();
        std::fs::write(dir.path().join("runner.key"), "").unwrap();
        assert_eq!(layout.secrets(), dir.path().join("secrets.toml"));
        assert_eq!(layout.runner_key(), dir.path().join("runner.key"));
        assert_eq!(layout.trust(), Path::new("/etc/salve/trust.toml"), "only credentials move");
    }
}
