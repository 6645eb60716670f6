//! Embedding the runner as a library: load a playbook, open a grant, run it,
//! and print the outcome.
//!
//! ```sh
//! cargo run --example embed -- playbooks/target/wasm32-wasip2/release/rotate_logs.wasm grant.toml /tmp/salve-data
//! ```

use salve::audit::AuditLog;
use salve::grant::{Grant, GrantSpec};
use salve::run::{JobContext, Runner};
use salve::sandbox::{Sandbox, SandboxConfig};
use std::path::PathBuf;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(component), Some(grant), Some(data_dir)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: embed COMPONENT.wasm GRANT.toml DATA_DIR".into());
    };

    // One sandbox (engine) per process; a playbook is compiled and checked once.
    let sandbox = Sandbox::new(SandboxConfig::default())?;
    let playbook = sandbox.load(&component.display().to_string(), &std::fs::read(&component)?)?;
    // The grant opens its directories here, and nowhere else.
    let grant = Grant::open(&GrantSpec::load(&grant)?)?;
    let runner = Runner::new(sandbox, AuditLog::open(&data_dir)?, &data_dir)?;

    let job = JobContext::new("dev", "localhost", vec![("max_bytes".into(), "1048576".into())]);
    let report = runner.run(&playbook, &grant, &job).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
