//! Credentials that never enter the sandbox: leased to one job, injected by
//! the host into a request header or a command's environment, revoked when
//! the job ends.
//!
//! Two kinds:
//! - secrets, from a [`SecretStore`]: `DATA_DIR/secrets.toml` (mode 0600,
//!   refused when wider) or environment variables (`SALVE_SECRET_<NAME>`);
//!   a Vault-style backend is one more implementation of the trait;
//! - tokens minted per lease: PASETO v4.public, signed by the runner key,
//!   scoped to an audience, the action, the target and the job, with a
//!   short expiry. A downstream service checks one with [`verify_token`]
//!   (or `salve token verify`).
//!
//! ```toml
//! # DATA_DIR/secrets.toml (mode 0600)
//! [secrets]
//! lb-admin = "the value"
//!
//! [tokens.deploy-api]
//! audience = "deploy-api"
//! ttl = "5m"
//! ```
//!
//! # Security
//! A lease's value lives in host memory only. It is never logged, audited,
//! serialized or returned to a playbook: the audit log names the lease id;
//! anything a playbook gets back from a command, a request or a file has
//! the value, in any common encoding, replaced ([`crate::redact`]). A lease is bound to its job and refused to any
//! other, and refused once revoked. Revoking a secret's lease stops salve
//! from using it; it cannot rotate the secret at its source.

use crate::keys::{PrivateKey, Role};
use crate::redact::Redactor;
use crate::trust::TrustStore;
use pasetors::keys::{AsymmetricPublicKey, AsymmetricSecretKey};
use pasetors::token::UntrustedToken;
use pasetors::version4::{PublicToken, V4};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use zeroize::Zeroizing;

/// Default lifetime of a minted token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);
/// The longest a minted token may live: revoking a lease cannot recall a
/// token already handed to a service, so they stay short.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    #[error("cannot read the secret store {path}: {reason}")]
    Store { path: PathBuf, reason: String },
    #[error(
        "the secret store {path} has mode {mode:o}: it must be readable and writable by its owner only; run `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("no credential named {0:?}: add it to secrets.toml ([secrets] or [tokens]) or set SALVE_SECRET_<NAME>")]
    Unknown(String),
    #[error("tokens need the runner key (role runner) to sign them")]
    NoMinter,
    #[error("cannot mint a token: {0}")]
    Mint(String),
    #[error("the token is not valid: {0}")]
    InvalidToken(String),
}

/// A secret value: zeroed when dropped, never printed.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(Zeroizing::new(value))
    }

    /// The value, for the host code that injects it. Nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where secrets come from.
pub trait SecretStore: Send + Sync {
    /// The secret named `name`, if this store has it.
    fn get(&self, name: &str) -> Option<Secret>;
}

/// How to mint a token for a credential name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    pub audience: String,
    #[serde(default)]
    pub ttl: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsFile {
    #[serde(default)]
    secrets: HashMap<String, String>,
    #[serde(default)]
    tokens: HashMap<String, TokenSpec>,
}

/// `secrets.toml`: static secrets and token definitions.
pub struct FileSecrets {
    secrets: HashMap<String, Secret>,
    tokens: HashMap<String, TokenSpec>,
}

impl FileSecrets {
    /// Loads a secrets file, refusing one that others may read.
    pub fn load(path: &Path) -> Result<FileSecrets, CredentialError> {
        use std::os::unix::fs::PermissionsExt;
        let store = |reason: String| CredentialError::Store { path: path.into(), reason };
        let meta = std::fs::metadata(path).map_err(|e| store(e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CredentialError::Permissions { path: path.into(), mode });
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| store(e.to_string()))?);
        let file: SecretsFile = toml::from_str(&text).map_err(|e| store(e.to_string().trim().into()))?;
        Ok(FileSecrets {
            secrets: file.secrets.into_iter().map(|(k, v)| (k, Secret::new(v))).collect(),
            tokens: file.tokens,
        })
    }

    pub fn tokens(&self) -> &HashMap<String, TokenSpec> {
        &self.tokens
    }
}

impl SecretStore for FileSecrets {
    fn get(&self, name: &str) -> Option<Secret> {
        self.secrets.get(name).cloned()
    }
}

