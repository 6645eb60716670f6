//! Witnesses: places each signed checkpoint also goes, which the data
//! directory's owner cannot rewrite: a file on another path, the system
//! log (syslog or the journal, through its socket), or a witness service
//! over HTTP (the signed note as the body of a POST).
//!
//! Delivery runs on a thread of its own, so a slow or unreachable witness
//! never holds up a commit or stops a job. A checkpoint a witness did not
//! take is kept and retried, with backoff (1 s doubling to 60 s), in
//! order, and every failure is reported (`tracing` error, with how many
//! wait). At most [`MAX_PENDING`] wait per witness; past that the oldest
//! are let go, said so, as the latest checkpoint covers every earlier one
//! (a consistency proof shows it). When the log closes, what waits is
//! given a last few seconds; the next start sends the latest checkpoint
//! to every witness at once.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

/// How many checkpoints may wait for one witness.
pub const MAX_PENDING: usize = 10_000;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long an HTTP witness may take to answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where checkpoints go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Witness {
    /// Appended to a file, one JSON object per line: `{"at", "note"}`.
    File(PathBuf),
    /// Sent to a syslog socket (`/dev/log`: syslog or the journal) as an
    /// RFC 5424 message, facility auth, severity notice, whose text is the
    /// same JSON object.
    Syslog(PathBuf),
    /// POSTed to a URL, the signed note as the body (`text/plain`); any
    /// 2xx answer takes it.
    Http(url::Url),
}

impl std::fmt::Display for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Witness::File(path) => write!(f, "file {}", path.display()),
            Witness::Syslog(path) => write!(f, "syslog {}", path.display()),
            Witness::Http(url) => write!(f, "{url}"),
        }
    }
}

impl Witness {
    /// An HTTP witness, refusing what is not an `http` or `https` URL.
    pub fn http(url: &str) -> Result<Witness, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(format!("{url:?}: a witness URL is http:// or https:// with a host"));
        }
        Ok(Witness::Http(parsed))
    }
}

/// One checkpoint on its way: when it was signed, and the note.
#[derive(Debug, Clone)]
struct Checkpointed {
    at: String,
    note: String,
}

impl Checkpointed {
    fn line(&self) -> String {
        serde_json::json!({ "at": self.at, "note": self.note }).to_string()
    }
}

enum Message {
    /// A new witness, with the latest checkpoint to send it at once.
    Add(Witness, Option<Checkpointed>),
    Note(Checkpointed),
    /// Try every witness now; answer with how many checkpoints still wait.
    Flush(Sender<usize>),
}

/// The handle the log keeps: sends checkpoints to the delivery thread.
pub(super) struct Witnesses {
    sender: Sender<Message>,
}

impl Witnesses {
    pub(super) fn start() -> Witnesses {
        let (sender, receiver) = channel();
        std::thread::Builder::new()
            .name("salve-witness".into())
            .spawn(move || deliver(receiver))
            .expect("a thread for the witnesses");
        Witnesses { sender }
    }

    pub(super) fn add(&self, witness: Witness, latest: Option<&str>) {
        let latest = latest.map(|note| Checkpointed { at: now(), note: note.to_string() });
        let _ = self.sender.send(Message::Add(witness, latest));
    }

    pub(super) fn send(&self, note: &str) {
        let _ = self.sender.send(Message::Note(Checkpointed { at: now(), note: note.to_string() }));
    }

    /// Tries every witness now and waits up to `wait` for the answer: how
    /// many checkpoints still wait (all of them, if there was no answer).
    pub(super) fn flush(&self, wait: Duration) -> Option<usize> {
        let (reply, answer) = channel();
        self.sender.send(Message::Flush(reply)).ok()?;
        answer.recv_timeout(wait).ok()
    }
}

fn now() -> String {
    crate::time::Timestamp::now().rfc3339_millis()
}

struct Target {
    witness: Witness,
    pending: VecDeque<Checkpointed>,
    failures: u32,
    next_try: Instant,
    /// Checkpoints let go since the last report.
    let_go: u64,
}

