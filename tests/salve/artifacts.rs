//! Signed artifacts: every way an artifact, a key, a trust store, a grant or
//! a parameter can be refused, each with its own error and nothing run.

use crate::common::{Site, artifact, author_key, component_bytes, manifest_text, trust_file, trusted};
use salve::artifact::{self, Artifact};
use salve::keys::{PrivateKey, Role};
use salve::trust::{Revocation, TrustFile};
use std::path::PathBuf;
use std::process::{Command, Output};

/// Bytes of the signature section `salve::artifact::sign` appends.
const SIGNATURE_SECTION_LEN: usize = 99;

struct Case {
    site: Site,
    grant: PathBuf,
}

impl Case {
    /// A site with the test trust store (or `trust`), a granted directory,
    /// and a grant file for it.
    fn new(trust: Option<TrustFile>, grant: &str) -> Case {
        let site = Site::new();
        site.init_data_dir();
        if let Some(trust) = trust {
            std::fs::write(site.data().join("trust.toml"), toml::to_string(&trust).unwrap()).unwrap();
        }
        site.write("granted/a.txt", "alpha\n");
        let grant = site.write("grant.toml", grant.replace("{root}", &site.root.path().display().to_string()));
        Case { site, grant }
    }

    fn salve(&self, artifact: &[u8], extra: &[&str]) -> Output {
        let path = self.site.write("artifacts/under-test.wasm", artifact);
        Command::new(env!("CARGO_BIN_EXE_salve"))
            .arg("run")
            .arg(&path)
            .arg("--grant")
            .arg(&self.grant)
            .arg("--data-dir")
            .arg(self.site.data())
            .args(extra)
            .output()
            .unwrap()
    }

