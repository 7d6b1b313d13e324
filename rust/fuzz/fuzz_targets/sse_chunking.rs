//! SSE parser fuzz target: never panics, and the events (and error, if any) do not depend on
//! how the byte stream is cut into chunks.
//!
//! Input layout: byte 0 picks small line/event bounds (to reach the error paths) or the
//! defaults; bytes 1..=8 seed the chunk sizes; the rest is the stream.
#![no_main]

use _native::sse::{Event, SseError, SseParser};
use libfuzzer_sys::fuzz_target;

fn run(parser_bounds: (usize, usize), chunks: &[&[u8]]) -> (Vec<Event>, Option<SseError>) {
    let mut p = SseParser::new(parser_bounds.0, parser_bounds.1);
    let mut out = Vec::new();
    for c in chunks {
        if let Err(e) = p.feed(c, &mut out) {
            p.finish();
            return (out, Some(e));
        }
    }
    p.finish();
    (out, None)
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 9 {
        return;
    }
    let bounds = match input[0] % 4 {
        0 => (16, 64),
        1 => (64, 32),
        2 => (7, 1 << 20),
        _ => (1 << 20, 8 << 20),
    };
    let mut seed = u64::from_le_bytes(input[1..9].try_into().unwrap()) | 1;
    let stream = &input[9..];

    let whole = run(bounds, &[stream]);

    let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
    let by_byte = run(bounds, &bytewise);

    let mut chunks = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let k = 1 + (seed as usize) % rest.len().min(17);
        let (a, b) = rest.split_at(k);
        chunks.push(a);
        rest = b;
    }
    let random = run(bounds, &chunks);

    // Errors are detected at a chunking-independent point (no event can complete between the
    // start of an over-long line/event and its detection), and events completed before an
    // error are still delivered, so everything must agree exactly.
    assert_eq!(whole, by_byte);
    assert_eq!(whole, random);
    for ev in &whole.0 {
        assert!(ev.data.len() <= bounds.1);
    }
});
