//! Where a forwarded OpenAI stream's usage object starts (the same-format fast path holds that
//! event back to write the answer's cost into it; `python/ensemble/streaming/cost_splice.py`).
//!
//! Byte searches in place of the regular expression `"usage"\s*:\s*\{` and three reverse
//! searches for the blank line before it: every read of every passed-through stream is searched.

use memchr::memmem;

/// `\s` of a Python bytes pattern.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// The offset of the first `"usage"` followed by optional whitespace, a colon, optional
/// whitespace and `{` (what `"usage"\s*:\s*\{` matches first), and the offset just after that `{`.
pub fn usage_object(data: &[u8]) -> Option<(usize, usize)> {
    const KEY: &[u8] = b"\"usage\"";
    for at in memmem::find_iter(data, KEY) {
        let mut i = at + KEY.len();
        while data.get(i).copied().is_some_and(is_space) {
            i += 1;
        }
        if data.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        while data.get(i).copied().is_some_and(is_space) {
            i += 1;
        }
        if data.get(i) == Some(&b'{') {
            return Some((at, i + 1));
        }
    }
    None
}

/// Where the event holding byte `at` begins: just after the last blank line (`\n\n`, `\r\n\r\n`
/// or `\r\r`) that ends before `at`, or 0.
pub fn event_start(data: &[u8], at: usize) -> usize {
    let before = &data[..at.min(data.len())];
    // Reverse searches are not vectorised: find the LF blank line (near `at`, the usual one)
    // first; a CR one can only win if it starts after it (none overlaps it), so only that stretch
    // is searched for them.
    let lf = memmem::rfind(before, b"\n\n");
    let from = lf.unwrap_or(0);
    let cr = [&b"\r\n\r\n"[..], b"\r\r"].into_iter().filter_map(|sep| {
        memmem::rfind(&before[from..], sep).map(|p| (from + p, from + p + sep.len()))
    });
    lf.map(|p| (p, p + 2))
        .into_iter()
        .chain(cr)
        .max() // two separators never start at one byte
        .map_or(0, |(_, end)| end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_usage_object_whatever_its_spacing() {
        let s = br#"{"usage":null}{"usage" :
 {"a":1}}{"usage":{}}"#;
        let (at, after) = usage_object(s).unwrap();
        assert_eq!(at, 15);
        assert_eq!(&s[after - 1..after], b"{");
        assert_eq!(usage_object(br#"{"usage":null,"x":"usage"}"#), None);
        assert_eq!(usage_object(br#""usage""#), None);
    }

    #[test]
    fn event_start_is_after_the_last_blank_line() {
        assert_eq!(event_start(b"a\n\nb\n\nc", 7), 6);
        assert_eq!(event_start(b"a\r\n\r\nb", 5), 5);
        assert_eq!(event_start(b"a\r\rb", 3), 3);
        assert_eq!(event_start(b"abc", 2), 0);
        assert_eq!(event_start(b"a\n\nb\r\n\r\nc", 9), 8);
    }
}
