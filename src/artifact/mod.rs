//! Signed playbook artifacts: one file holding the component, its manifest
//! and one or more Ed25519 signatures, embedded as custom sections.
//!
//! # Format
//! An artifact is the component exactly as built, followed by one
//! `salve:manifest` custom section (the `playbook.toml` text) and one
//! `salve:signature` custom section per signer (author, then reviewers).
//! Custom sections are part of the component format, so the artifact is
//! still a valid component. Each signature covers
//! `"salve artifact v1\n" || SHA-256(component) || SHA-256(manifest)`: the
//! code and its manifest together, never one without the other. A signature
//! section holds a version byte (1), the signer's 16-byte key id and the
//! 64-byte signature.
//!
//! The layout is strict: the salve sections come last, the manifest first
//! among them and only once, the signatures after it. Anything else (a
//! signature moved into the component, a second manifest, a truncated
//! section) is refused.
//!
//! # Errors
//! [`ArtifactError`] names the check that failed: format, layout, manifest,
//! a signature that does not verify, or a signer the trust store refuses.

pub mod floor;
pub mod manifest;

pub use floor::VersionFloor;
pub use manifest::Manifest;

use crate::keys::{PrivateKey, Role};
use crate::trust::{TrustError, TrustStore};
use ed25519_dalek::{Signature, Signer as _};
use sha2::{Digest, Sha256};
use std::time::SystemTime;

pub const MANIFEST_SECTION: &str = "salve:manifest";
pub const SIGNATURE_SECTION: &str = "salve:signature";
const SALVE_PREFIX: &str = "salve:";
const COMPONENT_HEADER: [u8; 8] = [0, b'a', b's', b'm', 0x0d, 0x00, 0x01, 0x00];
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];
const SIGNED_CONTEXT: &[u8] = b"salve artifact v1\n";
const SIGNATURE_FORMAT: u8 = 1;
const SIGNATURE_PAYLOAD: usize = 1 + 16 + 64;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error("the artifact is truncated: the section at byte {offset} runs past the end of the file")]
    Truncated { offset: usize },
    #[error("the artifact's layout is invalid: {0}")]
    Layout(String),
    #[error("the component carries no salve:manifest: it is not a signed artifact; sign it with `salve sign`")]
    NoManifest,
    #[error("the artifact's manifest is not UTF-8 text")]
    ManifestEncoding,
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error("signature {index} is malformed: {reason}")]
    SignatureFormat { index: usize, reason: String },
    #[error("the artifact is not signed: no salve:signature section")]
    Unsigned,
    #[error(
        "signature {index} (key {key_id}) does not verify: the component, the manifest or the signature was changed \
         after signing"
    )]
    BadSignature { index: usize, key_id: String },
    #[error("signature {index}: {source}")]
    Untrusted { index: usize, source: TrustError },
    /// Every signature checks out, but the set of signers is not what the
    /// environment requires.
    #[error("the artifact's signers are not enough: {0}")]
    Signers(TrustError),
    #[error("key {key_id} has role {role}; only author keys sign artifacts")]
    NotAnAuthorKey { key_id: String, role: Role },
    #[error("the artifact is already signed by key {key_id}")]
    AlreadySigned { key_id: String },
    #[error("--manifest differs from the manifest the artifact carries; a co-signature signs the same manifest")]
    ManifestMismatch,
    #[error("a bare component needs --manifest to be signed")]
    ManifestNeeded,
    #[error(transparent)]
    Load(#[from] crate::bindings::LoadError),
}

/// One signature section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureSection {
    pub key_id: String,
    pub signature: [u8; 64],
}

/// An artifact split into its parts. No check beyond the format: see
/// [`verify`].
#[derive(Debug, Clone)]
pub struct Artifact<'a> {
    pub bytes: &'a [u8],
    /// The component as built, without the salve sections.
    pub component: &'a [u8],
    pub manifest_text: &'a str,
    pub signatures: Vec<SignatureSection>,
}

struct Section<'a> {
    offset: usize,
    custom_name: Option<&'a str>,
    data: &'a [u8],
}

