//! Signed checkpoints of the audit log in the C2SP formats: `tlog-checkpoint` bodies inside Ed25519 `signed-note`
//! envelopes, and the `vkey` text form of verifier keys that witnesses exchange.
//!
//! A checkpoint body is three or more lines, each ending in a newline: the origin (which runner's log), the tree size
//! in decimal, the base64 root hash, then optional extension lines ([`Checkpoint::body`]):
//!
//! ```text
//! salve.example/runner-1
//! 20852163
//! CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=
//! ```
//!
//! A signed note is its text, a blank line, and one or more signature lines `— NAME BASE64(key ID || signature)`
//! (em dash U+2014, space). For Ed25519 the key ID is the first four bytes, big-endian, of
//! `SHA-256(name || "\n" || 0x01 || public key)` and the signature is over the text, final newline included
//! ([`key_id`], [`SignedNote`]). A verifier key is written `name+KEYID_HEX+BASE64(0x01 || public key)`
//! ([`Verifier::to_vkey`], [`Verifier::from_vkey`]). All of this is what `golang.org/x/mod/sumdb/note` and
//! `golang.org/x/mod/sumdb/tlog` read and write, byte for byte.
//!
//! # Size
//!
//! Over 600 lines: the signed-note envelope, the checkpoint body in it and the vkey form are one format, whose strict
//! parser is most of the file; the tests are in `checkpoint/tests.rs`.
//!
//! # Errors
//!
//! Every fallible function returns [`CheckpointError`], one variant per reason, with the offending line, offset or
//! count. Parsing is strict: anything not exactly in the format is refused, never repaired (see
//! [`SignedNote::parse`] and [`Checkpoint::from_body`] for the list).
//!
//! # Security
//!
//! Only signatures from keys the caller passes are trusted, matched on both name and key ID, and checked with
//! `verify_strict` (no small-order or non-canonical `R`, no weak keys). As the signed-note spec requires, signatures by
//! unknown keys are ignored, even when they share a name or a key ID (but not both) with a known key; a signature by a
//! known key that fails refuses the whole note; a note with no verified signature is refused. Every input is bounded
//! before it is looked at ([`MAX_NOTE_BYTES`], [`MAX_LINE_BYTES`], [`MAX_SIGNATURES`], [`MAX_KEY_NAME_BYTES`],
//! [`MAX_EXTENSION_LINES`]), so hostile notes cost at most [`MAX_SIGNATURES`] signature checks. Text that came from
//! outside appears in error messages only through `{:?}`, so it cannot carry control characters to a terminal. A
//! checkpoint's body says nothing until [`Checkpoint::open`] (or [`SignedNote::verify`]) has verified it; use the
//! parse-only functions only to show a note to a person.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Length of a Merkle root hash (SHA-256).
pub const ROOT_LEN: usize = 32;

/// The signed-note signature type byte of Ed25519 keys and signatures.
pub const ALG_ED25519: u8 = 0x01;

/// Length of the key ID that opens every signature.
pub const KEY_ID_LEN: usize = 4;

/// Length of an Ed25519 public key.
pub const ED25519_PUBLIC_KEY_LEN: usize = 32;

/// Length of an Ed25519 signature.
pub const ED25519_SIGNATURE_LEN: usize = 64;

/// What opens each signature line: em dash (U+2014) and a space.
pub const SIGNATURE_LINE_PREFIX: &str = "\u{2014} ";

/// Largest note accepted, in bytes (256 KiB): room for the 16 signatures the spec says must be accepted even if they
/// are post-quantum ones of about 5 kB, while a checkpoint with a few Ed25519 signatures is well under 1 KiB.
pub const MAX_NOTE_BYTES: usize = 256 * 1024;

/// Longest line accepted, in bytes, newline excluded (8 KiB: a post-quantum signature line fits).
pub const MAX_LINE_BYTES: usize = 8 * 1024;

