//! Notifications: when a job waits for approval, succeeds, is rolled back
//! or needs a person (its rollback failed), `salve serve` posts a JSON body
//! to each webhook, signed by the runner key in the profile of
//! [`super::signature`] (a receiver checks it with the runner's public
//! key). A delivery that fails is tried again with backoff; every attempt
//! is one line of `webhooks.jsonl` in the data directory.

use super::signature;
use crate::control::Step;
use crate::job::JobState;
use crate::keys::PrivateKey;
use serde::Serialize;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// The states a webhook hears of.
pub const EVENTS: [JobState; 4] =
    [JobState::WaitingApproval, JobState::Succeeded, JobState::RolledBack, JobState::RollbackFailed];

/// How many notifications may wait per webhook; past it, the newest are
/// dropped (and the drop recorded).
const BACKLOG: usize = 10_000;

/// How deliveries are tried again.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry { attempts: 6, first_delay: Duration::from_secs(1), max_delay: Duration::from_secs(60) }
    }
}

/// What a webhook receives.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    /// The state the job reached, which is the event.
    pub event: JobState,
    pub job: String,
    /// What the worker said about it.
    pub note: String,
    /// When, RFC 3339.
    pub at: String,
}

/// One delivery attempt, as recorded.
#[derive(Serialize)]
struct Attempt<'a> {
    at: String,
    url: &'a str,
    job: &'a str,
    event: JobState,
    attempt: u32,
    outcome: String,
}

/// The webhooks of one server.
pub struct Webhooks {
    queues: Vec<mpsc::Sender<Notification>>,
    record: Arc<Record>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Record {
    path: PathBuf,
    file: Mutex<()>,
}

impl Record {
    fn write(&self, attempt: &Attempt<'_>) {
        let _guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let line = serde_json::to_string(attempt).expect("an attempt is JSON");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| writeln!(file, "{line}"));
        if let Err(e) = written {
            tracing::error!("cannot record a webhook delivery in {}: {e}: {line}", self.path.display());
        }
    }
}

fn now_text() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Webhooks {
    /// Starts one delivery task per URL; `record` is the attempts' file.
    pub fn start(urls: &[url::Url], key: Arc<PrivateKey>, record: PathBuf, retry: Retry) -> Webhooks {
        let record = Arc::new(Record { path: record, file: Mutex::new(()) });
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client without custom TLS builds");
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for url in urls {
            let (sender, receiver) = mpsc::channel(BACKLOG);
            queues.push(sender);
            let deliver = Deliver {
                http: http.clone(),
                url: url.to_string(),
                key: Arc::clone(&key),
                record: Arc::clone(&record),
                retry,
            };
            tasks.push(tokio::spawn(deliver.run(receiver)));
        }
        Webhooks { queues, record, tasks }
    }

    /// Queues a notification of `step` for every webhook, if its state is
    /// one they hear of.
    pub fn notify(&self, step: &Step) {
        if !EVENTS.contains(&step.state) {
            return;
        }
        let notification =
            Notification { event: step.state, job: step.job.clone(), note: step.note.clone(), at: now_text() };
        for queue in &self.queues {
            if queue.try_send(notification.clone()).is_err() {
                self.record.write(&Attempt {
                    at: now_text(),
                    url: "",
                    job: &notification.job,
                    event: notification.event,
                    attempt: 0,
                    outcome: format!("dropped: {BACKLOG} notifications already wait"),
                });
            }
        }
    }

    /// Stops taking notifications and gives what waits `grace` to be
    /// delivered; what is left then is not.
    pub async fn stop(self, grace: Duration) {
        drop(self.queues);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(grace, task).await.is_err() {
                abort.abort();
                tracing::warn!("webhook deliveries still waiting after {grace:?} were abandoned");
            }
        }
    }
}

struct Deliver {
    http: reqwest::Client,
    url: String,
    key: Arc<PrivateKey>,
    record: Arc<Record>,
    retry: Retry,
}

impl Deliver {
    async fn run(self, mut queue: mpsc::Receiver<Notification>) {
        while let Some(notification) = queue.recv().await {
            self.deliver(&notification).await;
        }
    }

    async fn deliver(&self, notification: &Notification) {
        let body = serde_json::to_vec(notification).expect("a notification is JSON");
        let mut delay = self.retry.first_delay;
        for attempt in 1..=self.retry.attempts {
            let outcome = match self.post(&body).await {
                Ok(status) if status.is_success() => {
                    self.write(notification, attempt, format!("delivered: {status}"));
                    return;
                }
                Ok(status) => format!("refused: {status}"),
                Err(e) => format!("failed: {e}"),
            };
            let last = attempt == self.retry.attempts;
            let then = if last { "given up".to_string() } else { format!("again in {delay:?}") };
            self.write(notification, attempt, format!("{outcome}; {then}"));
            if last {
                tracing::error!(
                    "webhook {}: job {} ({}) not delivered: {outcome}",
                    self.url,
                    notification.job,
                    notification.event
                );
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.retry.max_delay);
        }
    }

    async fn post(&self, body: &[u8]) -> Result<reqwest::StatusCode, String> {
        let headers =
            signature::sign("POST", &self.url, body, &self.key, SystemTime::now()).map_err(|e| e.to_string())?;
        let mut request = self.http.post(&self.url).header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.body(body.to_vec()).send().await.map_err(|e| e.to_string())?;
        Ok(response.status())
    }

    fn write(&self, notification: &Notification, attempt: u32, outcome: String) {
        self.record.write(&Attempt {
            at: now_text(),
            url: &self.url,
            job: &notification.job,
            event: notification.event,
            attempt,
            outcome,
        });
    }
}