fn read_leb128(bytes: &[u8], pos: &mut usize, offset: usize) -> Result<usize, ArtifactError> {
    let mut value: u64 = 0;
    for shift in (0..35).step_by(7) {
        let byte = *bytes.get(*pos).ok_or(ArtifactError::Truncated { offset })?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return usize::try_from(value).map_err(|_| ArtifactError::Truncated { offset });
        }
    }
    Err(ArtifactError::NotAComponent(format!("a malformed section length at byte {offset}")))
}

fn write_leb128(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The top-level sections of a component, without descending into nested
/// modules or components.
fn sections(bytes: &[u8]) -> Result<Vec<Section<'_>>, ArtifactError> {
    if bytes.len() < 8 || bytes[..4] != COMPONENT_HEADER[..4] {
        return Err(ArtifactError::NotAComponent("it does not start with the wasm magic number".into()));
    }
    if bytes[4..8] == CORE_MODULE_VERSION {
        return Err(ArtifactError::NotAComponent("it is a core module; build the playbook for wasm32-wasip2".into()));
    }
    if bytes[..8] != COMPONENT_HEADER {
        return Err(ArtifactError::NotAComponent("unknown wasm version or layer".into()));
    }
    let mut sections = Vec::new();
    let mut pos = 8;
    while pos < bytes.len() {
        let offset = pos;
        let id = bytes[pos];
        pos += 1;
        let size = read_leb128(bytes, &mut pos, offset)?;
        let end = pos.checked_add(size).filter(|&end| end <= bytes.len()).ok_or(ArtifactError::Truncated { offset })?;
        let mut payload = &bytes[pos..end];
        let custom_name = if id == 0 {
            let mut at = 0;
            let len = read_leb128(payload, &mut at, offset)?;
            let name = payload.get(at..at + len).ok_or(ArtifactError::Truncated { offset })?;
            let name = std::str::from_utf8(name)
                .map_err(|_| ArtifactError::Layout("a custom section name is not UTF-8".into()))?;
            payload = &payload[at + len..];
            Some(name)
        } else {
            None
        };
        sections.push(Section { offset, custom_name, data: payload });
        pos = end;
    }
    Ok(sections)
}

fn custom_section(name: &str, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(name.len() + data.len() + 5);
    write_leb128(&mut payload, name.len());
    payload.extend_from_slice(name.as_bytes());
    payload.extend_from_slice(data);
    let mut section = vec![0];
    write_leb128(&mut section, payload.len());
    section.extend_from_slice(&payload);
    section
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// SHA-256 of the whole artifact, hex: how salve names an artifact.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(sha256(bytes))
}

