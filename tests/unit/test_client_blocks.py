"""The Python client reads every block kind a native answer can hold (docs/formats.md): a gateway
answer with redacted thinking, a server tool or citations must not fail to decode."""

from __future__ import annotations

import orjson

from ensemble.client import models as m

SEARCH = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}}
CITE = {"type": "web_search_result_location", "url": "https://example.com", "title": "Example"}


def test_whole_answer_with_every_block_kind() -> None:
    body = {
        "id": "req_1",
        "model": "claude-sonnet-4-5",
        "blocks": [
            {"type": "thinking", "thinking": "", "signature": "sig"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "server_tool", "block": SEARCH},
            {"type": "text", "text": "Found it.", "citations": [CITE]},
        ],
    }
    r = m.decode(m.InferenceResponse, orjson.dumps(body))
    assert [type(b).__name__ for b in r.blocks] == [
        "ThinkingBlock",
        "RedactedThinkingBlock",
        "ServerToolBlock",
        "TextBlock",
    ]
    assert r.blocks[1].data == "opaque" and r.blocks[2].block == SEARCH and r.blocks[3].citations == [CITE]


def test_stream_deltas_of_the_new_kinds() -> None:
    server = m.decode_block(orjson.dumps({"type": "server_tool", "index": 1, "block": SEARCH}))
    assert isinstance(server, m.ServerToolBlock) and server.index == 1
    cited = m.decode_block(orjson.dumps({"type": "text", "index": 2, "text": "", "citation": CITE}))
    assert isinstance(cited, m.TextBlock) and cited.citation == CITE
