"""The official openai SDK against /v1 on the mock provider (no upstream at all)."""

from __future__ import annotations

import openai
import pytest

from support.ensemble import Ensemble

pytestmark = pytest.mark.integration


def client(server: Ensemble, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key or server.key, max_retries=0)


def test_create_and_stream(mock_gateway: Ensemble) -> None:
    c = client(mock_gateway)
    r = c.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "Hello SDK"}])
    assert r.choices[0].message.content == "This is a mock answer from Ensemble. You said: Hello SDK"
    assert r.usage is not None and r.usage.completion_tokens == len(r.choices[0].message.content.split(" "))
    chunks = list(
        c.chat.completions.create(
            model="mock-1",
            messages=[{"role": "user", "content": "Hello SDK"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == r.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == r.usage.total_tokens
    assert [m.id for m in c.models.list()] == ["mock-1"]


def test_sdk_errors_are_typed(mock_gateway: Ensemble) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(mock_gateway, "ens_wrong_key_00000000000000000000000").models.list()
    with pytest.raises(openai.NotFoundError):
        client(mock_gateway).chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.BadRequestError) as e:
        client(mock_gateway).chat.completions.create(
            model="mock-1", messages=[{"role": "user", "content": "x"}], temperature=5
        )
    assert "temperature" in str(e.value)