/// Secrets from the runner's environment: `SALVE_SECRET_LB_ADMIN` for
/// `lb-admin`.
pub struct EnvSecrets;

impl EnvSecrets {
    pub fn variable(name: &str) -> String {
        format!("SALVE_SECRET_{}", name.to_ascii_uppercase().replace(['-', '.'], "_"))
    }
}

impl SecretStore for EnvSecrets {
    fn get(&self, name: &str) -> Option<Secret> {
        std::env::var(EnvSecrets::variable(name)).ok().map(Secret::new)
    }
}

/// What a lease hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseKind {
    Secret,
    Token,
}

/// A credential leased to one job.
#[derive(Debug, Clone)]
pub struct Lease {
    pub id: String,
    pub name: String,
    pub job: Arc<str>,
    pub kind: LeaseKind,
    pub expires: Option<SystemTime>,
    value: Secret,
    revoked: Arc<AtomicBool>,
}

impl Lease {
    /// The value, to inject for `job`: refused to any other job, and once
    /// the lease is revoked or expired.
    pub fn value_for(&self, job: &str) -> Result<&str, String> {
        if *self.job != *job {
            return Err(format!("lease {} belongs to another job", self.id));
        }
        if self.revoked.load(Ordering::Acquire) {
            return Err(format!("lease {} is revoked", self.id));
        }
        if self.expires.is_some_and(|t| SystemTime::now() > t) {
            return Err(format!("lease {} has expired", self.id));
        }
        Ok(self.value.expose())
    }

    /// The length of the value, in bytes.
    pub fn len(&self) -> usize {
        self.value.expose().len()
    }

    pub fn is_empty(&self) -> bool {
        self.value.expose().is_empty()
    }
}

/// What removes the values leased to a job from anything it gets back, in
/// every form [`crate::redact`] knows.
pub fn redactor(leases: &[Lease]) -> Redactor {
    Redactor::new(leases.iter().map(|lease| lease.value.expose().as_bytes()))
}

/// Leases credentials to jobs and takes them back.
pub struct Broker {
    stores: Vec<Box<dyn SecretStore>>,
    tokens: HashMap<String, TokenSpec>,
    minter: Option<Arc<PrivateKey>>,
    leases: Mutex<HashMap<String, Lease>>,
}

impl Broker {
    /// A broker over `stores` (asked in order), minting `tokens` with the
    /// runner key `minter`.
    pub fn new(
        stores: Vec<Box<dyn SecretStore>>,
        tokens: HashMap<String, TokenSpec>,
        minter: Option<Arc<PrivateKey>>,
    ) -> Broker {
        Broker { stores, tokens, minter, leases: Mutex::default() }
    }

    /// The broker a data directory sets up: its `secrets.toml` (see
    /// [`crate::data_dir::DataDir::secrets`]) if present, then the
    /// environment.
    pub fn for_layout(
        layout: &crate::data_dir::DataDir,
        minter: Option<Arc<PrivateKey>>,
    ) -> Result<Broker, CredentialError> {
        let path = layout.secrets();
        let mut stores: Vec<Box<dyn SecretStore>> = Vec::new();
        let mut tokens = HashMap::new();
        if path.exists() {
            let file = FileSecrets::load(&path)?;
            tokens = file.tokens().clone();
            stores.push(Box::new(file));
        }
        stores.push(Box::new(EnvSecrets));
        Ok(Broker::new(stores, tokens, minter))
    }

