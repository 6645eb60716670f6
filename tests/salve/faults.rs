//! Faults under the audit log: its file may not grow (RLIMIT_FSIZE) or its
//! disk fills (a small tmpfs). The log keeps a reserve of room for
//! rollbacks: each `salve run` either refuses to start (nothing changed),
//! stops in `apply` and is rolled back at once, or runs to the end; it is
//! never killed by SIGXFSZ nor left half-done, every acknowledged record
//! stays, and the chain verifies.

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
fn an_audit_log_that_cannot_grow_refuses_or_rolls_back_never_half_done() {
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

    let mut seen = Seen::default();
    // From no room at all to room for a whole run (about 160 KB of records
    // for these logs past twice the reserve): refused at the start, stopped
    // in apply and rolled back, or run to the end.
    for room in (0..32).map(|i| i * 25_000u64) {
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
            .env("SALVE_AUDIT_RESERVE", RESERVE)
            .output()
            .unwrap();
        let code = out
            .status
            .code()
            .unwrap_or_else(|| panic!("room {room}: salve was killed ({:?}): {}", out.status, text(&out)));
        seen.judge(&site, room, code, &text(&out), logs(&site) == before);
        check_log(&data, &ack);
        check_log(&data, &acknowledged(&data));
    }
    seen.enough();
}

/// The room kept for rollbacks in these tests: small, so that the runs
/// reach it, and above what a rollback of these logs writes (up to about
/// 70 KB of records); a job starts with twice it.
const RESERVE: &str = "256KiB";

/// How the runs under a fault ended.
#[derive(Debug, Default)]
struct Seen {
    refused: usize,
    rolled_back: usize,
    succeeded: usize,
}

impl Seen {
    /// Each run either refused to start (nothing changed), stopped in apply
    /// and was rolled back at once, or ran to the end; never half-done.
    /// `unchanged`: the target is as before the run.
    fn judge(&mut self, site: &Site, room: u64, code: i32, said: &str, unchanged: bool) {
        assert!(!said.contains("panicked"), "room {room}: {said}");
        match code {
            0 => {
                self.succeeded += 1;
                for i in 0..16 {
                    assert!(site.path(&format!("logs/app{i}.log.1.gz")).exists(), "room {room}: app{i} not rotated");
                }
            }
            3 => {
                self.rolled_back += 1;
                assert!(said.contains("room"), "room {room}: rolled back, but not for want of room: {said}");
                assert!(unchanged, "room {room}: rolled back, but not restored: {said}");
            }
            _ => {
                self.refused += 1;
                assert!(
                    said.contains("did not start") || said.contains("nothing was changed"),
                    "room {room}: exit {code} does not say the job did not start: {said}"
                );
                assert!(unchanged, "room {room}: refused, but the target changed: {said}");
            }
        }
        let left: Vec<_> =
            std::fs::read_dir(site.data().join("journal")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "room {room}: a journal is left: {left:?}: {said}");
    }

    fn enough(&self) {
        eprintln!("runs under the fault: {self:?}");
        assert!(self.refused >= 2 && self.rolled_back >= 1 && self.succeeded >= 1, "{self:?}");
    }
}

#[test]
fn a_full_disk_under_the_data_directory_refuses_or_rolls_back_never_half_done() {
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
    // A shell here, in a test only (salve's exec never runs one): a mount in
    // a private namespace lives only as long as the processes in it, so the
    // mount, the fill, the run, the recovery and the copy back must all run
    // in one process tree.
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
    let mut seen = Seen::default();
    // The run's own files take about 230 KB (the artifact's copy), its
    // audit records about 130 KB more.
    for room in (0..16).map(|i| i * 70_000u64) {
        write_logs(&site);
        let ack = acknowledged(&data);
        let out = Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "sh", "-c", SCRIPT])
            .env("MNT", &mount)
            .env("DATA", &data)
            .env("ROOM", room.to_string())
            .env("SALVE", env!("CARGO_BIN_EXE_salve"))
            .env("SALVE_AUDIT_RESERVE", RESERVE)
            .env("ARTIFACT", &artifact)
            .env("GRANT", &grant)
            .env("LOGS", site.path("logs"))
            .output()
            .unwrap();
        let said = text(&out);
        assert!(out.status.success() && said.contains("RECOVERED"), "room {room}: {said}");
        let line = |name: &str| said.split(name).nth(1).and_then(|s| s.lines().next()).unwrap().to_string();
        let code: i32 = line("RUN-STATUS=").parse().unwrap();
        seen.judge(&site, room, code, &said, line("BEFORE=") == line("AFTER-RUN="));
        assert!(said.contains("no salve run job was left behind"), "room {room}: the run left a job half-done: {said}");
        check_log(&data, &ack);
        check_log(&data, &acknowledged(&data));
    }
    seen.enough();
}