/// Most signature lines accepted in one note (the limit `golang.org/x/mod/sumdb/note` applies; the spec asks for at
/// least 16).
pub const MAX_SIGNATURES: usize = 100;

/// Longest key name accepted, in bytes.
pub const MAX_KEY_NAME_BYTES: usize = 256;

/// Most extension lines accepted in a checkpoint body (the spec discourages them; salve writes none).
pub const MAX_EXTENSION_LINES: usize = 16;

/// Shortest signature accepted from an unknown key: the key ID and at least one byte.
pub const MIN_SIGNATURE_BYTES: usize = KEY_ID_LEN + 1;

/// Length of the key ID in a vkey: eight lowercase hex digits.
pub const VKEY_KEY_ID_HEX_LEN: usize = 2 * KEY_ID_LEN;

/// Why a checkpoint, a note, a key or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The note is larger than [`MAX_NOTE_BYTES`].
    #[error("note is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// The note's length.
        len: usize,
        /// [`MAX_NOTE_BYTES`].
        max: usize,
    },
    /// The note is not valid UTF-8.
    #[error("note is not valid UTF-8 (valid up to byte {valid_up_to})")]
    InvalidUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// A control character other than newline (CR, tab, NUL, ...) appears in the text.
    #[error("control character 0x{byte:02x} at byte {offset}")]
    ControlCharacter {
        /// Offset of the character.
        offset: usize,
        /// The character.
        byte: u8,
    },
    /// The text does not end in a newline.
    #[error("text does not end in a newline")]
    MissingFinalNewline,
    /// A line is longer than [`MAX_LINE_BYTES`].
    #[error("line {line} is {len} bytes, more than the {max} allowed")]
    LineTooLong {
        /// The line's number, from 1.
        line: usize,
        /// The line's length, newline excluded.
        len: usize,
        /// [`MAX_LINE_BYTES`].
        max: usize,
    },
    /// No blank line separates the text from the signatures.
    #[error("no blank line separates the text from the signatures")]
    MissingBlankLine,
    /// The blank line is not followed by any signature line.
    #[error("no signature lines after the blank line")]
    NoSignatures,
    /// More than [`MAX_SIGNATURES`] signature lines.
    #[error("more than {max} signature lines")]
    TooManySignatures {
        /// [`MAX_SIGNATURES`].
        max: usize,
    },
    /// A line after the blank line does not start with an em dash and a space.
    #[error("signature line {index} does not start with an em dash and a space")]
    SignatureLinePrefix {
        /// The signature line's number, from 1.
        index: usize,
    },
    /// A signature line has no space between the key name and the signature.
    #[error("signature line {index} has no signature after the key name")]
    MissingSignature {
        /// The signature line's number, from 1.
        index: usize,
    },
    /// A key name is empty, too long, or contains a space, a plus or a control character.
    #[error("invalid key name {name:?}: must be 1 to {max} bytes with no spaces or '+'")]
    InvalidKeyName {
        /// The name.
        name: String,
        /// [`MAX_KEY_NAME_BYTES`].
        max: usize,
    },
    /// A base64 field is not canonical standard base64 (RFC 4648 section 4, with padding, zero trailing bits).
    #[error("{field} is not canonical base64")]
    InvalidBase64 {
        /// Which field.
        field: &'static str,
    },
    /// A signature is shorter than [`MIN_SIGNATURE_BYTES`].
    #[error("signature line {index} holds {len} bytes, fewer than {min}")]
    SignatureTooShort {
        /// The signature line's number, from 1.
        index: usize,
        /// The decoded length.
        len: usize,
        /// [`MIN_SIGNATURE_BYTES`].
        min: usize,
    },
    /// The checkpoint body has fewer than three lines.
    #[error("checkpoint body has {lines} lines, at least 3 are needed")]
    TooFewLines {
        /// The number of lines found.
        lines: usize,
    },
    /// A line of the checkpoint body is empty.
    #[error("line {line} of the checkpoint body is empty")]
    EmptyLine {
        /// The line's number, from 1 (1 is the origin).
        line: usize,
    },
    /// The tree size is not a decimal `u64` with no sign and no leading zeros.
    #[error("tree size {text:?} is not a decimal number with no sign or leading zeros that fits in 64 bits")]
    InvalidTreeSize {
        /// The size line.
        text: String,
    },
    /// The root hash line does not decode to 32 bytes.
    #[error("root hash decodes to {len} bytes, not {expected}")]
    RootHashLength {
        /// The decoded length.
        len: usize,
        /// [`ROOT_LEN`].
        expected: usize,
    },
    /// More than [`MAX_EXTENSION_LINES`] extension lines.
    #[error("{count} extension lines, more than the {max} allowed")]
    TooManyExtensions {
        /// The number found.
        count: usize,
        /// [`MAX_EXTENSION_LINES`].
        max: usize,
    },
    /// A field meant to be one line contains a newline.
    #[error("{field} contains a newline")]
    NewlineInField {
        /// Which field.
        field: &'static str,
    },
    /// The checkpoint's origin is not the one expected.
    #[error("checkpoint origin is {found:?}, expected {expected:?}")]
    OriginMismatch {
        /// The origin expected.
        expected: String,
        /// The origin found.
        found: String,
    },
    /// A vkey is not `name+keyid+key` with an 8-digit lowercase hex key ID.
    #[error("malformed verifier key: {reason}")]
    MalformedVkey {
        /// What is wrong.
        reason: &'static str,
    },
    /// A key is of another signature type than Ed25519.
    #[error("unsupported signature type 0x{alg:02x} (only Ed25519, 0x01)")]
    UnsupportedAlgorithm {
        /// The type byte.
        alg: u8,
    },
    /// A key's material has the wrong length.
    #[error("key is {len} bytes, expected {expected}")]
    KeyLength {
        /// The length found (type byte excluded).
        len: usize,
        /// [`ED25519_PUBLIC_KEY_LEN`].
        expected: usize,
    },
    /// The key ID written with a key is not the one computed from it.
    #[error("key ID {written:08x} of {name:?} does not match the key (computed {computed:08x})")]
    KeyIdMismatch {
        /// The key name.
        name: String,
        /// The key ID written.
        written: u32,
        /// The key ID computed.
        computed: u32,
    },
    /// The public key is not a valid, canonically encoded Ed25519 point of large order.
    #[error("invalid Ed25519 public key: {reason}")]
    InvalidPublicKey {
        /// What is wrong.
        reason: &'static str,
    },
    /// Two different trusted keys share a name and key ID.
    #[error("two different trusted keys are named {name:?} with key ID {key_id:08x}")]
    AmbiguousKey {
        /// The name.
        name: String,
        /// The key ID.
        key_id: u32,
    },
    /// A signature by a known key does not verify.
    #[error("signature by {name:?} (key ID {key_id:08x}) does not verify")]
    InvalidSignature {
        /// The key name.
        name: String,
        /// The key ID.
        key_id: u32,
    },
    /// No signature by a known key is on the note.
    #[error("none of the note's {signatures} signatures is by a trusted key")]
    NoVerifiedSignature {
        /// The number of signatures on the note.
        signatures: usize,
    },
}

