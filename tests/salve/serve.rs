//! `salve serve` as a real process on loopback: a job from submission over
//! HTTP, through two approvals, to an auditor's verified evidence; and
//! every request the API must refuse.

use crate::control::{Plane, closed_window_config, entry};
use salve::approval::{Approval, DEFAULT_LIFETIME, Subject, Vote};
use salve::keys::{PrivateKey, Role};
use salve::policy::DEFAULT_POLICY;
use salve::trust::TrustFile;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// A `salve serve` process; killed if the test ends without stopping it.
struct Server {
    child: Child,
    base: String,
    /// What it printed after its address (one line per step).
    steps: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    fn start(plane: &Plane, extra: &[&str]) -> Server {
        let mut args: Vec<std::ffi::OsString> = vec!["--data-dir".into(), plane.data().into()];
        args.extend(extra.iter().map(Into::into));
        Server::with_args(&args)
    }

    /// `salve serve` on a free loopback port, with `args`.
    fn with_args(args: &[std::ffi::OsString]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_salve"))
            .args(["serve", "--listen", "127.0.0.1:0", "--poll", "50ms"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let base = line.trim().strip_prefix("salve serve: listening on ").unwrap_or_else(|| panic!("{line:?}"));
        // Keep reading, so that the server's stdout stays open.
        let steps: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::default();
        let kept = std::sync::Arc::clone(&steps);
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                kept.lock().unwrap().push(line);
            }
        });
        Server { child, base: base.to_string(), steps }
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "salve serve did not stop within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A request signed by `key` at `at`.
    fn signed(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        key: &PrivateKey,
        at: SystemTime,
    ) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.parse().unwrap(), &url).body(body.to_vec());
        for (name, value) in salve::serve::signature::sign(method, &url, body, key, at).unwrap() {
            request = request.header(name, value);
        }
        request
    }

    async fn get(&self, path: &str, key: &PrivateKey) -> (u16, Value) {
        let response = self.signed("GET", path, b"", key, SystemTime::now()).send().await.unwrap();
        json(response).await
    }

    async fn post(&self, path: &str, body: &impl serde::Serialize) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .await
            .unwrap();
        json(response).await
    }

    /// Polls job `id` as `key` until its state is `state`.
    async fn until(&self, id: &str, key: &PrivateKey, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, review) = self.get(&format!("/v1/jobs/{id}"), key).await;
            assert_eq!(status, 200, "{review}");
            if review["job"]["state"] == state {
                return review;
            }
            assert!(Instant::now() < deadline, "job {id} never reached {state}: {review}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The refusal's `check`, and that it is the status expected.
fn refused(status: u16, body: &Value, expected: u16) -> String {
    assert_eq!(status, expected, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    body["error"]["check"].as_str().unwrap().to_string()
}

/// A plane with, besides an agent and approvers, a second agent and an
/// auditor.
fn plane() -> (Plane, PrivateKey, PrivateKey) {
    let plane = Plane::with_logs(DEFAULT_POLICY, &closed_window_config());
    let other = PrivateKey::from_seed("other-agent", Role::Agent, [61; 32]);
    let auditor = PrivateKey::from_seed("auditor", Role::Auditor, [62; 32]);
    let path = plane.data().join("trust.toml");
    let mut trust: TrustFile = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    trust.keys.push(entry(&other, &["dev", "prod"], &[]));
    trust.keys.push(entry(&auditor, &["*"], &[]));
    std::fs::write(&path, toml::to_string(&trust).unwrap()).unwrap();
    (plane, other, auditor)
}

fn approval(review: &Value, key: &PrivateKey) -> Approval {
    let job = &review["job"];
    let text = |v: &Value| v.as_str().unwrap().to_string();
    let (id, hash, plan, agent, environment) = (
        text(&job["id"]),
        text(&job["job_hash"]),
        text(&review["plan"]["hash"]),
        text(&job["agent"]),
        text(&job["environment"]),
    );
    let subject = Subject {
        job_id: &id,
        job_hash: &hash,
        plan_hash: &plan,
        submitter: &agent,
        environment: &environment,
        group: Some("sre"),
    };
    Approval::sign(&subject, Vote::Approve, "read the plan over the API", DEFAULT_LIFETIME, key, SystemTime::now())
        .unwrap()
}

/// What a webhook receiver heard: each request's headers and body. It
/// answers the first with 500, the others with 204.
type Heard = std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

async fn webhook_receiver() -> (String, Heard) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let heard = Heard::default();
    let kept = heard.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
            let mut heard = kept.lock().unwrap();
            heard.push((headers, body.to_vec()));
            if heard.len() == 1 {
                axum::http::StatusCode::INTERNAL_SERVER_ERROR
            } else {
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, heard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_goes_from_http_submission_through_two_approvals_to_verified_evidence() {
    let (plane, _, auditor) = plane();
    let (hook, heard) = webhook_receiver().await;
    let server = Server::start(&plane, &["--webhook", &hook]);
    let client = Client { http: reqwest::Client::new(), base: server.base.clone() };

    let envelope = plane.sign(&plane.rotate("job-http", "prod", 0.92));
    let (status, submitted) = client.post("/v1/jobs", &envelope).await;
    assert_eq!(status, 201, "{submitted}");
    assert_eq!(submitted["state"], "submitted");
    let (status, replayed) = client.post("/v1/jobs", &envelope).await;
    assert_eq!(refused(status, &replayed, 400), "job-nonce-replayed");

    // The agent follows the job's transitions as they happen.
    let events = client.signed("GET", "/v1/jobs/job-http/events", b"", &plane.agent, SystemTime::now()).send();
    let events = tokio::spawn(async move { events.await.unwrap().text().await.unwrap() });

    // The approvers read the plan hash from the API and approve it.
    let review = client.until("job-http", &plane.alice, "waiting-approval").await;
    assert!(review["plan"]["hash"].is_string(), "{review}");
    let (status, job) = client.post("/v1/jobs/job-http/votes", &approval(&review, &plane.alice)).await;
    assert_eq!(status, 200, "{job}");
    let (status, twice) = client.post("/v1/jobs/job-http/votes", &approval(&review, &plane.alice)).await;
    assert_eq!(refused(status, &twice, 403), "vote-duplicate");
    let (status, job) = client.post("/v1/jobs/job-http/votes", &approval(&review, &plane.bob)).await;
    assert_eq!(status, 200, "{job}");
    client.until("job-http", &plane.agent, "succeeded").await;
    let events = tokio::time::timeout(Duration::from_secs(30), events).await.expect("the stream ends").unwrap();
    let states: Vec<String> = events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|data| serde_json::from_str::<Value>(data).unwrap()["to"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["submitted", "waiting-approval", "approved", "applying", "verifying", "succeeded"], "{events}");

    // The auditor lists it, exports its evidence and verifies it offline.
    let (status, listed) = client.get("/v1/jobs?state=succeeded", &auditor).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["jobs"][0]["id"], "job-http", "{listed}");
    let response = client
        .signed("GET", "/v1/jobs/job-http/evidence?artifact=true", b"", &auditor, SystemTime::now())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let bundle = response.bytes().await.unwrap();
    let verified = salve::evidence::verify(&bundle, Some(&crate::common::runner_key().public())).unwrap();
    assert_eq!(verified.job, "job-http");
    let response = client.signed("GET", "/v1/audit/checkpoint", b"", &auditor, SystemTime::now()).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.text().await.unwrap().contains(&salve::audit::checkpoint_origin(&crate::common::runner_key().id)));

    let steps = server.steps.clone();
    let response = client.signed("GET", "/metrics", b"", &auditor, SystemTime::now()).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let metrics = response.text().await.unwrap();
    for line in [
        "salve_jobs{state=\"succeeded\"} 1",
        "salve_queue_depth 0",
        "salve_http_requests_total{route=\"/v1/jobs\",status=\"201\"} 1",
        "salve_http_requests_total{route=\"/v1/jobs/{id}/votes\",status=\"200\"} 2",
        "salve_refusals_total{check=\"vote-duplicate\"} 1",
        "salve_refusals_total{check=\"job-nonce-replayed\"} 1",
        "salve_worker_step_seconds_count{state=\"succeeded\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing from:\n{metrics}");
    }
    // Host calls by interface and outcome are those the audit log holds.
    let mut calls = std::collections::BTreeMap::<(String, String), u64>::new();
    for line in std::fs::read_to_string(plane.data().join("audit.jsonl")).unwrap().lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        if record["kind"] == "call" {
            let outcome = match &record["outcome"] {
                Value::String(kind) => kind.clone(),
                Value::Object(kind) => kind.keys().next().unwrap().clone(),
                other => panic!("{other}"),
            };
            *calls.entry((record["interface"].as_str().unwrap().to_string(), outcome)).or_default() += 1;
        }
    }
    assert!(calls.keys().any(|(interface, _)| interface == "fs"), "{calls:?}");
    let exposed: Vec<&str> = metrics.lines().filter(|l| l.starts_with("salve_host_calls_total{")).collect();
    assert_eq!(exposed.len(), calls.len(), "{metrics}");
    for ((interface, outcome), n) in &calls {
        let line = format!("salve_host_calls_total{{interface=\"{interface}\",outcome=\"{outcome}\"}} {n}");
        assert!(exposed.contains(&line.as_str()), "{line} missing from:\n{metrics}");
    }
    let syncs = metrics.lines().find_map(|l| l.strip_prefix("salve_audit_sync_seconds_count ")).unwrap();
    assert!(syncs.parse::<u64>().unwrap() >= 1, "{metrics}");
    let (status, body) = json(client.http.get(format!("{}/metrics", server.base)).send().await.unwrap()).await;
    assert_eq!(refused(status, &body, 401), "signature-missing");
    let (status, served) =
        json(client.http.get(format!("{}/v1/openapi.json", server.base)).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(served, salve::serve::openapi::document());

    // The webhook heard of the wait for approval (the second attempt:
    // the first got 500) and of the success, signed by the runner key.
    let deadline = Instant::now() + Duration::from_secs(30);
    while heard.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "the webhook heard {} requests", heard.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let trust = salve::trust::TrustStore::load(&plane.data().join("trust.toml")).unwrap();
    let nonces = salve::serve::signature::Nonces::default();
    let mut events = Vec::new();
    for (headers, body) in heard.lock().unwrap().iter() {
        let message = salve::serve::signature::Message { method: "POST", target_uri: &hook, headers };
        let key = salve::serve::signature::verify(&message, body, &trust, &nonces, &[Role::Runner], SystemTime::now())
            .unwrap();
        assert_eq!(key.entry.role, Role::Runner);
        let body: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(body["job"], "job-http");
        events.push(body["event"].as_str().unwrap().to_string());
    }
    assert_eq!(events, ["waiting-approval", "waiting-approval", "succeeded"]);
    let attempts = std::fs::read_to_string(plane.data().join("webhooks.jsonl")).unwrap();
    let outcomes: Vec<String> = attempts
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["outcome"].as_str().unwrap().to_string())
        .collect();
    assert!(outcomes[0].starts_with("refused: 500") && outcomes[0].contains("again in"), "{attempts}");
    assert!(outcomes[1].starts_with("delivered: 204") && outcomes[2].starts_with("delivered: 204"), "{attempts}");

    assert!(server.stop().success());
    let steps = steps.lock().unwrap().join("\n");
    assert!(steps.contains("job job-http: succeeded"), "{steps}");
    plane.audit_verifies();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_the_api_must_refuse_is_refused() {
    let (plane, other, auditor) = plane();
    let server = Server::start(&plane, &["--max-body", "65536", "--max-queue", "2"]);
    let client = Client { http: reqwest::Client::new(), base: server.base.clone() };
    let (status, submitted) = client.post("/v1/jobs", &plane.sign(&plane.rotate("job-mine", "dev", 0.9))).await;
    assert_eq!(status, 201, "{submitted}");
    let now = SystemTime::now();

    // Unsigned.
    let response = client.http.get(format!("{}/v1/jobs/job-mine", server.base)).send().await.unwrap();
    assert!(response.headers().contains_key("www-authenticate"));
    let (status, body) = json(response).await;
    assert_eq!(refused(status, &body, 401), "signature-missing");
    // A key the runner does not trust.
    let stranger = PrivateKey::from_seed("stranger", Role::Agent, [63; 32]);
    let (status, body) = client.get("/v1/jobs/job-mine", &stranger).await;
    assert_eq!(refused(status, &body, 401), "key-unknown");
    // A trusted key whose role does not read the API.
    let (status, body) = client.get("/v1/jobs", crate::common::author_key()).await;
    assert_eq!(refused(status, &body, 403), "role");
    // Another agent's job: as if it did not exist, and not in its list.
    let (status, body) = client.get("/v1/jobs/job-mine", &other).await;
    assert_eq!(refused(status, &body, 404), "job-unknown");
    let (status, listed) = client.get("/v1/jobs", &other).await;
    assert_eq!((status, listed["jobs"].as_array().unwrap().len()), (200, 0), "{listed}");
    let (status, body) = client.get("/v1/jobs/job-mine/evidence", &other).await;
    assert_eq!(refused(status, &body, 404), "job-unknown");
    let (status, body) = client.get("/v1/jobs/job-mine/events", &other).await;
    assert_eq!(refused(status, &body, 404), "job-unknown");
    // An approver not trusted for the job's environment (carol: prod only).
    let (status, body) = client.get("/v1/jobs/job-mine", &plane.carol).await;
    assert_eq!(refused(status, &body, 404), "job-unknown");
    // An approver of another group does not see a job that needs sre.
    let (status, submitted) = client.post("/v1/jobs", &plane.sign(&plane.rotate("job-prod", "prod", 0.92))).await;
    assert_eq!(status, 201, "{submitted}");
    let (status, body) = client.get("/v1/jobs/job-prod", &plane.carol).await;
    assert_eq!(refused(status, &body, 404), "job-unknown");
    assert_eq!(client.get("/v1/jobs/job-prod", &plane.alice).await.0, 200);
    assert_eq!(client.get("/v1/jobs/job-mine", &auditor).await.0, 200);
    // Listings hold what the key sees, in pages.
    let listed = |body: &Value| -> Vec<String> {
        body["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_string()).collect()
    };
    let (_, carols) = client.get("/v1/jobs", &plane.carol).await;
    assert!(listed(&carols).is_empty(), "neither its environment nor its group: {carols}");
    let (_, alices) = client.get("/v1/jobs?limit=1", &plane.alice).await;
    assert!(listed(&alices).contains(&"job-prod".to_string()), "{alices}");
    let (_, mine) = client.get("/v1/jobs", &plane.agent).await;
    assert_eq!(listed(&mine), ["job-prod", "job-mine"], "its own jobs, newest first: {mine}");
    assert_eq!(mine["next"], Value::Null, "the last page: {mine}");
    let (_, first) = client.get("/v1/jobs?limit=1", &auditor).await;
    let next = first["next"].as_str().expect("a full page has a next");
    let (_, second) = client.get(&format!("/v1/jobs?limit=1&after={next}"), &auditor).await;
    let mut both = [listed(&first), listed(&second)].concat();
    both.sort();
    assert_eq!(both, ["job-mine", "job-prod"], "{first} {second}");
    let (status, body) = client.get("/v1/jobs?after=yesterday", &auditor).await;
    assert_eq!(refused(status, &body, 400), "query");

    // The queue holds two waiting jobs: job-prod waits for approvals, and
    // one more may wait; the next is told to come back.
    client.until("job-prod", &auditor, "waiting-approval").await;
    client.until("job-mine", &auditor, "succeeded").await;
    let (status, _) = client.post("/v1/jobs", &plane.sign(&plane.rotate("job-two", "prod", 0.92))).await;
    assert_eq!(status, 201);
    let response = client
        .http
        .post(format!("{}/v1/jobs", server.base))
        .body(serde_json::to_vec(&plane.sign(&plane.rotate("job-three", "prod", 0.92))).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "5");
    let (status, body) = json(response).await;
    assert_eq!(refused(status, &body, 429), "queue-full");

    // A replayed signature: the same headers, sent again.
    let first = client.signed("GET", "/v1/jobs/job-mine", b"", &plane.agent, now).build().unwrap();
    let again = first.try_clone().unwrap();
    assert_eq!(client.http.execute(first).await.unwrap().status().as_u16(), 200);
    let (status, body) = json(client.http.execute(again).await.unwrap()).await;
    assert_eq!(refused(status, &body, 401), "signature-replayed");
    // Stale, and from the future.
    let old = now - Duration::from_secs(600);
    let (status, body) = json(client.signed("GET", "/v1/jobs", b"", &plane.agent, old).send().await.unwrap()).await;
    assert_eq!(refused(status, &body, 401), "signature-stale");
    let ahead = now + Duration::from_secs(600);
    let (status, body) = json(client.signed("GET", "/v1/jobs", b"", &plane.agent, ahead).send().await.unwrap()).await;
    assert_eq!(refused(status, &body, 401), "signature-future");
    // Signed for one path, sent to another.
    let url = format!("{}/v1/jobs/job-mine", server.base);
    let mut request = client.http.get(format!("{}/v1/jobs", server.base));
    for (name, value) in salve::serve::signature::sign("GET", &url, b"", &plane.agent, now).unwrap() {
        request = request.header(name, value);
    }
    let (status, body) = json(request.send().await.unwrap()).await;
    assert_eq!(refused(status, &body, 401), "signature-invalid");

    // A body over the limit, signed or not.
    let huge = vec![b'x'; 100_000];
    let response = client.http.post(format!("{}/v1/jobs", server.base)).body(huge.clone()).send().await.unwrap();
    let (status, body) = json(response).await;
    assert_eq!(refused(status, &body, 413), "body-limit");
    // Not an envelope; not a vote.
    let (status, body) = client.post("/v1/jobs", &serde_json::json!({"payload": "x"})).await;
    assert_eq!(refused(status, &body, 400), "job-envelope");
    let (status, body) = client.post("/v1/jobs/job-mine/votes", &serde_json::json!({"vote": "approve"})).await;
    assert_eq!(refused(status, &body, 400), "vote");
    // Unknown routes and query parameters.
    let (status, body) = client.get("/v1/nothing", &auditor).await;
    assert_eq!(refused(status, &body, 404), "route");
    let (status, body) = client.get("/v1/jobs?owner=me", &auditor).await;
    assert_eq!(refused(status, &body, 400), "query");

    // A key revoked in the trust store is refused within a second or two.
    let path = plane.data().join("trust.toml");
    let mut trust: TrustFile = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    trust.revoked.push(salve::trust::Revocation { id: other.id.clone(), reason: "left".into() });
    std::fs::write(&path, toml::to_string(&trust).unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = client.get("/v1/jobs", &other).await;
        if status == 401 {
            assert_eq!(body["error"]["check"], "key-revoked", "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "the revoked key still reads: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_limited_per_key_and_end_when_their_key_is_revoked() {
    let (plane, _, auditor) = plane();
    let server = Server::start(&plane, &[]);
    let client = Client { http: reqwest::Client::new(), base: server.base.clone() };
    let (status, submitted) = client.post("/v1/jobs", &plane.sign(&plane.rotate("job-wait", "prod", 0.92))).await;
    assert_eq!(status, 201, "{submitted}");
    client.until("job-wait", &plane.agent, "waiting-approval").await;
    let open = |key: &PrivateKey| client.signed("GET", "/v1/jobs/job-wait/events", b"", key, SystemTime::now()).send();

    // Eight open streams are one key's share; the ninth is told to wait.
    let mut streams = Vec::new();
    for _ in 0..8 {
        let response = open(&plane.agent).await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        streams.push(response);
    }
    let response = open(&plane.agent).await.unwrap();
    assert_eq!(response.headers()["retry-after"], "5");
    let (status, body) = json(response).await;
    assert_eq!(refused(status, &body, 429), "streams-per-key");
    // Another key is served as before.
    let watching = open(&auditor).await.unwrap();
    assert_eq!(watching.status().as_u16(), 200);
    // The streams stay open while the job waits.
    let mut first = streams.remove(0);
    let open_on =
        tokio::time::timeout(Duration::from_secs(3), async { while first.chunk().await.unwrap().is_some() {} });
    assert!(open_on.await.is_err(), "an agent stream ended while its key was trusted");
    // A stream closed gives its place back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let reopened = loop {
        let response = open(&plane.agent).await.unwrap();
        if response.status().as_u16() == 200 {
            break response;
        }
        assert!(Instant::now() < deadline, "the closed stream's place did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The agent's key is revoked: its open streams end, the auditor's does
    // not (the job still waits).
    let path = plane.data().join("trust.toml");
    let mut trust: TrustFile = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    trust.revoked.push(salve::trust::Revocation { id: plane.agent.id.clone(), reason: "left".into() });
    std::fs::write(&path, toml::to_string(&trust).unwrap()).unwrap();
    // Streams look again at each change, and every 2 s anyway; the server
    // reads the trust store again every second.
    let ended = tokio::time::timeout(Duration::from_secs(20), reopened.text()).await;
    let text = ended.expect("the revoked key's stream ends").unwrap();
    assert!(text.contains("\"to\":\"waiting-approval\""), "{text}");
    for stream in streams.drain(..) {
        let ended = tokio::time::timeout(Duration::from_secs(20), stream.text()).await;
        ended.expect("every stream of the revoked key ends").unwrap();
    }
    let mut watching = watching;
    let still_open =
        tokio::time::timeout(Duration::from_secs(3), async { while watching.chunk().await.unwrap().is_some() {} })
            .await;
    assert!(still_open.is_err(), "the auditor's stream ended too");
    assert!(server.stop().success());
}

#[test]
fn the_published_openapi_document_is_current() {
    let path = crate::common::repo().join("schemas/openapi.json");
    let current = serde_json::to_string_pretty(&salve::serve::openapi::document()).unwrap();
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, format!("{current}\n")).unwrap();
        return;
    }
    let published = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(published.trim_end(), current, "schemas/openapi.json is stale: run the tests with BLESS=1");
}

#[test]
fn plain_http_is_served_on_loopback_only() {
    let (plane, _, _) = plane();
    let output = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(plane.data())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback only"), "{output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_is_a_client_of_the_server() {
    let (plane, other, auditor) = plane();
    let server = Server::start(&plane, &[]);
    let keys = plane.site.root.path().join("client-keys");
    for key in [&plane.agent, &plane.alice, &plane.bob, &other, &auditor] {
        key.write(&keys).unwrap();
    }
    let key = |name: &str| keys.join(format!("{name}.key")).display().to_string();
    // No local data directory: everything goes through the server.
    let nowhere = tempfile::tempdir().unwrap();
    let salve = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_salve"))
            .args(args)
            .env("SALVE_SERVER", &server.base)
            .env("SALVE_DATA_DIR", nowhere.path())
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.code(), text)
    };
    let job = plane.site.write("job.json", serde_json::to_vec(&plane.rotate("job-cli", "prod", 0.92)).unwrap());
    let job = job.display().to_string();

    let (code, text) = salve(&["submit", &job, "--key", &key("agent")]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("needs 2 approval(s) from group sre"), "{text}");
    let show = |who: &str| {
        let (code, text) = salve(&["jobs", "show", "job-cli", "--key", &key(who)]);
        assert_eq!(code, Some(0), "{text}");
        serde_json::from_str::<Value>(&text).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while show("alice")["job"]["state"] != "waiting-approval" {
        assert!(Instant::now() < deadline, "never planned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let plan = show("alice")["plan"]["hash"].as_str().unwrap().to_string();
    let (code, text) = salve(&["approve", "job-cli", "--key", &key("alice"), "--plan", "0000"]);
    assert_eq!(code, Some(2), "a vote for a plan other than the current one: {text}");
    assert!(text.contains("review it again"), "{text}");
    for approver in ["alice", "bob"] {
        let (code, text) = salve(&["approve", "job-cli", "--key", &key(approver), "--plan", &plan]);
        assert_eq!(code, Some(0), "{text}");
    }
    while show("agent")["job"]["state"] != "succeeded" {
        assert!(Instant::now() < deadline, "never succeeded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let bundle = plane.site.root.path().join("job-cli.tar").display().to_string();
    let (code, text) =
        salve(&["evidence", "export", "job-cli", "-o", &bundle, "--with-artifact", "--key", &key("auditor")]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = salve(&["evidence", "verify", &bundle]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = salve(&["audit", "checkpoint", "--key", &key("auditor")]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("salve audit log"), "{text}");

    // Refusals come back with the server's reason and exit 2.
    let (code, text) = salve(&["jobs", "list"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--key"), "{text}");
    let (code, text) = salve(&["jobs", "show", "job-cli", "--key", &key("other-agent")]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("job-unknown"), "{text}");
    let (code, text) = salve(&["jobs", "list", "--key", &key("other-agent"), "--server", "http://127.0.0.1:1"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot reach"), "{text}");

    assert!(server.stop().success());
}

#[test]
fn configuration_others_may_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let (plane, _, _) = plane();
    for file in ["policy.cedar", "trust.toml"] {
        let path = plane.data().join(file);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_salve"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(plane.data())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text}");
        assert!(text.contains(&format!("{file} is writable by its group")) && text.contains("chmod go-w"), "{text}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(plane.data(), std::fs::Permissions::from_mode(0o757)).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(plane.data())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("writable by others"), "{output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_served_from_pem_files_and_plain_http_is_not_answered_on_it() {
    use std::os::unix::fs::PermissionsExt;
    let (plane, _, auditor) = plane();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = plane.site.write("tls/cert.pem", certified.cert.pem());
    let key = plane.site.write("tls/key.pem", certified.signing_key.serialize_pem());
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());

    // A key others may read is refused.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert", &cert_arg, "--tls-key", &key_arg, "--data-dir"])
        .arg(plane.data())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("chmod 600"), "{output:?}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let server = Server::start(&plane, &["--tls-cert", &cert_arg, "--tls-key", &key_arg]);
    assert!(server.base.starts_with("https://127.0.0.1:"), "{}", server.base);
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let client = Client { http, base: server.base.clone() };
    let (status, listed) = client.get("/v1/jobs", &auditor).await;
    assert_eq!(status, 200, "{listed}");
    // A client that does not trust the certificate gets nowhere; nor does
    // plain HTTP on the TLS port.
    assert!(reqwest::get(format!("{}/healthz", server.base)).await.is_err());
    let plain = server.base.replacen("https://", "http://", 1);
    assert!(reqwest::get(format!("{plain}/healthz")).await.is_err());

    // The command line, trusting that certificate.
    let auditor_key = plane.site.root.path().join("client-keys");
    auditor.write(&auditor_key).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["jobs", "list", "--server", &server.base, "--server-ca", &cert_arg, "--key"])
        .arg(auditor_key.join("auditor.key"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(server.stop().success());
}

/// A CA, and a client certificate it issued (PEM chain and key, one file).
fn client_ca(name: &str) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![format!("{name}.client")]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    (ca.pem(), format!("{}{}", cert.pem(), key.serialize_pem()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_a_certificate_from_its_ca() {
    use std::os::unix::fs::PermissionsExt;
    let (plane, _, auditor) = plane();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = plane.site.write("tls/cert.pem", certified.cert.pem());
    let key = plane.site.write("tls/key.pem", certified.signing_key.serialize_pem());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ca, identity) = client_ca("fleet");
    let (_, stranger) = client_ca("stranger");
    let ca = plane.site.write("tls/clients.pem", ca);
    let identity_file = plane.site.write("tls/agent.pem", &identity);
    std::fs::set_permissions(&identity_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let args = [&cert, &key, &ca].map(|p| p.display().to_string());
    let tls_args = ["--tls-cert", &args[0], "--tls-key", &args[1], "--tls-client-ca", &args[2]];
    // Client CAs others may write could let anyone in: refused.
    std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o666)).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(tls_args)
        .arg("--data-dir")
        .arg(plane.data())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("clients.pem is writable by group and others"), "{text}");
    std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = Server::start(&plane, &tls_args);
    let client = |identity: Option<&str>| {
        let mut http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap());
        if let Some(pem) = identity {
            http = http.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        Client { http: http.build().unwrap(), base: server.base.clone() }
    };

    let (status, listed) = client(Some(&identity)).get("/v1/jobs", &auditor).await;
    assert_eq!(status, 200, "{listed}");
    // The certificate opens the connection, not the API: a request that is
    // not signed is still refused.
    let (status, body) =
        json(client(Some(&identity)).http.get(format!("{}/v1/jobs", server.base)).send().await.unwrap()).await;
    assert_eq!(refused(status, &body, 401), "signature-missing");
    // No certificate, or one another CA issued: no connection at all, not
    // even to the unauthenticated routes.
    for (refused_client, alert) in [(client(None), "CertificateRequired"), (client(Some(&stranger)), "UnknownCA")] {
        let error = refused_client.http.get(format!("{}/healthz", server.base)).send().await.unwrap_err();
        // The server's TLS alert, as rustls reports it to the client.
        let chain = format!("{error:?}");
        assert!(chain.contains(alert), "{chain}");
    }

    // The command line, with its identity; refused while others may read it.
    let auditor_key = plane.site.root.path().join("client-keys");
    auditor.write(&auditor_key).unwrap();
    let cli = |identity: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_salve"))
            .args(["jobs", "list", "--server", &server.base, "--server-ca", &args[0], "--client-identity"])
            .arg(identity)
            .arg("--key")
            .arg(auditor_key.join("auditor.key"))
            .output()
            .unwrap()
    };
    let output = cli(&identity_file);
    assert!(output.status.success(), "{output:?}");
    std::fs::set_permissions(&identity_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = cli(&identity_file);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("chmod 600"), "{output:?}");
    assert!(server.stop().success());
}

/// Submits job-spin to `server`: change-then-spin (installed) changes
/// `granted/a.txt` (journaled) to "half-done", then spins in apply for up
/// to 30 s. Returns the file once it has changed.
async fn spinning_in_apply(plane: &Plane, server: &Server) -> std::path::PathBuf {
    let target = plane.site.write("granted/a.txt", "alpha\n");
    let root = plane.site.root.path().display().to_string();
    let grant =
        format!("[[fs]]\nname = \"logs\"\npath = \"{root}/granted\"\naccess = \"rw\"\n[limits]\ntimeout = \"30s\"\n");
    let request = crate::control::request("job-spin", "change-then-spin", "0.1.0", "dev", 0.9, &grant, &[]);
    let client = Client { http: reqwest::Client::new(), base: server.base.clone() };
    let (status, submitted) = client.post("/v1/jobs", &plane.sign(&request)).await;
    assert_eq!(status, 201, "{submitted}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&target).unwrap() != "half-done\n" {
        assert!(Instant::now() < deadline, "apply never changed the target");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    target
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_apply_rolls_the_job_back_when_it_starts_again() {
    let (plane, _, auditor) = plane();
    plane.install("change-then-spin");
    let server = Server::start(&plane, &[]);
    let target = spinning_in_apply(&plane, &server).await;
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "half-done\n");

    // The next start rolls the job back before it says it is ready.
    let server = Server::start(&plane, &[]);
    let client = Client { http: reqwest::Client::new(), base: server.base.clone() };
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::get(format!("{}/readyz", server.base)).await.unwrap().status().as_u16() != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "alpha\n", "ready before the rollback");
    let (status, review) = client.get("/v1/jobs/job-spin", &auditor).await;
    assert_eq!((status, review["job"]["state"].as_str()), (200, Some("rolled-back")), "{review}");
    assert!(server.stop().success());
    plane.audit_verifies();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_running_jobs_the_stop_deadline_then_rolls_back_what_did_not_finish() {
    let (plane, _, _) = plane();
    plane.install("change-then-spin");
    let server = Server::start(&plane, &["--stop-deadline", "1s"]);
    let target = spinning_in_apply(&plane, &server).await;
    // 30 s of apply left; SIGTERM gives it 1 s, then rolls it back, and exits 0.
    let steps = std::sync::Arc::clone(&server.steps);
    assert!(server.stop().success());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "alpha\n", "rolled back before exit");
    assert_eq!(plane.control().job("job-spin").unwrap().state, salve::store::JobState::RolledBack);
    let steps = steps.lock().unwrap().join("\n");
    assert!(steps.contains("job job-spin: rolled-back"), "{steps}");
    plane.audit_verifies();
}

/// Every file under `dir`, with its bytes and mode.
fn tree(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, (Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let bytes = if meta.is_dir() { Vec::new() } else { std::fs::read(&path).unwrap() };
            if meta.is_dir() {
                stack.push(path.clone());
            }
            files.insert(path, (bytes, meta.permissions().mode()));
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_apart_from_state_is_only_read_and_refused_when_others_may_write_it() {
    use std::os::unix::fs::PermissionsExt;
    let site = crate::common::Site::new();
    let config = site.root.path().join("etc/salve");
    let state = site.root.path().join("var/lib/salve");
    let split = |command: &[&str]| {
        let mut salve = Command::new(env!("CARGO_BIN_EXE_salve"));
        salve.args(command).arg("--config-dir").arg(&config).arg("--state-dir").arg(&state);
        salve
    };
    let ran = |mut command: Command| {
        let output = command.output().unwrap();
        assert!(output.status.success(), "{command:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let said = ran(split(&["init"]));
    assert!(said.contains("(configuration)") && said.contains("(state)"), "{said}");
    assert!(config.join("trust.toml").exists() && config.join("keys/runner.key").exists());
    assert!(state.is_dir() && !state.join("trust.toml").exists(), "state holds no configuration");
    // A job by `salve run`, on the split layout, signed by init's dev key.
    let component = site.write("noop.component.wasm", crate::common::component_bytes("noop"));
    let manifest = site.write("playbook.toml", crate::common::manifest_text("noop"));
    let artifact = site.root.path().join("noop.wasm");
    let mut sign = Command::new(env!("CARGO_BIN_EXE_salve"));
    sign.arg("sign").arg("--key").arg(config.join("keys/dev-author.key")).arg("--manifest").arg(&manifest);
    sign.arg(&component).arg("-o").arg(&artifact);
    ran(sign);
    let grant = site.write("grant.toml", "");
    let mut run = split(&["run"]);
    run.arg(&artifact).arg("--grant").arg(&grant).args(["--environment", "dev"]);
    ran(run);
    assert!(state.join("audit.jsonl").exists() && !config.join("audit.jsonl").exists());

    // salve serve on it reads the configuration and writes only the state.
    let before = tree(&config);
    let dirs: Vec<std::ffi::OsString> =
        vec!["--config-dir".into(), config.clone().into(), "--state-dir".into(), state.clone().into()];
    let server = Server::with_args(&dirs);
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::get(format!("{}/readyz", server.base)).await.unwrap().status().as_u16() != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(server.stop().success());
    assert_eq!(tree(&config), before, "the configuration directory was written to");
    assert!(state.join("salve.db").exists());
    ran(split(&["audit", "verify"]));
    ran(split(&["jobs", "list"]));

    // Configuration another user may change: refused, naming it.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o775)).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(&dirs)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&config.display().to_string()) && stderr.contains("chmod go-w"), "{stderr}");
    // --data-dir and a split layout are one or the other.
    let output = split(&["jobs", "list", "--data-dir", "/tmp"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[test]
fn the_shipped_systemd_unit_and_sample_config_are_what_salve_takes() {
    let repo = crate::common::repo();
    salve::policy::RunnerConfig::load(&repo.join("deploy/salve.toml")).expect("the sample salve.toml loads");
    let unit = std::fs::read_to_string(repo.join("deploy/salve.service")).unwrap();
    let exec = unit.replace("\\\n", " ");
    let exec = exec.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("an ExecStart line");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(words[..2], ["/usr/local/bin/salve", "serve"], "{exec}");
    let help = Command::new(env!("CARGO_BIN_EXE_salve")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let flags: Vec<&&str> = words.iter().filter(|w| w.starts_with("--")).collect();
    assert!(flags.len() >= 6, "{flags:?}");
    for flag in flags {
        assert!(help.contains(&format!("{flag} ")), "salve serve takes no {flag}");
    }
    for line in ["ReadWritePaths=/var/lib/salve", "ProtectSystem=strict", "NoNewPrivileges=yes", "LoadCredential="] {
        assert!(unit.contains(line), "the unit lacks {line}");
    }
    // Where systemd is installed, it checks the unit too (with this binary).
    if let Ok(output) = Command::new("systemd-analyze").arg("--version").output()
        && output.status.success()
    {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("salve.service");
        std::fs::write(&copy, unit.replace("/usr/local/bin/salve", env!("CARGO_BIN_EXE_salve"))).unwrap();
        let verified = Command::new("systemd-analyze").arg("verify").arg(&copy).output().unwrap();
        assert!(verified.status.success() && verified.stderr.is_empty(), "{verified:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_public_url_a_request_signed_for_another_server_is_refused() {
    let (plane, _, auditor) = plane();
    let server = Server::start(&plane, &["--public-url", "https://runner-a.example:8750"]);
    let http = reqwest::Client::new();
    let send = |signed_for: String| {
        let mut request = http.get(format!("{}/v1/jobs", server.base));
        for (name, value) in
            salve::serve::signature::sign("GET", &signed_for, b"", &auditor, SystemTime::now()).unwrap()
        {
            request = request.header(name, value);
        }
        request.send()
    };
    // Signed for the URL clients use (as through a proxy): taken.
    let (status, body) = json(send("https://runner-a.example:8750/v1/jobs".into()).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    // Signed for what the Host header says, or for another server: refused.
    let (status, body) = json(send(format!("{}/v1/jobs", server.base)).await.unwrap()).await;
    assert_eq!(refused(status, &body, 401), "signature-invalid");
    let (status, body) = json(send("https://runner-b.example:8750/v1/jobs".into()).await.unwrap()).await;
    assert_eq!(refused(status, &body, 401), "signature-invalid");
    assert!(server.stop().success());
}
