//! Text that came from outside salve (a playbook, an agent, an approver, a
//! file) made safe to show on a terminal.
//!
//! # Security
//! A control character (C0, DEL, C1), a line or paragraph separator, or a
//! bidirectional override in such text could move the cursor, erase a
//! line, or start a new one, and so forge what salve prints (make a job that
//! was rolled back read as succeeded). [`printable`] escapes each as
//! `\u{..}`; [`first_control`] lets an input be refused outright.

use std::borrow::Cow;

/// Whether `c` could change how a terminal shows what follows it.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}')
        // Bidirectional embeddings, overrides and isolates.
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

/// `text` with every character [`is_unsafe`] says could forge terminal
/// output escaped as `\u{..}`; borrowed when there is none.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The first character of `text` that [`is_unsafe`], with its byte offset.
pub fn first_control(text: &str) -> Option<(usize, char)> {
    text.char_indices().find(|(_, c)| is_unsafe(*c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_line_breaks_are_escaped() {
        let forged = "rolled back\x1b[2K\r\njob j: succeeded\u{9b}31m\u{7f}\u{202e}";
        let shown = printable(forged);
        assert_eq!(shown, "rolled back\\u{1b}[2K\\u{d}\\u{a}job j: succeeded\\u{9b}31m\\u{7f}\\u{202e}");
        assert!(!shown.chars().any(is_unsafe));
        assert!(matches!(printable("plain text, ünïcode ✓"), Cow::Borrowed(_)));
        assert_eq!(first_control("ok\ttab"), Some((2, '\t')));
        assert_eq!(first_control("fine"), None);
    }
}
