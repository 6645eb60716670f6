//! The routes under `/v1`, and who may call each.
//!
//! | route | authenticated by | who |
//! |---|---|---|
//! | `POST /v1/jobs` | the envelope's signature | an agent trusted for the job's environment |
//! | `POST /v1/jobs/{id}/votes` | the vote's signature | an approver the policy asks for |
//! | `GET /v1/jobs` | RFC 9421 | what the caller may see (below) |
//! | `GET /v1/jobs/{id}` | RFC 9421 | the same |
//! | `GET /v1/jobs/{id}/evidence` | RFC 9421 | the same |
//! | `GET /v1/jobs/{id}/events` | RFC 9421 | the same |
//! | `GET /v1/audit/checkpoint` | RFC 9421 | any agent, approver or auditor key |
//! | `GET /metrics` | RFC 9421 | any agent, approver or auditor key |
//! | `GET /v1/openapi.json` | nothing | anyone (the API's description) |
//! | `GET /healthz`, `GET /readyz` | nothing | anyone (they say nothing but up / ready) |
//!
//! An agent sees the jobs it submitted; an approver the jobs of the
//! environments it is trusted for whose approvals (if any) its groups may
//! give; an auditor every job. A job the caller may not see answers as
//! if it did not exist.

use super::Shared;
use super::error::ApiError;
use super::quota::{Held, Slot};
use super::signature::{self, Message};
use crate::approval::Approval;
use crate::control::ControlPlane;
use crate::job::SignedJob;
use crate::keys::Role;
use crate::policy::Verdict;
use crate::store::{Cursor, JobRecord, JobState, JobStore, Listing, StoreError};
use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(show))
        .route("/v1/jobs/{id}/votes", post(vote))
        .route("/v1/jobs/{id}/evidence", get(evidence))
        .route("/v1/jobs/{id}/events", get(events))
        .route("/v1/audit/checkpoint", get(checkpoint))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(|| async { Json(super::openapi::document()) }))
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&shared), track))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .fallback(|| async { ApiError::not_found("route", "no such route; the API is under /v1 (see the README)") })
        .with_state(shared)
}

/// The key that signed a read, and what it may see.
struct Caller {
    id: String,
    role: Role,
    environments: Vec<String>,
    groups: Vec<String>,
}

impl Caller {
    fn of(key: &crate::trust::TrustedKey) -> Caller {
        Caller {
            id: key.entry.id.clone(),
            role: key.entry.role,
            environments: key.entry.environments.clone(),
            groups: key.entry.groups.clone(),
        }
    }

    /// A page of the jobs this caller sees, newest first, from `listing`
    /// on, and the cursor of the next page when there may be one. The
    /// store selects the agent's jobs, or the approver's environments;
    /// an approver's groups are checked here, over at most
    /// [`LIST_LOOKS`] pages of the store: a page may then come short, with
    /// a cursor to go on from.
    fn list(
        &self,
        store: &dyn JobStore,
        mut listing: Listing,
        limit: u32,
    ) -> Result<(Vec<JobRecord>, Option<Cursor>), StoreError> {
        match self.role {
            Role::Auditor => {}
            Role::Agent => listing.agent = Some(self.id.clone()),
            Role::Approver if self.environments.iter().any(|e| e == "*") => {}
            Role::Approver => listing.environments = Some(self.environments.clone()),
            Role::Author | Role::Runner => return Ok((Vec::new(), None)),
        }
        let mut jobs = Vec::new();
        for _ in 0..LIST_LOOKS {
            let page = store.list(&listing, limit)?;
            let Some(last) = page.last() else { return Ok((jobs, None)) };
            listing.after = Some(Cursor::of(last));
            let full = page.len() == limit as usize;
            for job in page {
                if !self.sees(&job) {
                    continue;
                }
                let cursor = Cursor::of(&job);
                jobs.push(job);
                if jobs.len() == limit as usize {
                    return Ok((jobs, Some(cursor)));
                }
            }
            if !full {
                return Ok((jobs, None));
            }
        }
        Ok((jobs, listing.after))
    }

