//! URLs: the canonical form both grants and requests go through, prefix
//! matching, the addresses a request reaches only when a grant names them,
//! which methods only read, and how a credential reaches a service.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use url::Url;

/// Longest URL accepted.
pub const MAX_URL_BYTES: usize = 8192;

/// Whether a request with this method may change something: any method
/// but `GET` and `HEAD` (in any case). The one definition of a read-only
/// request: a read-only grant keeps only the other methods, the host counts
/// a request with one as a read, and the policy sees a grant entry with one
/// as mutating.
pub fn mutating_method(method: &str) -> bool {
    !(method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD"))
}

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
    fn only_get_and_head_are_read_only() {
        for method in ["GET", "HEAD", "get", "Head"] {
            assert!(!mutating_method(method), "{method}");
        }
        for method in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "GETX", ""] {
            assert!(mutating_method(method), "{method}");
        }
    }
}
