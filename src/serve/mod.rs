//! `salve serve`: the control plane as a network service, and the worker
//! in the same process.
//!
//! ```text
//! agent ──POST /v1/jobs (signed envelope)──────────▶ ControlPlane::submit ─▶ store
//! approver ──POST /v1/jobs/{id}/votes (signed vote)─▶ ControlPlane::record_vote
//! anyone trusted ──GET … (RFC 9421 signature)──────▶ review, list, evidence, checkpoint
//! worker (this process, the audit log's one writer) ─▶ plan, apply, verify, roll back
//! ```
//!
//! Writes carry their own signatures (the job envelope, the vote), so
//! they need no other. Every other request is signed with a key of the
//! trust store in the profile of [`signature`]; what a key sees follows
//! its role: an agent its own jobs, an approver the jobs of its
//! environments and groups, an auditor everything. Nothing but the two
//! health checks answers an unsigned request.
//!
//! The accept loop is hyper's, so that a slow client cannot hold a
//! connection open before its headers ([`Limits::header_timeout`]) or its
//! body ([`Limits::body_timeout`]), nor send more than [`Limits::body`].
//! TLS (rustls, from a certificate chain and key in PEM files) is served
//! on any address; plain HTTP on loopback only.
//!
//! # Errors
//! Every refusal is JSON, `{"error": {"code", "check", "message"}}`: see
//! [`ApiError`].

mod api;
mod error;
mod metrics;
pub mod openapi;
mod quota;
pub mod signature;
pub mod webhooks;

pub use error::ApiError;
pub use metrics::Metrics;

use crate::audit::AuditLog;
use crate::control::ControlPlane;
use crate::fault::Classify;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// The bounds every request is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest body taken (a job envelope, a vote).
    pub body: usize,
    /// How long a client may take to send its request's headers.
    pub header_timeout: Duration,
    /// How long a client may take to send its body.
    pub body_timeout: Duration,
    /// How long open connections get to finish at shutdown.
    pub drain: Duration,
    /// How many jobs may wait (submitted, waiting for approval, approved)
    /// before a submission is answered 429.
    pub queue: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            body: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            drain: Duration::from_secs(10),
            queue: 10_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error(
        "salve serves plain HTTP on loopback only, and {addr} is not: give --tls-cert and --tls-key, or listen on 127.0.0.1 or ::1"
    )]
    NotLoopback { addr: SocketAddr },
    #[error("TLS: {path}: {reason}")]
    Tls { path: std::path::PathBuf, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(
        "{path} is writable by {who} (mode {mode:o}): whoever can write it can change what salve trusts or allows. Run `chmod go-w {path}`"
    )]
    Writable { path: std::path::PathBuf, who: &'static str, mode: u32 },
    #[error("cannot read the mode of {path}: {source}")]
    Mode { path: std::path::PathBuf, source: std::io::Error },
}

impl Classify for ServeError {
    fn fault(&self) -> crate::fault::Fault {
        match self {
            ServeError::NotLoopback { .. } | ServeError::Writable { .. } | ServeError::Tls { .. } => {
                crate::fault::Fault::Input
            }
            ServeError::Listen { .. } | ServeError::Mode { .. } => crate::fault::Fault::Infrastructure,
        }
    }
}

/// What every request handler shares.
pub struct Shared {
    /// The API's own view of the control plane (the worker holds another);
    /// reloaded with it, so a revoked key counts from the next request on.
    pub control: RwLock<ControlPlane>,
    /// The worker's audit log, for its latest checkpoint.
    pub audit: AuditLog,
    pub nonces: signature::Nonces,
    pub metrics: Metrics,
    pub limits: Limits,
    /// Wakes the worker when a job or a vote arrives.
    pub work: Notify,
    /// Wakes the event streams of a job when its state changes (worker
    /// steps, votes), rather than have them poll the store.
    moves: Arc<Moves>,
    /// What each key holds for long (event streams, evidence exports).
    quotas: Arc<quota::Quotas>,
    /// Set once the worker has recovered what a stopped runner left, and
    /// cleared when it stops.
    pub ready: AtomicBool,
    /// Set when the server stops: event streams end.
    stopping: AtomicBool,
    scheme: &'static str,
    /// The origin clients address (`https://runner.example:8750`): when
    /// set, signatures are checked against it, not against the request's
    /// Host header, so a request signed for another server does not verify
    /// here.
    origin: Option<String>,
}

