//! Embedding the runner as a library: verify a signed playbook, open its
//! grant within what its manifest declares, run it, and print the outcome.
//!
//! ```sh
//! salve init --data-dir /tmp/salve-data        # a trust store and a dev author key
//! salve sign --key /tmp/salve-data/keys/dev-author.key --manifest playbooks/rotate-logs/playbook.toml \
//!     playbooks/target/wasm32-wasip2/release/rotate_logs.wasm -o rotate-logs.wasm
//! cargo run --example embed -- rotate-logs.wasm grant.toml /tmp/salve-data
//! ```

use salve::artifact;
use salve::audit::AuditLog;
use salve::grant::{Grant, GrantSpec};
use salve::run::{JobContext, Runner};
use salve::sandbox::{Sandbox, SandboxConfig};
use salve::trust::TrustStore;
use std::path::PathBuf;
use std::time::SystemTime;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(artifact), Some(grant), Some(data_dir)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: embed ARTIFACT.wasm GRANT.toml DATA_DIR".into());
    };
    let environment = "dev";

    // The artifact's layout, every signature, each signer's trust for the
    // environment, and its manifest: all checked before anything compiles.
    let trust = TrustStore::load(&data_dir.join("trust.toml"))?;
    let verified = artifact::verify(&std::fs::read(&artifact)?, &trust, environment, SystemTime::now())?;
    let manifest = verified.manifest();

    // One sandbox (engine) per process; a playbook is compiled and checked
    // once: its exports, and imports that are exactly what it declares.
    let sandbox = Sandbox::new(SandboxConfig::default())?;
    let playbook = sandbox.load(&verified)?;
    // The grant opens its directories here, and nowhere else, and never
    // beyond what the signed manifest declares.
    let grant = Grant::open(&GrantSpec::load(&grant)?, manifest)?;
    let runner = Runner::new(sandbox, AuditLog::open(&data_dir)?, &data_dir)?;

    let job = JobContext::new(environment, "localhost", vec![("max_bytes".into(), "1048576".into())]);
    manifest.check_parameters(&job.parameters)?;
    let report = runner.run(&playbook, &grant, &job).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
