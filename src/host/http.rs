//! The `http` capability: requests the grant allows, made by the host.
//!
//! A request's URL is canonicalised (see [`crate::scope::http::canonical`])
//! and must fall under a granted prefix with a granted method. The host
//! name is resolved once; the first address the rule lets the request
//! reach (loopback and private ones only when the prefix names them) is the
//! one connected to, pinned for the connection. Redirects come back to the
//! playbook as they are. Request and response headers, bodies and time are
//! bounded; a leased credential goes into the grant's header, and its value
//! is redacted from what comes back.
//!
//! # Errors
//! A request no rule allows, a forbidden header, a refused address: `denied`.
//! A malformed request: `invalid`. A network failure or a timeout: `failed`.
//!
//! # Security
//! Audited: the method, the canonical URL, header names (not values), body
//! sizes, the status, the duration and the lease id. Never a body.

use super::{Calls, CapError, Effect};
use crate::bindings::Error as GuestError;
use crate::bindings::salve::playbook::http::{Host, Request, Response};
use crate::grant::http::HttpRule;
use crate::scope::http::{PathHazard, canonical, mutating_method, path_hazard, under_prefix};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use wasmtime::component::HasData;

/// Largest request body a playbook may send.
pub const MAX_REQUEST_BODY: usize = 1 << 20;
/// Most request headers a playbook may set, and most response headers kept.
pub const MAX_HEADERS: usize = 64;
/// Longest header value, either way.
pub const MAX_HEADER_BYTES: usize = 8192;

/// Headers the host sets or that change how the message is framed.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
    // What would let a request act as another method or path than the
    // grant's, on servers that honour them.
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-original-method",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-prefix",
    "x-real-ip",
];

const INTERFACE: &str = "http";

pub struct Http;

impl HasData for Http {
    type Data<'a> = HttpView<'a>;
}

/// What `http` host functions see of the store.
pub struct HttpView<'a> {
    pub rules: &'a [HttpRule],
    pub calls: &'a Calls,
}

/// A request that passed the checks: what to send.
struct Outgoing {
    method: reqwest::Method,
    url: url::Url,
    rule: HttpRule,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
    lease: Option<String>,
}

impl HttpView<'_> {
    fn prepare(&self, request: Request) -> Result<Outgoing, CapError> {
        let method = request.method.to_ascii_uppercase();
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(CapError::Invalid(format!("{:?} is not a method", request.method)));
        }
        let url = canonical(&request.url).map_err(|reason| {
            if reason.contains("userinfo") || reason.contains("scheme") {
                CapError::Denied(reason)
            } else {
                CapError::Invalid(reason)
            }
        })?;
        // What survives canonicalisation but some servers read as another
        // path (an encoded slash, a double encoding, a path parameter) would
        // reach, behind the prefix check, what the prefix leaves out.
        if let Some(hazard) = path_hazard(url.path(), true) {
            return Err(CapError::Denied(format!("the path {hazard}")));
        }
        let parameters = path_hazard(url.path(), false).is_some();
        let granted = |r: &&HttpRule| r.methods.contains(&method) && under_prefix(url.as_str(), &r.prefix);
        let rule = self
            .rules
            .iter()
            .filter(granted)
            .find(|r| !parameters || r.allow_path_parameters)
            .ok_or_else(|| match self.rules.iter().find(granted) {
                Some(r) => CapError::Denied(format!(
                    "the path {}, and the grant's entry for {} does not set allow_path_parameters",
                    PathHazard::Parameter,
                    r.prefix
                )),
                None => CapError::Denied(format!("no grant allows {method} {url}")),
            })?
            .clone();
        if request.body.len() > MAX_REQUEST_BODY {
            return Err(CapError::Invalid(format!("the body is past the bound of {MAX_REQUEST_BODY} bytes")));
        }
        if request.headers.len() > MAX_HEADERS {
            return Err(CapError::Invalid(format!("more than {MAX_HEADERS} headers")));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &request.headers {
            let name: reqwest::header::HeaderName =
                name.parse().map_err(|_| CapError::Invalid(format!("{name:?} is not a header name")))?;
            if FORBIDDEN_HEADERS.contains(&name.as_str()) {
                return Err(CapError::Denied(format!("the {name} header is the host's to set")));
            }
            if rule.credential.as_ref().is_some_and(|c| c.header.eq_ignore_ascii_case(name.as_str())) {
                return Err(CapError::Denied(format!("the {name} header carries the grant's credential")));
            }
            // With a credential leased to the job (this request may carry
            // it, or fetch what an earlier one stored), what comes back must
            // be whole and plain for redaction to see it: no piece of the
            // body (a range) and no encoding the playbook would decode itself.
            if self.calls.holds_leases()
                && (name == reqwest::header::RANGE
                    || name == reqwest::header::IF_RANGE
                    || (name == reqwest::header::ACCEPT_ENCODING && !value.trim().eq_ignore_ascii_case("identity")))
            {
                return Err(CapError::Denied(format!(
                    "the {name} header is refused while the job holds a credential: a response in pieces or encoded \
                     would carry the credential past redaction"
                )));
            }
            if value.len() > MAX_HEADER_BYTES {
                return Err(CapError::Invalid(format!("the {name} header is past {MAX_HEADER_BYTES} bytes")));
            }
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| CapError::Invalid(format!("the {name} header's value is not valid")))?;
            headers.append(name, value);
        }
        let mut lease = None;
        if let Some(credential) = &rule.credential {
            let leased = self.calls.lease(&credential.name)?;
            let secret = leased.value_for(&self.calls.job).map_err(CapError::Denied)?;
            let mut value = reqwest::header::HeaderValue::from_str(&format!("{}{secret}", credential.prefix))
                .map_err(|_| CapError::Failed("the credential is not a valid header value".into()))?;
            value.set_sensitive(true);
            let name: reqwest::header::HeaderName =
                credential.header.parse().expect("checked when the grant was opened");
            headers.insert(name, value);
            lease = Some(leased.id.clone());
        }
        if self.calls.holds_leases() {
            headers.insert(reqwest::header::ACCEPT_ENCODING, reqwest::header::HeaderValue::from_static("identity"));
        }
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| CapError::Invalid("bad method".into()))?;
        Ok(Outgoing { method, url, rule, headers, body: request.body, lease })
    }
}

