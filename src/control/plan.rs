//! A job's plan as approvers review it: its changes as JSON, and the hash
//! an approval is bound to.

use crate::bindings::Change;
use serde_json::{Value, json};

/// The hash a plan is known by: SHA-256 of its changes as canonical JSON.
pub fn plan_hash(changes: &Value) -> String {
    crate::host::digest(changes.to_string().as_bytes())
}

/// The changes a plan reported, as JSON.
pub fn plan_json(changes: &[Change]) -> Value {
    Value::Array(
        changes
            .iter()
            .map(|c| json!({ "action": c.action, "target": c.target, "detail": c.detail, "reversible": c.reversible }))
            .collect(),
    )
}