impl Shared {
    /// `tls`: whether requests arrive over TLS (their target URI is then
    /// `https://`).
    pub fn new(control: ControlPlane, audit: AuditLog, limits: Limits, tls: bool) -> Arc<Shared> {
        Arc::new(Shared {
            control: RwLock::new(control),
            audit,
            nonces: signature::Nonces::default(),
            metrics: Metrics::default(),
            limits,
            work: Notify::new(),
            moves: Arc::default(),
            quotas: Arc::default(),
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            scheme: if tls { "https" } else { "http" },
            origin: None,
        })
    }

    /// [`Shared::new`], checking signatures against `origin` (scheme, host
    /// and port of the URL clients use).
    pub fn with_origin(
        control: ControlPlane,
        audit: AuditLog,
        limits: Limits,
        tls: bool,
        origin: Option<&url::Url>,
    ) -> Arc<Shared> {
        let mut shared = Shared::new(control, audit, limits, tls);
        Arc::get_mut(&mut shared).expect("just made").origin = origin.map(|url| url.origin().ascii_serialization());
        shared
    }

    /// Job `job`'s state changed: its open event streams look again.
    pub fn moved(&self, job: &str) {
        self.moves.moved(job);
    }

    /// What wakes an event stream of `job` when the job moves.
    pub(crate) fn watch(&self, job: &str) -> Watch {
        self.moves.watch(job)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}

/// One wake-up per job that an event stream follows: a change wakes the
/// streams of its job, not every stream (at thousands of changes a
/// second, each stream would look at the store at each).
#[derive(Default)]
struct Moves(std::sync::Mutex<HashMap<String, tokio::sync::watch::Sender<()>>>);

impl Moves {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, tokio::sync::watch::Sender<()>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What wakes a stream of `job`; the job is followed while one is held.
    fn watch(self: &Arc<Moves>, job: &str) -> Watch {
        let mut moves = self.lock();
        let receiver = moves.entry(job.to_string()).or_insert_with(|| tokio::sync::watch::Sender::new(())).subscribe();
        Watch { moves: Arc::clone(self), job: job.to_string(), receiver: Some(receiver) }
    }

    fn moved(&self, job: &str) {
        if let Some(sender) = self.lock().get(job) {
            sender.send_replace(());
        }
    }

    fn all_moved(&self) {
        self.lock().values().for_each(|sender| {
            sender.send_replace(());
        });
    }
}

/// A stream's wake-up for its job (see [`Moves`]).
pub(crate) struct Watch {
    moves: Arc<Moves>,
    job: String,
    receiver: Option<tokio::sync::watch::Receiver<()>>,
}

impl Watch {
    /// Returns when the job moved since the last call (or since the watch
    /// was taken).
    pub(crate) async fn changed(&mut self) {
        match &mut self.receiver {
            Some(receiver) => {
                let _ = receiver.changed().await;
            }
            None => std::future::pending().await,
        }
    }
}

impl Drop for Watch {
    /// The last stream of a job gone, its wake-up goes too.
    fn drop(&mut self) {
        let mut moves = self.moves.lock();
        drop(self.receiver.take());
        if moves.get(&self.job).is_some_and(|sender| sender.receiver_count() == 0) {
            moves.remove(&self.job);
        }
    }
}

/// Refuses configuration that another user could change: each file of
/// `files` that exists, and the directory that holds it, must not be
/// writable by group or others (a directory with the sticky bit may be).
pub fn check_config_modes(files: &[&std::path::Path]) -> Result<(), ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let writable = |path: &std::path::Path, directory: bool| -> Result<(), ServeError> {
        let mode = std::fs::metadata(path)
            .map_err(|source| ServeError::Mode { path: path.to_path_buf(), source })?
            .permissions()
            .mode();
        let sticky = directory && mode & 0o1000 != 0;
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            _ if sticky => return Ok(()),
            (true, true) => "group and others",
            (true, false) => "its group",
            (false, true) => "others",
            (false, false) => return Ok(()),
        };
        Err(ServeError::Writable { path: path.to_path_buf(), who, mode: mode & 0o7777 })
    };
    for file in files {
        // One salve may not even look at is refused, not taken for absent.
        let there = file.try_exists().map_err(|source| ServeError::Mode { path: file.to_path_buf(), source })?;
        if !there {
            continue;
        }
        writable(file, false)?;
        if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
            writable(parent, true)?;
        }
    }
    Ok(())
}

