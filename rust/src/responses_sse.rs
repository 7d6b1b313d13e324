//! The Responses stream's per-token events, written natively: one `response.*.delta` event per
//! upstream event of a merged text run (event_runs.rs), each with the next `sequence_number`, into
//! one buffer. The event's fixed parts (its type, item id, output index) come from the Python
//! writer (api/responses_events.py), which renders every other event and holds the item state;
//! the bytes are the ones it would write event by event (tests/unit/test_responses_native.py).

/// Writes, for each fragment of `text` (the event `i` ends at byte `ends[i]`), `prefix`, the
/// sequence number, `,"delta":`, the fragment as a JSON string and `suffix`; numbers rise from
/// `seq`. An empty fragment writes nothing (the Python writer skips an empty delta). Returns the next sequence number, or None when `ends` does not cut the whole of `text`
/// into fragments (offsets that fall back, stop short of its end or fall inside a character).
pub fn write_deltas(
    out: &mut Vec<u8>,
    prefix: &[u8],
    suffix: &[u8],
    mut seq: u64,
    text: &str,
    ends: impl IntoIterator<Item = usize>,
) -> Option<u64> {
    let mut start = 0;
    for end in ends {
        let fragment = text.get(start..end)?;
        start = end;
        if fragment.is_empty() {
            continue;
        }
        out.extend_from_slice(prefix);
        push_decimal(out, seq);
        out.extend_from_slice(b",\"delta\":");
        json_string(out, fragment);
        out.extend_from_slice(suffix);
        seq += 1;
    }
    (start == text.len()).then_some(seq)
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `s` as a JSON string, byte for byte as orjson writes it (the Python writer's encoder): `"` and
/// `\` escaped, control characters as `\b \t \n \f \r` or `\u00xx`, everything else as it is.
pub fn json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut clean = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean..i]);
        clean = i + 1;
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
    }
    out.extend_from_slice(&bytes[clean..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(text: &str, ends: &[usize], seq: u64) -> (String, Option<u64>) {
        let mut out = Vec::new();
        let next = write_deltas(&mut out, b"<", b">", seq, text, ends.iter().copied());
        (String::from_utf8(out).unwrap(), next)
    }

    #[test]
    fn one_event_per_fragment_with_rising_numbers_empty_ones_none() {
        assert_eq!(
            written("Hé wörld", &[3, 3, 10], 9),
            (
                r#"<9,"delta":"Hé"><10,"delta":" wörld">"#.to_owned(),
                Some(11)
            )
        );
    }

    #[test]
    fn offsets_that_do_not_cut_the_text_are_refused() {
        assert_eq!(written("Hé", &[2], 0).1, None); // inside "é"
        assert_eq!(written("ab", &[2, 1], 0).1, None);
        assert_eq!(written("ab", &[3], 0).1, None);
        assert_eq!(written("ab", &[1], 0).1, None); // "b" would be in no event
    }

    #[test]
    fn strings_are_escaped_as_orjson_escapes_them() {
        let mut out = Vec::new();
        json_string(
            &mut out,
            "a\"b\\c\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}\u{2028}/é",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u0000\\u001f\u{7f}\u{2028}/é\""
        );
    }
}
