//! What an auditor runs on an artifact: `salve verify`, `salve inspect`.

use super::{DataDirArg, Exit, refused};
use anyhow::Context as _;
use salve::artifact::{self, Artifact, ArtifactError, Manifest, VersionFloor};
use salve::keys::Role;
use salve::sandbox::{Catalog, Sandbox, SandboxConfig};
use salve::trust::TrustStore;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The signed artifact
    artifact: PathBuf,
    /// The trust store [default: DATA_DIR/trust.toml]
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    /// The environment it would run in
    #[arg(long, default_value = "dev")]
    environment: String,
    /// Also refuse a version lower than one that already ran here
    #[command(flatten)]
    data_dir: DataDirArg,
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The artifact (or a bare component)
    artifact: PathBuf,
    /// The trust store to judge the signatures by [default: DATA_DIR/trust.toml, if present]
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    /// The environment to judge trust for
    #[arg(long, default_value = "dev")]
    environment: String,
    #[command(flatten)]
    data_dir: DataDirArg,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

/// Loads the trust store named, or the data directory's.
pub fn load_trust(trust: Option<&Path>, data_dir: &DataDirArg) -> anyhow::Result<TrustStore> {
    let path = match trust {
        Some(path) => path.to_path_buf(),
        None => data_dir.layout()?.trust(),
    };
    if !path.exists() {
        return Err(refused(anyhow::anyhow!(
            "no trust store at {}: run `salve init` or pass --trust FILE",
            path.display()
        )));
    }
    TrustStore::load(&path).map_err(refused)
}

/// Checks an artifact as the runner would before running it.
pub fn verify(args: VerifyArgs) -> anyhow::Result<Exit> {
    let trust = load_trust(args.trust.as_deref(), &args.data_dir)?;
    let bytes = std::fs::read(&args.artifact)
        .with_context(|| format!("cannot read {}", args.artifact.display()))
        .map_err(refused)?;
    let sandbox = Sandbox::new(SandboxConfig { pooling: false, ..SandboxConfig::default() })?;
    let catalog = Catalog::new(sandbox);
    let playbook = catalog.load(&bytes, &trust, &args.environment, SystemTime::now()).map_err(refused)?;
    let manifest = playbook.manifest().expect("a verified artifact has a manifest");
    let layout = args.data_dir.layout()?;
    if layout.versions().exists() {
        VersionFloor::new(layout.root()).admit(&manifest.name, &manifest.version, false).map_err(refused)?;
    }
    println!("ok: {} {} may run in {}", manifest.name, manifest.version, args.environment);
    for id in playbook.signers() {
        let name = trust.key(id).map_or("?", |k| k.entry.name.as_str());
        println!("  signed by {id} ({name})");
    }
    println!("  digest {}", playbook.digest());
    Ok(Exit::Succeeded)
}

/// How one signature stands against the trust store.
fn signature_status(
    trust: Option<&TrustStore>,
    key_id: &str,
    signature: &[u8; 64],
    message: &[u8],
    environment: &str,
) -> (String, String, String) {
    let Some(trust) = trust else {
        return ("?".into(), "unverified".into(), "no trust store to check it against".into());
    };
    let signer = trust.key(key_id).map_or("?".to_string(), |k| k.entry.name.clone());
    if trust.is_revoked(key_id) {
        let detail = trust.check(key_id, Role::Author, environment, SystemTime::now()).err().map(|e| e.to_string());
        return (signer, "revoked".into(), detail.unwrap_or_default());
    }
    let Some(key) = trust.key(key_id) else {
        return (signer, "unknown-key".into(), "the key is not in the trust store".into());
    };
    let valid = key.public.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature)).is_ok();
    if !valid {
        return (signer, "invalid".into(), "the signature does not verify: the artifact was changed".into());
    }
    match trust.check(key_id, Role::Author, environment, SystemTime::now()) {
        Ok(_) => (signer, "trusted".into(), format!("valid; an author key trusted for {environment}")),
        Err(e) => (signer, "untrusted".into(), format!("valid signature, but {e}")),
    }
}

