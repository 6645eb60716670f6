//! The audit chain: a tampered log is caught by `salve audit verify`, which
//! names the first bad record and exits 5.

use crate::common::Site;
use sha2::Digest;

use std::path::Path;
use std::process::Command;

/// A site whose log holds a few jobs' worth of records.
async fn site_with_history() -> Site {
    let site = Site::new();
    site.write("granted/a.txt", "alpha\n");
    let grant = "[[fs]]\nname = \"logs\"\npath = \"{root}/granted\"\naccess = \"rw\"\n";
    for (playbook, grant) in [("noop", ""), ("verify-fails", grant), ("noop", "")] {
        site.run(playbook, grant, &[]).await;
    }
    site.runner().audit().sync_blocking().unwrap();
    site
}

fn lines(site: &Site) -> Vec<String> {
    std::fs::read_to_string(site.data().join("audit.jsonl")).unwrap().lines().map(String::from).collect()
}

/// Writes `content` as a copy of the log (with the head anchor beside it)
/// and runs `salve audit verify` on it.
fn verify(site: &Site, content: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("audit.jsonl"), content).unwrap();
    std::fs::copy(site.data().join("audit.head"), dir.path().join("audit.head")).unwrap();
    verify_file(&dir.path().join("audit.jsonl"))
}

fn verify_file(path: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_salve")).args(["audit", "verify"]).arg(path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), text)
}

fn joined(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[tokio::test]
async fn an_intact_log_verifies() {
    let site = site_with_history().await;
    let (code, text) = verify_file(&site.data().join("audit.jsonl"));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("{} records, chain intact", lines(&site).len())), "{text}");
    assert!(text.contains("end checked against audit.head"), "{text}");
}

#[tokio::test]
async fn a_changed_byte_is_named() {
    let site = site_with_history().await;
    let mut lines = lines(&site);
    lines[4] = lines[4].replacen("\"kind\":\"", "\"kind\":\"x", 1);

    let (code, text) = verify(&site, &joined(&lines));

    assert_eq!(code, 5, "{text}");
    assert!(text.contains("line 5: record 5 was changed"), "{text}");
}

#[tokio::test]
async fn a_rewritten_record_with_a_recomputed_hash_breaks_the_next_link() {
    let site = site_with_history().await;
    let mut lines = lines(&site);
    let forged = lines[4].replacen("\"kind\":\"", "\"kind\":\"x", 1);
    let body = format!("{}}}", &forged[..forged.len() - 75]);
    let hash = hex::encode(sha2::Sha256::digest(body.as_bytes()));
    lines[4] = format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]);

    let (code, text) = verify(&site, &joined(&lines));

    assert_eq!(code, 5, "{text}");
    assert!(text.contains("line 6: record 6 does not chain to the record before it"), "{text}");
}

#[tokio::test]
async fn a_deleted_record_is_named() {
    let site = site_with_history().await;
    let mut lines = lines(&site);
    lines.remove(6);

    let (code, text) = verify(&site, &joined(&lines));

    assert_eq!(code, 5, "{text}");
    assert!(text.contains("line 7: record 8 is where record 7 belongs: records 7..7 were removed"), "{text}");
}

#[tokio::test]
async fn swapped_records_are_named() {
    let site = site_with_history().await;
    let mut lines = lines(&site);
    lines.swap(9, 10);

    let (code, text) = verify(&site, &joined(&lines));

    assert_eq!(code, 5, "{text}");
    assert!(text.contains("line 10: record 11 is where record 10 belongs: records were reordered"), "{text}");
}

#[tokio::test]
async fn a_log_truncated_mid_record_is_named() {
    let site = site_with_history().await;
    let content = joined(&lines(&site));

    let (code, text) = verify(&site, &content[..content.len() - 40]);

    assert_eq!(code, 5, "{text}");
    assert!(text.contains("the last line is incomplete: the log was truncated"), "{text}");
}

#[tokio::test]
async fn a_log_cut_at_a_record_boundary_is_named_against_its_anchor() {
    let site = site_with_history().await;
    let mut lines = lines(&site);
    let total = lines.len();
    lines.truncate(total - 3);

    let (code, text) = verify(&site, &joined(&lines));

    assert_eq!(code, 5, "{text}");
    let expected = format!("records {}..{total} were cut off its end", total - 2);
    assert!(text.contains(&expected), "{text}");
}