impl<'a> Artifact<'a> {
    /// Splits an artifact into component, manifest and signatures, checking
    /// the layout.
    pub fn parse(bytes: &'a [u8]) -> Result<Artifact<'a>, ArtifactError> {
        let sections = sections(bytes)?;
        let is_salve = |s: &Section| s.custom_name.is_some_and(|n| n.starts_with(SALVE_PREFIX));
        let Some(first) = sections.iter().position(is_salve) else {
            return Err(ArtifactError::NoManifest);
        };
        let salve_sections = &sections[first..];
        if let Some(stray) = salve_sections.iter().find(|s| !is_salve(s)) {
            return Err(ArtifactError::Layout(format!(
                "a component section at byte {} follows the salve sections, which must come last",
                stray.offset
            )));
        }
        let (manifest, signatures) = salve_sections.split_first().expect("at least one salve section");
        if manifest.custom_name != Some(MANIFEST_SECTION) {
            return Err(ArtifactError::Layout(format!(
                "the first salve section is {:?}; salve:manifest must come first",
                manifest.custom_name.unwrap_or_default()
            )));
        }
        let mut parsed = Vec::with_capacity(signatures.len());
        for (i, section) in signatures.iter().enumerate() {
            let index = i + 1;
            match section.custom_name {
                Some(MANIFEST_SECTION) => {
                    return Err(ArtifactError::Layout(format!(
                        "a second salve:manifest at byte {}; an artifact carries exactly one",
                        section.offset
                    )));
                }
                Some(SIGNATURE_SECTION) => {}
                other => {
                    return Err(ArtifactError::Layout(format!(
                        "unknown salve section {:?}",
                        other.unwrap_or_default()
                    )));
                }
            }
            let data = section.data;
            if data.len() != SIGNATURE_PAYLOAD || data[0] != SIGNATURE_FORMAT {
                return Err(ArtifactError::SignatureFormat {
                    index,
                    reason: format!(
                        "{} bytes of format {}; expected {SIGNATURE_PAYLOAD} of format 1",
                        data.len(),
                        data[0]
                    ),
                });
            }
            let signature: [u8; 64] = data[17..].try_into().expect("64 bytes");
            parsed.push(SignatureSection { key_id: hex::encode(&data[1..17]), signature });
        }
        let manifest_text = std::str::from_utf8(manifest.data).map_err(|_| ArtifactError::ManifestEncoding)?;
        Ok(Artifact { bytes, component: &bytes[..manifest.offset], manifest_text, signatures: parsed })
    }

    /// The bytes every signature signs.
    pub fn signed_message(&self) -> Vec<u8> {
        signed_message(self.component, self.manifest_text)
    }
}

fn signed_message(component: &[u8], manifest: &str) -> Vec<u8> {
    signed_message_of(&sha256(component), manifest)
}

/// The bytes every signature of an artifact signs, from the SHA-256 of its
/// component and its manifest text: what checks a signature without the
/// component itself.
pub fn signed_message_of(component_sha256: &[u8; 32], manifest: &str) -> Vec<u8> {
    let mut message = SIGNED_CONTEXT.to_vec();
    message.extend_from_slice(component_sha256);
    message.extend_from_slice(&sha256(manifest.as_bytes()));
    message
}

fn signature_section(key: &PrivateKey, message: &[u8]) -> Vec<u8> {
    let mut data = vec![SIGNATURE_FORMAT];
    data.extend_from_slice(&hex::decode(&key.id).expect("key ids are hex"));
    data.extend_from_slice(&key.signing.sign(message).to_bytes());
    custom_section(SIGNATURE_SECTION, &data)
}

/// Signs a bare component with its manifest, or adds a co-signature to an
/// artifact that is already signed.
pub fn sign(input: &[u8], manifest_text: Option<&str>, key: &PrivateKey) -> Result<Vec<u8>, ArtifactError> {
    if key.role != Role::Author {
        return Err(ArtifactError::NotAnAuthorKey { key_id: key.id.clone(), role: key.role });
    }
    match Artifact::parse(input) {
        Ok(existing) => {
            if manifest_text.is_some_and(|text| text != existing.manifest_text) {
                return Err(ArtifactError::ManifestMismatch);
            }
            if existing.signatures.iter().any(|s| s.key_id == key.id) {
                return Err(ArtifactError::AlreadySigned { key_id: key.id.clone() });
            }
            Manifest::parse(existing.manifest_text)?;
            let mut out = input.to_vec();
            out.extend_from_slice(&signature_section(key, &existing.signed_message()));
            Ok(out)
        }
        Err(ArtifactError::NoManifest) => {
            let text = manifest_text.ok_or(ArtifactError::ManifestNeeded)?;
            Manifest::parse(text)?;
            let mut out = input.to_vec();
            out.extend_from_slice(&custom_section(MANIFEST_SECTION, text.as_bytes()));
            out.extend_from_slice(&signature_section(key, &signed_message(input, text)));
            Ok(out)
        }
        Err(other) => Err(other),
    }
}

/// An artifact whose every signature verified against a trusted author key
/// for the environment. Only [`verify`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedArtifact {
    digest: String,
    component: Vec<u8>,
    manifest: Manifest,
    signers: Vec<String>,
}

impl VerifiedArtifact {
    /// SHA-256 of the whole artifact, hex.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn component(&self) -> &[u8] {
        &self.component
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Key ids of the signers, in order.
    pub fn signers(&self) -> &[String] {
        &self.signers
    }

    /// Checks the signers against the trust store again (time, environment
    /// and revocations change; the signatures over these bytes do not).
    pub fn recheck(&self, trust: &TrustStore, environment: &str, now: SystemTime) -> Result<(), ArtifactError> {
        for (i, key_id) in self.signers.iter().enumerate() {
            trust
                .check(key_id, Role::Author, environment, now)
                .map_err(|source| ArtifactError::Untrusted { index: i + 1, source })?;
        }
        trust.check_signers(&self.signers, environment).map_err(ArtifactError::Signers)
    }
}

