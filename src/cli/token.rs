//! `salve token verify`: what a downstream service runs (or does with the
//! library's `credentials::verify_token`) to check a token salve minted.

use super::artifact::load_trust;
use super::{DataDirArg, Exit, refused};
use salve::store::JobStore as _;
use std::path::PathBuf;
use std::time::SystemTime;

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Check a minted token: a trusted runner key's signature, the audience,
    /// the expiry, and that its lease was not revoked. Prints its claims.
    Verify(VerifyArgs),
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The token (v4.public....)
    token: String,
    /// The audience the token must be for (the service checking it)
    #[arg(long)]
    audience: String,
    /// The trust store holding the runner keys [default: DATA_DIR/trust.toml]
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    #[command(flatten)]
    data_dir: DataDirArg,
}

pub fn main(command: TokenCommand) -> anyhow::Result<Exit> {
    match command {
        TokenCommand::Verify(args) => {
            let trust = load_trust(args.trust.as_deref(), &args.data_dir)?;
            let claims = salve::credentials::verify_token(&args.token, &trust, &args.audience, SystemTime::now())
                .map_err(refused)?;
            // A token outlives nothing it was minted for: once its job ends,
            // the runner records the lease as revoked.
            let layout = args.data_dir.layout()?;
            if layout.store().exists() {
                let store = salve::store::SqliteStore::open(layout.root())?;
                if store.lease_revoked(&claims.jti)? {
                    return Err(refused(anyhow::anyhow!(
                        "the token's lease {} was revoked: job {} has ended",
                        claims.jti,
                        claims.job
                    )));
                }
            }
            println!("{}", serde_json::to_string_pretty(&claims)?);
            Ok(Exit::Succeeded)
        }
    }
}
