"""Provider types from the outside (docs/providers.md): an OpenAI-compatible API as a config entry
only, and a provider module Ensemble does not ship (an installed plugin, with its own stream
framing), each served end to end by a real `ensemble serve` in front of the fake upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from support.ensemble import Ensemble
from support.fake import FakeUpstream
from support.processes import ROOT

PLUGINS = ROOT / "tests" / "fixtures" / "plugins"
PRICING = {"input": 2.0, "output": 6.0}
HELLO = [{"role": "user", "content": "Hello there, compatible world"}]


def model(name: str) -> dict[str, Any]:
    return {"name": name, "max_output_tokens": 4096, "pricing": PRICING}


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    providers = [
        {  # Mistral's shape: refuses stream_options, reports usage in its last chunk anyway
            "name": "mistral",
            "type": "openai_compatible",
            "base_url": fake.endpoint_url("mistral"),
            "openai_compatible": {"stream_usage": False, "headers": {"X-Team": "docs"}},
            "endpoints": [{"id": "mistral-primary", "api_key": "sk-mistral-test-0000"}],
            "models": [model("mistral-large-latest")],
        },
        {  # Groq's shape: the API lives under /openai, takes max_completion_tokens
            "name": "groq",
            "type": "openai_compatible",
            "base_url": fake.endpoint_url("groq") + "/openai",
            "openai_compatible": {"max_tokens_field": "max_completion_tokens"},
            "endpoints": [{"id": "groq-primary", "api_key": "gsk-groq-test-0000"}],
            "models": [model("llama-3.3-70b-versatile")],
        },
        {  # a local server that takes no key
            "name": "local",
            "type": "openai_compatible",
            "base_url": fake.endpoint_url("local"),
            "openai_compatible": {"requires_api_key": False},
            "endpoints": [{"id": "local-vllm"}],
            "models": [model("qwen-local")],
        },
        {  # not shipped with Ensemble: tests/fixtures/plugins/acme_chat.py, found by its entry point
            "name": "acme",
            "type": "acme",
            "base_url": fake.endpoint_url("acme"),
            "endpoints": [{"id": "acme-primary", "api_key": "sk-acme-test-0000"}],
            "models": [model("acme-1")],
        },
    ]
    fake.configure("mistral", stream_usage_always=True, require_api_key="sk-mistral-test-0000")
    fake.configure("acme", framing="ndjson", split_bytes=7)  # lines split across network reads
    server = Ensemble(
        Path(tmp_path_factory.mktemp("provider-types")), providers, env={"PYTHONPATH": str(PLUGINS)}
    )
    yield server
    server.stop()


def last_request(fake: FakeUpstream, endpoint: str) -> dict[str, Any]:
    return fake.requests(endpoint)[-1]


def test_an_openai_compatible_config_entry_serves_json_and_streams(
    gateway: Ensemble, fake: FakeUpstream
) -> None:
    with gateway.client() as http:
        r = http.post(
            "/api/v1/generate",
            json={
                "model": "mistral-large-latest",
                "messages": HELLO,
                "max_tokens": 50,
                "provider_config": {"top_k": 3},
            },
        )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["provider"] == "mistral" and answer["endpoint_id"] == "mistral-primary"
    assert answer["content"].startswith("Hello from fake-openai. You said: Hello there")
    assert answer["output_tokens"] > 0 and answer["input_tokens"] > 0
    sent = last_request(fake, "mistral")
    assert sent["path"] == "/mistral/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer sk-mistral-test-0000"
    assert sent["headers"]["x-team"] == "docs"
    assert sent["body"]["max_tokens"] == 50 and "max_completion_tokens" not in sent["body"]
    assert "top_k" not in sent["body"]  # dropped by default: strict APIs refuse unknown parameters

    # The official OpenAI SDK as the client, streaming with usage.
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0)
    try:
        chunks = list(
            client.chat.completions.create(
                model="mistral-large-latest",
                messages=HELLO,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    finally:
        client.close()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer["content"]
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == answer["output_tokens"]
    sent = last_request(fake, "mistral")
    assert sent["body"]["stream"] is True and "stream_options" not in sent["body"]  # stream_usage: false


def test_compatible_options_reach_the_wire(gateway: Ensemble, fake: FakeUpstream) -> None:
    with gateway.client() as http:
        r = http.post(
            "/api/v1/generate", json={"model": "llama-3.3-70b-versatile", "messages": HELLO, "max_tokens": 40}
        )
        assert r.status_code == 200, r.text
        sent = last_request(fake, "groq/openai")
        assert sent["path"] == "/groq/openai/v1/chat/completions"
        assert sent["body"]["max_completion_tokens"] == 40 and "max_tokens" not in sent["body"]

        with http.stream(
            "POST", "/api/v1/stream", json={"model": "llama-3.3-70b-versatile", "messages": HELLO}
        ) as s:
            body = s.read().decode()
        assert s.status_code == 200 and "event: done" in body
        sent = last_request(fake, "groq/openai")
        assert sent["body"]["stream_options"] == {"include_usage": True}

        r = http.post("/api/v1/generate", json={"model": "qwen-local", "messages": HELLO})
        assert r.status_code == 200, r.text
        assert "authorization" not in last_request(fake, "local")["headers"]


def test_a_provider_module_outside_ensemble_is_usable(gateway: Ensemble, fake: FakeUpstream) -> None:
    """The acme plugin is one module (wire format with an NDJSON framing, and its registration)
    plus packaging metadata: nothing in Ensemble names it."""
    check = gateway.cli("config", "check")
    assert "acme [acme]" in check.stdout
    with gateway.client() as http:
        r = http.post("/api/v1/generate", json={"model": "acme-1", "messages": HELLO})
        assert r.status_code == 200, r.text
        whole = r.json()
        assert whole["provider"] == "acme" and whole["content"].startswith("Hello from fake-openai")
        assert whole["output_tokens"] == 20  # the fake's 20 pieces, from Acme's usage

        with http.stream("POST", "/api/v1/stream", json={"model": "acme-1", "messages": HELLO}) as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            events = [line for line in s.iter_lines() if line.startswith("data: ")]
        blocks = [orjson.loads(e[6:]) for e in events[:-1]]
        done = orjson.loads(events[-1][6:])
        assert len(blocks) > 1  # streamed in pieces, not one block at the end
        assert "".join(b["text"] for b in blocks) == whole["content"] == done["content"]
        assert done["output_tokens"] == 20 and done["cost"] == whole["cost"]
        sent = last_request(fake, "acme")
        assert sent["headers"]["accept"] == "application/x-ndjson" and sent["body"]["stream"] is True

        # A broken line after content started: an in-band error, the framing's ValueError mapped.
        fake.enqueue("acme", {"malformed_after_chunks": 3})
        with http.stream("POST", "/api/v1/stream", json={"model": "acme-1", "messages": HELLO}) as s:
            text = s.read().decode()
        assert "event: error" in text and "bad_upstream_stream" in text
