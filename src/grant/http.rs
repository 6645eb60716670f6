//! `[[http]]` grant entries: which requests a playbook may have the host
//! make. URLs are canonicalised by [`crate::scope::http::canonical`].
//!
//! ```toml
//! [[http]]
//! methods = ["GET"]
//! prefix = "http://127.0.0.1:8080/"    # canonicalised when the grant is opened
//! timeout = "10s"
//! max_response = "1MiB"
//! credential = { name = "lb-admin", header = "Authorization", prefix = "Bearer " }
//! ```
//!
//! # Security
//! Loopback, link-local (169.254.0.0/16, including cloud metadata at
//! 169.254.169.254), private, shared and unique-local addresses are refused
//! unless an entry's prefix names that address literally, as an IP: a name
//! that resolves to one (`localhost` included) is refused. A name is
//! resolved once and the connection pinned to the address that was checked.

use super::GrantError;
use crate::scope::http::{HttpCredential, canonical, special_address};
use crate::scope::limits::{parse_size, parse_timeout};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::Duration;

/// Default time a request may take, connecting included.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on a response body.
pub const DEFAULT_MAX_RESPONSE: u64 = 1 << 20;
/// The most a grant may set `max_response` to: the body is held in memory.
pub const MAX_RESPONSE_CEILING: u64 = 16 << 20;
/// An `[[http]]` entry as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpEntry {
    pub methods: Vec<String>,
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<HttpCredential>,
}

/// An allowed method and URL prefix, canonical.
#[derive(Debug, Clone)]
pub struct HttpRule {
    pub methods: Vec<String>,
    /// The canonical prefix.
    pub prefix: String,
    /// The address the prefix names literally, which may then be loopback
    /// or private.
    pub named_ip: Option<IpAddr>,
    pub timeout: Duration,
    pub max_response: u64,
    pub credential: Option<HttpCredential>,
}

impl HttpRule {
    pub(super) fn open(index: usize, entry: &HttpEntry) -> Result<HttpRule, GrantError> {
        let err = |reason: String| GrantError::Http { index, reason };
        if entry.methods.is_empty() {
            return Err(err("methods is empty".into()));
        }
        let methods: Vec<String> = entry.methods.iter().map(|m| m.to_ascii_uppercase()).collect();
        if let Some(bad) = methods.iter().find(|m| !m.bytes().all(|b| b.is_ascii_uppercase())) {
            return Err(err(format!("method {bad:?} is not a method")));
        }
        let url = canonical(&entry.prefix).map_err(|e| err(format!("prefix {:?}: {e}", entry.prefix)))?;
        if url.query().is_some() {
            return Err(err(format!("prefix {:?} has a query; give a path prefix", entry.prefix)));
        }
        let named_ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(err("the prefix has no host".into())),
        };
        let timeout = match &entry.timeout {
            Some(text) => parse_timeout("http timeout", text)?,
            None => DEFAULT_HTTP_TIMEOUT,
        };
        let max_response = match &entry.max_response {
            Some(text) => parse_size(text).ok_or_else(|| err(format!("max_response {text:?} is not a size")))?,
            None => DEFAULT_MAX_RESPONSE,
        };
        if max_response > MAX_RESPONSE_CEILING {
            return Err(err(format!("max_response is above the ceiling of {MAX_RESPONSE_CEILING} bytes")));
        }
        if entry.credential.is_some() && url.scheme() == "http" && !named_ip.is_some_and(|ip| ip.is_loopback()) {
            return Err(err("a credential goes over https, or plain http to a loopback address only".into()));
        }
        if let Some(credential) = &entry.credential
            && credential.header.parse::<http::HeaderName>().is_err()
        {
            return Err(err(format!("credential header {:?} is not a header name", credential.header)));
        }
        Ok(HttpRule {
            methods,
            prefix: url.to_string(),
            named_ip,
            timeout,
            max_response,
            credential: entry.credential.clone(),
        })
    }

    /// Whether the rule lets a request reach `ip`.
    pub fn reaches(&self, ip: IpAddr) -> bool {
        !special_address(ip) || self.named_ip == Some(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_reaches_what_its_prefix_names() {
        let rule = |prefix: &str| {
            HttpRule::open(1, &HttpEntry { methods: vec!["GET".into()], prefix: prefix.into(), ..Default::default() })
                .unwrap()
        };
        let loopback = rule("http://127.0.0.1:8080/");
        assert!(loopback.reaches("127.0.0.1".parse().unwrap()));
        assert!(!loopback.reaches("127.0.0.2".parse().unwrap()));
        assert!(!loopback.reaches("169.254.169.254".parse().unwrap()));
        let public = rule("https://api.example.com/v1/");
        assert!(!public.reaches("127.0.0.1".parse().unwrap()), "a name that resolves to loopback");
        assert!(public.reaches("93.184.216.34".parse().unwrap()));
        assert!(!rule("http://localhost:9/").reaches("127.0.0.1".parse().unwrap()), "names are not addresses");
        assert!(
            HttpRule::open(1, &HttpEntry { methods: vec![], prefix: "http://h/".into(), ..Default::default() })
                .is_err()
        );
    }
}
