//! URLs: the canonical form both grants and requests go through, prefix
//! matching, the addresses a request reaches only when a grant names them,
//! which methods only read, and how a credential reaches a service.

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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
    // Encoding can lengthen it (a space is three bytes once encoded): the
    // bound holds for what is matched and sent, not only for what was given.
    if url.as_str().len() > MAX_URL_BYTES {
        return Err(format!("the URL is {} bytes once encoded; the bound is {MAX_URL_BYTES}", url.as_str().len()));
    }
    Ok(url)
}

/// Decodes `%XX` of unreserved characters and uppercases the hex of the
/// others (RFC 3986, 6.2.2.2). A text with a `%` that is not a
/// percent-encoding is only uppercased: decoding beside it could make a
/// new encoding (`%4%33` would become `%43`, which a second pass, or the
/// server, reads as `C`), and [`path_hazard`] refuses it as it stands.
fn normalize_percent(text: &str) -> String {
    let bytes = text.as_bytes();
    let bare_percent = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'%' && !bytes.get(i + 1..i + 3).is_some_and(|pair| pair.iter().all(u8::is_ascii_hexdigit))
    });
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let value = u8::from_str_radix(&text[i + 1..i + 3], 16).expect("two hex digits");
            if !bare_percent && (value.is_ascii_alphanumeric() || b"-._~".contains(&value)) {
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

/// Networks whose addresses a request reaches only when a grant names the
/// address: those the IANA IPv4 special-purpose registry marks not globally
/// reachable, with multicast and the reserved 240.0.0.0/4 (the broadcast
/// address among them).
const SPECIAL_V4: [Ipv4Net; 14] = [
    v4([0, 0, 0, 0], 8),       // "this network"
    v4([10, 0, 0, 0], 8),      // private
    v4([100, 64, 0, 0], 10),   // shared address space (carrier-grade NAT)
    v4([127, 0, 0, 0], 8),     // loopback
    v4([169, 254, 0, 0], 16),  // link-local, cloud metadata at 169.254.169.254 among them
    v4([172, 16, 0, 0], 12),   // private
    v4([192, 0, 0, 0], 24),    // IETF protocol assignments
    v4([192, 0, 2, 0], 24),    // documentation
    v4([192, 168, 0, 0], 16),  // private
    v4([198, 18, 0, 0], 15),   // benchmarking
    v4([198, 51, 100, 0], 24), // documentation
    v4([203, 0, 113, 0], 24),  // documentation
    v4([224, 0, 0, 0], 4),     // multicast
    v4([240, 0, 0, 0], 4),     // reserved, 255.255.255.255 among them
];

/// The same for IPv6, less the forms that carry an IPv4 address a packet
/// reaches ([`EMBEDDING_V6`]): those are as special as that address.
const SPECIAL_V6: [Ipv6Net; 11] = [
    v6([0, 0, 0, 0, 0, 0, 0, 0], 96), // IPv4-compatible (deprecated), :: and ::1 among them
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), // NAT64 for local use: the IPv4 address may sit anywhere
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), // discard-only
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), // IETF protocol assignments, Teredo 2001::/32 among them
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), // documentation
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16), // segment routing (SRv6) SIDs
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), // unique local
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), // link-local
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), // site-local (deprecated)
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), // multicast
];

/// IPv6 networks whose addresses stand for an IPv4 address, and the byte
/// of the IPv6 address at which the IPv4 address starts.
const EMBEDDING_V6: [(Ipv6Net, usize); 4] = [
    (v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96), 12),    // IPv4-mapped ::ffff:a.b.c.d
    (v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96), 12),    // IPv4-translated (SIIT) ::ffff:0:a.b.c.d
    (v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), 12), // NAT64, the well-known prefix
    (v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16), 2),     // 6to4 2002:AABB:CCDD::
];

const fn v4(octets: [u8; 4], prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]), prefix)
}

const fn v6(s: [u16; 8], prefix: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]), prefix)
}

/// Loopback, private, link-local, shared, unique-local, unspecified,
/// multicast, broadcast, reserved or documentation: addresses a request
/// reaches only when a grant names them. An IPv6 address that stands for
/// an IPv4 one (mapped, translated, NAT64, 6to4) is special when that
/// address is; one whose IPv4 address cannot be told (Teredo, NAT64 for
/// local use) always is.
pub fn special_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => special_v4(v4),
            None => SPECIAL_V6.iter().any(|net| net.contains(&v6)),
        },
    }
}

fn special_v4(v4: Ipv4Addr) -> bool {
    SPECIAL_V4.iter().any(|net| net.contains(&v4))
}

/// The IPv4 address an IPv6 address stands for, if it is of a form that
/// carries one.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let (_, at) = EMBEDDING_V6.iter().find(|(net, _)| net.contains(&v6))?;
    let o = v6.octets();
    Some(Ipv4Addr::new(o[*at], o[at + 1], o[at + 2], o[at + 3]))
}

