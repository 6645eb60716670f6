//! The trust store (`trust.toml`): which public keys salve trusts, for
//! which role, in which environments, until when; and which keys are
//! revoked.
//!
//! ```toml
//! [[keys]]
//! name = "dev-author"
//! id = "3f0c..."                 # derived from public_key; checked on load
//! role = "author"                # author | agent | approver | runner
//! public_key = "base64..."
//! environments = ["dev"]         # "*" for every environment
//! not_after = "2027-11-23T00:00:00Z"
//! groups = []                    # approver groups (policy)
//!
//! [[revoked]]
//! id = "9a1b..."
//! reason = "laptop lost"
//!
//! [[signatures]]                 # what an artifact needs to run there
//! environments = ["prod"]
//! signers = 2                    # distinct trusted author keys
//! groups = ["security"]          # and among them one of each group
//! ```
//!
//! Without a `[[signatures]]` rule for an environment, one trusted author
//! signature is enough there. Rules bind the set of signers: a
//! co-signature stripped from an artifact makes it fail the rule.
//!
//! # Errors
//! [`TrustError`] says which check refused a key: unknown, revoked,
//! expired, wrong role, or not trusted for the environment.

use crate::keys::{Role, decode_public, key_id};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    #[error("cannot read the trust store {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("the trust store is not valid: {0}")]
    Invalid(String),
    #[error("key {id} is not in the trust store")]
    UnknownKey { id: String },
    #[error("key {id} is revoked ({reason})")]
    Revoked { id: String, reason: String },
    #[error("key {id} ({name}) has role {actual}, but this needs a key with role {expected}")]
    WrongRole { id: String, name: String, expected: Role, actual: Role },
    #[error("key {id} ({name}) expired at {not_after}")]
    Expired { id: String, name: String, not_after: String },
    #[error("key {id} ({name}) is not trusted for environment {environment:?} (only {trusted:?})")]
    NotForEnvironment { id: String, name: String, environment: String, trusted: Vec<String> },
    #[error(
        "environment {environment:?} needs signatures by {needed} distinct trusted author keys, but the artifact \
         has {found}: co-sign it (`salve sign --key ...` by another author)"
    )]
    TooFewSigners { environment: String, needed: usize, found: usize },
    #[error(
        "environment {environment:?} needs a signature by a key of group {group:?}, and no signer is in it: have \
         a member of {group:?} co-sign the artifact"
    )]
    MissingGroup { environment: String, group: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub name: String,
    pub id: String,
    pub role: Role,
    pub public_key: String,
    pub environments: Vec<String>,
    pub not_after: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl KeyEntry {
    /// An entry trusting a public key for `environments` until `not_after`.
    pub fn new(public: &crate::keys::PublicKeyFile, environments: Vec<String>, not_after: String) -> KeyEntry {
        KeyEntry {
            name: public.name.clone(),
            id: public.id.clone(),
            role: public.role,
            public_key: public.public_key.clone(),
            environments,
            not_after,
            groups: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    pub id: String,
    pub reason: String,
}

/// What an artifact's signers must be to run in some environments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureRule {
    /// The environments the rule holds in (`"*"` for all).
    pub environments: Vec<String>,
    /// Distinct trusted author keys that must have signed.
    #[serde(default = "one")]
    pub signers: usize,
    /// Groups each of which at least one signer must be in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustFile {
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
    #[serde(default)]
    pub revoked: Vec<Revocation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<SignatureRule>,
}

/// A key the store trusts, decoded.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub entry: KeyEntry,
    pub public: VerifyingKey,
    pub not_after: SystemTime,
}

#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    keys: HashMap<String, TrustedKey>,
    revoked: HashMap<String, String>,
    signatures: Vec<SignatureRule>,
}

