//! HTTP message signatures (RFC 9421), in the profile salve's API asks
//! for: one Ed25519 signature by a key of the trust store over at least
//! the method, the whole target URI and the body's digest (RFC 9530
//! `Content-Digest`, `sha-256`), with a creation time and a nonce:
//!
//! ```text
//! Content-Digest: sha-256=:<base64 of SHA-256(body)>:
//! Signature-Input: salve=("@method" "@target-uri" "content-digest");created=1733140000;nonce="<16-128 chars>";keyid="<key id>";alg="ed25519"
//! Signature: salve=:<base64 signature over the signature base>:
//! ```
//!
//! A signature older than [`MAX_AGE`], more than [`MAX_SKEW`] ahead, past
//! its `expires`, or whose nonce this server has seen for the same key
//! within that time is refused: a captured request cannot be played again.
//! [`signature_base`] is the general algorithm of RFC 9421 section 2.5
//! (checked against its example B.2.6); [`verify`] adds the profile.

use crate::keys::{PrivateKey, Role};
use crate::trust::{TrustError, TrustStore, TrustedKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _};
use http::HeaderMap;
use sfv::{BareItem, Dictionary, ListEntry, Parser};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How old a signature may be when it arrives.
pub const MAX_AGE: Duration = Duration::from_secs(300);
/// How far ahead of this server's clock a signature may be created.
pub const MAX_SKEW: Duration = Duration::from_secs(30);
/// The components every signature must cover.
pub const REQUIRED: [&str; 3] = ["@method", "@target-uri", "content-digest"];
/// The label salve's client signs under (a server takes any one label).
pub const LABEL: &str = "salve";
/// How many nonces the server keeps at most (those of the last
/// [`MAX_AGE`] + [`MAX_SKEW`]); past it, signed requests are refused until
/// some age out.
pub const MAX_NONCES: usize = 1_000_000;
/// How many of those one key may hold: one busy key cannot keep the others
/// out (an eighth: about 380 signed requests a second, kept 330 s).
pub const MAX_NONCES_PER_KEY: usize = MAX_NONCES / 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    #[error(
        "the request has no {header} header: sign it (RFC 9421) with a key of the runner's trust store, as `salve --server` does"
    )]
    Missing { header: &'static str },
    #[error("the {header} header is not valid: {reason}")]
    Malformed { header: &'static str, reason: String },
    #[error(
        "the signature does not cover {component}: it must cover \"@method\", \"@target-uri\" and \"content-digest\""
    )]
    Uncovered { component: &'static str },
    #[error("the signature has no {param} parameter: add created=<unix seconds>, nonce=\"..\" and keyid=\"..\"")]
    MissingParam { param: &'static str },
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "the signature was created {age_s} s ago, more than the {max_s} s allowed: sign each request when it is sent (is this host's clock right?)"
    )]
    Stale { age_s: u64, max_s: u64 },
    #[error("the signature was created {ahead_s} s in the future: check this host's clock and the client's")]
    Future { ahead_s: u64 },
    #[error("the signature expired {ago_s} s ago (its expires parameter)")]
    Expired { ago_s: u64 },
    #[error("key {id} is not in the runner's trust store: add it with `salve trust add`")]
    UnknownKey { id: String },
    #[error("key {id} is revoked: {reason}")]
    Revoked { id: String, reason: String },
    #[error("key {id} ({name}) expired at {not_after}")]
    KeyExpired { id: String, name: String, not_after: String },
    #[error("the Content-Digest does not match the body: sign the body that is sent")]
    Digest,
    #[error("the signature does not verify with key {id}: the request was changed, or signed by another key")]
    BadSignature { id: String },
    #[error("key {id} is a {role} key, which may not make this request")]
    WrongRole { id: String, role: Role },
    #[error("this signature's nonce was already used by key {id}: sign each request with a new nonce")]
    Replayed { id: String },
    #[error("the server holds {MAX_NONCES} recent nonces and takes no more for now; retry in a minute")]
    Busy,
    #[error(
        "key {id} has made {per_key} signed requests in the last five minutes, the most one key may; retry in a minute"
    )]
    KeyBusy { id: String, per_key: usize },
}

