"""What the model routes say about a model, in each client format's own shape (docs/formats.md).

`ModelInfo` is what the config says of a served model (its limits and capabilities, filled from the
model catalogue where the provider file leaves them out) with the catalogue's display name and
release date (docs/catalogue.md); `render_*` write it as OpenAI's `model` objects, Anthropic's
`ModelInfo` pages and Gemini's `Model` resources.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from ensemble import catalogue
from ensemble.config.schema import ModelConfig

# Anthropic's `created_at` is the model's release date, "an epoch value if the release date is
# unknown" (a model the catalogue does not know).
_EPOCH = "1970-01-01T00:00:00Z"
_UPPER = {"gpt": "GPT", "ai": "AI", "xai": "xAI", "llm": "LLM"}


@dataclass(frozen=True)
class ModelInfo:
    id: str
    provider: str
    display_name: str
    context_window: int
    max_output_tokens: int
    capabilities: frozenset[str]
    created: str | None = None  # release date, YYYY-MM-DD


def display_name(model_id: str) -> str:
    """A readable name from a model id: `claude-sonnet-4-5` → `Claude Sonnet 4.5`,
    `gemini-2.5-flash` → `Gemini 2.5 Flash`, `gpt-4o` → `GPT 4o`."""
    words: list[str] = []
    for part in model_id.split("/")[-1].split("-"):
        if not part:
            continue
        if part.isdigit() and words and words[-1].replace(".", "").isdigit():
            words[-1] += "." + part  # consecutive version numbers: 4-5 → 4.5
        else:
            words.append(_UPPER.get(part.lower(), part[:1].upper() + part[1:]))
    return " ".join(words) or model_id


def model_info(name: str, model: ModelConfig, provider: str) -> ModelInfo:
    known = catalogue.lookup(model.upstream_id) or catalogue.lookup(name)
    return ModelInfo(
        id=name,
        provider=provider,
        # The catalogue's name for the model itself (an alias the operator chose keeps its own),
        # when it has one (for a family match alone it repeats the id).
        display_name=_known_name(known, name) if name == model.upstream_id else display_name(name),
        context_window=model.context_window,
        max_output_tokens=model.max_output_tokens,
        capabilities=frozenset(model.capabilities),
        created=known.created if known else None,
    )


def _known_name(known: catalogue.ModelInfo | None, name: str) -> str:
    if known is not None and known.display_name and known.display_name != known.id:
        return known.display_name
    return display_name(name)


def _created_at(m: ModelInfo) -> str:
    return f"{m.created}T00:00:00Z" if m.created else _EPOCH


def _created_unix(m: ModelInfo) -> int:
    if not m.created:
        return 0
    return int(datetime.strptime(m.created, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())


# -- OpenAI ------------------------------------------------------------------------------------


def _openai(m: ModelInfo) -> dict[str, object]:
    return {"id": m.id, "object": "model", "created": _created_unix(m), "owned_by": m.provider}


def openai_list(models: list[ModelInfo]) -> bytes:
    return orjson.dumps({"object": "list", "data": [_openai(m) for m in models]})


def openai_model(m: ModelInfo) -> bytes:
    return orjson.dumps(_openai(m))


# -- Anthropic ---------------------------------------------------------------------------------


def _anthropic(m: ModelInfo) -> dict[str, object]:
    out: dict[str, object] = {
        "type": "model",
        "id": m.id,
        "display_name": m.display_name,
        "created_at": _created_at(m),
    }
    if m.context_window:
        out["max_input_tokens"] = m.context_window
    if m.max_output_tokens:
        out["max_tokens"] = m.max_output_tokens
    return out


def anthropic_page(
    models: list[ModelInfo], *, limit: int, after_id: str | None, before_id: str | None
) -> bytes:
    """One page of Anthropic's cursor pagination: `after_id` pages forward, `before_id` back."""
    ids = [m.id for m in models]
    start, end = 0, len(models)
    if after_id is not None:
        start = ids.index(after_id) + 1 if after_id in ids else len(models)
    if before_id is not None:
        end = ids.index(before_id) if before_id in ids else 0
        start = max(start, end - limit)
    page = models[start : min(end, start + limit)]
    more = (start + len(page) < end) if before_id is None else start > 0
    return orjson.dumps(
        {
            "data": [_anthropic(m) for m in page],
            "has_more": more,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        }
    )


def anthropic_model(m: ModelInfo) -> bytes:
    return orjson.dumps(_anthropic(m))


# -- Gemini ------------------------------------------------------------------------------------

_GEMINI_METHODS = ["generateContent", "streamGenerateContent", "countTokens"]


def _gemini(m: ModelInfo) -> dict[str, object]:
    out: dict[str, object] = {
        "name": f"models/{m.id}",
        "baseModelId": m.id,
        "version": "001",
        "displayName": m.display_name,
        "description": f"{m.display_name}, served through Ensemble by {m.provider}",
        "supportedGenerationMethods": _GEMINI_METHODS,
        "thinking": "thinking" in m.capabilities,
    }
    if m.context_window:
        out["inputTokenLimit"] = m.context_window
    if m.max_output_tokens:
        out["outputTokenLimit"] = m.max_output_tokens
    return out


def gemini_page(models: list[ModelInfo], *, page_size: int, offset: int) -> bytes:
    """`pageToken` is the offset of the page's first model, as a string."""
    page = models[offset : offset + page_size]
    body: dict[str, object] = {"models": [_gemini(m) for m in page]}
    if offset + page_size < len(models):
        body["nextPageToken"] = str(offset + page_size)
    return orjson.dumps(body)


def gemini_model(m: ModelInfo) -> bytes:
    return orjson.dumps(_gemini(m))
