//! `salve init` and `salve keygen`: keys and a trust store.

use super::{DataDirArg, Exit, refused};
use anyhow::Context as _;
use salve::keys::{PrivateKey, Role};
use salve::trust::{KeyEntry, TrustFile};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// What `init` writes to `secrets.toml` (mode 0600).
const SECRETS_TEMPLATE: &str = "\
# Credentials a grant may name. Values never reach a playbook or a log.
# Secrets can also come from the environment: SALVE_SECRET_<NAME>.
[secrets]
# lb-admin = \"...\"

# Tokens minted per job, signed by the runner key (PASETO v4.public).
[tokens]
# deploy-api = { audience = \"deploy-api\", ttl = \"5m\" }
";

/// What `init` writes to `salve.toml`.
const CONFIG_TEMPLATE: &str = "\
# salve runner config.
# Change windows per environment; an environment without windows is always open.
# Times are local to tz (an IANA zone, UTC if not given), daylight saving included.
[windows]
# prod = [{ days = [\"sat\", \"sun\"], from = \"22:00\", to = \"04:00\", tz = \"Europe/Berlin\" }]

# Blast-radius budgets, enforced by the runner whatever the playbook does.
[budgets]
jobs_per_playbook_per_hour = 20
mutations_per_job = 10000
";

/// How long the keys `init` creates are trusted.
const INIT_KEY_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
}

#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// What the key may do: author, agent, approver, runner or auditor
    #[arg(long)]
    role: Role,
    /// A name for the key (its files are NAME.key and NAME.pub)
    #[arg(long = "id", value_name = "NAME")]
    name: String,
    /// Directory to write the key files to
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

fn not_after(lifetime: Duration) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() + lifetime).to_string()
}

/// Creates a data directory with a runner key, a development author key,
/// and a trust store that trusts the author key for `dev` only.
pub fn init(args: InitArgs) -> anyhow::Result<Exit> {
    let layout = args.data_dir.layout()?;
    let dir = layout.root();
    let trust_path = layout.trust();
    if trust_path.exists() {
        return Err(refused(anyhow::anyhow!(
            "{} is already initialised ({} exists); nothing was changed",
            dir.display(),
            trust_path.display()
        )));
    }
    let keys = layout.keys();
    for dir in [&keys, &layout.root().to_path_buf()] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let runner = PrivateKey::generate("runner", Role::Runner)?;
    let author = PrivateKey::generate("dev-author", Role::Author)?;
    runner.write(&keys)?;
    author.write(&keys)?;
    let until = not_after(INIT_KEY_LIFETIME);
    let trust = TrustFile {
        keys: vec![
            KeyEntry::new(&author.public(), vec!["dev".into()], until.clone()),
            KeyEntry::new(&runner.public(), vec!["*".into()], until),
        ],
        revoked: vec![],
        signatures: vec![],
    };
    let text = format!(
        "# salve trust store: the keys this runner trusts, for which role and environments.\n\
         # `salve init` trusts its development author key for `dev` only.\n{}",
        toml::to_string(&trust)?
    );
    std::fs::write(&trust_path, text).with_context(|| format!("cannot write {}", trust_path.display()))?;
    for (path, text) in [(layout.policy(), salve::policy::DEFAULT_POLICY), (layout.config(), CONFIG_TEMPLATE)] {
        if !path.exists() {
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    let secrets = layout.secrets();
    if !secrets.exists() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&secrets)
            .and_then(|mut f| f.write_all(SECRETS_TEMPLATE.as_bytes()))
            .with_context(|| format!("cannot write {}", secrets.display()))?;
    }
    if layout.config_root() == dir {
        println!("initialised {}", dir.display());
    } else {
        println!("initialised {} (configuration) and {} (state)", layout.config_root().display(), dir.display());
    }
    println!("  runner key:     {} ({})", layout.runner_key().display(), runner.id);
    println!("  author key:     {} ({}, trusted for dev)", layout.dev_author_key().display(), author.id);
    println!("  trust store:    {}", trust_path.display());
    println!("  secrets:        {} (mode 0600)", secrets.display());
    println!("  policy:         {} (Cedar; default deny)", layout.policy().display());
    println!("  config:         {}", layout.config().display());
    println!(
        "next: salve sign --key {} --manifest playbook.toml COMPONENT.wasm -o NAME-VERSION.wasm",
        layout.dev_author_key().display()
    );
    Ok(Exit::Succeeded)
}

