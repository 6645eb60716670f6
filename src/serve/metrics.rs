//! What `GET /metrics` says, in Prometheus's text format (0.0.4): requests
//! by route and status, refusals by the check that refused, the worker's
//! steps by outcome and how long they took, and (read from the store at
//! each scrape) jobs by state and the queue's depth.

use crate::store::{JobState, JobStore, StoreError};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the step-duration buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

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
        let mut counts = self.counts();
        let histogram = counts.steps.entry(state.name()).or_default();
        let seconds = took.as_secs_f64();
        for (bucket, bound) in histogram.counts.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    /// The exposition, with the store's counts as of now.
    pub fn render(&self, store: &dyn JobStore, queued: &[JobState]) -> Result<String, StoreError> {
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
            let route = route.replace('\\', "\\\\").replace('"', "\\\"");
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
            for (bound, n) in BUCKETS.iter().zip(histogram.counts) {
                let _ = writeln!(out, "salve_worker_step_seconds_bucket{{state=\"{state}\",le=\"{bound}\"}} {n}");
            }
            let count = histogram.count;
            let _ = writeln!(out, "salve_worker_step_seconds_bucket{{state=\"{state}\",le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "salve_worker_step_seconds_sum{{state=\"{state}\"}} {}", histogram.sum);
            let _ = writeln!(out, "salve_worker_step_seconds_count{{state=\"{state}\"}} {count}");
        }
        Ok(out)
    }
}
