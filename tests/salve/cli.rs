//! The `salve` command as a user runs it: exit codes, `--json`, refusals.

use crate::common::Site;
use std::process::{Command, Output};

fn salve(site: &Site, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_salve")).args(args).arg("--data-dir").arg(site.data()).output().unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

fn site_with_grant(grant: &str) -> (Site, String) {
    let site = Site::new();
    site.init_data_dir();
    site.write("granted/a.txt", "alpha\n");
    let path = site.write("grant.toml", grant.replace("{root}", &site.root.path().display().to_string()));
    (site, path.display().to_string())
}

const GRANT: &str = "[[fs]]\nname = \"logs\"\npath = \"{root}/granted\"\naccess = \"rw\"\n";

fn run(site: &Site, grant: &str, playbook: &str, extra: &[&str]) -> Output {
    let artifact = site.artifact_file(playbook);
    let mut args = vec!["run", artifact.to_str().unwrap(), "--grant", grant];
    args.extend_from_slice(extra);
    salve(site, &args)
}

#[test]
fn exit_codes_say_how_the_job_ended() {
    let (site, fs_grant) = site_with_grant(GRANT);
    let no_fs = site.write("no-fs.toml", "[limits]\ntimeout = \"10s\"\n").display().to_string();
    for (playbook, grant, code, said) in [
        ("noop", &no_fs, 0, "succeeded"),
        ("verify-fails", &fs_grant, 3, "rolled-back"),
        ("rollback-fails", &no_fs, 4, "ROLLBACK FAILED"),
        ("no-rollback", &no_fs, 2, "does not export rollback"),
    ] {
        let out = run(&site, grant, playbook, &[]);
        assert_eq!(out.status.code(), Some(code), "{playbook}: {}", text(&out));
        assert!(text(&out).contains(said), "{playbook}: {}", text(&out));
    }
}

#[test]
fn json_prints_one_object_with_the_outcome_and_the_audit_head() {
    let (site, grant) = site_with_grant(GRANT);
    let out = run(&site, &grant, "verify-fails", &["--json"]);
    assert_eq!(out.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "rolled-back");
    assert_eq!(report["cause"]["phase"], "verify");
    assert_eq!(report["cause"]["message"], "failed: the service still does not answer");
    assert_eq!(report["audit_head"]["hash"].as_str().unwrap().len(), 64);
    assert!(report["job_id"].is_string());
}

#[test]
fn a_bad_grant_is_refused_with_what_to_change_and_the_refusal_is_audited() {
    let (site, grant) = site_with_grant("[[fs]]\nname = \"logs\"\npath = \"relative/dir\"\naccess = \"rw\"\n");
    let out = run(&site, &grant, "verify-fails", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is relative; give the absolute path of the directory"), "{}", text(&out));
    let log = std::fs::read_to_string(site.data().join("audit.jsonl")).unwrap();
    assert!(log.contains(r#""kind":"refused""#), "{log}");
    assert!(!log.contains(r#""kind":"phase""#), "nothing ran");
}

#[test]
fn malformed_parameters_are_refused() {
    let (site, grant) = site_with_grant(GRANT);
    let out = run(&site, &grant, "noop", &["--param", "no-equals-sign"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("is not KEY=VALUE"), "{}", text(&out));
}

#[test]
fn plan_prints_the_changes_and_changes_nothing() {
    let (site, grant) = site_with_grant(GRANT.replace("granted", "logs").as_str());
    site.write("logs/big.log", "x".repeat(2000));
    let artifact = site.artifact_file("rotate-logs");
    let out = salve(&site, &["plan", artifact.to_str().unwrap(), "--grant", &grant, "--param", "max_bytes=1000"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("rotate logs/big.log (reversible)"), "{}", text(&out));
    assert_eq!(std::fs::read(site.root.path().join("logs/big.log")).unwrap().len(), 2000);
}

#[test]
fn help_documents_the_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_salve")).arg("--help").output().unwrap();
    let help = text(&out);
    for line in
        ["0  succeeded", "2  refused", "3  rolled back", "4  ROLLBACK FAILED", "5  the audit log does not verify"]
    {
        assert!(help.contains(line), "{help}");
    }
}

/// Starts `salve run` of change-then-spin and waits until its apply has
/// half-changed the target.
fn start_half_done(site: &Site, grant: &str) -> std::process::Child {
    let artifact = site.artifact_file("change-then-spin");
    let mut child = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["run", artifact.to_str().unwrap(), "--grant", grant, "--data-dir"])
        .arg(site.data())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let target = site.path("granted/a.txt");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(&target).unwrap() != "half-done\n" {
        if child.try_wait().unwrap().is_some() {
            panic!("salve run ended before apply changed the target: {}", text(&child.wait_with_output().unwrap()));
        }
        assert!(std::time::Instant::now() < deadline, "apply never changed the target");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

fn signal(child: &std::process::Child, signal: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_raw(child.id() as i32).unwrap(), signal).unwrap();
}

#[test]
pub(crate) fn change_then_spin() {
    let grant_text = format!("{GRANT}[limits]\ntimeout = \"30s\"\n");
    // SIGTERM (and SIGINT) in the middle of apply: rolled back at once.
    for stop in [rustix::process::Signal::TERM, rustix::process::Signal::INT] {
        let (site, grant) = site_with_grant(&grant_text);
        let child = start_half_done(&site, &grant);
        signal(&child, stop);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{stop:?}: {}", text(&out));
        assert!(text(&out).contains("stopped: the runner was asked to stop"), "{}", text(&out));
        assert_eq!(std::fs::read_to_string(site.path("granted/a.txt")).unwrap(), "alpha\n", "{stop:?}");
        assert_eq!(std::fs::read_dir(site.data().join("journal")).unwrap().count(), 0, "nothing left to recover");
    }

    // SIGKILL: the target stays half-changed until the next start in the
    // data directory rolls it back (here `salve recover`; `salve run` does
    // it first too).
    let (site, grant) = site_with_grant(&grant_text);
    let mut child = start_half_done(&site, &grant);
    signal(&child, rustix::process::Signal::KILL);
    child.wait().unwrap();
    assert_eq!(std::fs::read_to_string(site.path("granted/a.txt")).unwrap(), "half-done\n");
    // What the rollback needs, rewritten by someone without the runner key
    // (a wider grant): refused, nothing runs from it.
    let record_path = std::fs::read_dir(site.data().join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_str().unwrap().ends_with(".run.json"))
        .unwrap();
    let record = std::fs::read_to_string(&record_path).unwrap();
    std::fs::write(&record_path, record.replace("granted", "")).unwrap();
    let out = salve(&site, &["recover"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("does not carry runner key"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(site.path("granted/a.txt")).unwrap(), "half-done\n");
    std::fs::write(&record_path, record).unwrap();
    let out = salve(&site, &["recover"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("(") && text(&out).contains("): rolled-back"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(site.path("granted/a.txt")).unwrap(), "alpha\n");
    let again = salve(&site, &["recover"]);
    assert!(text(&again).contains("no salve run job was left behind"), "{}", text(&again));
    let verified = salve(&site, &["audit", "verify"]);
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));
    let log = std::fs::read_to_string(site.data().join("audit.jsonl")).unwrap();
    let outcome = log.lines().rfind(|l| l.contains(r#""kind":"outcome""#)).unwrap();
    assert!(outcome.contains("rolled-back") && outcome.contains("stopped before the job ended"), "{outcome}");
}

#[test]
fn audit_show_filters_and_tail_follows_without_jq() {
    let (site, grant) = site_with_grant(GRANT);
    let out = run(&site, &grant, "verify-fails", &["--json"]);
    let job = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["job_id"].as_str().unwrap().to_string();
    let shown = salve(&site, &["audit", "show", "--job", &job, "--json"]);
    assert_eq!(shown.status.code(), Some(0), "{}", text(&shown));
    let records: Vec<serde_json::Value> =
        String::from_utf8_lossy(&shown.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(records.len() > 5 && records.iter().all(|r| r["job"] == job.as_str()));
    let rollback = salve(&site, &["audit", "show", "--job", &job, "--phase", "rollback"]);
    let lines = String::from_utf8_lossy(&rollback.stdout).to_string();
    assert!(
        !lines.is_empty() && lines.lines().all(|l| [" rollback ", " call ", " intent "].iter().any(|k| l.contains(k))),
        "{lines}"
    );
    let bad = salve(&site, &["audit", "show", "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    let tail = salve(&site, &["audit", "tail", "-n", "3"]);
    assert_eq!(String::from_utf8_lossy(&tail.stdout).lines().count(), 3, "{}", text(&tail));

    /// Kills the follower however the test ends.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut follow = Killed(
        Command::new(env!("CARGO_BIN_EXE_salve"))
            .args(["audit", "tail", "-n", "0", "--follow", "--data-dir"])
            .arg(site.data())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let again = run(&site, &grant, "verify-fails", &["--json"]);
    let next =
        serde_json::from_slice::<serde_json::Value>(&again.stdout).unwrap()["job_id"].as_str().unwrap().to_string();
    let stdout = follow.0.stdout.take().unwrap();
    let (send, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let _ = send.send(line.unwrap());
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let found = loop {
        match seen.recv_timeout(std::time::Duration::from_secs(1)) {
            Ok(line) if line.contains(&next) && line.contains("outcome") => break true,
            _ if std::time::Instant::now() > deadline => break false,
            _ => {}
        }
    };
    drop(follow);
    assert!(found, "tail --follow showed the next job's outcome");
}

#[test]
fn a_witness_url_that_is_not_http_is_refused_before_anything_runs() {
    let (site, grant) = site_with_grant(GRANT);
    let artifact = site.artifact_file("verify-fails");
    let out = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["run", artifact.to_str().unwrap(), "--grant", &grant, "--data-dir"])
        .arg(site.data())
        .env("SALVE_WITNESS_URL", "file:///etc/passwd")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("SALVE_WITNESS_URL"), "{}", text(&out));
}

#[test]
fn a_witness_file_keeps_every_checkpoint_and_verify_takes_it() {
    let (site, grant) = site_with_grant(GRANT);
    let witness = site.path("elsewhere/witness.jsonl");
    std::fs::create_dir_all(witness.parent().unwrap()).unwrap();
    let artifact = site.artifact_file("verify-fails");
    for _ in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_salve"))
            .args(["run", artifact.to_str().unwrap(), "--grant", &grant, "--data-dir"])
            .arg(site.data())
            .env("SALVE_WITNESS_FILE", &witness)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    }
    let kept = std::fs::read_to_string(&witness).unwrap();
    assert!(kept.lines().count() >= 2, "{kept}");
    let last: serde_json::Value = serde_json::from_str(kept.lines().last().unwrap()).unwrap();
    let latest = salve(&site, &["audit", "checkpoint"]);
    assert_eq!(last["note"].as_str().unwrap().trim_end(), String::from_utf8_lossy(&latest.stdout).trim_end());
    let verified = salve(&site, &["audit", "verify", "--checkpoint", witness.to_str().unwrap()]);
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));
    assert!(text(&verified).contains("extends the earlier checkpoint"), "{}", text(&verified));
}

#[test]
fn a_relative_data_directory_is_taken_from_the_working_directory() {
    let (site, _) = site_with_grant(GRANT);
    let grant = site.write("no-fs.toml", "[limits]\ntimeout = \"10s\"\n");
    let artifact = site.artifact_file("noop");
    let out = Command::new(env!("CARGO_BIN_EXE_salve"))
        .current_dir(site.root.path())
        .args(["run", artifact.to_str().unwrap(), "--grant", grant.to_str().unwrap(), "--data-dir", "data"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(site.data().join("cache").is_dir(), "the compile cache is in the data directory");
}

#[test]
fn an_error_that_quotes_its_cause_says_it_once() {
    let (site, grant) = site_with_grant(GRANT);
    // noop declares no directory; the grant gives one.
    let out = run(&site, &grant, "noop", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert_eq!(said.matches("which the playbook does not declare").count(), 1, "{said}");
}
