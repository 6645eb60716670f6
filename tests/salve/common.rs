//! What every test needs: the playbooks, built once; one shared sandbox; a
//! site (a temporary root with a data directory and granted directories).

use salve::audit::AuditLog;
use salve::grant::{Grant, GrantSpec};
use salve::keys::{PrivateKey, Role};
use salve::run::{JobContext, Report, Runner};
use salve::sandbox::{Catalog, Playbook, Sandbox, SandboxConfig};
use salve::trust::{KeyEntry, TrustFile, TrustStore};
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

/// The `playbook.toml` next to a playbook crate.
pub fn manifest_text(name: &str) -> String {
    let real = repo().join("playbooks").join(name).join("playbook.toml");
    let test = repo().join("playbooks/tests").join(name).join("playbook.toml");
    std::fs::read_to_string(if real.exists() { real } else { test }).unwrap()
}

/// The test suite's author key (a fixed seed, so its id is stable).
pub fn author_key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::from_seed("test-author", Role::Author, [7; 32]))
}

/// The test suite's runner key, which seals every job.
pub fn runner_key() -> Arc<PrivateKey> {
    static KEY: OnceLock<Arc<PrivateKey>> = OnceLock::new();
    Arc::clone(KEY.get_or_init(|| Arc::new(PrivateKey::from_seed("test-runner", Role::Runner, [8; 32]))))
}

/// A trust store entry for `key`, trusted for `environments` until 2099.
pub fn trusted(key: &PrivateKey, environments: &[&str]) -> KeyEntry {
    let environments = environments.iter().map(|e| e.to_string()).collect();
    KeyEntry::new(&key.public(), environments, "2099-01-01T00:00:00Z".into())
}

/// The trust store the tests run with: the author key for `dev`, the
/// runner key everywhere.
pub fn trust_file() -> TrustFile {
    TrustFile { keys: vec![trusted(author_key(), &["dev"]), trusted(&runner_key(), &["*"])], ..TrustFile::default() }
}

pub fn trust() -> &'static TrustStore {
    static TRUST: OnceLock<TrustStore> = OnceLock::new();
    TRUST.get_or_init(|| TrustStore::from_file(trust_file()).unwrap())
}

/// A playbook's signed artifact: its component and manifest, signed by the
/// test author key (once per test process).
pub fn artifact(name: &str) -> Vec<u8> {
    static SIGNED: OnceLock<Mutex<HashMap<String, Vec<u8>>>> = OnceLock::new();
    let signed = SIGNED.get_or_init(Mutex::default);
    if let Some(bytes) = signed.lock().unwrap().get(name) {
        return bytes.clone();
    }
    let bytes = salve::artifact::sign(&component_bytes(name), Some(&manifest_text(name)), author_key()).unwrap();
    signed.lock().unwrap().insert(name.to_string(), bytes.clone());
    bytes
}

pub fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    // Every exec command runs under the salve binary as its reaper, as the CLI runs them.
    let reaper: std::sync::Arc<std::path::Path> = std::path::Path::new(env!("CARGO_BIN_EXE_salve")).into();
    SANDBOX.get_or_init(|| Sandbox::new(SandboxConfig { reaper: Some(reaper), ..SandboxConfig::default() }).unwrap())
}

pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| Catalog::new(sandbox().clone()))
}

/// A playbook's signed artifact, verified and compiled once per process.
pub fn load(name: &str) -> Result<Arc<Playbook>, salve::artifact::ArtifactError> {
    catalog().load(&artifact(name), trust(), "dev", std::time::SystemTime::now())
}

pub fn playbook(name: &str) -> Arc<Playbook> {
    load(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A temporary root holding a data directory and whatever a test grants.
pub struct Site {
    pub root: tempfile::TempDir,
    runner: OnceLock<Runner>,
    secrets: Vec<(String, String)>,
    tokens: HashMap<String, salve::credentials::TokenSpec>,
}

/// Secrets the test gives the runner.
struct MapSecrets(Vec<(String, String)>);

impl salve::credentials::SecretStore for MapSecrets {
    fn get(&self, name: &str) -> Option<salve::credentials::Secret> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| salve::credentials::Secret::new(v.clone()))
    }
}

