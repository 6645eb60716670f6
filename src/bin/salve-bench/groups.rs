//! The measurements, one function per group of figures (`--only`).

use super::{Bench, Goal, micros};
use anyhow::anyhow;
use salve::artifact;
use salve::audit::{AuditLog, Phase};
use salve::grant::{Grant, GrantSpec};
use salve::host::{Budget, Calls, InFlight};
use salve::keys::{PrivateKey, Role};
use salve::run::{JobContext, Outcome, Runner};
use salve::sandbox::{Catalog, PhaseSetup, Playbook, Sandbox, SandboxConfig};
use salve::trust::TrustFile;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Artifact verification: cold, from the process cache, with and without
/// the disk cache of compiled code.
pub(crate) fn artifacts(b: &mut Bench) -> anyhow::Result<()> {
    let bytes = b.artifact("noop")?;
    let now = SystemTime::now();
    let mut samples = Vec::new();
    for _ in 0..b.n(500) {
        let t = Instant::now();
        artifact::verify(&bytes, &b.trust, "dev", now)?;
        samples.push(micros(t.elapsed()));
    }
    b.record(
        "artifact verification, cold (layout, digests, Ed25519 verify_strict, trust, manifest)",
        "µs",
        samples,
        None,
        "46 KB no-op artifact, one signature",
    );

    let plain = Sandbox::new(SandboxConfig { pooling: false, ..SandboxConfig::default() })?;
    let mut samples = Vec::new();
    for _ in 0..b.n(10) {
        let t = Instant::now();
        Catalog::new(plain.clone()).load(&bytes, &b.trust, "dev", now)?;
        samples.push(micros(t.elapsed()) / 1000.0);
    }
    b.record("artifact verify + compile, no compile cache", "ms", samples, None, "Cranelift, parallel compilation");

    let cached_dir = b.data_dir("compile-cache");
    let cached =
        Sandbox::new(SandboxConfig { pooling: false, cache_dir: Some(cached_dir), ..SandboxConfig::default() })?;
    Catalog::new(cached.clone()).load(&bytes, &b.trust, "dev", now)?;
    let mut samples = Vec::new();
    for _ in 0..b.n(20) {
        let t = Instant::now();
        Catalog::new(cached.clone()).load(&bytes, &b.trust, "dev", now)?;
        samples.push(micros(t.elapsed()) / 1000.0);
    }
    b.record(
        "artifact verify + load compiled code from the disk cache",
        "ms",
        samples,
        None,
        "what a new process pays for an artifact it ran before",
    );

    let catalog = Catalog::new(cached);
    catalog.load(&bytes, &b.trust, "dev", now)?;
    let mut samples = Vec::new();
    for _ in 0..b.n(2000) {
        let t = Instant::now();
        catalog.load(&bytes, &b.trust, "dev", now)?;
        samples.push(micros(t.elapsed()));
    }
    b.record(
        "artifact verification, cached in the process (digest + trust recheck)",
        "µs",
        samples,
        None,
        "SHA-256 of the artifact's bytes, then the signers against the trust store",
    );
    Ok(())
}

fn load(b: &Bench, sandbox: &Sandbox, name: &str) -> anyhow::Result<Arc<Playbook>> {
    Ok(Catalog::new(sandbox.clone()).load(&b.artifact(name)?, &b.trust, "dev", SystemTime::now())?)
}

