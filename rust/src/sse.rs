//! Incremental server-sent-events parser following the WHATWG HTML "event stream interpretation"
//! rules (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>).
//!
//! The parser is fed arbitrary byte chunks and yields every event completed by each chunk.
//!
//! * Lines end in LF, CR or CRLF, mixed freely. A CR ends its line at once; if the very next byte
//!   (possibly in the next chunk) is LF, that LF belongs to the CR and is skipped.
//! * One UTF-8 BOM is stripped at the start of the stream only (it may be split across chunks).
//! * Text is decoded per line with lossy replacement (U+FFFD), which gives the same result as
//!   decoding the whole stream at once because line terminators are ASCII; a multi-byte character
//!   split across chunks is therefore kept whole.
//! * Lines starting with `:` are comments. A field is split at the first `:`; one leading space of
//!   the value is removed; a line without `:` is a field name with an empty value.
//! * `data` values are joined with LF; the trailing LF is removed at dispatch. The event type defaults
//!   to `message`. A blank line with an empty data buffer dispatches nothing but resets the event type.
//! * `retry` is honoured only if the value is non-empty, all ASCII digits and fits in a `u64`.
//! * `id` values containing NUL are ignored. The last event ID persists across events (and across
//!   [`SseParser::finish`], like an `EventSource` reconnecting).
//! * At end of stream ([`SseParser::finish`]) an unterminated event (or line) is discarded.
//! * A line longer than `max_line_bytes` (terminator excluded) or an event whose buffered data plus
//!   event type exceeds `max_event_bytes` is an error. Errors are terminal: every later `feed`
//!   returns the same error until `finish` resets the stream.
//!
//! The `retry` member of an [`Event`] is the `retry` value set by a field inside that event's block
//! (`None` if it had none); the stream-wide reconnection time is [`SseParser::reconnection_time`].

use std::fmt;

/// Default bound on one line, terminator excluded: 1 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;
/// Default bound on one event (data buffer, one LF per data line included, plus event type): 8 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 8 << 20;

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event type (`message` unless an `event` field set it).
    pub event_type: String,
    /// The data lines joined with LF.
    pub data: String,
    /// The last event ID at dispatch time (persists across events).
    pub id: String,
    /// The `retry` value (milliseconds) given inside this event's block, if any.
    pub retry: Option<u64>,
}

/// A dispatched event borrowing the parser's buffers (see [`SseParser::feed_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    pub event_type: &'a str,
    pub data: &'a str,
    pub id: &'a str,
    pub retry: Option<u64>,
}

impl EventRef<'_> {
    pub fn to_event(&self) -> Event {
        Event {
            event_type: self.event_type.to_owned(),
            data: self.data.to_owned(),
            id: self.id.to_owned(),
            retry: self.retry,
        }
    }
}

/// After a large event, the reused data buffer is shrunk back to this size.
const SHRINK_ABOVE: usize = 1 << 20;
const SHRINK_TO: usize = 64 << 10;

/// Bound violations. Terminal for the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// A line grew beyond the bound before its terminator arrived.
    LineTooLong { limit: usize },
    /// An event's data plus type grew beyond the bound before its blank line arrived.
    EventTooLarge { limit: usize },
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::LineTooLong { limit } => {
                write!(f, "SSE line longer than {limit} bytes (max_line_bytes)")
            }
            SseError::EventTooLarge { limit } => {
                write!(f, "SSE event larger than {limit} bytes (max_event_bytes)")
            }
        }
    }
}

impl std::error::Error for SseError {}