impl Target {
    fn push(&mut self, checkpoint: Checkpointed) {
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
            self.let_go += 1;
        }
        self.pending.push_back(checkpoint);
    }

    /// Delivers what waits, in order, until one fails.
    fn try_deliver(&mut self, sender: &mut Delivery) {
        if self.let_go > 0 {
            tracing::error!(
                witness = %self.witness,
                let_go = self.let_go,
                "more than {MAX_PENDING} checkpoints waited for this witness: the oldest were let go (the latest covers them)"
            );
            self.let_go = 0;
        }
        while let Some(checkpoint) = self.pending.front() {
            match sender.deliver(&self.witness, checkpoint) {
                Ok(()) => {
                    self.pending.pop_front();
                    if self.failures > 0 {
                        tracing::warn!(witness = %self.witness, "the witness takes checkpoints again");
                    }
                    self.failures = 0;
                }
                Err(reason) => {
                    self.failures += 1;
                    let backoff = FIRST_BACKOFF.saturating_mul(1 << (self.failures - 1).min(6)).min(MAX_BACKOFF);
                    self.next_try = Instant::now() + backoff;
                    tracing::error!(
                        witness = %self.witness,
                        pending = self.pending.len(),
                        retry_in_s = backoff.as_secs(),
                        "the witness did not take the checkpoint ({reason}); kept, and retried"
                    );
                    return;
                }
            }
        }
    }
}

/// What delivers: the HTTP client and its runtime, made on first use.
#[derive(Default)]
struct Delivery {
    http: Option<(tokio::runtime::Runtime, reqwest::Client)>,
}