/// Resolves the URL's host once and picks the address to pin: the first
/// the rule lets the request reach.
async fn pin(url: &url::Url, rule: &HttpRule) -> Result<SocketAddr, CapError> {
    let port = url.port_or_known_default().unwrap_or(80);
    let addresses: Vec<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(url::Host::Domain(name)) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| CapError::Failed(format!("cannot resolve {name}: {e}")))?
            .map(|a| a.ip())
            .collect(),
        None => return Err(CapError::Invalid("no host".into())),
    };
    addresses.iter().find(|ip| rule.reaches(**ip)).map(|ip| SocketAddr::new(*ip, port)).ok_or_else(|| {
        CapError::Denied(format!(
            "{} is at {addresses:?}: loopback, link-local or private addresses the grant does not name",
            url.host_str().unwrap_or_default()
        ))
    })
}

/// Sends the request to the pinned address and reads a bounded response.
async fn send(outgoing: Outgoing, calls: Calls) -> Result<(Response, u64), CapError> {
    let address = pin(&outgoing.url, &outgoing.rule).await?;
    let timeout = outgoing.rule.timeout.min(calls.remaining());
    let mut client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout);
    if let Some(url::Host::Domain(name)) = outgoing.url.host() {
        client = client.resolve(name, address);
    }
    let client = client.build().map_err(|e| CapError::Failed(format!("cannot set up the request: {e}")))?;
    let failed = |e: reqwest::Error| {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "failed"
        };
        CapError::Failed(format!("the request {what}"))
    };
    let mut response = client
        .request(outgoing.method, outgoing.url)
        .headers(outgoing.headers)
        .body(outgoing.body)
        .send()
        .await
        .map_err(failed)?;
    let status = response.status().as_u16();
    if calls.holds_leases() {
        // Every content-encoding header, every comma-separated coding.
        let encodings: Vec<String> = response
            .headers()
            .get_all(reqwest::header::CONTENT_ENCODING)
            .iter()
            .flat_map(|v| {
                String::from_utf8_lossy(v.as_bytes()).split(',').map(|c| c.trim().to_string()).collect::<Vec<_>>()
            })
            .filter(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"))
            .collect();
        if !encodings.is_empty() {
            return Err(CapError::Denied(format!(
                "the server answered with content-encoding {encodings:?} although identity was asked: while the job \
                 holds a credential, responses are taken only unencoded, so that redaction sees them"
            )));
        }
        if status == 206 || response.headers().contains_key(reqwest::header::CONTENT_RANGE) {
            return Err(CapError::Denied(
                "the server answered with a part of the body: while the job holds a credential, responses are \
                 taken only whole"
                    .into(),
            ));
        }
    }
    let mut headers = Vec::new();
    // Redact first, then cut: a credential the cut would split is still
    // found whole.
    for (name, value) in response.headers().iter().take(MAX_HEADERS) {
        let mut bytes = value.as_bytes().to_vec();
        calls.redact(&mut bytes);
        bytes.truncate(MAX_HEADER_BYTES);
        headers.push((name.to_string(), String::from_utf8_lossy(&bytes).into_owned()));
    }
    let limit = outgoing.rule.max_response as usize;
    let keep = limit + calls.redaction_slack();
    let mut body = Vec::new();
    let mut total = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        total += chunk.len() as u64;
        let room = keep.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if total > keep as u64 {
            break; // drop the connection rather than read what will not be kept
        }
    }
    calls.redact(&mut body);
    let truncated = total > limit as u64;
    body.truncate(limit);
    Ok((Response { status, headers, body, body_truncated: truncated }, total))
}

impl Host for HttpView<'_> {
    async fn send(&mut self, request: Request) -> wasmtime::Result<Result<Response, GuestError>> {
        let header_names: Vec<_> =
            request.headers.iter().take(MAX_HEADERS).map(|(n, _)| super::audited(n, 64)).collect();
        let mut args = json!({
            "method": super::audited(&request.method, 16),
            "url": super::audited(&request.url, 1024),
            "headers": header_names,
            "body_bytes": request.body.len(),
        });
        if request.headers.len() > MAX_HEADERS {
            args["header_count"] = json!(request.headers.len());
        }
        let read_only = !mutating_method(&request.method);
        let prepared = self.prepare(request);
        let limit = match &prepared {
            Ok(outgoing) => {
                args["url"] = json!(outgoing.url.as_str());
                if let Some(lease) = &outgoing.lease {
                    args["lease"] = json!(lease);
                }
                outgoing.rule.timeout + Duration::from_secs(5)
            }
            Err(_) => self.calls.timeout,
        };
        let effect = if read_only { Effect::Read } else { Effect::Mutate };
        let calls = self.calls.clone();
        let task = prepared.map(|outgoing| send(outgoing, calls));
        let result = self
            .calls
            .perform_task(INTERFACE, "send", args, effect, task, limit, |(response, total): &(Response, u64)| {
                let location = response.headers.iter().find(|(n, _)| n == "location").map(|(_, v)| v.clone());
                json!({
                    "status": response.status, "bytes": total, "truncated": response.body_truncated,
                    "location": location,
                })
            })
            .await?;
        Ok(result.map(|(response, _)| response))
    }
}
