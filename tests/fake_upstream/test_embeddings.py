"""The fake's embeddings wire formats, read by the official SDKs themselves: `openai`
(CreateEmbeddingResponse, float and base64) and google-genai (EmbedContentResponse, which calls
`:batchEmbedContents`), plus `:embedContent` and the APIs' refusals over raw HTTP."""

from __future__ import annotations

import base64
import math
import struct

import httpx
import openai
import pytest
from google import genai
from google.genai import types

from ensemble.fake_upstream.embeddings import vector

from .conftest import Fake, track

pytestmark = pytest.mark.integration


def gpt(fake: Fake) -> openai.OpenAI:
    return track(openai.OpenAI(base_url=f"{fake.url}/ep-e/v1", api_key="sk-test", max_retries=0))


def gemini(fake: Fake) -> genai.Client:
    options = types.HttpOptions(base_url=f"{fake.url}/ep-g", retry_options=types.HttpRetryOptions(attempts=1))
    return track(genai.Client(api_key="g-key", http_options=options))


def test_vectors_are_deterministic_unit_float32_and_shortened_like_the_apis() -> None:
    full = vector("seed", 1536)
    assert full == vector("seed", 1536) and full != vector("other", 1536)
    assert math.isclose(math.sqrt(sum(c * c for c in full)), 1.0, rel_tol=1e-5)
    short = vector("seed", 1536, 8)
    norm = math.sqrt(sum(c * c for c in full[:8]))
    assert short == pytest.approx([c / norm for c in full[:8]], rel=1e-5)
    assert list(struct.unpack("<8f", struct.pack("<8f", *short))) == short  # exactly float32 values


def test_openai_sdk_float_and_base64(fake: Fake) -> None:
    c = gpt(fake)
    decoded = c.embeddings.create(model="text-embedding-3-small", input=["a b c", "longer text here"])
    assert [len(d.embedding) for d in decoded.data] == [1536, 1536]
    assert decoded.data[1].embedding == vector("longer text here", 1536)
    assert decoded.usage.prompt_tokens == decoded.usage.total_tokens == 2 + 4
    floats = c.embeddings.create(
        model="text-embedding-3-large", input="x", dimensions=256, encoding_format="float"
    )
    assert floats.model == "text-embedding-3-large" and floats.data[0].embedding == vector("x", 3072, 256)
    raw = c.embeddings.create(model="text-embedding-3-small", input="x", encoding_format="base64")
    packed = base64.b64decode(raw.data[0].embedding)  # type: ignore[arg-type]
    assert list(struct.unpack("<1536f", packed)) == vector("x", 1536)
    first = fake.requests("ep-e")[0]["body"]
    assert first["encoding_format"] == "base64"  # the SDK's default, which it decoded above


def test_openai_token_arrays_and_refusals(fake: Fake) -> None:
    c = gpt(fake)
    r = c.embeddings.create(model="text-embedding-3-small", input=[[5, 6, 7]], encoding_format="float")
    assert r.usage.prompt_tokens == 3 and r.data[0].embedding == vector("5 6 7", 1536)
    with pytest.raises(openai.BadRequestError, match="does not support specifying dimensions"):
        c.embeddings.create(model="text-embedding-ada-002", input="x", dimensions=8)
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model="text-embedding-3-small", input=[])
    assert e.value.body["param"] == "input"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="at most 1536"):
        c.embeddings.create(model="text-embedding-3-small", input="x", dimensions=1537)


def test_google_genai_single_and_batch(fake: Fake) -> None:
    c = gemini(fake)
    one = c.models.embed_content(model="gemini-embedding-001", contents="hello")
    assert one.embeddings is not None and one.embeddings[0].values == vector("hello", 3072)
    many = c.models.embed_content(
        model="text-embedding-004",
        contents=["a", "b", "c"],
        config=types.EmbedContentConfig(output_dimensionality=10, task_type="SEMANTIC_SIMILARITY"),
    )
    assert many.embeddings is not None
    assert [e.values for e in many.embeddings] == [vector(t, 768, 10) for t in "abc"]
    (last,) = fake.requests("ep-g")[-1:]
    assert last["path"] == "/ep-g/v1/models/text-embedding-004:batchEmbedContents"  # the SDK says v1
    assert last["body"]["requests"][0]["taskType"] == "SEMANTIC_SIMILARITY"


def test_gemini_embed_content_and_errors(fake: Fake) -> None:
    url = f"{fake.url}/ep-g/v1beta/models/gemini-embedding-001"
    r = httpx.post(
        f"{url}:embedContent", json={"content": {"parts": [{"text": "hi"}]}, "outputDimensionality": 3}
    )
    assert r.status_code == 200 and r.json() == {"embedding": {"values": vector("hi", 3072, 3)}}
    wide = httpx.post(
        f"{url}:embedContent", json={"content": {"parts": [{"text": "hi"}]}, "outputDimensionality": 4000}
    )
    assert wide.status_code == 400 and "at most 3072" in wide.json()["error"]["message"]
    bad = httpx.post(f"{url}:embedContent", json={"content": {"parts": []}})
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"
    other = {"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "x"}]}}]}
    mismatch = httpx.post(f"{url}:batchEmbedContents", json=other)
    assert mismatch.status_code == 400 and "must match" in mismatch.json()["error"]["message"]