impl SignatureError {
    /// A stable name for what was refused, for the API's errors.
    pub fn code(&self) -> &'static str {
        match self {
            SignatureError::Missing { .. } => "signature-missing",
            SignatureError::Malformed { .. } => "signature-malformed",
            SignatureError::Uncovered { .. } => "signature-uncovered",
            SignatureError::MissingParam { .. } => "signature-param-missing",
            SignatureError::Unsupported(_) => "signature-unsupported",
            SignatureError::Stale { .. } => "signature-stale",
            SignatureError::Future { .. } => "signature-future",
            SignatureError::Expired { .. } => "signature-expired",
            SignatureError::UnknownKey { .. } => "key-unknown",
            SignatureError::Revoked { .. } => "key-revoked",
            SignatureError::KeyExpired { .. } => "key-expired",
            SignatureError::Digest => "content-digest-mismatch",
            SignatureError::BadSignature { .. } => "signature-invalid",
            SignatureError::Replayed { .. } => "signature-replayed",
            SignatureError::WrongRole { .. } => "role",
            SignatureError::Busy => "nonces-full",
            SignatureError::KeyBusy { .. } => "nonces-per-key",
        }
    }
}

/// The parts of a request a signature can cover.
pub struct Message<'a> {
    pub method: &'a str,
    /// `scheme://authority/path?query`, as the client addressed it.
    pub target_uri: &'a str,
    pub headers: &'a HeaderMap,
}

impl Message<'_> {
    fn uri(&self) -> Result<url::Url, SignatureError> {
        url::Url::parse(self.target_uri)
            .map_err(|e| SignatureError::Malformed { header: "Host", reason: format!("no target URI: {e}") })
    }

    /// The value of one covered component (RFC 9421 sections 2.1, 2.2).
    fn component(&self, name: &str) -> Result<String, SignatureError> {
        let unsupported = || SignatureError::Unsupported(format!("salve does not sign or check component {name:?}"));
        Ok(match name {
            "@method" => self.method.to_string(),
            "@target-uri" => self.target_uri.to_string(),
            "@authority" => {
                let uri = self.uri()?;
                let host = uri.host_str().ok_or_else(unsupported)?.to_ascii_lowercase();
                match uri.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host,
                }
            }
            "@scheme" => self.uri()?.scheme().to_string(),
            "@path" => self.uri()?.path().to_string(),
            "@query" => format!("?{}", self.uri()?.query().unwrap_or("")),
            _ if name.starts_with('@') => return Err(unsupported()),
            field => {
                let values: Vec<&str> = self
                    .headers
                    .get_all(field)
                    .iter()
                    .map(|v| v.to_str().map(str::trim))
                    .collect::<Result<_, _>>()
                    .map_err(|_| SignatureError::Unsupported(format!("header {field} is not ASCII")))?;
                if values.is_empty() {
                    return Err(SignatureError::Unsupported(format!(
                        "the signature covers header {field:?}, which the request does not have"
                    )));
                }
                values.join(", ")
            }
        })
    }
}

/// The signature parameters of the profile.
#[derive(Debug, Clone)]
pub struct Params {
    pub created: i64,
    pub expires: Option<i64>,
    pub nonce: Option<String>,
    pub keyid: Option<String>,
    pub alg: Option<String>,
}

/// One parsed `Signature-Input` member: what it covers, its parameters,
/// and their serialization as the signature base's last line.
pub struct Input {
    pub label: String,
    pub components: Vec<String>,
    pub params: Params,
    serialized: String,
}