/// What in a canonical URL's path servers read otherwise than salve does,
/// so that a request under a granted prefix here may reach a path outside
/// it there. The list follows what hardened servers refuse themselves
/// (Spring Security's `StrictHttpFirewall` among them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathHazard {
    /// `;`, or `%3B`: servlet containers strip path parameters before they
    /// route, so `/api/..;/admin` reaches `/admin` there. A grant entry
    /// may allow them (`allow_path_parameters`).
    #[error("has a path parameter (`;`), which some servers strip before routing (`/api/..;/admin` is `/admin` there)")]
    Parameter,
    /// `%2F`, `%5C` or `\`: a separator some servers decode after the
    /// prefix is checked.
    #[error("has an encoded slash or a backslash, which some servers decode into a separator")]
    HiddenSeparator,
    /// `%25` before two hex digits or `u`: a double encoding (`%252e%252e`),
    /// which a server or proxy that decodes twice reads as `..`.
    #[error("has a double percent-encoding (`%25XX`), which a server that decodes twice reads as another path")]
    DoubleEncoding,
    /// `%` not before two hex digits: IIS reads `%u002e` as `.`.
    #[error("has a `%` that is not a percent-encoding (IIS reads `%u002e` as `.`)")]
    BadEscape,
    /// Percent-encoded bytes that are not UTF-8, such as the overlong
    /// `%C0%AE` that old decoders read as `.`.
    #[error("has percent-encoded bytes that are not UTF-8 (old decoders read the overlong `%C0%AE` as `.`)")]
    NotUtf8,
    /// An encoded control character: `%00` ends the path in some servers.
    #[error("has an encoded control character (`%00` ends the path in some servers)")]
    Control,
}

