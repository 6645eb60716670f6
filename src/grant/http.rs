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
//! allow_path_parameters = false        # the default; see below
//! ```
//!
//! # Security
//! Loopback, link-local (169.254.0.0/16, including cloud metadata at
//! 169.254.169.254), private, shared and unique-local addresses are refused
//! unless an entry's prefix names that address literally, as an IP: a name
//! that resolves to one (`localhost` included) is refused. A name is
//! resolved once and the connection pinned to the address that was checked.
//!
//! A request whose path holds what servers read otherwise than salve (see
//! [`PathHazard`]) is refused: an encoded slash or backslash, a double
//! encoding, an encoded control character, bytes that are not UTF-8. So is
//! a path parameter (`;` or `%3B`: `/api/..;/admin` reaches `/admin` on a
//! servlet container), unless the entry sets `allow_path_parameters = true`
//! and the playbook's manifest declares it for that URL: only for a service
//! known to route them as salve reads them.

use super::GrantError;
use crate::scope::http::{HttpCredential, PathHazard, canonical, path_hazard, special_address};
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
    /// Whether request paths may hold path parameters (`;`), which some
    /// servers strip before routing (`/api/..;/admin` reaches `/admin`
    /// there). Off unless the playbook's manifest declares it too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_path_parameters: bool,
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
    /// Whether request paths may hold path parameters (`;`).
    pub allow_path_parameters: bool,
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
        match path_hazard(url.path(), entry.allow_path_parameters) {
            Some(PathHazard::Parameter) => {
                return Err(err(format!(
                    "prefix {:?} {}; set allow_path_parameters = true if the service needs them",
                    entry.prefix,
                    PathHazard::Parameter
                )));
            }
            Some(hazard) => return Err(err(format!("prefix {:?} {hazard}", entry.prefix))),
            None => {}
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
            allow_path_parameters: entry.allow_path_parameters,
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

    #[test]
    fn a_name_reaches_no_ipv6_form_of_a_special_address() {
        let entry =
            |prefix: &str| HttpEntry { methods: vec!["GET".into()], prefix: prefix.into(), ..Default::default() };
        let public = HttpRule::open(1, &entry("https://api.example.com/v1/")).unwrap();
        let loopback = HttpRule::open(1, &entry("http://127.0.0.1:8080/")).unwrap();
        // What a name may resolve to: cloud metadata, loopback and a private
        // address in every form that reaches them.
        for ip in [
            "::ffff:169.254.169.254",
            "::ffff:0:a9fe:a9fe",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "2001:0:4136:e378:8000:63bf:5601:5601",
            "::a9fe:a9fe",
            "::ffff:127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
            "64:ff9b::a00:1",
            "2002:c0a8:101::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!public.reaches(ip), "{ip}");
            assert!(!loopback.reaches(ip), "{ip}: the grant names 127.0.0.1, not this form of it");
        }
        assert!(public.reaches("64:ff9b::5db8:d822".parse().unwrap()), "NAT64 of a public address");
        assert!(public.reaches("2002:5db8:d822::1".parse().unwrap()), "6to4 of a public address");
    }

    #[test]
    fn a_prefix_with_path_parameters_needs_the_entry_to_allow_them() {
        let open = |prefix: &str, allow_path_parameters| {
            let entry = HttpEntry {
                methods: vec!["GET".into()],
                prefix: prefix.into(),
                allow_path_parameters,
                ..Default::default()
            };
            HttpRule::open(1, &entry)
        };
        let refused = open("https://api.example.com/v1;v=2/", false).unwrap_err().to_string();
        assert!(refused.contains("path parameter") && refused.contains("allow_path_parameters"), "{refused}");
        assert!(open("https://api.example.com/v1;v=2/", true).unwrap().allow_path_parameters);
        assert!(!open("https://api.example.com/v1/", false).unwrap().allow_path_parameters);
        for (prefix, why) in [
            ("https://api.example.com/a%2Fb/", "encoded slash"),
            ("https://api.example.com/%252e%252e/", "double percent-encoding"),
        ] {
            let refused = open(prefix, true).unwrap_err().to_string();
            assert!(refused.contains(prefix) && refused.contains(why), "{refused}");
        }
    }

    #[test]
    fn allow_path_parameters_is_off_unless_written() {
        let spec = crate::grant::GrantSpec::parse("[[http]]\nmethods = [\"GET\"]\nprefix = \"https://h/\"\n").unwrap();
        assert!(!spec.http[0].allow_path_parameters);
        let on = "[[http]]\nmethods = [\"GET\"]\nprefix = \"https://h/\"\nallow_path_parameters = true\n";
        assert!(crate::grant::GrantSpec::parse(on).unwrap().http[0].allow_path_parameters);
    }
}
