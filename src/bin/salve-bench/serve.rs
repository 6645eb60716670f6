//! `salve serve` under load, over HTTP on loopback: 1,000 no-op jobs in an
//! environment that needs no approval, submitted by 64 clients at once, each
//! job's envelope signed by an agent key and checked by the server, every
//! job run by the server's worker with a durable, sealed audit log.

use super::{Bench, Goal, micros};
use anyhow::{Context as _, anyhow};
use salve::job::{JobRequest, SignedJob};
use salve::keys::{PrivateKey, Role};
use salve::store::InstalledArtifact;
use salve::trust::{KeyEntry, TrustFile};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How many clients submit at once.
const CLIENTS: usize = 64;

pub(crate) async fn serve(b: &mut Bench) -> anyhow::Result<()> {
    let jobs = b.n(1000).max(100);
    let data = b.data_dir("serve");
    std::fs::create_dir_all(data.join("keys"))?;
    std::fs::create_dir_all(data.join("artifacts"))?;
    let agent = PrivateKey::generate("bench-agent", Role::Agent)?;
    let until = "2099-01-01T00:00:00Z".to_string();
    let trust = TrustFile {
        keys: vec![
            KeyEntry::new(&b.key.public(), vec!["dev".into()], until.clone()),
            KeyEntry::new(&b.runner_key.public(), vec!["*".into()], until.clone()),
            KeyEntry::new(&agent.public(), vec!["dev".into()], until),
        ],
        revoked: vec![],
        signatures: vec![],
    };
    std::fs::write(data.join("trust.toml"), toml::to_string(&trust)?)?;
    std::fs::write(data.join("policy.cedar"), salve::policy::DEFAULT_POLICY)?;
    std::fs::write(data.join("salve.toml"), "[budgets]\njobs_per_playbook_per_hour = 1000000\n")?;
    PrivateKey::from_seed("runner", Role::Runner, b.runner_key.signing.to_bytes()).write(&data.join("keys"))?;
    let bytes = b.artifact("noop")?;
    let digest = salve::artifact::digest(&bytes);
    let path = data.join("artifacts").join(format!("{digest}.wasm"));
    std::fs::write(&path, &bytes)?;
    let control = salve::control::ControlPlane::open(&data, &data.join("trust.toml"))?;
    control.store.install(&InstalledArtifact { digest, name: "noop".into(), version: "0.1.0".into(), path })?;
    drop(control);

    let envelopes: Vec<(String, Vec<u8>)> = (0..jobs)
        .map(|i| {
            let id = format!("bench-{i:05}");
            let request = request(&id, i)?;
            Ok((id, serde_json::to_vec(&SignedJob::sign(&request, &agent)?)?))
        })
        .collect::<anyhow::Result<_>>()?;

    let mut child = Command::new(&b.salve)
        .args(["serve", "--listen", "127.0.0.1:0", "--jobs", "64", "--max-queue", "100000", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", b.salve.display()))?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let base = line
        .trim()
        .strip_prefix("salve serve: listening on ")
        .ok_or_else(|| anyhow!("salve serve said {line:?}"))?
        .to_string();
    // When each job ended, from the steps the server prints.
    let ended: Arc<Mutex<HashMap<String, (Instant, String)>>> = Arc::default();
    let heard = Arc::clone(&ended);
    let reader = std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            let Some((job, rest)) = line.strip_prefix("job ").and_then(|l| l.split_once(": ")) else { continue };
            let state = rest.split(' ').next().unwrap_or_default();
            if ["succeeded", "failed", "denied", "rolled-back", "rollback-failed", "plan-failed"].contains(&state) {
                heard.lock().unwrap().insert(job.to_string(), (Instant::now(), state.to_string()));
            }
        }
    });
    let http = reqwest::Client::new();
    let ready = Instant::now() + Duration::from_secs(60);
    while http.get(format!("{base}/readyz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
        if Instant::now() > ready {
            return Err(anyhow!("salve serve was not ready within 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Submit: 64 clients, each taking the next envelope.
    let queue = Arc::new(Mutex::new(envelopes.into_iter()));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (queue, http, url) = (Arc::clone(&queue), http.clone(), format!("{base}/v1/jobs"));
        clients.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            loop {
                let next = queue.lock().unwrap().next();
                let Some((id, body)) = next else { break };
                let at = Instant::now();
                let response = http.post(&url).header("content-type", "application/json").body(body).send().await?;
                let status = response.status().as_u16();
                if status != 201 {
                    return Err(anyhow!("submission of {id} answered {status}: {}", response.text().await?));
                }
                sent.push((id, at, at.elapsed()));
            }
            Ok::<_, anyhow::Error>(sent)
        }));
    }
    let mut submitted = Vec::new();
    for client in clients {
        submitted.extend(client.await??);
    }
    let submitting = started.elapsed();

    // Wait for every job's end (bounded), then stop the server.
    let deadline = Instant::now() + Duration::from_secs(300);
    while ended.lock().unwrap().len() < jobs {
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(anyhow!("only {} of {jobs} jobs ended within 300 s", ended.lock().unwrap().len()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let peak_rss = peak_rss_kib(child.id()).unwrap_or(0);
    let pid = rustix::process::Pid::from_raw(child.id() as i32).ok_or_else(|| anyhow!("no pid"))?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
    let status = child.wait()?;
    let _ = reader.join();
    if !status.success() {
        return Err(anyhow!("salve serve exited with {status} after SIGTERM"));
    }
    let verified = Command::new(&b.salve).args(["audit", "verify", "--data-dir"]).arg(&data).output()?;
    if !verified.status.success() {
        return Err(anyhow!("the audit log does not verify: {}", String::from_utf8_lossy(&verified.stderr)));
    }

    let ended = ended.lock().unwrap();
    let failed: Vec<_> = ended.iter().filter(|(_, (_, state))| state != "succeeded").take(3).collect();
    if !failed.is_empty() {
        return Err(anyhow!("not every job succeeded: {failed:?}"));
    }
    let last = ended.values().map(|(at, _)| *at).max().unwrap_or(started);
    let total = last.duration_since(started).as_secs_f64();
    let latencies: Vec<f64> =
        submitted.iter().map(|(id, at, _)| micros(ended[id].0.duration_since(*at)) / 1000.0).collect();
    let submits: Vec<f64> = submitted.iter().map(|(_, _, took)| micros(*took) / 1000.0).collect();
    let note = format!("{jobs} no-op jobs in dev (no approval), {CLIENTS} clients, --jobs 64, durable sealed audit");
    b.record(
        "`salve serve`: jobs/s end to end over HTTP",
        "jobs/s",
        vec![jobs as f64 / total],
        Some(Goal::AtLeast(2000.0)),
        &format!("{note}; the audit log verified after"),
    );
    b.record("`salve serve`: submit → succeeded", "ms", latencies, Some(Goal::AtMost(100.0)), &note);
    b.record(
        "`salve serve`: submissions/s (the worker running meanwhile)",
        "req/s",
        vec![jobs as f64 / submitting.as_secs_f64()],
        Some(Goal::AtLeast(5000.0)),
        "each envelope's Ed25519 signature, policy and store insert checked before 201",
    );
    b.record("`salve serve`: one submission", "ms", submits, None, &note);
    b.record(
        "`salve serve`: peak RSS",
        "MiB",
        vec![peak_rss as f64 / 1024.0],
        Some(Goal::AtMost(200.0)),
        &format!("VmHWM over the run, {jobs} jobs queued at most"),
    );
    Ok(())
}

fn request(id: &str, i: usize) -> anyhow::Result<JobRequest> {
    let expires = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600)).to_string();
    Ok(serde_json::from_value(serde_json::json!({
        "id": id,
        "playbook": { "name": "noop", "version": "0.1.0" },
        "target": { "environment": "dev", "system": format!("host-{}", i % 256) },
        "parameters": {},
        "grant": {},
        "evidence": {
            "detector": "bench", "alert_id": id, "severity": "low", "confidence": 0.99,
            "summary": "load", "telemetry_sha256": "ab".repeat(32)
        },
        "nonce": format!("{id}-nonce-0123456789"),
        "expires_at": expires,
    }))?)
}

/// The process's peak resident set (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