/// A store and instance from the cached pre-instantiation.
pub(crate) async fn instantiation(b: &mut Bench) -> anyhow::Result<()> {
    for pooling in [true, false] {
        let sandbox = Sandbox::new(SandboxConfig { pooling, ..SandboxConfig::default() })?;
        let playbook = load(b, &sandbox, "noop")?;
        let grant = Grant::open(&GrantSpec::default(), playbook.manifest().expect("signed"))?;
        let audit = AuditLog::open(&b.data_dir(&format!("instantiate-{pooling}")))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let calls = Calls::new(audit, "bench".into(), Phase::Apply, deadline)
            .with_timeout(Duration::from_secs(10))
            .with_inflight(Arc::new(InFlight::default()))
            .with_budget(Arc::new(Budget::new(0, 0)))
            .with_inline_reads(true)
            .with_leases(Vec::new().into());
        let mut samples = Vec::new();
        for i in 0..b.n(3000) + 100 {
            let setup = PhaseSetup {
                grant: &grant,
                calls: calls.clone(),
                journal: None,
                deadline: Duration::from_secs(5),
                stop: None,
            };
            let t = Instant::now();
            let instance = sandbox.instantiate(&playbook, setup).await?;
            let elapsed = t.elapsed();
            drop(instance);
            if i >= 100 {
                samples.push(micros(elapsed));
            }
        }
        let name = format!("instantiate from the cached InstancePre, pooling {}", if pooling { "on" } else { "off" });
        b.record(&name, "µs", samples, None, "new store, WASI context, limiter, epoch deadline, instance");
    }
    Ok(())
}

/// Runs a bench-calls job and returns how long it took.
async fn timed_job(
    runner: &Runner,
    playbook: &Playbook,
    grant: &Grant,
    params: &[(&str, &str)],
) -> anyhow::Result<Duration> {
    let params = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let job = JobContext::new("dev", "bench", params);
    let t = Instant::now();
    let report = runner.run(playbook, grant, &job).await?;
    let elapsed = t.elapsed();
    if report.outcome != Outcome::Succeeded {
        return Err(anyhow!("a bench job did not succeed: {:?}", report.outcome));
    }
    Ok(elapsed)
}

/// One guest→host call with its audit record: the extra time of a job that
/// makes N calls over one that makes none, divided by N, per batch.
pub(crate) async fn host_calls(b: &mut Bench) -> anyhow::Result<()> {
    let sandbox = Sandbox::new(SandboxConfig::default())?;
    let playbook = load(b, &sandbox, "bench-calls")?;
    let work = b.data_dir("work");
    std::fs::create_dir_all(&work)?;
    std::fs::write(work.join("probe.txt"), b"probe")?;
    let spec = GrantSpec::parse(&format!(
        "[[fs]]\nname = \"work\"\npath = \"{}\"\naccess = \"rw\"\n",
        std::fs::canonicalize(&work)?.display()
    ))?;
    let grant = Grant::open(&spec, playbook.manifest().expect("signed"))?;
    let runner = b.runner(&sandbox, &b.data_dir("calls"))?;
    for (mode, calls, batches, goal, name, note) in [
        (
            "stat",
            2000,
            30,
            Some(Goal::AtMost(2.0)),
            "read-only host call (fs.stat) with its audit record",
            "mean per call over batches of 2000 calls; p50/p99 across batches; reads inline",
        ),
        (
            "append",
            100,
            10,
            None,
            "mutating host call (1-byte fs.append) with its durable intent",
            "mean per call over batches of 100; each waits for one fdatasync of the audit log",
        ),
    ] {
        let calls_text = calls.to_string();
        let mut samples = Vec::new();
        for _ in 0..b.n(batches) {
            let base = timed_job(&runner, &playbook, &grant, &[("calls", "0"), ("mode", mode)]).await?;
            let full = timed_job(&runner, &playbook, &grant, &[("calls", &calls_text), ("mode", mode)]).await?;
            samples.push(micros(full.saturating_sub(base)) / calls as f64);
        }
        b.record(name, "µs", samples, goal, note);
    }
    Ok(())
}

