"""A model family's parameter rules applied to a canonical request (docs/catalogue.md).

`ParameterRules.fit` returns the request the target model accepts: parameters it rejects are dropped
(each logged at debug with the request id), or the request is refused with a 400 naming the parameter.
`changes` says what `fit` would do without doing it, so a path that forwards the client's bytes
unchanged (same format in and out) can ask whether it may.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ensemble.errors import InvalidRequest
from ensemble.types import InferenceRequest, ToolChoiceNamed

if TYPE_CHECKING:
    from ensemble.config.schema import ModelFamily

log = logging.getLogger("ensemble.catalogue")

# Canonical request fields; every other parameter name is a provider_config key.
_FIELDS = frozenset({"temperature", "top_p", "max_tokens", "stop_sequences", "tools", "tool_choice"})
_ALIASES = {"stop": "stop_sequences", "topK": "top_k", "topP": "top_p", "stopSequences": "stop_sequences"}
FORCED_TOOL_CHOICE = "forced_tool_choice"

# OpenAI's reasoning_effort as a thinking budget (the Anthropic and Gemini adapters use the same).
REASONING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}
MIN_THINKING_BUDGET = 1024

Action = Literal["drop", "refuse"]


def reasoning_budget(effort: str, max_tokens: int | None) -> int | None:
    """The thinking budget for an effort level, kept below max_tokens; None when no thinking fits
    (or the effort is "none" or unknown)."""
    budget = REASONING_BUDGETS.get(effort)
    if budget is None:
        return None
    if max_tokens is not None:
        budget = min(budget, max_tokens - 1)
    return budget if budget >= MIN_THINKING_BUDGET else None


def thinking_requested(request: InferenceRequest) -> bool:
    """Whether the client asked for thinking/reasoning, in any format's words: Anthropic
    `thinking`, Gemini `thinkingConfig`, OpenAI `reasoning_effort`, OpenRouter/Responses `reasoning`."""
    extras = request.provider_config or {}
    thinking = extras.get("thinking")
    if isinstance(thinking, dict):
        return thinking.get("type") in ("enabled", "adaptive")
    config = extras.get("thinkingConfig")
    if isinstance(config, dict):
        budget = config.get("thinkingBudget")
        if budget == 0:
            return False
        if (
            config.get("includeThoughts")
            or config.get("thinkingLevel")
            or (isinstance(budget, int) and budget)
        ):
            return True
    effort = extras.get("reasoning_effort")
    if isinstance(effort, str):
        return reasoning_budget(effort, request.max_tokens) is not None
    reasoning = extras.get("reasoning")
    if isinstance(reasoning, dict):
        if reasoning.get("enabled") is False or reasoning.get("effort") == "none":
            return False
        return bool(reasoning.get("effort") or reasoning.get("max_tokens") or reasoning.get("enabled"))
    return False


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


@functools.cache  # parameter names come from the catalogue and config: a small fixed set
def _keys(param: str) -> tuple[str, ...]:
    """The provider_config keys a non-canonical parameter may be spelled as."""
    camel = _camel(param)
    return (param, camel) if camel != param else (param,)


def _present(request: InferenceRequest, param: str) -> bool:
    if param in _FIELDS:
        return getattr(request, param) is not None
    if param == FORCED_TOOL_CHOICE:
        choice = request.tool_choice
        return bool(request.tools) and (choice == "required" or isinstance(choice, ToolChoiceNamed))
    extras = request.provider_config
    return bool(extras) and any(k in extras for k in _keys(param))  # type: ignore[operator]


def _norm(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_ALIASES.get(n, n) for n in names))


@dataclass(frozen=True, slots=True)
class ParameterRules:
    unsupported: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()
    exclusive: tuple[tuple[str, ...], ...] = ()
    thinking_temperature: float | None = None
    thinking_top_p_min: float | None = None
    thinking_unsupported: tuple[str, ...] = ()
    thinking_refused: tuple[str, ...] = ()

    @classmethod
    def combine(cls, families: Sequence[ModelFamily]) -> ParameterRules:
        """The rules of every family a model belongs to, together."""
        thinking = [f.thinking for f in families if f.thinking is not None]
        return cls(
            unsupported=_norm(p for f in families for p in f.unsupported),
            refused=_norm(p for f in families for p in f.refused),
            exclusive=tuple(_norm(group) for f in families for group in f.exclusive if len(group) > 1),
            thinking_temperature=next((t.temperature for t in thinking if t.temperature is not None), None),
            thinking_top_p_min=next((t.top_p_min for t in thinking if t.top_p_min is not None), None),
            thinking_unsupported=_norm(p for t in thinking for p in t.unsupported),
            thinking_refused=_norm(p for t in thinking for p in t.refused),
        )

    # Computed once, since `changes` is asked on every request: whether there is any rule at all,
    # and any that depends on thinking (which takes a look through the request's extras).
    empty: bool = field(init=False, compare=False, repr=False)
    thinking_rules: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        thinking = bool(
            self.thinking_temperature is not None
            or self.thinking_top_p_min is not None
            or self.thinking_unsupported
            or self.thinking_refused
        )
        object.__setattr__(self, "thinking_rules", thinking)
        object.__setattr__(
            self, "empty", not (self.unsupported or self.refused or self.exclusive or thinking)
        )

    def changes(self, request: InferenceRequest) -> list[tuple[str, Action, str]]:
        """(parameter, drop | refuse, why) for each parameter of `request` the model rejects."""
        if self.empty:
            return []
        out: list[tuple[str, Action, str]] = []
        out += [(p, "refuse", "not accepted by this model") for p in self.refused if _present(request, p)]
        out += [(p, "drop", "not accepted by this model") for p in self.unsupported if _present(request, p)]
        for group in self.exclusive:
            given = [p for p in group if _present(request, p)]
            out += [(p, "drop", f"not accepted together with {given[0]}") for p in given[1:]]
        if self.thinking_rules and thinking_requested(request):
            why = "not accepted with thinking on"
            out += [(p, "refuse", why) for p in self.thinking_refused if _present(request, p)]
            t = request.temperature
            if self.thinking_temperature is not None and t is not None and t != self.thinking_temperature:
                out.append(
                    (
                        "temperature",
                        "drop",
                        f"only {self.thinking_temperature:g} is accepted with thinking on",
                    )
                )
            p = request.top_p
            if self.thinking_top_p_min is not None and p is not None and p < self.thinking_top_p_min:
                out.append(
                    ("top_p", "drop", f"must be at least {self.thinking_top_p_min:g} with thinking on")
                )
            out += [(p, "drop", why) for p in self.thinking_unsupported if _present(request, p)]
        if len(out) < 2:
            return out
        seen: set[str] = set()
        return [c for c in out if not (c[0] in seen or seen.add(c[0]))]  # type: ignore[func-returns-value]

    def fit(self, request: InferenceRequest, model: str, request_id: str = "") -> InferenceRequest:
        """`request` as `model` accepts it: the same object when nothing changes, else a copy with
        the rejected parameters removed. Raises InvalidRequest for a refused one."""
        changes = self.changes(request)
        if not changes:
            return request
        for param, action, why in changes:
            if action == "refuse":
                name = "tool_choice" if param == FORCED_TOOL_CHOICE else param
                text = (
                    "a tool_choice that forces tool use is" if param == FORCED_TOOL_CHOICE else f"{param} is"
                )
                raise InvalidRequest(f"{name}: {text} {why} ({model})", param=name)
        fields: dict[str, Any] = {}
        extras = dict(request.provider_config or {})
        for param, _action, why in changes:
            if param in _FIELDS:
                fields[param] = None
            else:
                for key in _keys(param):
                    extras.pop(key, None)
            log.debug("request %s: dropped %s for %s (%s)", request_id or "-", param, model, why)
        if request.provider_config is not None:
            fields["provider_config"] = extras
        return msgspec.structs.replace(request, **fields)