/// The signed-note key ID of an Ed25519 key: the first four bytes, big-endian, of
/// `SHA-256(name || "\n" || 0x01 || public key)`.
#[must_use]
pub fn key_id(name: &str, key: &VerifyingKey) -> u32 {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update(b"\n")
        .chain_update([ALG_ED25519])
        .chain_update(key.as_bytes())
        .finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Checks a key name: 1 to [`MAX_KEY_NAME_BYTES`] bytes, no Unicode white space (the same set as Go's
/// `unicode.IsSpace`), no `+`, and (stricter than Go) no control character.
fn check_key_name(name: &str) -> Result<(), CheckpointError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_KEY_NAME_BYTES
        && !name.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control());
    if valid { Ok(()) } else { Err(CheckpointError::InvalidKeyName { name: name.to_owned(), max: MAX_KEY_NAME_BYTES }) }
}

/// Decodes canonical standard base64: the `base64` crate's `STANDARD` engine already refuses missing padding and
/// non-zero trailing bits; re-encoding and comparing makes the canonical-form check explicit.
fn decode_base64(text: &str, field: &'static str) -> Result<Vec<u8>, CheckpointError> {
    let bytes = STANDARD.decode(text).map_err(|_| CheckpointError::InvalidBase64 { field })?;
    if STANDARD.encode(&bytes) != text {
        return Err(CheckpointError::InvalidBase64 { field });
    }
    Ok(bytes)
}

