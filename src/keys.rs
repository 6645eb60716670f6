//! Ed25519 keys: generation, key ids, and the key files `salve keygen`
//! writes.
//!
//! A key id is derived from the public key (the first 16 bytes of its
//! SHA-256, hex), so it cannot be chosen to collide with another key's.
//! Every key has exactly one role.
//!
//! # Security
//! Private key files are created `0600` and refused when they are readable
//! or writable by anyone but their owner. Secret key bytes are never
//! printed, logged or serialized anywhere else.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What a key may do. One key, one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Signs playbook artifacts (authors and reviewers).
    Author,
    /// Signs job requests.
    Agent,
    /// Signs approvals.
    Approver,
    /// Signs audit seals and tokens.
    Runner,
    /// Reads everything `salve serve` shows and exports evidence; changes
    /// nothing.
    Auditor,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Author => "author",
            Role::Agent => "agent",
            Role::Approver => "approver",
            Role::Runner => "runner",
            Role::Auditor => "auditor",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        match text {
            "author" => Ok(Role::Author),
            "agent" => Ok(Role::Agent),
            "approver" => Ok(Role::Approver),
            "runner" => Ok(Role::Runner),
            "auditor" => Ok(Role::Auditor),
            other => Err(format!("{other:?} is not a role: use author, agent, approver, runner or auditor")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("cannot read the key file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write the key file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("the key file {path} is not a salve key file: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error(
        "the private key file {path} has mode {mode:o}: it must be readable and writable by its owner only; \
         run `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the key name {0:?} may hold only letters, digits, '-', '_' and '.'")]
    Name(String),
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// The id of a public key: hex of the first 16 bytes of its SHA-256.
pub fn key_id(public: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(public.as_bytes())[..16])
}

/// Decodes a base64 public key.
pub fn decode_public(text: &str) -> Result<VerifyingKey, String> {
    let bytes = BASE64.decode(text.trim()).map_err(|e| format!("not base64: {e}"))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| "not 32 bytes".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an Ed25519 public key: {e}"))
}

pub fn encode_public(public: &VerifyingKey) -> String {
    BASE64.encode(public.as_bytes())
}

/// HMAC-SHA-256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// A private key with its name and role, as loaded from its file.
pub struct PrivateKey {
    pub name: String,
    pub role: Role,
    pub id: String,
    pub signing: SigningKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey").field("name", &self.name).field("role", &self.role).field("id", &self.id).finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivateKeyFile {
    name: String,
    role: Role,
    id: String,
    secret_key: String,
}

/// The public half, as written next to the private key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyFile {
    pub name: String,
    pub role: Role,
    pub id: String,
    pub public_key: String,
}

fn check_name(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !name.starts_with('.');
    if ok { Ok(()) } else { Err(KeyError::Name(name.to_string())) }
}

