//! Redaction of leased credentials from what a playbook gets back: every
//! value in the forms a program or a server would write it, found in one
//! pass by one multi-pattern automaton (aho-corasick).
//!
//! The forms of each value: as it is; base64 (standard and URL-safe, at
//! each of the three alignments it can have inside a longer base64 text,
//! minus the characters that depend on its neighbours); hex (lower and
//! upper case); percent-encoding (upper and lower case hex, and the form
//! encoding's `+` for spaces); and JSON string escaping (with and without
//! `\/`). Encoded forms shorter than [`MIN_ENCODED`] bytes are left out:
//! they would match by chance.
//!
//! # Security
//! What is redacted is what this module can recognise. A playbook that
//! asks for pieces of a value (small reads, byte ranges) is answered from
//! a window wide enough to recognise any form that overlaps the piece
//! ([`Redactor::slack`], [`Redactor::mask`]); one that gets a value in a
//! form not listed here (compressed, encrypted, reversed) is not. So
//! requests that carry a credential ask for and accept only identity
//! encoding and may not ask for a range (see `host::http`).

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// What replaces a value in output that may change length (a command's
/// output, a response).
pub const REDACTED: &[u8] = b"[REDACTED]";
/// What each byte of a value becomes in file reads, which keep their
/// length so that a file read in pieces stays consistent.
pub const MASK: u8 = b'*';
/// Shortest encoded form looked for.
pub const MIN_ENCODED: usize = 8;

/// The job's leased values, in every form looked for.
pub struct Redactor {
    automaton: Option<AhoCorasick>,
    /// Every form, for the partial one a file may end in.
    patterns: Vec<Vec<u8>>,
    longest: usize,
}

/// Shortest start of a form that a file ending in it has masked: a file
/// truncated inside a value would otherwise give away all but its end.
pub const MIN_PARTIAL: usize = 4;

impl Redactor {
    /// A redactor for `values` (empty ones are ignored).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Redactor {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        for value in values.into_iter().filter(|v| !v.is_empty()) {
            patterns.push(value.to_vec());
            patterns.extend(encodings(value).into_iter().filter(|p| p.len() >= MIN_ENCODED));
        }
        patterns.sort();
        patterns.dedup();
        let longest = patterns.iter().map(Vec::len).max().unwrap_or(0);
        let automaton = (!patterns.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .expect("a few patterns of bounded length always build")
        });
        Redactor { automaton, patterns, longest }
    }

    /// A redactor that redacts nothing.
    pub fn none() -> Redactor {
        Redactor { automaton: None, patterns: Vec::new(), longest: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.automaton.is_none()
    }

    /// How many bytes around a piece must be looked at to see any form of
    /// a value that overlaps it: the longest form, less one.
    pub fn slack(&self) -> usize {
        self.longest.saturating_sub(1)
    }

    /// Replaces every form of every value in `bytes` with [`REDACTED`].
    /// Overlapping forms (a value that overlaps itself) are redacted as
    /// one.
    pub fn redact(&self, bytes: &mut Vec<u8>) {
        let Some(automaton) = &self.automaton else { return };
        let found = all_matches(automaton, bytes);
        if found.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut copied = 0;
        for (start, end) in merged(found) {
            out.extend_from_slice(&bytes[copied..start]);
            out.extend_from_slice(REDACTED);
            copied = end;
        }
        out.extend_from_slice(&bytes[copied..]);
        *bytes = out;
    }

    /// `window[keep]`, with every byte that belongs to a form of a value
    /// found anywhere in `window` replaced by [`MASK`]: a piece of a file
    /// read with [`Redactor::slack`] bytes on each side, so that a value
    /// split across two reads is masked in both.
    ///
    /// With `at_end` (the window reaches the end of the file), a start of
    /// a form of at least [`MIN_PARTIAL`] bytes that the window ends in is
    /// masked too.
    pub fn mask(&self, window: &[u8], keep: std::ops::Range<usize>, at_end: bool) -> Vec<u8> {
        let mut piece = window[keep.clone()].to_vec();
        let Some(automaton) = &self.automaton else { return piece };
        let mut found = all_matches(automaton, window);
        if at_end && let Some(partial) = self.partial_at_end(window) {
            found.push((window.len() - partial, window.len()));
        }
        for found in found {
            let (start, end) = (found.0.max(keep.start), found.1.min(keep.end));
            for byte in piece.iter_mut().take(end.saturating_sub(keep.start)).skip(start.saturating_sub(keep.start)) {
                *byte = MASK;
            }
        }
        piece
    }
}