impl TrustStore {
    pub fn load(path: &Path) -> Result<TrustStore, TrustError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| TrustError::Read { path: path.into(), reason: e.to_string() })?;
        TrustStore::parse(&text)
    }

    pub fn parse(text: &str) -> Result<TrustStore, TrustError> {
        let file: TrustFile = toml::from_str(text).map_err(|e| TrustError::Invalid(e.to_string().trim().into()))?;
        TrustStore::from_file(file)
    }

    pub fn from_file(file: TrustFile) -> Result<TrustStore, TrustError> {
        let mut keys = HashMap::new();
        for entry in file.keys {
            let invalid =
                |reason: String| TrustError::Invalid(format!("key {:?} ({}): {reason}", entry.name, entry.id));
            let public = decode_public(&entry.public_key).map_err(|e| invalid(format!("public_key is {e}")))?;
            if key_id(&public) != entry.id {
                return Err(invalid(format!("id is not the id of its public key ({})", key_id(&public))));
            }
            if entry.environments.is_empty() {
                return Err(invalid("lists no environments".into()));
            }
            let not_after = crate::time::Timestamp::parse_rfc3339_system(&entry.not_after)
                .map_err(|e| invalid(format!("not_after: {e}")))?;
            if let Some(other) = keys.get(&entry.id) {
                let other: &TrustedKey = other;
                return Err(invalid(format!(
                    "the same key is also listed as {:?} with role {}: one key, one role",
                    other.entry.name, other.entry.role
                )));
            }
            keys.insert(entry.id.clone(), TrustedKey { entry, public, not_after });
        }
        for (i, rule) in file.signatures.iter().enumerate() {
            let invalid = |reason: &str| TrustError::Invalid(format!("signatures rule {}: {reason}", i + 1));
            if rule.environments.is_empty() {
                return Err(invalid("lists no environments"));
            }
            if rule.signers == 0 {
                return Err(invalid("signers must be at least 1"));
            }
            if rule.groups.len() > rule.signers {
                return Err(invalid("asks for more groups than signers; each group needs a signer of its own"));
            }
        }
        let revoked = file.revoked.into_iter().map(|r| (r.id, r.reason)).collect();
        Ok(TrustStore { keys, revoked, signatures: file.signatures })
    }

    pub fn key(&self, id: &str) -> Option<&TrustedKey> {
        self.keys.get(id)
    }

    pub fn is_revoked(&self, id: &str) -> bool {
        self.revoked.contains_key(id)
    }

    /// Every trusted key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &TrustedKey> {
        self.keys.values()
    }

    /// The key `id`, if it may act as `role` at `now` (in any environment):
    /// for runner keys, whose signatures are not bound to one.
    pub fn check_role(&self, id: &str, role: Role, now: SystemTime) -> Result<&TrustedKey, TrustError> {
        if let Some(reason) = self.revoked.get(id) {
            return Err(TrustError::Revoked { id: id.into(), reason: reason.clone() });
        }
        let key = self.keys.get(id).ok_or_else(|| TrustError::UnknownKey { id: id.into() })?;
        let name = key.entry.name.clone();
        if key.entry.role != role {
            return Err(TrustError::WrongRole { id: id.into(), name, expected: role, actual: key.entry.role });
        }
        if now > key.not_after {
            return Err(TrustError::Expired { id: id.into(), name, not_after: key.entry.not_after.clone() });
        }
        Ok(key)
    }

    /// Whether `signers` (distinct key ids, each already checked as a
    /// trusted author for `environment`) satisfy every signature rule for
    /// `environment`: enough of them, and one of each group the rule names,
    /// each group by a different signer.
    pub fn check_signers(&self, signers: &[String], environment: &str) -> Result<(), TrustError> {
        let applies = |rule: &&SignatureRule| rule.environments.iter().any(|e| e == "*" || e == environment);
        for rule in self.signatures.iter().filter(applies) {
            if signers.len() < rule.signers {
                return Err(TrustError::TooFewSigners {
                    environment: environment.into(),
                    needed: rule.signers,
                    found: signers.len(),
                });
            }
            let groups_of = |id: &String| self.keys.get(id).map(|k| k.entry.groups.clone()).unwrap_or_default();
            let signer_groups: Vec<Vec<String>> = signers.iter().map(groups_of).collect();
            if let Some(group) = unmatched_group(&rule.groups, &signer_groups) {
                return Err(TrustError::MissingGroup { environment: environment.into(), group: group.clone() });
            }
        }
        Ok(())
    }

    /// The key `id`, if it may act as `role` in `environment` at `now`.
    pub fn check(&self, id: &str, role: Role, environment: &str, now: SystemTime) -> Result<&TrustedKey, TrustError> {
        let key = self.check_role(id, role, now)?;
        let name = key.entry.name.clone();
        let environments = &key.entry.environments;
        if !environments.iter().any(|e| e == "*" || e == environment) {
            return Err(TrustError::NotForEnvironment {
                id: id.into(),
                name,
                environment: environment.into(),
                trusted: environments.clone(),
            });
        }
        Ok(key)
    }
}

