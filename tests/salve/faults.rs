//! Faults under the audit log: its file may not grow (RLIMIT_FSIZE) or its
//! disk fills (a small tmpfs). Each time `salve run` fails closed: it exits
//! with an error that says the audit log could not be written (not killed
//! by SIGXFSZ), no change is left applied once the next start in the data
//! directory (`salve recover`) has run, every record acknowledged before
//! the fault is still there, and the chain verifies.

use crate::common::Site;
use salve::audit::verify::{Anchor, verify_log};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const GRANT: &str = "[[fs]]\nname = \"logs\"\npath = \"{root}/logs\"\naccess = \"rw\"\n\n[limits]\ntimeout = \"30s\"\n";

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// Logs for rotate-logs: each one rotation, so `apply` makes many
/// mutating calls and writes many audit records.
fn write_logs(site: &Site) {
    let _ = std::fs::remove_dir_all(site.path("logs"));
    for i in 0..16 {
        let body: String = (0..3000).map(|n| format!("2026-11-23T12:00:00Z INFO log {i} request {n}\n")).collect();
        site.write(&format!("logs/app{i}.log"), body);
    }
}

fn logs(site: &Site) -> BTreeMap<PathBuf, Vec<u8>> {
    site.snapshot_without("artifacts").into_iter().filter(|(p, _)| p.starts_with("logs")).collect()
}

/// The last record acknowledged durable (`audit.head`): seq and hash.
fn acknowledged(data: &Path) -> (u64, String) {
    let text = std::fs::read_to_string(data.join("audit.head")).unwrap();
    let field = |name: &str| text.split_whitespace().find_map(|f| f.strip_prefix(name).map(str::to_string)).unwrap();
    (field("seq=").parse().unwrap(), field("hash="))
}

fn check_log(data: &Path, acknowledged: &(u64, String)) {
    let trust = salve::trust::TrustStore::load(&data.join("trust.toml")).unwrap();
    let log = data.join("audit.jsonl");
    verify_log(&log, Anchor::Required(data.join("audit.head")), Some(&trust))
        .unwrap_or_else(|e| panic!("the audit log does not verify: {e}"));
    let text = std::fs::read_to_string(&log).unwrap();
    let (seq, hash) = acknowledged;
    let kept = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["seq"] == *seq)
        .unwrap_or_else(|| panic!("acknowledged record {seq} is gone"));
    assert_eq!(kept["hash"], hash.as_str(), "acknowledged record {seq} changed");
}

fn salve(data: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_salve"));
    command.env("SALVE_DATA_DIR", data);
    command
}

#[test]
fn an_audit_log_that_cannot_grow_fails_closed_and_the_next_start_restores_the_target() {
    let site = Site::new();
    let data = site.init_data_dir();
    let artifact = site.artifact_file("rotate-logs");
    let grant = site.write("grant.toml", GRANT.replace("{root}", &site.root.path().display().to_string()));
    let run_args: Vec<std::ffi::OsString> = vec![
        "run".into(),
        artifact.clone().into(),
        "--grant".into(),
        grant.into(),
        "--param".into(),
        "max_bytes=1000".into(),
    ];
    // A log larger than the artifact and the journal files a run writes
    // (they are under the same limit), then a first run.
    {
        let log = salve::audit::AuditLog::open_keyed(&data, crate::common::runner_key()).unwrap();
        for _ in 0..2_000 {
            let event = salve::audit::Event::Refused { playbook: "prefill", reason: "records before the faults" };
            log.append(None, &event).unwrap();
        }
        log.sync_blocking().unwrap();
    }
    write_logs(&site);
    let first = salve(&data).args(&run_args).output().unwrap();
    assert!(first.status.success(), "{}", text(&first));
    let base = std::fs::metadata(data.join("audit.jsonl")).unwrap().len();
    let artifact_len = std::fs::metadata(&artifact).unwrap().len();
    assert!(base > artifact_len, "the log ({base} bytes) must outgrow the artifact ({artifact_len})");

    let (mut failed, mut half_done) = (0, 0);
    // From no room at all to room for a whole run (about 130 KB of records
    // for these logs): the fault lands in plan, in the middle of apply, in
    // verify or at the outcome.
    for room in (0..16).map(|i| i * 10_000u64) {
        write_logs(&site);
        let before = logs(&site);
        let ack = acknowledged(&data);
        let size = std::fs::metadata(data.join("audit.jsonl")).unwrap().len();
        let limit = size + room;
        // util-linux's prlimit sets the limit and execs salve.
        let out = Command::new("prlimit")
            .arg(format!("--fsize={limit}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_salve"))
            .args(&run_args)
            .env("SALVE_DATA_DIR", &data)
            .output()
            .unwrap();
        let said = text(&out);
        let code =
            out.status.code().unwrap_or_else(|| panic!("room {room}: salve was killed ({:?}): {said}", out.status));
        if code == 0 {
            // Room enough for the whole run: it rotated.
            assert!(site.path("logs/app0.log.1.gz").exists(), "room {room}: succeeded without rotating");
            check_log(&data, &ack);
            continue;
        }
        failed += 1;
        assert!(said.contains("audit log"), "room {room}: the error does not say the audit log failed: {said}");
        assert!(!said.contains("panicked"), "room {room}: {said}");
        if logs(&site) != before {
            // Stopped in apply: no change is made unaudited, so the
            // rollback is the next start's, and the error says so.
            half_done += 1;
            assert!(said.contains("salve recover"), "room {room}: the error does not say what to do: {said}");
        }
        // The next start, with room again: every unfinished job rolled back.
        let recover = salve(&data).arg("recover").output().unwrap();
        assert!(recover.status.success(), "room {room}: recover failed: {}", text(&recover));
        assert_eq!(logs(&site), before, "room {room}: the target is not restored: {said}\n{}", text(&recover));
        check_log(&data, &ack);
        assert!(std::fs::read_dir(data.join("journal")).unwrap().next().is_none(), "room {room}: a journal is left");
    }
    eprintln!("runs that failed on the audit log: {failed}, {half_done} of them in apply");
    assert!(failed >= 8 && half_done >= 2, "{failed} runs hit the limit, {half_done} in apply");
}