/// Parses `Signature-Input` (exactly one signature).
pub fn parse_input(value: &str) -> Result<Input, SignatureError> {
    let malformed = |reason: String| SignatureError::Malformed { header: "Signature-Input", reason };
    let dict: Dictionary = Parser::new(value).parse().map_err(|e| malformed(e.to_string()))?;
    let mut members = dict.into_iter();
    let (label, entry) = members.next().ok_or_else(|| malformed("it names no signature".into()))?;
    if members.next().is_some() {
        return Err(malformed("it holds more than one signature: send exactly one".into()));
    }
    let ListEntry::InnerList(list) = entry else {
        return Err(malformed(format!("{} is not an inner list of components", label.as_str())));
    };
    let mut components = Vec::new();
    let mut serialized = String::from("(");
    for item in &list.items {
        let Some(name) = item.bare_item.as_string() else {
            return Err(malformed("each component is a quoted string".into()));
        };
        if !item.params.is_empty() {
            return Err(SignatureError::Unsupported(format!(
                "component {:?} has parameters; salve supports none",
                name.as_str()
            )));
        }
        let name = name.as_str().to_string();
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase() || b == b'"' || b == b'\\') {
            return Err(malformed(format!("component {name:?} is not a lower-case field or derived name")));
        }
        if components.contains(&name) {
            return Err(malformed(format!("component {name:?} is covered twice")));
        }
        if components.is_empty() {
            serialized.push('"');
        } else {
            serialized.push_str(" \"");
        }
        serialized.push_str(&name);
        serialized.push('"');
        components.push(name);
    }
    serialized.push(')');
    let (mut created, mut expires, mut nonce, mut keyid, mut alg) = (None, None, None, None, None);
    for (key, value) in &list.params {
        let key = key.as_str();
        let integer = || value.as_integer().map(i64::from).ok_or_else(|| malformed(format!("{key} is not an integer")));
        let string = || {
            value.as_string().map(|s| s.as_str().to_string()).ok_or_else(|| malformed(format!("{key} is not a string")))
        };
        match key {
            "created" => created = Some(integer()?),
            "expires" => expires = Some(integer()?),
            "nonce" => nonce = Some(string()?),
            "keyid" => keyid = Some(string()?),
            "alg" => alg = Some(string()?),
            "tag" => {
                string()?;
            }
            other => {
                return Err(SignatureError::Unsupported(format!(
                    "signature parameter {other:?} is not one salve knows"
                )));
            }
        }
        serialized.push(';');
        serialized.push_str(key);
        serialized.push('=');
        match value {
            BareItem::Integer(i) => serialized.push_str(&i.to_string()),
            BareItem::String(s) => {
                serialized.push('"');
                for c in s.as_str().chars() {
                    if c == '"' || c == '\\' {
                        serialized.push('\\');
                    }
                    serialized.push(c);
                }
                serialized.push('"');
            }
            _ => unreachable!("every parameter kept above is an integer or a string"),
        }
    }
    let created = created.ok_or(SignatureError::MissingParam { param: "created" })?;
    Ok(Input {
        label: label.as_str().to_string(),
        components,
        params: Params { created, expires, nonce, keyid, alg },
        serialized,
    })
}

/// The signature base (RFC 9421 section 2.5) of `message` for `input`.
pub fn signature_base(message: &Message<'_>, input: &Input) -> Result<String, SignatureError> {
    let mut base = String::new();
    for name in &input.components {
        let value = message.component(name)?;
        if value.contains('\n') || value.contains('\r') {
            return Err(SignatureError::Unsupported(format!("component {name:?} holds a line break")));
        }
        base.push_str(&format!("\"{name}\": {value}\n"));
    }
    base.push_str("\"@signature-params\": ");
    base.push_str(&input.serialized);
    Ok(base)
}

/// The signature under `label` in a `Signature` header.
pub fn parse_signature(value: &str, label: &str) -> Result<Signature, SignatureError> {
    let malformed = |reason: String| SignatureError::Malformed { header: "Signature", reason };
    let dict: Dictionary = Parser::new(value).parse().map_err(|e| malformed(e.to_string()))?;
    let entry = dict.get(label).ok_or_else(|| malformed(format!("it has no signature labelled {label:?}")))?;
    let ListEntry::Item(item) = entry else { return Err(malformed(format!("{label} is not a byte sequence"))) };
    let bytes =
        item.bare_item.as_byte_sequence().ok_or_else(|| malformed(format!("{label} is not a byte sequence")))?;
    Signature::from_slice(bytes).map_err(|_| malformed("an Ed25519 signature is 64 bytes".into()))
}

/// `Content-Digest: sha-256=:..:` of `body`.
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(body)))
}

