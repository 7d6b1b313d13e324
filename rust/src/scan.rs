//! The same-format fast path's stream scanner: one call per network read frames the provider's
//! server-sent events and reads each event where it stands, so the bytes can go to the client
//! unchanged while the answer is still assembled for storage (docs/performance.md).
//!
//! Events split in two kinds:
//! * **hot**: the common appends (a text, thinking or tool-argument fragment of a block the answer
//!   already has, a usage report that only overwrites the last one, pings). These are decoded here
//!   and merged into [`Item::Run`]s: consecutive fragments of one block become one string per read.
//! * **rare**: everything else (the first fragment of a block, block starts and stops, finish
//!   reasons, usage that comes with other fields, errors, anything unusual or malformed). These
//!   are returned as [`Item::Event`] for the provider's own Python decoder, which keeps its
//!   state and its exact answers and errors.
//!
//! The rule that keeps the two paths identical: an event is hot only when the Python decoder would
//! turn it into exactly one append to a block it already opened (or into nothing), so feeding the
//! runs and the rare events in order gives the assembler what the decoder alone would have.

use crate::json::{self, Value};
use crate::sse::{SseError, SseParser};

/// The provider wire format being scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenAI Chat Completions `chat.completion.chunk` events.
    OpenAI,
    /// Anthropic Messages events (`content_block_delta`, …).
    Anthropic,
    /// Gemini `GenerateContentResponse` chunks (`alt=sse`).
    Gemini,
}

impl Format {
    pub fn from_name(name: &str) -> Option<Format> {
        match name {
            "openai" => Some(Format::OpenAI),
            "anthropic" => Some(Format::Anthropic),
            "gemini" => Some(Format::Gemini),
            _ => None,
        }
    }
}

/// What a run appends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Text = 0,
    Thinking = 1,
    /// Tool-call argument JSON fragments.
    Args = 2,
    /// The latest usage object (raw JSON; it replaces the previous one).
    Usage = 3,
}

/// One unit of scanner output, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// Consecutive hot fragments for one block: `key` is the provider's block or tool-call index
    /// (OpenAI text and thinking have none: 0).
    Run {
        kind: RunKind,
        key: i64,
        text: String,
    },
    /// An event for the Python decoder, as the SSE parser cut it.
    Event { event_type: String, data: String },
}

/// Which block Gemini's decoder would append a text part to (its `_current`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GeminiOpen {
    None,
    Text,
    Thinking,
}

pub struct StreamScanner {
    sse: SseParser,
    state: ScanState,
    bounds: Boundaries,
}

/// Where events end in the byte stream (a blank line), so the fast path forwards whole events
/// only: a stream that fails mid-event must not leave half an event before the error event.
#[derive(Debug, Clone, Copy)]
struct Boundaries {
    /// The previous byte ended a line (so a line terminator now is a blank line).
    at_line_start: bool,
    /// The previous byte was CR: an LF now belongs to it.
    prev_cr: bool,
    /// That CR ended a blank line: its LF moves the cut past itself.
    cr_ended_event: bool,
}

impl Boundaries {
    /// The length of the prefix of `chunk` that ends at the last event boundary in it (0: none).
    fn cut(&mut self, chunk: &[u8]) -> usize {
        let mut cut = 0;
        let mut i = 0;
        while let Some(p) = memchr::memchr2(b'\r', b'\n', &chunk[i..]) {
            let at = i + p;
            if at > i {
                // Line content before this terminator.
                self.at_line_start = false;
                self.prev_cr = false;
            }
            if chunk[at] == b'\n' && self.prev_cr {
                self.prev_cr = false;
                if self.cr_ended_event {
                    cut = at + 1; // the LF of a CRLF blank line
                }
            } else {
                let blank = self.at_line_start;
                if blank {
                    cut = at + 1;
                }
                self.at_line_start = true;
                self.prev_cr = chunk[at] == b'\r';
                self.cr_ended_event = self.prev_cr && blank;
            }
            i = at + 1;
        }
        if i < chunk.len() {
            self.at_line_start = false;
            self.prev_cr = false;
        }
        cut
    }
}

/// Everything but the framing, so an event can be classified while the parser lends it.
struct ScanState {
    format: Format,
    /// Merge consecutive fragments of one block into one run (else one run per event, for a
    /// consumer that renders each event on its own).
    merge: bool,
    items: Vec<Item>,
    pending_usage: Option<String>,
    hot_events: u64,
    rare_events: u64,
    // OpenAI: blocks the decoder has allocated (text, thinking, tool-call slots).
    openai_text: bool,
    openai_thinking: bool,
    openai_slots: Vec<i64>,
    // Anthropic: tool blocks whose first argument fragment the decoder has seen.
    anthropic_args: Vec<i64>,
    gemini_open: GeminiOpen,
}

