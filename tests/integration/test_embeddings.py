"""Embeddings through the gateway with the official SDKs: `openai` `embeddings.create` (float and
base64) and google-genai `models.embed_content` (single and batch), for OpenAI-, Gemini-,
OpenRouter-, OpenAI-compatible- and mock-served models; errors in each format's shape; routing with
failover, per-key rate limits, cost on the answer and in the request log and usage tables.

One Ensemble and one fake upstream for the module. The fake's vectors are a function of the input
(`ensemble.fake_upstream.embeddings.vector`), so every answer is checked to the last bit.
"""

from __future__ import annotations

import base64
import secrets
import struct
from collections.abc import Iterator
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pydantic
import pytest
from openai.types import EmbeddingCreateParams

from ensemble.fake_upstream import embeddings as fake_vectors
from ensemble.providers.mock import mock_vector
from ensemble.vectors import unpack
from support.ensemble import MOCK_PROVIDER, Ensemble
from support.fake import FakeUpstream
from support.waiting import wait_until

pytestmark = pytest.mark.integration

UPSTREAM_KEY = "sk-test-upstream-key-000000"
ADMIN = "adm_" + secrets.token_urlsafe(24)
EMBED_PRICE = 0.02  # USD per 1M input tokens, every embedding model below
CHAT_PRICING = {"input": 3.0, "output": 15.0}
TEXTS = ["The quick brown fox", "jumps over the lazy dog, twice"]


def _embedding(name: str, upstream: str = "") -> dict[str, Any]:
    model: dict[str, Any] = {"name": name, "kind": "embedding", "pricing": {"input": EMBED_PRICE}}
    if upstream:
        model["upstream"] = upstream
    return model


def _providers(fake: FakeUpstream) -> list[dict[str, Any]]:
    def endpoint(id: str) -> dict[str, Any]:
        return {"id": id, "api_key": UPSTREAM_KEY, "base_url": fake.endpoint_url(id)}

    return [
        {
            "name": "openai",
            "type": "openai",
            "base_url": fake.endpoint_url("unused"),
            "strategy": "round_robin",
            "cooldown_after_failures": 0,
            "endpoints": [endpoint("oa-a"), endpoint("oa-b")],
            "models": [
                _embedding("text-embedding-3-small"),
                _embedding("text-embedding-ada-002"),
                {"name": "gpt-4o", "pricing": CHAT_PRICING},
            ],
        },
        {
            "name": "gemini",
            "type": "gemini",
            "base_url": fake.endpoint_url("gem"),
            "endpoints": [{"id": "gem", "api_key": UPSTREAM_KEY}],
            "models": [
                _embedding("gemini-embedding-001"),
                {"name": "gemini-2.5-flash", "pricing": CHAT_PRICING},
            ],
        },
        {
            "name": "openrouter",
            "type": "openrouter",
            "base_url": fake.endpoint_url("or"),
            "endpoints": [{"id": "or", "api_key": UPSTREAM_KEY}],
            "models": [_embedding("or-embed", upstream="openai/text-embedding-3-small")],
        },
        {
            "name": "local",
            "type": "openai_compatible",
            "base_url": fake.endpoint_url("compat"),
            "endpoints": [{"id": "compat", "api_key": UPSTREAM_KEY}],
            "models": [_embedding("local-embed", upstream="text-embedding-3-small")],
        },
        {
            "name": "small",
            "type": "openai_compatible",
            "base_url": fake.endpoint_url("compat"),
            "endpoints": [{"id": "small", "api_key": UPSTREAM_KEY, "tpm_limit": 50}],
            "models": [_embedding("small-tpm", upstream="text-embedding-3-small")],
        },
        {
            "name": "anthropic",
            "type": "anthropic",
            "base_url": fake.endpoint_url("ant"),
            "endpoints": [{"id": "ant", "api_key": UPSTREAM_KEY}],
            "models": [{"name": "claude-sonnet-4-5", "pricing": CHAT_PRICING}],
        },
        {**MOCK_PROVIDER, "models": [*MOCK_PROVIDER["models"], _embedding("mock-embed")]},
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[Ensemble]:
    ens = Ensemble(
        Path(tmp_path_factory.mktemp("embeddings")),
        providers=_providers(fake),
        env={"ENSEMBLE_ADMIN_KEY": ADMIN},
    )
    yield ens
    ens.stop()


@pytest.fixture(autouse=True)
def _fresh(fake: FakeUpstream) -> None:
    fake.reset()
    for endpoint in ("oa-a", "oa-b", "gem", "or", "compat"):
        fake.configure(endpoint, require_api_key=UPSTREAM_KEY)


@pytest.fixture
def gpt(server: Ensemble) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0) as client:
        yield client