fn check_digest(headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
    let value = one_header(headers, "content-digest", "Content-Digest")?;
    let malformed = |reason: String| SignatureError::Malformed { header: "Content-Digest", reason };
    let dict: Dictionary = Parser::new(value).parse().map_err(|e| malformed(e.to_string()))?;
    let Some(ListEntry::Item(item)) = dict.get("sha-256") else {
        return Err(malformed("it has no sha-256 digest; salve checks sha-256".into()));
    };
    let claimed =
        item.bare_item.as_byte_sequence().ok_or_else(|| malformed("sha-256 is not a byte sequence".into()))?;
    if claimed != Sha256::digest(body).as_slice() {
        return Err(SignatureError::Digest);
    }
    Ok(())
}

fn one_header<'a>(headers: &'a HeaderMap, name: &str, shown: &'static str) -> Result<&'a str, SignatureError> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(SignatureError::Missing { header: shown })?;
    if values.next().is_some() {
        return Err(SignatureError::Malformed { header: shown, reason: "it is sent more than once".into() });
    }
    value.to_str().map_err(|_| SignatureError::Malformed { header: shown, reason: "it is not ASCII".into() })
}

/// Nonces seen, per key, until their signatures could no longer be fresh.
pub struct Nonces {
    seen: Mutex<Seen>,
    /// The most kept in all, and for one key.
    limits: (usize, usize),
}

impl Default for Nonces {
    fn default() -> Nonces {
        Nonces::with_limits(MAX_NONCES, MAX_NONCES_PER_KEY)
    }
}

#[derive(Default)]
struct Seen {
    /// Key id, then nonce: until when it is kept.
    by_key: HashMap<String, HashMap<String, SystemTime>>,
    total: usize,
    /// When those no longer fresh are next forgotten.
    prune_at: Option<SystemTime>,
}

impl Seen {
    fn prune(&mut self, now: SystemTime) {
        self.by_key.retain(|_, nonces| {
            nonces.retain(|_, until| *until > now);
            !nonces.is_empty()
        });
        self.total = self.by_key.values().map(HashMap::len).sum();
        self.prune_at = Some(now + PRUNE_EVERY);
    }
}

/// How often the nonces no longer fresh are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

impl Nonces {
    /// A cache of at most `total` nonces, `per_key` of them for one key.
    pub fn with_limits(total: usize, per_key: usize) -> Nonces {
        Nonces { seen: Mutex::default(), limits: (total, per_key) }
    }

    /// Records `nonce` of `key` until `until`; false if it was already
    /// recorded.
    fn insert(&self, key: &str, nonce: &str, until: SystemTime, now: SystemTime) -> Result<bool, SignatureError> {
        let (total, per_key) = self.limits;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let held = |seen: &Seen| seen.by_key.get(key).map_or(0, HashMap::len);
        // On the timer; or when full, but at most once a second, so that a
        // key at its limit cannot make every request sweep the cache.
        let full = seen.total >= total || held(&seen) >= per_key;
        let due = seen.prune_at.is_none_or(|at| now >= at);
        let swept_recently = seen.prune_at.is_some_and(|at| now + PRUNE_EVERY < at + Duration::from_secs(1));
        if due || (full && !swept_recently) {
            seen.prune(now);
        }
        if held(&seen) >= per_key {
            return Err(SignatureError::KeyBusy { id: key.to_string(), per_key });
        }
        if seen.total >= total {
            return Err(SignatureError::Busy);
        }
        let nonces = seen.by_key.entry(key.to_string()).or_default();
        if nonces.contains_key(nonce) {
            return Ok(false);
        }
        nonces.insert(nonce.to_string(), until);
        seen.total += 1;
        Ok(true)
    }
}

