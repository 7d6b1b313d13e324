"""What OpenAI's two wire formats (chat completions, openai.py; Responses, openai_responses.py) share."""

from __future__ import annotations

# provider_config key carrying the hosted tools (web_search …) a Responses client sent: only the
# Responses upstream passes them on (the ingress refuses them for any other route).
HOSTED_TOOLS_KEY = "responses_hosted_tools"


def foreign(key: str, skip: frozenset[str]) -> bool:
    """A provider_config key not to forward: one of `skip`, or camelCase (Gemini's; no OpenAI
    parameter is)."""
    return key in skip or any(c.isupper() for c in key)


def data_url(media_type: str | None, data: str | None) -> str:
    return f"data:{media_type or 'application/octet-stream'};base64,{data or ''}"