/// A no-op job through every phase it runs: load from the process cache,
/// grant, instantiate + apply, instantiate + verify, outcome, seal.
pub(crate) async fn per_job(b: &mut Bench) -> anyhow::Result<()> {
    let sandbox = Sandbox::new(SandboxConfig::default())?;
    let catalog = Catalog::new(sandbox.clone());
    let bytes = b.artifact("noop")?;
    let digest = artifact::digest(&bytes);
    catalog.load(&bytes, &b.trust, "dev", SystemTime::now())?;
    let spec = GrantSpec::default();
    let shm = Path::new("/dev/shm");
    let mut places = vec![("the data disk", b.data_dir("per-job"))];
    if shm.is_dir() {
        places
            .push(("tmpfs (fdatasync free)", tempfile::Builder::new().prefix("salve-bench-").tempdir_in(shm)?.keep()));
    }
    for (place, data) in places {
        let runner = b.runner(&sandbox, &data)?;
        let mut samples = Vec::new();
        for i in 0..b.n(2000) + 50 {
            let t = Instant::now();
            let playbook = catalog.get(&digest, &b.trust, "dev", SystemTime::now()).expect("loaded above")?;
            let manifest = playbook.manifest().expect("signed");
            let grant = Grant::open(&spec, manifest)?;
            let job = JobContext::new("dev", "bench", Vec::new());
            manifest.check_parameters(&job.parameters)?;
            let report = runner.run(&playbook, &grant, &job).await?;
            let elapsed = t.elapsed();
            if report.outcome != Outcome::Succeeded {
                return Err(anyhow!("a no-op job did not succeed: {:?}", report.outcome));
            }
            if i >= 50 {
                samples.push(micros(elapsed));
            }
        }
        let durable = place == "the data disk";
        let name = format!("per-job overhead, no-op playbook, audit log on {place}");
        let goal = (!durable).then_some(Goal::AtMost(100.0));
        let note = if durable {
            "concurrency 1: each job waits for its own fdatasync (outcome + seal); \
             load = the process's catalog by digest, with the signers rechecked"
        } else {
            "the same pipeline with fdatasync made free: salve's own cost"
        };
        b.record(&name, "µs", samples, goal, note);
        if !durable {
            let _ = std::fs::remove_dir_all(&data);
        }
    }
    Ok(())
}

/// No-op jobs per second at several concurrencies, audit log durable.
pub(crate) async fn throughput(b: &mut Bench) -> anyhow::Result<()> {
    let sandbox = Sandbox::new(SandboxConfig::default())?;
    let playbook = load(b, &sandbox, "noop")?;
    let grant = Grant::open(&GrantSpec::default(), playbook.manifest().expect("signed"))?;
    let window = if b.scale > 1 { Duration::from_millis(500) } else { Duration::from_secs(3) };
    for concurrency in [1usize, 16, 64] {
        let runner = b.runner(&sandbox, &b.data_dir(&format!("throughput-{concurrency}")))?;
        let syncs_before = runner.audit().sync_count();
        let started = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let (runner, playbook, grant) = (runner.clone(), Arc::clone(&playbook), grant.clone());
                tokio::spawn(async move {
                    let mut done = 0u64;
                    while started.elapsed() < window {
                        let job = JobContext::new("dev", "bench", Vec::new());
                        runner.run(&playbook, &grant, &job).await?;
                        done += 1;
                    }
                    anyhow::Ok(done)
                })
            })
            .collect();
        let mut jobs = 0;
        for task in tasks {
            jobs += task.await??;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let syncs = runner.audit().sync_count() - syncs_before;
        let rate = jobs as f64 / elapsed;
        let goal = (concurrency == 64).then_some(Goal::AtLeast(5000.0));
        let note = format!(
            "{jobs} jobs in {elapsed:.1} s; {syncs} fdatasyncs ({:.1} jobs each)",
            jobs as f64 / syncs.max(1) as f64
        );
        b.record(
            &format!("no-op jobs per second, concurrency {concurrency}, durable audit"),
            "jobs/s",
            vec![rate],
            goal,
            &note,
        );
    }
    Ok(())
}