impl Redactor {
    /// The length of the longest start of a form (at least [`MIN_PARTIAL`]
    /// bytes, shorter than the form) that `window` ends in.
    fn partial_at_end(&self, window: &[u8]) -> Option<usize> {
        self.patterns
            .iter()
            .flat_map(|form| (MIN_PARTIAL..form.len()).rev().filter(|&n| window.ends_with(&form[..n])).take(1))
            .max()
    }
}

/// `ranges` (sorted by start) with overlapping ones joined.
fn merged(ranges: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start < last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// Every match in `haystack`, as `(start, end)`: leftmost-longest matching
/// reports no overlaps, so after each match the search restarts one byte
/// further, to find a form that begins inside another.
fn all_matches(automaton: &AhoCorasick, haystack: &[u8]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut at = 0;
    while at < haystack.len() {
        match automaton.find(aho_corasick::Input::new(haystack).range(at..)) {
            Some(m) => {
                found.push((m.start(), m.end()));
                at = m.start() + 1;
            }
            None => break,
        }
    }
    found
}

/// The encoded forms of `value` looked for besides the value itself.
fn encodings(value: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = Vec::new();
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for shift in 0..3usize {
            let mut shifted = vec![0u8; shift];
            shifted.extend_from_slice(value);
            let encoded = engine.encode(&shifted).into_bytes();
            // Characters that hold bits of the bytes before the value...
            let skip = (8 * shift).div_ceil(6);
            // ...or of the bytes after it.
            let bits = 8 * (shift + value.len());
            let end = if bits.is_multiple_of(6) { encoded.len() } else { encoded.len() - 1 };
            if skip < end {
                forms.push(encoded[skip..end].to_vec());
            }
        }
    }
    forms.push(hex::encode(value).into_bytes());
    forms.push(hex::encode_upper(value).into_bytes());
    // Strict (every reserved byte), Python's `quote` (keeps `/`) and
    // JavaScript's `encodeURIComponent` (keeps `!'()*`); upper and lower
    // case hex; and the form encoding's `+` for a space.
    for safe in [&b""[..], b"/", b"!'()*"] {
        for upper in [true, false] {
            forms.push(percent_encode(value, safe, upper, false));
            forms.push(percent_encode(value, safe, upper, true));
        }
    }
    if let Ok(text) = std::str::from_utf8(value) {
        let json = serde_json::to_string(text).expect("a string always serializes");
        let escaped = json[1..json.len() - 1].to_string();
        // As serde writes it, with `\/`, and with everything outside ASCII
        // as `\uXXXX` (as Python's json.dumps writes it).
        let ascii: String =
            escaped.chars().flat_map(|c| if c.is_ascii() { vec![c.to_string()] } else { utf16_escapes(c) }).collect();
        for form in [escaped.replace('/', "\\/"), ascii.replace('/', "\\/"), ascii, escaped] {
            forms.push(form.into_bytes());
        }
    }
    forms.retain(|form| form.as_slice() != value);
    forms
}

/// `\uXXXX` escapes of a character, as JSON writes one outside ASCII.
fn utf16_escapes(c: char) -> Vec<String> {
    let mut units = [0u16; 2];
    c.encode_utf16(&mut units).iter().map(|u| format!("\\u{u:04x}")).collect()
}