/// Incremental parser state for one event stream.
#[derive(Debug)]
pub struct SseParser {
    max_line: usize,
    max_event: usize,
    /// Bytes of the BOM matched so far at stream start; `None` once the start is behind us.
    bom_matched: Option<usize>,
    /// The previous byte was a CR that ended a line: skip one LF if it comes next.
    pending_cr: bool,
    /// Bytes of the current, unterminated line.
    line: Vec<u8>,
    data: String,
    event_type: String,
    last_event_id: String,
    event_retry: Option<u64>,
    reconnection_time: Option<u64>,
    failed: Option<SseError>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE_BYTES, DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseParser {
    /// A parser with the given bounds (bytes).
    pub fn new(max_line_bytes: usize, max_event_bytes: usize) -> Self {
        SseParser {
            max_line: max_line_bytes,
            max_event: max_event_bytes,
            bom_matched: Some(0),
            pending_cr: false,
            line: Vec::new(),
            data: String::new(),
            event_type: String::new(),
            last_event_id: String::new(),
            event_retry: None,
            reconnection_time: None,
            failed: None,
        }
    }

    /// The last event ID buffer.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The most recent valid `retry` value seen on this parser, if any.
    pub fn reconnection_time(&self) -> Option<u64> {
        self.reconnection_time
    }

    /// Feed one chunk; events completed by it are appended to `out`.
    ///
    /// On error, events completed earlier in the same chunk are still in `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        self.feed_with(chunk, &mut |ev: EventRef<'_>| out.push(ev.to_event()))
    }

    /// Feed one chunk, calling `on_event` for every event it completes, in order, with borrowed
    /// views of the parser's buffers (no allocation per event).
    ///
    /// On error, events completed earlier in the same chunk have already been passed on.
    pub fn feed_with<F: FnMut(EventRef<'_>)>(
        &mut self,
        chunk: &[u8],
        on_event: &mut F,
    ) -> Result<(), SseError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.feed_inner(chunk, on_event);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    /// Convenience wrapper returning a fresh vector.
    pub fn feed_vec(&mut self, chunk: &[u8]) -> Result<Vec<Event>, SseError> {
        let mut out = Vec::new();
        self.feed(chunk, &mut out)?;
        Ok(out)
    }

    /// End of stream: discard any unterminated line and event and get ready for a new stream
    /// (BOM allowed again). The last event ID and reconnection time are kept.
    pub fn finish(&mut self) {
        self.bom_matched = Some(0);
        self.pending_cr = false;
        self.line.clear();
        self.data.clear();
        self.event_type.clear();
        self.event_retry = None;
        self.failed = None;
    }

    fn feed_inner<F: FnMut(EventRef<'_>)>(
        &mut self,
        mut chunk: &[u8],
        out: &mut F,
    ) -> Result<(), SseError> {
        if let Some(matched) = self.bom_matched {
            // Match the BOM byte by byte; it may be split across chunks.
            let mut m = matched;
            let mut i = 0;
            while i < chunk.len() && m < BOM.len() && chunk[i] == BOM[m] {
                m += 1;
                i += 1;
            }
            if m == BOM.len() {
                self.bom_matched = None;
                chunk = &chunk[i..];
            } else if i == chunk.len() {
                // Still a (partial) BOM match and the chunk is exhausted.
                self.bom_matched = Some(m);
                return Ok(());
            } else {
                // Mismatch: the partial BOM bytes were ordinary (invalid UTF-8) content.
                self.bom_matched = None;
                chunk = &chunk[i..];
                self.feed_lines(&BOM[..m], out)?;
            }
        }
        self.feed_lines(chunk, out)
    }

    fn feed_lines<F: FnMut(EventRef<'_>)>(
        &mut self,
        chunk: &[u8],
        out: &mut F,
    ) -> Result<(), SseError> {
        let mut i = 0;
        if self.pending_cr && !chunk.is_empty() {
            self.pending_cr = false;
            if chunk[0] == b'\n' {
                i = 1;
            }
        }
        while i < chunk.len() {
            match memchr::memchr2(b'\n', b'\r', &chunk[i..]) {
                None => {
                    let rest = &chunk[i..];
                    if self.line.len() + rest.len() > self.max_line {
                        return Err(SseError::LineTooLong {
                            limit: self.max_line,
                        });
                    }
                    self.line.extend_from_slice(rest);
                    break;
                }
                Some(off) => {
                    let end = i + off;
                    let piece = &chunk[i..end];
                    if self.line.len() + piece.len() > self.max_line {
                        return Err(SseError::LineTooLong {
                            limit: self.max_line,
                        });
                    }
                    if self.line.is_empty() {
                        self.process_line(piece, out)?;
                    } else {
                        let mut line = std::mem::take(&mut self.line);
                        line.extend_from_slice(piece);
                        let r = self.process_line(&line, out);
                        line.clear();
                        self.line = line;
                        r?;
                    }
                    if chunk[end] == b'\r' {
                        if end + 1 < chunk.len() {
                            i = if chunk[end + 1] == b'\n' {
                                end + 2
                            } else {
                                end + 1
                            };
                        } else {
                            self.pending_cr = true;
                            i = end + 1;
                        }
                    } else {
                        i = end + 1;
                    }
                }
            }
        }
        Ok(())
    }