    /// Leases credential `name` to `job`, for `action` on `target`.
    pub fn lease(&self, job: &str, name: &str, action: &str, target: &str) -> Result<Lease, CredentialError> {
        let id = uuid::Uuid::now_v7().to_string();
        let (kind, value, expires) = match self.tokens.get(name) {
            Some(spec) => {
                let ttl = match &spec.ttl {
                    Some(text) => humantime::parse_duration(text).map_err(|e| CredentialError::Mint(e.to_string()))?,
                    None => DEFAULT_TOKEN_TTL,
                };
                if ttl > MAX_TOKEN_TTL {
                    return Err(CredentialError::Mint(format!(
                        "ttl {} is above the ceiling of {}",
                        humantime::format_duration(ttl),
                        humantime::format_duration(MAX_TOKEN_TTL)
                    )));
                }
                let key = self.minter.as_ref().ok_or(CredentialError::NoMinter)?;
                let expires = SystemTime::now() + ttl;
                let claims = TokenClaims {
                    iss: "salve".into(),
                    sub: target.into(),
                    aud: spec.audience.clone(),
                    action: action.into(),
                    job: job.into(),
                    jti: id.clone(),
                    iat: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                    exp: humantime::format_rfc3339_seconds(expires).to_string(),
                };
                (LeaseKind::Token, Secret::new(mint(key, &claims)?), Some(expires))
            }
            None => {
                let secret = self
                    .stores
                    .iter()
                    .find_map(|s| s.get(name))
                    .ok_or_else(|| CredentialError::Unknown(name.into()))?;
                (LeaseKind::Secret, secret, None)
            }
        };
        let lease = Lease {
            id: id.clone(),
            name: name.into(),
            job: Arc::from(job),
            kind,
            expires,
            value,
            revoked: Arc::default(),
        };
        self.leases.lock().unwrap_or_else(|p| p.into_inner()).insert(id, lease.clone());
        Ok(lease)
    }

    /// A guard that revokes every lease of `job` when dropped, however the
    /// job ends (an error, a panic, a cancelled task).
    pub fn guard(self: &Arc<Self>, job: &str) -> LeaseGuard {
        LeaseGuard { broker: Arc::clone(self), job: job.to_string() }
    }

    /// Revokes every lease of `job`; returns their ids.
    pub fn revoke_job(&self, job: &str) -> Vec<String> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let ids: Vec<String> = leases.values().filter(|l| &*l.job == job).map(|l| l.id.clone()).collect();
        for id in &ids {
            if let Some(lease) = leases.remove(id) {
                lease.revoked.store(true, Ordering::Release);
            }
        }
        ids
    }
}

/// Revokes a job's leases when dropped.
pub struct LeaseGuard {
    broker: Arc<Broker>,
    job: String,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.broker.revoke_job(&self.job);
    }
}

/// What a minted token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    pub iss: String,
    /// The target the job acts on.
    pub sub: String,
    pub aud: String,
    pub action: String,
    pub job: String,
    /// The lease id.
    pub jti: String,
    pub iat: String,
    pub exp: String,
}

#[derive(Serialize, Deserialize)]
struct Footer {
    kid: String,
}

fn mint(key: &PrivateKey, claims: &TokenClaims) -> Result<String, CredentialError> {
    let secret = AsymmetricSecretKey::<V4>::from(&key.signing.to_keypair_bytes())
        .map_err(|e| CredentialError::Mint(e.to_string()))?;
    let payload = serde_json::to_vec(claims).map_err(|e| CredentialError::Mint(e.to_string()))?;
    let footer =
        serde_json::to_vec(&Footer { kid: key.id.clone() }).map_err(|e| CredentialError::Mint(e.to_string()))?;
    PublicToken::sign(&secret, &payload, Some(&footer), None).map_err(|e| CredentialError::Mint(e.to_string()))
}