enum Hot {
    /// The decoder would produce nothing.
    Nothing,
    Append(RunKind, i64, String),
    /// A usage-only update (Gemini): replaces the pending usage.
    Usage(String),
    /// Gemini's common chunk: a text part and the running usage. The assembler keeps the two
    /// apart, so the usage may join the read's pending one (the last wins).
    TextAndUsage(String, String),
}

impl StreamScanner {
    pub fn new(format: Format) -> Self {
        StreamScanner {
            sse: SseParser::default(),
            bounds: Boundaries {
                at_line_start: true,
                prev_cr: false,
                cr_ended_event: false,
            },
            state: ScanState {
                format,
                merge: true,
                items: Vec::new(),
                pending_usage: None,
                hot_events: 0,
                rare_events: 0,
                openai_text: false,
                openai_thinking: false,
                openai_slots: Vec::new(),
                anthropic_args: Vec::new(),
                gemini_open: GeminiOpen::None,
            },
        }
    }

    pub fn format(&self) -> Format {
        self.state.format
    }

    /// One run per event instead of one per block and read (the translating path renders every
    /// delta as a client event, so the client keeps the provider's granularity).
    pub fn set_merge(&mut self, merge: bool) {
        self.state.merge = merge;
    }

    /// Events decoded here so far, and events handed to the decoder.
    pub fn counts(&self) -> (u64, u64) {
        (self.state.hot_events, self.state.rare_events)
    }

    /// Scans one network read; returns the items the events it completed give, in order, and
    /// the length of the read's prefix that ends at its last event boundary (the bytes after it
    /// belong to an event still incomplete).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(usize, Vec<Item>), SseError> {
        let state = &mut self.state;
        let result = self
            .sse
            .feed_with(chunk, &mut |ev| state.event(ev.event_type, ev.data));
        state.flush_usage();
        let items = std::mem::take(&mut state.items);
        result?;
        Ok((self.bounds.cut(chunk), items))
    }

    /// End of the stream: an unterminated event is discarded (as the SSE parser does).
    pub fn finish(&mut self) {
        self.sse.finish();
    }
}

impl ScanState {
    fn event(&mut self, event_type: &str, data: &str) {
        match self.classify(event_type, data) {
            Some(hot) => {
                self.hot_events += 1;
                match hot {
                    Hot::Append(kind, key, text) => self.append(kind, key, text),
                    Hot::Usage(raw) => self.usage(raw),
                    Hot::TextAndUsage(text, raw) => {
                        self.append(RunKind::Text, 0, text);
                        self.usage(raw);
                    }
                    Hot::Nothing => {}
                }
            }
            None => {
                self.rare_events += 1;
                self.flush_usage();
                self.items.push(Item::Event {
                    event_type: event_type.to_owned(),
                    data: data.to_owned(),
                });
            }
        }
    }

    /// A usage update: merged, only the read's last one is handed on (each replaces the one
    /// before); unmerged, each in its place.
    fn usage(&mut self, raw: String) {
        if self.merge {
            self.pending_usage = Some(raw);
        } else {
            self.items.push(Item::Run {
                kind: RunKind::Usage,
                key: 0,
                text: raw,
            });
        }
    }

    fn flush_usage(&mut self) {
        if let Some(raw) = self.pending_usage.take() {
            self.items.push(Item::Run {
                kind: RunKind::Usage,
                key: 0,
                text: raw,
            });
        }
    }

    fn append(&mut self, kind: RunKind, key: i64, text: String) {
        if let Some(Item::Run {
            kind: k,
            key: last,
            text: run,
        }) = self.items.last_mut()
        {
            if self.merge && *k == kind && *last == key {
                run.push_str(&text);
                return;
            }
        }
        self.items.push(Item::Run { kind, key, text });
    }

    /// Some(hot) when this event can be decoded here; None hands it to the Python decoder. Also
    /// notes what a rare event opens, to know which later fragments are hot.
    fn classify(&mut self, event_type: &str, data: &str) -> Option<Hot> {
        match self.format {
            Format::OpenAI => self.openai(data),
            Format::Anthropic => self.anthropic(event_type, data),
            Format::Gemini => self.gemini(data),
        }
    }

