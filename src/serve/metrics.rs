//! What `GET /metrics` says, in Prometheus's text format (0.0.4): requests
//! by route and status, refusals by the check that refused, the worker's
//! steps by outcome and how long they took, the host calls the audit log
//! recorded by interface and outcome and how long its `fdatasync`s took,
//! and (read from the store at each scrape) jobs by state and the queue's
//! depth.

use crate::audit::AuditStats;
use crate::histogram::Histogram;
use crate::store::{JobState, JobStore, StoreError};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
struct Counts {
    requests: BTreeMap<(String, u16), u64>,
    refusals: BTreeMap<&'static str, u64>,
    steps: BTreeMap<&'static str, Histogram>,
}

#[derive(Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
}

impl Metrics {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One request answered: its route (the pattern, not the path, so that
    /// job ids do not make new series) and status.
    pub fn request(&self, route: &str, status: u16) {
        *self.counts().requests.entry((route.to_string(), status)).or_default() += 1;
    }

    pub fn refusal(&self, check: &'static str) {
        *self.counts().refusals.entry(check).or_default() += 1;
    }

    /// One worker step that left its job in `state`, and how long it took.
    pub fn step(&self, state: JobState, took: Duration) {
        self.counts().steps.entry(state.name()).or_default().observe(took);
    }

    /// The exposition, with the store's counts as of now and the audit
    /// log's `audit`.
    pub fn render(&self, store: &dyn JobStore, queued: &[JobState], audit: &AuditStats) -> Result<String, StoreError> {
        let mut out = String::new();
        out.push_str("# HELP salve_jobs Jobs in the store, by state.\n# TYPE salve_jobs gauge\n");
        for state in JobState::ALL {
            let _ = writeln!(out, "salve_jobs{{state=\"{}\"}} {}", state.name(), store.count_in(&[state])?);
        }
        out.push_str("# HELP salve_queue_depth Jobs that wait: submitted, for approval, approved.\n");
        let _ = writeln!(out, "# TYPE salve_queue_depth gauge\nsalve_queue_depth {}", store.count_in(queued)?);
        let counts = self.counts();
        out.push_str("# HELP salve_http_requests_total Requests answered, by route and status.\n");
        out.push_str("# TYPE salve_http_requests_total counter\n");
        for ((route, status), n) in &counts.requests {
            let route = escaped(route);
            let _ = writeln!(out, "salve_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        out.push_str("# HELP salve_refusals_total Requests refused, by the check that refused.\n");
        out.push_str("# TYPE salve_refusals_total counter\n");
        for (check, n) in &counts.refusals {
            let _ = writeln!(out, "salve_refusals_total{{check=\"{check}\"}} {n}");
        }
        out.push_str(
            "# HELP salve_worker_step_seconds How long a worker step took, by the state it left the job in.\n",
        );
        out.push_str("# TYPE salve_worker_step_seconds histogram\n");
        for (state, histogram) in &counts.steps {
            histogram.render(&mut out, "salve_worker_step_seconds", &format!("state=\"{state}\""));
        }
        out.push_str("# HELP salve_host_calls_total Host calls the audit log recorded, by interface and outcome.\n");
        out.push_str("# TYPE salve_host_calls_total counter\n");
        for calls in &audit.calls {
            let interface = escaped(&calls.interface);
            let _ = writeln!(
                out,
                "salve_host_calls_total{{interface=\"{interface}\",outcome=\"{}\"}} {}",
                calls.outcome, calls.count
            );
        }
        out.push_str("# HELP salve_audit_sync_seconds How long each fdatasync of the audit log took.\n");
        out.push_str("# TYPE salve_audit_sync_seconds histogram\n");
        audit.sync.render(&mut out, "salve_audit_sync_seconds", "");
        Ok(out)
    }
}

/// `value` as a label value: backslash and quote escaped.
fn escaped(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}