/// Checks what every note and every text to sign must be: no control character but newline.
fn check_no_controls(text: &str) -> Result<(), CheckpointError> {
    match text.bytes().enumerate().find(|&(_, b)| b < 0x20 && b != b'\n') {
        Some((offset, byte)) => Err(CheckpointError::ControlCharacter { offset, byte }),
        None => Ok(()),
    }
}

/// Checks that every line of `text` is at most [`MAX_LINE_BYTES`] long.
fn check_line_lengths(text: &str) -> Result<(), CheckpointError> {
    match text.split('\n').enumerate().find(|(_, line)| line.len() > MAX_LINE_BYTES) {
        Some((index, line)) => {
            Err(CheckpointError::LineTooLong { line: index + 1, len: line.len(), max: MAX_LINE_BYTES })
        }
        None => Ok(()),
    }
}

/// A key trusted to sign notes: an Ed25519 public key with its name and the key ID derived from both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    /// The key name.
    name: String,
    /// The public key.
    key: VerifyingKey,
    /// [`key_id`] of the name and key.
    key_id: u32,
}

impl Verifier {
    /// A verifier for `key` under `name`.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::InvalidKeyName`] for an invalid name, [`CheckpointError::InvalidPublicKey`] for a weak
    /// (small-order) key.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, CheckpointError> {
        check_key_name(name)?;
        if key.is_weak() {
            return Err(CheckpointError::InvalidPublicKey { reason: "small-order point" });
        }
        Ok(Self { name: name.to_owned(), key_id: key_id(name, &key), key })
    }

    /// Reads the vkey text form `name+keyid+base64(0x01 || public key)`, as `golang.org/x/mod/sumdb/note` writes it.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::MalformedVkey`], [`CheckpointError::InvalidKeyName`], [`CheckpointError::InvalidBase64`],
    /// [`CheckpointError::UnsupportedAlgorithm`], [`CheckpointError::KeyLength`],
    /// [`CheckpointError::KeyIdMismatch`] or [`CheckpointError::InvalidPublicKey`].
    pub fn from_vkey(vkey: &str) -> Result<Self, CheckpointError> {
        if vkey.len() > MAX_LINE_BYTES {
            return Err(CheckpointError::MalformedVkey { reason: "too long" });
        }
        let (name, rest) =
            vkey.split_once('+').ok_or(CheckpointError::MalformedVkey { reason: "no '+' after the name" })?;
        let (id_hex, key64) =
            rest.split_once('+').ok_or(CheckpointError::MalformedVkey { reason: "no '+' after the key ID" })?;
        check_key_name(name)?;
        let id_is_hex =
            id_hex.len() == VKEY_KEY_ID_HEX_LEN && id_hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let written = if id_is_hex { u32::from_str_radix(id_hex, 16).ok() } else { None }
            .ok_or(CheckpointError::MalformedVkey { reason: "key ID is not 8 lowercase hex digits" })?;
        let key = decode_base64(key64, "verifier key")?;
        let (&alg, material) = key.split_first().ok_or(CheckpointError::MalformedVkey { reason: "empty key" })?;
        if alg != ALG_ED25519 {
            return Err(CheckpointError::UnsupportedAlgorithm { alg });
        }
        let material: [u8; ED25519_PUBLIC_KEY_LEN] = material
            .try_into()
            .map_err(|_| CheckpointError::KeyLength { len: material.len(), expected: ED25519_PUBLIC_KEY_LEN })?;
        let public = VerifyingKey::from_bytes(&material)
            .map_err(|_| CheckpointError::InvalidPublicKey { reason: "not a point on the curve" })?;
        if public.to_edwards().compress().to_bytes() != material {
            return Err(CheckpointError::InvalidPublicKey { reason: "non-canonical encoding" });
        }
        let verifier = Self::new(name, public)?;
        if verifier.key_id != written {
            return Err(CheckpointError::KeyIdMismatch { name: name.to_owned(), written, computed: verifier.key_id });
        }
        Ok(verifier)
    }

    /// The vkey text form `name+keyid+base64(0x01 || public key)`.
    #[must_use]
    pub fn to_vkey(&self) -> String {
        let mut key = Vec::with_capacity(1 + ED25519_PUBLIC_KEY_LEN);
        key.push(ALG_ED25519);
        key.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.key_id, STANDARD.encode(key))
    }

    /// The key name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key.
    #[must_use]
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The key ID.
    #[must_use]
    pub fn key_id(&self) -> u32 {
        self.key_id
    }
}

