//! `[[http]]` grant entries: which requests a playbook may have the host
//! make, and the URL canonicalisation both grants and requests go through.
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

use super::{GrantError, parse_size, parse_timeout};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use url::Url;

/// Default time a request may take, connecting included.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on a response body.
pub const DEFAULT_MAX_RESPONSE: u64 = 1 << 20;
/// The most a grant may set `max_response` to: the body is held in memory.
pub const MAX_RESPONSE_CEILING: u64 = 16 << 20;
/// Longest URL accepted.
pub const MAX_URL_BYTES: usize = 8192;

/// How a credential reaches a service: in a request header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpCredential {
    pub name: String,
    pub header: String,
    /// Written before the value, e.g. `Bearer `.
    #[serde(default)]
    pub prefix: String,
}

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

/// Canonicalises a URL: scheme and host lowercased, default port dropped,
/// dot segments (also percent-encoded ones) resolved, IPv4 written in
/// dotted form whatever form it was given in, percent-encodings of
/// unreserved characters decoded and the rest uppercased, fragment dropped.
/// Refuses userinfo and schemes other than http and https.
pub fn canonical(text: &str) -> Result<Url, String> {
    if text.len() > MAX_URL_BYTES {
        return Err(format!("the URL is {} bytes; the bound is {MAX_URL_BYTES}", text.len()));
    }
    let mut url = Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!("scheme {:?} is refused; only http and https", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URLs with userinfo (user@host) are refused".into());
    }
    if url.host().is_none() {
        return Err("the URL has no host".into());
    }
    url.set_fragment(None);
    let path = normalize_percent(url.path());
    if path != url.path() {
        url.set_path(&path);
        // Decoding may have made dot segments appear: parse again.
        url = Url::parse(url.as_str()).map_err(|e| format!("not a URL ({e})"))?;
    }
    if let Some(query) = url.query().map(normalize_percent) {
        url.set_query(Some(&query));
    }
    Ok(url)
}

/// Decodes `%XX` of unreserved characters and uppercases the hex of the
/// others (RFC 3986, 6.2.2.2).
fn normalize_percent(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let value = u8::from_str_radix(&text[i + 1..i + 3], 16).expect("two hex digits");
            if value.is_ascii_alphanumeric() || b"-._~".contains(&value) {
                out.push(value as char);
            } else {
                out.push('%');
                out.push_str(&text[i + 1..i + 3].to_ascii_uppercase());
            }
            i += 3;
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    out
}

/// Whether `url` (canonical) is under `prefix` (canonical), at a path
/// segment boundary: `http://h/api` covers `http://h/api/x` and
/// `http://h/api?x`, not `http://h/apix`.
pub fn under_prefix(url: &str, prefix: &str) -> bool {
    url.starts_with(prefix)
        && (prefix.ends_with('/') || matches!(url[prefix.len()..].chars().next(), None | Some('/') | Some('?')))
}

/// Loopback, private, link-local, shared, unique-local, unspecified or
/// broadcast: addresses a request reaches only when a grant names them.
pub fn special_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special_v4(v4);
            }
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
                || s[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible ::a.b.c.d
                || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && special_v4(embedded(s[6], s[7]))) // NAT64
                || (s[0] == 0x2002 && special_v4(embedded(s[1], s[2]))) // 6to4
        }
    }
}

fn special_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || a == 0
        || a >= 240 // reserved 240.0.0.0/4
        || (a == 100 && (64..128).contains(&b)) // shared address space 100.64.0.0/10
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18.0.0/15
        || (a == 192 && b == 0 && v4.octets()[2] == 0) // IETF protocol assignments 192.0.0.0/24
}

/// The host of a URL pattern (`http://HOST:PORT/...`), as written.
pub fn pattern_host(pattern: &str) -> Option<&str> {
    let rest = pattern.split_once("://")?.1;
    if let Some(v6) = rest.strip_prefix('[') {
        let end = v6.find(']')?;
        return Some(&rest[..end + 2]);
    }
    rest.split(['/', ':']).next()
}

/// An address as a URL writes it: `127.0.0.1`, `[::1]`.
pub fn host_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
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

    fn c(text: &str) -> String {
        canonical(text).map(|u| u.to_string()).unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn urls_are_canonicalised_before_matching() {
        assert_eq!(c("HTTP://Example.COM:80/a/./b/../c"), "http://example.com/a/c");
        assert_eq!(c("https://example.com:443/"), "https://example.com/");
        assert_eq!(c("http://example.com/api/%2e%2e/admin"), "http://example.com/admin");
        assert_eq!(c("http://example.com/api/%2E%2e/admin"), "http://example.com/admin");
        assert_eq!(c("http://example.com/%7euser/%2fx"), "http://example.com/~user/%2Fx");
        assert_eq!(c("http://2130706433/"), "http://127.0.0.1/");
        assert_eq!(c("http://0x7f.1/"), "http://127.0.0.1/");
        assert_eq!(c("http://example.com/x#frag"), "http://example.com/x");
        assert!(c("http://allowed.example@evil.example/").starts_with("ERR"), "userinfo");
        assert!(c("http://user:pw@example.com/").starts_with("ERR"));
        assert!(c("file:///etc/passwd").starts_with("ERR"));
        assert!(c("gopher://example.com/").starts_with("ERR"));
    }

    #[test]
    fn prefixes_match_at_segment_boundaries() {
        assert!(under_prefix("http://h/api/x", "http://h/api/"));
        assert!(under_prefix("http://h/api", "http://h/api"));
        assert!(under_prefix("http://h/api/x", "http://h/api"));
        assert!(under_prefix("http://h/api?q=1", "http://h/api"));
        assert!(!under_prefix("http://h/apix", "http://h/api"));
        assert!(!under_prefix("http://h/admin", "http://h/api/"));
    }

    #[test]
    fn special_addresses_include_mapped_and_metadata_forms() {
        for ip in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "100.64.0.1"] {
            assert!(special_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "fe80::1",
            "fd00::1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "fec0::1",
        ] {
            assert!(special_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111"] {
            assert!(!special_address(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn pattern_hosts_are_read_as_written() {
        assert_eq!(pattern_host("http://127.0.0.1:*/**"), Some("127.0.0.1"));
        assert_eq!(pattern_host("http://*/**"), Some("*"));
        assert_eq!(pattern_host("https://[::1]:8443/x"), Some("[::1]"));
        assert_eq!(host_text("::1".parse().unwrap()), "[::1]");
    }

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