/// Shows what an artifact is and what it may do: manifest, declared
/// capabilities, real imports and exports, digest, signatures.
pub fn inspect(args: InspectArgs) -> anyhow::Result<Exit> {
    let bytes = std::fs::read(&args.artifact)
        .with_context(|| format!("cannot read {}", args.artifact.display()))
        .map_err(refused)?;
    let trust = match &args.trust {
        Some(path) => Some(TrustStore::load(path).map_err(refused)?),
        None => args
            .data_dir
            .layout()
            .ok()
            .map(|d| d.trust())
            .filter(|p| p.exists())
            .map(|p| TrustStore::load(&p))
            .transpose()
            .map_err(refused)?,
    };
    let (component, manifest, signatures) = match Artifact::parse(&bytes) {
        Ok(parsed) => {
            let message = parsed.signed_message();
            let signatures: Vec<Value> = parsed
                .signatures
                .iter()
                .map(|s| {
                    let (signer, status, detail) =
                        signature_status(trust.as_ref(), &s.key_id, &s.signature, &message, &args.environment);
                    json!({ "key_id": s.key_id, "signer": signer, "status": status, "detail": detail })
                })
                .collect();
            (parsed.component, Some(Manifest::parse(parsed.manifest_text).map_err(refused)?), signatures)
        }
        Err(ArtifactError::NoManifest) => (&bytes[..], None, vec![]),
        Err(e) => return Err(refused(e)),
    };
    let sandbox = Sandbox::new(SandboxConfig { pooling: false, ..SandboxConfig::default() })?;
    let (imports, exports, load_error) = match sandbox.interfaces(component) {
        Ok(found) => {
            // Would the runner load it? (Compiling runs nothing.)
            let refused = sandbox.load_unverified("inspect", component).and_then(|playbook| match &manifest {
                Some(m) => playbook.imports().check_declared(m),
                None => Ok(()),
            });
            (found.imports, found.exports, refused.err().map(|e| e.to_string()))
        }
        Err(e) => (vec![], vec![], Some(e.to_string())),
    };
    let mut report = json!({
        "digest": artifact::digest(&bytes),
        "component_digest": artifact::digest(component),
        "signed": manifest.is_some(),
        "imports": imports,
        "exports": exports,
        "signatures": signatures,
    });
    if let Some(error) = &load_error {
        report["load_error"] = json!(error);
    }
    if let Some(manifest) = &manifest {
        let fields = serde_json::to_value(manifest)?;
        for (key, value) in fields.as_object().into_iter().flatten() {
            report[key] = value.clone();
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_inspection(&report, manifest.as_ref());
    }
    Ok(Exit::Succeeded)
}

fn print_inspection(report: &Value, manifest: Option<&Manifest>) {
    let list = |value: &Value| -> Vec<String> {
        value.as_array().into_iter().flatten().map(|v| v.as_str().unwrap_or_default().to_string()).collect()
    };
    match manifest {
        Some(m) => {
            println!("{} {}", m.name, m.version);
            println!("  owner:          {}", m.owner);
            println!("  purpose:        {}", m.purpose);
            println!("  risk class:     {}", report["risk_class"].as_str().unwrap_or_default());
            println!("  reversibility:  {}", report["reversibility"].as_str().unwrap_or_default());
            println!("  capabilities:");
            if m.capabilities.fs.is_empty() {
                println!("    (none beyond log and journal)");
            }
            for fs in &m.capabilities.fs {
                println!(
                    "    fs {} ({}) in {}",
                    fs.name,
                    fs.access,
                    fs.paths.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
                );
            }
            println!("  parameters:");
            for p in &m.parameters {
                let mut bounds = Vec::new();
                if let (Some(min), Some(max)) = (p.min, p.max) {
                    bounds.push(format!("{min}..={max}"));
                }
                if let Some(pattern) = &p.pattern {
                    bounds.push(format!("matching {pattern:?}"));
                }
                if let Some(values) = &p.values {
                    bounds.push(format!("one of {values:?}"));
                }
                let required = if p.required { "required" } else { "optional" };
                println!("    {} ({}, {required}) {}", p.name, p.kind, bounds.join(" "));
            }
        }
        None => println!("an unsigned component: it carries no manifest and no signature"),
    }
    println!("  imports:        {}", list(&report["imports"]).join(", "));
    println!("  exports:        {}", list(&report["exports"]).join(", "));
    if let Some(error) = report["load_error"].as_str() {
        println!("  DOES NOT LOAD:  {error}");
    }
    println!("  digest:         {}", report["digest"].as_str().unwrap_or_default());
    for (i, s) in report["signatures"].as_array().into_iter().flatten().enumerate() {
        println!(
            "  signature {}:    key {} ({}): {} ({})",
            i + 1,
            s["key_id"].as_str().unwrap_or_default(),
            s["signer"].as_str().unwrap_or_default(),
            s["status"].as_str().unwrap_or_default(),
            s["detail"].as_str().unwrap_or_default()
        );
    }
}