#[tokio::test]
async fn a_deleted_anchor_is_named() {
    let site = site_with_history().await;
    std::fs::remove_file(site.data().join("audit.head")).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["audit", "verify", "--data-dir"])
        .arg(site.data())
        .output()
        .unwrap();

    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{text}");
    assert!(text.contains("audit.head is missing or unreadable"), "{text}");
}

#[tokio::test]
async fn a_forged_seal_is_named_against_the_trust_store() {
    let site = site_with_history().await;
    let mut lines = lines(&site);
    let seal = lines.iter().position(|l| l.contains(r#""kind":"seal""#)).unwrap();
    // Re-sign the seal with a key that is not the runner's, and recompute
    // the chain from there: every hash checks out, the seal does not.
    let forger = salve::keys::PrivateKey::from_seed("forger", salve::keys::Role::Runner, [9; 32]);
    rechain(&mut lines, seal, Some(&forger));

    let (code, text) = verify_with_trust(&site, &lines);

    assert_eq!(code, 5, "{text}");
    assert!(text.contains(&format!("line {}: the seal in record {} does not verify", seal + 1, seal + 1)), "{text}");
}

#[tokio::test]
async fn a_removed_seal_is_named_though_the_chain_was_recomputed() {
    let site = site_with_history().await;
    let mut lines = lines(&site);
    // The last seal: a later one would sign over a hash that changes.
    let seal = lines.iter().rposition(|l| l.contains(r#""kind":"seal""#)).unwrap();
    let outcome = lines[..seal].iter().rposition(|l| l.contains(r#""kind":"outcome""#)).unwrap();
    // Drop the seal, renumber and rehash everything after it: every hash,
    // link and remaining seal checks out, but the job's outcome is no
    // longer sealed.
    lines.remove(seal);
    rechain(&mut lines, seal, None);

    let (code, text) = verify_with_trust(&site, &lines);

    assert_eq!(code, 5, "{text}");
    let job = serde_json::from_str::<serde_json::Value>(&lines[outcome]).unwrap()["job"].as_str().unwrap().to_string();
    assert!(
        text.contains(&format!("line {}: job {job}'s outcome (record {}) has no seal", outcome + 1, outcome + 1)),
        "{text}"
    );
}

/// Rewrites the chain from line `from` on as a forger without the runner
/// key could: renumbers `seq`, recomputes `prev` and `hash`, and re-signs
/// seals with `forger`, if given.
fn rechain(lines: &mut [String], from: usize, forger: Option<&salve::keys::PrivateKey>) {
    let mut prev = match from {
        0 => salve::audit::GENESIS.to_string(),
        _ => serde_json::from_str::<serde_json::Value>(&lines[from - 1]).unwrap()["hash"].as_str().unwrap().to_string(),
    };
    for (i, line) in lines.iter_mut().enumerate().skip(from) {
        let mut record: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
        record.remove("hash");
        record.insert("seq".into(), (i as u64 + 1).into());
        record.insert("prev".into(), prev.clone().into());
        if let Some(forger) = forger
            && record["kind"] == "seal"
        {
            use ed25519_dalek::Signer;
            let message = salve::audit::seal_message(record["job"].as_str().unwrap(), &prev);
            record.insert("signature".into(), hex::encode(forger.signing.sign(&message).to_bytes()).into());
        }
        let body = serde_json::to_string(&record).unwrap();
        prev = hex::encode(sha2::Sha256::digest(body.as_bytes()));
        *line = format!("{},\"hash\":\"{prev}\"}}", &body[..body.len() - 1]);
    }
}

/// `salve audit verify` of a copy of the log, with the site's trust store.
fn verify_with_trust(site: &Site, lines: &[String]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("audit.jsonl"), joined(lines)).unwrap();
    let trust = site.write("trust.toml", toml::to_string(&crate::common::trust_file()).unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["audit", "verify"])
        .arg(dir.path().join("audit.jsonl"))
        .arg("--trust")
        .arg(&trust)
        .output()
        .unwrap();
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stderr).to_string())
}

/// `salve audit verify` of the site's own data directory against the
/// test trust store, with `extra` arguments.
fn verify_data_dir(site: &Site, extra: &[&std::ffi::OsStr]) -> (i32, String) {
    let trust = site.write("trust.toml", toml::to_string(&crate::common::trust_file()).unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["audit", "verify", "--data-dir"])
        .arg(site.data())
        .arg("--trust")
        .arg(&trust)
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), text)
}

fn head_text(site: &Site) -> String {
    std::fs::read_to_string(site.data().join("audit.head")).unwrap()
}

#[tokio::test]
async fn a_signed_checkpoint_covers_the_whole_log() {
    let site = site_with_history().await;
    let (code, text) = verify_data_dir(&site, &[]);
    assert_eq!(code, 0, "{text}");
    let records = lines(&site).len();
    assert!(text.contains(&format!("covers all {records} records")), "{text}");
    let printed = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["audit", "checkpoint", "--data-dir"])
        .arg(site.data())
        .output()
        .unwrap();
    let note = String::from_utf8_lossy(&printed.stdout).to_string();
    assert!(note.starts_with("salve audit log ") && note.contains(&format!("\n{records}\n")), "{note}");
}

