//! Reading the log for people: records filtered by job, time, phase and
//! refusal, each told in one line (`salve audit show` and `salve audit
//! tail`). Reading checks nothing: `salve audit verify` does.
//!
//! # Security
//! Records hold text from playbooks and agents (log messages, reasons,
//! paths). [`describe`] passes every value through
//! [`crate::text::printable`], so a record cannot move the cursor, erase a
//! line or forge another.

use crate::text::printable;
use crate::time::Timestamp;
use serde_json::Value;
use std::collections::HashMap;

/// Which records to show. Every set field must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub job: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Only refusals: denied host calls, refused jobs, suppressed refusals.
    pub denied: bool,
    /// Only records of this phase (`plan`, `apply`, `verify`, `rollback`).
    pub phase: Option<String>,
}

/// Follows the records of a log in order and tells which match a
/// [`Filter`]: a host call's phase is the one its job last started.
#[derive(Default)]
pub struct Reader {
    filter: Filter,
    phases: HashMap<String, String>,
}

impl Reader {
    pub fn new(filter: Filter) -> Reader {
        Reader { filter, phases: HashMap::new() }
    }

    /// Whether `record` (the next one of the log) matches.
    pub fn matches(&mut self, record: &Value) -> bool {
        let job = record["job"].as_str();
        let kind = record["kind"].as_str().unwrap_or_default();
        if let (Some(job), "phase") = (job, kind)
            && record["status"] == "started"
            && let Some(phase) = record["phase"].as_str()
        {
            self.phases.insert(job.to_string(), phase.to_string());
        }
        let filter = &self.filter;
        if filter.job.as_deref().is_some_and(|wanted| job != Some(wanted)) {
            return false;
        }
        if filter.since.is_some() || filter.until.is_some() {
            let Some(at) = record["ts"].as_str().and_then(|ts| Timestamp::parse_rfc3339(ts).ok()) else {
                return false;
            };
            if filter.since.is_some_and(|since| at < since) || filter.until.is_some_and(|until| at > until) {
                return false;
            }
        }
        if filter.denied && !is_refusal(record) {
            return false;
        }
        if let Some(wanted) = &filter.phase {
            let phase = record["phase"].as_str().or_else(|| job.and_then(|j| self.phases.get(j)).map(String::as_str));
            let in_phase = matches!(kind, "phase" | "call" | "intent" | "journal" | "log" | "output");
            if !in_phase || phase != Some(wanted.as_str()) {
                return false;
            }
        }
        true
    }
}

/// A denied host call, a refused job, or refusals past the bound.
pub fn is_refusal(record: &Value) -> bool {
    match record["kind"].as_str() {
        Some("call") => record["outcome"]["denied"].is_string(),
        Some("refused") => true,
        Some("phase") => record["status"] == "refusals-suppressed",
        _ => false,
    }
}

/// One line for a person: `SEQ TIME JOB KIND what`, every value escaped.
pub fn describe(record: &Value) -> String {
    let line = format!(
        "{:>6} {} {} {} {}",
        record["seq"].as_u64().map_or_else(|| "?".to_string(), |seq| seq.to_string()),
        record["ts"].as_str().unwrap_or_default(),
        record["job"].as_str().unwrap_or("-"),
        record["kind"].as_str().unwrap_or("?"),
        what(record),
    );
    printable(&line).into_owned()
}

/// What a record says, in a few words (not escaped: see [`describe`]).
pub fn what(record: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    match record["kind"].as_str().unwrap_or("?") {
        "call" => {
            let outcome = match &record["outcome"] {
                Value::String(s) => s.clone(),
                Value::Object(map) => map.iter().map(|(k, v)| format!("{k}: {}", text(v))).collect(),
                other => other.to_string(),
            };
            let marker = if is_refusal(record) { "DENIED " } else { "" };
            format!(
                "{marker}{}.{} {} -> {outcome}",
                text(&record["interface"]),
                text(&record["function"]),
                record["args"]
            )
        }
        "intent" => format!("{}.{} {}", text(&record["interface"]), text(&record["function"]), record["args"]),
        "phase" => {
            let detail = text(&record["detail"]);
            format!(
                "{} {}{}",
                text(&record["phase"]),
                text(&record["status"]),
                if detail.is_empty() { detail } else { format!(": {detail}") }
            )
        }
        "log" => format!("{} {}: {}", text(&record["phase"]), text(&record["level"]), text(&record["message"])),
        "outcome" => {
            let mut line = text(&record["outcome"]);
            for field in ["cause", "rollback_cause"] {
                if let Some(cause) = record[field].as_str() {
                    line.push_str(&format!(" ({}: {cause})", field.replace('_', " ")));
                }
            }
            line
        }
        "refused" => format!("REFUSED {}: {}", text(&record["playbook"]), text(&record["reason"])),
        "job" => format!(
            "{} {} on {} in {}",
            text(&record["mode"]),
            text(&record["playbook"]),
            text(&record["target"]),
            text(&record["environment"])
        ),
        _ => {
            let mut rest = record.as_object().cloned().unwrap_or_default();
            for field in ["seq", "prev", "ts", "job", "job_prev", "kind", "hash", "mac"] {
                rest.remove(field);
            }
            Value::Object(rest).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calls_take_the_phase_their_job_last_started_and_filters_combine() {
        let records = [
            json!({"seq":1,"ts":"2026-12-02T10:00:00Z","job":"a","kind":"phase","phase":"apply","status":"started"}),
            json!({"seq":2,"ts":"2026-12-02T10:00:01Z","job":"a","kind":"call","interface":"fs","function":"stat","args":{},"outcome":{"denied":"no"}}),
            json!({"seq":3,"ts":"2026-12-02T10:00:02Z","job":"b","kind":"call","interface":"fs","function":"stat","args":{},"outcome":"ok"}),
            json!({"seq":4,"ts":"2026-12-02T10:00:03Z","job":"a","kind":"phase","phase":"rollback","status":"started"}),
            json!({"seq":5,"ts":"2026-12-02T10:00:04Z","job":"a","kind":"call","interface":"fs","function":"write","args":{},"outcome":"ok"}),
        ];
        let shown = |filter: Filter| {
            let mut reader = Reader::new(filter);
            records.iter().filter(|r| reader.matches(r)).map(|r| r["seq"].as_u64().unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(shown(Filter { job: Some("a".into()), ..Filter::default() }), [1, 2, 4, 5]);
        assert_eq!(shown(Filter { denied: true, ..Filter::default() }), [2]);
        assert_eq!(shown(Filter { phase: Some("rollback".into()), ..Filter::default() }), [4, 5]);
        let since = Timestamp::parse_rfc3339("2026-12-02T10:00:02Z").ok();
        let until = Timestamp::parse_rfc3339("2026-12-02T10:00:03+00:00").ok();
        assert_eq!(shown(Filter { since, until, ..Filter::default() }), [3, 4]);
    }

    #[test]
    fn a_record_cannot_forge_a_line() {
        let record = json!({"seq":7,"ts":"t","job":"a","kind":"log","phase":"apply","level":"info",
                            "message":"done\n     8 t a outcome succeeded\u{1b}[2K"});
        let line = describe(&record);
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line}");
        assert!(line.starts_with("     7 t a log apply info: done"), "{line}");
        let denied = json!({"seq":2,"ts":"t","job":"a","kind":"call","interface":"fs","function":"stat",
                            "args":{"path":"x"},"outcome":{"denied":"outside"}});
        assert!(
            describe(&denied).contains("DENIED fs.stat {\"path\":\"x\"} -> denied: outside"),
            "{}",
            describe(&denied)
        );
    }
}
