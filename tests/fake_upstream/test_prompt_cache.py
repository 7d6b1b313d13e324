"""The fake's simulated provider prompt caches (endpoint config ``prompt_cache``), through the official
SDKs: per endpoint, from 1024 tokens, OpenAI automatic in 128-token steps, Anthropic at
``cache_control`` breakpoints with writes reported, Gemini implicit."""

from __future__ import annotations

import anthropic
import openai
import pytest
from google import genai
from google.genai import types

from .conftest import Fake, track

pytestmark = pytest.mark.integration

SYSTEM = "You follow the style guide. " * 300  # 8,100 characters: 2,025 tokens


def test_openai_caches_prefixes_per_endpoint_in_128_token_steps(fake: Fake) -> None:
    for ep in ("oa-1", "oa-2"):
        fake.config(ep, prompt_cache=True)
    c1 = track(openai.OpenAI(base_url=f"{fake.url}/oa-1/v1", api_key="sk-test", max_retries=0))
    c2 = track(openai.OpenAI(base_url=f"{fake.url}/oa-2/v1", api_key="sk-test", max_retries=0))
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "first question"}]
    first = c1.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    assert first.usage is not None and first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    prompt = first.usage.prompt_tokens
    messages += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "second"},
    ]
    second = c1.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    cached = second.usage.prompt_tokens_details.cached_tokens
    # The first request's whole prompt, counted down to a 128-token step from 1024.
    assert cached == 1024 + (prompt - 1 - 1024) // 128 * 128  # prompt rounds chars up, prefixes down
    assert second.usage.prompt_tokens > cached
    # Another endpoint (account) has its own, empty cache.
    other = c2.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    assert other.usage is not None and other.usage.prompt_tokens_details is not None
    assert other.usage.prompt_tokens_details.cached_tokens == 0
    assert other.usage.prompt_tokens == second.usage.prompt_tokens
    # Short prompts are never cached; an expired entry is a miss.
    short = [{"role": "user", "content": "hi"}]
    for _ in range(2):
        r = c1.chat.completions.create(model="gpt-4o-mini", messages=short)  # type: ignore[arg-type]
        assert r.usage is not None and r.usage.prompt_tokens_details is not None
        assert r.usage.prompt_tokens_details.cached_tokens == 0
    fake.config("oa-1", prompt_cache_ttl_ms=0)  # from now on what is written expires at once
    hits = []
    for _ in range(2):
        r = c1.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
        assert r.usage is not None and r.usage.prompt_tokens_details is not None
        hits.append(r.usage.prompt_tokens_details.cached_tokens)
    assert hits[0] >= cached and hits[1] == 0  # still there once (stored before), then expired


def test_anthropic_caches_at_breakpoints_and_reports_writes(fake: Fake) -> None:
    fake.config("an-1", prompt_cache=True)
    c = track(anthropic.Anthropic(base_url=f"{fake.url}/an-1", api_key="sk-ant-test", max_retries=0))
    marked = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
    system_tokens = len(SYSTEM) // 4

    def ask(system: object, question: str) -> anthropic.types.Usage:
        m = c.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=50,
            system=system,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": question}],
        )
        return m.usage

    first = ask(marked, "first question")
    assert (first.cache_read_input_tokens, first.cache_creation_input_tokens) == (0, system_tokens)
    second = ask(marked, "another question")
    assert (second.cache_read_input_tokens, second.cache_creation_input_tokens) == (system_tokens, 0)
    # input_tokens is the uncached rest, as Anthropic reports it.
    assert second.input_tokens + system_tokens == -(-(len(SYSTEM) + len("another question")) // 4)
    # Without a breakpoint nothing is cached (Anthropic needs cache_control).
    plain = ask(SYSTEM + " ", "first question")
    again = ask(SYSTEM + " ", "second question")
    assert (plain.cache_read_input_tokens, again.cache_read_input_tokens) == (0, 0)
    assert again.cache_creation_input_tokens == 0


def test_gemini_caches_implicitly(fake: Fake) -> None:
    fake.config("gm-1", prompt_cache=True)
    c = track(
        genai.Client(
            api_key="g-key",
            http_options=types.HttpOptions(
                base_url=f"{fake.url}/gm-1", retry_options=types.HttpRetryOptions(attempts=1)
            ),
        )
    )
    config = types.GenerateContentConfig(system_instruction=SYSTEM)
    first = c.models.generate_content(model="gemini-2.5-flash", contents="first question", config=config)
    second = c.models.generate_content(model="gemini-2.5-flash", contents="second question", config=config)
    assert first.usage_metadata is not None and second.usage_metadata is not None
    assert not first.usage_metadata.cached_content_token_count
    assert second.usage_metadata.cached_content_token_count == len(SYSTEM) // 4
    assert second.usage_metadata.prompt_token_count == -(-(len(SYSTEM) + len("second question")) // 4)