    fn sees(&self, job: &JobRecord) -> bool {
        match self.role {
            Role::Auditor => true,
            Role::Agent => job.agent == self.id,
            Role::Approver => {
                let environment = self.environments.iter().any(|e| e == "*" || *e == job.environment);
                let group = match job.decision.as_ref().map(|d| &d.verdict) {
                    Some(Verdict::NeedsApprovals { group, .. }) => self.groups.contains(group),
                    _ => true,
                };
                environment && group
            }
            Role::Author | Role::Runner => false,
        }
    }
}

/// The body, read within the limits.
async fn body(shared: &Shared, body: Body) -> Result<Bytes, ApiError> {
    let limit = shared.limits.body;
    match tokio::time::timeout(shared.limits.body_timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "body-timeout",
            format!("the body did not arrive within {:?}", shared.limits.body_timeout),
        )),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "body-limit",
            format!("the body is larger than {limit} bytes, or was cut off"),
        )),
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

/// Checks a request's signature and that its key may read.
fn authenticate(shared: &Shared, control: &ControlPlane, parts: &Parts, body: &[u8]) -> Result<Caller, ApiError> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let target_uri = match &shared.origin {
        Some(origin) => format!("{origin}{path}"),
        None => {
            let host = parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .ok_or_else(|| ApiError::input("host", "the request has no Host header"))?;
            if host.is_empty() || host.contains(['/', '?', '#', '@', '\\']) {
                return Err(ApiError::input("host", "the Host header is not a host and port"));
            }
            format!("{}://{host}{path}", shared.scheme)
        }
    };
    let message = Message { method: parts.method.as_str(), target_uri: &target_uri, headers: &parts.headers };
    let readers = [Role::Agent, Role::Approver, Role::Auditor];
    let key = signature::verify(&message, body, &control.trust, &shared.nonces, &readers, SystemTime::now())?;
    Ok(Caller::of(key))
}

/// Runs `f` on the control plane off the async threads (SQLite, files and
/// signature checks block).
async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&Shared, &ControlPlane) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || {
        let control = shared.control.read().unwrap_or_else(|e| e.into_inner());
        f(&shared, &control)
    })
    .await
    .map_err(|e| ApiError::internal(format!("a request handler failed: {e}")))?
}

/// A signed read of what `caller` may see: the request's parts and body
/// are checked before `f` runs.
async fn read<T: Send + 'static>(
    shared: &Arc<Shared>,
    request: Request,
    f: impl FnOnce(&Shared, &ControlPlane, Caller) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let (parts, raw) = request.into_parts();
    let bytes = body(shared, raw).await?;
    blocking(shared, move |shared, control| {
        let caller = authenticate(shared, control, &parts, &bytes)?;
        f(shared, control, caller)
    })
    .await
}

fn unseen(id: &str, caller: &Caller) -> ApiError {
    ApiError::not_found("job-unknown", format!("no job {id} that key {} may see", caller.id))
}

/// The job `id`, if `caller` may see it.
fn visible(control: &ControlPlane, id: &str, caller: &Caller) -> Result<JobRecord, ApiError> {
    match control.store.job(id).map_err(crate::control::ControlError::from)? {
        Some(job) if caller.sees(&job) => Ok(job),
        _ => Err(unseen(id, caller)),
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(bytes).map_err(|_| ApiError::input("body", "the body is not UTF-8 JSON"))
}

/// The states of a job that waits: for the worker, or for people.
const QUEUED: [JobState; 3] = [JobState::Submitted, JobState::WaitingApproval, JobState::Approved];
/// What a full queue tells a client to wait, in seconds.
const RETRY_AFTER_S: u64 = 5;

async fn submit(State(shared): State<Arc<Shared>>, request: Request) -> Result<Response, ApiError> {
    let bytes = body(&shared, request.into_body()).await?;
    let envelope = SignedJob::parse(utf8(&bytes)?).map_err(crate::control::ControlError::from)?;
    let submitted = blocking(&shared, move |shared, control| {
        let waiting = control.store.count_in(&QUEUED).map_err(crate::control::ControlError::from)?;
        if waiting >= shared.limits.queue {
            return Err(ApiError {
                retry_after: Some(RETRY_AFTER_S),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "busy",
                    "queue-full",
                    format!("{waiting} jobs are waiting, the most this runner queues; retry later"),
                )
            });
        }
        Ok(control.submit(&envelope, SystemTime::now())?)
    })
    .await?;
    shared.work.notify_one();
    Ok((StatusCode::CREATED, Json(submitted)).into_response())
}

