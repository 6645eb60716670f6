//! The API's OpenAPI 3.0 document, generated from the types the handlers
//! take and answer with (their JSON Schemas, by schemars), served at
//! `/v1/openapi.json` and published as `schemas/openapi.json` (a test
//! fails when the two differ).

use crate::approval::Approval;
use crate::control::{Review, Submitted};
use crate::job::{JobState, SignedJob};
use crate::store::JobRecord;
use schemars::generate::{Contract, SchemaSettings};
use serde_json::{Value, json};

/// The document.
pub fn document() -> Value {
    let mut settings = SchemaSettings::openapi3();
    settings.contract = Contract::Serialize;
    let mut generator = settings.into_generator();
    let schema = |value: schemars::Schema| serde_json::to_value(value).expect("a schema is JSON");
    let envelope = schema(generator.subschema_for::<SignedJob>());
    let approval = schema(generator.subschema_for::<Approval>());
    let submitted = schema(generator.subschema_for::<Submitted>());
    let job = schema(generator.subschema_for::<JobRecord>());
    let review = schema(generator.subschema_for::<Review>());
    let state = schema(generator.subschema_for::<JobState>());
    let mut schemas = generator.take_definitions(true);
    schemas.insert("Error".into(), error_schema());

    let error = |what: &str| json!({ "description": what, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    let signed = json!([{ "httpSignature": [] }]);
    let id = json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } });
    let busy = |what: &str| {
        let mut response = error(what);
        response["headers"] =
            json!({ "Retry-After": { "description": "seconds to wait", "schema": { "type": "integer" } } });
        response
    };
    let read_errors = |mut responses: serde_json::Map<String, Value>| {
        responses.insert("400".into(), error("a malformed request or query"));
        responses.insert(
            "429".into(),
            busy("this key holds its share of recent signed requests, open event streams or evidence exports; retry after Retry-After seconds"),
        );
        responses.insert("401".into(), error("unsigned, or a signature that does not verify, is stale or replayed"));
        responses.insert("403".into(), error("a key whose role does not read the API"));
        responses.insert("503".into(), error("salve or what it stands on failed; retry later"));
        Value::Object(responses)
    };
    let ok = |description: &str, media: &str, schema: Value| {
        let mut responses = serde_json::Map::new();
        responses
            .insert("200".into(), json!({ "description": description, "content": { media: { "schema": schema } } }));
        responses
    };
    let with_404 = |responses: Value| {
        let mut responses = responses.as_object().cloned().unwrap_or_default();
        responses.insert("404".into(), error("no such job, or one this key may not see"));
        Value::Object(responses)
    };
    let text = json!({ "type": "string" });
    // One Server-Sent Event: `event: transition`, its data a transition.
    let event = json!({
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": { "type": "string", "enum": ["transition"] },
            "data": { "type": "string", "description": "the transition as JSON: from, to, at (Unix ms), reason" }
        }
    });
    let mut checkpoint = read_errors(ok("the note", "text/plain", text.clone()));
    checkpoint["404"] = error("no checkpoint yet");
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "salve",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The control plane of a salve runner (`salve serve`). Writes carry their own signatures (a job envelope, a vote); every other call is signed with an HTTP message signature (RFC 9421) by a key of the runner's trust store: see the README."
        },
        "paths": {
            "/v1/jobs": {
                "post": {
                    "operationId": "submitJob",
                    "summary": "Submit a job envelope an agent signed",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": envelope } } },
                    "responses": {
                        "201": { "description": "taken (or denied by the policy: see state)", "content": { "application/json": { "schema": submitted } } },
                        "400": error("not an envelope, a bad field, a replayed nonce"),
                        "403": error("refused: signature, trust, policy, version floor, installed artifact"),
                        "413": error("a body over the limit"),
                        "429": busy("the queue is full; retry after Retry-After seconds"),
                        "503": error("salve or what it stands on failed; retry later")
                    }
                },
                "get": {
                    "operationId": "listJobs",
                    "summary": "The jobs this key may see, newest first",
                    "security": signed,
                    "parameters": [
                        { "name": "state", "in": "query", "required": false, "schema": state },
                        { "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } },
                        { "name": "after", "in": "query", "required": false, "description": "the `next` of the page before", "schema": { "type": "string", "pattern": "^-?[0-9]{1,15}\\..+$" } }
                    ],
                    "responses": read_errors(ok("a page of the jobs; `next`, when set, is where the next page starts", "application/json", json!({
                        "type": "object", "required": ["jobs", "next"], "properties": {
                            "jobs": { "type": "array", "items": job.clone() },
                            "next": { "type": "string", "nullable": true }
                        }
                    })))
                }
            },
            "/v1/jobs/{id}": {
                "get": {
                    "operationId": "showJob",
                    "summary": "One job for review: as its agent signed it, its plan, votes, history, leases",
                    "security": signed,
                    "parameters": [id],
                    "responses": with_404(read_errors(ok("the review", "application/json", review)))
                }
            },
            "/v1/jobs/{id}/votes": {
                "post": {
                    "operationId": "voteOnJob",
                    "summary": "Record an approval or rejection an approver signed",
                    "parameters": [id],
                    "requestBody": { "required": true, "content": { "application/json": { "schema": approval } } },
                    "responses": {
                        "200": { "description": "recorded; the job as it is now", "content": { "application/json": { "schema": job } } },
                        "400": error("not a vote"),
                        "403": error("refused: the key, the group, the plan, a second vote"),
                        "404": error("no such job"),
                        "409": error("the job moved meanwhile"),
                        "413": error("a body over the limit"),
                        "503": error("salve or what it stands on failed; retry later")
                    }
                }
            },
            "/v1/jobs/{id}/evidence": {
                "get": {
                    "operationId": "exportEvidence",
                    "summary": "The job's evidence bundle (a tar archive), once its records are checkpointed",
                    "security": signed,
                    "parameters": [id, { "name": "artifact", "in": "query", "required": false, "schema": { "type": "boolean" } }],
                    "responses": with_404(read_errors(ok("the bundle", "application/x-tar", json!({ "type": "string", "format": "binary" }))))
                }
            },
            "/v1/jobs/{id}/events": {
                "get": {
                    "operationId": "jobEvents",
                    "summary": "The job's transitions as Server-Sent Events; the stream ends after a final state",
                    "security": signed,
                    "parameters": [id],
                    "responses": with_404(read_errors(ok("events", "text/event-stream", event)))
                }
            },
            "/v1/audit/checkpoint": {
                "get": {
                    "operationId": "latestCheckpoint",
                    "summary": "The audit log's latest signed checkpoint (a C2SP signed note)",
                    "security": signed,
                    "responses": checkpoint
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus text format",
                    "security": signed,
                    "responses": read_errors(ok("the metrics", "text/plain", text.clone()))
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": { "200": { "description": "the document", "content": { "application/json": { "schema": { "type": "object" } } } } }
                }
            },
            "/healthz": {
                "get": { "operationId": "healthz", "summary": "Up", "responses": { "200": { "description": "up", "content": { "text/plain": { "schema": text.clone() } } } } }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Ready: recovery done, not stopping",
                    "responses": {
                        "200": { "description": "ready", "content": { "text/plain": { "schema": text.clone() } } },
                        "503": { "description": "recovering or stopping", "content": { "text/plain": { "schema": text } } }
                    }
                }
            }
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "httpSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Signature",
                    "description": "RFC 9421: Signature-Input covering \"@method\", \"@target-uri\" and \"content-digest\" (RFC 9530, sha-256), with created, nonce and keyid, Ed25519, by a key of the runner's trust store."
                }
            }
        }
    })
}

fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "check", "message"],
                "properties": {
                    "code": { "type": "string", "description": "whose fault: input, unauthenticated, forbidden, refused, not-found, conflict, tampered, too-large, timeout, busy, infrastructure" },
                    "check": { "type": "string", "description": "the check that refused, stable" },
                    "message": { "type": "string", "description": "what was wrong and what to do" }
                }
            }
        }
    })
}
