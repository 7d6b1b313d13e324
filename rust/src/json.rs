//! A small borrowed JSON reader for the stream scanner (`scan.rs`): enough to pick a few fields out
//! of one provider event without allocating a tree of owned values.
//!
//! It is deliberately strict: anything it is unsure about (lone surrogates, control characters in
//! strings, nesting deeper than [`MAX_DEPTH`], trailing bytes) is a parse failure, and the scanner
//! then hands the event to the Python decoder, which gives the canonical answer or error. So an event
//! this reader accepts means the same thing to it as to orjson.

/// Deeper nesting than this is refused (no provider event comes close; it bounds the recursion).
pub const MAX_DEPTH: usize = 64;

/// One JSON value borrowing the event text. Strings keep their raw (still escaped) body.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    /// The number's source text (validated JSON number syntax).
    Num(&'a str),
    /// The raw string body between the quotes, and whether it holds any backslash escape.
    Str(&'a str, bool),
    Arr(Vec<Value<'a>>),
    /// Members in source order, keys as raw bodies. Lookups take the last duplicate, like orjson.
    Obj(Vec<(&'a str, Value<'a>)>),
}

impl<'a> Value<'a> {
    /// The member `key` of an object (the last one if repeated), None for a missing key or a non-object.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Obj(members) => members
                .iter()
                .rev()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Python truthiness of the value orjson would give (`if value:`).
    pub fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Num(n) => !is_zero(n),
            Value::Str(s, _) => !s.is_empty(),
            Value::Arr(a) => !a.is_empty(),
            Value::Obj(o) => !o.is_empty(),
        }
    }

    /// A JSON integer that fits i64 (no fraction, no exponent).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Num(n) if !n.contains(['.', 'e', 'E']) => n.parse().ok(),
            _ => None,
        }
    }

    /// The string's decoded text; None for a non-string.
    pub fn as_str(&self) -> Option<std::borrow::Cow<'a, str>> {
        match self {
            Value::Str(raw, false) => Some(std::borrow::Cow::Borrowed(raw)),
            Value::Str(raw, true) => Some(std::borrow::Cow::Owned(unescape(raw))),
            _ => None,
        }
    }
}

fn is_zero(n: &str) -> bool {
    // "0", "-0", "0.0", "0e5": the mantissa has no non-zero digit.
    let mantissa = n.split(['e', 'E']).next().unwrap_or(n);
    !mantissa.bytes().any(|c| (b'1'..=b'9').contains(&c))
}

/// Parses one whole JSON document (surrounding whitespace allowed); None when it is not valid (or
/// uses something this reader refuses, see the module comment).
pub fn parse(text: &str) -> Option<Value<'_>> {
    let mut r = Reader {
        s: text.as_bytes(),
        text,
        i: 0,
    };
    let v = r.value(0)?;
    r.ws();
    (r.i == r.s.len()).then_some(v)
}

struct Reader<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
}

impl<'a> Reader<'a> {
    fn ws(&mut self) {
        while let Some(&c) = self.s.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn value(&mut self, depth: usize) -> Option<Value<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match *self.s.get(self.i)? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string().map(|(s, esc)| Value::Str(s, esc)),
            b't' => self.word("true", Value::Bool(true)),
            b'f' => self.word("false", Value::Bool(false)),
            b'n' => self.word("null", Value::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn word(&mut self, w: &str, v: Value<'a>) -> Option<Value<'a>> {
        if self.s[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            Some(v)
        } else {
            None
        }
    }

    fn number(&mut self) -> Option<Value<'a>> {
        let start = self.i;
        let s = self.s;
        if s.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match s.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                while s.get(self.i).is_some_and(u8::is_ascii_digit) {
                    self.i += 1;
                }
            }
            _ => return None,
        }
        if s.get(self.i) == Some(&b'.') {
            self.i += 1;
            if !s.get(self.i).is_some_and(u8::is_ascii_digit) {
                return None;
            }
            while s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
        }
        if matches!(s.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(s.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !s.get(self.i).is_some_and(u8::is_ascii_digit) {
                return None;
            }
            while s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
        }
        Some(Value::Num(&self.text[start..self.i]))
    }

    /// A string at `self.i` (on its opening quote): (raw body, has escapes). Escapes are checked
    /// here so `unescape` cannot fail later.
    fn string(&mut self) -> Option<(&'a str, bool)> {
        let start = self.i + 1;
        let mut i = start;
        let mut escaped = false;
        let s = self.s;
        loop {
            let rest = s.get(i..)?;
            let at = memchr::memchr3(b'"', b'\\', 0, rest).map_or(rest.len(), |p| p);
            // Control characters are invalid inside JSON strings (orjson refuses them).
            if rest[..at].iter().any(|&c| c < 0x20) {
                return None;
            }
            i += at;
            match *s.get(i)? {
                b'"' => {
                    self.i = i + 1;
                    return Some((&self.text[start..i], escaped));
                }
                b'\\' => {
                    escaped = true;
                    i = check_escape(s, i)?;
                }
                _ => return None, // NUL
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<Value<'a>> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.s.get(self.i) == Some(&b']') {
            self.i += 1;
            return Some(Value::Arr(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.ws();
            match *self.s.get(self.i)? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(Value::Arr(items));
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self, depth: usize) -> Option<Value<'a>> {
        self.i += 1;
        // Provider events' objects have a handful of members: one allocation, no regrowth.
        let mut members = Vec::with_capacity(8);
        self.ws();
        if self.s.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Some(Value::Obj(members));
        }
        loop {
            self.ws();
            if self.s.get(self.i) != Some(&b'"') {
                return None;
            }
            let (key, escaped) = self.string()?;
            if escaped {
                return None; // no field this scanner reads has an escaped name; let Python decide
            }
            self.ws();
            if self.s.get(self.i) != Some(&b':') {
                return None;
            }
            self.i += 1;
            members.push((key, self.value(depth + 1)?));
            self.ws();
            match *self.s.get(self.i)? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(Value::Obj(members));
                }
                _ => return None,
            }
        }
    }
}