impl Site {
    pub fn new() -> Site {
        // Under /tmp whatever TMPDIR says: the playbooks' manifests declare
        // /tmp/** as a directory a grant may give them.
        let root = tempfile::Builder::new().prefix("salve-test-").tempdir_in("/tmp").unwrap();
        Site { root, runner: OnceLock::new(), secrets: Vec::new(), tokens: HashMap::new() }
    }

    /// The site, whose runner mints tokens for credential `name`.
    pub fn with_token(mut self, name: &str, audience: &str) -> Site {
        self.tokens.insert(name.into(), salve::credentials::TokenSpec { audience: audience.into(), ttl: None });
        self
    }

    /// The site, whose runner leases these secrets.
    pub fn with_secrets(mut self, secrets: &[(&str, &str)]) -> Site {
        self.secrets = secrets.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        self
    }

    pub fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// A path inside the site.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.root.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    pub fn runner(&self) -> &Runner {
        self.runner.get_or_init(|| {
            let audit = AuditLog::open_keyed(&self.data(), runner_key()).unwrap();
            let store = MapSecrets(self.secrets.clone());
            let broker =
                salve::credentials::Broker::new(vec![Box::new(store)], self.tokens.clone(), Some(runner_key()));
            Runner::new(sandbox().clone(), audit, &self.data())
                .unwrap()
                .with_seal_key(runner_key())
                .unwrap()
                .with_broker(Arc::new(broker))
        })
    }

    /// A grant from TOML, where `{root}` stands for the site's root, opened
    /// within the playbook's manifest.
    pub fn grant_for(&self, playbook: &Playbook, toml: &str) -> Grant {
        let toml = toml.replace("{root}", &self.root.path().display().to_string());
        let spec = GrantSpec::parse(&toml).unwrap();
        Grant::open(&spec, playbook.manifest().unwrap()).unwrap()
    }

    pub async fn run(&self, name: &str, grant: &str, params: &[(&str, &str)]) -> Report {
        let job = job(params);
        let playbook = playbook(name);
        self.runner().run(&playbook, &self.grant_for(&playbook, grant), &job).await.unwrap()
    }

    /// The data directory a `salve` process needs: the test trust store and
    /// runner key. Returns the data directory.
    pub fn init_data_dir(&self) -> PathBuf {
        let data = self.data();
        std::fs::create_dir_all(data.join("keys")).unwrap();
        std::fs::write(data.join("trust.toml"), toml::to_string(&trust_file()).unwrap()).unwrap();
        let key = PrivateKey::from_seed("runner", Role::Runner, [8; 32]);
        key.write(&data.join("keys")).unwrap();
        data
    }

    /// A playbook's signed artifact, as a file in the site.
    pub fn artifact_file(&self, name: &str) -> PathBuf {
        self.write(&format!("artifacts/{name}-signed.wasm"), artifact(name))
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
        self.snapshot_without("data")
    }

    /// [`Site::snapshot`], also leaving out `skip` (a top-level directory).
    pub fn snapshot_without(&self, skip: &str) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut files = BTreeMap::new();
        let mut stack = vec![self.root.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let rel = path.strip_prefix(self.root.path()).unwrap().to_path_buf();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if rel.starts_with("data") || rel.starts_with(skip) {
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
        .filter(|r| !["started", "log-suppressed", "refusals-suppressed"].contains(&r["status"].as_str().unwrap()))
        .map(|r| (r["phase"].as_str().unwrap().to_string(), r["status"].as_str().unwrap().to_string()))
        .collect()
}

pub fn phases(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(p, s)| (p.to_string(), s.to_string())).collect()
}