/// One signature line of a note: who signed (name and key ID) and the signature bytes after the key ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The key ID.
    pub key_id: u32,
    /// The signature, key ID excluded (64 bytes for Ed25519; any length of at least one byte for unknown keys).
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// The signature line, newline included.
    #[must_use]
    pub fn line(&self) -> String {
        let mut blob = Vec::with_capacity(KEY_ID_LEN + self.signature.len());
        blob.extend_from_slice(&self.key_id.to_be_bytes());
        blob.extend_from_slice(&self.signature);
        format!("{SIGNATURE_LINE_PREFIX}{} {}\n", self.name, STANDARD.encode(blob))
    }
}

/// Who signed: a key name and key ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerId {
    /// The key name.
    pub name: String,
    /// The key ID.
    pub key_id: u32,
}

/// The outcome of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The trusted keys whose signatures verified, in the note's order, each once.
    pub verified: Vec<SignerId>,
    /// The signers that are not trusted (ignored), in the note's order, each once.
    pub unknown: Vec<SignerId>,
}

/// A signed note: text ending in a newline, and one or more signatures over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The text, final newline included.
    text: String,
    /// The signatures, in order.
    signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// Signs `text` with `key` under `name`.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::InvalidKeyName`], or any refusal [`SignedNote::parse`] would make of the note produced
    /// (missing final newline, control characters, lines or note too long).
    pub fn sign(text: &str, key: &SigningKey, name: &str) -> Result<Self, CheckpointError> {
        let mut note = Self { text: text.to_owned(), signatures: Vec::new() };
        note.add_signature(key, name)?;
        Ok(note)
    }

    /// Adds (or replaces, for the same name and key ID) a signature by `key` under `name`, after the others.
    ///
    /// # Errors
    ///
    /// As [`SignedNote::sign`].
    pub fn add_signature(&mut self, key: &SigningKey, name: &str) -> Result<(), CheckpointError> {
        check_key_name(name)?;
        check_text(&self.text)?;
        let id = key_id(name, &key.verifying_key());
        let signature = key.sign(self.text.as_bytes()).to_bytes().to_vec();
        let mut signatures: Vec<NoteSignature> =
            self.signatures.iter().filter(|s| !(s.name == name && s.key_id == id)).cloned().collect();
        signatures.push(NoteSignature { name: name.to_owned(), key_id: id, signature });
        if signatures.len() > MAX_SIGNATURES {
            return Err(CheckpointError::TooManySignatures { max: MAX_SIGNATURES });
        }
        let candidate = Self { text: self.text.clone(), signatures };
        let encoded = candidate.encode();
        if encoded.len() > MAX_NOTE_BYTES {
            return Err(CheckpointError::TooLarge { len: encoded.len(), max: MAX_NOTE_BYTES });
        }
        check_line_lengths(&encoded)?;
        *self = candidate;
        Ok(())
    }

    /// Parses a signed note, strictly, without verifying any signature.
    ///
    /// Refused: more than [`MAX_NOTE_BYTES`]; invalid UTF-8; any control character but newline (CR included); no
    /// final newline; a line longer than [`MAX_LINE_BYTES`]; no blank line; nothing after the last blank line; more
    /// than [`MAX_SIGNATURES`] signature lines; a signature line not `— NAME BASE64` with a valid name and canonical
    /// base64 of at least [`MIN_SIGNATURE_BYTES`] bytes.
    ///
    /// # Errors
    ///
    /// The [`CheckpointError`] variant named by each refusal above.
    pub fn parse(note: &[u8]) -> Result<Self, CheckpointError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(CheckpointError::TooLarge { len: note.len(), max: MAX_NOTE_BYTES });
        }
        let note =
            std::str::from_utf8(note).map_err(|e| CheckpointError::InvalidUtf8 { valid_up_to: e.valid_up_to() })?;
        check_no_controls(note)?;
        if !note.ends_with('\n') {
            return Err(CheckpointError::MissingFinalNewline);
        }
        check_line_lengths(note)?;
        // The text ends at the last blank line; the signature block after it has no blank lines.
        let split = note.rfind("\n\n").ok_or(CheckpointError::MissingBlankLine)?;
        let (text, block) = (&note[..=split], &note[split + 2..]);
        if block.is_empty() {
            return Err(CheckpointError::NoSignatures);
        }
        let mut signatures = Vec::new();
        // `block` ends in a newline, so the last item of the split is the empty remainder.
        for (i, line) in block.trim_end_matches('\n').split('\n').enumerate() {
            let index = i + 1;
            if index > MAX_SIGNATURES {
                return Err(CheckpointError::TooManySignatures { max: MAX_SIGNATURES });
            }
            let rest =
                line.strip_prefix(SIGNATURE_LINE_PREFIX).ok_or(CheckpointError::SignatureLinePrefix { index })?;
            let (name, blob) = rest.split_once(' ').ok_or(CheckpointError::MissingSignature { index })?;
            check_key_name(name)?;
            let blob = decode_base64(blob, "signature")?;
            if blob.len() < MIN_SIGNATURE_BYTES {
                return Err(CheckpointError::SignatureTooShort { index, len: blob.len(), min: MIN_SIGNATURE_BYTES });
            }
            let key_id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
            signatures.push(NoteSignature { name: name.to_owned(), key_id, signature: blob[KEY_ID_LEN..].to_vec() });
        }
        Ok(Self { text: text.to_owned(), signatures })
    }

    /// The text, final newline included. Trust it only after [`SignedNote::verify`].
    #[must_use]
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signatures, in order.
    #[must_use]
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// The note: text, blank line, signature lines.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 1 + self.signatures.len() * 128);
        out.push_str(&self.text);
        out.push('\n');
        for signature in &self.signatures {
            out.push_str(&signature.line());
        }
        out
    }

    /// Verifies the note against the trusted keys `known`: every signature whose name and key ID match a known key
    /// must verify (with `verify_strict`), at least one must, and all others are ignored.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::AmbiguousKey`] if `known` holds two different keys with the same name and key ID,
    /// [`CheckpointError::InvalidSignature`] for a known key's signature that does not verify,
    /// [`CheckpointError::NoVerifiedSignature`] if no known key signed.
    pub fn verify(&self, known: &[Verifier]) -> Result<Verification, CheckpointError> {
        for (i, a) in known.iter().enumerate() {
            if known[i + 1..].iter().any(|b| a.name == b.name && a.key_id == b.key_id && a.key != b.key) {
                return Err(CheckpointError::AmbiguousKey { name: a.name.clone(), key_id: a.key_id });
            }
        }
        let mut verification = Verification { verified: Vec::new(), unknown: Vec::new() };
        for signature in &self.signatures {
            let id = SignerId { name: signature.name.clone(), key_id: signature.key_id };
            let Some(verifier) = known.iter().find(|v| v.name == signature.name && v.key_id == signature.key_id) else {
                if !verification.unknown.contains(&id) {
                    verification.unknown.push(id);
                }
                continue;
            };
            let invalid =
                || CheckpointError::InvalidSignature { name: signature.name.clone(), key_id: signature.key_id };
            let bytes: [u8; ED25519_SIGNATURE_LEN] =
                signature.signature.as_slice().try_into().map_err(|_| invalid())?;
            verifier.key.verify_strict(self.text.as_bytes(), &Signature::from_bytes(&bytes)).map_err(|_| invalid())?;
            if !verification.verified.contains(&id) {
                verification.verified.push(id);
            }
        }
        if verification.verified.is_empty() {
            return Err(CheckpointError::NoVerifiedSignature { signatures: self.signatures.len() });
        }
        Ok(verification)
    }
}