/// This process's resident set size, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Memory per job with many jobs parked inside a host call at once: each
/// waits in an HTTP request to a server that holds the connection open.
pub(crate) async fn parked(b: &mut Bench) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let jobs = if b.scale > 1 { 50 } else { 500 };
    let sandbox = Sandbox::new(SandboxConfig::default())?;
    let playbook = load(b, &sandbox, "bench-calls")?;
    // A server that accepts and never answers, holding every connection.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let held: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>> = Arc::default();
    let (count, hold) = (Arc::clone(&accepted), Arc::clone(&held));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            hold.lock().unwrap_or_else(|p| p.into_inner()).push(stream);
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    let work = b.data_dir("park-work");
    std::fs::create_dir_all(&work)?;
    let spec = GrantSpec::parse(&format!(
        "[[http]]\nmethods = [\"GET\"]\nprefix = \"http://127.0.0.1:{port}/\"\ntimeout = \"5m\"\n"
    ))?;
    let grant = Grant::open(&spec, playbook.manifest().expect("signed"))?;
    let runner = b.runner(&sandbox, &b.data_dir("park"))?;
    let url = format!("http://127.0.0.1:{port}/park");
    let params = |mode: &str| vec![("mode".to_string(), mode.to_string()), ("url".to_string(), url.clone())];
    // Warm up (allocator arenas, the pool, the runtime), then measure.
    for _ in 0..20 {
        runner.run(&playbook, &grant, &JobContext::new("dev", "bench", params("stat"))).await?;
    }
    let before = rss_kib();
    let tasks: Vec<_> = (0..jobs)
        .map(|_| {
            let (runner, playbook, grant) = (runner.clone(), Arc::clone(&playbook), grant.clone());
            let job = JobContext::new("dev", "bench", params("park"));
            tokio::spawn(async move { runner.run(&playbook, &grant, &job).await })
        })
        .collect();
    let started = Instant::now();
    while accepted.load(Ordering::SeqCst) < jobs {
        if started.elapsed() > Duration::from_secs(120) {
            return Err(anyhow!("only {} of {jobs} jobs reached their host call", accepted.load(Ordering::SeqCst)));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let parked = rss_kib();
    held.lock().unwrap_or_else(|p| p.into_inner()).clear(); // the server hangs up: the jobs finish
    for task in tasks {
        task.await??;
    }
    let per_job = (parked.saturating_sub(before)) as f64 / jobs as f64 / 1024.0;
    let note = format!(
        "{jobs} jobs parked in an http GET the server never answers; RSS {} MiB -> {} MiB",
        before / 1024,
        parked / 1024
    );
    b.record("memory per job parked inside a host call (RSS)", "MiB", vec![per_job], Some(Goal::AtMost(2.0)), &note);
    Ok(())
}

/// `salve run` as a whole process: first run (compiles) and later runs
/// (compiled code from the disk cache).
pub(crate) fn whole_process(b: &mut Bench, trust: &TrustFile) -> anyhow::Result<()> {
    let exe = b.salve.clone();
    let artifact = b.dir.path().join("noop.wasm");
    std::fs::write(&artifact, b.artifact("noop")?)?;
    let grant = b.dir.path().join("grant.toml");
    std::fs::write(&grant, "[limits]\ntimeout = \"10s\"\n")?;
    let runner_seed = b.runner_key.signing.to_bytes();
    let prepare = |data: &Path| -> anyhow::Result<()> {
        std::fs::create_dir_all(data.join("keys"))?;
        std::fs::write(data.join("trust.toml"), toml::to_string(trust)?)?;
        PrivateKey::from_seed("runner", Role::Runner, runner_seed).write(&data.join("keys"))?;
        Ok(())
    };
    let run = |data: &Path| -> anyhow::Result<f64> {
        let t = Instant::now();
        let status = std::process::Command::new(&exe)
            .arg("run")
            .arg(&artifact)
            .arg("--grant")
            .arg(&grant)
            .arg("--data-dir")
            .arg(data)
            .stdout(std::process::Stdio::null())
            .status()?;
        let ms = micros(t.elapsed()) / 1000.0;
        if !status.success() {
            return Err(anyhow!("salve run exited with {status}"));
        }
        Ok(ms)
    };
    let mut cold = Vec::new();
    for i in 0..b.n(5) {
        let data = b.data_dir(&format!("process-cold-{i}"));
        prepare(&data)?;
        cold.push(run(&data)?);
    }
    b.record(
        "`salve run` whole process, first run (verifies, compiles)",
        "ms",
        cold,
        None,
        "no-op playbook; new data directory each time",
    );
    let data = b.data_dir("process-warm");
    prepare(&data)?;
    run(&data)?;
    let mut warm = Vec::new();
    for _ in 0..b.n(30) {
        warm.push(run(&data)?);
    }
    b.record(
        "`salve run` whole process, warm compile cache",
        "ms",
        warm,
        Some(Goal::AtMost(20.0)),
        "no-op playbook: start, open the audit log, verify, load compiled code, run, seal, exit",
    );
    Ok(())
}

/// The audit log's Merkle tree: an inclusion proof for one record of a log
/// of 1,000,000 records (what an evidence bundle carries per record), and
/// the cost the writer pays per record to keep the tree.
pub(crate) fn merkle(b: &mut Bench) -> anyhow::Result<()> {
    use salve::audit::merkle::{CompactTree, MemoryTree, inclusion_proof, leaf_hash};
    const RECORDS: u64 = 1_000_000;
    let mut tree = MemoryTree::new();
    let mut compact = CompactTree::new();
    let mut appends = Vec::new();
    for i in 0..RECORDS {
        let leaf = leaf_hash(format!("{{\"seq\":{i},\"kind\":\"call\"}}").as_bytes());
        tree.push(leaf);
        let started = Instant::now();
        compact.append(leaf).map_err(|e| anyhow!("{e}"))?;
        std::hint::black_box(compact.root());
        if i % 1000 == 0 {
            appends.push(micros(started.elapsed()));
        }
    }
    let mut proofs = Vec::new();
    for i in 0..b.n(1000) as u64 {
        let index = (i * 7_919 + 13) * 1_000_003 % RECORDS;
        let started = Instant::now();
        std::hint::black_box(inclusion_proof(&tree, index, RECORDS).map_err(|e| anyhow!("{e}"))?);
        proofs.push(micros(started.elapsed()));
    }
    b.record(
        "inclusion proof, one record of 1,000,000",
        "us",
        proofs,
        Some(Goal::AtMost(1000.0)),
        "leaf hashes in memory with subtree hashes every 4th level (MemoryTree)",
    );
    b.record(
        "Merkle append + root, per record",
        "us",
        appends,
        None,
        "the frontier the log writer keeps (CompactTree)",
    );
    Ok(())
}

/// `salve evidence verify` of a typical job's bundle: rotate-logs in prod,
/// two approvals, the decisions, plans, votes and every host call, the
/// artifact included. Verified in-process (the library call the command
/// makes), so the figure is the checks, not process start.
pub(crate) async fn evidence(b: &mut Bench) -> anyhow::Result<()> {
    use salve::approval::{DEFAULT_LIFETIME, Vote};
    use salve::control::{Ballot, ControlPlane, Worker};
    use salve::job::{JobRequest, SignedJob};
    use salve::store::InstalledArtifact;
    use salve::trust::KeyEntry;
    let data = b.data_dir("evidence");
    // Under /tmp: rotate-logs' manifest declares it.
    let site = tempfile::Builder::new().prefix("salve-bench-logs-").tempdir_in("/tmp")?;
    let logs = site.path().to_path_buf();
    std::fs::create_dir_all(data.join("artifacts"))?;
    for i in 0..3 {
        let line = format!("2026-11-23T12:00:00Z INFO app request {i} latency_ms=42\n");
        std::fs::write(logs.join(format!("app{i}.log")), line.repeat(200))?;
    }
    let agent = PrivateKey::generate("bench-agent", Role::Agent)?;
    let approvers = [PrivateKey::generate("alice", Role::Approver)?, PrivateKey::generate("bob", Role::Approver)?];
    let until = "2099-01-01T00:00:00Z".to_string();
    let mut trust = TrustFile {
        keys: vec![
            KeyEntry::new(&b.key.public(), vec!["prod".into()], until.clone()),
            KeyEntry::new(&b.runner_key.public(), vec!["*".into()], until.clone()),
            KeyEntry::new(&agent.public(), vec!["prod".into()], until.clone()),
        ],
        revoked: vec![],
        signatures: vec![],
    };
    for approver in &approvers {
        let entry = KeyEntry::new(&approver.public(), vec!["prod".into()], until.clone());
        trust.keys.push(KeyEntry { groups: vec!["sre".into()], ..entry });
    }
    let trust_path = data.join("trust.toml");
    std::fs::write(&trust_path, toml::to_string(&trust)?)?;
    std::fs::write(data.join("policy.cedar"), salve::policy::DEFAULT_POLICY)?;
    // The prod change window opens in two hours: the job needs two approvals.
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_secs();
    let at = |offset: u64| {
        let m = (now / 60 + offset) % (24 * 60);
        format!("{:02}:{:02}", m / 60, m % 60)
    };
    std::fs::write(
        data.join("salve.toml"),
        format!("[windows]\nprod = [{{ from = \"{}\", to = \"{}\" }}]\n", at(120), at(180)),
    )?;
    let bytes = b.artifact("rotate-logs")?;
    let digest = artifact::digest(&bytes);
    let path = data.join("artifacts").join(format!("{digest}.wasm"));
    std::fs::write(&path, &bytes)?;
    let control = ControlPlane::open(&data, &trust_path)?;
    control.store.install(&InstalledArtifact { digest, name: "rotate-logs".into(), version: "1.0.0".into(), path })?;
    let expires = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600)).to_string();
    let request: JobRequest = serde_json::from_value(serde_json::json!({
        "id": "bench-evidence",
        "playbook": { "name": "rotate-logs", "version": "1.0.0" },
        "target": { "environment": "prod", "system": "web-3" },
        "parameters": { "dir": "logs", "max_bytes": "1000" },
        "grant": { "fs": [{ "name": "logs", "path": logs.display().to_string(), "access": "rw" }] },
        "evidence": {
            "detector": "disk-usage", "alert_id": "1", "severity": "high", "confidence": 0.92,
            "summary": "/var/log at 91%", "telemetry_sha256": "ab".repeat(32)
        },
        "nonce": "bench-evidence-nonce-0001",
        "expires_at": expires,
    }))?;
    control.submit(&SignedJob::sign(&request, &agent)?, SystemTime::now())?;
    let sandbox = Sandbox::new(SandboxConfig::default())?;
    let worker = Worker::new(ControlPlane::open(&data, &trust_path)?, b.runner(&sandbox, &data)?);
    worker.step().await?;
    let ballot = Ballot { vote: Vote::Approve, reason: "", lifetime: DEFAULT_LIFETIME, reviewed: None };
    for approver in &approvers {
        control.vote("bench-evidence", approver, &ballot, SystemTime::now())?;
    }
    let ran = worker.step().await?.ok_or_else(|| anyhow!("the approved job did not run"))?;
    if ran.state != salve::store::JobState::Succeeded {
        return Err(anyhow!("the bench job ended {}: {}", ran.state, ran.note));
    }
    drop(worker);
    let bundle = salve::evidence::export(&control, "bench-evidence", true)?;
    let pinned = b.runner_key.public();
    let mut samples = Vec::new();
    for _ in 0..b.n(50) {
        let started = Instant::now();
        let verified = salve::evidence::verify(&bundle, Some(&pinned)).map_err(|e| anyhow!("{e}"))?;
        samples.push(micros(started.elapsed()) / 1000.0);
        std::hint::black_box(verified);
    }
    b.record(
        "`evidence verify`, a typical job's bundle",
        "ms",
        samples,
        Some(Goal::AtMost(100.0)),
        &format!("rotate-logs in prod with two approvals; {} KiB bundle, artifact included", bundle.len() / 1024),
    );
    Ok(())
}
