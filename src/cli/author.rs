//! What a platform engineer runs: `salve new`, `salve build`, `salve sign`.

use super::{Exit, refused};
use anyhow::{Context as _, anyhow};
use salve::artifact::{self, Artifact, ArtifactError, Manifest};
use salve::keys::PrivateKey;
use salve::sandbox::{Sandbox, SandboxConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The contract, as shipped with this salve, for `salve new`.
const WIT_FILES: [(&str, &str); 8] = [
    ("types.wit", include_str!("../../wit/types.wit")),
    ("playbook.wit", include_str!("../../wit/playbook.wit")),
    ("log.wit", include_str!("../../wit/log.wit")),
    ("journal.wit", include_str!("../../wit/journal.wit")),
    ("fs.wit", include_str!("../../wit/fs.wit")),
    ("exec.wit", include_str!("../../wit/exec.wit")),
    ("http.wit", include_str!("../../wit/http.wit")),
    ("world.wit", include_str!("../../wit/world.wit")),
];

#[derive(clap::Args, Debug)]
pub struct NewArgs {
    /// The playbook's name: lowercase letters, digits and '-'
    name: String,
    /// Where to create it [default: the current directory]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The owner written into playbook.toml
    #[arg(long, default_value = "platform-team")]
    owner: String,
}

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// The playbook crate's directory
    dir: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct SignArgs {
    /// The author key to sign with
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// The playbook's manifest (needed for a bare component; for a signed
    /// artifact, must match the one it carries)
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// A bare component, or an artifact to co-sign
    input: PathBuf,
    /// Where to write the artifact [default: NAME-VERSION.wasm]
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Creates a playbook crate that builds: the contract's WIT, a manifest,
/// and a small reversible playbook to start from.
pub fn new(args: NewArgs) -> anyhow::Result<Exit> {
    let name = &args.name;
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.as_bytes()[0].is_ascii_lowercase();
    if !valid {
        return Err(refused(anyhow!("{name:?} is not a playbook name: use lowercase letters, digits and '-'")));
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(".")).join(name);
    if dir.exists() {
        return Err(refused(anyhow!("{} already exists; nothing was changed", dir.display())));
    }
    let fill = |template: &str| {
        template.replace("{name}", name).replace("{crate}", &name.replace('-', "_")).replace("{owner}", &args.owner)
    };
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::create_dir_all(dir.join("wit"))?;
    std::fs::write(dir.join("Cargo.toml"), fill(include_str!("template/Cargo.toml.in")))?;
    std::fs::write(dir.join("playbook.toml"), fill(include_str!("template/playbook.toml.in")))?;
    std::fs::write(dir.join("src/lib.rs"), fill(include_str!("template/lib.rs.in")))?;
    std::fs::write(dir.join(".gitignore"), "/target\n")?;
    for (file, text) in WIT_FILES {
        std::fs::write(dir.join("wit").join(file), text)?;
    }
    println!("created {}", dir.display());
    println!("next: salve build {}", dir.display());
    Ok(Exit::Succeeded)
}

/// Whether rustc has the wasm32-wasip2 standard library.
fn wasm_target_installed() -> anyhow::Result<bool> {
    let out = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
        .context("cannot run rustc; is Rust installed?")?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(out.status.success() && dir.is_dir())
}

/// Builds a playbook crate for wasm32-wasip2 and prints the component's path.
/// Installs nothing: a missing target is an error that says how to add it.
pub fn build(args: BuildArgs) -> anyhow::Result<Exit> {
    let manifest_path = args.dir.join("Cargo.toml");
    if !manifest_path.is_file() {
        return Err(refused(anyhow!("{} has no Cargo.toml; is it a playbook crate?", args.dir.display())));
    }
    if !wasm_target_installed()? {
        return Err(refused(anyhow!(
            "the wasm32-wasip2 target is not installed; add it with `rustup target add wasm32-wasip2` \
             (salve build installs nothing itself)"
        )));
    }
    let status = Command::new("cargo")
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(&manifest_path)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        return Err(refused(anyhow!("cargo build failed for {}", args.dir.display())));
    }
    let metadata = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
        .arg(&manifest_path)
        .output()
        .context("cannot run cargo metadata")?;
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout).context("cargo metadata")?;
    let wanted = std::fs::canonicalize(&manifest_path)?;
    let package = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["manifest_path"].as_str().is_some_and(|m| Path::new(m) == wanted))
        .ok_or_else(|| anyhow!("cargo metadata does not list {}", wanted.display()))?;
    let lib = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "cdylib")))
        .ok_or_else(|| refused(anyhow!("the crate has no cdylib target; a playbook is `crate-type = [\"cdylib\"]`")))?;
    let target_dir = PathBuf::from(metadata["target_directory"].as_str().unwrap_or("target"));
    let file = format!("{}.wasm", lib["name"].as_str().unwrap_or_default().replace('-', "_"));
    let component = target_dir.join("wasm32-wasip2/release").join(file);
    println!("{}", component.display());
    Ok(Exit::Succeeded)
}

/// Signs a component with its manifest into one artifact, or adds a
/// co-signature to an artifact.
pub fn sign(args: SignArgs) -> anyhow::Result<Exit> {
    let key = PrivateKey::load(&args.key).map_err(refused)?;
    let input =
        std::fs::read(&args.input).with_context(|| format!("cannot read {}", args.input.display())).map_err(refused)?;
    let manifest_text = match &args.manifest {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))
                .map_err(refused)?,
        ),
        None => None,
    };
    // A bare component: check its real imports against the manifest now,
    // rather than let the artifact be refused where it runs.
    if let (Err(ArtifactError::NoManifest), Some(text)) = (Artifact::parse(&input), &manifest_text) {
        let manifest = Manifest::parse(text).map_err(refused)?;
        let sandbox = Sandbox::new(SandboxConfig { pooling: false, ..SandboxConfig::default() })?;
        let playbook = sandbox.load_unverified(&manifest.name, &input).map_err(refused)?;
        playbook.imports().check_declared(&manifest).map_err(refused)?;
    }
    let signed = artifact::sign(&input, manifest_text.as_deref(), &key).map_err(refused)?;
    let parsed = Artifact::parse(&signed)?;
    let manifest = Manifest::parse(parsed.manifest_text)?;
    let output = args.output.unwrap_or_else(|| PathBuf::from(format!("{}-{}.wasm", manifest.name, manifest.version)));
    let temp = output.with_extension("wasm.tmp");
    std::fs::write(&temp, &signed).with_context(|| format!("cannot write {}", temp.display()))?;
    std::fs::rename(&temp, &output).with_context(|| format!("cannot write {}", output.display()))?;
    println!(
        "signed {} {} with key {} ({}): {} ({} signature(s))",
        manifest.name,
        manifest.version,
        key.id,
        key.name,
        output.display(),
        parsed.signatures.len()
    );
    println!("  digest {}", artifact::digest(&signed));
    Ok(Exit::Succeeded)
}
