"""The model routes in each client format's shape, driven by the official SDKs: `openai`
`models.list()/retrieve()`, `anthropic` `models.list()/retrieve()`, `google-genai`
`models.list()/get()/count_tokens()`; unknown `/v1/…` and `/v1beta/…` paths answer in the shape of
the format the client speaks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from support.ensemble import MOCK_PROVIDER, Ensemble

pytestmark = pytest.mark.integration

MODELS = ["claude-sonnet-4-5", "gemini-2.5-flash", "gpt-4o", "mock-1"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    models: list[dict[str, Any]] = [
        {
            "name": name,
            "context_window": 200_000,
            "max_output_tokens": 8192,
            "capabilities": ["streaming", "tools", "thinking"]
            if name.startswith("claude")
            else ["streaming"],
            "pricing": {"input": 1.0, "output": 2.0},
        }
        for name in MODELS
    ]
    ens = Ensemble(Path(tmp_path_factory.mktemp("models")), providers=[{**MOCK_PROVIDER, "models": models}])
    yield ens
    ens.stop()


def test_openai_sdk_lists_and_retrieves(server: Ensemble) -> None:
    with openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0) as c:
        assert [m.id for m in c.models.list()] == MODELS
        model = c.models.retrieve("claude-sonnet-4-5")
        assert (model.id, model.object, model.owned_by) == ("claude-sonnet-4-5", "model", "mock")
        assert model.created == 1759104000  # 2025-09-29, the catalogue's release date
        with pytest.raises(openai.NotFoundError) as e:
            c.models.retrieve("gpt-9")
        assert e.value.body["type"] == "not_found_error"


def test_anthropic_sdk_lists_and_retrieves(server: Ensemble) -> None:
    with anthropic.Anthropic(base_url=server.url, api_key=server.key, max_retries=0) as c:
        listed = list(c.models.list())
        assert [m.id for m in listed] == MODELS
        assert all(m.type == "model" for m in listed)
        assert listed[0].display_name == "Claude Sonnet 4.5"
        assert listed[1].display_name == "Gemini 2.5 Flash"
        # The SDK pages with after_id while has_more: two models a page still lists them all.
        pages = c.models.list(limit=2)
        assert [m.id for m in pages.data] == MODELS[:2] and pages.has_more and pages.last_id == MODELS[1]
        assert [m.id for m in c.models.list(limit=2)] == MODELS
        model = c.models.retrieve("gpt-4o")  # name and release date from the model catalogue
        assert (model.id, model.type, model.display_name) == ("gpt-4o", "model", "GPT-4o")
        assert model.created_at.isoformat() == "2024-05-13T00:00:00+00:00"
        mock = c.models.retrieve("mock-1")  # unknown to the catalogue: a name from the id, epoch date
        assert mock.display_name == "Mock 1" and mock.created_at.year == 1970
        with pytest.raises(anthropic.NotFoundError) as e:
            c.models.retrieve("claude-9")
        assert e.value.body["error"]["type"] == "not_found_error"
    with (
        anthropic.Anthropic(base_url=server.url, api_key="ens_wrong", max_retries=0) as wrong,
        pytest.raises(anthropic.AuthenticationError) as auth,
    ):
        wrong.models.list()
    assert auth.value.body["error"]["type"] == "authentication_error"


def test_anthropic_page_shape_on_the_wire(server: Ensemble) -> None:
    r = httpx.get(
        server.url + "/v1/models?limit=3&after_id=claude-sonnet-4-5",
        headers={"x-api-key": server.key, "anthropic-version": "2023-06-01"},
    )
    body = r.json()
    assert r.status_code == 200
    assert [m["id"] for m in body["data"]] == MODELS[1:4]
    assert (body["has_more"], body["first_id"], body["last_id"]) == (False, "gemini-2.5-flash", "mock-1")
    assert body["data"][0] == {
        "type": "model",
        "id": "gemini-2.5-flash",
        "display_name": "Gemini 2.5 Flash",
        "created_at": "2025-06-17T00:00:00Z",
        "max_input_tokens": 200_000,
        "max_tokens": 8192,
    }
    back = httpx.get(
        server.url + "/v1/models?limit=2&before_id=mock-1",
        headers={"x-api-key": server.key, "anthropic-version": "2023-06-01"},
    ).json()
    assert [m["id"] for m in back["data"]] == MODELS[1:3] and back["has_more"] is True


def test_google_genai_sdk_lists_gets_and_counts(server: Ensemble) -> None:
    from google import genai
    from google.genai import types

    c = genai.Client(
        api_key=server.key,
        http_options=types.HttpOptions(base_url=server.url, retry_options=types.HttpRetryOptions(attempts=1)),
    )
    try:
        listed = list(c.models.list(config={"page_size": 3}))  # two pages
        assert [m.name for m in listed] == [f"models/{m}" for m in MODELS]
        model = c.models.get(model="claude-sonnet-4-5")
        assert model.name == "models/claude-sonnet-4-5" and model.display_name == "Claude Sonnet 4.5"
        assert (model.input_token_limit, model.output_token_limit) == (200_000, 8192)
        assert model.supported_actions is not None and "generateContent" in model.supported_actions
        counted = c.models.count_tokens(model="gemini-2.5-flash", contents="twelve chars")
        assert counted.total_tokens == 3
        with pytest.raises(genai.errors.ClientError) as e:
            c.models.get(model="gemini-9")
        assert e.value.code == 404 and e.value.status == "NOT_FOUND"
    finally:
        c.close()


def test_count_tokens_on_the_wire(server: Ensemble) -> None:
    url = server.url + "/v1beta/models/mock-1:countTokens"
    contents = [{"role": "user", "parts": [{"text": "x" * 40}]}]
    plain = httpx.post(url, headers={"x-goog-api-key": server.key}, json={"contents": contents})
    assert plain.status_code == 200 and plain.json() == {"totalTokens": 10}
    wrapped = httpx.post(
        url + f"?key={server.key}",
        json={"generateContentRequest": {"model": "models/mock-1", "contents": contents}},
    )
    assert wrapped.json() == {"totalTokens": 10}
    unknown = httpx.post(
        server.url + "/v1beta/models/gemini-9:countTokens",
        headers={"x-goog-api-key": server.key},
        json={"contents": contents},
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["status"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("headers", "shape"),
    [
        ({"authorization": "Bearer {key}"}, "openai"),
        ({"x-api-key": "{key}", "anthropic-version": "2023-06-01"}, "anthropic"),
        ({"x-goog-api-key": "{key}"}, "gemini"),
    ],
)
def test_unknown_paths_answer_in_the_callers_shape(
    server: Ensemble, headers: dict[str, str], shape: str
) -> None:
    sent = {k: v.format(key=server.key) for k, v in headers.items()}
    for path in ("/v1/nothing/here", "/v1beta/nothing" if shape == "gemini" else "/v1/files"):
        r = httpx.get(server.url + path, headers=sent)
        assert r.status_code == 404
        error = r.json()["error"]
        if shape == "openai":
            assert error["type"] == "not_found_error" and "message" in error and "param" in error
        elif shape == "anthropic":
            assert r.json()["type"] == "error" and error["type"] == "not_found_error"
        else:
            assert error["status"] == "NOT_FOUND" and error["code"] == 404


def test_gemini_sdks_on_v1_get_geminis_shape(server: Ensemble) -> None:
    """google-genai with api_version v1 lists models under /v1/: the key header says who is calling."""
    listed = httpx.get(server.url + "/v1/models", headers={"x-goog-api-key": server.key}).json()
    assert [m["name"] for m in listed["models"]] == [f"models/{m}" for m in MODELS]
    one = httpx.get(server.url + f"/v1/models/mock-1?key={server.key}").json()
    assert one["name"] == "models/mock-1" and one["displayName"] == "Mock 1"
