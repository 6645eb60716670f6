//! What platform engineers and auditors run: init, keygen, new, build,
//! sign, verify, inspect.

use crate::common::{Site, artifact, author_key, repo};
use std::path::Path;
use std::process::{Command, Output};

fn salve(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_salve")).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Replaces what changes from build to build (digests, the WASI minor
/// version the toolchain targets) with placeholders.
fn normalized(mut report: serde_json::Value) -> serde_json::Value {
    for key in ["digest", "component_digest"] {
        report[key] = "<sha256>".into();
    }
    for import in report["imports"].as_array_mut().unwrap() {
        let name = import.as_str().unwrap();
        if let Some((interface, version)) = name.split_once("@0.2.")
            && version.chars().all(|c| c.is_ascii_digit())
        {
            *import = format!("{interface}@0.2.x").into();
        }
    }
    report
}

#[test]
fn inspect_json_matches_the_golden_file() {
    let site = Site::new();
    let data = site.init_data_dir();
    let artifact = site.artifact_file("rotate-logs");
    let trust = data.join("trust.toml");
    let out = salve(&["inspect", "--json", "--trust", path(&trust), path(&artifact)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = normalized(serde_json::from_slice(&out.stdout).unwrap());
    let golden = repo().join("tests/salve/golden/inspect-rotate-logs.json");
    let rendered = serde_json::to_string_pretty(&report).unwrap() + "\n";
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&golden, &rendered).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).expect("no golden file: run with BLESS=1 to create it");
    assert_eq!(rendered, expected, "`salve inspect --json` changed; if that is intended, rerun with BLESS=1");
}

#[test]
fn inspect_names_each_signature_status() {
    let site = Site::new();
    let data = site.init_data_dir();
    let mut tampered = artifact("noop");
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let file = site.write("tampered.wasm", &tampered);
    let out = salve(&["inspect", "--trust", path(&data.join("trust.toml")), path(&file)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(&format!("key {} (test-author): invalid", author_key().id)), "{}", text(&out));
    let good = site.artifact_file("noop");
    let out = salve(&["inspect", "--trust", path(&data.join("trust.toml")), path(&good), "--environment", "prod"]);
    assert!(text(&out).contains("untrusted (valid signature, but key"), "{}", text(&out));
    assert!(text(&out).contains("risk class:     read-only"), "{}", text(&out));
}

#[test]
fn verify_says_whether_an_artifact_may_run_where() {
    let site = Site::new();
    let data = site.init_data_dir();
    let artifact = site.artifact_file("rotate-logs");
    let ok = salve(&["verify", path(&artifact), "--data-dir", path(&data)]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(text(&ok).contains("ok: rotate-logs 1.0.0 may run in dev"), "{}", text(&ok));
    let prod = salve(&["verify", path(&artifact), "--data-dir", path(&data), "--environment", "prod"]);
    assert_eq!(prod.status.code(), Some(2), "{}", text(&prod));
    assert!(text(&prod).contains("is not trusted for environment \"prod\""), "{}", text(&prod));
}

#[test]
fn init_makes_a_data_directory_once_and_keygen_writes_a_key_pair() {
    let site = Site::new();
    let data = site.root.path().join("fresh");
    let out = salve(&["init", "--data-dir", path(&data)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mode = |p: &Path| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o777;
    assert_eq!(mode(&data.join("keys/runner.key")), 0o600);
    assert_eq!(mode(&data.join("keys/dev-author.key")), 0o600);
    let trust = salve::trust::TrustStore::load(&data.join("trust.toml")).unwrap();
    assert_eq!(trust.keys().count(), 2);
    let again = salve(&["init", "--data-dir", path(&data)]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(text(&again).contains("is already initialised"), "{}", text(&again));

    let out = salve(&["keygen", "--role", "approver", "--id", "alice", "--out", path(&site.root.path().join("k"))]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let key = salve::keys::PrivateKey::load(&site.root.path().join("k/alice.key")).unwrap();
    assert!(text(&out).contains(&format!("key {} (alice, role approver)", key.id)), "{}", text(&out));
    let bad = salve(&["keygen", "--role", "boss", "--id", "bob", "--out", path(&site.root.path().join("k"))]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn a_new_playbook_builds_signs_and_runs() {
    let site = Site::new();
    let data = site.init_data_dir();
    let work = site.root.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let out = salve(&["new", "demo-fix", "--dir", path(&work)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let crate_dir = work.join("demo-fix");

    let out = salve(&["build", path(&crate_dir)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let component = String::from_utf8_lossy(&out.stdout).lines().last().unwrap().to_string();
    assert!(Path::new(&component).is_file(), "{component}");

    let (key, _) = author_key().write(&site.root.path().join("keys")).unwrap();
    let signed = site.root.path().join("demo-fix.wasm");
    let manifest = crate_dir.join("playbook.toml");
    let out = salve(&["sign", "--key", path(&key), "--manifest", path(&manifest), &component, "-o", path(&signed)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    site.write("target/.keep", "");
    let grant = site.write(
        "grant.toml",
        format!(
            "[[fs]]\nname = \"target\"\npath = \"{}\"\naccess = \"rw\"\n",
            site.root.path().join("target").display()
        ),
    );
    let out = salve(&[
        "run",
        path(&signed),
        "--grant",
        path(&grant),
        "--param",
        "message=fixed by the new playbook",
        "--data-dir",
        path(&data),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let marker = std::fs::read_to_string(site.root.path().join("target/salve-marker.txt")).unwrap();
    assert_eq!(marker, "fixed by the new playbook\n");

    let exists = salve(&["new", "demo-fix", "--dir", path(&work)]);
    assert_eq!(exists.status.code(), Some(2));
}