    fn process_line<F: FnMut(EventRef<'_>)>(
        &mut self,
        line: &[u8],
        out: &mut F,
    ) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                let value = lossy(value);
                if self.data.len() + value.len() + 1 + self.event_type.len() > self.max_event {
                    return Err(SseError::EventTooLarge {
                        limit: self.max_event,
                    });
                }
                self.data.push_str(&value);
                self.data.push('\n');
            }
            b"event" => {
                let value = lossy(value);
                if self.data.len() + value.len() > self.max_event {
                    return Err(SseError::EventTooLarge {
                        limit: self.max_event,
                    });
                }
                self.event_type.clear();
                self.event_type.push_str(&value);
            }
            b"id" if !value.contains(&0) => {
                self.last_event_id.clear();
                self.last_event_id.push_str(&lossy(value));
            }
            b"retry" => {
                if let Some(ms) = parse_retry(value) {
                    self.event_retry = Some(ms);
                    self.reconnection_time = Some(ms);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch<F: FnMut(EventRef<'_>)>(&mut self, out: &mut F) {
        let retry = self.event_retry.take();
        if !self.data.is_empty() {
            let event_type = if self.event_type.is_empty() {
                "message"
            } else {
                &self.event_type
            };
            out(EventRef {
                event_type,
                // Without the trailing LF every data line appended.
                data: &self.data[..self.data.len() - 1],
                id: &self.last_event_id,
                retry,
            });
            self.data.clear();
            if self.data.capacity() > SHRINK_ABOVE {
                self.data.shrink_to(SHRINK_TO);
            }
        }
        self.event_type.clear();
    }
}

fn parse_retry(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &b| {
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// The line as text, invalid UTF-8 replaced. Valid text (nearly every line) takes `from_utf8`'s
/// word-at-a-time check, several times faster than the lossy decoder's walk.
fn lossy(v: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(v) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: &str, d: &str, id: &str, retry: Option<u64>) -> Event {
        Event {
            event_type: t.into(),
            data: d.into(),
            id: id.into(),
            retry,
        }
    }

    fn msg(d: &str) -> Event {
        ev("message", d, "", None)
    }

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        p.finish();
        out
    }

    /// Parse `input` whole, split at every single byte boundary, split at every pair of
    /// boundaries (for short inputs), and byte by byte; all must give `expected`.
    fn check(input: &[u8], expected: &[Event]) {
        assert_eq!(parse_chunks(&[input]), expected, "whole input");
        for k in 0..=input.len() {
            let (a, b) = input.split_at(k);
            assert_eq!(parse_chunks(&[a, b]), expected, "split at {k}");
        }
        if input.len() <= 64 {
            for k in 0..=input.len() {
                for l in k..=input.len() {
                    let got = parse_chunks(&[&input[..k], &input[k..l], &input[l..]]);
                    assert_eq!(got, expected, "split at {k} and {l}");
                }
            }
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(parse_chunks(&bytes), expected, "byte by byte");
    }

    fn parse_chunks_bounded(
        bounds: (usize, usize),
        chunks: &[&[u8]],
    ) -> (Vec<Event>, Option<SseError>) {
        let mut p = SseParser::new(bounds.0, bounds.1);
        let mut out = Vec::new();
        for c in chunks {
            if let Err(e) = p.feed(c, &mut out) {
                return (out, Some(e));
            }
        }
        (out, None)
    }

    /// Like `check`, with bounds: the events delivered and the error raised must not depend on
    /// the chunking.
    fn check_bounded(
        bounds: (usize, usize),
        input: &[u8],
        expected: &[Event],
        err: Option<SseError>,
    ) {
        let want = (expected.to_vec(), err);
        assert_eq!(parse_chunks_bounded(bounds, &[input]), want, "whole");
        for k in 0..=input.len() {
            let (a, b) = input.split_at(k);
            assert_eq!(parse_chunks_bounded(bounds, &[a, b]), want, "split at {k}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(parse_chunks_bounded(bounds, &bytes), want, "byte by byte");
    }

    // ---- conformance suite: one case per rule ----

    #[test]
    fn line_endings_lf() {
        check(b"data: a\n\ndata: b\n\n", &[msg("a"), msg("b")]);
    }

    #[test]
    fn line_endings_cr() {
        check(b"data: a\r\rdata: b\r\r", &[msg("a"), msg("b")]);
    }

    #[test]
    fn line_endings_crlf() {
        check(b"data: a\r\n\r\ndata: b\r\n\r\n", &[msg("a"), msg("b")]);
    }

    #[test]
    fn line_endings_mixed() {
        check(
            b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\n\r",
            &[msg("a\nb\nc"), msg("d")],
        );
    }

    #[test]
    fn cr_then_lf_is_one_terminator() {
        // "\r\n" must not count as two line ends (which would dispatch an empty line).
        check(b"data: a\r\ndata: b\r\n\r\n", &[msg("a\nb")]);
        // while "\n\r" is two.
        check(b"data: a\n\rdata: b\n\n", &[msg("a"), msg("b")]);
    }

    #[test]
    fn cr_at_chunk_end_waits_for_next_byte() {
        let out = parse_chunks(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
        assert_eq!(out, vec![msg("a\nb")]);
        // A lone CR at chunk end followed by a non-LF byte.
        let out = parse_chunks(&[b"data: a\r", b"\r"]);
        assert_eq!(out, vec![msg("a")]);
        // The blank-line CR dispatches immediately; the following LF is swallowed.
        let mut p = SseParser::default();
        assert_eq!(p.feed_vec(b"data: a\r\r").unwrap(), vec![msg("a")]);
        assert_eq!(p.feed_vec(b"\ndata: b\n\n").unwrap(), vec![msg("b")]);
    }

    #[test]
    fn bom_stripped_at_start() {
        check(b"\xEF\xBB\xBFdata: a\n\n", &[msg("a")]);
        // The BOM line-starts a field name: without stripping, the field would be "\u{FEFF}data".
        check(b"\xEF\xBB\xBFdata\n\n", &[msg("")]);
    }

    #[test]
    fn only_one_bom_stripped() {
        // A second BOM is part of the field name, which is then unknown: no event.
        check(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n", &[]);
    }

    #[test]
    fn bom_not_stripped_later() {
        check(
            b"data: a\n\n\xEF\xBB\xBFdata: b\n\ndata: \xEF\xBB\xBFc\n\n",
            &[msg("a"), msg("\u{FEFF}c")],
        );
    }

    #[test]
    fn partial_bom_is_content() {
        // EF BB then 'd': invalid UTF-8, one replacement char, field name unknown.
        check(b"\xEF\xBBdata: a\n\ndata: b\n\n", &[msg("b")]);
        check(b"\xEF\xBB\n:\xEF\ndata:\xEF\xBB\n\n", &[msg("\u{FFFD}")]);
    }

    #[test]
    fn comments_ignored() {
        check(
            b": hello\n:\ndata: a\n: mid\ndata: b\n\n:only comment\n\n",
            &[msg("a\nb")],
        );
    }

    #[test]
    fn field_split_at_first_colon() {
        check(b"data: a: b:c\n\n", &[msg("a: b:c")]);
        check(b"data:: x\n\n", &[msg(": x")]);
    }

    #[test]
    fn one_leading_space_removed() {
        check(
            b"data:a\n\ndata: a\n\ndata:  a\n\ndata:\ta\n\n",
            &[msg("a"), msg("a"), msg(" a"), msg("\ta")],
        );
    }

    #[test]
    fn line_without_colon_is_field_with_empty_value() {
        check(b"data\n\n", &[msg("")]);
        check(b"data\ndata\n\n", &[msg("\n")]);
        check(b"event\ndata: x\n\n", &[msg("x")]);
        // Field names are case sensitive and exact.
        check(b"Data: x\n\ndata : x\n\n", &[]);
    }

    #[test]
    fn data_lines_joined_with_lf() {
        check(b"data: a\ndata: b\ndata:\ndata: c\n\n", &[msg("a\nb\n\nc")]);
        // Only one trailing LF is removed.
        check(b"data: a\ndata:\n\n", &[msg("a\n")]);
    }

    #[test]
    fn event_type_defaults_to_message_and_resets() {
        check(
            b"event: ping\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\n",
            &[ev("ping", "1", "", None), msg("2"), msg("3")],
        );
    }

    #[test]
    fn empty_data_not_dispatched_but_type_reset() {
        check(
            b"event: a\n\nevent: b\nid: 1\n\ndata: x\n\n",
            &[ev("message", "x", "1", None)],
        );
        check(b"\n\n\n", &[]);
    }

    #[test]
    fn retry_only_ascii_digits() {
        check(
            b"retry: 1500\ndata: a\n\nretry: 15x\ndata: b\n\nretry: -1\ndata: c\n\n\
              retry:\ndata: d\n\nretry:  7\ndata: e\n\nretry: 99999999999999999999999\ndata: f\n\n",
            &[
                ev("message", "a", "", Some(1500)),
                msg("b"),
                msg("c"),
                msg("d"),
                msg("e"),
                msg("f"),
            ],
        );
        let mut p = SseParser::default();
        p.feed_vec(b"retry: 42\n\nretry: nope\n\n").unwrap();
        assert_eq!(p.reconnection_time(), Some(42));
    }

    #[test]
    fn id_with_nul_ignored() {
        check(
            b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
            &[ev("message", "a", "1", None), ev("message", "b", "1", None)],
        );
    }

    #[test]
    fn last_event_id_persists_and_can_be_cleared() {
        check(
            b"id: 7\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: 8\n\ndata: d\n\n",
            &[
                ev("message", "a", "7", None),
                ev("message", "b", "7", None),
                msg("c"),
                ev("message", "d", "8", None),
            ],
        );
    }

    #[test]
    fn unterminated_final_event_discarded() {
        check(b"data: a\n\ndata: b\n", &[msg("a")]);
        check(b"data: a\n\ndata: b", &[msg("a")]);
        check(b"data: a\n\ndata: b\r", &[msg("a")]);
        let mut p = SseParser::default();
        p.feed_vec(b"data: x\n").unwrap();
        p.finish();
        assert_eq!(p.feed_vec(b"data: y\n\n").unwrap(), vec![msg("y")]);
    }

    #[test]
    fn multibyte_utf8_split_kept_whole() {
        let s = "data: h\u{e9}llo \u{20ac} \u{1F600} \u{4e16}\u{754c}\n\n";
        check(
            s.as_bytes(),
            &[msg("h\u{e9}llo \u{20ac} \u{1F600} \u{4e16}\u{754c}")],
        );
        check(
            "event: \u{1F600}\ndata: x\n\n".as_bytes(),
            &[ev("\u{1F600}", "x", "", None)],
        );
    }

    #[test]
    fn invalid_utf8_replaced() {
        check(
            b"data: a\xFFb\xC3\n\ndata: \xF0\x9F\x98\n\n",
            &[msg("a\u{FFFD}b\u{FFFD}"), msg("\u{FFFD}")],
        );
    }

    #[test]
    fn unknown_fields_ignored() {
        check(b"foo: bar\ndata: a\nbaz\n\n", &[msg("a")]);
    }

    #[test]
    fn line_bound() {
        let mut p = SseParser::new(8, 1024);
        assert_eq!(p.feed_vec(b"data:123\n\n").unwrap(), vec![msg("123")]);
        let mut p = SseParser::new(8, 1024);
        assert_eq!(
            p.feed_vec(b"data:1234\n"),
            Err(SseError::LineTooLong { limit: 8 })
        );
        // Detected before the terminator arrives, across chunks.
        let mut p = SseParser::new(8, 1024);
        p.feed_vec(b"data").unwrap();
        assert!(p.feed_vec(b":1234").is_err());
        // Terminal until finish().
        assert!(p.feed_vec(b"\n\n").is_err());
        p.finish();
        assert_eq!(p.feed_vec(b"data:1\n\n").unwrap(), vec![msg("1")]);
        assert!(SseError::LineTooLong { limit: 8 }
            .to_string()
            .contains("max_line_bytes"));
    }

    #[test]
    fn event_bound() {
        let mut p = SseParser::new(1024, 8);
        assert_eq!(
            p.feed_vec(b"data:123\ndata:123\n\n").unwrap(),
            vec![msg("123\n123")]
        );
        let mut p = SseParser::new(1024, 8);
        assert_eq!(
            p.feed_vec(b"data:123\ndata:1234\n\n"),
            Err(SseError::EventTooLarge { limit: 8 })
        );
        let mut p = SseParser::new(1024, 8);
        assert!(p.feed_vec(b"event:abcdefgh\ndata:1\n\n").is_err());
        // The bound is per event: many small events are fine.
        let mut p = SseParser::new(1024, 8);
        let big = b"data:1234567\n\n".repeat(1000);
        assert_eq!(p.feed_vec(&big).unwrap().len(), 1000);
    }

    #[test]
    fn bounds_are_chunking_invariant() {
        let line = Some(SseError::LineTooLong { limit: 8 });
        let event = Some(SseError::EventTooLarge { limit: 8 });
        // Exactly at the line bound (terminator excluded, whatever the terminator).
        check_bounded((8, 64), b"data:123\r\n\r\n", &[msg("123")], None);
        check_bounded(
            (8, 64),
            b"data:1\n\ndata:1234\r\n",
            &[msg("1")],
            line.clone(),
        );
        // An over-long comment or unterminated tail is still an error.
        check_bounded((8, 64), b"data:1\n\n:comment!", &[msg("1")], line);
        // Event bound: data buffer (with one LF per line) plus event type.
        check_bounded((64, 8), b"data:123\ndata:123\n\n", &[msg("123\n123")], None);
        check_bounded(
            (64, 8),
            b"data:1\n\ndata:123\ndata:1234\n\n",
            &[msg("1")],
            event.clone(),
        );
        check_bounded((64, 8), b"event:abcd\ndata:1234\n\n", &[], event);
        check_bounded(
            (64, 8),
            b"event:abcd\ndata:123\n\n",
            &[ev("abcd", "123", "", None)],
            None,
        );
    }

    #[test]
    fn events_before_error_are_returned() {
        let mut p = SseParser::new(8, 1024);
        let mut out = Vec::new();
        assert!(p.feed(b"data:1\n\ndata:123456789\n", &mut out).is_err());
        assert_eq!(out, vec![msg("1")]);
    }

    #[test]
    fn realistic_openai_stream() {
        let mut s = Vec::new();
        for i in 0..5 {
            s.extend_from_slice(
                format!(
                    "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n"
                )
                .as_bytes(),
            );
        }
        s.extend_from_slice(b"data: [DONE]\n\n");
        let out = parse_chunks(&[&s]);
        assert_eq!(out.len(), 6);
        assert_eq!(out[5], msg("[DONE]"));
        check(&s, &out);
    }

    #[test]
    fn random_chunkings_agree() {
        // A small deterministic xorshift so this runs without extra crates.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pieces: [&[u8]; 16] = [
            b"data",
            b":",
            b" ",
            b"x",
            b"\n",
            b"\r",
            b"\r\n",
            b"event",
            b"id",
            b"retry",
            b"12",
            b"\xEF\xBB\xBF",
            b"\xC3\xA9",
            b"\xF0\x9F\x98\x80",
            b"\x00",
            b"\xFF",
        ];
        for _ in 0..300 {
            let n = (next() % 40) as usize;
            let mut input = Vec::new();
            for _ in 0..n {
                input.extend_from_slice(pieces[(next() % 16) as usize]);
            }
            let expected = parse_chunks(&[&input]);
            let mut chunks = Vec::new();
            let mut rest: &[u8] = &input;
            while !rest.is_empty() {
                let k = 1 + (next() as usize) % rest.len();
                let (a, b) = rest.split_at(k);
                chunks.push(a);
                rest = b;
            }
            assert_eq!(parse_chunks(&chunks), expected);
        }
    }
}
