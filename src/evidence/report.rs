//! `salve evidence report`: a bundle as one HTML page for people.
//!
//! Self-contained: inline CSS, no script, nothing fetched (a Content
//! Security Policy that allows nothing but inline style says so to the
//! browser too). Every value from the bundle is escaped. Only a bundle
//! that verifies is shown; one that does not gives a page that says which
//! check failed and shows none of its content.

use super::{Refused, Verified};
use crate::audit::read::{is_refusal, what};
use serde_json::Value;
use std::fmt::Write as _;

const STYLE: &str = "
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #1d1d1f; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; width: 100%; margin: .5em 0; }
th, td { text-align: left; vertical-align: top; padding: .25em .5em; border-bottom: 1px solid #eee; }
th { background: #f4f4f6; font-weight: 600; }
code, pre, .mono { font-family: ui-monospace, monospace; font-size: .9em; overflow-wrap: anywhere; }
pre { background: #f7f7f9; padding: .6em; white-space: pre-wrap; }
.verdict { padding: .8em 1em; border-radius: .4em; font-weight: 600; }
.ok { background: #e6f4ea; border: 1px solid #34a853; }
.bad { background: #fce8e6; border: 1px solid #d93025; }
tr.denied td { background: #fce8e6; } .tag { font-weight: 700; color: #b3261e; }
ul.caveats li { color: #8a5a00; }
";

/// HTML-escapes `text`, with control characters made visible first.
fn esc(text: &str) -> String {
    let text = crate::text::printable(text);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// [`esc`] line by line, keeping the line breaks (for `<pre>`).
fn esc_lines(text: &str) -> String {
    text.split('\n').map(esc).collect::<Vec<_>>().join("\n")
}

/// What a control-plane record says, briefly.
fn control_what(record: &Value) -> String {
    let detail = &record["detail"];
    match record["action"].as_str().unwrap_or_default() {
        "submitted" => format!("submitted by agent {}, job hash {}", text(&detail["agent"]), text(&detail["job_hash"])),
        "decision" => {
            let decision = &detail["decision"];
            format!(
                "decision {}: {} ({})",
                text(&detail["stage"]),
                text(&decision["outcome"]),
                text(&decision["policies"])
            )
        }
        "state" => format!("{} -> {}: {}", text(&detail["from"]), text(&detail["to"]), text(&detail["reason"])),
        vote @ ("approve" | "reject") => {
            let approval = &detail["approval"];
            format!("{vote} by {} of plan {}", text(&approval["key_id"]), text(&approval["plan_hash"]))
        }
        "approvals" => format!(
            "{} approval(s) counted of {} for plan {}",
            detail["counted"].as_array().map_or(0, Vec::len),
            text(&detail["needed"]),
            text(&detail["plan_hash"])
        ),
        _ => what(record),
    }
}

/// A JSON value as text: strings as they are, the rest as JSON.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn v(value: &Value) -> String {
    esc(&text(value))
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <title>{}</title><style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n",
        esc(title)
    )
}

/// The report of a bundle: its verification, and if it verified, its content.
pub fn render(file: &str, verified: &Result<Verified, Refused>) -> String {
    let verified = match verified {
        Ok(verified) => verified,
        Err(refused) => {
            let body = format!(
                "<h1>Evidence bundle {}</h1>\n<p class=\"verdict bad\" id=\"verdict\">DOES NOT VERIFY: {}</p>\n\
                 <p>Nothing in it is shown: what a bundle that does not verify says cannot be trusted.</p>\n",
                esc(file),
                esc(&refused.to_string())
            );
            return page(&format!("Evidence bundle {file}: does not verify"), &body);
        }
    };
    let mut b = String::new();
    let records = &verified.records;
    let request = &verified.request;
    let key_name = |id: &str| {
        verified
            .keys
            .iter()
            .find(|k| k.id == id)
            .map_or_else(|| esc(id), |k| format!("{} <code>{}</code>", esc(&k.name), esc(id)))
    };
    let _ = writeln!(b, "<h1>Job {}</h1>", esc(&verified.job));
    let _ = writeln!(
        b,
        "<p class=\"verdict ok\" id=\"verdict\">VERIFIES: every record proven included in a checkpoint of {} records \
         signed by runner key <code>{}</code>{}; {} seal(s), {} decision(s) recomputed, {} vote(s) checked. \
         Its records end with the job <span id=\"state\">{}</span>.</p>",
        verified.checkpoint_size,
        esc(&verified.runner_key),
        if verified.runner_key_pinned { " (the key given)" } else { " (taken from the bundle)" },
        verified.seals,
        verified.decisions,
        verified.votes,
        esc(&verified.state)
    );
    if !verified.caveats.is_empty() {
        b.push_str("<ul class=\"caveats\">");
        for caveat in &verified.caveats {
            let _ = write!(b, "<li>{}</li>", esc(caveat));
        }
        b.push_str("</ul>\n");
    }
    let _ = writeln!(b, "<p>Exported {}.</p>", esc(&verified.exported_at));

    // The request and its evidence.
    let evidence = &request["evidence"];
    let agent = records
        .iter()
        .find(|r| r["kind"] == "control" && r["action"] == "submitted")
        .map(|r| text(&r["detail"]["agent"]))
        .unwrap_or_default();
    b.push_str("<h2>The request</h2>\n<table id=\"request\">");
    for (label, value) in [
        ("Playbook", format!("{} {}", v(&request["playbook"]["name"]), v(&request["playbook"]["version"]))),
        ("Artifact", format!("<code>{}</code>", esc(&verified.artifact.digest))),
        ("Target", format!("{} in {}", v(&request["target"]["system"]), v(&request["target"]["environment"]))),
        ("Submitted by agent", key_name(&agent)),
        ("Expires", v(&request["expires_at"])),
        ("Detector", v(&evidence["detector"])),
        ("Alert", v(&evidence["alert_id"])),
        ("Severity", v(&evidence["severity"])),
        ("Confidence", v(&evidence["confidence"])),
        ("Summary", v(&evidence["summary"])),
        ("Telemetry SHA-256", format!("<code>{}</code>", v(&evidence["telemetry_sha256"]))),
    ] {
        let _ = write!(b, "<tr><th>{label}</th><td>{value}</td></tr>");
    }
    b.push_str("</table>\n<p>Parameters:</p><table><tr><th>Name</th><th>Value</th></tr>");
    for (name, value) in request["parameters"].as_object().into_iter().flatten() {
        let _ = write!(b, "<tr><td>{}</td><td>{}</td></tr>", esc(name), v(value));
    }
    let grant = serde_json::to_string_pretty(&request["grant"]).unwrap_or_default();
    let _ = writeln!(b, "</table>\n<p>Grant (what the playbook may touch):</p><pre>{}</pre>", esc_lines(&grant));

    // The artifact.
    b.push_str("<h2>The playbook</h2>\n<p>Signed by: ");
    let signers: Vec<String> = verified.artifact.signatures.iter().map(|s| key_name(&s.key_id)).collect();
    b.push_str(&signers.join(", "));
    let _ = writeln!(
        b,
        "{}</p><details><summary>Manifest</summary><pre>{}</pre></details>",
        if verified.artifact_checked { " (the artifact's bytes checked)" } else { "" },
        esc_lines(&verified.artifact.manifest)
    );

    // Each decision, and why.
    b.push_str(
        "<h2>Policy decisions</h2>\n<table id=\"decisions\"><tr><th>Record</th><th>Time</th><th>Stage</th>\
         <th>Decision</th><th>Policies</th><th>Facts</th></tr>",
    );
    for record in records.iter().filter(|r| r["kind"] == "control" && r["action"] == "decision") {
        let (detail, decision) = (&record["detail"], &record["detail"]["decision"]);
        let verdict = match decision["outcome"].as_str() {
            Some("needs-approvals") => {
                format!("needs {} approval(s) from group {}", v(&decision["approvals"]), v(&decision["group"]))
            }
            other => esc(other.unwrap_or("?")),
        };
        let policies: Vec<String> =
            decision["policies"].as_array().into_iter().flatten().map(|p| format!("<code>{}</code>", v(p))).collect();
        let errors: Vec<String> = decision["errors"].as_array().into_iter().flatten().map(v).collect();
        let facts: Vec<String> = detail["facts"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, value)| format!("{}={}", esc(k), v(value)))
            .collect();
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{} ({})</td><td>{verdict}{}</td><td>{}<br><span class=\"mono\">policy {}</span></td>\
             <td class=\"mono\">{}</td></tr>",
            v(&record["seq"]),
            v(&record["ts"]),
            v(&detail["stage"]),
            v(&detail["action"]),
            if errors.is_empty() { String::new() } else { format!("<br>errors: {}", errors.join("; ")) },
            if policies.is_empty() { "none permitted".to_string() } else { policies.join(", ") },
            v(&decision["policy_hash"]),
            facts.join(" ")
        );
    }
    b.push_str("</table>\n");

    // The plans, as the approvers saw them.
    b.push_str("<h2>Plans</h2>\n");
    for record in records.iter().filter(|r| r["kind"] == "control" && r["action"] == "state") {
        let plan = &record["detail"]["detail"];
        let Some(changes) = plan["changes"].as_array() else { continue };
        let _ = write!(
            b,
            "<p>Plan <code>{}</code> (record {}, {}):</p><table class=\"plan\"><tr><th>Action</th><th>Target</th>\
             <th>Detail</th><th>Reversible</th></tr>",
            v(&plan["plan_hash"]),
            v(&record["seq"]),
            v(&record["ts"])
        );
        for change in changes {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                v(&change["action"]),
                v(&change["target"]),
                v(&change["detail"]),
                if change["reversible"] == true { "yes" } else { "no" }
            );
        }
        b.push_str("</table>\n");
    }

    // Votes, and the approvals that counted.
    b.push_str(
        "<h2>Approvals</h2>\n<table id=\"votes\"><tr><th>When</th><th>Approver</th><th>Vote</th><th>Plan</th>\
         <th>Reason</th><th>Valid until</th></tr>",
    );
    for record in
        records.iter().filter(|r| r["kind"] == "control" && matches!(r["action"].as_str(), Some("approve" | "reject")))
    {
        let approval = &record["detail"]["approval"];
        let when = if record["at"].is_string() { &record["at"] } else { &record["ts"] };
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            v(when),
            key_name(approval["key_id"].as_str().unwrap_or_default()),
            v(&approval["vote"]),
            v(&approval["plan_hash"]),
            v(&approval["reason"]),
            v(&approval["expires_at"])
        );
    }
    b.push_str("</table>\n");
    for record in records.iter().filter(|r| r["kind"] == "control" && r["action"] == "approvals") {
        let counted: Vec<String> = record["detail"]["counted"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|k| key_name(k.as_str().unwrap_or_default()))
            .collect();
        let _ = writeln!(
            b,
            "<p>Before apply (record {}): {} of the {} approval(s) needed counted for plan <code>{}</code>: {}.</p>",
            v(&record["seq"]),
            counted.len(),
            v(&record["detail"]["needed"]),
            v(&record["detail"]["plan_hash"]),
            counted.join(", ")
        );
    }

    // The outcome and the rollback.
    b.push_str("<h2>Outcome</h2>\n<table id=\"outcomes\"><tr><th>Record</th><th>Time</th><th>Outcome</th><th>Cause</th><th>Rollback</th></tr>");
    for record in records.iter().filter(|r| r["kind"] == "outcome") {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            v(&record["seq"]),
            v(&record["ts"]),
            v(&record["outcome"]),
            v(&record["cause"]),
            v(&record["rollback_cause"])
        );
    }
    b.push_str("</table>\n");
    let rollback: Vec<&Value> = records.iter().filter(|r| r["kind"] == "phase" && r["phase"] == "rollback").collect();
    if rollback.is_empty() {
        b.push_str("<p>No rollback ran.</p>\n");
    } else {
        let ends: Vec<String> = rollback.iter().map(|r| format!("{} at {}", v(&r["status"]), v(&r["ts"]))).collect();
        let _ = writeln!(b, "<p>Rollback: {}.</p>", ends.join(", "));
    }
    let leases: Vec<String> = verified.job_view["leases"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| format!("<code>{}</code> ({} {})", v(&l["id"]), v(&l["credential"]), v(&l["kind"])))
        .collect();
    let _ = writeln!(
        b,
        "<p>Credential leases: {}.</p>",
        if leases.is_empty() { "none".to_string() } else { leases.join(", ") }
    );

    // Every record, in order.
    let denied = records.iter().filter(|r| is_refusal(r)).count();
    let _ = write!(
        b,
        "<h2>Timeline</h2>\n<p>{} records; {} denied or refused.</p>\n<table id=\"timeline\"><tr><th>Record</th>\
         <th>Time</th><th>Kind</th><th>What</th></tr>",
        records.len(),
        denied
    );
    for record in records {
        let refused = is_refusal(record);
        let _ = write!(
            b,
            "<tr{}><td>{}</td><td>{}</td><td>{}{}</td><td class=\"mono\">{}</td></tr>",
            if refused { " class=\"denied\"" } else { "" },
            v(&record["seq"]),
            v(&record["ts"]),
            if refused { "<span class=\"tag\">DENIED</span> " } else { "" },
            v(&record["kind"]),
            esc(&if record["kind"] == "control" { control_what(record) } else { what(record) })
        );
    }
    b.push_str("</table>\n");

    b.push_str("<h2>Keys</h2>\n<table id=\"keys\"><tr><th>Id</th><th>Name</th><th>Role</th><th>Environments</th><th>Groups</th></tr>");
    for key in &verified.keys {
        let _ = write!(
            b,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&key.id),
            esc(&key.name),
            key.role,
            esc(&key.environments.join(", ")),
            esc(&key.groups.join(", "))
        );
    }
    b.push_str("</table>\n");
    page(&format!("Job {}: evidence", verified.job), &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_escaped() {
        assert_eq!(
            esc("<img src=x onerror='a'>&\"\u{1b}[2K"),
            "&lt;img src=x onerror=&#39;a&#39;&gt;&amp;&quot;\\u{1b}[2K"
        );
    }

    #[test]
    fn a_bundle_that_does_not_verify_shows_nothing_but_that() {
        let refused = Refused { check: super::super::Check::Inclusion, reason: "record 7 <b>".into() };
        let html = render("b.tar", &Err(refused));
        assert!(html.contains("DOES NOT VERIFY: the inclusion check failed: record 7 &lt;b&gt;"), "{html}");
        assert!(!html.contains("<script") && html.contains("default-src 'none'"));
    }
}
