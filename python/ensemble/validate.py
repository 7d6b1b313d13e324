"""Parameter validation (see docs/routing.md): ranges with the field named, then the config's drop rules."""

from __future__ import annotations

import fnmatch
import logging

from ensemble.config.schema import ModelConfig, ParameterValidationConfig
from ensemble.errors import InvalidRequest
from ensemble.types import InferenceRequest

log = logging.getLogger("ensemble.validate")

# provider_config entries an adapter sends as an HTTP header (anthropic_beta -> anthropic-beta).
_HEADER_VALUED = ("anthropic_beta",)

_DROPPABLE = ("temperature", "top_p", "max_tokens", "stop_sequences", "tools", "tool_choice")


def check_request(request: InferenceRequest, model: ModelConfig | None) -> None:
    """Reject what no provider could do anything sensible with; name the field."""
    if not request.model:
        raise InvalidRequest("model: must be a non-empty string", param="model")
    if not request.messages:
        raise InvalidRequest("messages: must contain at least one message", param="messages")
    if request.temperature is not None and not 0.0 <= request.temperature <= 2.0:
        raise InvalidRequest(
            f"temperature: must be between 0 and 2 (got {request.temperature})", param="temperature"
        )
    if request.top_p is not None and not 0.0 <= request.top_p <= 1.0:
        raise InvalidRequest(f"top_p: must be between 0 and 1 (got {request.top_p})", param="top_p")
    if request.max_tokens is not None:
        if request.max_tokens < 1:
            raise InvalidRequest(
                f"max_tokens: must be at least 1 (got {request.max_tokens})", param="max_tokens"
            )
        if model is not None and model.max_output_tokens and request.max_tokens > model.max_output_tokens:
            raise InvalidRequest(
                f"max_tokens: {request.max_tokens} exceeds {model.name}'s maximum of {model.max_output_tokens}",
                param="max_tokens",
            )
    for i, m in enumerate(request.messages):
        if m.role == "tool" and not m.tool_call_id:
            raise InvalidRequest(f"messages[{i}].tool_call_id: required on tool messages", param="messages")
    if request.tools:
        names = [t.name for t in request.tools]
        if len(set(names)) != len(names):
            raise InvalidRequest("tools: tool names must be unique", param="tools")
    _check_header_values(request)


def _check_header_values(request: InferenceRequest) -> None:
    """A line break in a value bound for an upstream header is the client's mistake (and a smuggling
    attempt): refused here as a 400 naming the field, before any provider is tried."""
    config = request.provider_config or {}
    for param in _HEADER_VALUED:
        value = config.get(param)
        parts = value if isinstance(value, list) else [value]
        if any(isinstance(p, str) and ("\r" in p or "\n" in p) for p in parts):
            raise InvalidRequest(f"{param}: must not contain line breaks (CR or LF)", param=param)


class DropRules:
    """The config's drop rules, resolved once per model name (glob matching is not per request)."""

    def __init__(self, rules: ParameterValidationConfig) -> None:
        self._rules = rules
        self._by_model: dict[str, tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]] = {}

    def _resolve(self, model: str) -> tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]:
        always: list[str] = []
        conditional: list[tuple[str, tuple[str, ...]]] = []
        if self._rules.enable:
            for pattern, params in self._rules.model_drop_rules.items():
                if fnmatch.fnmatchcase(model, pattern):
                    always += params
            for pattern, conditions in self._rules.conditional_rules.items():
                if fnmatch.fnmatchcase(model, pattern):
                    conditional += [(c.if_parameter, tuple(c.drop_parameters)) for c in conditions]
        if len(self._by_model) > 10_000:  # model names come from config; bound it anyway
            self._by_model.clear()
        resolved = self._by_model[model] = (tuple(always), tuple(conditional))
        return resolved

    def apply(self, request: InferenceRequest) -> list[str]:
        """Silently remove parameters the config says a model must not get; returns what was dropped."""
        rules = self._by_model.get(request.model) or self._resolve(request.model)
        always, conditional = rules
        if not always and not conditional:
            return []
        dropped = [p for p in always if _drop(request, p)]
        for if_parameter, params in conditional:
            if _present(request, if_parameter):
                dropped += [p for p in params if _drop(request, p)]
        if dropped:
            log.info(
                "dropped parameters %s for model %s (parameter_validation rules)", dropped, request.model
            )
        return dropped


def apply_drop_rules(request: InferenceRequest, rules: ParameterValidationConfig) -> list[str]:
    """One-off form of DropRules.apply (tests, tools); the gateway keeps a DropRules."""
    return DropRules(rules).apply(request)


def _present(request: InferenceRequest, param: str) -> bool:
    if param in _DROPPABLE:
        return getattr(request, param, None) is not None
    # Provider-specific parameters (thinking, top_k, reasoning_effort, …) live in provider_config.
    return param in (request.provider_config or {})


def _drop(request: InferenceRequest, param: str) -> bool:
    if param in _DROPPABLE:
        if getattr(request, param, None) is None:
            return False
        setattr(request, param, None)
        return True
    if request.provider_config and param in request.provider_config:
        del request.provider_config[param]
        return True
    return False