impl PrivateKey {
    /// A secret key for `purpose`, derived from this key (so that only its
    /// holder can make or check what it keys), never the signing key
    /// itself.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut derive = Sha256::new();
        derive.update(b"salve derived key v1\n");
        derive.update(purpose.as_bytes());
        derive.update(b"\n");
        derive.update(self.signing.to_bytes());
        derive.finalize().into()
    }

    /// HMAC-SHA-256 of `message` under the key derived for `purpose`, hex.
    pub fn mac(&self, purpose: &str, message: &[u8]) -> String {
        hex::encode(hmac_sha256(&self.derive(purpose), message))
    }

    /// A new key from the system's random number generator.
    pub fn generate(name: &str, role: Role) -> Result<PrivateKey, KeyError> {
        check_name(name)?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(PrivateKey::from_seed(name, role, seed))
    }

    /// A key from a fixed seed: for tests that need a stable key id.
    pub fn from_seed(name: &str, role: Role, seed: [u8; 32]) -> PrivateKey {
        let signing = SigningKey::from_bytes(&seed);
        let id = key_id(&signing.verifying_key());
        PrivateKey { name: name.to_string(), role, id, signing }
    }

    pub fn public(&self) -> PublicKeyFile {
        PublicKeyFile {
            name: self.name.clone(),
            role: self.role,
            id: self.id.clone(),
            public_key: encode_public(&self.signing.verifying_key()),
        }
    }

    /// Writes `DIR/NAME.key` (mode 0600, never overwriting) and
    /// `DIR/NAME.pub`. Returns both paths.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
        std::fs::create_dir_all(dir).map_err(|source| KeyError::Write { path: dir.into(), source })?;
        let private = dir.join(format!("{}.key", self.name));
        let public = dir.join(format!("{}.pub", self.name));
        let file = PrivateKeyFile {
            name: self.name.clone(),
            role: self.role,
            id: self.id.clone(),
            secret_key: BASE64.encode(self.signing.to_bytes()),
        };
        let text = format!(
            "# salve private key: keep it secret; never commit it\n{}",
            toml::to_string(&file).expect("a key file serializes")
        );
        let write = |path: &Path, text: &str, mode: u32| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(path)
                .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
                .map_err(|source| KeyError::Write { path: path.into(), source })
        };
        write(&private, &text, 0o600)?;
        let public_text = format!(
            "# salve public key: add it to a trust store\n{}",
            toml::to_string(&self.public()).expect("a key file serializes")
        );
        write(&public, &public_text, 0o644)?;
        Ok((private, public))
    }

    /// Loads a private key file, refusing one that others may read.
    pub fn load(path: &Path) -> Result<PrivateKey, KeyError> {
        let meta = std::fs::metadata(path).map_err(|source| KeyError::Read { path: path.into(), source })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions { path: path.into(), mode });
        }
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: path.into(), source })?;
        let format = |reason: String| KeyError::Format { path: path.into(), reason };
        let file: PrivateKeyFile = toml::from_str(&text).map_err(|e| format(e.to_string()))?;
        let seed = BASE64.decode(file.secret_key.trim()).map_err(|_| format("secret_key is not base64".into()))?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| format("secret_key is not 32 bytes".into()))?;
        let key = PrivateKey::from_seed(&file.name, file.role, seed);
        if key.id != file.id {
            return Err(format(format!("its id {} is not the id of its key ({})", file.id, key.id)));
        }
        Ok(key)
    }
}

impl PublicKeyFile {
    pub fn load(path: &Path) -> Result<PublicKeyFile, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: path.into(), source })?;
        let format = |reason: String| KeyError::Format { path: path.into(), reason };
        let file: PublicKeyFile = toml::from_str(&text).map_err(|e| format(e.to_string()))?;
        let key = decode_public(&file.public_key).map_err(format)?;
        if key_id(&key) != file.id {
            return Err(format(format!("its id {} is not the id of its key", file.id)));
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_wide_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::generate("alice", Role::Author).unwrap();
        let (private, public) = key.write(dir.path()).unwrap();
        let loaded = PrivateKey::load(&private).unwrap();
        assert_eq!(loaded.id, key.id);
        assert_eq!(loaded.role, Role::Author);
        assert_eq!(PublicKeyFile::load(&public).unwrap().id, key.id);
        assert!(key.write(dir.path()).is_err(), "never overwrites a key");

        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(PrivateKey::load(&private), Err(KeyError::Permissions { mode: 0o640, .. })));
    }

    #[test]
    fn key_ids_are_derived_from_the_public_key() {
        let a = PrivateKey::from_seed("a", Role::Author, [1; 32]);
        let b = PrivateKey::from_seed("b", Role::Agent, [1; 32]);
        assert_eq!(a.id, b.id, "same key, same id, whatever the name");
        assert_eq!(a.id.len(), 32);
        assert_ne!(a.id, PrivateKey::from_seed("a", Role::Author, [2; 32]).id);
        assert!(matches!(PrivateKey::generate("../evil", Role::Author), Err(KeyError::Name(_))));
    }
}