    fn openai(&mut self, data: &str) -> Option<Hot> {
        if data == "[DONE]" {
            return Some(Hot::Nothing);
        }
        if memchr::memmem::find(data.as_bytes(), b"\"error\"").is_some() {
            return None; // the decoder's error path
        }
        let chunk = json::parse(data)?;
        let hot = openai_hot(&chunk, self);
        // Whatever the decoder does with a rare event, it allocates the blocks it mentions first.
        if hot.is_none() {
            self.openai_note(&chunk);
        }
        hot
    }

    fn openai_note(&mut self, chunk: &Value<'_>) {
        let Some(Value::Arr(choices)) = chunk.get("choices") else {
            return;
        };
        for choice in choices {
            if !matches!(choice, Value::Obj(_))
                || choice.get("index").map_or(Some(0), Value::as_int) != Some(0)
            {
                continue;
            }
            let Some(delta) = choice.get("delta") else {
                continue;
            };
            let reasoning = delta
                .get("reasoning_content")
                .filter(|v| v.truthy())
                .or(delta.get("reasoning"));
            if reasoning.is_some_and(Value::truthy) {
                self.openai_thinking = true;
            }
            if delta.get("content").is_some_and(Value::truthy) {
                self.openai_text = true;
            }
            if let Some(Value::Arr(calls)) = delta.get("tool_calls") {
                for call in calls {
                    if let Some(slot) = call.get("index").map_or(Some(0), Value::as_int) {
                        if !self.openai_slots.contains(&slot) {
                            self.openai_slots.push(slot);
                        }
                    }
                }
            }
        }
    }

    fn anthropic(&mut self, event_type: &str, data: &str) -> Option<Hot> {
        if data.is_empty() {
            return Some(Hot::Nothing);
        }
        let payload = json::parse(data)?;
        let kind = match payload.get("type") {
            Some(v) if v.truthy() => v.as_str()?,
            _ => std::borrow::Cow::Borrowed(event_type),
        };
        match &*kind {
            "ping" | "message_stop" => return Some(Hot::Nothing),
            "content_block_delta" => {}
            _ => return None,
        }
        let index = payload.get("index")?.as_int()?;
        let delta = payload.get("delta")?;
        let field = |name: &str| -> Option<String> {
            match delta.get(name) {
                None | Some(Value::Null) => Some(String::new()),
                Some(v) => v.as_str().map(|s| s.into_owned()),
            }
        };
        match delta.get("type")?.as_str()?.as_ref() {
            "text_delta" => Some(Hot::Append(RunKind::Text, index, field("text")?)),
            "thinking_delta" => Some(Hot::Append(RunKind::Thinking, index, field("thinking")?)),
            "input_json_delta" => {
                let fragment = field("partial_json")?;
                if fragment.is_empty() {
                    Some(Hot::Nothing)
                } else if self.anthropic_args.contains(&index) {
                    Some(Hot::Append(RunKind::Args, index, fragment))
                } else {
                    self.anthropic_args.push(index); // the decoder records the first fragment
                    None
                }
            }
            _ => None,
        }
    }

    fn gemini(&mut self, data: &str) -> Option<Hot> {
        if data.trim().is_empty() {
            return Some(Hot::Nothing);
        }
        let chunk = json::parse(data)?;
        let hot = gemini_hot(&chunk, self.gemini_open);
        if hot.is_none() {
            self.gemini_note(&chunk);
        }
        hot
    }

    /// Mirrors which block the decoder leaves open after a rare chunk.
    fn gemini_note(&mut self, chunk: &Value<'_>) {
        let parts = gemini_parts(chunk);
        let Some(Value::Arr(parts)) = parts else {
            return;
        };
        for part in parts {
            if part.get("functionCall").is_some() {
                self.gemini_open = GeminiOpen::None;
            } else if part.get("thought").is_some_and(Value::truthy) {
                self.gemini_open = GeminiOpen::Thinking;
            } else if part.get("text").is_some_and(Value::truthy) {
                self.gemini_open = GeminiOpen::Text;
            }
        }
    }
}

