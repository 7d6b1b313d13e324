"""Batches: the native and Anthropic batch APIs and the rate-limit fallback (see the README's routes)."""
