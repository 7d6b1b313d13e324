"""Ensemble: an LLM inference gateway."""
