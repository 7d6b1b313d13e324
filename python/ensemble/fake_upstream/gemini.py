"""Placeholder (gemini format comes next)."""

from __future__ import annotations

from .openai import OpenAIProvider


class _Stub(OpenAIProvider):
    name = "gemini"


PROVIDER = _Stub()