#[tokio::test]
async fn a_stripped_checkpoint_is_named() {
    let site = site_with_history().await;
    let anchor_line = head_text(&site).lines().next().unwrap().to_string();
    std::fs::write(site.data().join("audit.head"), anchor_line + "\n").unwrap();

    let (code, text) = verify_data_dir(&site, &[]);

    assert_eq!(code, 5, "{text}");
    assert!(text.contains("there is no signed checkpoint of the log"), "{text}");
}

#[tokio::test]
async fn trailing_jobs_cut_off_with_the_anchor_rewritten_are_named() {
    // The attack an unsigned anchor let through: cut whole jobs off the end
    // and point the anchor at the new end. The signed checkpoint still
    // names the longer log.
    let site = site_with_history().await;
    let mut lines = lines(&site);
    let last_job = lines.iter().rposition(|l| l.contains(r#""kind":"job""#)).unwrap();
    lines.truncate(last_job);
    let kept = joined(&lines);
    let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    let note = salve::audit::checkpoint_note(&head_text(&site)).unwrap().to_string();
    let anchor = format!(
        "salve-audit-head v1 seq={:020} hash={} end={:020}\n",
        last["seq"].as_u64().unwrap(),
        last["hash"].as_str().unwrap(),
        kept.len()
    );
    std::fs::write(site.data().join("audit.jsonl"), &kept).unwrap();
    std::fs::write(site.data().join("audit.head"), anchor + &note).unwrap();

    let (code, text) = verify_data_dir(&site, &[]);

    assert_eq!(code, 5, "{text}");
    assert!(text.contains(&format!("the log holds only {} records", lines.len())), "{text}");
}

#[tokio::test]
async fn a_saved_checkpoint_catches_a_log_replaced_by_an_older_one() {
    let site = site_with_history().await;
    let older = std::fs::read(site.data().join("audit.jsonl")).unwrap();
    let older_head = head_text(&site);
    let saved = site.write("saved.checkpoint", salve::audit::checkpoint_note(&older_head).unwrap());
    // The log grows: it still extends the checkpoint saved before.
    site.run("noop", "", &[]).await;
    site.runner().audit().sync_blocking().unwrap();
    let (code, text) = verify_data_dir(&site, &["--checkpoint".as_ref(), saved.as_os_str()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("extends the earlier checkpoint"), "{text}");

    // Put back the older log with its own (validly signed) anchor and
    // checkpoint: alone it verifies, but not against what was saved later.
    let later = site.write("later.checkpoint", salve::audit::checkpoint_note(&head_text(&site)).unwrap());
    std::fs::write(site.data().join("audit.jsonl"), &older).unwrap();
    std::fs::write(site.data().join("audit.head"), &older_head).unwrap();
    assert_eq!(verify_data_dir(&site, &[]).0, 0);
    let (code, text) = verify_data_dir(&site, &["--checkpoint".as_ref(), later.as_os_str()]);
    assert_eq!(code, 5, "{text}");
    assert!(text.contains("does not extend the checkpoint"), "{text}");
}
