"""The model catalogue: lookups, config overrides and each family's parameter rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from ensemble import catalogue
from ensemble.catalogue.rules import thinking_requested
from ensemble.config.schema import CatalogueConfig, CatalogueModel, ModelFamily, Pricing
from ensemble.config_loader import load_config
from ensemble.errors import InvalidRequest
from ensemble.types import InferenceRequest, Message, ToolChoiceNamed, ToolDefinition


def _req(**fields: object) -> InferenceRequest:
    return InferenceRequest(model="m", messages=[Message(role="user", content="hi")], **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "known_as", "max_output"),
    [
        ("gpt-5", "gpt-5", 128000),
        ("openai/gpt-5-mini", "gpt-5-mini", 128000),  # OpenRouter's vendor prefix
        ("gpt-4o-2024-08-06", "gpt-4o", 16384),  # a dated snapshot
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5", 64000),
        ("gemini-2.5-flash", "gemini-2.5-flash", 65536),
    ],
)
def test_lookup_finds_known_models(model: str, known_as: str, max_output: int) -> None:
    info = catalogue.shipped().lookup(model)
    assert info is not None
    assert (info.id, info.max_output_tokens) == (known_as, max_output)
    assert info.context_window > 0 and info.pricing is not None and info.pricing.output > 0


def test_unknown_model_is_none_and_family_members_get_rules() -> None:
    assert catalogue.shipped().lookup("mock-1") is None
    info = catalogue.shipped().lookup("o4-pro-preview")
    assert info is not None and "openai-reasoning" in info.families
    unknown = catalogue.shipped().lookup("o3-max")  # a family member no model entry names
    assert unknown is not None and unknown.pricing is None and unknown.rules.unsupported


# (model, request fields, what must be gone afterwards, what must stay)
CASES = [
    # finding 1: every OpenAI reasoning model, not only o1
    (
        "o3",
        {"temperature": 0.2, "top_p": 0.5, "stop_sequences": ["x"]},
        ["temperature", "top_p", "stop_sequences"],
        [],
    ),
    (
        "gpt-5-mini",
        {"temperature": 0.2, "provider_config": {"presence_penalty": 1}},
        ["temperature", "presence_penalty"],
        [],
    ),
    (
        "gpt-5-chat-latest",
        {"temperature": 0.2, "stop_sequences": ["x"]},
        [],
        ["temperature", "stop_sequences"],
    ),
    ("gpt-4o", {"temperature": 0.2, "top_p": 0.5}, [], ["temperature", "top_p"]),
    # finding 2: thinking on Claude, in each format's words
    (
        "claude-sonnet-4-0",
        {"temperature": 0.3, "top_p": 0.5, "provider_config": {"reasoning_effort": "high", "top_k": 5}},
        ["temperature", "top_p", "top_k"],
        [],
    ),
    (
        "claude-sonnet-4-0",
        {"temperature": 0.3, "provider_config": {"thinkingConfig": {"thinkingBudget": 2048}, "topK": 5}},
        ["temperature", "topK"],
        [],
    ),
    (
        "claude-sonnet-4-0",
        {
            "temperature": 1.0,
            "top_p": 0.97,
            "provider_config": {"thinking": {"type": "enabled", "budget_tokens": 2048}},
        },
        [],
        ["temperature", "top_p"],
    ),
    (
        "claude-sonnet-4-0",
        {"temperature": 0.3, "top_p": 0.5, "provider_config": {"top_k": 5}},
        [],
        ["temperature", "top_p", "top_k"],
    ),
    # finding 3: temperature and top_p together on the 4.5 generation and Opus 4.1
    ("claude-haiku-4-5-20251001", {"temperature": 0.3, "top_p": 0.5}, ["top_p"], ["temperature"]),
    ("claude-opus-4-1", {"top_p": 0.5}, [], ["top_p"]),
    ("claude-sonnet-4-0", {"temperature": 0.3, "top_p": 0.5}, [], ["temperature", "top_p"]),
    (
        "grok-4",
        {"stop_sequences": ["x"], "provider_config": {"reasoning_effort": "low"}},
        ["stop_sequences", "reasoning_effort"],
        [],
    ),
]


def _has(request: InferenceRequest, param: str) -> bool:
    if hasattr(request, param):
        return getattr(request, param) is not None
    return param in (request.provider_config or {})


@pytest.mark.parametrize(("model", "fields", "gone", "kept"), CASES)
def test_family_rules(model: str, fields: dict[str, object], gone: list[str], kept: list[str]) -> None:
    request = _req(**fields)
    info = catalogue.shipped().lookup(model)
    assert info is not None
    fitted = info.rules.fit(request, model, "req_test")
    assert [p for p in gone if _has(fitted, p)] == []
    assert [p for p in kept if not _has(fitted, p)] == []
    assert all(_has(request, p) for p in gone + kept), "the client's request itself is left alone"
    assert bool(info.rules.changes(request)) == bool(gone)
    assert (fitted is request) == (not gone)


@pytest.mark.parametrize("choice", ["required", ToolChoiceNamed(name="f")])
def test_claude_thinking_refuses_forced_tool_choice(choice: object) -> None:
    request = _req(
        tools=[ToolDefinition(name="f")], tool_choice=choice, provider_config={"reasoning_effort": "medium"}
    )
    info = catalogue.shipped().lookup("claude-sonnet-4-5")
    assert info is not None
    with pytest.raises(InvalidRequest) as e:
        info.rules.fit(request, "claude-sonnet-4-5")
    assert e.value.param == "tool_choice"
    info.rules.fit(_req(tools=[ToolDefinition(name="f")], tool_choice=choice), "claude-sonnet-4-5")


@pytest.mark.parametrize(
    ("extras", "on"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, True),
        ({"thinking": {"type": "disabled"}}, False),
        ({"thinkingConfig": {"thinkingBudget": 0}}, False),
        ({"thinkingConfig": {"includeThoughts": True}}, True),
        ({"reasoning_effort": "none"}, False),
        ({"reasoning_effort": "low"}, True),
        ({"reasoning": {"effort": "high"}}, True),
        ({}, False),
    ],
)
def test_thinking_requested_in_every_format(extras: dict[str, object], on: bool) -> None:
    assert thinking_requested(_req(provider_config=extras)) is on


def test_config_overrides_and_extends() -> None:
    overrides = CatalogueConfig(
        families={"house": ModelFamily(match=["house-*"], unsupported=["top_p"])},
        models={
            "gpt-4o": CatalogueModel(pricing=Pricing(input=1.0, output=2.0)),
            "house-1": CatalogueModel(max_output_tokens=999, display_name="House One"),
        },
    )
    cat = catalogue.shipped().extended(overrides)
    gpt = cat.lookup("gpt-4o")
    assert (
        gpt is not None and gpt.pricing == Pricing(input=1.0, output=2.0) and gpt.max_output_tokens == 16384
    )
    house = cat.lookup("house-1")
    assert house is not None and house.max_output_tokens == 999 and house.display_name == "House One"
    assert house.rules.fit(_req(top_p=0.3), "house-1").top_p is None


def test_provider_file_without_price_takes_the_catalogue_default(tmp_path: Path) -> None:
    (tmp_path / "providers").mkdir()
    (tmp_path / "ensemble.yaml").write_text("catalogue: {models: {gpt-4.1: {max_output_tokens: 1000}}}\n")
    (tmp_path / "providers" / "openai.yaml").write_text(
        "name: openai\ntype: openai\nendpoints: [{id: e1, api_key: k}]\n"
        "models:\n  - {name: gpt-4.1}\n  - {name: gpt-4o, pricing: {input: 9, output: 9}}\n  - {name: house-x}\n"
    )
    cfg = load_config(tmp_path / "ensemble.yaml", env={})
    by_name = {m.name: m for m in cfg.providers[0].models}
    assert by_name["gpt-4.1"].pricing.input == 2.0 and by_name["gpt-4.1"].max_output_tokens == 1000
    assert by_name["gpt-4.1"].context_window == 1047576 and "vision" in by_name["gpt-4.1"].capabilities
    assert by_name["gpt-4o"].pricing.input == 9.0  # the file's own price wins
    assert by_name["house-x"].pricing.input == 0.0 and by_name["house-x"].max_output_tokens == 0