fn openai_hot(chunk: &Value<'_>, s: &ScanState) -> Option<Hot> {
    let Value::Obj(_) = chunk else { return None };
    if chunk.get("usage").is_some_and(|u| !u.is_null()) {
        return None;
    }
    if chunk
        .get("model")
        .is_some_and(|m| !matches!(m, Value::Null | Value::Str(..)))
    {
        return None; // a wrongly typed field sends the decoder down its generic path
    }
    let choices = match chunk.get("choices") {
        None | Some(Value::Null) => return Some(Hot::Nothing),
        Some(Value::Arr(c)) => c,
        _ => return None,
    };
    let choice = match choices.as_slice() {
        [] => return Some(Hot::Nothing),
        [one] => one,
        _ => return None,
    };
    let Value::Obj(_) = choice else { return None };
    if choice.get("index").map_or(Some(0), Value::as_int) != Some(0) {
        return None;
    }
    if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
        return None;
    }
    let delta = match choice.get("delta") {
        None | Some(Value::Null) => return Some(Hot::Nothing),
        Some(d @ Value::Obj(_)) => d,
        _ => return None,
    };
    if delta.get("reasoning_details").is_some_and(|v| !v.is_null()) {
        return None; // OpenRouter's signed or encrypted reasoning: only the decoder keeps it
    }
    let text = |name: &str| -> Option<Option<String>> {
        match delta.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(v @ Value::Str(..)) => {
                Some(Some(v.as_str()?.into_owned()).filter(|t| !t.is_empty()))
            }
            _ => None, // wrongly typed: the generic path
        }
    };
    let content = text("content")?;
    let reasoning = match text("reasoning_content")? {
        Some(r) => Some(r),
        None => text("reasoning")?,
    };
    let calls = match delta.get("tool_calls") {
        None | Some(Value::Null) => None,
        Some(Value::Arr(c)) => Some(c),
        _ => return None,
    };
    match (content, reasoning, calls) {
        (None, None, None) => Some(Hot::Nothing),
        (Some(t), None, None) if s.openai_text => Some(Hot::Append(RunKind::Text, 0, t)),
        (None, Some(r), None) if s.openai_thinking => Some(Hot::Append(RunKind::Thinking, 0, r)),
        (None, None, Some(calls)) => {
            let [call] = calls.as_slice() else {
                return None;
            };
            let Value::Obj(_) = call else { return None };
            let slot = call.get("index").map_or(Some(0), Value::as_int)?;
            if !s.openai_slots.contains(&slot) || call.get("id").is_some_and(|v| !v.is_null()) {
                return None;
            }
            let function = call.get("function")?;
            if function.get("name").is_some_and(|v| !v.is_null()) {
                return None;
            }
            match function.get("arguments") {
                None | Some(Value::Null) => Some(Hot::Nothing),
                Some(v @ Value::Str(..)) => {
                    let args = v.as_str()?.into_owned();
                    Some(if args.is_empty() {
                        Hot::Nothing
                    } else {
                        Hot::Append(RunKind::Args, slot, args)
                    })
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn gemini_parts<'v, 'a>(chunk: &'v Value<'a>) -> Option<&'v Value<'a>> {
    let Some(Value::Arr(candidates)) = chunk.get("candidates") else {
        return None;
    };
    candidates.first()?.get("content")?.get("parts")
}

fn gemini_hot(chunk: &Value<'_>, open: GeminiOpen) -> Option<Hot> {
    let Value::Obj(members) = chunk else {
        return None;
    };
    // Only these members: anything else (an error, prompt feedback, …) is the decoder's.
    if members.iter().any(|(k, _)| {
        !matches!(
            *k,
            "candidates" | "usageMetadata" | "modelVersion" | "responseId"
        )
    }) {
        return None;
    }
    let usage = match chunk.get("usageMetadata") {
        None | Some(Value::Null) => None,
        Some(u @ Value::Obj(m)) if !m.is_empty() => Some(u),
        Some(Value::Obj(_)) => None,
        _ => return None,
    };
    let text = match chunk.get("candidates") {
        None | Some(Value::Null) => None,
        Some(Value::Arr(candidates)) => match candidates.as_slice() {
            [] => None,
            [candidate] => gemini_candidate_text(candidate, open)?,
            _ => return None,
        },
        _ => return None,
    };
    match (text, usage) {
        (None, None) => Some(Hot::Nothing),
        (Some(t), None) => Some(Hot::Append(RunKind::Text, 0, t)),
        (None, Some(u)) => Some(Hot::Usage(raw_json(u))),
        (Some(t), Some(u)) => Some(Hot::TextAndUsage(t, raw_json(u))),
    }
}

/// Some(Some(text)) for a candidate that only appends text to the open text block, Some(None) for
/// one that does nothing, None when the decoder must see it.
fn gemini_candidate_text(candidate: &Value<'_>, open: GeminiOpen) -> Option<Option<String>> {
    let Value::Obj(members) = candidate else {
        return None;
    };
    if members.iter().any(|(k, v)| match *k {
        "content" | "index" | "safetyRatings" | "citationMetadata" => false,
        "finishReason" => v.truthy(),
        _ => true,
    }) {
        return None;
    }
    let parts = match candidate.get("content") {
        None | Some(Value::Null) => return Some(None),
        Some(c @ Value::Obj(_)) => match c.get("parts") {
            None | Some(Value::Null) => return Some(None),
            Some(Value::Arr(p)) => p,
            _ => return None,
        },
        _ => return None,
    };
    let part = match parts.as_slice() {
        [] => return Some(None),
        [one] => one,
        _ => return None,
    };
    let Value::Obj(fields) = part else {
        return None;
    };
    if fields
        .iter()
        .any(|(k, _)| !matches!(*k, "text" | "thoughtSignature"))
    {
        return None; // thought, functionCall, inline data, …
    }
    match part.get("text") {
        Some(v @ Value::Str(..)) if v.truthy() && open == GeminiOpen::Text => {
            Some(Some(v.as_str()?.into_owned()))
        }
        Some(Value::Str("", _)) => Some(None),
        _ => None,
    }
}

/// A value's JSON text (for the usage object handed back raw; it came from valid JSON).
fn raw_json(v: &Value<'_>) -> String {
    let mut out = String::new();
    write_json(v, &mut out);
    out
}

fn write_json(v: &Value<'_>, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Num(n) => out.push_str(n),
        Value::Str(s, _) => {
            out.push('"');
            out.push_str(s);
            out.push('"');
        }
        Value::Arr(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Obj(members) => {
            out.push('{');
            for (i, (k, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('"');
                out.push_str(k);
                out.push_str("\":");
                write_json(item, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn run(kind: RunKind, key: i64, text: &str) -> Item {
        Item::Run {
            kind,
            key,
            text: text.to_owned(),
        }
    }

    pub(crate) fn event(data: &str) -> Item {
        Item::Event {
            event_type: "message".into(),
            data: data.into(),
        }
    }

    #[test]
    fn openai_text_after_the_first_is_one_run_per_read() {
        let mut s = StreamScanner::new(Format::OpenAI);
        let first = r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#;
        let body = format!(
            "data: {first}\n\ndata: {}\r\n\r\n: keep-alive\n\ndata: {}\n\ndata: [DONE]\n\n",
            r#"{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":" \"w\""}}]}"#,
        );
        let items = s.feed(body.as_bytes()).unwrap().1;
        assert_eq!(items, vec![event(first), run(RunKind::Text, 0, "lo \"w\"")]);
        assert_eq!(s.counts(), (3, 1));
    }

    #[test]
    fn events_split_across_reads_are_scanned_once_whole() {
        let mut s = StreamScanner::new(Format::OpenAI);
        s.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n")
            .unwrap();
        let mut out = Vec::new();
        for piece in [
            &b"data: {\"choices\":[{\"del"[..],
            b"ta\":{\"content\":\"b\"}}]}\r",
            b"\n\r\n",
        ] {
            out.extend(s.feed(piece).unwrap().1);
        }
        assert_eq!(out, vec![run(RunKind::Text, 0, "b")]);
    }

    #[test]
    fn openai_rare_events_go_to_the_decoder() {
        let mut s = StreamScanner::new(Format::OpenAI);
        for data in [
            r#"{"choices":[{"delta":{"content":"x"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":1}}"#,
            r#"{"error":{"message":"boom"}}"#,
            r#"{"choices":[{"delta":{"content":5}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f"}}]}}]}"#,
            r#"{"choices":[{"delta":{"content":"y","reasoning_details":[]}}]}"#,
            r#"{"choices":[{"delta":{"reasoning_details":[{"type":"reasoning.encrypted","data":"e"}]}}]}"#,
            "not json",
        ] {
            let items = s.feed(format!("data: {data}\n\n").as_bytes()).unwrap().1;
            assert_eq!(items, vec![event(data)], "{data}");
        }
        let args = r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\""}}]}}]}"#;
        assert_eq!(
            s.feed(format!("data: {args}\n\n").as_bytes()).unwrap().1,
            vec![run(RunKind::Args, 0, "{\"a\"")]
        );
    }

    #[test]
    fn anthropic_deltas_and_pings() {
        let mut s = StreamScanner::new(Format::Anthropic);
        let start =
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#;
        let body = format!(
            "event: content_block_start\ndata: {start}\n\nevent: ping\ndata: {{\"type\": \"ping\"}}\n\n\
             event: content_block_delta\ndata: {}\n\nevent: content_block_delta\ndata: {}\n\n",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}"#,
        );
        let items = s.feed(body.as_bytes()).unwrap().1;
        assert_eq!(
            items,
            vec![
                Item::Event {
                    event_type: "content_block_start".into(),
                    data: start.into()
                },
                run(RunKind::Text, 0, "Hi!"),
            ]
        );
    }

    #[test]
    fn anthropic_first_argument_fragment_is_rare() {
        let mut s = StreamScanner::new(Format::Anthropic);
        let frag = |j: &str| {
            format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":\"{j}\"}}}}\n\n"
            )
        };
        assert!(matches!(
            s.feed(frag("{").as_bytes()).unwrap().1[..],
            [Item::Event { .. }]
        ));
        assert_eq!(
            s.feed((frag("}") + &frag("")).as_bytes()).unwrap().1,
            vec![run(RunKind::Args, 1, "}")]
        );
    }

    #[test]
    fn gemini_text_needs_an_open_text_block_and_usage_is_deferred() {
        let mut s = StreamScanner::new(Format::Gemini);
        let chunk = |t: &str, u: i64| {
            format!(
                "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"{t}\"}}],\"role\":\"model\"}},\"index\":0}}],\"usageMetadata\":{{\"promptTokenCount\":{u}}}}}\r\n\r\n"
            )
        };
        let only_text = |t: &str| {
            format!("data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"{t}\"}}],\"role\":\"model\"}}}}]}}\n\n")
        };
        let items = s
            .feed((chunk("a", 1) + &only_text("b") + &only_text("c")).as_bytes())
            .unwrap()
            .1;
        assert!(matches!(items[0], Item::Event { .. }), "{items:?}");
        assert_eq!(items[1..], [run(RunKind::Text, 0, "bc")]);
        let usage_only = "data: {\"usageMetadata\":{\"promptTokenCount\":3}}\n\n";
        let items = s
            .feed((only_text("d") + usage_only + usage_only).as_bytes())
            .unwrap()
            .1;
        assert_eq!(
            items,
            vec![
                run(RunKind::Text, 0, "d"),
                run(RunKind::Usage, 0, "{\"promptTokenCount\":3}")
            ]
        );
        let items = s
            .feed((chunk("e", 8) + &chunk("f", 9)).as_bytes())
            .unwrap()
            .1;
        assert_eq!(
            items,
            vec![
                run(RunKind::Text, 0, "ef"),
                run(RunKind::Usage, 0, "{\"promptTokenCount\":9}")
            ]
        );
    }

    #[test]
    fn cuts_fall_after_whole_events_whatever_the_line_endings() {
        let mut s = StreamScanner::new(Format::OpenAI);
        assert_eq!(s.feed(b"data: 1\n\ndata: 2").unwrap().0, 9);
        assert_eq!(s.feed(b"\n").unwrap().0, 0);
        assert_eq!(s.feed(b"\n: c\r\n\r").unwrap().0, 7);
        assert_eq!(s.feed(b"\ndata: 3\r\r").unwrap().0, 10);
        assert_eq!(s.feed(b"data: 4\r").unwrap().0, 0);
        assert_eq!(s.feed(b"\n\r\n").unwrap().0, 3);
        assert_eq!(s.feed(b"data: 5\r\n").unwrap().0, 0);
        assert_eq!(s.feed(b"\r\nx").unwrap().0, 2);
        assert_eq!(s.feed(b"").unwrap().0, 0);
    }

    #[test]
    fn without_merging_every_event_is_its_own_run() {
        let mut s = StreamScanner::new(Format::Anthropic);
        s.set_merge(false);
        let delta = |t: &str| {
            format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{t}\"}}}}\n\n")
        };
        let items = s.feed((delta("a") + &delta("b")).as_bytes()).unwrap().1;
        assert_eq!(
            items,
            vec![run(RunKind::Text, 0, "a"), run(RunKind::Text, 0, "b")]
        );
    }

    #[test]
    fn sse_errors_are_reported() {
        let mut s = StreamScanner::new(Format::OpenAI);
        s.sse = SseParser::new(8, 64);
        assert!(s.feed(b"data: 0123456789\n").is_err());
    }
}
