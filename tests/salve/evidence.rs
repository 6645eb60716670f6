//! Evidence bundles: a real job exported verifies offline, and a bundle
//! with any change is refused with the check that caught it.

use crate::common::runner_key;
use crate::control::{Plane, closed_window_config, salve, step, text};
use salve::audit::record::{ControlAction, Event};
use salve::control::Worker;
use salve::evidence::{Check, tar, verify};
use salve::keys::{PrivateKey, PublicKeyFile, Role};
use salve::policy::DEFAULT_POLICY;
use salve::store::JobState;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A prod job that needed two approvals, got them, and ran; the worker is
/// still running (holding the log) when the bundle is exported.
async fn ran(plane: &Plane) -> Worker {
    plane.write_logs(2, 5000);
    let control = plane.control();
    plane.submit(&control, &plane.rotate("job-1", "prod", 0.92)).unwrap();
    let worker = plane.worker();
    assert_eq!(step(&worker).await.state, JobState::WaitingApproval);
    plane.approve(&control, "job-1", &plane.alice).unwrap();
    plane.approve(&control, "job-1", &plane.bob).unwrap();
    assert_eq!(step(&worker).await.state, JobState::Succeeded);
    worker
}

fn export(plane: &Plane) -> Vec<u8> {
    salve::evidence::export(&plane.control(), "job-1", true).unwrap()
}

fn runner_pub() -> PublicKeyFile {
    runner_key().public()
}

/// The bundle with `change` made to its files.
fn edit(bundle: &[u8], change: impl FnOnce(&mut BTreeMap<String, Vec<u8>>)) -> Vec<u8> {
    let mut files = tar::read(bundle).unwrap();
    change(&mut files);
    tar::write(&files)
}

fn json_file(files: &BTreeMap<String, Vec<u8>>, name: &str) -> Value {
    serde_json::from_slice(&files[name]).unwrap()
}

fn put_json(files: &mut BTreeMap<String, Vec<u8>>, name: &str, value: &Value) {
    files.insert(name.into(), serde_json::to_vec(value).unwrap());
}

/// The bundle's records as lines, changed by `change` (which may drop
/// some: their proofs go with them).
fn edit_records(bundle: &[u8], change: impl FnOnce(&mut Vec<(String, Value)>)) -> Vec<u8> {
    edit(bundle, |files| {
        let text = String::from_utf8(files["records.jsonl"].clone()).unwrap();
        let proofs = json_file(files, "proofs.json");
        let mut pairs: Vec<(String, Value)> =
            text.lines().map(String::from).zip(proofs["proofs"].as_array().unwrap().iter().cloned()).collect();
        change(&mut pairs);
        let lines: String = pairs.iter().map(|(line, _)| format!("{line}\n")).collect();
        files.insert("records.jsonl".into(), lines.into_bytes());
        let proofs =
            json!({ "size": proofs["size"], "proofs": pairs.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>() });
        put_json(files, "proofs.json", &proofs);
    })
}