/// The first group no distinct signer can stand for: groups are matched to
/// signers one to one (augmenting paths; a handful of each), so one key in
/// two required groups does not count twice.
fn unmatched_group<'a>(groups: &'a [String], signer_groups: &[Vec<String>]) -> Option<&'a String> {
    fn assign(
        group: &str,
        signer_groups: &[Vec<String>],
        owner: &mut [Option<usize>],
        seen: &mut [bool],
        groups: &[String],
    ) -> bool {
        for (signer, theirs) in signer_groups.iter().enumerate() {
            if seen[signer] || !theirs.iter().any(|g| g == group) {
                continue;
            }
            seen[signer] = true;
            match owner[signer] {
                None => {
                    owner[signer] = Some(groups.iter().position(|g| g == group).unwrap_or(0));
                    return true;
                }
                Some(other) => {
                    if assign(&groups[other], signer_groups, owner, seen, groups) {
                        owner[signer] = Some(groups.iter().position(|g| g == group).unwrap_or(0));
                        return true;
                    }
                }
            }
        }
        false
    }
    let mut owner = vec![None; signer_groups.len()];
    for group in groups {
        let mut seen = vec![false; signer_groups.len()];
        if !assign(group, signer_groups, &mut owner, &mut seen, groups) {
            return Some(group);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use std::time::Duration;

    fn entry(key: &PrivateKey, environments: &[&str], not_after: &str) -> KeyEntry {
        let public = key.public();
        KeyEntry {
            name: public.name,
            id: public.id,
            role: public.role,
            public_key: public.public_key,
            environments: environments.iter().map(|e| e.to_string()).collect(),
            not_after: not_after.into(),
            groups: vec![],
        }
    }

    #[test]
    fn each_check_refuses_with_its_own_error() {
        let author = PrivateKey::from_seed("author", Role::Author, [1; 32]);
        let old = PrivateKey::from_seed("old", Role::Author, [2; 32]);
        let gone = PrivateKey::from_seed("gone", Role::Author, [3; 32]);
        let store = TrustStore::from_file(TrustFile {
            keys: vec![
                entry(&author, &["dev"], "2099-01-01T00:00:00Z"),
                entry(&old, &["*"], "2020-01-01T00:00:00Z"),
                entry(&gone, &["*"], "2099-01-01T00:00:00Z"),
            ],
            revoked: vec![Revocation { id: gone.id.clone(), reason: "lost".into() }],
            signatures: vec![],
        })
        .unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert!(store.check(&author.id, Role::Author, "dev", now).is_ok());
        assert!(matches!(
            store.check(&author.id, Role::Author, "prod", now),
            Err(TrustError::NotForEnvironment { .. })
        ));
        assert!(matches!(store.check(&author.id, Role::Agent, "dev", now), Err(TrustError::WrongRole { .. })));
        assert!(matches!(store.check(&old.id, Role::Author, "dev", now), Err(TrustError::Expired { .. })));
        assert!(matches!(store.check(&gone.id, Role::Author, "dev", now), Err(TrustError::Revoked { .. })));
        assert!(matches!(store.check("00", Role::Author, "dev", now), Err(TrustError::UnknownKey { .. })));
    }

    #[test]
    fn signature_rules_bind_the_set_of_signers() {
        let author = PrivateKey::from_seed("author", Role::Author, [1; 32]);
        let reviewer = PrivateKey::from_seed("reviewer", Role::Author, [2; 32]);
        let both = PrivateKey::from_seed("both", Role::Author, [3; 32]);
        let in_groups = |key: &PrivateKey, groups: &[&str]| KeyEntry {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..entry(key, &["*"], "2099-01-01T00:00:00Z")
        };
        let store = TrustStore::from_file(TrustFile {
            keys: vec![
                in_groups(&author, &["platform"]),
                in_groups(&reviewer, &["security"]),
                in_groups(&both, &["platform", "security"]),
            ],
            revoked: vec![],
            signatures: vec![SignatureRule {
                environments: vec!["prod".into()],
                signers: 2,
                groups: vec!["platform".into(), "security".into()],
            }],
        })
        .unwrap();
        let ids = |keys: &[&PrivateKey]| keys.iter().map(|k| k.id.clone()).collect::<Vec<_>>();
        assert!(store.check_signers(&ids(&[&author]), "dev").is_ok(), "no rule for dev");
        assert!(store.check_signers(&ids(&[&author, &reviewer]), "prod").is_ok());
        assert!(store.check_signers(&ids(&[&both, &author]), "prod").is_ok(), "both stands for security");
        // A stripped co-signature.
        assert!(matches!(
            store.check_signers(&ids(&[&author]), "prod"),
            Err(TrustError::TooFewSigners { needed: 2, found: 1, .. })
        ));
        assert!(matches!(store.check_signers(&ids(&[&both]), "prod"), Err(TrustError::TooFewSigners { .. })));
        // Two signers, but no one of group security.
        let platform2 = PrivateKey::from_seed("platform2", Role::Author, [4; 32]);
        let mut file_keys = vec![in_groups(&author, &["platform"]), in_groups(&platform2, &["platform"])];
        file_keys.push(in_groups(&reviewer, &["security"]));
        let store = TrustStore::from_file(TrustFile {
            keys: file_keys,
            revoked: vec![],
            signatures: vec![SignatureRule {
                environments: vec!["*".into()],
                signers: 2,
                groups: vec!["security".into()],
            }],
        })
        .unwrap();
        assert!(matches!(
            store.check_signers(&ids(&[&author, &platform2]), "prod"),
            Err(TrustError::MissingGroup { group, .. }) if group == "security"
        ));
        let bad =
            |rule: SignatureRule| TrustStore::from_file(TrustFile { signatures: vec![rule], ..TrustFile::default() });
        assert!(bad(SignatureRule { environments: vec![], signers: 1, groups: vec![] }).is_err());
        assert!(bad(SignatureRule { environments: vec!["prod".into()], signers: 0, groups: vec![] }).is_err());
        assert!(
            bad(SignatureRule { environments: vec!["prod".into()], signers: 1, groups: vec!["a".into(), "b".into()] })
                .is_err()
        );
    }

    #[test]
    fn one_key_one_role_and_ids_must_match_their_keys() {
        let key = PrivateKey::from_seed("k", Role::Author, [1; 32]);
        let twice = TrustFile {
            keys: vec![
                entry(&key, &["dev"], "2099-01-01T00:00:00Z"),
                KeyEntry { role: Role::Approver, ..entry(&key, &["dev"], "2099-01-01T00:00:00Z") },
            ],
            revoked: vec![],
            signatures: vec![],
        };
        assert!(matches!(TrustStore::from_file(twice), Err(TrustError::Invalid(m)) if m.contains("one key, one role")));
        let wrong_id = TrustFile {
            keys: vec![KeyEntry { id: "00".repeat(16), ..entry(&key, &["dev"], "2099-01-01T00:00:00Z") }],
            revoked: vec![],
            signatures: vec![],
        };
        assert!(matches!(TrustStore::from_file(wrong_id), Err(TrustError::Invalid(_))));
        assert!(matches!(TrustStore::parse("[[keys]]\nname = 1\n"), Err(TrustError::Invalid(_))));
        assert!(matches!(TrustStore::parse("surprise = true\n"), Err(TrustError::Invalid(_))));
    }
}
