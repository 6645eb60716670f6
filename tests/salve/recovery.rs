//! Crash recovery: the runner is killed (SIGKILL) at random points of
//! `apply`, `verify` and `rollback`, at least 100 times; the next start rolls the job back from its
//! durable journal (or keeps the outcome it had already recorded). Each
//! time: the target is restored, the audit chain verifies, no acknowledged
//! audit record is missing, and the job's final state is recorded.

use crate::control::{Plane, ROTATE_GRANT};
use salve::audit::verify::{Anchor, verify_log};
use salve::policy::DEFAULT_POLICY;
use salve::store::{JobState, JobStore, SqliteStore};
use serde_json::Value;
use std::io::{Read, Seek};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where to kill the runner.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// Once `apply` has made this many mutating host calls (their intents
    /// are in the audit log); 0: as soon as the job is recorded as applying.
    AfterIntents(usize),
    /// This many microseconds after the job is recorded as verifying.
    Verifying(u64),
    /// Once the rollback (its apply spent its mutation budget) has made
    /// this many mutating calls.
    RollingBack(usize),
    /// Rolling back, and again while the next start resumes the rollback.
    RollingBackTwice,
}

impl Kill {
    fn name(self) -> &'static str {
        match self {
            Kill::AfterIntents(_) => "apply",
            Kill::Verifying(_) => "verify",
            Kill::RollingBack(_) => "rollback",
            Kill::RollingBackTwice => "rollback twice",
        }
    }

    fn in_apply(self) -> bool {
        matches!(self, Kill::AfterIntents(_))
    }

    fn in_rollback(self) -> bool {
        matches!(self, Kill::RollingBack(_) | Kill::RollingBackTwice)
    }
}

/// xorshift64*: the kill points are random, and a seed replays them.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn spawn_worker(plane: &Plane) -> Child {
    Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["worker", "--poll", "5ms", "--data-dir"])
        .arg(plane.data())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Reads what was appended to the audit log since the last call.
struct Tail {
    offset: u64,
    partial: String,
}

impl Tail {
    fn records(&mut self, plane: &Plane) -> Vec<Value> {
        let Ok(mut file) = std::fs::File::open(plane.data().join("audit.jsonl")) else { return Vec::new() };
        file.seek(std::io::SeekFrom::Start(self.offset)).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        self.offset += text.len() as u64;
        self.partial.push_str(&text);
        let mut records = Vec::new();
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            records.push(serde_json::from_str(&line).unwrap());
        }
        records
    }
}

