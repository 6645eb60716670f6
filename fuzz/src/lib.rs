//! What the fuzz targets share: fixed keys, a trust store that trusts them,
//! and a fixed "now", so that an input means the same on every run and a
//! crash found once replays forever.
//!
//! The keys come from fixed seeds: they sign fuzz inputs and nothing else.
//! `seeds` (a bin of this crate) writes the corpus seeds signed by them.

use salve::keys::{PrivateKey, Role};
use salve::trust::{KeyEntry, TrustFile, TrustStore};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// A playbook manifest the targets and seeds share: a parameter, a
/// directory, limits.
pub const MANIFEST: &str = r#"name = "fuzz"
version = "1.0.0"
owner = "fuzz"
purpose = "fuzz"
risk_class = "execution"
reversibility = "reversible"

[[parameters]]
name = "max_bytes"
type = "integer"
description = "rotate logs larger than this"
min = 1

[[capabilities.fs]]
name = "logs"
paths = ["/tmp/**"]
access = "rw"

[limits]
timeout = "30s"
memory = "64MiB"
"#;

/// The environment the trust store trusts every key for.
pub const ENVIRONMENT: &str = "dev";

/// The fuzz targets' "now": 2026-12-01T00:00:00Z.
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_083_200)
}

pub struct Fixture {
    pub author: PrivateKey,
    pub agent: PrivateKey,
    pub approver: PrivateKey,
    pub runner: std::sync::Arc<PrivateKey>,
    pub trust_text: String,
    pub trust: TrustStore,
}

/// Built once per process.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let author = PrivateKey::from_seed("fuzz-author", Role::Author, [1; 32]);
        let agent = PrivateKey::from_seed("fuzz-agent", Role::Agent, [2; 32]);
        let approver = PrivateKey::from_seed("fuzz-approver", Role::Approver, [3; 32]);
        let runner = PrivateKey::from_seed("fuzz-runner", Role::Runner, [4; 32]);
        let until = "2030-01-01T00:00:00Z".to_string();
        let mut approver_entry = KeyEntry::new(&approver.public(), vec![ENVIRONMENT.into()], until.clone());
        approver_entry.groups = vec!["security".into()];
        let file = TrustFile {
            keys: vec![
                KeyEntry::new(&author.public(), vec![ENVIRONMENT.into()], until.clone()),
                KeyEntry::new(&agent.public(), vec![ENVIRONMENT.into()], until.clone()),
                approver_entry,
                KeyEntry::new(&runner.public(), vec!["*".into()], until),
            ],
            revoked: vec![],
            signatures: vec![],
        };
        let trust_text = toml::to_string(&file).expect("the fixture trust store serialises");
        let trust = TrustStore::parse(&trust_text).expect("the fixture trust store parses");
        Fixture { author, agent, approver, runner: std::sync::Arc::new(runner), trust_text, trust }
    })
}

/// The input as text, or `None` (most parsers take UTF-8 only; the
/// artifact and evidence targets take bytes).
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
