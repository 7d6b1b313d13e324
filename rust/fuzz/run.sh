#!/usr/bin/env bash
# Fuzz the SSE parser for a bounded time: rust/fuzz/run.sh SECONDS  (called by `make fuzz`).
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; without nightly it
# falls back to the stable toolchain with RUSTC_BOOTSTRAP=1 (sanitizer flags are nightly-only).
set -euo pipefail
secs="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."   # rust/: cargo fuzz looks for ./fuzz
mkdir -p fuzz/corpus/sse_chunking
# Seed corpus: a few realistic streams (9-byte header: bounds selector + chunking seed).
printf '\x03\x01\x02\x03\x04\x05\x06\x07\x08data: {"choices":[{"delta":{"content":"h\xc3\xa9"}}]}\r\n\r\ndata: [DONE]\n\n' \
    > fuzz/corpus/sse_chunking/openai
printf '\x03\x09\x08\x07\x06\x05\x04\x03\x02\xef\xbb\xbfevent: message_start\nid: 1\nretry: 3000\ndata: {"type":"message_start"}\n\n: ping\r\rdata: x\ndata\r\n\n' \
    > fuzz/corpus/sse_chunking/anthropic
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    toolchain=()
    export RUSTC_BOOTSTRAP=1
fi
exec cargo "${toolchain[@]}" fuzz run sse_chunking fuzz/corpus/sse_chunking -- \
    -max_total_time="$secs" -max_len=4096 -print_final_stats=1
