"""Ensemble: an LLM inference gateway (Anthropic, OpenAI, Gemini, xAI, OpenRouter behind one API)."""

__version__ = "0.1.0"
