//! What every test needs: the playbooks, built once; one shared sandbox; a
//! site (a temporary root with a data directory and granted directories).

use salve::audit::AuditLog;
use salve::grant::{Grant, GrantSpec};
use salve::run::{JobContext, Report, Runner};
use salve::sandbox::{Playbook, Sandbox, SandboxConfig};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds every playbook for wasm32-wasip2 (once per test process) and
/// returns the directory holding the components.
fn built() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target_dir = repo().join("playbooks/target");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(repo().join("playbooks/Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target_dir)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .expect("cannot run cargo to build the playbooks");
        assert!(
            output.status.success(),
            "building the playbooks failed (is the target installed? `rustup target add wasm32-wasip2`):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        target_dir.join("wasm32-wasip2/release")
    })
}

/// The component file of a playbook crate (`escape-fs` → `escape_fs.wasm`).
pub fn component_path(name: &str) -> PathBuf {
    built().join(format!("{}.wasm", name.replace('-', "_")))
}

pub fn component_bytes(name: &str) -> Vec<u8> {
    std::fs::read(component_path(name)).unwrap()
}

pub fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| Sandbox::new(SandboxConfig::default()).unwrap())
}

/// A playbook, compiled and checked once per test process.
pub fn playbook(name: &str) -> Arc<Playbook> {
    static LOADED: OnceLock<Mutex<HashMap<String, Arc<Playbook>>>> = OnceLock::new();
    let loaded = LOADED.get_or_init(Mutex::default);
    if let Some(p) = loaded.lock().unwrap().get(name) {
        return Arc::clone(p);
    }
    let p = Arc::new(
        sandbox()
            .load(name, &component_bytes(name))
            .unwrap_or_else(|e| panic!("{name}: {e}")),
    );
    loaded.lock().unwrap().insert(name.to_string(), Arc::clone(&p));
    p
}

/// A temporary root holding a data directory and whatever a test grants.
pub struct Site {
    pub root: tempfile::TempDir,
    runner: OnceLock<Runner>,
}

impl Site {
    pub fn new() -> Site {
        Site {
            root: tempfile::tempdir().unwrap(),
            runner: OnceLock::new(),
        }
    }

    pub fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.root.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    pub fn runner(&self) -> &Runner {
        self.runner.get_or_init(|| {
            let audit = AuditLog::open(&self.data()).unwrap();
            Runner::new(sandbox().clone(), audit, &self.data()).unwrap()
        })
    }

    /// A grant from TOML, where `{root}` stands for the site's root.
    pub fn grant(&self, toml: &str) -> Grant {
        let toml = toml.replace("{root}", &self.root.path().display().to_string());
        Grant::open(&GrantSpec::parse(&toml).unwrap()).unwrap()
    }

    pub async fn run(&self, playbook: &str, grant: &str, params: &[(&str, &str)]) -> Report {
        let job = job(params);
        self.runner()
            .run(&self::playbook(playbook), &self.grant(grant), &job)
            .await
            .unwrap()
    }

    /// Every audit record so far.
    pub fn records(&self) -> Vec<Value> {
        self.runner().audit().sync_blocking().unwrap();
        let text = std::fs::read_to_string(self.data().join("audit.jsonl")).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// The audit records of one job.
    pub fn job_records(&self, job: &str) -> Vec<Value> {
        self.records().into_iter().filter(|r| r["job"] == job).collect()
    }

    /// Every file under the root (but the data directory), with its bytes;
    /// symlinks by their target.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut files = BTreeMap::new();
        let mut stack = vec![self.root.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let rel = path.strip_prefix(self.root.path()).unwrap().to_path_buf();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if rel.starts_with("data") {
                    continue;
                } else if meta.is_symlink() {
                    let target = std::fs::read_link(&path).unwrap();
                    files.insert(rel, target.as_os_str().as_encoded_bytes().to_vec());
                } else if meta.is_dir() {
                    files.insert(rel, b"<dir>".to_vec());
                    stack.push(path);
                } else {
                    files.insert(rel, std::fs::read(&path).unwrap());
                }
            }
        }
        files
    }
}

pub fn job(params: &[(&str, &str)]) -> JobContext {
    let params = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    JobContext::new("dev", "test-host", params)
}

/// `kind` records, optionally only those where `field` equals `value`.
pub fn of_kind<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

/// The status each phase ended with, in order: `[("apply", "ok"), ...]`.
pub fn phase_ends(records: &[Value]) -> Vec<(String, String)> {
    of_kind(records, "phase")
        .into_iter()
        .filter(|r| r["status"] != "started" && r["status"] != "log-suppressed")
        .map(|r| {
            (
                r["phase"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub fn phases(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(p, s)| (p.to_string(), s.to_string())).collect()
}