fn hex4(s: &[u8], at: usize) -> Option<u32> {
    let digits = s.get(at..at + 4)?;
    let text = std::str::from_utf8(digits).ok()?;
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

/// Validates the escape at `s[i]` (a backslash); returns the index after it. Lone surrogates are
/// refused (orjson refuses them too, and a Rust string cannot hold them).
fn check_escape(s: &[u8], i: usize) -> Option<usize> {
    match *s.get(i + 1)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(i + 2),
        b'u' => {
            let cp = hex4(s, i + 2)?;
            if (0xD800..0xDC00).contains(&cp) {
                if s.get(i + 6) != Some(&b'\\') || s.get(i + 7) != Some(&b'u') {
                    return None;
                }
                let low = hex4(s, i + 8)?;
                (0xDC00..0xE000).contains(&low).then_some(i + 12)
            } else if (0xDC00..0xE000).contains(&cp) {
                None
            } else {
                Some(i + 6)
            }
        }
        _ => None,
    }
}

/// Decodes a raw string body that [`Reader::string`] accepted.
pub fn unescape(raw: &str) -> String {
    let s = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < s.len() {
        let at = memchr::memchr(b'\\', &s[i..]).map_or(s.len(), |p| i + p);
        out.push_str(&raw[i..at]);
        if at >= s.len() {
            break;
        }
        let (c, next) = match s[at + 1] {
            b'"' => ('"', at + 2),
            b'\\' => ('\\', at + 2),
            b'/' => ('/', at + 2),
            b'b' => ('\u{8}', at + 2),
            b'f' => ('\u{c}', at + 2),
            b'n' => ('\n', at + 2),
            b'r' => ('\r', at + 2),
            b't' => ('\t', at + 2),
            _ => {
                let cp = hex4(s, at + 2).unwrap_or(0xFFFD);
                if (0xD800..0xDC00).contains(&cp) {
                    let low = hex4(s, at + 8).unwrap_or(0xDC00);
                    let full = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    (char::from_u32(full).unwrap_or('\u{FFFD}'), at + 12)
                } else {
                    (char::from_u32(cp).unwrap_or('\u{FFFD}'), at + 6)
                }
            }
        };
        out.push(c);
        i = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_objects_and_picks_the_last_duplicate() {
        let v = parse(r#" {"a": 1, "b": [true, null, "x\n"], "a": -2.5e3} "#).unwrap();
        assert_eq!(v.get("a"), Some(&Value::Num("-2.5e3")));
        let b = v.get("b").unwrap();
        assert_eq!(
            b,
            &Value::Arr(vec![
                Value::Bool(true),
                Value::Null,
                Value::Str("x\\n", true)
            ])
        );
    }

    #[test]
    fn unescapes_strings_and_surrogate_pairs() {
        let v = parse(r#""a\"b\\c\u00e9\ud83d\ude00\t""#).unwrap();
        assert_eq!(v.as_str().unwrap(), "a\"b\\cé😀\t");
    }

    #[test]
    fn refuses_what_orjson_refuses() {
        for bad in [
            r#""\ud800""#,
            r#""\udc00x""#,
            "\"a\u{1}\"",
            "{\"a\":1,}",
            "[1 2]",
            "01",
            "1.",
            "{\"a\":1} x",
            "\"\\x\"",
            "nul",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn truthiness_matches_python() {
        for (text, want) in [
            ("0", false),
            ("-0.0", false),
            ("0e7", false),
            ("0.5", true),
            ("\"\"", false),
            ("\"x\"", true),
            ("[]", false),
            ("{}", false),
            ("{\"a\":0}", true),
            ("null", false),
            ("false", false),
        ] {
            assert_eq!(parse(text).unwrap().truthy(), want, "{text}");
        }
    }

    #[test]
    fn integers_only_as_int() {
        assert_eq!(parse("7").unwrap().as_int(), Some(7));
        assert_eq!(parse("7.0").unwrap().as_int(), None);
        assert_eq!(parse("\"7\"").unwrap().as_int(), None);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert!(parse(&deep).is_none());
    }
}