/// The first [`PathHazard`] in `path`, a canonical URL's path (dot
/// segments resolved, `%2E` decoded); path parameters only unless
/// `parameters_allowed`.
pub fn path_hazard(path: &str, parameters_allowed: bool) -> Option<PathHazard> {
    let bytes = path.as_bytes();
    let hex = |at: usize| -> Option<u8> {
        let pair = bytes.get(at..at + 2)?;
        if !pair.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()
    };
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut parameter = false;
    let mut i = 0;
    while i < bytes.len() {
        let byte = match bytes[i] {
            b'%' => {
                let Some(value) = hex(i + 1) else { return Some(PathHazard::BadEscape) };
                match value {
                    b'/' | b'\\' => return Some(PathHazard::HiddenSeparator),
                    b'%' if hex(i + 3).is_some() || matches!(bytes.get(i + 3), Some(b'u' | b'U')) => {
                        return Some(PathHazard::DoubleEncoding);
                    }
                    0..=0x1f | 0x7f => return Some(PathHazard::Control),
                    _ => {}
                }
                i += 3;
                value
            }
            byte => {
                i += 1;
                byte
            }
        };
        match byte {
            b'\\' => return Some(PathHazard::HiddenSeparator),
            b';' => parameter = true,
            _ => {}
        }
        decoded.push(byte);
    }
    if std::str::from_utf8(&decoded).is_err() {
        return Some(PathHazard::NotUtf8);
    }
    (parameter && !parameters_allowed).then_some(PathHazard::Parameter)
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

    /// Every IPv6 form that carries `v4`, and whether the form is special
    /// whatever `v4` is.
    fn v6_forms(v4: Ipv4Addr) -> Vec<(&'static str, Ipv6Addr, bool)> {
        let [a, b, c, d] = v4.octets();
        let at = |head: [u8; 12]| {
            let mut o = [0u8; 16];
            o[..12].copy_from_slice(&head);
            o[12..].copy_from_slice(&[a, b, c, d]);
            Ipv6Addr::from(o)
        };
        let mut six_to_four = [0u8; 16];
        six_to_four[..6].copy_from_slice(&[0x20, 0x02, a, b, c, d]);
        six_to_four[15] = 1;
        // Teredo: server 65.54.227.120, the client's address inverted.
        let teredo = [0x20, 0x01, 0, 0, 0x41, 0x36, 0xe3, 0x78, 0x80, 0, 0x63, 0xbf, !a, !b, !c, !d];
        vec![
            ("IPv4-mapped", at([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]), false),
            ("IPv4-translated", at([0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0]), false),
            ("NAT64", at([0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0]), false),
            ("6to4", Ipv6Addr::from(six_to_four), false),
            ("IPv4-compatible", at([0; 12]), true),
            ("NAT64 for local use", at([0, 0x64, 0xff, 0x9b, 0, 1, 0, 0, 0, 0, 0, 0]), true),
            ("Teredo", Ipv6Addr::from(teredo), true),
        ]
    }

    #[test]
    fn every_ipv6_form_of_a_special_address_is_special() {
        for v4 in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0"] {
            let v4: Ipv4Addr = v4.parse().unwrap();
            assert!(special_address(IpAddr::V4(v4)), "{v4}");
            for (form, v6, _) in v6_forms(v4) {
                assert!(special_address(IpAddr::V6(v6)), "{v4} as {form} ({v6})");
            }
        }
    }

    #[test]
    fn ipv6_forms_of_a_public_address_are_as_public_as_it_unless_opaque() {
        for v4 in ["93.184.216.34", "8.8.8.8"] {
            let v4: Ipv4Addr = v4.parse().unwrap();
            assert!(!special_address(IpAddr::V4(v4)), "{v4}");
            for (form, v6, always) in v6_forms(v4) {
                assert_eq!(special_address(IpAddr::V6(v6)), always, "{v4} as {form} ({v6})");
            }
        }
    }

    #[test]
    fn special_networks_follow_the_registries() {
        for ip in [
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "::",
            "100::1",
            "2001:db8::1",
            "3fff::1",
            "5f00::1",
            "fc00::1",
            "febf::1",
            "ff02::1",
        ] {
            assert!(special_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "100.63.255.255", "100.128.0.0", "172.32.0.1", "2001:4860:4860::8888", "2a00:1450::1"] {
            assert!(!special_address(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn path_parameters_are_a_hazard_unless_allowed() {
        let path = |url: &str| canonical(url).unwrap().path().to_string();
        for url in ["http://h/api/..;/admin", "http://h/api/x;jsessionid=1", "http://h/api/..%3B/admin", "http://h/;/x"]
        {
            assert_eq!(path_hazard(&path(url), false), Some(PathHazard::Parameter), "{url}");
            assert_eq!(path_hazard(&path(url), true), None, "{url}");
        }
        assert_eq!(path_hazard(&path("http://h/api/x?a=1;b=2"), false), None, "a query is not the path");
    }

    #[test]
    fn paths_servers_read_otherwise_are_hazards_even_with_parameters_allowed() {
        let path = |url: &str| canonical(url).unwrap().path().to_string();
        for (url, hazard) in [
            ("http://h/api/..%2Fadmin", PathHazard::HiddenSeparator),
            ("http://h/api/..%2fadmin", PathHazard::HiddenSeparator),
            ("http://h/api/..%5Cadmin", PathHazard::HiddenSeparator),
            ("http://h/api/%252e%252e/admin", PathHazard::DoubleEncoding),
            ("http://h/api/%252F", PathHazard::DoubleEncoding),
            ("http://h/api/%25u002e%25u002e/admin", PathHazard::DoubleEncoding),
            ("http://h/api/%u002e%u002e/admin", PathHazard::BadEscape),
            ("http://h/api/%", PathHazard::BadEscape),
            // Decoding `%33` beside the bare `%` would make `%43` (`C`).
            ("http://h/api/e%4%33x", PathHazard::BadEscape),
            ("http://h/api/%%32%65%%32%65/admin", PathHazard::BadEscape),
            ("http://h/api/%C0%AE%C0%AE/admin", PathHazard::NotUtf8),
            ("http://h/api/%FF", PathHazard::NotUtf8),
            ("http://h/api/admin%00.json", PathHazard::Control),
            ("http://h/api/x%0D%0AHost:%20evil", PathHazard::Control),
            ("http://h/api/..;/%2F", PathHazard::HiddenSeparator),
        ] {
            assert_eq!(path_hazard(&path(url), true), Some(hazard), "{url} ({})", path(url));
            assert_eq!(path_hazard(&path(url), false), Some(hazard), "{url}");
        }
        assert_eq!(path_hazard("/api\\admin", true), Some(PathHazard::HiddenSeparator), "a raw backslash");
        for url in ["http://h/api/x", "http://h/100%25/x", "http://h/caf%C3%A9", "http://h/a%20b", "http://h/%7Eu"] {
            assert_eq!(path_hazard(&path(url), false), None, "{url} ({})", path(url));
        }
    }

    #[test]
    fn the_length_bound_holds_once_encoded() {
        let spaces = format!("http://h/{}x", " ".repeat(MAX_URL_BYTES / 2));
        assert!(spaces.len() <= MAX_URL_BYTES);
        let err = canonical(&spaces).unwrap_err();
        assert!(err.contains("once encoded"), "{err}");
    }

    #[test]
    fn canonicalising_twice_is_canonicalising_once() {
        // The first found by fuzzing: `%4%33` decoded once is `%43`.
        for url in
            ["http://eoamplc/e%4%33eoadmin", "http://h/a%%34%31?q=%4%31", "http://h/%2%65%2%65/x", "http://h/a%7e%41"]
        {
            let once = canonical(url).unwrap();
            assert_eq!(canonical(once.as_str()).unwrap(), once, "{url}");
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