    /// Runs the artifact and checks it was refused with `expected`, audited,
    /// and that nothing ran: no phase record, no file changed.
    fn refused(&self, artifact: &[u8], extra: &[&str], expected: &str) {
        let before = self.site.snapshot_without("artifacts");
        let out = self.salve(artifact, extra);
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "expected a refusal ({expected}), got: {text}");
        assert!(text.contains(expected), "expected {expected:?} in: {text}");
        let log = std::fs::read_to_string(self.site.data().join("audit.jsonl")).unwrap();
        assert!(log.contains(r#""kind":"refused""#), "the refusal is audited: {log}");
        assert!(!log.contains(r#""kind":"phase""#), "nothing ran: {log}");
        assert_eq!(self.site.snapshot_without("artifacts"), before, "nothing changed");
    }
}

const LOGS: &str = "[[fs]]\nname = \"logs\"\npath = \"{root}/granted\"\naccess = \"rw\"\n";
const NO_FS: &str = "[limits]\ntimeout = \"10s\"\n";

fn sign_with(component: &[u8], manifest: &str, key: &PrivateKey) -> Vec<u8> {
    artifact::sign(component, Some(manifest), key).unwrap()
}

/// A key that signs as an author but that the trust store may list otherwise.
fn other_key(seed: u8) -> PrivateKey {
    PrivateKey::from_seed(&format!("key-{seed}"), Role::Author, [seed; 32])
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    bytes[at] ^= 0x01;
    bytes
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).position(|w| w == needle).expect("present")
}

#[test]
fn an_unsigned_component_is_refused() {
    Case::new(None, NO_FS).refused(&component_bytes("noop"), &[], "it is not a signed artifact");
}

#[test]
fn a_changed_byte_in_the_component_is_refused() {
    let signed = artifact("verify-fails");
    let at = find(&signed, b"the service still does not answer");
    Case::new(None, LOGS).refused(&flip(&signed, at), &[], "signature 1 (key");
}

#[test]
fn a_changed_byte_in_the_manifest_is_refused() {
    let signed = artifact("verify-fails");
    let at = find(&signed, b"Changes a file, then fails verify");
    Case::new(None, LOGS).refused(
        &flip(&signed, at),
        &[],
        "does not verify: the component, the manifest or the signature was changed",
    );
}

#[test]
fn a_changed_byte_in_the_signature_is_refused() {
    let signed = artifact("noop");
    Case::new(None, NO_FS).refused(&flip(&signed, signed.len() - 1), &[], "does not verify");
}

#[test]
fn a_signature_by_an_unknown_key_is_refused() {
    let signed = sign_with(&component_bytes("noop"), &manifest_text("noop"), &other_key(40));
    Case::new(None, NO_FS).refused(&signed, &[], "is not in the trust store");
}

#[test]
fn a_signature_by_a_revoked_key_is_refused() {
    let mut trust = trust_file();
    trust.revoked.push(Revocation { id: author_key().id.clone(), reason: "laptop stolen".into() });
    Case::new(Some(trust), NO_FS).refused(&artifact("noop"), &[], "is revoked (laptop stolen)");
}

#[test]
fn a_signature_by_an_expired_key_is_refused() {
    let mut trust = trust_file();
    trust.keys[0].not_after = "2020-01-01T00:00:00Z".into();
    Case::new(Some(trust), NO_FS).refused(&artifact("noop"), &[], "expired at 2020-01-01T00:00:00Z");
}

#[test]
fn a_signature_by_an_approver_key_is_refused() {
    let approver = other_key(41);
    let mut trust = trust_file();
    trust.keys.push(salve::trust::KeyEntry { role: Role::Approver, ..trusted(&approver, &["dev"]) });
    let signed = sign_with(&component_bytes("noop"), &manifest_text("noop"), &approver);
    Case::new(Some(trust), NO_FS).refused(&signed, &[], "has role approver, but this needs a key with role author");
}

#[test]
fn a_signature_by_an_agent_key_is_refused() {
    let agent = other_key(42);
    let mut trust = trust_file();
    trust.keys.push(salve::trust::KeyEntry { role: Role::Agent, ..trusted(&agent, &["dev"]) });
    let signed = sign_with(&component_bytes("noop"), &manifest_text("noop"), &agent);
    Case::new(Some(trust), NO_FS).refused(&signed, &[], "has role agent, but this needs a key with role author");
}

#[test]
fn a_key_not_trusted_for_the_environment_is_refused() {
    Case::new(None, NO_FS).refused(
        &artifact("noop"),
        &["--environment", "prod"],
        "is not trusted for environment \"prod\"",
    );
}

#[test]
fn an_import_the_manifest_does_not_declare_is_refused() {
    let manifest = manifest_text("verify-fails");
    let without_fs = &manifest[..manifest.find("[[capabilities.fs]]").unwrap()];
    let signed = sign_with(&component_bytes("verify-fails"), without_fs, author_key());
    Case::new(None, NO_FS).refused(&signed, &[], "imports salve:playbook/fs, which its manifest does not declare");
}

#[test]
fn a_truncated_artifact_is_refused() {
    let signed = artifact("noop");
    Case::new(None, NO_FS).refused(&signed[..signed.len() - 20], &[], "the artifact is truncated");
}

#[test]
fn a_moved_signature_section_is_refused() {
    let signed = artifact("noop");
    let component_len = Artifact::parse(&signed).unwrap().component.len();
    let (rest, signature) = signed.split_at(signed.len() - SIGNATURE_SECTION_LEN);
    let (component, manifest) = rest.split_at(component_len);
    // After the component but before the manifest.
    let moved = [component, signature, manifest].concat();
    Case::new(None, NO_FS).refused(&moved, &[], "salve:manifest must come first");
    // Into the component, right after its header.
    let inside = [&component[..8], signature, &component[8..], manifest, signature].concat();
    Case::new(None, NO_FS).refused(&inside, &[], "follows the salve sections, which must come last");
}

#[test]
fn a_duplicated_manifest_section_is_refused() {
    let signed = artifact("noop");
    let component_len = Artifact::parse(&signed).unwrap().component.len();
    let (rest, signature) = signed.split_at(signed.len() - SIGNATURE_SECTION_LEN);
    let (component, manifest) = rest.split_at(component_len);
    let doubled = [component, manifest, manifest, signature].concat();
    Case::new(None, NO_FS).refused(&doubled, &[], "a second salve:manifest");
}

#[test]
fn a_bad_co_signature_refuses_the_artifact() {
    let reviewer = other_key(43);
    let mut trust = trust_file();
    trust.keys.push(trusted(&reviewer, &["dev"]));
    let cosigned = artifact::sign(&artifact("noop"), None, &reviewer).unwrap();
    // Both good: it loads (checked with `salve verify`).
    let case = Case::new(Some(trust), NO_FS);
    let ok = case.salve(&cosigned, &[]);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    let case = Case::new(Some(trust_file_with(&reviewer)), NO_FS);
    case.refused(&flip(&cosigned, cosigned.len() - 1), &[], "signature 2 (key");
}

fn trust_file_with(key: &PrivateKey) -> TrustFile {
    let mut trust = trust_file();
    trust.keys.push(trusted(key, &["dev"]));
    trust
}

#[test]
fn a_required_co_signature_stripped_or_missing_refuses_the_artifact() {
    // dev needs two signers, one of group security: the author and a reviewer.
    let reviewer = other_key(45);
    let mut trust = trust_file();
    trust.keys.push(salve::trust::KeyEntry { groups: vec!["security".into()], ..trusted(&reviewer, &["dev"]) });
    trust.signatures.push(salve::trust::SignatureRule {
        environments: vec!["dev".into()],
        signers: 2,
        groups: vec!["security".into()],
    });
    let single = artifact("noop");
    let cosigned = artifact::sign(&single, None, &reviewer).unwrap();
    let case = Case::new(Some(trust.clone()), NO_FS);
    let ok = case.salve(&cosigned, &[]);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    // The co-signature stripped: the author's signature alone still
    // verifies, and the rule refuses it.
    let case = Case::new(Some(trust.clone()), NO_FS);
    case.refused(&single, &[], "needs signatures by 2 distinct trusted author keys, but the artifact has 1");
    // Two signers, neither of group security.
    let second = other_key(46);
    trust.keys.push(trusted(&second, &["dev"]));
    let case = Case::new(Some(trust), NO_FS);
    let wrong = artifact::sign(&single, None, &second).unwrap();
    case.refused(&wrong, &[], "needs a signature by a key of group \"security\"");
}

#[test]
fn a_co_signature_by_an_untrusted_key_refuses_the_artifact() {
    let cosigned = artifact::sign(&artifact("noop"), None, &other_key(44)).unwrap();
    Case::new(None, NO_FS).refused(&cosigned, &[], "signature 2: key");
}

#[test]
fn an_older_version_than_one_that_ran_is_refused_unless_overridden() {
    let newer = sign_with(&component_bytes("noop"), &manifest_text("noop").replace("0.1.0", "0.2.0"), author_key());
    let case = Case::new(None, NO_FS);
    assert_eq!(case.salve(&newer, &[]).status.code(), Some(0));
    let older = artifact("noop");
    // Refused: the log now holds the first run's phases, so check the
    // refusal by its message and that no new job ran.
    let out = case.salve(&older, &[]);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("noop 0.1.0 is older than 0.2.0, which already ran here"), "{text}");
    let out = case.salve(&older, &["--allow-downgrade"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let log = std::fs::read_to_string(case.site.data().join("audit.jsonl")).unwrap();
    assert!(log.contains(r#""kind":"downgrade-allowed","playbook":"noop@0.1.0","highest":"0.2.0""#), "{log}");
}

#[test]
fn a_grant_outside_the_declared_directories_is_refused() {
    let manifest = manifest_text("verify-fails").replace("paths = [\"/**\"]", "paths = [\"/srv/app/**\"]");
    let signed = sign_with(&component_bytes("verify-fails"), &manifest, author_key());
    Case::new(None, LOGS).refused(&signed, &[], "but the playbook declares at most [\"/srv/app/**\"]");
}

#[test]
fn a_read_write_grant_where_read_only_is_declared_is_refused() {
    let manifest = manifest_text("verify-fails").replace("access = \"rw\"", "access = \"ro\"");
    let signed = sign_with(&component_bytes("verify-fails"), &manifest, author_key());
    Case::new(None, LOGS).refused(&signed, &[], "access = rw, but the playbook declares at most ro");
}

#[test]
fn a_grant_of_an_undeclared_capability_is_refused() {
    Case::new(None, LOGS).refused(
        &artifact("noop"),
        &[],
        "the grant gives fs \"logs\", which the playbook does not declare",
    );
}

#[test]
fn a_limit_above_the_declared_one_is_refused() {
    let grant = "[[fs]]\nname = \"logs\"\npath = \"{root}/granted\"\naccess = \"rw\"\n[limits]\nmemory = \"1GiB\"\n";
    Case::new(None, grant).refused(
        &artifact("rotate-logs"),
        &[],
        "limits.memory = 1073741824 bytes, but the playbook declares at most 134217728 bytes",
    );
}

#[test]
fn parameters_outside_the_schema_are_refused() {
    let grant = LOGS;
    for (param, expected) in [
        ("keep=0", "parameter keep: 0 is outside 1..=99"),
        ("keep=many", "parameter keep: \"many\" is not an integer"),
        ("dir=../etc", "does not match the pattern"),
        ("colour=blue", "parameter colour: is not a parameter of rotate-logs"),
    ] {
        Case::new(None, grant).refused(&artifact("rotate-logs"), &["--param", param], expected);
    }
}

#[test]
fn unsigned_components_run_only_in_dev_behind_the_dangerous_flag() {
    let case = Case::new(None, NO_FS);
    case.refused(
        &component_bytes("noop"),
        &["--dangerous-unsigned", "--environment", "prod"],
        "--dangerous-unsigned is refused for environment \"prod\"",
    );
    let out = case.salve(&component_bytes("noop"), &["--dangerous-unsigned"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let log = std::fs::read_to_string(case.site.data().join("audit.jsonl")).unwrap();
    assert!(log.contains(r#""kind":"dangerous-unsigned""#), "{log}");
}

#[test]
fn a_private_key_others_may_read_is_refused() {
    let site = Site::new();
    let key = PrivateKey::from_seed("loose", Role::Author, [45; 32]);
    let (private, _) = key.write(&site.root.path().join("keys")).unwrap();
    std::fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let component = site.write("noop.wasm", component_bytes("noop"));
    let manifest = site.write("playbook.toml", manifest_text("noop"));
    let out = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["sign", "--key"])
        .arg(&private)
        .arg("--manifest")
        .arg(&manifest)
        .arg(&component)
        .arg("-o")
        .arg(site.root.path().join("out.wasm"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("has mode 644: it must be readable and writable by its owner only"), "{text}");
    assert!(!site.root.path().join("out.wasm").exists());
}

#[test]
fn sign_refuses_a_manifest_that_does_not_declare_the_imports() {
    let site = Site::new();
    let key = author_key();
    let (private, _) = key.write(&site.root.path().join("keys")).unwrap();
    let component = site.write("vf.wasm", component_bytes("verify-fails"));
    let text = manifest_text("verify-fails");
    let manifest = site.write("playbook.toml", &text[..text.find("[[capabilities.fs]]").unwrap()]);
    let out = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["sign", "--key"])
        .arg(&private)
        .arg("--manifest")
        .arg(&manifest)
        .arg(&component)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("which its manifest does not declare"), "{text}");
}

#[test]
fn compiled_code_is_cached_on_disk_and_the_signature_is_checked_every_time() {
    use salve::sandbox::{Catalog, Sandbox, SandboxConfig};
    let site = Site::new();
    let config =
        SandboxConfig { cache_dir: Some(site.root.path().join("cache")), pooling: false, ..Default::default() };
    let now = std::time::SystemTime::now();
    let trust = crate::common::trust();

    let first = Sandbox::new(config.clone()).unwrap();
    Catalog::new(first.clone()).load(&artifact("noop"), trust, "dev", now).unwrap();
    assert_eq!(first.cache_stats(), Some((0, 1)), "compiled once");

    // A second process (a new engine) finds the compiled code on disk...
    let second = Sandbox::new(config).unwrap();
    let catalog = Catalog::new(second.clone());
    catalog.load(&artifact("noop"), trust, "dev", now).unwrap();
    assert_eq!(second.cache_stats(), Some((1, 0)), "not compiled again");
    // ...but a tampered artifact is still refused: the cache is keyed by the
    // component and used only after the signature verified.
    let tampered = flip(&artifact("noop"), artifact("noop").len() - 1);
    assert!(catalog.load(&tampered, trust, "dev", now).is_err());
    // And the same bytes are re-checked against the trust store each time.
    let mut revoked = trust_file();
    revoked.revoked.push(Revocation { id: author_key().id.clone(), reason: "compromised".into() });
    let revoked = salve::trust::TrustStore::from_file(revoked).unwrap();
    assert!(catalog.load(&artifact("noop"), &revoked, "dev", now).is_err());
}