/// Every byte but the unreserved ones (`A-Za-z0-9-._~`) and `safe` as
/// `%XX`; with `form`, a space as `+`.
fn percent_encode(value: &[u8], safe: &[u8], upper: bool, form: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() * 3);
    for &byte in value {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(byte),
            _ if safe.contains(&byte) => out.push(byte),
            b' ' if form => out.push(b'+'),
            _ if upper => out.extend_from_slice(format!("%{byte:02X}").as_bytes()),
            _ => out.extend_from_slice(format!("%{byte:02x}").as_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t/v@lue+ünï";

    fn redacted(text: &[u8]) -> String {
        let mut bytes = text.to_vec();
        Redactor::new([SECRET.as_bytes()]).redact(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn each_common_encoding_of_a_value_is_redacted() {
        let json = serde_json::to_string(&serde_json::json!({ "token": SECRET })).unwrap();
        let ascii_json = serde_json::to_string(SECRET).unwrap().replace('ü', "\\u00fc").replace('ï', "\\u00ef");
        for (what, text) in [
            ("raw", format!("token={SECRET};")),
            ("hex", format!("x{}x", hex::encode(SECRET))),
            ("HEX", format!("x{}x", hex::encode_upper(SECRET))),
            ("percent", format!("q={}&", percent_encode(SECRET.as_bytes(), b"", true, false).escape_ascii())),
            ("percent lower", format!("q={}&", percent_encode(SECRET.as_bytes(), b"", false, false).escape_ascii())),
            ("python quote", format!("q={}&", percent_encode(SECRET.as_bytes(), b"/", true, false).escape_ascii())),
            ("json", json),
            ("json ascii", ascii_json),
        ] {
            let out = redacted(text.as_bytes());
            assert!(out.contains("[REDACTED]"), "{what}: {out}");
            assert!(!out.contains("s3cr3t") && !out.contains(&hex::encode("s3cr3t")), "{what}: {out}");
        }
    }

    #[test]
    fn base64_is_redacted_at_any_alignment_inside_longer_text() {
        for prefix in ["", "a", "ab", "user:"] {
            for suffix in ["", "z", "zz"] {
                let plain = format!("{prefix}{SECRET}{suffix}");
                for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                    let encoded = engine.encode(&plain);
                    let out = redacted(encoded.as_bytes());
                    assert!(out.contains("[REDACTED]"), "{prefix:?}/{suffix:?}: {encoded} -> {out}");
                    let left = out.replace("[REDACTED]", "");
                    let neighbours = (prefix.len() + suffix.len()) * 4 / 3 + 4;
                    assert!(left.len() <= neighbours, "only the neighbours' characters remain: {out}");
                }
            }
        }
    }

    #[test]
    fn a_value_split_across_pieces_is_masked_in_each() {
        let redactor = Redactor::new([SECRET.as_bytes()]);
        let file = format!("header {SECRET} footer").into_bytes();
        let at = "header ".len();
        let split = at + 5;
        let slack = redactor.slack();
        // Two reads, split inside the value, each from its window.
        let read = |start: usize, end: usize| {
            let from = start.saturating_sub(slack);
            let to = (end + slack).min(file.len());
            redactor.mask(&file[from..to], start - from..end - from, to == file.len())
        };
        let (first, second) = (read(0, split), read(split, file.len()));
        let joined = [first, second].concat();
        assert_eq!(joined.len(), file.len(), "masking keeps the length");
        let expected = format!("header {} footer", "*".repeat(SECRET.len()));
        assert_eq!(String::from_utf8_lossy(&joined), expected);
    }

    #[test]
    fn a_file_that_ends_inside_a_value_has_that_start_masked() {
        let redactor = Redactor::new([SECRET.as_bytes()]);
        let cut = &SECRET.as_bytes()[..SECRET.len() - 1];
        let file = [b"token=".as_slice(), cut].concat();
        let masked = redactor.mask(&file, 0..file.len(), true);
        assert_eq!(masked, [b"token=".as_slice(), &vec![MASK; cut.len()]].concat());
        assert_eq!(redactor.mask(&file, 0..file.len(), false), file, "not at the end: the rest may follow");
    }

    #[test]
    fn a_value_that_overlaps_itself_is_redacted_whole() {
        let mut bytes = b"<aXaXa>".to_vec();
        Redactor::new([b"aXa".as_slice()]).redact(&mut bytes);
        assert_eq!(String::from_utf8_lossy(&bytes), "<[REDACTED]>");
    }

    #[test]
    fn nothing_leased_redacts_nothing_and_short_forms_are_not_looked_for() {
        let mut bytes = b"anything".to_vec();
        Redactor::none().redact(&mut bytes);
        assert_eq!(bytes, b"anything");
        let redactor = Redactor::new([b"abc".as_slice()]);
        let mut bytes = b"YWJj abc 616263".to_vec();
        redactor.redact(&mut bytes);
        assert_eq!(String::from_utf8_lossy(&bytes), "YWJj [REDACTED] 616263", "short encoded forms match by chance");
    }
}