def expected(model: str, text: str, dimensions: int | None = None) -> list[float]:
    """The vector the upstream serving `model` computes for `text` (fake or mock)."""
    if model == "mock-embed":
        return unpack(mock_vector(text, dimensions or 256))
    if model == "gemini-embedding-001":
        return fake_vectors.vector(text, fake_vectors.GEMINI_WIDTHS[model], dimensions)
    upstream = "text-embedding-ada-002" if model == "text-embedding-ada-002" else "text-embedding-3-small"
    return fake_vectors.vector(text, fake_vectors.OPENAI_WIDTHS[upstream], dimensions)


def tokens_of(model: str, texts: list[str]) -> int:
    if model == "mock-embed":
        return sum(max(1, len(t) // 4) for t in texts)
    return sum(max(1, -(-len(t) // 4)) for t in texts)


EVERY_PROVIDER = ["text-embedding-3-small", "gemini-embedding-001", "or-embed", "local-embed", "mock-embed"]


@pytest.mark.parametrize("model", EVERY_PROVIDER)
def test_openai_sdk_float_and_base64(gpt: openai.OpenAI, model: str) -> None:
    decoded = gpt.embeddings.create(model=model, input=TEXTS)  # the SDK asks for base64 and decodes it
    floats = gpt.embeddings.create(model=model, input=TEXTS, encoding_format="float")
    for r in (decoded, floats):
        assert r.object == "list" and r.model == model
        assert [d.index for d in r.data] == [0, 1]
        assert [d.embedding for d in r.data] == [expected(model, t) for t in TEXTS]
        assert r.usage.prompt_tokens == r.usage.total_tokens == tokens_of(model, TEXTS)
    one = gpt.embeddings.create(model=model, input="short", dimensions=64, encoding_format="float")
    assert len(one.data) == 1 and one.data[0].embedding == expected(model, "short", 64)


def test_base64_is_little_endian_float32(server: Ensemble) -> None:
    with server.client() as c:
        body = {"model": "text-embedding-3-small", "input": "bytes on the wire", "dimensions": 8}
        as_b64 = c.post("/v1/embeddings", json={**body, "encoding_format": "base64"}).json()
        as_float = c.post("/v1/embeddings", json=body).json()
    raw = base64.b64decode(as_b64["data"][0]["embedding"])
    assert len(raw) == 8 * 4
    assert list(struct.unpack("<8f", raw)) == as_float["data"][0]["embedding"]


def test_upstream_calls_in_each_wire_format(gpt: openai.OpenAI, fake: FakeUpstream) -> None:
    gpt.embeddings.create(model="local-embed", input=TEXTS, dimensions=32, user="u-1")
    gpt.embeddings.create(model="gemini-embedding-001", input=TEXTS, dimensions=32)
    (compat,) = fake.requests("compat")
    assert compat["path"] == "/compat/v1/embeddings"
    # What the openai SDK itself would send: its request type's fields, of its types.
    params = pydantic.TypeAdapter(EmbeddingCreateParams)
    assert params.validate_python(compat["body"]) == compat["body"]
    assert set(compat["body"]) <= set(EmbeddingCreateParams.__annotations__)
    assert compat["body"] == {
        "model": "text-embedding-3-small",
        "input": TEXTS,
        "encoding_format": "float",  # an OpenAI-compatible API is asked for floats
        "dimensions": 32,
        "user": "u-1",
    }
    (gem,) = fake.requests("gem")
    assert gem["path"] == "/gem/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert gem["headers"]["x-goog-api-key"] == UPSTREAM_KEY
    assert gem["body"] == {
        "requests": [
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": t}]},
                "outputDimensionality": 32,
            }
            for t in TEXTS
        ]
    }


def test_openrouter_and_openai_are_asked_for_base64(gpt: openai.OpenAI, fake: FakeUpstream) -> None:
    gpt.embeddings.create(model="or-embed", input="x", encoding_format="float")
    (call,) = fake.requests("or")
    assert call["path"] == "/or/v1/embeddings" and call["headers"]["x-title"] == "Ensemble"
    assert (
        call["body"]["encoding_format"] == "base64"
        and call["body"]["model"] == "openai/text-embedding-3-small"
    )


def test_token_arrays(gpt: openai.OpenAI, fake: FakeUpstream) -> None:
    r = gpt.embeddings.create(
        model="text-embedding-3-small", input=[[1, 2, 3], [4, 5]], encoding_format="float"
    )
    assert r.usage.prompt_tokens == 5
    assert r.data[1].embedding == fake_vectors.vector("4 5", 1536)
    (call,) = fake.requests("oa-a") + fake.requests("oa-b")
    assert call["body"]["input"] == [[1, 2, 3], [4, 5]]
    with pytest.raises(openai.BadRequestError) as e:
        gpt.embeddings.create(model="gemini-embedding-001", input=[1, 2, 3])
    assert e.value.status_code == 400 and e.value.body["param"] == "input"  # type: ignore[index]
    assert "gemini-embedding-001" in e.value.body["message"]  # type: ignore[index]


def test_cost_on_the_answer_and_in_the_request_log_and_usage(server: Ensemble) -> None:
    texts = [*TEXTS, "long " * 800]  # 1000 tokens more: enough to cost whole micro-dollars
    with server.client() as c:
        r = c.post("/v1/embeddings", json={"model": "gemini-embedding-001", "input": texts})
    assert r.status_code == 200
    tokens = tokens_of("gemini-embedding-001", texts)
    cost = Decimal(tokens) * Decimal(str(EMBED_PRICE)) / 1_000_000
    assert Decimal(r.headers["x-ensemble-cost-usd"]) == cost
    assert r.json()["usage"]["cost"] == float(cost)
    assert r.headers["x-ensemble-provider"] == "gemini" and r.headers["x-ensemble-endpoint"] == "gem"
    request_id = r.headers["x-request-id"]
    admin = httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {ADMIN}"}, timeout=10)
    with admin:

        def logged() -> dict[str, Any] | None:
            logs = admin.get("/admin/logs", params={"model": "gemini-embedding-001"}).json()["logs"]
            return next((entry for entry in logs if entry["request_id"] == request_id), None)

        entry = wait_until(logged, what="the request-log row of the embeddings call")
        assert entry["status"] == "success" and entry["http_status"] == 200
        assert entry["provider"] == "gemini" and entry["endpoint_id"] == "gem"
        assert entry["input_tokens"] == tokens and entry["output_tokens"] == 0
        # The log and the usage tables count whole micro-dollars (rounded half to even).
        assert Decimal(entry["cost"]) == cost.quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN) > 0
        (key,) = [k for k in admin.get("/admin/keys").json()["keys"] if k["name"] == "test"]

        def used() -> dict[str, Any] | None:
            usage = admin.get(f"/admin/keys/{key['key_id']}/usage").json()["by_model"]
            return usage.get("gemini-embedding-001")

        u = wait_until(used, what="the usage row of the embeddings model")
        assert u["requests"] >= 1 and u["input_tokens"] >= tokens and u["output_tokens"] == 0
    with server.client() as c:  # the status is kept; the vectors are not stored for retrieval
        assert c.get(f"/api/v1/status/{request_id}").json()["status"] == "completed"
        gone = c.get(f"/api/v1/retrieve/{request_id}")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "response_not_found"


def test_google_genai_single_and_batch(server: Ensemble, fake: FakeUpstream) -> None:
    from google import genai
    from google.genai import types

    c = genai.Client(
        api_key=server.key,
        http_options=types.HttpOptions(base_url=server.url, retry_options=types.HttpRetryOptions(attempts=1)),
    )
    try:
        for model in ("gemini-embedding-001", "text-embedding-3-small", "mock-embed"):
            single = c.models.embed_content(model=model, contents="hello from genai")
            assert single.embeddings is not None and len(single.embeddings) == 1
            assert single.embeddings[0].values == expected(model, "hello from genai")
            batch = c.models.embed_content(
                model=model,
                contents=TEXTS,
                config=types.EmbedContentConfig(output_dimensionality=16, task_type="RETRIEVAL_DOCUMENT"),
            )
            assert batch.embeddings is not None
            assert [e.values for e in batch.embeddings] == [expected(model, t, 16) for t in TEXTS]
        # The task type reached Gemini with each text.
        sent = [r["body"] for r in fake.requests("gem")][-1]
        assert {one["taskType"] for one in sent["requests"]} == {"RETRIEVAL_DOCUMENT"}
        with pytest.raises(genai.errors.ClientError) as e:
            c.models.embed_content(model="claude-sonnet-4-5", contents="no")
        assert e.value.code == 400 and e.value.status == "INVALID_ARGUMENT"
        assert "claude-sonnet-4-5" in (e.value.message or "")
        with pytest.raises(genai.errors.ClientError) as e:
            c.models.embed_content(model="no-such-model", contents="no")
        assert e.value.code == 404 and e.value.status == "NOT_FOUND"
        with pytest.raises(genai.errors.ClientError) as e:
            c.models.embed_content(
                model="gemini-embedding-001", contents="no", config={"output_dimensionality": -1}
            )
        assert e.value.code == 400 and "outputDimensionality" in (e.value.message or "")
    finally:
        c.close()
    stranger = genai.Client(api_key="ens_" + "y" * 40, http_options=types.HttpOptions(base_url=server.url))
    try:
        with pytest.raises(genai.errors.ClientError) as e:
            stranger.models.embed_content(model="gemini-embedding-001", contents="no")
        assert e.value.code == 401 and e.value.status == "UNAUTHENTICATED"
    finally:
        stranger.close()


def test_gemini_embed_content_route(server: Ensemble) -> None:
    body = {"content": {"parts": [{"text": "one"}, {"text": "two"}]}, "outputDimensionality": 4}
    with server.client() as c:
        for version in ("v1beta", "v1"):
            r = c.post(f"/{version}/models/gemini-embedding-001:embedContent", json=body)
            assert r.status_code == 200, r.text
            assert r.json()["embedding"]["values"] == expected("gemini-embedding-001", "one\ntwo", 4)
            assert Decimal(r.headers["x-ensemble-cost-usd"]) > 0
        bad = c.post(
            "/v1beta/models/gemini-embedding-001:embedContent",
            json={"content": {"parts": [{"inlineData": {}}]}},
        )
        assert bad.status_code == 400
        assert (
            bad.json()["error"]["status"] == "INVALID_ARGUMENT"
            and "parts[0]" in bad.json()["error"]["message"]
        )
        mixed = {
            "requests": [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}},
                {"model": "models/other", "content": {"parts": [{"text": "b"}]}},
            ]
        }
        r = c.post("/v1beta/models/gemini-embedding-001:batchEmbedContents", json=mixed)
        assert r.status_code == 400 and "requests[1].model" in r.json()["error"]["message"]


def test_errors_in_openai_shape(server: Ensemble, gpt: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        gpt.embeddings.create(model="claude-sonnet-4-5", input="hi")
    assert bad.value.body["param"] == "model" and "claude-sonnet-4-5" in bad.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as chat:
        gpt.embeddings.create(model="gpt-4o", input="hi")
    assert "gpt-4o" in chat.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as missing:
        gpt.embeddings.create(model="no-such-embedder", input="hi")
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as wrong:
        gpt.embeddings.create(model="text-embedding-3-small", input=42)  # type: ignore[arg-type]
    assert wrong.value.body["param"] == "input"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as dims:
        gpt.embeddings.create(model="text-embedding-3-small", input="x", dimensions=0)
    assert dims.value.body["param"] == "dimensions"  # type: ignore[index]
    stranger = openai.OpenAI(base_url=server.url + "/v1", api_key="ens_" + "x" * 40, max_retries=0)
    with stranger, pytest.raises(openai.AuthenticationError) as denied:
        stranger.embeddings.create(model="text-embedding-3-small", input="hi")
    assert denied.value.status_code == 401
    with server.client() as c:
        r = c.post(
            "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x", "encoding_format": "hex"}
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "encoding_format"
        r = c.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x", "truncate": True})
        assert r.status_code == 400 and r.json()["error"]["param"] == "truncate"
        r = c.post("/v1/embeddings", content=b"{not json")
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        # An embedding model is not a chat model either.
        chat_body = {"model": "text-embedding-3-small", "messages": [{"role": "user", "content": "hi"}]}
        r = c.post("/v1/chat/completions", json=chat_body)
        assert r.status_code == 400 and "/v1/embeddings" in r.json()["error"]["message"]


def test_an_upstream_error_is_the_providers_own(gpt: openai.OpenAI, fake: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        gpt.embeddings.create(model="text-embedding-ada-002", input="x", dimensions=8)
    assert "does not support specifying dimensions" in e.value.body["message"]  # type: ignore[index]


def test_failover_to_the_next_endpoint(gpt: openai.OpenAI, fake: FakeUpstream) -> None:
    first = gpt.embeddings.with_raw_response.create(model="text-embedding-3-small", input="x")
    served = first.headers["x-ensemble-endpoint"]
    other = "oa-b" if served == "oa-a" else "oa-a"
    fake.enqueue(other, {"status": 503})  # round robin tries `other` next: it fails, `served` answers
    second = gpt.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="after the outage", encoding_format="float"
    )
    assert second.headers["x-ensemble-endpoint"] == served
    assert second.parse().data[0].embedding == expected("text-embedding-3-small", "after the outage")
    assert [c["status"] for c in fake.requests(other)] == [503]
    assert [c["status"] for c in fake.requests(served)] == [200, 200]


def test_per_key_rate_limits(server: Ensemble) -> None:
    key = server.create_key("embed-rpm", "--rpm", "2")
    server.wait_for_key(key)
    with openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0) as client:
        first = client.embeddings.with_raw_response.create(model="mock-embed", input="one")
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        client.embeddings.create(model="mock-embed", input="two")
        with pytest.raises(openai.RateLimitError) as limited:
            client.embeddings.create(model="mock-embed", input="three")
    assert limited.value.status_code == 429 and int(limited.value.response.headers["retry-after"]) >= 1


def test_per_key_token_limits_count_input_tokens(server: Ensemble) -> None:
    key = server.create_key("embed-tpm", "--tpm", "100")
    server.wait_for_key(key)
    text = "abcd" * 60  # 60 tokens, estimated and counted alike
    with openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0) as client:
        first = client.embeddings.with_raw_response.create(model="mock-embed", input=text)
        assert first.parse().usage.prompt_tokens == 60
        assert first.headers["x-ratelimit-remaining-tokens"] == "40"
        with pytest.raises(openai.RateLimitError):
            client.embeddings.create(model="mock-embed", input=text)  # 60 more do not fit in 100
        client.embeddings.create(model="mock-embed", input="abcd" * 10)  # 10 do


def test_a_key_limited_to_other_models_is_refused(server: Ensemble) -> None:
    key = server.create_key("chat-only", "--models", "mock-1")
    server.wait_for_key(key)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    with client, pytest.raises(openai.PermissionDeniedError) as refused:
        client.embeddings.create(model="mock-embed", input="no")
    assert refused.value.status_code == 403


def test_inputs_above_every_endpoints_token_limit_name_input(gpt: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        gpt.embeddings.create(model="small-tpm", input="many words " * 100)
    assert e.value.body["param"] == "input" and e.value.body["code"] == "exceeds_token_limit"  # type: ignore[index]


def test_model_list_says_which_models_embed(server: Ensemble) -> None:
    with server.client() as c:
        models = {m["id"]: m for m in c.get("/api/v1/models").json()["models"]}
    assert models["mock-embed"]["kind"] == "embedding" and models["mock-1"]["kind"] == "chat"