/// The TLS configuration of a certificate chain and its key (PEM files;
/// the key must be readable by its owner only). HTTP/1.1 over TLS 1.2 or
/// 1.3, rustls's safe defaults. With `client_ca` (PEM certificates), every
/// client must present a certificate that chains to one of them (mutual
/// TLS), or the handshake fails: a second gate before the request
/// signatures, which still decide who may do what.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use std::os::unix::fs::PermissionsExt;
    let tls = |path: &std::path::Path, reason: String| ServeError::Tls { path: path.to_path_buf(), reason };
    let mode = std::fs::metadata(key).map_err(|e| tls(key, e.to_string()))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(tls(
            key,
            format!("the key is readable by others (mode {:o}): run `chmod 600` on it", mode & 0o7777),
        ));
    }
    let pem_certs = |path: &std::path::Path| {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| tls(path, format!("not a PEM certificate chain: {e}")))?;
        if certs.is_empty() {
            return Err(tls(path, "holds no certificate".into()));
        }
        Ok(certs)
    };
    let certs = pem_certs(cert)?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| tls(key, format!("not a PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(cert, e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in pem_certs(ca)? {
                roots.add(cert).map_err(|e| tls(ca, format!("not a CA certificate rustls takes: {e}")))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| tls(ca, format!("cannot verify clients with it: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, private)
        .map_err(|e| tls(cert, format!("the certificate and key do not go together: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Binds `addr`; without TLS, loopback only.
pub async fn bind(addr: SocketAddr, tls: bool) -> Result<TcpListener, ServeError> {
    if !tls && !addr.ip().is_loopback() {
        return Err(ServeError::NotLoopback { addr });
    }
    TcpListener::bind(addr).await.map_err(|source| ServeError::Listen { addr, source })
}

/// Serves the API on `listener` (over TLS with `tls`) until `shutdown`
/// resolves, then lets open connections finish for [`Limits::drain`] and
/// closes the rest.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let router = api::router(Arc::clone(&shared));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(shared.limits.header_timeout).max_buf_size(64 * 1024);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors, most likely: wait rather than spin.
                        tracing::warn!("cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (http, service, watcher) = (http.clone(), TowerToHyperService::new(router.clone()), graceful.watcher());
                let handshake = (acceptor.clone(), shared.limits.header_timeout);
                tokio::spawn(async move {
                    let ended = match handshake {
                        (None, _) => watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await,
                        (Some(acceptor), timeout) => match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await,
                            Ok(Err(e)) => return tracing::debug!("TLS handshake failed: {e}"),
                            Err(_) => return tracing::debug!("TLS handshake not done within {timeout:?}"),
                        },
                    };
                    if let Err(e) = ended {
                        tracing::debug!("connection ended: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    shared.stopping.store(true, Ordering::SeqCst);
    shared.moves.all_moved();
    if tokio::time::timeout(shared.limits.drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {:?} are left to end with the process", shared.limits.drain);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt as _;

    #[test]
    fn a_move_wakes_the_streams_of_its_job_only_and_a_job_no_one_follows_is_forgotten() {
        let moves = Arc::<Moves>::default();
        let (mut a, mut also_a, mut b) = (moves.watch("a"), moves.watch("a"), moves.watch("b"));
        assert!(a.changed().now_or_never().is_none(), "nothing moved yet");
        moves.moved("b");
        assert!(a.changed().now_or_never().is_none(), "another job's move does not wake a's streams");
        assert!(b.changed().now_or_never().is_some());
        moves.moved("a");
        assert!(a.changed().now_or_never().is_some());
        assert!(also_a.changed().now_or_never().is_some(), "every stream of the job wakes");
        assert!(a.changed().now_or_never().is_none(), "one wake-up per move");
        moves.all_moved();
        assert!(b.changed().now_or_never().is_some(), "stopping wakes every stream");
        drop(a);
        assert!(moves.lock().contains_key("a"), "a is still followed");
        drop(also_a);
        drop(b);
        assert!(moves.lock().is_empty(), "no stream left: nothing kept");
        moves.moved("a");
        assert!(moves.lock().is_empty(), "a move of a job no one follows keeps nothing");
    }
}