/// Checks a text to sign: ends in a newline, no control character but newline, lines within [`MAX_LINE_BYTES`].
fn check_text(text: &str) -> Result<(), CheckpointError> {
    check_no_controls(text)?;
    if !text.ends_with('\n') {
        return Err(CheckpointError::MissingFinalNewline);
    }
    check_line_lengths(text)
}

/// A transparency log checkpoint (C2SP `tlog-checkpoint`): which log, how many leaves, which root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity: salve writes the runner's name here, and uses it as the signing key name.
    pub origin: String,
    /// The number of leaves (audit records) in the tree.
    pub size: u64,
    /// The RFC 9162 root hash of the tree.
    pub root: [u8; ROOT_LEN],
    /// Extension lines, each non-empty; salve writes none.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint with no extension lines.
    #[must_use]
    pub fn new(origin: &str, size: u64, root: [u8; ROOT_LEN]) -> Self {
        Self { origin: origin.to_owned(), size, root, extensions: Vec::new() }
    }

    /// The note text: `origin\nsize\nbase64(root)\n`, then each extension line and a newline.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::EmptyLine`] for an empty origin or extension, [`CheckpointError::NewlineInField`],
    /// [`CheckpointError::ControlCharacter`], [`CheckpointError::LineTooLong`] or
    /// [`CheckpointError::TooManyExtensions`].
    pub fn body(&self) -> Result<String, CheckpointError> {
        if self.extensions.len() > MAX_EXTENSION_LINES {
            return Err(CheckpointError::TooManyExtensions { count: self.extensions.len(), max: MAX_EXTENSION_LINES });
        }
        let fields = std::iter::once(("origin", &self.origin)).chain(self.extensions.iter().map(|e| ("extension", e)));
        for (i, (field, value)) in fields.enumerate() {
            if value.is_empty() {
                return Err(CheckpointError::EmptyLine { line: if i == 0 { 1 } else { i + 3 } });
            }
            if value.contains('\n') {
                return Err(CheckpointError::NewlineInField { field });
            }
        }
        let mut body = format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root));
        for extension in &self.extensions {
            body.push_str(extension);
            body.push('\n');
        }
        check_text(&body)?;
        Ok(body)
    }

    /// Parses a checkpoint body (a note's text), strictly: at least three lines, all non-empty, each ending in a
    /// newline; a size with no sign or leading zeros that fits a `u64`; a root that is canonical base64 of 32 bytes; at
    /// most [`MAX_EXTENSION_LINES`] extension lines; no control characters; lines within [`MAX_LINE_BYTES`].
    ///
    /// # Errors
    ///
    /// [`CheckpointError::MissingFinalNewline`], [`CheckpointError::TooFewLines`], [`CheckpointError::EmptyLine`],
    /// [`CheckpointError::InvalidTreeSize`], [`CheckpointError::InvalidBase64`], [`CheckpointError::RootHashLength`],
    /// [`CheckpointError::TooManyExtensions`], [`CheckpointError::ControlCharacter`] or
    /// [`CheckpointError::LineTooLong`].
    pub fn from_body(text: &str) -> Result<Self, CheckpointError> {
        if text.len() > MAX_NOTE_BYTES {
            return Err(CheckpointError::TooLarge { len: text.len(), max: MAX_NOTE_BYTES });
        }
        check_text(text)?;
        let lines: Vec<&str> = text[..text.len() - 1].split('\n').collect();
        if let Some(i) = lines.iter().position(|line| line.is_empty()) {
            return Err(CheckpointError::EmptyLine { line: i + 1 });
        }
        let [origin, size, root, extensions @ ..] = lines.as_slice() else {
            return Err(CheckpointError::TooFewLines { lines: lines.len() });
        };
        if extensions.len() > MAX_EXTENSION_LINES {
            return Err(CheckpointError::TooManyExtensions { count: extensions.len(), max: MAX_EXTENSION_LINES });
        }
        let size = parse_tree_size(size)?;
        let root = decode_base64(root, "root hash")?;
        let root: [u8; ROOT_LEN] = root
            .as_slice()
            .try_into()
            .map_err(|_| CheckpointError::RootHashLength { len: root.len(), expected: ROOT_LEN })?;
        Ok(Self {
            origin: (*origin).to_owned(),
            size,
            root,
            extensions: extensions.iter().map(|e| (*e).to_owned()).collect(),
        })
    }

    /// The signed note of this checkpoint, signed by `key` under `name` (salve uses the origin as the name).
    ///
    /// # Errors
    ///
    /// As [`Checkpoint::body`] and [`SignedNote::sign`].
    pub fn sign(&self, key: &SigningKey, name: &str) -> Result<String, CheckpointError> {
        Ok(SignedNote::sign(&self.body()?, key, name)?.encode())
    }

    /// Parses a signed checkpoint without verifying it: only to show it to a person or to pass it on.
    ///
    /// # Errors
    ///
    /// As [`SignedNote::parse`] and [`Checkpoint::from_body`].
    pub fn parse_unverified(note: &[u8]) -> Result<(Self, SignedNote), CheckpointError> {
        let note = SignedNote::parse(note)?;
        Ok((Self::from_body(note.text())?, note))
    }

    /// Parses a signed checkpoint, verifies it against the trusted keys `known` and checks that its origin is
    /// `origin`.
    ///
    /// # Errors
    ///
    /// As [`SignedNote::parse`], [`SignedNote::verify`] and [`Checkpoint::from_body`], and
    /// [`CheckpointError::OriginMismatch`].
    pub fn open(note: &[u8], origin: &str, known: &[Verifier]) -> Result<(Self, Verification), CheckpointError> {
        let note = SignedNote::parse(note)?;
        // The body is parsed (strictly, within bounds) before verification only to report a malformed one as such;
        // nothing from it is returned unless a trusted signature verifies.
        let checkpoint = Self::from_body(note.text())?;
        let verification = note.verify(known)?;
        if checkpoint.origin != origin {
            return Err(CheckpointError::OriginMismatch { expected: origin.to_owned(), found: checkpoint.origin });
        }
        Ok((checkpoint, verification))
    }
}

/// Parses a tree size: ASCII digits only, no leading zeros unless it is `0`, at most `u64::MAX`.
fn parse_tree_size(text: &str) -> Result<u64, CheckpointError> {
    let invalid = || CheckpointError::InvalidTreeSize { text: text.to_owned() };
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (text.len() > 1 && text.starts_with('0')) {
        return Err(invalid());
    }
    text.parse::<u64>().map_err(|_| invalid())
}

#[cfg(test)]
mod tests;
