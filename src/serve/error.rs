//! The API's errors: a status, a stable `code` (whose fault: `input`,
//! `refused`, `unauthenticated`, `forbidden`, `not-found`, `conflict`,
//! `tampered`, `too-large`, `timeout`, `infrastructure`), the `check` that
//! refused (stable too), and a message that says what to do.

use super::signature::SignatureError;
use crate::control::ControlError;
use crate::evidence::EvidenceError;
use crate::fault::{Classify, Fault};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Marks a response as a refusal by `check`, for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct Refusal(pub &'static str);

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub check: &'static str,
    pub message: String,
    /// Seconds after which the same request may succeed (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, check: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, check, message: message.into(), retry_after: None }
    }

    pub fn input(check: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "input", check, message)
    }

    pub fn forbidden(check: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", check, message)
    }

    pub fn not_found(check: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", check, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "infrastructure", "server", message)
    }

    fn from_fault(fault: Fault, check: &'static str, message: String) -> ApiError {
        let status = StatusCode::from_u16(fault.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError { status, code: fault.name(), check, message, retry_after: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "check": self.check, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        response.extensions_mut().insert(Refusal(self.check));
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Signature realm=\"salve\""),
            );
        }
        response
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        let message = crate::text::printable(&e.to_string()).into_owned();
        match e.check() {
            // Over HTTP a job that is not there is a resource not found (a
            // vote for it, say), as it is for the reads.
            "job-unknown" => ApiError::not_found("job-unknown", message),
            check => ApiError::from_fault(e.fault(), check, message),
        }
    }
}

impl From<EvidenceError> for ApiError {
    fn from(e: EvidenceError) -> ApiError {
        let check = match &e {
            EvidenceError::UnknownJob { .. } => "job-unknown",
            EvidenceError::NoCheckpoint { .. } | EvidenceError::NotCheckpointed { .. } => {
                // Not a refusal: the next checkpoint covers the job.
                return ApiError {
                    retry_after: Some(1),
                    ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "evidence-not-checkpointed", e.to_string())
                };
            }
            _ => "evidence",
        };
        ApiError::from_fault(e.fault(), check, e.to_string())
    }
}

impl From<SignatureError> for ApiError {
    fn from(e: SignatureError) -> ApiError {
        let message = crate::text::printable(&e.to_string()).into_owned();
        match e {
            SignatureError::Busy => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.code(), message),
            SignatureError::KeyBusy { .. } => ApiError {
                retry_after: Some(60),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "busy", e.code(), message)
            },
            SignatureError::WrongRole { .. } => ApiError::forbidden(e.code(), message),
            _ => ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.code(), message),
        }
    }
}