impl Delivery {
    fn deliver(&mut self, witness: &Witness, checkpoint: &Checkpointed) -> Result<(), String> {
        match witness {
            Witness::File(path) => {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(path)
                    .and_then(|mut file| {
                        file.write_all(format!("{}\n", checkpoint.line()).as_bytes())?;
                        file.sync_data()
                    })
                    .map_err(|e| e.to_string())
            }
            Witness::Syslog(socket) => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                let host = host.trim();
                // <PRI>: facility auth (4) * 8 + severity notice (5).
                let message = format!(
                    "<37>1 {} {} salve {} checkpoint - {}",
                    checkpoint.at,
                    if host.is_empty() { "-" } else { host },
                    std::process::id(),
                    checkpoint.line()
                );
                let socket_client = std::os::unix::net::UnixDatagram::unbound().map_err(|e| e.to_string())?;
                socket_client.send_to(message.as_bytes(), socket).map(drop).map_err(|e| e.to_string())
            }
            Witness::Http(url) => {
                if self.http.is_none() {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    // The client's connector wants the runtime it runs on.
                    let entered = runtime.enter();
                    let client = reqwest::Client::builder()
                        .timeout(HTTP_TIMEOUT)
                        .redirect(reqwest::redirect::Policy::none())
                        .build()
                        .map_err(|e| e.to_string())?;
                    drop(entered);
                    self.http = Some((runtime, client));
                }
                let (runtime, client) = self.http.as_ref().expect("made above");
                let sent = runtime.block_on(async {
                    client
                        .post(url.clone())
                        .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                        .body(checkpoint.note.clone())
                        .send()
                        .await
                });
                match sent {
                    Ok(answer) if answer.status().is_success() => Ok(()),
                    Ok(answer) => Err(format!("it answered {}", answer.status())),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }
}

fn deliver(messages: Receiver<Message>) {
    let mut targets: Vec<Target> = Vec::new();
    let mut delivery = Delivery::default();
    loop {
        let now = Instant::now();
        let wait = targets
            .iter()
            .filter(|t| !t.pending.is_empty())
            .map(|t| t.next_try.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(3600));
        let mut flush = None;
        match messages.recv_timeout(wait) {
            Ok(Message::Add(witness, latest)) => {
                let mut target =
                    Target { witness, pending: VecDeque::new(), failures: 0, next_try: Instant::now(), let_go: 0 };
                target.pending.extend(latest);
                targets.push(target);
            }
            Ok(Message::Note(checkpoint)) => {
                for target in &mut targets {
                    target.push(checkpoint.clone());
                }
            }
            Ok(Message::Flush(reply)) => flush = Some(reply),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        for target in &mut targets {
            if !target.pending.is_empty() && (flush.is_some() || target.next_try <= now) {
                target.try_deliver(&mut delivery);
            }
        }
        if let Some(reply) = flush {
            let _ = reply.send(targets.iter().map(|t| t.pending.len()).sum());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{Ending, Event};
    use crate::audit::{AuditLog, checkpoint, checkpoint_origin};
    use crate::keys::{PrivateKey, Role};
    use std::io::{BufRead as _, Read as _, Write as _};
    use std::sync::{Arc, Mutex};

    fn key() -> Arc<PrivateKey> {
        Arc::new(PrivateKey::from_seed("runner", Role::Runner, [5; 32]))
    }

    fn outcome() -> Event<'static> {
        Event::Outcome { outcome: Ending::Succeeded, cause: None, rollback_cause: None }
    }

    /// The size of a checkpoint `key` signed; panics on anything else.
    fn size(note: &str, key: &PrivateKey) -> u64 {
        let verifier = checkpoint::Verifier::new(&key.id, key.signing.verifying_key()).unwrap();
        checkpoint::Checkpoint::open(note.as_bytes(), &checkpoint_origin(&key.id), &[verifier]).unwrap().0.size
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_system_log_gets_each_checkpoint_as_one_message() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("log.sock");
        let listener = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
        listener.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let key = key();
        let log = AuditLog::open_keyed(&dir.path().join("data"), Arc::clone(&key)).unwrap();
        log.add_witness(Witness::Syslog(socket));
        log.append(Some("a"), &outcome()).unwrap();
        log.seal("a", &key).await.unwrap();
        assert_eq!(log.flush_witnesses(Duration::from_secs(10)), Some(0));
        let mut buffer = vec![0; 4096];
        let n = listener.recv(&mut buffer).unwrap();
        let message = String::from_utf8(buffer[..n].to_vec()).unwrap();
        assert!(message.starts_with("<37>1 ") && message.contains(" salve "), "{message}");
        assert!(!message.contains('\n'), "one line");
        let json: serde_json::Value = serde_json::from_str(&message[message.find('{').unwrap()..]).unwrap();
        let note = json["note"].as_str().unwrap();
        assert_eq!(note, log.latest_checkpoint().unwrap());
        assert!(size(note, &key) >= 2);
    }

    /// A witness service on loopback that refuses the first `refuse`
    /// checkpoints (503), then takes them; the bodies it took, in order.
    fn service(refuse: usize) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/checkpoints", listener.local_addr().unwrap());
        let taken = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&taken);
        std::thread::spawn(move || {
            for (i, stream) in listener.incoming().enumerate().take(50) {
                let Ok(mut stream) = stream else { return };
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let status = if i < refuse { "503 Service Unavailable" } else { "200 OK" };
                if i >= refuse {
                    kept.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
                }
                let _ = stream.write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes(),
                );
            }
        });
        (url, taken)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_http_witness_that_refuses_gets_every_checkpoint_later_in_order() {
        let (url, taken) = service(1);
        let dir = tempfile::tempdir().unwrap();
        let key = key();
        let log = AuditLog::open_keyed(dir.path(), Arc::clone(&key)).unwrap();
        log.add_witness(Witness::http(&url).unwrap());
        for job in ["a", "b"] {
            log.append(Some(job), &outcome()).unwrap();
            log.seal(job, &key).await.unwrap();
        }
        // The first attempt was refused: both wait, and go at the retry.
        let deadline = Instant::now() + Duration::from_secs(20);
        while log.flush_witnesses(Duration::from_secs(10)) != Some(0) {
            assert!(Instant::now() < deadline, "the witness never got them");
            std::thread::sleep(Duration::from_millis(100));
        }
        let taken = taken.lock().unwrap().clone();
        assert_eq!(taken.len(), 2, "{taken:?}");
        let sizes: Vec<u64> = taken.iter().map(|note| size(note, &key)).collect();
        assert!(sizes[0] < sizes[1], "in order: {sizes:?}");
        assert_eq!(taken[1], log.latest_checkpoint().unwrap());
    }

    #[test]
    fn a_witness_url_must_be_http_with_a_host() {
        for bad in ["ftp://example.com/x", "file:///etc/passwd", "not a url", "http://"] {
            assert!(Witness::http(bad).is_err(), "{bad}");
        }
        assert!(Witness::http("https://witness.example/checkpoints").is_ok());
    }
}
