//! `salve-bench`: what salve costs, measured on this machine, against the
//! targets the project holds it to. Prints a table and writes JSON
//! (`bench/run.sh` runs it and publishes the figures).
//!
//! Its own binary, not a `salve` command: it measures the library through
//! its public API only, so the product binary does not carry it and the
//! library's internals stay private. The whole-process figures run the
//! `salve` binary built next to it (`--salve` to name another).
//!
//! Every figure runs the real pipeline (signed artifacts, the trust store,
//! the pooling allocator, a durable audit log on the data disk) unless its
//! note says otherwise. Times are wall-clock; p50/p99 over the samples.

#![forbid(unsafe_code)]

mod groups;
mod serve;

use anyhow::{Context as _, anyhow};
use salve::artifact;
use salve::audit::AuditLog;
use salve::keys::{PrivateKey, Role};
use salve::run::Runner;
use salve::sandbox::Sandbox;
use salve::trust::{KeyEntry, TrustFile, TrustStore};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(clap::Parser, Debug)]
#[command(name = "salve-bench", version, about = "Measure what salve costs on this machine; print a table, write JSON")]
struct BenchArgs {
    /// Where the playbooks were built for wasm32-wasip2
    #[arg(long, value_name = "DIR", default_value = "playbooks/target/wasm32-wasip2/release")]
    playbooks: PathBuf,
    /// Where to write the results as JSON
    #[arg(long, value_name = "FILE", default_value = "bench/results.json")]
    out: PathBuf,
    /// Fewer samples: a smoke run, not figures to publish
    #[arg(long)]
    quick: bool,
    /// Run only the groups named (artifacts, instantiation, calls, job,
    /// throughput, memory, process, merkle, evidence, serve), e.g. to
    /// profile one
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The salve binary the whole-process figures run [default: salve next
    /// to this binary]
    #[arg(long, value_name = "FILE")]
    salve: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Figure {
    name: String,
    unit: &'static str,
    p50: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99: Option<f64>,
    samples: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    met: Option<bool>,
    note: String,
}

/// Whether lower or higher is better for a target.
enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

struct Bench {
    figures: Vec<Figure>,
    dir: tempfile::TempDir,
    trust: TrustStore,
    key: PrivateKey,
    runner_key: Arc<PrivateKey>,
    playbooks: PathBuf,
    scale: usize,
    salve: PathBuf,
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

impl Bench {
    fn record(&mut self, name: &str, unit: &'static str, mut samples: Vec<f64>, goal: Option<Goal>, note: &str) {
        samples.sort_by(f64::total_cmp);
        let p50 = percentile(&samples, 0.5);
        let p99 = (samples.len() > 1).then(|| percentile(&samples, 0.99));
        let (target, met) = match goal {
            Some(Goal::AtMost(t)) => (Some(format!("<= {t} {unit}")), Some(p50 <= t)),
            Some(Goal::AtLeast(t)) => (Some(format!(">= {t} {unit}")), Some(p50 >= t)),
            None => (None, None),
        };
        eprintln!("  {name}: p50 {p50:.1} {unit}");
        self.figures.push(Figure {
            name: name.into(),
            unit,
            p50,
            p99,
            samples: samples.len(),
            target,
            met,
            note: note.into(),
        });
    }

    fn component(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.playbooks.join(format!("{}.wasm", name.replace('-', "_")));
        std::fs::read(&path).with_context(|| {
            format!(
                "cannot read {}: build the playbooks first (cargo build --release --target wasm32-wasip2 \
                 --manifest-path playbooks/Cargo.toml)",
                path.display()
            )
        })
    }

    /// A playbook's component signed with its manifest by the bench's key.
    fn artifact(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let manifest = ["playbooks", "playbooks/tests"]
            .iter()
            .map(|dir| Path::new(dir).join(name).join("playbook.toml"))
            .find(|p| p.exists())
            .ok_or_else(|| anyhow!("no playbook.toml for {name}: run salve-bench from the repository's root"))?;
        let text = std::fs::read_to_string(manifest)?;
        Ok(artifact::sign(&self.component(name)?, Some(&text), &self.key)?)
    }

    fn runner(&self, sandbox: &Sandbox, data: &Path) -> anyhow::Result<Runner> {
        let audit = AuditLog::open_keyed(data, Arc::clone(&self.runner_key))?;
        Ok(Runner::new(sandbox.clone(), audit, data)?.with_seal_key(Arc::clone(&self.runner_key))?)
    }

    fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn n(&self, full: usize) -> usize {
        (full / self.scale).max(3)
    }
}

fn conditions() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    serde_json::json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": kernel,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "allocator": "system (glibc malloc); wasm instances: pooling allocator unless noted",
        "salve": env!("CARGO_PKG_VERSION"),
        "when": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SALVE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = <BenchArgs as clap::Parser>::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("salve-bench: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(bench(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("salve-bench: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// The `salve` binary built next to this one.
fn sibling_salve() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.with_file_name("salve"))
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("salve-bench: this is a debug build; figures are only meaningful from `cargo build --release`");
    }
    let key = PrivateKey::generate("bench-author", Role::Author)?;
    let runner_key = Arc::new(PrivateKey::generate("bench-runner", Role::Runner)?);
    let until = "2099-01-01T00:00:00Z".to_string();
    let trust_file = TrustFile {
        keys: vec![
            KeyEntry::new(&key.public(), vec!["dev".into()], until.clone()),
            KeyEntry::new(&runner_key.public(), vec!["*".into()], until),
        ],
        revoked: vec![],
        signatures: vec![],
    };
    let mut b = Bench {
        figures: Vec::new(),
        dir: tempfile::Builder::new().prefix("salve-bench-").tempdir_in(if Path::new("target").is_dir() {
            "target"
        } else {
            "."
        })?,
        trust: TrustStore::from_file(trust_file.clone())?,
        key,
        runner_key,
        playbooks: args.playbooks.clone(),
        scale: if args.quick { 10 } else { 1 },
        salve: match &args.salve {
            Some(path) => path.clone(),
            None => sibling_salve()?,
        },
    };
    eprintln!("salve-bench: measuring (this takes a minute or two)");

    let wanted = |group: &str| args.only.is_empty() || args.only.iter().any(|g| g == group);
    if wanted("artifacts") {
        groups::artifacts(&mut b)?;
    }
    if wanted("instantiation") {
        groups::instantiation(&mut b).await?;
    }
    if wanted("calls") {
        groups::host_calls(&mut b).await?;
    }
    if wanted("job") {
        groups::per_job(&mut b).await?;
    }
    if wanted("throughput") {
        groups::throughput(&mut b).await?;
    }
    if wanted("memory") {
        groups::parked(&mut b).await?;
    }
    if wanted("process") {
        groups::whole_process(&mut b, &trust_file)?;
    }
    if wanted("merkle") {
        groups::merkle(&mut b)?;
    }
    if wanted("evidence") {
        groups::evidence(&mut b).await?;
    }
    if wanted("serve") {
        serve::serve(&mut b).await?;
    }

    print_table(&b.figures);
    let report = serde_json::json!({ "conditions": conditions(), "figures": b.figures });
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")?;
    eprintln!("salve-bench: wrote {}", args.out.display());
    Ok(())
}

fn print_table(figures: &[Figure]) {
    let width = figures.iter().map(|f| f.name.chars().count()).max().unwrap_or(10);
    println!("{:<width$}  {:>12}  {:>12}  {:>14}", "figure", "p50", "p99", "target");
    for f in figures {
        let fmt = |v: f64| match f.unit {
            "jobs/s" => format!("{v:.0} {}", f.unit),
            _ if v >= 100.0 => format!("{v:.0} {}", f.unit),
            _ => format!("{v:.1} {}", f.unit),
        };
        let p99 = f.p99.map(fmt).unwrap_or_default();
        let status = match f.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        println!(
            "{:<width$}  {:>12}  {:>12}  {:>14}  {status}",
            f.name,
            fmt(f.p50),
            p99,
            f.target.as_deref().unwrap_or("")
        );
    }
}