/// Verifies an artifact: its layout, every signature (`verify_strict`), each
/// signer's trust for `environment` at `now`, and its manifest. All
/// signatures must pass; one bad co-signature refuses the artifact.
pub fn verify(
    bytes: &[u8],
    trust: &TrustStore,
    environment: &str,
    now: SystemTime,
) -> Result<VerifiedArtifact, ArtifactError> {
    let artifact = Artifact::parse(bytes)?;
    if artifact.signatures.is_empty() {
        return Err(ArtifactError::Unsigned);
    }
    let message = artifact.signed_message();
    for (i, section) in artifact.signatures.iter().enumerate() {
        let index = i + 1;
        if artifact.signatures[..i].iter().any(|earlier| earlier.key_id == section.key_id) {
            return Err(ArtifactError::Layout(format!(
                "signature {index} is a second signature by key {}; co-signers are different keys",
                section.key_id
            )));
        }
        let key = trust
            .check(&section.key_id, Role::Author, environment, now)
            .map_err(|source| ArtifactError::Untrusted { index, source })?;
        key.public
            .verify_strict(&message, &Signature::from_bytes(&section.signature))
            .map_err(|_| ArtifactError::BadSignature { index, key_id: section.key_id.clone() })?;
    }
    let signers: Vec<String> = artifact.signatures.iter().map(|s| s.key_id.clone()).collect();
    trust.check_signers(&signers, environment).map_err(ArtifactError::Signers)?;
    let manifest = Manifest::parse(artifact.manifest_text)?;
    Ok(VerifiedArtifact { digest: digest(bytes), component: artifact.component.to_vec(), manifest, signers })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: the header alone.
    const EMPTY_COMPONENT: &[u8] = &COMPONENT_HEADER;

    const MANIFEST: &str = "name = \"t\"\nversion = \"1.0.0\"\nowner = \"o\"\npurpose = \"p\"\n\
                            risk_class = \"advisory\"\nreversibility = \"reversible\"\n";

    #[test]
    fn sections_round_trip_and_cosigning_appends() {
        let author = PrivateKey::from_seed("author", Role::Author, [1; 32]);
        let reviewer = PrivateKey::from_seed("reviewer", Role::Author, [2; 32]);
        let signed = sign(EMPTY_COMPONENT, Some(MANIFEST), &author).unwrap();
        let cosigned = sign(&signed, None, &reviewer).unwrap();
        let artifact = Artifact::parse(&cosigned).unwrap();
        assert_eq!(artifact.component, EMPTY_COMPONENT);
        assert_eq!(artifact.manifest_text, MANIFEST);
        let ids: Vec<&str> = artifact.signatures.iter().map(|s| s.key_id.as_str()).collect();
        assert_eq!(ids, [author.id.as_str(), reviewer.id.as_str()]);
        assert!(matches!(sign(&cosigned, None, &author), Err(ArtifactError::AlreadySigned { .. })));
        assert!(matches!(sign(&signed, Some("name = \"other\""), &reviewer), Err(ArtifactError::ManifestMismatch)));
        let agent = PrivateKey::from_seed("agent", Role::Agent, [3; 32]);
        assert!(matches!(sign(EMPTY_COMPONENT, Some(MANIFEST), &agent), Err(ArtifactError::NotAnAuthorKey { .. })));
    }

    #[test]
    fn leb128_round_trips() {
        for value in [0, 1, 127, 128, 300, 16_384, u32::MAX as usize] {
            let mut out = Vec::new();
            write_leb128(&mut out, value);
            let mut pos = 0;
            assert_eq!(read_leb128(&out, &mut pos, 0).unwrap(), value);
            assert_eq!(pos, out.len());
        }
    }

    #[test]
    fn core_modules_and_junk_are_not_components() {
        assert!(
            matches!(Artifact::parse(b"\0asm\x01\0\0\0"), Err(ArtifactError::NotAComponent(m)) if m.contains("core module"))
        );
        assert!(matches!(Artifact::parse(b"hello"), Err(ArtifactError::NotAComponent(_))));
        assert!(matches!(Artifact::parse(EMPTY_COMPONENT), Err(ArtifactError::NoManifest)));
    }
}
