//! The control-plane commands as clients of a `salve serve` (`--server URL`
//! or `SALVE_SERVER`): writes send the signed object (envelope, vote);
//! reads are signed with `--key` (RFC 9421, [`salve::serve::signature`]).

use super::{faulted, refused};
use anyhow::Context as _;
use salve::fault::Fault;
use salve::keys::PrivateKey;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Where the control plane is, when it is not the local data directory.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArg {
    /// Talk to the `salve serve` at URL instead of the local data directory
    #[arg(long, value_name = "URL", env = "SALVE_SERVER")]
    pub server: Option<url::Url>,
    /// Trust this CA certificate (PEM) for the server's TLS, besides the
    /// usual roots
    #[arg(long, value_name = "FILE", env = "SALVE_SERVER_CA")]
    pub server_ca: Option<std::path::PathBuf>,
    /// For a server that asks for mutual TLS: this client's certificate
    /// chain and its private key, in one PEM file (mode 0600)
    #[arg(long, value_name = "FILE", env = "SALVE_CLIENT_IDENTITY")]
    pub client_identity: Option<std::path::PathBuf>,
}

pub struct Remote {
    http: reqwest::Client,
    base: url::Url,
}

/// Runs `future` to its end from a synchronous command (the CLI runs in a
/// multi-threaded runtime).
fn block<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

impl Remote {
    /// The server `arg` names; `None` for the local data directory.
    pub fn of(arg: &ServerArg) -> anyhow::Result<Option<Remote>> {
        let Some(base) = &arg.server else { return Ok(None) };
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(refused(anyhow::anyhow!("--server {base} is not an http(s) URL with a host")));
        }
        let mut http =
            reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).timeout(Duration::from_secs(60));
        if let Some(ca) = &arg.server_ca {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| refused(anyhow::anyhow!("{} is not a PEM certificate: {e}", ca.display())))?;
            http = http.add_root_certificate(cert);
        }
        if let Some(path) = &arg.client_identity {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(refused(anyhow::anyhow!(
                    "{} holds a private key and is readable by others (mode {:o}): run `chmod 600` on it",
                    path.display(),
                    mode & 0o7777
                )));
            }
            let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                refused(anyhow::anyhow!("{} is not a PEM certificate chain and private key: {e}", path.display()))
            })?;
            http = http.identity(identity);
        }
        let http = http.build().context("cannot build the HTTP client")?;
        Ok(Some(Remote { http, base: base.clone() }))
    }

    fn url(&self, path: &str) -> anyhow::Result<String> {
        Ok(self.base.join(path).with_context(|| format!("{path} under {}", self.base))?.to_string())
    }

    /// A read signed by the key at `key`.
    pub fn get(&self, path: &str, key: Option<&Path>) -> anyhow::Result<Vec<u8>> {
        let key = key.ok_or_else(|| {
            refused(anyhow::anyhow!("reading from --server needs --key KEY: an agent, approver or auditor key"))
        })?;
        let key = PrivateKey::load(key).map_err(refused)?;
        let url = self.url(path)?;
        let mut request = self.http.get(&url);
        for (name, value) in salve::serve::signature::sign("GET", &url, b"", &key, SystemTime::now())? {
            request = request.header(name, value);
        }
        self.send(request, &url)
    }

    /// Posts a signed object as JSON.
    pub fn post(&self, path: &str, body: &impl serde::Serialize) -> anyhow::Result<Vec<u8>> {
        let url = self.url(path)?;
        let request = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body)?);
        self.send(request, &url)
    }

    fn send(&self, request: reqwest::RequestBuilder, url: &str) -> anyhow::Result<Vec<u8>> {
        let (status, body) = block(async move {
            let response = request.send().await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.bytes().await?))
        })
        .map_err(|e| {
            faulted(Fault::Infrastructure, anyhow::anyhow!("cannot reach {url}: {e}; is `salve serve` running there?"))
        })?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let error = &error["error"];
        let message =
            error["message"].as_str().map_or_else(|| String::from_utf8_lossy(&body).into_owned(), str::to_string);
        let fault = match status.as_u16() {
            400 | 413 => Fault::Input,
            401 | 403 | 404 => Fault::Refused,
            409 => Fault::Conflict,
            422 => Fault::Tampered,
            _ => Fault::Infrastructure,
        };
        let check = error["check"].as_str().unwrap_or("?");
        Err(faulted(fault, anyhow::anyhow!("the server refused ({status}, {check}): {message}")))
    }
}

/// The server's JSON answer, printed as is.
pub fn print_json(bytes: &[u8]) -> anyhow::Result<()> {
    let value: serde_json::Value = serde_json::from_slice(bytes).context("the server's answer is not JSON")?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}