async fn vote(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<JobRecord>, ApiError> {
    let bytes = body(&shared, request.into_body()).await?;
    let approval: Approval = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::input("vote", format!("the body is not a signed vote (see `salve approve --help`): {e}"))
    })?;
    let job = blocking(&shared, move |_, control| Ok(control.record_vote(&id, &approval, SystemTime::now())?)).await?;
    shared.moved(&job.id);
    shared.work.notify_one();
    Ok(Json(job))
}

struct ListQuery {
    state: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
}

/// The most jobs one list answers with.
const MAX_LIST: u32 = 1000;

/// How many pages of the store one listing looks at, at most, for the jobs
/// an approver's groups let it see.
const LIST_LOOKS: usize = 10;

async fn list(State(shared): State<Arc<Shared>>, request: Request) -> Result<Json<serde_json::Value>, ApiError> {
    let query = request.uri().query().unwrap_or("");
    let query: ListQuery = parse_query(query)?;
    let state =
        query.state.as_deref().map(str::parse::<JobState>).transpose().map_err(|e| ApiError::input("query", e))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::input("query", format!("limit is from 1 to {MAX_LIST}, not {limit}")));
    }
    let after =
        query.after.as_deref().map(str::parse::<Cursor>).transpose().map_err(|e| ApiError::input("query", e))?;
    let (jobs, next) = read(&shared, request, move |_, control, caller| {
        let listing = Listing { state, after, ..Listing::default() };
        Ok(caller.list(&*control.store, listing, limit).map_err(crate::control::ControlError::from)?)
    })
    .await?;
    Ok(Json(serde_json::json!({ "jobs": jobs, "next": next.map(|cursor| cursor.to_string()) })))
}

fn parse_query(query: &str) -> Result<ListQuery, ApiError> {
    let mut out = ListQuery { state: None, limit: None, after: None };
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "state" => out.state = Some(value.into_owned()),
            "after" => out.after = Some(value.into_owned()),
            "limit" => {
                out.limit = Some(value.parse().map_err(|_| ApiError::input("query", "limit is a whole number"))?)
            }
            other => {
                return Err(ApiError::input(
                    "query",
                    format!("unknown query parameter {other:?}: use state, limit, after"),
                ));
            }
        }
    }
    Ok(out)
}

async fn show(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<crate::control::Review>, ApiError> {
    let review = read(&shared, request, move |_, control, caller| {
        visible(control, &id, &caller)?;
        Ok(control.review(&id)?)
    })
    .await?;
    Ok(Json(review))
}

async fn evidence(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let with_artifact = match request.uri().query().unwrap_or("") {
        "" | "artifact=false" => false,
        "artifact=true" => true,
        other => {
            return Err(ApiError::input(
                "query",
                format!("unknown query {other:?}: use artifact=true or artifact=false"),
            ));
        }
    };
    let (control, slot) = read(&shared, request, move |shared, control, caller| {
        visible(control, &id, &caller)?;
        let slot = shared.quotas.take(&caller.id, Held::Export)?;
        Ok(((control.clone(), id), slot))
    })
    .await?;
    // An export reads the whole audit log: on a copy of the control plane,
    // so that the reloads (which wait for the lock) and every other request
    // (which would wait behind them) do not wait for it.
    let tar = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let (control, id) = control;
        crate::evidence::export(&control, &id, with_artifact)
    })
    .await
    .map_err(|e| ApiError::internal(format!("an evidence export failed: {e}")))??;
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], tar).into_response())
}