/// Kills `child` once `ready` holds; returns whether it did before the
/// job ended on its own.
fn kill_when(child: &mut Child, mut ready: impl FnMut() -> Option<bool>) -> bool {
    let started = Instant::now();
    loop {
        match ready() {
            Some(true) => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                return true;
            }
            Some(false) => {
                child.kill().unwrap();
                child.wait().unwrap();
                return false;
            }
            None => {}
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the job never got there");
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// `seq` and `hash` from `audit.head`: the last record acknowledged durable.
fn anchored(plane: &Plane) -> (u64, String) {
    let text = std::fs::read_to_string(plane.data().join("audit.head")).unwrap();
    let field = |name: &str| text.split_whitespace().find_map(|f| f.strip_prefix(name).map(str::to_string)).unwrap();
    (field("seq=").parse().unwrap(), field("hash="))
}

/// Runs one job and kills the runner where `kill` says. Returns the number
/// of kills that landed and the job's final state, or `None` if the job
/// finished first (try again).
fn crash_case(plane: &Plane, store: &dyn JobStore, n: usize, kill: Kill) -> Option<(usize, JobState)> {
    let logs = plane.site.root.path().join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    plane.write_logs(24, 20_000);
    let before = plane.site.snapshot();
    let id = format!("crash-{n}");
    let mut request = plane.rotate(&id, "dev", 0.9);
    if kill.in_rollback() {
        let grant = ROTATE_GRANT.replace("{root}", &plane.site.root.path().display().to_string());
        request.grant = salve::grant::GrantSpec::parse(&format!("{grant}[limits]\nmutations = 12\n")).unwrap();
    }
    plane.submit(&plane.control(), &request).unwrap();

    let mut tail = Tail {
        offset: std::fs::metadata(plane.data().join("audit.jsonl")).map_or(0, |m| m.len()),
        partial: String::new(),
    };
    let (mut intents, mut rollback_intents, mut rolling_back) = (0, 0, false);
    let mut verifying_since = None;
    let mut worker = spawn_worker(plane);
    let state = |store: &dyn JobStore| store.job(&id).unwrap().unwrap().state;
    let landed = kill_when(&mut worker, || {
        let now = state(store);
        if now.is_final() {
            return Some(false);
        }
        for r in tail.records(plane).iter().filter(|r| r["job"] == id.as_str()) {
            if r["kind"] == "phase" && r["phase"] == "rollback" {
                rolling_back = true;
            } else if r["kind"] == "intent" {
                *(if rolling_back { &mut rollback_intents } else { &mut intents }) += 1;
            }
        }
        Some(match kill {
            Kill::AfterIntents(k) => now == JobState::Applying && intents >= k,
            Kill::Verifying(after) => {
                now == JobState::Verifying
                    && verifying_since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_micros(after)
            }
            Kill::RollingBack(k) => now == JobState::RollingBack && rollback_intents >= k,
            Kill::RollingBackTwice => now == JobState::RollingBack,
        })
        .filter(|&hit| hit)
    });
    let mut kills = 1;
    if !landed {
        // The job ended before the kill: run it out and try another.
        let status = Command::new(env!("CARGO_BIN_EXE_salve"))
            .args(["worker", "--until-idle", "--data-dir"])
            .arg(plane.data())
            .output()
            .unwrap();
        assert!(status.status.success());
        return None;
    }
    if let Kill::RollingBackTwice = kill {
        // The next start finds the job rolling back and resumes; kill it
        // again as it does.
        let mut tail =
            Tail { offset: std::fs::metadata(plane.data().join("audit.jsonl")).unwrap().len(), partial: String::new() };
        let mut worker = spawn_worker(plane);
        let again = kill_when(&mut worker, || {
            let resumed = tail.records(plane).iter().any(|r| {
                r["job"] == id.as_str() && r["kind"] == "phase" && r["phase"] == "rollback" && r["status"] == "started"
            });
            if state(store).is_final() {
                return Some(false);
            }
            resumed.then_some(true)
        });
        kills += usize::from(again);
    }

    // What was acknowledged before the restart must survive it.
    let (seq, hash) = anchored(plane);
    let restarted = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["worker", "--until-idle", "--data-dir"])
        .arg(plane.data())
        .output()
        .unwrap();
    let output = String::from_utf8_lossy(&restarted.stdout).to_string() + &String::from_utf8_lossy(&restarted.stderr);
    assert!(restarted.status.success(), "{kill:?}: {output}");

    let job = store.job(&id).unwrap().unwrap();
    let history: Vec<JobState> = store.history(&id).unwrap().iter().map(|t| t.to).collect();
    match job.state {
        // Killed in apply: the outcome cannot have been recorded yet.
        JobState::Succeeded if kill.in_apply() => {
            panic!("{kill:?}: succeeded after a kill in apply: {history:?}")
        }
        JobState::RolledBack => assert_eq!(plane.site.snapshot(), before, "{kill:?}: not restored; {history:?}"),
        JobState::Succeeded => {
            assert!(!kill.in_rollback(), "{kill:?}: {history:?}");
            for i in 0..24 {
                assert!(logs.join(format!("app{i}.log.1.gz")).exists(), "{kill:?}: succeeded but app{i} not rotated");
            }
        }
        other => panic!("{kill:?}: the job ended {other}: {history:?}\n{output}"),
    }
    assert!(history.contains(&JobState::Applying), "{history:?}");
    assert!(!plane.data().join(format!("journal/{id}.journal")).exists(), "the journal outlived the job");
    let trust = salve::trust::TrustStore::load(&plane.data().join("trust.toml")).unwrap();
    let log = plane.data().join("audit.jsonl");
    verify_log(&log, Anchor::Required(plane.data().join("audit.head")), Some(&trust))
        .unwrap_or_else(|e| panic!("{kill:?}: the audit log does not verify: {e}"));
    let records = plane.records();
    let kept = records.iter().find(|r| r["seq"] == seq).unwrap_or_else(|| panic!("record {seq} is gone"));
    assert_eq!(kept["hash"], hash.as_str(), "acknowledged record {seq} changed");
    let outcomes = records.iter().filter(|r| r["job"] == id.as_str() && r["kind"] == "outcome").count();
    assert!(outcomes >= 1, "{kill:?}: no outcome recorded for {id}");
    Some((kills, job.state))
}

/// At least 100 kills at random points of apply, verify and rollback
/// (`SALVE_TEST_SEED` replays a run's points), within a time bound.
#[test]
fn the_runner_killed_anywhere_recovers_every_job() {
    const KILLS: usize = 100;
    let plane = Plane::new(DEFAULT_POLICY, "[budgets]\njobs_per_playbook_per_hour = 100000\n");
    let store = SqliteStore::open(&plane.data()).unwrap();
    // xorshift needs a seed other than 0.
    let seed = 1 | std::env::var("SALVE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("kill points from SALVE_TEST_SEED={seed}");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let (mut n, mut kills, mut missed) = (0, 0, 0);
    // Per phase: kills landed, and jobs that then ended rolled back.
    let mut landed: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    // Until enough kills in all, and in each phase (so no draw of the
    // generator can leave a phase out).
    let enough = |landed: &std::collections::BTreeMap<&str, (usize, usize)>| {
        ["apply", "verify", "rollback"].iter().all(|p| landed.get(p).is_some_and(|&(k, _)| k >= 5))
            && landed.get("verify").is_some_and(|&(_, rolled_back)| rolled_back > 0)
    };
    while kills < KILLS || !enough(&landed) {
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "only {kills} kills in 15 minutes (seed {seed}): {landed:?}"
        );
        let kill = match rng.below(20) {
            0..=9 => Kill::AfterIntents(rng.below(40) as usize),
            10..=13 => Kill::Verifying(rng.below(3_000)),
            14..=17 => Kill::RollingBack(rng.below(12) as usize),
            _ => Kill::RollingBackTwice,
        };
        n += 1;
        let Some((k, state)) = crash_case(&plane, &store, n, kill) else {
            missed += 1;
            assert!(missed <= KILLS, "the kills keep missing their moment (seed {seed})");
            continue;
        };
        kills += k;
        let entry = landed.entry(kill.name()).or_default();
        entry.0 += k;
        entry.1 += usize::from(state == JobState::RolledBack);
    }
    eprintln!(
        "kills landed: {kills} in {:?} ({missed} jobs ended first); per phase (kills, rolled back): {landed:?}",
        started.elapsed()
    );
}