/// The disk under the data directory fills: a tmpfs in a private mount
/// namespace (`unshare`, so no mount outlives the test), filled but for
/// `room` bytes before each run. The target directory is elsewhere.
#[test]
fn a_full_disk_under_the_data_directory_fails_closed_and_the_next_start_restores_the_target() {
    let probe = Command::new("unshare").args(["--user", "--map-root-user", "--mount", "true"]).output();
    if !probe.is_ok_and(|p| p.status.success()) {
        // Said, not hidden: the RLIMIT_FSIZE test above covers the same path.
        eprintln!("SKIPPED: this host cannot make a private mount namespace (unshare --user --mount)");
        return;
    }
    let site = Site::new();
    let data = site.init_data_dir();
    let artifact = site.artifact_file("rotate-logs");
    let grant = site.write("grant.toml", GRANT.replace("{root}", &site.root.path().display().to_string()));
    // A first run fills the compile cache, so that the runs under test spend
    // their room on the run's own files.
    write_logs(&site);
    let first = salve(&data)
        .arg("run")
        .arg(&artifact)
        .arg("--grant")
        .arg(&grant)
        .arg("--param=max_bytes=1000")
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", text(&first));
    let mount = site.path("mnt");
    std::fs::create_dir_all(&mount).unwrap();
    // Inside the namespace: the data directory copied onto a 32 MiB tmpfs,
    // the disk filled but for ROOM bytes, the run; then room again, the next
    // start (`salve recover`), and the data directory copied back out.
    const SCRIPT: &str = r#"
        set -eu
        mount -t tmpfs -o size=32m tmpfs "$MNT"
        cp -a "$DATA"/. "$MNT"/
        free=$(df --output=avail -B1 "$MNT" | tail -n1)
        fallocate -l $((free - ROOM)) "$MNT/filler"
        sum() { find "$LOGS" -type f | sort | xargs sha256sum | sha256sum; }
        echo "BEFORE=$(sum)"
        status=0
        "$SALVE" run "$ARTIFACT" --grant "$GRANT" --param max_bytes=1000 --data-dir "$MNT" || status=$?
        echo "RUN-STATUS=$status"
        echo "AFTER-RUN=$(sum)"
        rm "$MNT/filler"
        "$SALVE" recover --data-dir "$MNT"
        echo "RECOVERED"
        find "$DATA" -mindepth 1 -delete && cp -a "$MNT"/. "$DATA"/
    "#;
    let (mut failed, mut half_done) = (0, 0);
    // The run's own files take about 230 KB (the artifact's copy), its
    // audit records about 130 KB more.
    for room in (0..12).map(|i| i * 40_000u64) {
        write_logs(&site);
        let before = logs(&site);
        let ack = acknowledged(&data);
        let out = Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "sh", "-c", SCRIPT])
            .env("MNT", &mount)
            .env("DATA", &data)
            .env("ROOM", room.to_string())
            .env("SALVE", env!("CARGO_BIN_EXE_salve"))
            .env("ARTIFACT", &artifact)
            .env("GRANT", &grant)
            .env("LOGS", site.path("logs"))
            .output()
            .unwrap();
        let said = text(&out);
        assert!(out.status.success() && said.contains("RECOVERED"), "room {room}: {said}");
        let status: i32 = said.split("RUN-STATUS=").nth(1).and_then(|s| s.lines().next()).unwrap().parse().unwrap();
        assert!(!said.contains("panicked"), "room {room}: {said}");
        if status == 0 {
            assert!(site.path("logs/app0.log.1.gz").exists(), "room {room}: succeeded without rotating");
        } else {
            failed += 1;
            assert!(
                said.contains("No space left on device"),
                "room {room}: the error does not say the disk is full: {said}"
            );
            let sum = |name: &str| said.split(name).nth(1).and_then(|s| s.lines().next()).unwrap().to_string();
            half_done += usize::from(sum("BEFORE=") != sum("AFTER-RUN="));
            assert_eq!(logs(&site), before, "room {room}: the target is not restored: {said}");
        }
        check_log(&data, &ack);
        let left: Vec<_> = std::fs::read_dir(data.join("journal")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "room {room}: a journal is left: {left:?}: {said}");
    }
    eprintln!("runs that failed on a full disk: {failed}, {half_done} of them in apply");
    assert!(failed >= 6 && half_done >= 1, "{failed} runs hit the full disk, {half_done} in apply");
}