/// How long an event stream waits for a change before it looks anyway (a
/// change the server did not make: another process's vote, say).
const EVENTS_LOOK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// What an event stream has sent and has yet to send.
struct Events {
    shared: Arc<Shared>,
    id: String,
    /// The key that opened the stream, and its role: the stream ends when
    /// that key is no longer trusted, or no longer sees the job.
    key: (String, Role),
    moved: super::Watch,
    sent: usize,
    pending: std::collections::VecDeque<crate::store::Transition>,
    done: bool,
    _slot: Slot,
}

/// The job's transitions as Server-Sent Events (`event: transition`, the
/// transition as JSON): those so far, then each new one; the stream ends
/// after a final state, when the key that opened it is revoked, expires or
/// no longer sees the job (its environments or groups changed), or when
/// the server stops.
async fn events(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let job = id.clone();
    // Subscribed before the history is read: a change after it wakes us.
    let moved = shared.watch(&id);
    let (history, key, slot) = read(&shared, request, move |shared, control, caller| {
        visible(control, &job, &caller)?;
        let slot = shared.quotas.take(&caller.id, Held::Stream)?;
        let history = control.store.history(&job).map_err(crate::control::ControlError::from)?;
        Ok((history, (caller.id, caller.role), slot))
    })
    .await?;
    let start = Events { shared, id, key, moved, sent: 0, pending: history.into(), done: false, _slot: slot };
    let stream = futures_util::stream::unfold(start, |mut events| async move {
        loop {
            if let Some(transition) = events.pending.pop_front() {
                events.sent += 1;
                events.done |= transition.to.is_final();
                let event = Event::default().event("transition").json_data(&transition).ok()?;
                return Some((Ok::<_, std::convert::Infallible>(event), events));
            }
            if events.done || events.shared.stopping.load(Ordering::SeqCst) {
                return None;
            }
            // A change (the server stopping is one), or time to look anyway.
            let _ = tokio::time::timeout(EVENTS_LOOK_EVERY, events.moved.changed()).await;
            let (shared, id, (key, role)) = (Arc::clone(&events.shared), events.id.clone(), events.key.clone());
            let history = tokio::task::spawn_blocking(move || {
                // The key may still see the job, as the trust store says now.
                let control = shared.control.read().unwrap_or_else(|e| e.into_inner());
                let Ok(key) = control.trust.check_role(&key, role, SystemTime::now()) else { return Ok(None) };
                match control.store.job(&id)? {
                    Some(job) if Caller::of(key).sees(&job) => control.store.history(&id).map(Some),
                    _ => Ok(None),
                }
            })
            .await;
            let Ok(Ok(Some(history))) = history else { return None };
            let sent = events.sent;
            events.pending.extend(history.into_iter().skip(sent));
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

async fn checkpoint(State(shared): State<Arc<Shared>>, request: Request) -> Result<Response, ApiError> {
    let note = read(&shared, request, |shared, _, _| Ok(shared.audit.latest_checkpoint())).await?;
    match note {
        Some(note) => Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response()),
        None => Err(ApiError::not_found(
            "checkpoint",
            "the audit log has no signed checkpoint yet: the runner has no key, or has sealed no job",
        )),
    }
}

/// Counts each request answered on a route, and each refusal.
async fn track(State(shared): State<Arc<Shared>>, request: Request, next: axum::middleware::Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "?".to_string(), |path| path.as_str().to_string());
    let response = next.run(request).await;
    shared.metrics.request(&route, response.status().as_u16());
    if let Some(super::error::Refusal(check)) = response.extensions().get() {
        shared.metrics.refusal(check);
    }
    response
}

async fn metrics(State(shared): State<Arc<Shared>>, request: Request) -> Result<Response, ApiError> {
    let text = read(&shared, request, |shared, control, _| {
        let audit = shared.audit.stats();
        Ok(shared
            .metrics
            .render(control.store.as_ref(), &QUEUED, &audit)
            .map_err(crate::control::ControlError::from)?)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready.load(Ordering::SeqCst) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: the worker is recovering or stopping\n").into_response()
    }
}