fn unix(time: SystemTime) -> i64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Checks a request's signature in salve's profile, by a key of one of
/// `roles`; returns the key that signed it. What that key may see is the
/// caller's.
pub fn verify<'t>(
    message: &Message<'_>,
    body: &[u8],
    trust: &'t TrustStore,
    nonces: &Nonces,
    roles: &[Role],
    now: SystemTime,
) -> Result<&'t TrustedKey, SignatureError> {
    let input = parse_input(one_header(message.headers, "signature-input", "Signature-Input")?)?;
    for component in REQUIRED {
        if !input.components.iter().any(|c| c == component) {
            return Err(SignatureError::Uncovered { component });
        }
    }
    let params = &input.params;
    if let Some(alg) = &params.alg
        && alg != "ed25519"
    {
        return Err(SignatureError::Unsupported(format!("algorithm {alg:?}: salve's keys sign with ed25519")));
    }
    let nonce = params.nonce.as_deref().ok_or(SignatureError::MissingParam { param: "nonce" })?;
    if !(16..=128).contains(&nonce.len()) || !nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b)) {
        return Err(SignatureError::Malformed {
            header: "Signature-Input",
            reason: "the nonce is 16 to 128 characters of letters, digits and -_.~".into(),
        });
    }
    let id = params.keyid.as_deref().ok_or(SignatureError::MissingParam { param: "keyid" })?;
    let now_s = unix(now);
    if params.created > now_s + MAX_SKEW.as_secs() as i64 {
        return Err(SignatureError::Future { ahead_s: (params.created - now_s) as u64 });
    }
    let age = now_s.saturating_sub(params.created);
    if age > MAX_AGE.as_secs() as i64 {
        return Err(SignatureError::Stale { age_s: age as u64, max_s: MAX_AGE.as_secs() });
    }
    if let Some(expires) = params.expires
        && expires <= now_s
    {
        return Err(SignatureError::Expired { ago_s: (now_s - expires) as u64 });
    }
    // Whether the key is revoked or expired, and its name, are said only to
    // whoever holds it: first the signature.
    let candidate = trust.key(id).ok_or_else(|| SignatureError::UnknownKey { id: id.into() })?;
    check_digest(message.headers, body)?;
    let signature = parse_signature(one_header(message.headers, "signature", "Signature")?, &input.label)?;
    let base = signature_base(message, &input)?;
    candidate
        .public
        .verify_strict(base.as_bytes(), &signature)
        .map_err(|_| SignatureError::BadSignature { id: id.into() })?;
    let role = candidate.entry.role;
    let key = trust.check_role(id, role, now).map_err(|e| match e {
        TrustError::Revoked { id, reason } => SignatureError::Revoked { id, reason },
        TrustError::UnknownKey { id } => SignatureError::UnknownKey { id },
        TrustError::Expired { id, name, not_after } => SignatureError::KeyExpired { id, name, not_after },
        other => SignatureError::Unsupported(other.to_string()),
    })?;
    if !roles.contains(&role) {
        return Err(SignatureError::WrongRole { id: id.into(), role });
    }
    // Only a signature that verified, by a key that may make requests
    // here, takes room among the nonces.
    let until = SystemTime::UNIX_EPOCH + Duration::from_secs(params.created.max(0) as u64) + MAX_AGE + MAX_SKEW;
    if !nonces.insert(id, nonce, until, now)? {
        return Err(SignatureError::Replayed { id: id.into() });
    }
    Ok(key)
}

/// The headers that sign a request of `method` to `target_uri` with `body`
/// by `key`, in salve's profile: `Content-Digest`, `Signature-Input`,
/// `Signature`.
pub fn sign(
    method: &str,
    target_uri: &str,
    body: &[u8],
    key: &PrivateKey,
    now: SystemTime,
) -> Result<Vec<(&'static str, String)>, SignatureError> {
    let mut random = [0u8; 18];
    getrandom::fill(&mut random).map_err(|e| SignatureError::Unsupported(format!("no randomness for a nonce: {e}")))?;
    let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
    let digest = content_digest(body);
    let members = REQUIRED.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(" ");
    let value =
        format!("{LABEL}=({members});created={};nonce=\"{nonce}\";keyid=\"{}\";alg=\"ed25519\"", unix(now), key.id);
    let input = parse_input(&value)?;
    let mut headers = HeaderMap::new();
    headers.insert("content-digest", digest.parse().expect("a digest is a valid header value"));
    let base = signature_base(&Message { method, target_uri, headers: &headers }, &input)?;
    let signature = STANDARD.encode(key.signing.sign(base.as_bytes()).to_bytes());
    Ok(vec![("content-digest", digest), ("signature-input", value), ("signature", format!("{LABEL}=:{signature}:"))])
}

#[cfg(test)]
mod tests;