#[derive(clap::Args, Debug)]
pub struct TrustAddArgs {
    /// The public key file (NAME.pub, from `salve keygen`)
    public: PathBuf,
    /// An environment the key is trusted for (repeatable; "*" for all)
    #[arg(long = "environment", value_name = "ENV", required = true)]
    environments: Vec<String>,
    /// An approver group the key belongs to (repeatable; approver keys only)
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
    /// How long the key is trusted
    #[arg(long = "for", value_name = "DURATION", default_value = "365d", value_parser = humantime::parse_duration)]
    lifetime: Duration,
    /// The trust store [default: DATA_DIR/trust.toml]
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    #[command(flatten)]
    data_dir: DataDirArg,
}

#[derive(clap::Subcommand, Debug)]
pub enum TrustCommand {
    /// Trust a public key for some environments (and approver groups).
    Add(TrustAddArgs),
}

/// Adds a key to the trust store; refuses a key it already holds.
pub fn trust(command: TrustCommand) -> anyhow::Result<Exit> {
    let TrustCommand::Add(args) = command;
    let path = match &args.trust {
        Some(path) => path.clone(),
        None => args.data_dir.layout()?.trust(),
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the trust store {} (run `salve init`)", path.display()))?;
    let mut file: TrustFile = toml::from_str(&text).map_err(|e| refused(anyhow::anyhow!("{}: {e}", path.display())))?;
    let public = salve::keys::PublicKeyFile::load(&args.public).map_err(refused)?;
    if let Some(existing) = file.keys.iter().find(|k| k.id == public.id) {
        return Err(refused(anyhow::anyhow!(
            "{} already trusts key {} (as {:?}); edit the file to change its entry",
            path.display(),
            public.id,
            existing.name
        )));
    }
    if !args.groups.is_empty() && public.role != Role::Approver {
        return Err(refused(anyhow::anyhow!(
            "key {} has role {}; only approver keys have groups",
            public.id,
            public.role
        )));
    }
    let mut entry = KeyEntry::new(&public, args.environments.clone(), not_after(args.lifetime));
    entry.groups = args.groups.clone();
    file.keys.push(entry);
    salve::trust::TrustStore::from_file(file.clone()).map_err(refused)?;
    let header: String = text.lines().take_while(|l| l.starts_with('#')).map(|l| format!("{l}\n")).collect();
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, format!("{header}{}", toml::to_string(&file)?))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "trusted key {} ({}, role {}) for {:?}{}",
        public.id,
        public.name,
        public.role,
        args.environments,
        if args.groups.is_empty() { String::new() } else { format!(", groups {:?}", args.groups) }
    );
    Ok(Exit::Succeeded)
}

/// Writes a new key pair and prints the trust store entry for it.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<Exit> {
    let key = PrivateKey::generate(&args.name, args.role).map_err(refused)?;
    let (private, public) = key.write(&args.out).map_err(refused)?;
    println!("key {} ({}, role {})", key.id, key.name, key.role);
    println!("  private: {} (mode 0600; keep it secret)", private.display());
    println!("  public:  {}", public.display());
    let entry = KeyEntry::new(&key.public(), vec!["dev".into()], not_after(INIT_KEY_LIFETIME));
    println!("\nto trust it: salve trust add {} --environment ENV [--group GROUP]", public.display());
    println!("or add to trust.toml:\n\n[[keys]]\n{}", toml::to_string(&entry)?);
    Ok(Exit::Succeeded)
}