/// Checks a token minted by a runner: its signature by a runner key the
/// trust store holds (and has not revoked), its audience, and its expiry.
pub fn verify_token(
    token: &str,
    trust: &TrustStore,
    audience: &str,
    now: SystemTime,
) -> Result<TokenClaims, CredentialError> {
    let invalid = |reason: &str| CredentialError::InvalidToken(reason.to_string());
    let untrusted = UntrustedToken::<pasetors::token::Public, V4>::try_from(token)
        .map_err(|_| invalid("not a PASETO v4.public token"))?;
    let footer: Footer =
        serde_json::from_slice(untrusted.untrusted_footer()).map_err(|_| invalid("no key id in its footer"))?;
    if trust.is_revoked(&footer.kid) {
        return Err(invalid(&format!("signed by key {}, which is revoked", footer.kid)));
    }
    let key = trust
        .key(&footer.kid)
        .ok_or_else(|| invalid(&format!("signed by key {}, which is not trusted", footer.kid)))?;
    if key.entry.role != Role::Runner {
        return Err(invalid(&format!("signed by key {}, which is not a runner key", footer.kid)));
    }
    let public = AsymmetricPublicKey::<V4>::from(key.public.as_bytes()).map_err(|_| invalid("bad runner key"))?;
    let trusted =
        PublicToken::verify(&public, &untrusted, None, None).map_err(|_| invalid("its signature does not verify"))?;
    let claims: TokenClaims =
        serde_json::from_str(trusted.payload()).map_err(|_| invalid("its claims are not salve's"))?;
    if claims.aud != audience {
        return Err(invalid(&format!("it is for audience {:?}, not {audience:?}", claims.aud)));
    }
    let expires = crate::time::Timestamp::parse_rfc3339_system(&claims.exp)
        .map_err(|e| invalid(&format!("its expiry is not a time: {e}")))?;
    if now > expires {
        return Err(invalid(&format!("it expired at {}", claims.exp)));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::{KeyEntry, TrustFile};

    fn broker(runner: &Arc<PrivateKey>) -> Broker {
        struct Fixed;
        impl SecretStore for Fixed {
            fn get(&self, name: &str) -> Option<Secret> {
                (name == "lb-admin").then(|| Secret::new("s3cret-value".into()))
            }
        }
        let tokens = HashMap::from([("deploy".to_string(), TokenSpec { audience: "deploy-api".into(), ttl: None })]);
        Broker::new(vec![Box::new(Fixed)], tokens, Some(Arc::clone(runner)))
    }

    #[test]
    fn leases_are_bound_to_their_job_and_die_with_it() {
        let runner = Arc::new(PrivateKey::from_seed("runner", Role::Runner, [3; 32]));
        let broker = broker(&runner);
        let lease = broker.lease("job-1", "lb-admin", "apply", "web-3").unwrap();
        assert_eq!(lease.value_for("job-1").unwrap(), "s3cret-value");
        assert!(lease.value_for("job-2").is_err(), "another job cannot use it");
        assert_eq!(format!("{:?}", lease.value), "Secret(***)");
        assert_eq!(broker.revoke_job("job-1"), vec![lease.id.clone()]);
        assert!(lease.value_for("job-1").unwrap_err().contains("revoked"));
        assert!(matches!(broker.lease("job-1", "nope", "apply", "web-3"), Err(CredentialError::Unknown(_))));
    }

    #[test]
    fn minted_tokens_verify_against_the_trust_store_and_nothing_else() {
        let runner = Arc::new(PrivateKey::from_seed("runner", Role::Runner, [3; 32]));
        let broker = broker(&runner);
        let lease = broker.lease("job-1", "deploy", "apply", "web-3").unwrap();
        let token = lease.value_for("job-1").unwrap().to_string();
        let entry = KeyEntry::new(&runner.public(), vec!["*".into()], "2099-01-01T00:00:00Z".into());
        let trust = TrustStore::from_file(TrustFile { keys: vec![entry], ..TrustFile::default() }).unwrap();
        let now = SystemTime::now();
        let claims = verify_token(&token, &trust, "deploy-api", now).unwrap();
        assert_eq!((claims.job.as_str(), claims.sub.as_str(), claims.action.as_str()), ("job-1", "web-3", "apply"));
        assert_eq!(claims.jti, lease.id);
        assert!(verify_token(&token, &trust, "other-api", now).is_err(), "wrong audience");
        assert!(verify_token(&token, &trust, "deploy-api", now + Duration::from_secs(600)).is_err(), "expired");
        let mut forged = token.clone().into_bytes();
        let at = forged.len() / 2;
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        assert!(verify_token(&String::from_utf8(forged).unwrap(), &trust, "deploy-api", now).is_err());
        let empty = TrustStore::from_file(TrustFile::default()).unwrap();
        assert!(verify_token(&token, &empty, "deploy-api", now).is_err(), "unknown runner key");
    }

    #[test]
    fn a_readable_secrets_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.toml");
        std::fs::write(&path, "[secrets]\na = \"b\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(FileSecrets::load(&path), Err(CredentialError::Permissions { .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(FileSecrets::load(&path).unwrap().get("a").unwrap().expose(), "b");
    }
}