/// A record's line with its own hash made right again for what it says.
fn rehash(line: &str) -> String {
    let cut = line.rfind(r#","hash":""#).unwrap();
    let body = format!("{}}}", &line[..cut]);
    format!(r#"{},"hash":"{}"}}"#, &line[..cut], salve::host::digest(body.as_bytes()))
}

#[track_caller]
fn refused(bundle: &[u8], check: Check) -> String {
    let refused = verify(bundle, Some(&runner_pub())).expect_err("the changed bundle verified");
    assert_eq!(refused.check, check, "{refused}");
    refused.reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_job_exports_and_verifies_offline() {
    let plane = Plane::new(DEFAULT_POLICY, &closed_window_config());
    let worker = ran(&plane).await;
    // A new policy later: the bundle still carries the one that decided.
    std::fs::write(plane.data().join("policy.cedar"), format!("{DEFAULT_POLICY}\n// changed\n")).unwrap();

    let bundle = export(&plane);
    let verified = verify(&bundle, Some(&runner_pub())).unwrap();
    assert_eq!(verified.job, "job-1");
    assert_eq!(verified.state, "succeeded");
    assert_eq!(verified.decisions, 3, "submission, before plan, before apply");
    assert_eq!(verified.votes, 2);
    assert!(verified.seals >= 2, "the plans' and the run's");
    assert!(verified.artifact_checked);
    assert!(verified.caveats.is_empty(), "{:?}", verified.caveats);
    let files = tar::read(&bundle).unwrap();
    assert!(files.contains_key(&format!("policies/{}.cedar", salve::host::digest(DEFAULT_POLICY.as_bytes()))));
    let records = String::from_utf8(files["records.jsonl"].clone()).unwrap();
    let log = std::fs::read_to_string(plane.data().join("audit.jsonl")).unwrap();
    for line in records.lines() {
        assert!(log.lines().any(|l| l == line), "a record as the log holds it");
    }
    assert!(records.contains(r#""action":"approvals""#) && records.contains(r#""kind":"call""#));
    let job = json_file(&files, "job.json");
    assert_eq!(job["leases"], json!([]), "lease ids only, and this job has none");

    // Without the runner key given, it verifies against the bundle's own,
    // and says so.
    let unpinned = verify(&bundle, None).unwrap();
    assert!(unpinned.caveats.iter().any(|c| c.contains("taken from the bundle")), "{:?}", unpinned.caveats);
    // Without the artifact's bytes, it says what that leaves unchecked.
    let lean = salve::evidence::export(&plane.control(), "job-1", false).unwrap();
    let lean = verify(&lean, Some(&runner_pub())).unwrap();
    assert!(!lean.artifact_checked && lean.caveats.iter().any(|c| c.contains("--with-artifact")));
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_with_any_change_is_refused_naming_the_check() {
    let plane = Plane::new(DEFAULT_POLICY, &closed_window_config());
    let _worker = ran(&plane).await;
    let bundle = export(&plane);
    verify(&bundle, Some(&runner_pub())).unwrap();

    // A record changed: its own hash no longer matches; made to match, it
    // is not the record the checkpoint's tree holds.
    let changed = |rehashed: bool| {
        edit_records(&bundle, |records| {
            let (line, _) = records.iter_mut().find(|(l, _)| l.contains(r#""function":"truncate""#)).unwrap();
            *line = line.replace(r#""size":0"#, r#""size":1"#);
            if rehashed {
                *line = rehash(line);
            }
        })
    };
    assert!(refused(&changed(false), Check::Records).contains("hash does not match"));
    assert!(refused(&changed(true), Check::Inclusion).contains("not in the log"));

    // A record left out (the first vote), with its proof.
    let without_vote = edit_records(&bundle, |records| {
        let at = records.iter().position(|(l, _)| l.contains(r#""action":"approve""#)).unwrap();
        records.remove(at);
    });
    assert!(refused(&without_vote, Check::Completeness).contains("not in the bundle"));

    // The run's records cut off: the store's outcome has nothing behind it.
    let cut = edit_records(&bundle, |records| {
        let run = records.iter().position(|(l, _)| l.contains(r#""mode":"run""#)).unwrap();
        records.truncate(run + 1);
    });
    assert!(refused(&cut, Check::Outcome).contains("succeeded"));

    // The checkpoint's signature changed; another runner key given.
    let forged_checkpoint = edit(&bundle, |files| {
        let note = String::from_utf8(files["checkpoint.txt"].clone()).unwrap();
        let line = note.lines().last().unwrap().to_string();
        let sig = line.rsplit(' ').next().unwrap();
        let mut bytes = base64_decode(sig);
        bytes[10] ^= 1;
        let forged = line.replace(sig, &base64_encode(&bytes));
        files.insert("checkpoint.txt".into(), note.replace(&line, &forged).into_bytes());
    });
    refused(&forged_checkpoint, Check::Checkpoint);
    let other = PrivateKey::from_seed("other-runner", Role::Runner, [99; 32]).public();
    let wrong = verify(&bundle, Some(&other)).unwrap_err();
    assert_eq!(wrong.check, Check::RunnerKey, "{wrong}");

    // Another request, signed by the same agent, in place of the one submitted.
    let mut other_request = plane.rotate("job-1", "prod", 0.99);
    other_request.parameters.insert("keep".into(), "1".into());
    let swapped = edit(&bundle, |files| put_json(files, "envelope.json", &json!(plane.sign(&other_request))));
    assert!(refused(&swapped, Check::Envelope).contains("job hash"));

    // Keys: an approver's entry holding another key; an approver's key
    // said to be an agent's.
    let keys_edit = |change: &dyn Fn(&mut Value)| {
        edit(&bundle, |files| {
            let mut keys = json_file(files, "keys.json");
            for key in keys.as_array_mut().unwrap() {
                if key["id"] == plane.alice.id.as_str() {
                    change(key);
                }
            }
            put_json(files, "keys.json", &keys);
        })
    };
    let carol = salve::keys::encode_public(&plane.carol.signing.verifying_key());
    refused(&keys_edit(&|key| key["public_key"] = json!(carol)), Check::Keys);
    assert!(refused(&keys_edit(&|key| key["role"] = json!("agent")), Check::Approvals).contains("not approver"));

    // The policy text changed, or gone.
    let policy = format!("policies/{}.cedar", salve::host::digest(DEFAULT_POLICY.as_bytes()));
    let lax = edit(&bundle, |files| {
        files.insert(policy.clone(), b"permit(principal, action, resource);".to_vec());
    });
    assert!(refused(&lax, Check::Policy).contains("changed"));
    let gone = edit(&bundle, |files| {
        files.remove(&policy);
    });
    assert!(refused(&gone, Check::Policy).contains("not in the bundle"));

    // The store's view says the job rolled back.
    let relabeled = edit(&bundle, |files| {
        let mut job = json_file(files, "job.json");
        job["state"] = json!("rolled-back");
        put_json(files, "job.json", &job);
    });
    refused(&relabeled, Check::Outcome);

    // The artifact: one byte of it, or a signature.
    let patched = edit(&bundle, |files| {
        let wasm = files.get_mut("artifact.wasm").unwrap();
        wasm[100] ^= 1;
    });
    assert!(refused(&patched, Check::Artifact).contains("does not hash"));
    let resigned = edit(&bundle, |files| {
        let mut artifact = json_file(files, "artifact.json");
        let signature = artifact["signatures"][0]["signature"].as_str().unwrap().to_string();
        let flipped = format!("{}{}", if signature.starts_with('0') { "1" } else { "0" }, &signature[1..]);
        artifact["signatures"][0]["signature"] = json!(flipped);
        put_json(files, "artifact.json", &artifact);
    });
    assert!(refused(&resigned, Check::Artifact).contains("does not verify"));

    // The archive itself: a file added, a file missing, cut short.
    let extra = edit(&bundle, |files| {
        files.insert("notes.txt".into(), b"trust me".to_vec());
    });
    assert!(refused(&extra, Check::Bundle).contains("notes.txt"));
    let missing = edit(&bundle, |files| {
        files.remove("envelope.json");
    });
    assert!(refused(&missing, Check::Bundle).contains("envelope.json is missing"));
    refused(&bundle[..bundle.len() - 2048], Check::Bundle);

    // The bundle the changes were made to still verifies.
    verify(&bundle, Some(&runner_pub())).unwrap();
}

/// Records the runner key signs but that do not add up: a plan whose
/// hash is not its changes', approvals no vote gave, a decision the policy
/// does not make. The proofs hold; the checks of what they say do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_records_that_do_not_add_up_are_refused() {
    let plane = Plane::new(DEFAULT_POLICY, &closed_window_config());
    let worker = ran(&plane).await;
    let audit = worker.runner().audit();
    let key = runner_key();
    let plan = plane.control().job("job-1").unwrap().plan_hash.unwrap();
    let forge = |action: ControlAction, detail: Value| {
        let audit = audit.clone();
        let key = key.clone();
        async move {
            audit.append(Some("job-1"), &Event::Control { action, at: None, detail: &detail }).unwrap();
            audit.seal("job-1", &key).await.unwrap();
        }
    };

    forge(ControlAction::Approvals, json!({ "plan_hash": plan, "counted": [plane.carol.id], "needed": 1 })).await;
    assert!(refused(&export(&plane), Check::Approvals).contains("no vote in the bundle gives"));

    let changes = json!([{ "action": "rotate", "target": "logs/other.log", "detail": "", "reversible": true }]);
    forge(
        ControlAction::State,
        json!({ "from": "succeeded", "to": "succeeded", "reason": "", "detail": { "plan_hash": plan, "changes": changes } }),
    )
    .await;
    assert!(refused(&export(&plane), Check::Plan).contains("does not hash"));

    let records = plane.control_records("job-1", "decision");
    let mut decision = records[0]["detail"].clone();
    decision["decision"] =
        json!({ "outcome": "allow", "policies": ["forged"], "policy_hash": decision["decision"]["policy_hash"] });
    forge(ControlAction::Decision, decision).await;
    assert!(refused(&export(&plane), Check::Policy).contains("on those facts it decides"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_refuses_what_it_cannot_prove() {
    let plane = Plane::new(DEFAULT_POLICY, &closed_window_config());
    let worker = ran(&plane).await;
    let Err(unknown) = salve::evidence::export(&plane.control(), "no-such-job", false) else {
        panic!("an unknown job was exported");
    };
    assert!(unknown.to_string().contains("no job no-such-job"), "{unknown}");

    // A record the checkpoint does not cover yet.
    let audit = worker.runner().audit();
    let seq = audit
        .append(Some("job-1"), &Event::Control { action: ControlAction::State, at: None, detail: &json!({}) })
        .unwrap();
    audit.sync(seq).await.unwrap();
    let Err(pending) = salve::evidence::export(&plane.control(), "job-1", false) else {
        panic!("a job with a record past the checkpoint was exported");
    };
    assert!(pending.to_string().contains("past the latest signed checkpoint"), "{pending}");
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_exports_verifies_and_exits_5_on_a_change() {
    let plane = Plane::new(DEFAULT_POLICY, &closed_window_config());
    drop(ran(&plane).await);
    let file = plane.site.root.path().join("job-1.evidence.tar");
    let file_arg = file.to_str().unwrap();
    let exported = salve(&plane, &["evidence", "export", "job-1", "-o", file_arg, "--with-artifact"]);
    assert!(exported.status.success(), "{}", text(&exported));
    let key_file = plane.site.root.path().join("test-runner.pub");
    std::fs::write(&key_file, toml::to_string(&runner_pub()).unwrap()).unwrap();
    let check = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
            .args(["evidence", "verify"])
            .arg(path)
            .arg("--runner-key")
            .arg(&key_file)
            .output()
            .unwrap()
    };
    let verified = check(&file);
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(text(&verified).contains("evidence of job job-1 verifies"), "{}", text(&verified));

    let tampered = plane.site.root.path().join("tampered.tar");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(
        &tampered,
        edit(&bytes, |files| {
            let mut job = json_file(files, "job.json");
            job["state"] = json!("rolled-back");
            put_json(files, "job.json", &job);
        }),
    )
    .unwrap();
    let refused = check(&tampered);
    assert_eq!(refused.status.code(), Some(5), "{}", text(&refused));
    assert!(text(&refused).contains("the outcome check failed"), "{}", text(&refused));
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Runs `command`, killing it if it has not ended within `limit`.
fn bounded(command: &mut std::process::Command, limit: std::time::Duration) -> std::process::Output {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("chromium is missing: scripts/test.sh installs it (Debian's chromium package)");
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The report of a real job, loaded in headless Chromium: the rendered
/// page shows the facts, shows a hostile summary as text, and fetches
/// nothing (a listener on loopback stands where the summary points).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_renders_in_a_real_browser_and_fetches_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let plane = Plane::new(DEFAULT_POLICY, &closed_window_config());
    plane.write_logs(2, 5000);
    let control = plane.control();
    let mut request = plane.rotate("job-1", "prod", 0.92);
    request.evidence.summary =
        format!("disk full <img src=\"http://127.0.0.1:{port}/img\"><script>document.title='pwned'</script>");
    plane.submit(&control, &request).unwrap();
    let worker = plane.worker();
    assert_eq!(step(&worker).await.state, JobState::WaitingApproval);
    plane.approve(&control, "job-1", &plane.alice).unwrap();
    plane.approve(&control, "job-1", &plane.bob).unwrap();
    assert_eq!(step(&worker).await.state, JobState::Succeeded);
    drop(worker);

    let root = plane.site.root.path();
    let (bundle, html) = (root.join("job-1.tar"), root.join("job-1.html"));
    let exported = salve(&plane, &["evidence", "export", "job-1", "-o", bundle.to_str().unwrap()]);
    assert!(exported.status.success(), "{}", text(&exported));
    let written = std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["evidence", "report"])
        .arg(&bundle)
        .arg("-o")
        .arg(&html)
        .output()
        .unwrap();
    assert!(written.status.success(), "{}", text(&written));

    let profile = tempfile::tempdir().unwrap();
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("evidence-report.png");
    let chromium = |mode: &str| {
        let mut command = std::process::Command::new("chromium");
        command
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--window-size=1280,2400")
            .arg(mode)
            .arg(format!("file://{}", html.display()));
        bounded(&mut command, std::time::Duration::from_secs(120))
    };
    let dom = chromium("--dump-dom");
    assert!(dom.status.success(), "{}", text(&dom));
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    let shot = chromium(&format!("--screenshot={}", screenshot.display()));
    assert!(shot.status.success() && screenshot.exists(), "{}", text(&shot));

    for fact in [
        "VERIFIES",
        "job-1",
        "rotate-logs 1.0.0",
        "prod-execution-outside-window",
        "needs 2 approval(s) from group sre",
        "alice",
        "bob",
        "logs/app0.log",
        "No rollback ran.",
    ] {
        assert!(dom.contains(fact), "the rendered page does not show {fact:?}");
    }
    assert!(dom.contains(r#"<span id="state">succeeded</span>"#));
    let plan = plane.control().job("job-1").unwrap().plan_hash.unwrap();
    assert!(dom.contains(&plan), "the plan the approvers approved");
    assert!(dom.contains("disk full &lt;img src="), "the hostile summary is shown as text");
    for element in ["<img", "<script", "<link", "<iframe"] {
        assert!(!dom.contains(element), "the page holds a {element} element");
    }
    assert!(!dom.contains("<title>pwned"));
    assert!(matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "the page fetched");
}
